"""``bci epochs``, ``bci check-splits`` and ``bci dataset simulate|info``: epoch datasets from the command line.

Wiring (in ``bci/cli/main.py``): ``from offline.cli.dataset import register; register(sub, _add_parser)``.
Each handler turns the parsed flags into plain arguments and calls library code.

Exit status of ``bci check-splits``: 0 when no checked split leaks (warnings such as the
block-design confound do not change it), 1 when at least one leaks (including splits
stored on purpose with ``allow_leak=True``), 2 for usage errors (as every command).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from bci.cli.defaults import Default
from bci.cli.progress import add_progress_flag, show_progress
from bci.cli.types import positive_int as _positive_int
from bci.cli import types as cli_types

AddParser = Callable[[Any, str, str, str], argparse.ArgumentParser]

_WINDOW = "offline.data.build_options:WindowOptions"
_SIMULATION = "offline.data.build_options:SimulationOptions"


def _sim(name: str) -> Default:
    """The default of ``bci dataset simulate``'s flag for :class:`SimulationOptions` field ``name``."""
    return Default.of(_SIMULATION, name)


def _value(flag: Any) -> Any:
    """A flag's value: a :class:`Default` left in place reads the options dataclass."""
    return flag.value if isinstance(flag, Default) else flag


class _Progress:
    """A tqdm bar over sessions (fractions of a session move it), drawn when ``enabled`` (:func:`show_progress`)."""

    def __init__(self, n_sessions: int, desc: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=n_sessions * 1000, desc=desc, unit="", bar_format=(
            "{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]"), disable=not enabled,
            file=sys.stderr)

    def __call__(self, index: int, n_sessions: int, fraction: float, n_epochs: int) -> None:
        target = int(round((index + fraction) * 1000))
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)
        self.bar.set_postfix_str(f"session {index + 1}/{n_sessions}, {n_epochs} epochs", refresh=False)

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------------- bci epochs
def _cmd_epochs(args: argparse.Namespace) -> int:
    from bci.cli.decode import CHANNEL_MAP_FLAGS
    from bci.preprocessing.channel_map import ChannelMapOptions
    from offline.data.build import LabelOptions, WindowOptions, epochs_from_sessions

    sessions, out = list(args.sessions), args.out
    channels = ChannelMapOptions(**{n: _value(getattr(args, n)) for n in CHANNEL_MAP_FLAGS})
    window = WindowOptions(preprocessing=None if args.raw else "default", model=args.model, offset=args.offset,
                           n_times=args.n_times, marker_filter=_value(args.marker_filter), data_stream=args.stream,
                           marker_stream=args.markers, channels=channels, skip_damaged=args.skip_damaged)
    labels = LabelOptions(subject=args.subject, block_gap=args.block_gap)
    fif = None
    if args.to_fif is not None:  # checked before the build: a bad name or an existing file wastes no time
        from offline.data.mne_epochs import check_fif_name

        fif = check_fif_name(args.to_fif, "--to-fif")
        if fif.exists() and not args.overwrite:
            raise FileExistsError(f"--to-fif {str(fif)!r} already exists; choose a new file or pass --overwrite")
    progress = _Progress(len(sessions), "epochs", show_progress(args.no_progress))
    try:
        report = epochs_from_sessions(
            sessions, out, window, labels, splits=[s for s in args.splits.split(",") if s], seed=args.seed,
            overwrite=args.overwrite, chunk_epochs=args.chunk_epochs, progress=progress,
        )
    finally:
        progress.close()
    print(report)
    if fif is not None:
        from offline.data.mne_epochs import describe_fif, write_epochs_fif

        print(describe_fif(write_epochs_fif(report.path, fif, overwrite=args.overwrite), fif))
    return 0


