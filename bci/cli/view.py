"""``bci view``: the stand-alone viewer, subscribing over LSL to a running runtime's streams."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bci.cli.types import positive_float
from bci.cli import types as cli_types

DEFAULT_SIZE = (1280, 800)  # as bci.viewer.app.DEFAULT_SIZE (not imported: keeps `bci --help` light)
#: ``bci live --view``: the viewer in its own process (the default) or in the decoder's process (debugging).
VIEW_MODES = ("process", "inline")
DEFAULT_VIEW_MODE = "process"


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x800"`` → ``(1280, 800)`` (argparse type)."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x800, got {text!r}") from None
    if not sep or size[0] < 640 or size[1] < 400:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT of at least 640x400, got {text!r}")
    return size


def add_source_options(p: argparse.ArgumentParser) -> None:
    """``--eeg NAME`` | ``--fmri NAME`` (one required) and ``--markers NAME``: ``bci live`` and ``bci view``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--eeg", metavar="NAME", help="EEG stream (name or type=EEG)")
    src.add_argument("--fmri", metavar="NAME", help="fMRI stream (name or type=fMRI)")
    p.add_argument("--markers", metavar="NAME", default=None, help="marker stream (name or type=Markers)")


def add_viewer_options(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``bci view`` and ``bci live`` (look, screenshot).

    ``--gallery`` is added only if the parser does not have it yet (``bci live`` may
    already take it for retrieval; the viewer then shows that gallery's thumbnails).
    """
    if "--gallery" not in p._option_string_actions:
        p.add_argument("--gallery", type=Path, default=None, metavar="DIR",
                       help="gallery directory: thumbnails of the retrieved and true images")
    p.add_argument("--fps", type=positive_float, default=30.0, help="viewer redraw rate, frames per second [30]")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="time span of the traces [5]")
    p.add_argument("--preprocessed", action="store_true", help="start with the preprocessed traces")
    p.add_argument("--screenshot", type=Path, default=None, metavar="FILE",
                   help="render offscreen, save a PNG after --after seconds of data, and exit")
    p.add_argument("--after", type=positive_float, default=5.0, metavar="S",
                   help="seconds of live data before the screenshot [5]")
    p.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, metavar="WxH",
                   help="window size [1280x800]")


def viewer_options(args: argparse.Namespace, duration: float | None = None, *, with_gallery: bool = True) -> Any:
    """Plain :class:`~bci.viewer.app.ViewerOptions` from the shared flags (``with_gallery``: load its thumbnails)."""
    from bci.viewer.app import ViewerOptions
    from bci.viewer.images import load_gallery

    gallery = load_gallery(args.gallery) if args.gallery is not None and with_gallery else None
    return ViewerOptions(fps=args.fps, seconds=args.seconds, gallery=gallery, processed=args.preprocessed,
                         screenshot=args.screenshot, after=args.after, size=tuple(args.size), duration=duration,
                         parent_pid=getattr(args, "parent_pid", None))


def add_live_view_options(p: argparse.ArgumentParser) -> None:
    """``bci live``'s viewer flags: ``--no-view``, ``--view {process,inline}`` and the shared viewer flags."""
    p.add_argument("--no-view", action="store_true", help="run without the viewer")
    p.add_argument("--view", choices=VIEW_MODES, default=None,
                   help="where the viewer runs: in its own process, subscribed to the results stream (the decoder "
                        "never waits for it), or inline in the decoder's process (debugging) "
                        f"[{DEFAULT_VIEW_MODE}]")
    add_viewer_options(p)


def live_view_loop(args: argparse.Namespace, live: Any) -> Any:
    """The :class:`~bci.runtime.live.RunLoop` of ``bci live``'s viewer flags, or None to run headless.

    Headless with ``--no-view`` or without a display (said in one line). ``--view process``
    (the default) needs the results outlet; with ``--results-stream ''`` the default falls
    back to ``inline`` and says so.
    """
    if args.no_view:
        if args.screenshot is not None:
            raise ValueError("--screenshot renders the viewer; do not combine it with --no-view")
        if args.view is not None:
            raise ValueError(f"--no-view and --view {args.view} contradict each other; pass one of them")
        return None
    from bci.viewer.live_loop import show_viewer, viewer_loop

    if not show_viewer(args.screenshot):
        return None
    results = live.decode.results_stream
    mode = args.view
    if mode is None:
        mode = DEFAULT_VIEW_MODE if results else "inline"
        if not results:
            print("viewer: --results-stream '' leaves no results outlet for a viewer process; showing the viewer "
                  "in-process (--view inline)", file=sys.stderr, flush=True)
    elif mode == "process" and not results:
        raise ValueError("--view process subscribes to the decoder's results outlet; do not disable "
                         "--results-stream, or pass --view inline")
    if mode == "inline":
        return viewer_loop(viewer_options(args))
    from bci.viewer.process import ViewerProcessOptions, viewer_process_loop

    return viewer_process_loop(ViewerProcessOptions(results, viewer_options(args, with_gallery=False),
                                                    gallery=args.gallery, model=args.model,
                                                    resolve_timeout=live.resolve_timeout))


def preprocess_from_model(model_dir: Path | None) -> dict[str, Any]:
    """The preprocessing dict stored in a checkpoint's config.json (JSON only); ``{}``: the default."""
    if model_dir is None:
        return {}
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--model {str(model_dir)!r} has no config.json; pass a checkpoint directory")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model {str(path)!r} is not valid JSON: {exc}") from None
    pre = config.get("preprocessing") if isinstance(config, dict) else None
    if pre is not None and not isinstance(pre, dict):
        raise ValueError(f"--model {str(path)!r}: 'preprocessing' must be an object, got {type(pre).__name__}")
    return pre or {}


def cmd_view(args: argparse.Namespace) -> int:
    """``bci view``: plain arguments into :func:`bci.viewer.run_stream_viewer`."""
    from bci.viewer.app import run_stream_viewer
    from bci.viewer.display import NoDisplayError, display_available

    ok, reason = display_available()
    if not ok and args.screenshot is None:
        raise NoDisplayError(f"{reason}. Pass --screenshot FILE to render offscreen")
    options = viewer_options(args, duration=args.duration)
    frames = run_stream_viewer(
        args.eeg or args.fmri,
        results=args.results,
        markers=args.markers,
        preprocess=None if args.fmri else preprocess_from_model(args.model),
        resolve_timeout=args.resolve_timeout,
        options=options,
    )
    if args.screenshot is not None:
        print(f"saved screenshot {args.screenshot} ({frames} frames drawn)")
    return 0


def register(sub: argparse._SubParsersAction, add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``bci view`` to the ``bci`` command line."""
    p = add_parser(
        sub,
        "view",
        "Show live EEG/fMRI traces, markers, decoded results and session health from LSL streams.",
        "bci view --eeg SimEEG --markers SimEEG-Markers --results BCIResults --gallery galleries/sim\n"
        "  bci view --eeg SimEEG --results BCIResults --screenshot viewer.png --after 5   # offscreen PNG",
    )
    add_source_options(p)
    p.add_argument("--results", metavar="NAME", default=None,
                   help="the runtime's results stream (type BCIResults), e.g. BCIResults")
    p.add_argument("--model", type=Path, default=None, metavar="DIR",
                   help="take the preprocessed view's filters from this checkpoint [0.5-40 Hz, notch 50, average]")
    add_viewer_options(p)
    p.add_argument("--duration", type=positive_float, default=None, help="close after S seconds [never]")
    p.add_argument("--resolve-timeout", type=positive_float, default=5.0, help="seconds to find each stream [5]")
    p.add_argument("--parent-pid", type=cli_types.positive_int, default=None, help=argparse.SUPPRESS)  # bci live's viewer child
    p.set_defaults(func=cmd_view)
