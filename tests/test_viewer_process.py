"""``bci live`` with the viewer in its own process: real LSL producer, real ``bci live`` and ``bci view`` processes.

Qt runs offscreen (QT_QPA_PLATFORM=offscreen, set in conftest.py and inherited by the children).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from bci.viewer.app import ViewerOptions
from bci.viewer.process import ViewerProcessOptions, describe_exit, stream_query, viewer_command
from streams.description import StreamDescription
from tests.test_viewer import COLORS, _count_color, _trace_pixels, gallery_dir, procs  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]


def _marks(seconds: float) -> list[int]:
    """Marker samples of a producer of ``seconds`` (1 kHz, 8 channels): one every 0.7 s, each window inside the data."""
    return list(range(600, int(seconds * 1000) - 600, 700))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 8-channel eeg_convnet with 8-dimensional embeddings (the test gallery's size)."""
    import torch

    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config

    torch.manual_seed(0)
    model = build_model(default_config("eeg_convnet", n_chans=8, n_times=440, embed_dim=8))
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "m")


def _producer(procs, name: str, seconds: float) -> subprocess.Popen:
    return procs("tests.lsl_event_producer", "--name", name, "--markers-at", ",".join(map(str, _marks(seconds))),
                 "--duration", str(seconds))


def _live(name: str, model: Path, tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bci.cli", "live", "--eeg", name, "--markers", name + "-Markers",
            "--model", str(model), "--device", "cpu", "--results-stream", name + "-res", "--resolve-timeout", "30",
            "--events", str(tmp / "events.jsonl"), *extra]


def _windows(path: Path, *, stopped_early: bool = False) -> list[dict]:
    """The window records of an events file; no marker dropped (``stopped_early``: except at the end of the run)."""
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    dropped = [x for x in lines if x["type"] == "dropped"]
    assert not dropped or stopped_early and {x["reason"] for x in dropped} == {"end_of_data"}, dropped
    return [x for x in lines if x["type"] == "window"]


def _viewer_pid(text: str) -> int:
    line = next(x for x in text.splitlines() if x.startswith("viewer: started in process "))
    return int(line.split()[4])


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --------------------------------------------------------------------------- the library, no processes
def test_viewer_command_names_the_resolved_streams_and_passes_the_look(tmp_path: Path) -> None:
    data = StreamDescription("Amp 1", "EEG", "amp-serial-7", ("C3", "C4"), nominal_rate=500.0)
    marks = StreamDescription("Amp 1-Markers", "Markers", "", ("m",), dtype="string")
    view = ViewerOptions(fps=12.5, seconds=3.0, processed=True, screenshot=tmp_path / "s.png", after=2.0,
                         size=(800, 600))
    cmd = viewer_command(data, marks, ViewerProcessOptions("R1", view, gallery=tmp_path / "g", model=tmp_path / "m",
                                                           resolve_timeout=7.0), parent_pid=4242)
    assert cmd[:4] == [sys.executable, "-m", "bci.cli", "view"]
    args = dict(zip(cmd[4::1], cmd[5::1]))
    assert args["--eeg"] == "name=Amp 1,source_id=amp-serial-7"
    assert args["--markers"] == "Amp 1-Markers"  # no source_id: the name alone
    assert args["--results"] == "name=R1,type=BCIResults"
    assert (args["--fps"], args["--seconds"], args["--after"], args["--size"]) == ("12.5", "3.0", "2.0", "800x600")
    assert args["--screenshot"] == str((tmp_path / "s.png").resolve()) and "--preprocessed" in cmd
    assert args["--gallery"] == str((tmp_path / "g").resolve()) and args["--resolve-timeout"] == "7.0"
    assert args["--parent-pid"] == "4242"
    from bci.cli.main import build_parser

    parsed = build_parser().parse_args(cmd[3:])  # the child's own parser accepts every flag
    assert parsed.parent_pid == 4242 and parsed.size == (800, 600) and parsed.preprocessed
    fmri = StreamDescription("F", "fMRI", "f1", ("v1",), nominal_rate=0.5)
    cmd = viewer_command(fmri, None, ViewerProcessOptions("R1", model=tmp_path / "m"))
    assert "--fmri" in cmd and "--model" not in cmd and "--markers" not in cmd
    assert stream_query(StreamDescription("a,b", "EEG", "x", ("c",), nominal_rate=1.0)) == "a,b"
    assert describe_exit(2) == "exited with status 2" and describe_exit(-9) == "was killed by SIGKILL"


