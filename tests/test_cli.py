"""The bci command line: help with examples, one-line errors, info on sessions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bci.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["simulate", "record", "replay", "info", "demo", "live", "view", "gallery", "train", "evaluate",
            "epochs", "check-splits", "dataset", "import"]
SUBCOMMANDS = [("train", "clip"), ("train", "sample"), ("train", "pixel"), ("train", "saliency-gan"),
               ("train", "fmri"), ("gallery", "build"), ("import", "eeg-imagenet"), ("import", "xdf"),
               ("import", "raw"), ("dataset", "simulate")]


def test_top_level_help_lists_commands_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS) and "examples:" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"bci {command}" in out


@pytest.mark.parametrize(("command", "sub"), SUBCOMMANDS)
def test_every_subcommand_help_has_an_example(command: str, sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, sub, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"bci {command} {sub}" in out


def test_help_does_not_import_torch() -> None:
    """Building the parser must stay quick: no torch/open_clip until a command needs them."""
    code = "import sys; from bci.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


def test_console_script_entry_point() -> None:
    res = subprocess.run([sys.executable, "-m", "bci.cli", "--version"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.startswith("bci ")


def test_simulate_out_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.zarr"
    assert main(["simulate", "--duration", "2", "--seed", "1", "--out", str(out)]) == 0
    assert "2000 samples" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "128 ch 1000 Hz float32" in text and "complete" in text
    assert main(["simulate", "--duration", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert main(["simulate", "--duration", "1", "--out", str(out), "--overwrite"]) == 0


def test_info_on_foreign_directory_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notzarr").mkdir()
    assert main(["info", str(tmp_path / "notzarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bci info: error:") and "Traceback" not in err and "notzarr" in err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["simulate", "--duration", "-1"], "must be > 0"),
        (["simulate", "--snr", "abc"], "expected a number"),
        (["replay", "x.zarr", "--speed", "0"], "must be > 0"),
    ],
)
def test_bad_flags_are_argparse_errors(argv: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


def test_replay_speed_max_needs_decode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.zarr"
    main(["simulate", "--duration", "1", "--out", str(out)])
    capsys.readouterr()
    assert main(["replay", str(out), "--speed", "max"]) == 2
    assert "--decode" in capsys.readouterr().err


def test_parser_builds_without_side_effects() -> None:
    assert build_parser().prog == "bci"


def test_the_demo_runs_what_its_bci_live_and_replay_command_lines_would(tmp_path: Path) -> None:
    """offline.demo calls run_live / replay_decode with the options its old ``bci live`` / ``bci replay`` argv made."""
    from dataclasses import replace

    from bci.cli.decode import decode_options
    from bci.cli.view import viewer_options
    from bci.runtime.live import LiveOptions
    from bci.runtime.replay import ReplayOptions
    from bci.viewer.app import ViewerOptions
    from offline import demo

    sample, gallery, events, recording = tmp_path / "sample", tmp_path / "gallery", tmp_path / "ev.jsonl", tmp_path / "r"
    name, tag = "DemoEEG-1", "1"
    live = build_parser().parse_args(
        ["live", "--eeg", name, "--markers", f"{name}-Markers", "--model", str(sample), "--gallery", str(gallery),
         "--marker-filter", "^stim/", "--events", str(events), "--record", str(recording), "--duration", "60",
         "--results-stream", f"BCIResults-{tag}", "--overwrite", "--resolve-timeout", "30"])
    expected = LiveOptions(live.eeg, live.markers, decode_options(live), duration=live.duration, record=live.record,
                           resolve_timeout=live.resolve_timeout)
    assert demo._live_options(name, tag, sample, gallery, events, recording, 60.0) == expected
    assert viewer_options(_without_gallery(live)) == ViewerOptions()  # the demo's viewer: defaults + the gallery
    replay = build_parser().parse_args(
        ["replay", str(recording), "--decode", "--model", str(sample), "--gallery", str(gallery), "--marker-filter",
         "^stim/", "--speed", "max", "--events", str(events), "--results-stream", "", "--overwrite"])
    expected_replay = ReplayOptions(replay.session, decode_options(replay), data_stream=replay.data_stream,
                                    speed=replay.speed, suffix=replay.suffix)
    assert demo._replay_options(str(recording), sample, gallery, events) == expected_replay
    assert replace(expected_replay, speed=1.0) != expected_replay


def _without_gallery(args):
    """``args`` without a gallery (its thumbnails are the one thing viewer_options loads from disk)."""
    import argparse

    return argparse.Namespace(**{**vars(args), "gallery": None})


def test_decode_flags_take_their_defaults_from_the_options_dataclasses(tmp_path: Path) -> None:
    """``bci live`` without decoding flags builds exactly the library's default options (one owner of each default)."""
    import dataclasses

    from bci.cli.decode import decode_options
    from bci.runtime.assemble import DecodeOptions
    from bci.runtime.live import LiveOptions

    args = build_parser().parse_args(["live", "--eeg", "E", "--markers", "M", "--model", str(tmp_path)])
    assert decode_options(args) == DecodeOptions(model=tmp_path)
    fields = {f.name: f.default for f in dataclasses.fields(DecodeOptions)}
    for flag in ("device", "results_stream", "topk", "retrieval", "strength", "diffusion_steps", "seed"):
        assert getattr(args, flag).value == fields[flag], flag
    assert args.resolve_timeout.value == {f.name: f.default for f in dataclasses.fields(LiveOptions)}["resolve_timeout"]
    given = build_parser().parse_args(["live", "--eeg", "E", "--markers", "M", "--model", str(tmp_path), "--topk", "3",
                                       "--device", "cpu"])
    assert decode_options(given) == DecodeOptions(model=tmp_path, topk=3, device="cpu")
