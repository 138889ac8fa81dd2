"""The ``bci`` command line: one entry point with subcommands.

Each subcommand parses its flags here and calls library code with plain
arguments (never an argparse namespace). Errors the user can fix are printed as
one clear line (``bci <command>: error: …``) with exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from bci import __version__

from bci.cli.defaults import Default
from bci.cli.stream import register as add_stream
from bci.cli.types import positive_float as _positive_float, non_negative_float as _non_negative_float
from bci.cli import types as cli_types

logger = logging.getLogger("bci")

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- helpers


def _add_parser(sub: argparse._SubParsersAction, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


class _StatusLine:
    """Print a status line: rewritten in place on a terminal, one line per update otherwise."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- simulate
def _cmd_simulate(args: argparse.Namespace) -> int:
    from streams.simulate import LiveSimulation, SimulationSpec, play, simulate_to_session

    spec = SimulationSpec(
        name=args.name,
        modality=args.modality,
        duration=args.duration if args.duration is not None else (60.0 if args.out else 3600.0),
        snr=args.snr,
        seed=args.seed,
        chunk_size=args.chunk_size,
        design=args.design,
        session=args.session,
        sfreq=args.sfreq,
        montage=args.montage,
    )
    if args.stimuli is not None:
        _write_stimuli(spec, args.stimuli, overwrite=args.overwrite)
    if args.follow_markers is not None:
        return _follow(args, spec)
    if args.out:
        path = simulate_to_session(spec, args.out, overwrite=args.overwrite)
        from streams.session import SessionReader

        reader = SessionReader(path)
        for key in reader.streams:
            d = reader.description(key)
            print(f"{key}: {len(reader.times(key))} samples, {d.n_channels} ch, type {d.type}")
        print(f"wrote synthetic session ({spec.duration:g} s, seed {spec.seed}, snr {spec.snr:g}) to {path}")
        return 0
    if args.speed != 1.0 and args.out:
        raise ValueError("--speed plays the stream faster over LSL; --out writes the session at once (drop --speed)")
    sim = LiveSimulation(spec, speed=args.speed)
    sim.open()
    print(
        f"streaming {spec.modality.upper()} {spec.name!r} ({sim.world.desc.n_channels} ch, "
        f"{sim.world.sfreq:g} Hz) + markers {spec.marker_name!r} for {spec.duration:g} s"
        + (f" at speed {args.speed:g} ({spec.duration / args.speed:g} s)" if args.speed != 1.0 else "") + "; Ctrl-C stops",
        flush=True,
    )
    play(sim, wait_for_consumers=args.wait_for_consumers, start_delay=args.start_delay)
    print(f"pushed {sim.n_pushed} samples and {sim.n_markers} markers")
    return 0


def _follow(args: argparse.Namespace, spec: Any) -> int:
    """``--follow-markers NAME``: stream the world's EEG with the stimuli of another program's marker stream."""
    from bci.cli.defaults import given
    from streams.follow import FollowOptions, follow_markers

    if args.out:
        raise ValueError("--follow-markers streams live over LSL and cannot write --out; drop one of them")
    flags = given({"timeout": args.follow_timeout, "latency_ms": args.follow_latency_ms})
    follow_markers(spec, FollowOptions(args.follow_markers, **flags),
                   wait_for_consumers=args.wait_for_consumers, start_delay=args.start_delay)
    return 0