def _add_epochs(sub: Any, add_parser: AddParser) -> None:
    p = add_parser(sub, "epochs", "Cut event-locked epochs from recorded sessions into an epoch dataset (Zarr), "
                   "with the runtime's own preprocessing and windowing",
                   "bci epochs rec1.zarr rec2.zarr epochs.zarr --subject S01")
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="Zarr session(s) to cut")
    p.add_argument("out", metavar="OUT", help="epoch dataset to create (Zarr)")
    p.add_argument("--offset", type=cli_types.finite_float, default=None, help="seconds from marker to window start "
                   "[0.020 for EEG, 4.0 for fMRI]")
    p.add_argument("--n-times", type=_positive_int, default=None, help="samples per window [440 for EEG]")
    p.add_argument("--marker-filter", default=Default.of(_WINDOW, "marker_filter"), metavar="RE",
                   help="only markers matching this regular expression open windows [%(default)s]; '' for all")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="take preprocessing and window length from this checkpoint (and check its rate/channels)")
    p.add_argument("--raw", action="store_true", help="no preprocessing (default: 0.5-40 Hz, 50 Hz notch, "
                   "average reference, as PreprocessConfig())")
    p.add_argument("--subject", default=None, metavar="ID", help="subject id of all sessions "
                   "[session attribute 'subject', else subject-0]")
    p.add_argument("--stream", default=None, metavar="NAME", help="data stream (name, key or type=EEG) "
                   "[first EEG/fMRI stream]")
    p.add_argument("--markers", default=None, metavar="NAME", help="marker stream [first marker stream]")
    p.add_argument("--block-gap", type=cli_types.non_negative_float, default=None, metavar="S", help="without block_start markers, "
                   "a gap longer than S seconds between stimuli starts a block [2.5 x median gap]")
    p.add_argument("--splits", default="block", metavar="LIST",
                   help="splits to store: comma-separated from block,zero_shot,session,subject ['block']; '' none")
    p.add_argument("--seed", type=cli_types.non_negative_int, default=0, help="seed of the splits [0]")
    p.add_argument("--chunk-epochs", type=_positive_int, default=64, help="epochs per Zarr chunk [64]")
    p.add_argument("--to-fif", default=None, metavar="FILE",
                   help="also write the epochs as mne epochs, FILE ending in -epo.fif (events per class, metadata: "
                        "image_id, label, subject, session, block, marker_time, split_<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT (and --to-fif FILE) if it exists")
    p.add_argument("--skip-damaged", action="store_true",
                   help="cut around damaged chunks ('bci info --verify' lists them): each is a gap, no epoch spans "
                        "it, its markers are dropped with the reason (default: stop with an error)")
    add_progress_flag(p)
    from bci.cli.decode import add_channel_map_options

    add_channel_map_options(p)  # needs --model: the epochs get the model's channels, mapped as bci live maps
    p.set_defaults(func=_cmd_epochs)


# --------------------------------------------------------------------------- bci check-splits
def _cmd_check_splits(args: argparse.Namespace) -> int:
    from offline.data.epochs import EpochDataset
    from offline.data.splits import check_splits

    ds = EpochDataset.open(args.dataset, cache_bytes=0)
    try:
        report = check_splits(ds, args.split)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 1 if report.leaking else 0


def _add_check_splits(sub: Any, add_parser: AddParser) -> None:
    p = add_parser(sub, "check-splits", "Check an epoch dataset's splits for leakage (shared epochs, blocks, "
                   "runs, sessions, overlapping windows) and warn about block-design confounds; "
                   "exit 1 if a split leaks", "bci check-splits epochs.zarr --split block")
    p.add_argument("dataset", metavar="DS", help="epoch dataset (Zarr)")
    p.add_argument("--split", default=None, metavar="NAME", help="check only this split [all]")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_check_splits)


# --------------------------------------------------------------------------- bci dataset
def _cmd_dataset_simulate(args: argparse.Namespace) -> int:
    from offline.data.build import SimulationOptions, WindowOptions, epochs_from_simulation

    simulation = SimulationOptions(n_per_class=_value(args.n_per_class), n_blocks=_value(args.blocks),
                                   snr=_value(args.snr), seed=_value(args.seed), n_classes=_value(args.classes),
                                   design=_value(args.design))
    window = WindowOptions(preprocessing=None if args.raw else "default")
    progress = _Progress(1, "simulate+epochs", show_progress(args.no_progress))
    try:
        report = epochs_from_simulation(args.out, simulation, window, keep_session=args.keep_session,
                                        overwrite=args.overwrite, progress=progress)
    finally:
        progress.close()
    print(report)
    return 0


def _cmd_dataset_info(args: argparse.Namespace) -> int:
    from offline.data.epochs import EpochDataset

    ds = EpochDataset.open(args.dataset, cache_bytes=0, verify=args.verify)
    counts = {ds.class_names[c]: int(n) for c, n in zip(*np.unique(ds.labels, return_counts=True))}
    lines = [
        repr(ds),
        f"modality {ds.modality}; {ds.n_channels} channels x {ds.n_times} samples at {ds.sfreq:g} Hz; "
        f"{len(counts)} classes with epochs (min {min(counts.values())}, max {max(counts.values())} per class)",
        f"image table: {0 if ds.image_table_ids is None else len(ds.image_table_ids)} images; "
        f"fingerprint {ds.fingerprint()}" + ("; data verified (finite, hash matches)" if args.verify else ""),
        f"preprocessing: {json.dumps(ds.preprocessing)}",
    ]
    for name in sorted(ds.splits):
        info = ds.split_info(name)
        sizes = ", ".join(f"{p} {len(v)}" for p, v in info.parts.items())
        lines.append(f"split {name!r} ({info.kind}): {sizes}" + ("  [LEAKING, stored with allow_leak]"
                                                                  if info.leaking else ""))
    print("\n".join(lines))
    return 0