def test_viewer_process_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="results"):
        ViewerProcessOptions(None)
    with pytest.raises(ValueError, match="--view inline"):
        ViewerProcessOptions("")
    with pytest.raises(ValueError, match="gallery=DIR"):
        ViewerProcessOptions("R", ViewerOptions(gallery=object()))
    with pytest.raises(ValueError, match="resolve_timeout"):
        ViewerProcessOptions("R", resolve_timeout=0)
    with pytest.raises(TypeError, match="parent_pid"):
        ViewerOptions(parent_pid="12")


@pytest.mark.parametrize(("argv", "message"), [
    (["--no-view", "--view", "inline"], "--no-view and --view inline contradict each other"),
    (["--view", "process", "--results-stream", ""], "--view process subscribes to the decoder's results outlet"),
    (["--view", "window"], "invalid choice: 'window'"),
])
def test_contradicting_view_flags_are_one_line_errors(argv: list[str], message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from bci.cli.main import main

    try:
        code = main(["live", "--eeg", "NoSuchStream-view-flags", "--markers", "M", "--model", str(tmp_path), *argv])
    except SystemExit as exc:  # argparse's own usage error
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


# --------------------------------------------------------------------------- bci live, real processes
def test_bci_live_starts_the_viewer_child_which_renders_results_and_is_stopped(
        procs, unique_name: str, model_dir: Path, gallery_dir: Path, tmp_path: Path, bci_cli) -> None:  # noqa: F811
    """``bci live`` runs in this process (bci_cli: its viewer child and the producer are real processes)."""
    _producer(procs, unique_name, 12)
    shot = tmp_path / "shot.png"
    res = bci_cli(*_live(unique_name, model_dir, tmp_path, "--gallery", str(gallery_dir),
                         "--screenshot", str(shot), "--after", "3")[3:])
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "with the viewer in its own process until the viewer's screenshot" in res.stdout
    assert "saved screenshot" in res.stdout and "windows decoded:" in res.stdout
    pid = _viewer_pid(res.stderr)
    assert _gone(pid), out  # no orphan
    assert len(_windows(tmp_path / "events.jsonl", stopped_early=True)) >= 3
    from PIL import Image

    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape == (800, 1280, 3)
    assert _trace_pixels(pixels[:, :700]) > 1000  # the child subscribed to the EEG stream
    right = pixels[:, 760:]
    assert sum(_count_color(right, c) > 300 for c in COLORS) >= 2  # decoded results: gallery thumbnails


def watch_viewer_start(live: subprocess.Popen[str]) -> tuple[list[str], threading.Event, threading.Thread]:
    """Read ``bci live``'s stderr in a thread: the lines so far, an event set once the viewer child
    started, and the thread (join it after the process ended for the whole stderr)."""
    err_lines: list[str] = []
    started = threading.Event()

    def read_stderr() -> None:
        for line in live.stderr:
            err_lines.append(line)
            if line.startswith("viewer: started in process"):
                started.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    return err_lines, started, reader


def test_killing_the_viewer_child_does_not_stop_the_decoder(procs, unique_name: str, model_dir: Path,
                                                            tmp_path: Path) -> None:
    from streams.lsl import local_clock

    _producer(procs, unique_name, 15)  # long enough for a slow viewer start on a loaded machine
    live = subprocess.Popen(_live(unique_name, model_dir, tmp_path, "--duration", "15"), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines, started, reader = watch_viewer_start(live)
    try:
        assert started.wait(60), "".join(err_lines)
        pid = _viewer_pid("".join(err_lines))
        events = tmp_path / "events.jsonl"
        # kill the viewer once it runs and the decoder has emitted a window
        deadline = local_clock() + 8  # the decoder runs 15 s
        while not (_windows(events) and psutil.Process(pid).cpu_times().user > 0.5) and local_clock() < deadline:
            threading.Event().wait(0.1)
        assert live.poll() is None, "the decoder ended before the viewer could be killed: " + "".join(err_lines)
        os.kill(pid, signal.SIGKILL)
        killed_at = local_clock()
        live.wait(timeout=60)  # not communicate(): the reader thread owns stderr
        out = live.stdout.read()
        live.stdout.close()
    finally:
        if live.poll() is None:
            live.kill()
            live.communicate()
    reader.join(10)
    live.stderr.close()
    err = "".join(err_lines)
    assert live.returncode == 0, err
    assert "viewer: the viewer process was killed by SIGKILL; decoding goes on without it" in err, out
    windows = _windows(tmp_path / "events.jsonl")
    after = [w for w in windows if w["emitted_time"] > killed_at]
    assert len(after) >= 2, (len(windows), err)  # it kept decoding after the kill
    starts = [w["window_start_index"] for w in windows]
    assert starts == [k + 20 for k in _marks(15)][: len(starts)]  # none missing
    assert "windows decoded:" in out and _gone(pid)


def test_view_inline_still_runs_the_viewer_in_process(procs, unique_name: str, model_dir: Path,
                                                      tmp_path: Path) -> None:
    _producer(procs, unique_name, 6)
    shot = tmp_path / "inline.png"
    res = subprocess.run(_live(unique_name, model_dir, tmp_path, "--view", "inline", "--screenshot", str(shot),
                               "--after", "2.5"),
                         cwd=REPO, capture_output=True, text=True, timeout=110)
    assert res.returncode == 0, res.stderr
    assert ", with the viewer until the screenshot" in res.stdout and f"saved screenshot {shot}" in res.stdout
    assert "viewer: started in process" not in res.stderr
    assert len(_windows(tmp_path / "events.jsonl", stopped_early=True)) >= 2
    from PIL import Image

    with Image.open(shot) as img:
        assert _trace_pixels(np.asarray(img.convert("RGB"))[:, :700]) > 1000


def test_a_viewer_that_cannot_start_leaves_the_decoder_running(procs, unique_name: str, model_dir: Path,
                                                               tmp_path: Path, bci_cli,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A display that is not there: the child's Qt cannot start; one line says so and decoding goes on.

    ``bci live`` runs in this process (bci_cli); the viewer child inherits the environment without a display."""
    _producer(procs, unique_name, 6)
    for name in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISPLAY", ":987")  # no X server there
    res = bci_cli(*_live(unique_name, model_dir, tmp_path, "--duration", "6")[3:])
    assert res.returncode == 0, res.stderr
    said = [x for x in res.stderr.splitlines() if x.startswith("viewer: the viewer process ")]
    assert len(said) == 1 and said[0].endswith("; decoding goes on without it (Ctrl-C stops)"), res.stderr
    assert "windows decoded:" in res.stdout and len(_windows(tmp_path / "events.jsonl")) >= 3
    assert _gone(_viewer_pid(res.stderr))


# --------------------------------------------------------------------------- the benchmark (no run: flags, arithmetic)
def test_viewer_latency_benchmark_flags_and_comparisons(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import viewer_latency as vl

    with pytest.raises(SystemExit):
        vl.parse_args(["--variants", "headless,nope"])
    assert "--variants='nope' is not one of" in capsys.readouterr().err
    results = {k: {"latency_ms": {"p50": p50, "p99": p99}} for k, p50, p99 in
               (("headless", 2.0, 4.0), ("inline", 4.0, 16.0), ("process", 2.5, 4.5))}
    comp = vl.comparisons(results)
    assert comp["inline_over_headless_p99"] == 4.0 and comp["process_minus_headless_p99_ms"] == 0.5
    assert comp["goal_process_p99_within_1ms"] is True
    results["process"]["latency_ms"]["p99"] = 5.5
    assert vl.comparisons(results)["goal_process_p99_within_1ms"] is False
    assert vl.comparisons({"process": results["process"]}) == {}  # nothing to compare with