def _write_stimuli(spec: Any, folder: Path, *, overwrite: bool) -> None:
    """``--stimuli DIR``: the images the session's markers name, ``DIR/<id>.png`` + ``labels.csv`` (a gallery folder)."""
    import csv

    from PIL import Image

    from streams.simulate import shown_stimuli

    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"--stimuli {folder} exists and is not empty; pass --overwrite or choose another folder")
    images, ids, labels, captions = shown_stimuli(spec)
    folder.mkdir(parents=True, exist_ok=True)
    for image, image_id in zip(images, ids):
        Image.fromarray(image).save(folder / f"{image_id}.png")
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "caption"])
        writer.writerows(zip(ids, labels, captions))
    print(f"wrote the {len(ids)} stimulus images the markers name to {folder} "
          f"(a gallery folder: bci gallery build {folder} OUT ...)")


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(sub, "simulate", "Stream the synthetic world (EEG or fMRI + markers) over LSL in real time, or "
                    "write it to Zarr.",
                    "bci simulate --name SimEEG --duration 60 --snr 1.0 --seed 0        # live over LSL\n"
                    "  bci simulate --duration 120 --out sessions/sim.zarr                 # straight to Zarr, no LSL\n"
                    "  bci simulate --follow-markers PresenterMarkers --duration 600       # stimuli from a presenter")
    p.add_argument("--name", default="SimEEG", help="data stream name (markers: NAME-Markers) [SimEEG]")
    p.add_argument("--modality", choices=("eeg", "fmri"), default="eeg")
    p.add_argument("--duration", type=_positive_float, default=None,
                   help="seconds to simulate [60 with --out, else 3600]")
    p.add_argument("--snr", type=_non_negative_float, default=1.0, help="evoked signal-to-noise ratio [1.0]")
    p.add_argument("--seed", type=cli_types.non_negative_int, default=0,
                   help="the simulated subject (forward model, stimuli) and its noise; same seed, same data [0]")
    p.add_argument("--session", type=cli_types.non_negative_int, default=0,
                   help="recording session of subject --seed (EEG): new noise and schedule, same forward model, "
                        "so a model trained on one session can be tested on another [0]")
    p.add_argument("--design", choices=("block", "rapid"), default="block", help="stimulus schedule [block]")
    p.add_argument("--chunk-size", type=cli_types.non_negative_int, default=10, help="samples per LSL chunk [10]")
    p.add_argument("--sfreq", type=_positive_float, default=None, metavar="HZ",
                   help="EEG: the amplifier's rate [the simulator's 1000 Hz]")
    p.add_argument("--montage", default=None, metavar="NAME",
                   help="EEG: mne standard montage naming the channels, e.g. biosemi32 [biosemi128]")
    p.add_argument("--speed", type=_positive_float, default=1.0,
                   help="stream S times faster than real time, stamped on the LSL clock (soak tests; consumers: "
                        "bci live --no-dejitter) [1]")
    p.add_argument("--wait-for-consumers", type=_non_negative_float, default=0.0, metavar="S",
                   help="wait up to S seconds for inlets on both streams before streaming [0]")
    p.add_argument("--start-delay", type=_non_negative_float, default=0.0, metavar="S",
                   help="then wait S more seconds, so several consumers all see the first sample [0]")
    p.add_argument("--out", type=Path, default=None, help="write a Zarr session here instead of streaming")
    p.add_argument("--stimuli", type=Path, default=None, metavar="DIR",
                   help="also write the images the markers name (EEG stimuli, fMRI patterns in the order shown) as "
                        "DIR/<id>.png + labels.csv, ready for 'bci gallery build DIR OUT'")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and --stimuli) if they exist")
    p.add_argument("--follow-markers", default=None, metavar="NAME",
                   help="EEG: take the stimuli from another program's LSL marker stream NAME (stim/<image_id>/<label> "
                        "markers add that image's response at their timestamps) instead of the own schedule; no "
                        "NAME-Markers stream is published (see docs/synthetic-world.md)")
    p.add_argument("--follow-timeout", type=_positive_float, metavar="S",
                   default=Default.of("streams.follow:FollowOptions", "timeout"),
                   help="seconds to wait for the --follow-markers stream [%(default)s]")
    p.add_argument("--follow-latency-ms", type=_non_negative_float, metavar="MS",
                   default=Default.of("streams.follow:FollowOptions", "latency_ms"),
                   help="push each sample MS after its timestamp; markers arriving later than that are late and "
                        "get only the rest of their response [%(default)s]")
    p.set_defaults(func=_cmd_simulate)


# --------------------------------------------------------------------------- record
def _cmd_record(args: argparse.Namespace) -> int:
    from streams.recorder import Recorder

    recorder = Recorder(
        args.stream,
        args.out,
        overwrite=args.overwrite,
        resolve_timeout=args.resolve_timeout,
        lost_timeout=args.lost_timeout,
        dejitter=not args.no_dejitter,
    )
    recorder.start()
    status_line = _StatusLine()
    names = ", ".join(s.name for s in recorder.status())
    print(f"recording {names} to {args.out}" + (f" for {args.duration:g} s" if args.duration else "; Ctrl-C stops"),
          flush=True)
    try:
        final = recorder.run(args.duration, on_status=lambda st: status_line("  ".join(s.line() for s in st)))
    finally:
        status_line.done()
    for s in final:
        print(f"{s.key}: {s.n_samples} samples, {s.n_gaps} gaps, {s.n_reconnects} reconnects"
              + (f", {s.n_nonfinite} samples with NaN/inf" if s.n_nonfinite else ""))
    print(f"saved {args.out}")
    return 0


