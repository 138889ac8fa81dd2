"""``bci present``: show a gallery's images as trials, send a marker per stimulus, show decoded results."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bci.cli.defaults import Default, given
from bci.cli.types import non_negative_float, positive_float, positive_int
from bci.present.choices import ORDERS, PHOTODIODE_CORNERS

_OPTIONS = "bci.present.options:PresenterOptions"


def _default(name: str, none: str | None = None) -> Default:
    return Default.of(_OPTIONS, name, none)


def cmd_present(args: argparse.Namespace) -> int:
    """Flags -> :class:`~bci.present.PresenterOptions` -> :func:`~bci.present.run_presenter`; print the summary."""
    from bci.present import PresenterOptions, run_presenter

    names = ("markers", "results", "n_trials", "duration_ms", "isi_ms", "jitter_ms", "feedback_ms",
             "result_timeout_ms", "seed", "order", "fullscreen", "photodiode", "photodiode_size", "image_size",
             "wait_for_consumers", "resolve_timeout", "log")
    options = PresenterOptions(args.gallery, **given({n: getattr(args, n) for n in names}))
    print(f"presenting {options.gallery} on marker stream {options.markers!r}"
          + (f", results from {options.results!r}" if options.results else "") + "; Escape stops", flush=True)
    report = run_presenter(options)
    print(report.summary())
    if options.log is not None:
        print(f"wrote the trial log to {options.log}")
    return 0


def register(sub: argparse._SubParsersAction, add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``bci present`` to the ``bci`` command line."""
    p = add_parser(
        sub,
        "present",
        "Show a gallery's images as trials (Qt), send stim/<id>/<label> on an LSL marker stream as each frame "
        "is drawn, and show the image bci live decoded for each trial.",
        "bci present stimuli/ --markers Stim-Markers --results BCIResults --n-trials 40 --photodiode bottom-right "
        "--log run.json\n"
        "  bci simulate --stimuli stimuli/ ... writes such a gallery folder (DIR/<id>.png + labels.csv)",
    )
    p.add_argument("gallery", type=Path, metavar="GALLERY", help="gallery folder: DIR/<id>.png + labels.csv")
    p.add_argument("--markers", metavar="NAME", default=_default("markers"),
                   help="name of the marker stream this presenter opens [%(default)s]")
    p.add_argument("--results", metavar="NAME", default=None,
                   help="bci live's results stream (type BCIResults): show each trial's decoded top-1 image")
    p.add_argument("--n-trials", type=positive_int, default=_default("n_trials", "one per image"),
                   help="trials [%(default)s]")
    p.add_argument("--duration-ms", type=positive_float, default=_default("duration_ms"),
                   help="stimulus on-time in ms [%(default)s]")
    p.add_argument("--isi-ms", type=non_negative_float, default=_default("isi_ms"),
                   help="blank interval before each next stimulus, ms [%(default)s]")
    p.add_argument("--jitter-ms", type=non_negative_float, default=_default("jitter_ms"),
                   help="plus a uniform random 0..J ms on each ISI [%(default)s]")
    p.add_argument("--feedback-ms", type=non_negative_float, default=_default("feedback_ms"),
                   help="how long the decoded image (or 'no result') is shown, with --results [%(default)s]")
    p.add_argument("--result-timeout-ms", type=non_negative_float, default=_default("result_timeout_ms"),
                   help="wait this long after the stimulus offset for the trial's result [%(default)s]")
    p.add_argument("--seed", type=int, default=_default("seed"), help="seed of the order and the jitter [%(default)s]")
    p.add_argument("--order", choices=ORDERS, default=_default("order"),
                   help="random: shuffled passes through the gallery; sequential: its sorted order [%(default)s]")
    screen = p.add_mutually_exclusive_group()
    screen.add_argument("--fullscreen", dest="fullscreen", action="store_const", const=True,
                        default=_default("fullscreen"), help="full screen (the default)")
    screen.add_argument("--windowed", dest="fullscreen", action="store_const", const=False,
                        help="a 1024x768 window")
    p.add_argument("--photodiode", choices=PHOTODIODE_CORNERS, default=_default("photodiode"),
                   help="corner of a patch that is white while the stimulus is on, black otherwise [%(default)s]")
    p.add_argument("--photodiode-size", type=positive_int, default=_default("photodiode_size"),
                   help="side of the patch in pixels [%(default)s]")
    p.add_argument("--image-size", type=positive_int, default=_default("image_size"),
                   help="images are centre-cropped, resized to PX x PX and shown at that size [%(default)s]")
    p.add_argument("--wait-for-consumers", type=non_negative_float, default=_default("wait_for_consumers"),
                   metavar="S", help="wait up to S seconds for a consumer of the marker stream before the first "
                                     "trial [%(default)s]")
    p.add_argument("--resolve-timeout", type=positive_float, default=_default("resolve_timeout"), metavar="S",
                   help="seconds to find the results stream [%(default)s]")
    p.add_argument("--log", type=Path, default=None, metavar="FILE",
                   help="write a JSON log: per trial the image id, marker time, decoded top-1 and hit")
    p.set_defaults(func=cmd_present)
