"""``bci stream``: external acquisition devices as LSL sources (``bci stream brainflow``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bci.cli.defaults import Default, given
from bci.cli.types import non_negative_float, non_negative_int, positive_float, positive_int

_OPTIONS = "streams.brainflow:BrainflowSourceOptions"

EXAMPLES = (
    "bci stream brainflow --board synthetic --duration 60\n"
    "  bci stream brainflow --board cyton --serial-port /dev/ttyUSB0 --channels eeg,accel "
    "--marker-map markers.tsv\n"
    "  bci stream brainflow --board playback_file --master-board synthetic --file rec.csv"
)


def cmd_brainflow(args: argparse.Namespace) -> int:
    """``bci stream brainflow``: flags -> :class:`BrainflowSourceOptions` -> :func:`stream_board`."""
    from streams.brainflow import BrainflowSourceOptions, read_marker_map, stream_board

    flags = given({k: getattr(args, k) for k in (
        "board", "serial_port", "ip_address", "ip_port", "mac_address", "serial_number", "other_info",
        "master_board", "name", "channels", "duration", "chunk_size", "wait_for_consumers", "insert_markers_every")})
    if args.file is not None:
        flags["file"] = str(args.file)
    if args.marker_map is not None:
        flags["marker_map"] = read_marker_map(args.marker_map)
    stream_board(BrainflowSourceOptions(**flags), report=lambda line: print(line, flush=True))
    return 0


def register(sub: argparse._SubParsersAction, add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``bci stream brainflow`` to the ``bci`` sub-command parsers."""
    p = add_parser(sub, "stream", "Stream an external acquisition device over LSL (data + markers).", EXAMPLES)
    ssub = p.add_subparsers(dest="stream_command", metavar="SOURCE")
    ssub.required = True
    b = ssub.add_parser(
        "brainflow", help="a BrainFlow board as an LSL EEG stream NAME and a marker stream NAME-Markers",
        description="Stream a BrainFlow board (BoardShim) as an LSL EEG outlet (ExG in volts, float32, the "
                    "board's rate, timestamps from BrainFlow's mapped to the LSL clock) and its marker row as a "
                    "string marker outlet NAME-Markers. See docs/streams.md.",
        epilog=f"example:\n  {EXAMPLES}", formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--board", required=True, metavar="BOARD",
                   help="BrainFlow BoardIds name (synthetic, SYNTHETIC_BOARD, cyton, playback_file, ...) or integer id")
    g = b.add_argument_group("connection (BrainFlowInputParams; which ones a board needs: BrainFlow's board table)")
    g.add_argument("--serial-port", default=None, metavar="PORT", help="e.g. /dev/ttyUSB0, COM3")
    g.add_argument("--ip-address", default=None, metavar="ADDR")
    g.add_argument("--ip-port", type=non_negative_int, default=None, metavar="PORT")
    g.add_argument("--mac-address", default=None, metavar="MAC")
    g.add_argument("--serial-number", default=None, metavar="SN")
    g.add_argument("--other-info", default=None, metavar="TEXT")
    g.add_argument("--file", type=Path, default=None, metavar="FILE",
                   help="PLAYBACK_FILE_BOARD: a file written by BrainFlow's DataFilter.write_file")
    g.add_argument("--master-board", default=None, metavar="BOARD",
                   help="PLAYBACK_FILE_BOARD / STREAMING_BOARD: the board whose data it carries")
    b.add_argument("--name", default=None, metavar="NAME",
                   help="data stream name; markers: NAME-Markers [BrainFlow-<BOARD NAME>]")
    b.add_argument("--channels", default=Default.of(_OPTIONS, "channels"), metavar="KINDS",
                   type=lambda text: tuple(k.strip() for k in text.split(",") if k.strip()),
                   help="comma-separated BrainFlow channel kinds to send, in order: eeg, emg, ecg, eog, accel, "
                        "rotation, gyro, magnetometer, eda, ppg, optical, temperature, resistance, analog, other "
                        "[eeg]")
    b.add_argument("--marker-map", type=Path, default=None, metavar="FILE",
                   help="TSV (code<TAB>marker) or JSON ({\"1\": \"stim/img0001/cat\"}) file: BrainFlow marker "
                        "code -> marker string [the number as text]")
    b.add_argument("--duration", type=positive_float, default=None, metavar="S",
                   help="seconds to stream [until Ctrl-C, or the end of a playback file]")
    b.add_argument("--chunk-size", type=positive_int, default=Default.of(_OPTIONS, "chunk_size"), metavar="N",
                   help="push once N samples are waiting [%(default)s]")
    b.add_argument("--wait-for-consumers", type=non_negative_float, default=None, metavar="S",
                   help="wait up to S s for an inlet on both streams before the board starts streaming [do not wait]")
    b.add_argument("--insert-markers-every", type=positive_float, default=None, metavar="S",
                   help="test/demo aid: insert a BrainFlow marker every S s (codes of --marker-map in turn, "
                        "else 1, 2, 3, ...) through the board's own insert_marker")
    b.set_defaults(func=cmd_brainflow)