def _cmd_dataset_to_fif(args: argparse.Namespace) -> int:
    from offline.data.mne_epochs import describe_fif, write_epochs_fif

    epochs = write_epochs_fif(args.dataset, args.file, split=args.split, part=args.part, event_by=args.event_by,
                              overwrite=args.overwrite)
    print(describe_fif(epochs, args.file))
    return 0


def _add_to_fif(inner: Any, add_parser: AddParser) -> None:
    t = add_parser(inner, "to-fif", "Write an epoch dataset as mne epochs (-epo.fif): events per class or image, "
                   "metadata image_id, label, subject, session, block, run, marker_time, split_<name>",
                   "bci dataset to-fif sim.zarr sim-epo.fif --split block --part test")
    t.add_argument("dataset", metavar="DS", help="epoch dataset (Zarr)")
    t.add_argument("file", metavar="FILE", help="mne epochs file to create, ending in -epo.fif")
    t.add_argument("--split", default=None, metavar="NAME", help="only the epochs of this stored split [all epochs]")
    t.add_argument("--part", default=None, metavar="PART", help="with --split: only this part, e.g. test [all parts]")
    t.add_argument("--event-by", choices=("label", "image"), default="label",
                   help="event code per class (event_id {class: code}) or per image ({class/image_id: code}) "
                        "[%(default)s]")
    t.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    t.set_defaults(func=_cmd_dataset_to_fif)


def _add_dataset(sub: Any, add_parser: AddParser) -> None:
    p = add_parser(sub, "dataset", "Epoch datasets: simulate one from the synthetic world, or describe one",
                   "bci dataset simulate sim.zarr --n-per-class 20 --blocks 4 --snr 0.5")
    inner = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    inner.required = True
    s = add_parser(inner, "simulate", "Simulate a session of the synthetic world and build its epoch dataset "
                   "(images, captions, block and zero-shot splits)",
                   "bci dataset simulate sim.zarr --n-per-class 20 --blocks 4 --snr 0.5")
    s.add_argument("out", metavar="OUT", help="dataset to create")
    s.add_argument("--n-per-class", type=_positive_int, default=_sim("n_per_class"),
                   help="trials per class [%(default)s]")
    s.add_argument("--blocks", type=_positive_int, default=_sim("n_blocks"), help="blocks per class [%(default)s]")
    s.add_argument("--classes", type=_positive_int, default=_sim("n_classes"),
                   help="number of classes, 1-40 [%(default)s]")
    s.add_argument("--snr", type=cli_types.non_negative_float, default=_sim("snr"), help="evoked-response SNR [%(default)s]")
    s.add_argument("--seed", type=cli_types.non_negative_int, default=_sim("seed"), help="seed of everything [%(default)s]")
    s.add_argument("--design", choices=("block", "rapid"), default=_sim("design"),
                   help="block: one class per block (EEG-ImageNet); rapid: classes interleaved [%(default)s]")
    s.add_argument("--raw", action="store_true", help="no preprocessing [PreprocessConfig() defaults]")
    s.add_argument("--keep-session", default=None, metavar="DIR", help="also keep the simulated Zarr session")
    s.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_progress_flag(s)
    s.set_defaults(func=_cmd_dataset_simulate)
    i = add_parser(inner, "info", "Describe an epoch dataset: shape, classes, image table, splits, fingerprint",
                   "bci dataset info sim.zarr --verify")
    i.add_argument("dataset", metavar="DS", help="epoch dataset (Zarr)")
    i.add_argument("--verify", action="store_true", help="read all data: check it is finite and matches its hash")
    i.set_defaults(func=_cmd_dataset_info)
    _add_to_fif(inner, add_parser)


def register(sub: Any, add_parser: AddParser) -> None:
    """Add ``epochs``, ``check-splits`` and ``dataset`` to the ``bci`` subcommands.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``bci`` subparsers.
    add_parser : callable
        ``add_parser(sub, name, help_text, example) -> ArgumentParser`` (``bci.cli.main._add_parser``).
    """
    _add_epochs(sub, add_parser)
    _add_check_splits(sub, add_parser)
    _add_dataset(sub, add_parser)