def _add_record(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(sub, "record", "Record one or more LSL streams (any type, rate, format) into one Zarr session.",
                    "bci record --stream SimEEG --stream SimEEG-Markers --duration 30 --out sessions/rec.zarr\n"
                    "  bci record --stream type=EEG --stream type=Markers --out sessions/rec.zarr   # until Ctrl-C")
    p.add_argument("--stream", action="append", required=True, metavar="NAME",
                   help="stream name, or key=value (type=EEG, source_id=…); repeat for more streams")
    p.add_argument("--duration", type=_positive_float, default=None, help="seconds to record [until Ctrl-C]")
    p.add_argument("--out", type=Path, required=True, help="Zarr session directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--resolve-timeout", type=_positive_float, default=5.0, help="seconds to find each stream [5]")
    p.add_argument("--lost-timeout", type=_positive_float, default=2.0,
                   help="a regular stream silent this long is re-resolved [2]")
    p.add_argument("--no-dejitter", action="store_true", help="keep LSL timestamps un-smoothed")
    p.set_defaults(func=_cmd_record)


# --------------------------------------------------------------------------- replay
def _parse_speed(text: str) -> float:
    if text == "max":
        return float("inf")
    return _positive_float(text)


def _cmd_replay(args: argparse.Namespace) -> int:
    if args.decode:
        from bci.cli.decode import cmd_replay_decode

        return cmd_replay_decode(args)
    from streams.integrity import skipped_summary
    from streams.replay import SessionReplayer
    from streams.session import SessionReader

    if args.speed == float("inf"):
        raise ValueError("--speed max drives the decoding pipeline directly and needs --decode (see bci replay --help)")
    reader = SessionReader(args.session, skip_damaged=args.skip_damaged)
    replayer = SessionReplayer(reader, speed=args.speed, streams=args.stream, name_suffix=args.suffix)
    replayer.open()
    names = ", ".join(d.name for d in replayer.descs)
    print(f"replaying {args.session} ({replayer.duration:.1f} s at speed {args.speed:g}) as LSL streams: {names}",
          flush=True)
    if args.wait_for_consumers:
        replayer.wait_for_consumers(args.wait_for_consumers)
    try:
        replayer.play()
    except KeyboardInterrupt:
        pass
    finally:
        replayer.close()
    print("pushed " + ", ".join(f"{d.name}: {n}" for d, n in zip(replayer.descs, replayer.n_pushed)))
    skipped_summary(reader, replayer.keys, print)
    return 0


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(sub, "replay", "Play a recorded Zarr session back as LSL streams with the original timing.",
                    "bci replay sessions/rec.zarr --speed 1\n"
                    "  bci replay sessions/rec.zarr --speed 4 --suffix -replay   # 4x faster, streams renamed NAME-replay\n"
                    "  bci replay sessions/rec.zarr --decode --model models/eeg --speed max --events events.jsonl")
    p.add_argument("session", type=Path, help="Zarr session directory")
    p.add_argument("--speed", type=_parse_speed, default=1.0, help="playback speed factor [1]")
    p.add_argument("--stream", action="append", default=None, metavar="NAME",
                   help="replay only this stream (repeatable) [all]")
    p.add_argument("--suffix", default="",
                   help="append to stream names and source_ids (avoid clashes); one that starts with a dash is "
                        "written --suffix=-replay")
    p.add_argument("--wait-for-consumers", type=_non_negative_float, default=0.0, metavar="S",
                   help="wait up to S seconds for inlets to connect before playing [0]")
    p.add_argument("--decode", action="store_true",
                   help="decode the recording with --model (with --speed max: straight from Zarr, no LSL)")
    p.add_argument("--data-stream", default=None, metavar="NAME", help="with --decode: the EEG/fMRI stream [auto]")
    p.add_argument("--skip-damaged", action="store_true",
                   help="play/decode around damaged chunks ('bci info --verify' lists them): each is a gap, no "
                        "window spans it, its markers are dropped with the reason (default: stop with an error)")
    from bci.cli.decode import add_decode_options

    add_decode_options(p, model_required=False)
    p.set_defaults(func=_cmd_replay)


# --------------------------------------------------------------------------- info
def _cmd_info(args: argparse.Namespace) -> int:
    if args.session is None:
        from streams.lsl import describe_visible_streams, format_stream_list

        descs = describe_visible_streams(args.wait)
        print(f"{len(descs)} LSL stream(s) visible:")
        print(format_stream_list(descs))
        return 0
    if args.verify:
        from bci.cli.progress import show_progress
        from streams.integrity import verify_session

        report = verify_session(args.session, progress=show_progress(args.no_progress))
        print(report)
        return report.exit_code
    from streams.session import SessionReader

    reader = SessionReader(args.session)
    attrs = reader.attrs
    checksums = all(reader.has_checksums(k) for k in reader.streams)
    print(f"session {args.session} (schema {attrs.get('schema')} v{attrs.get('schema_version')}, "
          f"{'complete' if reader.complete else 'not closed cleanly'}, "
          f"{'chunk checksums' if checksums else 'no chunk checksums'}; --verify reads every chunk)")
    if reader.write_error:
        print(f"  recording stopped early: {reader.write_error}")
    for key in reader.streams:
        d = reader.description(key)
        t = reader.times(key)
        span = f"{t[-1] - t[0]:.2f} s" if len(t) > 1 else "-"
        rate = f"{d.nominal_rate:g} Hz" if d.is_regular else "irregular"
        print(f"  {key}: name={d.name!r} type={d.type!r} {d.n_channels} ch {rate} {d.dtype}, "
              f"{len(t)} samples over {span}, {len(reader.gaps(key))} gaps")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(sub, "info", "List the LSL streams visible now, or describe a recorded Zarr session.",
                    "bci info                       # visible LSL streams\n  bci info sessions/rec.zarr     # a session")
    p.add_argument("session", type=Path, nargs="?", default=None, help="Zarr session to describe")
    p.add_argument("--wait", type=_positive_float, default=1.0, help="seconds to look for streams [1]")
    p.add_argument("--verify", action="store_true",
                   help="read every chunk of the session and list the damaged ones (stream, samples, times); "
                        "exit 0 when clean, 1 when damaged")
    from bci.cli.progress import add_progress_flag

    add_progress_flag(p)
    p.set_defaults(func=_cmd_info)


# --------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    if args.streams_tour:
        from bci.runtime.tour import run_demo

        run_demo(args.workdir / "streams-tour", seconds=min(args.seconds, 8.0), seed=args.seed)
        return 0
    from offline.demo import run_full_demo

    view = False if args.no_view else None
    run_full_demo(args.workdir, live_seconds=args.seconds, seed=args.seed, view=view, force=args.force,
                  clip_steps=args.clip_steps, epochs=args.epochs)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(sub, "demo", ("End-to-end demo on the built-in synthetic world: simulate a session, train the "
                                  "tiny CLIP and an EEG encoder, build a gallery, evaluate, decode a new session live "
                                  "over LSL (viewer when a display is available), record it and replay it with "
                                  "--decode; prints a report. Finished steps are reused."),
                    "bci demo                      # everything under ./bci-demo\n"
                    "  bci demo --workdir /data/demo --seconds 120 --no-view")
    p.add_argument("--workdir", type=Path, default=Path("bci-demo"),
                   help="folder for everything the demo makes (reused on the next run) [bci-demo]")
    p.add_argument("--seconds", type=_positive_float, default=60.0, help="seconds of live decoding [60]")
    p.add_argument("--seed", type=cli_types.non_negative_int, default=0, help="the simulated subject [0]")
    p.add_argument("--no-view", action="store_true", help="no viewer, even when a display is available")
    p.add_argument("--force", action="store_true", help="redo every step instead of reusing finished ones")
    p.add_argument("--clip-steps", type=cli_types.non_negative_int, default=None, help="training steps of the tiny CLIP [its default]")
    p.add_argument("--epochs", type=cli_types.non_negative_int, default=30, help="maximum training epochs of the EEG encoder [30]")
    p.add_argument("--streams-tour", action="store_true",
                   help="only the quick streams tour: simulate -> record -> replay -> record, compared (no training)")
    p.set_defaults(func=_cmd_demo)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The full ``bci`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bci",
        description="Real-time EEG/fMRI BCI runtime over Lab Streaming Layer.",
        epilog=(
            "examples:\n"
            "  bci demo                                              # end-to-end demo, synthetic world\n"
            "  bci simulate --duration 60 &                          # stream synthetic EEG + markers\n"
            "  bci record --stream SimEEG --stream SimEEG-Markers --duration 30 --out rec.zarr\n"
            "  bci replay rec.zarr --speed 2\n"
            "  bci model init eeg_convnet --out model                # an (untrained) checkpoint\n"
            "  bci live --eeg SimEEG --markers SimEEG-Markers --model model --events ev.jsonl --no-view\n"
            "run 'bci COMMAND --help' for each command's options and an example."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bci {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_simulate, _add_record, _add_replay, _add_info, _add_demo):
        add(sub)
    from bci.cli.decode import add_live, add_model

    add_live(sub, _add_parser)
    add_model(sub, _add_parser)
    from bci.cli.gallery import register as add_gallery
    from bci.cli.offline import add_offline_commands
    from bci.cli.view import register as add_view

    add_gallery(sub, _add_parser)
    add_view(sub, _add_parser)
    from bci.cli.present import register as add_present; add_present(sub, _add_parser)  # noqa: E702
    add_offline_commands(sub, _add_parser)
    add_stream(sub, _add_parser)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from streams.errors import StreamsError

    return (StreamsError, ValueError, TypeError, FileNotFoundError, FileExistsError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bci`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if threading.current_thread() is threading.main_thread():
        _install_sigterm_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"bci {args.command}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if args.debug:
            raise
        print(f"bci {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _install_sigterm_as_interrupt() -> None:
    """Let SIGTERM and SIGINT stop a command cleanly (files closed, summary printed), even in the background."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # A process started in the background by a non-interactive shell (`cmd &`, CI runners, lab scripts)
    # inherits SIGINT ignored, so Python installs no KeyboardInterrupt handler; `kill -INT` must still stop it.
    signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
