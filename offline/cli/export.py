"""``bci export bids``: a Zarr session to a BIDS EEG recording (library: :mod:`offline.exporters.bids`).

Wiring (in ``bci/cli/offline.py``): ``register(sub, add_parser)``. The handler turns the flags
into :class:`~offline.exporters.bids.BidsExportOptions`, calls
:func:`~offline.exporters.bids.export_bids` and prints its summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bci.cli.progress import add_progress_flag, show_progress

EXAMPLES = ("bci export bids sessions/sim.zarr bids/ --subject 01 --task images\n"
            "  bci export bids sessions/rec.zarr bids/ --subject 02 --session 1 --run 1 --format EDF")


def _cmd_bids(args: argparse.Namespace) -> int:
    from offline.exporters.bids import BidsExportOptions, export_bids

    result = export_bids(BidsExportOptions(
        session=args.session, bids_root=args.bids_root, subject=args.subject, session_label=args.bids_session,
        task=args.task, run=args.run, format=args.format, stream=args.stream, overwrite=args.overwrite,
        progress=show_progress(args.no_progress), skip_damaged=args.skip_damaged))
    print(result.summary())
    return 0


def _add_bids(esub: Any) -> None:
    from offline.exporters.bids import FORMATS, BidsExportOptions

    task_default = BidsExportOptions.__dataclass_fields__["task"].default
    format_default = BidsExportOptions.__dataclass_fields__["format"].default
    help_text = ("A Zarr session -> one BIDS EEG recording (mne-bids): data, channels.tsv, events.tsv (markers, "
                 "gaps as BAD_gap), LSL timestamps in sourcedata/bci, decoded results in derivatives/bci.")
    p = esub.add_parser("bids", help=help_text, description=help_text,
                        epilog="example:\n  " + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("session", type=Path, metavar="SESSION", help="Zarr session to export")
    p.add_argument("bids_root", type=Path, metavar="BIDS_ROOT",
                   help="BIDS dataset folder: new, empty, or an existing BIDS dataset (the recording is added)")
    p.add_argument("--subject", required=True, metavar="S", help="BIDS subject label, letters and digits (e.g. 01)")
    p.add_argument("--session", dest="bids_session", default=None, metavar="N", help="BIDS session label [none]")
    p.add_argument("--task", default=task_default, metavar="T", help=f"BIDS task label [{task_default}]")
    p.add_argument("--run", default=None, metavar="R", help="BIDS run label [none]")
    p.add_argument("--format", choices=FORMATS, default=format_default,
                   help=f"data file format: BrainVision (float32, exact) or EDF (16-bit, lossy) [{format_default}]")
    p.add_argument("--stream", default=None, metavar="STREAM",
                   help="data stream (key, name or type=EEG,...) [the session's EEG stream]")
    p.add_argument("--overwrite", action="store_true", help="replace this recording if the dataset holds it")
    p.add_argument("--skip-damaged", action="store_true",
                   help="export around damaged chunks ('bci info --verify' lists them): their samples are left out, "
                        "each is a BAD_gap event like any gap (default: stop with an error)")
    add_progress_flag(p)
    p.set_defaults(func=_cmd_bids)


def register(sub: argparse._SubParsersAction, add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``bci export bids`` to the ``bci`` sub-command parsers."""
    p = add_parser(sub, "export", "Export recorded sessions to public formats (BIDS).", EXAMPLES)
    esub = p.add_subparsers(dest="export_format", metavar="FORMAT")
    esub.required = True
    _add_bids(esub)
