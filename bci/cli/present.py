"""``bci present``: show a gallery's images as trials, send a marker per stimulus, show decoded results."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from bci.cli.defaults import Default, given
from bci.cli.types import non_negative_float, non_negative_int, positive_float, positive_int
from bci.present.choices import ORDERS, PHOTODIODE_CORNERS

_OPTIONS = "bci.present.options:PresenterOptions"


#: Numeric flags: flag (its field is the name with "_"), type, metavar, help.
_NUMBERS = (
    ("--n-trials", positive_int, "N", "trials"),
    ("--duration-ms", positive_float, "MS", "stimulus on-time"),
    ("--isi-ms", non_negative_float, "MS", "blank interval before each next stimulus"),
    ("--jitter-ms", non_negative_float, "MS", "plus a uniform random 0..MS on each ISI"),
    ("--feedback-ms", non_negative_float, "MS", "how long the decoded image (or 'no result') is shown, with --results"),
    ("--result-timeout-ms", non_negative_float, "MS", "wait this long after the stimulus offset for the trial's result"),
    ("--seed", non_negative_int, "S", "seed of the order and the jitter"),
    ("--photodiode-size", positive_int, "PX", "side of the photodiode patch in pixels"),
    ("--image-size", positive_int, "PX", "images are centre-cropped, resized to PX x PX and shown at that size"),
    ("--wait-for-consumers", non_negative_float, "S",
     "wait up to S seconds for a consumer of the marker stream before the first trial"),
    ("--resolve-timeout", positive_float, "S", "seconds to find the results stream"),
)


def _default(name: str, none: str | None = None) -> Default:
    return Default.of(_OPTIONS, name, none)


def cmd_present(args: argparse.Namespace) -> int:
    """Flags -> :class:`~bci.present.PresenterOptions` -> :func:`~bci.present.run_presenter`; print the summary."""
    from bci.present import PresenterOptions, run_presenter

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(PresenterOptions)
             if f.name != "gallery" and hasattr(args, f.name)}
    options = PresenterOptions(args.gallery, **given(flags))
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
    for flag, kind, metavar, text in _NUMBERS:
        name = flag[2:].replace("-", "_")
        p.add_argument(flag, type=kind, metavar=metavar, default=_default(name, "one per image" if name == "n_trials"
                                                                          else None), help=f"{text} [%(default)s]")
    p.add_argument("--order", choices=ORDERS, default=_default("order"),
                   help="random: shuffled passes through the gallery; sequential: its sorted order [%(default)s]")
    screen = p.add_mutually_exclusive_group()
    screen.add_argument("--fullscreen", dest="fullscreen", action="store_const", const=True,
                        default=_default("fullscreen"), help="full screen (the default)")
    screen.add_argument("--windowed", dest="fullscreen", action="store_const", const=False,
                        help="a 1024x768 window")
    p.add_argument("--photodiode", choices=PHOTODIODE_CORNERS, default=_default("photodiode"),
                   help="corner of a patch that is white while the stimulus is on, black otherwise [%(default)s]")
    p.add_argument("--log", type=Path, default=None, metavar="FILE",
                   help="write a JSON log: per trial the image id, marker time, decoded top-1 and hit")
    p.set_defaults(func=cmd_present)
