"""``bci import {raw,bids,xdf,eeg-imagenet,things-eeg2,fmri,mne-epochs}``: bring public formats into sessions and datasets.

Wiring (in ``bci/cli/main.py``): ``from offline.cli.imports import register; register(sub, _add_parser)``.
Each handler turns the namespace into plain arguments, calls the importer in
:mod:`offline.importers` (progress bars on stderr), then prints a summary read
back from what was written.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bci.cli.progress import add_progress_flag, show_progress
from bci.cli.types import finite_float as _finite_float
from bci.cli.types import positive_float as _positive_float
from bci.cli.types import positive_int as _positive_int
from bci.cli import types as cli_types

EXAMPLES = (
    "bci import raw rec.edf sessions/rec.zarr --event-map events.json\n"
    "  bci import bids bids/ --subject 01 --task images sessions/sub01.zarr\n"
    "  bci import xdf rec.xdf sessions/rec.zarr\n"
    "  bci import eeg-imagenet eeg_55_95_std.pth --splits block_splits_by_image_all.pth datasets/eeg_imagenet\n"
    "  bci import things-eeg2 sub-01/preprocessed_eeg_training.npy sub-01/preprocessed_eeg_test.npy "
    "datasets/things_sub01 --trust-pickle\n"
    "  bci import fmri miyawaki_s1.npz datasets/miyawaki --tr 2 --test-runs 21,22,23 --image-size 60\n"
    "  bci import mne-epochs sub01-epo.fif datasets/sub01"
)


# --------------------------------------------------------------------------- small parsers
def channel_names_option(value: str | None) -> list[str] | None:
    """``--channel-names``: a file (JSON list or one name per line) or an mne montage name."""
    if value is None:
        return None
    from offline.importers._checks import read_names

    if Path(value).exists():
        return read_names(value, "--channel-names file")
    import mne

    if value in mne.channels.get_builtin_montages():
        return list(mne.channels.make_standard_montage(value).ch_names)
    raise FileNotFoundError(f"--channel-names {value!r} is neither a file nor a built-in mne montage name "
                            "(e.g. biosemi128)")


# --------------------------------------------------------------------------- summaries
def summarize_session(path: Path) -> str:
    """Lines describing an imported session: streams, samples, markers."""
    from streams.session import SessionReader

    r = SessionReader(path)
    lines = [f"wrote session {path}"]
    for key in r.streams:
        d = r.description(key)
        n = r.n_samples(key)
        rate = f"{d.nominal_rate:g} Hz" if d.is_regular else "irregular"
        t = r.times(key)
        span = f", t {t[0]:.3f}..{t[-1]:.3f} s" if n else ""
        lines.append(f"  {key}: type {d.type or '?'}, {d.n_channels} ch, {rate}, {n} samples{span}")
    info = r.attrs.get("imported_from") or {}
    if info.get("lsl_restored"):
        lines.append("  restored exactly from sourcedata/bci: original streams, LSL timestamps, gaps, every marker")
    if info.get("event_map"):
        lines.append(f"  events: {info.get('n_mapped', 0)} mapped to stim/<image_id>/<label>, "
                     f"{info.get('n_unmapped', 0)} unmapped (written as event/<text>)")
        if info.get("unused_map_keys"):
            lines.append(f"  event map keys that matched nothing: {', '.join(map(str, info['unused_map_keys'][:10]))}")
    elif "n_events" in info:
        lines.append(f"  events: {info['n_events']} (no event map: written as they are)")
    for problem in info.get("problems") or []:
        lines.append(f"  damaged chunk skipped: {problem}")
    return "\n".join(lines)


def summarize_dataset(path: Path) -> str:
    """Lines describing an imported epoch dataset: shape, subjects, classes, images, splits and leaks."""
    from offline.data.epochs import EpochDataset

    ds = EpochDataset.open(path)
    src = ds.source
    lines = [
        f"wrote epoch dataset {path} ({ds.modality})",
        f"  {ds.n_epochs} epochs x {ds.n_channels} channels x {ds.n_times} samples at {ds.sfreq:g} Hz",
        f"  {len(set(ds.subject.tolist()))} subject(s), {len(ds.class_names)} classes, "
        f"{len(set(ds.image_ids))} images, {len(set(zip(ds.subject.tolist(), ds.session.tolist(), ds.block.tolist())))} blocks",
    ]
    if src.get("n_skipped_short"):
        lines.append(f"  left out {src['n_skipped_short']} epoch(s) shorter than the time slice")
    images = src.get("images")
    if isinstance(images, dict):
        lines.append(f"  images: {images['found']}/{images['requested']} read"
                     + (f"; {images['n_missing']} missing (black rows): {', '.join(images['missing'][:5])}"
                        if images["n_missing"] else "")
                     + (f"; {images['n_undecodable']} undecodable: {', '.join(images['undecodable'][:3])}"
                        if images["n_undecodable"] else ""))
    elif isinstance(images, str):
        lines.append(f"  images: {images}")
    for name in sorted(ds.splits):
        info = ds.split_info(name)
        sizes = ", ".join(f"{p} {len(v)}" for p, v in info.parts.items())
        status = "LEAKS (stored as published, flagged)" if info.leaking else "no leak"
        lines.append(f"  split {name} ({info.kind}): {sizes} -- {status}")
    if any(ds.split_info(n).leaking for n in ds.splits):
        lines.append("  leaking splits are kept for comparison with published numbers only; train and report on "
                     "the block-aware ones")
    lines.append(f"  check the splits: bci check-splits {path}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- handlers
def _cmd_raw(args: argparse.Namespace) -> int:
    from offline.importers import import_raw, load_event_map

    event_map = load_event_map(args.event_map) if args.event_map is not None else None
    out = import_raw(args.file, args.out, event_map=event_map, stim_channel=args.stim_channel or None,
                     overwrite=args.overwrite, progress=show_progress(args.no_progress))
    print(summarize_session(out))
    return 0


def _cmd_bids(args: argparse.Namespace) -> int:
    from offline.importers import BidsImportOptions, import_bids, load_event_map

    event_map = load_event_map(args.event_map) if args.event_map is not None else None
    out = import_bids(BidsImportOptions(
        bids_root=args.bids_root, out=args.out, subject=args.subject, session_label=args.bids_session,
        task=args.task, run=args.run, event_map=event_map, overwrite=args.overwrite,
        progress=show_progress(args.no_progress)))
    print(summarize_session(out))
    return 0


def _cmd_xdf(args: argparse.Namespace) -> int:
    from offline.importers import import_xdf

    out = import_xdf(args.file, args.out, overwrite=args.overwrite, allow_damaged=args.allow_damaged,
                     progress=show_progress(args.no_progress))
    print(summarize_session(out))
    return 0


def _cmd_eeg_imagenet(args: argparse.Namespace) -> int:
    from offline.importers import import_eeg_imagenet
    from offline.importers._checks import parse_time_slice, read_mapping

    class_names = read_mapping(args.class_names, "--class-names file") if args.class_names is not None else None
    out = import_eeg_imagenet(
        args.file, args.out, splits_path=args.splits, time_slice=parse_time_slice(args.time_slice),
        sfreq=args.sfreq, ch_names=channel_names_option(args.channel_names), class_names=class_names,
        images_dir=args.images, image_size=args.image_size, blocks=args.blocks, seed=args.seed,
        overwrite=args.overwrite, progress=show_progress(args.no_progress),
    )
    print(summarize_dataset(out))
    return 0


def _cmd_things(args: argparse.Namespace) -> int:
    from offline.importers import import_things_eeg2

    out = import_things_eeg2(
        args.train, args.test, args.out, trust_pickle=args.trust_pickle,
        average_repetitions=args.average_repetitions, subject=args.subject, metadata_path=args.metadata,
        images_dir=args.images, image_size=args.image_size, images_per_concept=args.images_per_concept,
        val=args.val, seed=args.seed, overwrite=args.overwrite, progress=show_progress(args.no_progress),
    )
    print(summarize_dataset(out))
    return 0


def _cmd_fmri(args: argparse.Namespace) -> int:
    from offline.importers import import_fmri

    out = import_fmri(args.file, args.out, tr=args.tr, image_size=args.image_size, test_runs=args.test_runs,
                      seed=args.seed, offset=args.offset, overwrite=args.overwrite, progress=show_progress(args.no_progress))
    print(summarize_dataset(out))
    return 0


def _cmd_mne_epochs(args: argparse.Namespace) -> int:
    from offline.data.mne_epochs import import_mne_epochs

    result = import_mne_epochs(args.file, args.out, overwrite=args.overwrite)
    print(result)
    print(summarize_dataset(result.path))
    return 0


# --------------------------------------------------------------------------- parser
def _sub(isub: Any, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return isub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_progress_flag(p)


def _add_raw(isub: Any) -> None:
    p = _sub(isub, "raw", "An MNE-readable raw file (FIF, EDF/BDF, BrainVision, EEGLAB, ...) -> Zarr session "
             "(EEG stream + markers from annotations and stim channels).",
             "bci import raw sub01.vhdr sessions/sub01.zarr --event-map events.csv")
    p.add_argument("file", type=Path, metavar="FILE", help="raw file (anything mne.io.read_raw reads)")
    p.add_argument("out", type=Path, metavar="OUT", help="session directory to create")
    p.add_argument("--event-map", type=Path, default=None, metavar="FILE",
                   help="JSON {event: image_id | [image_id, label]} or CSV with columns event,image_id[,label]: "
                        "mapped events become stim/<image_id>/<label> markers")
    p.add_argument("--stim-channel", action="append", default=None, metavar="NAME",
                   help="stimulus channel to read events from (repeatable) [every channel of type stim]")
    _common(p)
    p.set_defaults(func=_cmd_raw)


def _add_bids(isub: Any) -> None:
    p = _sub(isub, "bids", "One EEG recording of a BIDS dataset (mne-bids) -> Zarr session; a recording written by "
             "bci export bids comes back exactly (LSL timestamps, gaps, markers, results).",
             "bci import bids bids/ --subject 01 --task images sessions/sub01.zarr")
    p.add_argument("bids_root", type=Path, metavar="BIDS_ROOT", help="the BIDS dataset (has dataset_description.json)")
    p.add_argument("--subject", required=True, metavar="S", help="BIDS subject label (without sub-)")
    p.add_argument("--session", dest="bids_session", default=None, metavar="N",
                   help="BIDS session label [the subject's only recording]")
    p.add_argument("--task", default=None, metavar="T", help="BIDS task label [the subject's only recording]")
    p.add_argument("--run", default=None, metavar="R", help="BIDS run label [the subject's only recording]")
    p.add_argument("out", type=Path, metavar="OUT", help="session directory to create")
    p.add_argument("--event-map", type=Path, default=None, metavar="FILE",
                   help="as for bci import raw: events.tsv trial_type -> image id (not for our own exports)")
    _common(p)
    p.set_defaults(func=_cmd_bids)


def _image_options(p: Any, what: str) -> None:
    """``--images DIR`` and ``--image-size N`` of the dataset importers that store stimulus images."""
    p.add_argument("--images", type=Path, default=None, metavar="DIR", help=f"folder with {what}")
    p.add_argument("--image-size", type=_positive_int, default=64, metavar="N", help="stored image side [64]")


def _add_xdf(isub: Any) -> None:
    p = _sub(isub, "xdf", "An XDF recording (LabRecorder) -> Zarr session: every stream, clock-corrected.",
             "bci import xdf sub01_task.xdf sessions/sub01.zarr")
    p.add_argument("file", type=Path, metavar="FILE", help=".xdf or .xdfz file")
    p.add_argument("out", type=Path, metavar="OUT", help="session directory to create")
    p.add_argument("--allow-damaged", action="store_true",
                   help="import the intact chunks of a truncated/corrupt file (the problems are recorded)")
    _common(p)
    p.set_defaults(func=_cmd_xdf)


def _add_eeg_imagenet(isub: Any) -> None:
    p = _sub(isub, "eeg-imagenet", "EEG-ImageNet (Spampinato et al.) .pth -> epoch dataset with the published "
             "splits (flagged: block-design confounded) and block-aware splits.",
             "bci import eeg-imagenet eeg_55_95_std.pth --splits block_splits_by_image_all.pth "
             "datasets/eeg_imagenet --images imagenet_subset/")
    p.add_argument("file", type=Path, metavar="FILE", help="the dataset .pth (loaded with weights_only=True)")
    p.add_argument("--splits", type=Path, default=None, metavar="FILE", help="the published splits .pth")
    p.add_argument("out", type=Path, metavar="OUT", help="epoch dataset directory to create")
    p.add_argument("--time-slice", default="20:460", metavar="START:STOP",
                   help="samples kept of each epoch; ':' keeps all [20:460]")
    p.add_argument("--sfreq", type=_positive_float, default=1000.0, help="sampling rate of the file in Hz [1000]")
    p.add_argument("--channel-names", default=None, metavar="FILE|MONTAGE",
                   help="channel names: a file (JSON list or one per line) or an mne montage name [EEG001...]")
    p.add_argument("--class-names", type=Path, default=None, metavar="FILE",
                   help="JSON or CSV mapping class ids (WordNet ids) to readable names")
    _image_options(p, "the stimulus images")
    p.add_argument("--blocks", choices=("subject-label", "consecutive"), default="subject-label",
                   help="how blocks are reconstructed [subject-label]")
    p.add_argument("--seed", type=cli_types.non_negative_int, default=0, help="seed of the block-aware splits [0]")
    _common(p)
    p.set_defaults(func=_cmd_eeg_imagenet)


def _add_things(isub: Any) -> None:
    p = _sub(isub, "things-eeg2", "THINGS-EEG2 preprocessed .npy (training + test of one subject) -> epoch "
             "dataset with a 200-way zero-shot split. These files are pickles: needs --trust-pickle.",
             "bci import things-eeg2 sub-01/preprocessed_eeg_training.npy sub-01/preprocessed_eeg_test.npy "
             "datasets/things_sub01 --trust-pickle --metadata image_metadata.npy")
    p.add_argument("train", type=Path, metavar="TRAIN", help="preprocessed_eeg_training.npy")
    p.add_argument("test", type=Path, metavar="TEST", help="preprocessed_eeg_test.npy")
    p.add_argument("out", type=Path, metavar="OUT", help="epoch dataset directory to create")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling the files (can run arbitrary code: only for files from a trusted source)")
    p.add_argument("--average-repetitions", action="store_true", help="one epoch per image (mean of repetitions)")
    p.add_argument("--subject", type=cli_types.non_negative_int, default=None, help="subject number [from sub-XX in the path, else 1]")
    p.add_argument("--metadata", type=Path, default=None, metavar="FILE",
                   help="image_metadata.npy (pickled: needs --trust-pickle) or JSON with the same keys")
    _image_options(p, "the THINGS images")
    p.add_argument("--images-per-concept", type=_positive_int, default=10,
                   help="training images per concept without --metadata [10]")
    p.add_argument("--val", type=cli_types.non_negative_float, default=0.1, help="fraction of training images for validation [0.1]")
    p.add_argument("--seed", type=cli_types.non_negative_int, default=0, help="seed of the validation choice [0]")
    _common(p)
    p.set_defaults(func=_cmd_things)


def _add_fmri(isub: Any) -> None:
    p = _sub(isub, "fmri", "fMRI trials (npz: voxels, run, stimulus/labels/image_ids; or CSV) -> epoch dataset "
             "(modality fmri) with a run-wise split.",
             "bci import fmri miyawaki_s1.npz datasets/miyawaki --tr 2 --test-runs 21,22,23 --image-size 60")
    p.add_argument("file", type=Path, metavar="FILE", help=".npz or .csv trial file")
    p.add_argument("out", type=Path, metavar="OUT", help="epoch dataset directory to create")
    p.add_argument("--tr", type=_positive_float, default=2.0, help="repetition time in seconds [2]")
    p.add_argument("--image-size", type=_positive_int, default=None, metavar="N",
                   help="resize stimulus patterns to N x N (nearest; a multiple of the grid keeps cells square) "
                        "[keep their grid, e.g. 10x10]")
    p.add_argument("--test-runs", type=cli_types.int_list, default=None, metavar="R1,R2",
                   help="runs held out for test [20%% of runs drawn with --seed]")
    p.add_argument("--seed", type=cli_types.non_negative_int, default=0, help="seed of the run split [0]")
    p.add_argument("--offset", type=_finite_float, default=None, metavar="S",
                   help="seconds from stimulus onset to each trial's volume (the HRF delay of the extraction); "
                        "recorded so bci live decodes at the same delay [not recorded: live uses 4 s]")
    _common(p)
    p.set_defaults(func=_cmd_fmri)


def _add_mne_epochs(isub: Any) -> None:
    p = _sub(isub, "mne-epochs", "mne epochs (.fif, e.g. from mne.Epochs.save or bci epochs --to-fif) -> epoch "
             "dataset: labels and image ids from the metadata columns label/image_id, else from the event names; "
             "subject/session/block/run/marker_time and split_<name> columns when present.",
             "bci import mne-epochs sub01-epo.fif datasets/sub01")
    p.add_argument("file", type=Path, metavar="FILE", help="mne epochs file (-epo.fif)")
    p.add_argument("out", type=Path, metavar="OUT", help="epoch dataset directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_mne_epochs)


def register(sub: argparse._SubParsersAction, add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``bci import raw|bids|xdf|eeg-imagenet|things-eeg2|fmri|mne-epochs`` to the ``bci`` sub-command parsers."""
    p = add_parser(sub, "import", "Import recordings and public datasets (raw EEG files, BIDS, XDF, EEG-ImageNet, "
                   "THINGS-EEG2, fMRI trials, mne epochs) into Zarr sessions and epoch datasets.", EXAMPLES)
    isub = p.add_subparsers(dest="import_format", metavar="FORMAT")
    isub.required = True
    for add in (_add_raw, _add_bids, _add_xdf, _add_eeg_imagenet, _add_things, _add_fmri, _add_mne_epochs):
        add(isub)
