"""EEG-ImageNet (Spampinato et al., CVPR 2017) ``.pth`` files to an epoch dataset.

Input layout (one file, e.g. ``eeg_55_95_std.pth``)::

    {"dataset": [{"eeg": FloatTensor[128, ~500], "image": int, "label": int, "subject": int}, ...],
     "labels":  ["n02389026", ...],         # class ids (WordNet ids), indexed by "label"
     "images":  ["n02389026_3192", ...]}    # image names, indexed by "image"

and optionally the splits file (``block_splits_by_image_all.pth`` or similar)::

    {"splits": [{"train": [i, ...], "val": [...], "test": [...]}, ...]}   # six splits, indices into dataset

Both are read with ``torch.load(weights_only=True)``: tensors, lists, dicts,
numbers and strings only. A file that needs full unpickling is refused
(:class:`~offline.importers._checks.UnsafeFileError`), never unpickled.

What the dataset gets: ``eeg[:, 20:460]`` (configurable) as float32 at 1000 Hz
(configurable), the subject, image name and class of every epoch, the six
published splits (``kind="published"``, leak-checked: they put epochs of the
same block in train and test, the block-design confound of Li et al. 2021) and
block-aware splits built here:

* **blocks**: each class was shown in one block per subject, so by default the
  block of an epoch is its ``(subject, label)`` pair (``blocks="subject-label"``);
  ``blocks="consecutive"`` starts a new block whenever ``(subject, label)``
  changes in file order (the two agree when the file keeps presentation order);
* **sessions**: one recording session per subject (``session = subject``);
* split ``block`` (``offline.data.splits.block_split``, kind ``block``): whole blocks,
  stratified by class, 20 % test / 10 % val of each class's blocks -- i.e. for
  every class the blocks of some subjects are held out;
* split ``subject`` (``offline.data.splits.subject_split``, kind ``subject``): whole
  subjects held out for test (with 3 subjects or more).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offline.importers._checks import (
    ImportFormatError,
    UnsafeFileError,
    check_output,
    codes,
    epoch_table,
    first_few,
    parse_time_slice,
    require_file,
    store_splits,
)
from streams.synthetic.stimuli import template_caption

logger = logging.getLogger(__name__)

#: Default time slice in samples (the reference loader's ``eeg[:, 20:460]``).
DEFAULT_TIME_SLICE: tuple[int, int] = (20, 460)
#: Default sampling rate of the published files (Hz).
DEFAULT_SFREQ = 1000.0
#: Keys every epoch entry must have.
ITEM_KEYS: tuple[str, ...] = ("eeg", "image", "label", "subject")
#: Ways to reconstruct blocks.
BLOCK_MODES: tuple[str, ...] = ("subject-label", "consecutive")
#: Split parts.
PARTS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class EEGImageNetFile:
    """A validated EEG-ImageNet file: per-entry metadata, and the EEG read on demand.

    Attributes
    ----------
    items : list of dict
        The file's ``dataset`` list (tensors are released as they are read).
    label, image, subject, length : ndarray, shape (n_file,), int64
        Per entry: class index (into ``label_names``), image index (into
        ``image_names``), subject number as stored, EEG length in samples.
    n_channels : int
    start, stop : int
        The time slice.
    kept : ndarray, int64
        Entries long enough for the slice (file order).
    label_names, image_names : list of str
    """

    path: Path
    items: list[Any]
    label: np.ndarray
    image: np.ndarray
    subject: np.ndarray
    length: np.ndarray
    n_channels: int
    start: int
    stop: int
    kept: np.ndarray
    label_names: list[str]
    image_names: list[str]

    @property
    def n_file(self) -> int:
        """Entries in the file."""
        return len(self.items)

    @property
    def skipped(self) -> list[int]:
        """File indices left out because their EEG is shorter than the slice end."""
        return np.flatnonzero(self.length < self.stop).tolist()

    def iter_epochs(self, chunk: int = 64, *, release: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, data)``: positions in :attr:`kept` and ``(k, n_channels, stop - start)`` float32.

        With ``release`` each tensor is dropped from :attr:`items` once copied, so
        memory stays at about one copy of the data.
        """
        import torch

        for first in range(0, len(self.kept), chunk):
            rows = np.arange(first, min(len(self.kept), first + chunk))
            out = np.empty((len(rows), self.n_channels, self.stop - self.start), dtype=np.float32)
            for j, i in enumerate(self.kept[rows]):
                out[j] = self.items[i]["eeg"][:, self.start:self.stop].to(torch.float32).numpy()
                if release:
                    self.items[i] = {k: v for k, v in self.items[i].items() if k != "eeg"}
            yield rows, out


# --------------------------------------------------------------------------- torch files
def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors; never unpickles arbitrary objects.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    UnsafeFileError
        The file holds objects that only full unpickling can create (refused:
        unpickling runs arbitrary code).
    ImportFormatError
        Truncated, corrupt or not a torch file.
    """
    import torch

    src = require_file(path, what)
    try:
        with open(src, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            detail = _unpickler_detail(str(e))
            raise UnsafeFileError(
                f"{what} {str(src)!r} holds objects other than tensors, lists, dicts, numbers and strings "
                f"({detail}). Loading it would need full unpickling, which can run arbitrary code, so it "
                "is refused. Re-save it in a trusted environment with only tensors/lists/dicts/ints/strings "
                "(the published EEG-ImageNet files are like that)"
            ) from None
        raise ImportFormatError(f"{what} {str(src)!r} is truncated or corrupt ({e})") from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, IndexError) as e:
        raise ImportFormatError(
            f"{what} {str(src)!r} is not a readable torch file; it is truncated, corrupt or of another format "
            f"({type(e).__name__}: {str(e)[:200]})"
        ) from None


def _unpickler_detail(message: str) -> str:
    """The line of torch's weights-only error that names what was refused (e.g. a numpy global)."""
    m = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global[^\n]*)?$", message, re.M)
    if m:
        return m.group(1).strip()[:200]
    return message.strip().splitlines()[0][:200]


def _as_int(value: Any, where: str) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            raise ImportFormatError(f"{where} is a tensor of shape {tuple(value.shape)} and dtype {value.dtype}; "
                                    "expected an int")
        return int(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ImportFormatError(f"{where} is {type(value).__name__} {value!r}; expected an int")
    return int(value)


def _str_list(obj: Mapping[str, Any], key: str, src: Path) -> list[str]:
    value = obj[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        kind = type(value).__name__
        raise ImportFormatError(f"{str(src)!r}: key {key!r} must be a list of strings, got {kind}")
    if not value:
        raise ImportFormatError(f"{str(src)!r}: key {key!r} is an empty list")
    return list(value)


# --------------------------------------------------------------------------- reading
def read_eeg_imagenet(
    path: str | os.PathLike,
    time_slice: tuple[int, int] | str | None = DEFAULT_TIME_SLICE,
) -> EEGImageNetFile:
    """Load and validate an EEG-ImageNet ``.pth`` file (the EEG is sliced later, chunk by chunk).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.pth`` file.
    time_slice : (start, stop), ``"start:stop"`` or None
        Samples kept of every epoch (default ``20:460``); ``None`` keeps
        ``0:shortest length``. Epochs shorter than ``stop`` are left out
        (:attr:`EEGImageNetFile.skipped`).

    Raises
    ------
    ImportFormatError
        Missing keys, an entry that is not a dict or lacks a key, ``eeg`` that is
        not a 2-D float tensor or has another channel count, indices out of range,
        or no epoch long enough for the slice.
    UnsafeFileError
        The file needs full unpickling.
    """
    src = require_file(path, "EEG-ImageNet file")
    sl = parse_time_slice(time_slice)
    obj = load_torch_file(src, "EEG-ImageNet file")
    if not isinstance(obj, Mapping):
        raise ImportFormatError(f"{str(src)!r} holds a {type(obj).__name__}; expected a dict with keys "
                                "'dataset', 'labels', 'images'")
    missing = [k for k in ("dataset", "labels", "images") if k not in obj]
    if missing:
        raise ImportFormatError(f"{str(src)!r} is missing key(s) {missing}; found {sorted(map(str, obj))}. "
                                "Expected 'dataset', 'labels', 'images' (EEG-ImageNet layout)")
    items = obj["dataset"]
    if not isinstance(items, (list, tuple)) or not items:
        what = f"an empty {type(items).__name__}" if isinstance(items, (list, tuple)) else type(items).__name__
        raise ImportFormatError(f"{str(src)!r}: key 'dataset' must be a non-empty list of dicts, got {what}")
    label_names, image_names = _str_list(obj, "labels", src), _str_list(obj, "images", src)
    if len(set(label_names)) != len(label_names):
        raise ImportFormatError(f"{str(src)!r}: key 'labels' lists a class id twice; class ids must be distinct")
    meta = _validate_items(items, src, len(label_names), len(image_names))
    lengths = meta["length"]
    start, stop = sl if sl is not None else (0, int(lengths.min()))
    keep = np.flatnonzero(lengths >= stop).astype(np.int64)
    if not len(keep):
        raise ImportFormatError(
            f"{str(src)!r}: no epoch has the {stop} samples the time slice {start}:{stop} needs "
            f"(eeg lengths {int(lengths.min())}..{int(lengths.max())}); pass a shorter time slice"
        )
    f = EEGImageNetFile(path=src, items=list(items), label=meta["label"], image=meta["image"],
                        subject=meta["subject"], length=lengths, n_channels=int(meta["n_channels"]),
                        start=start, stop=stop, kept=keep, label_names=label_names, image_names=image_names)
    if f.skipped:
        logger.warning("%s: %d epoch(s) shorter than %d samples left out (file indices %s)",
                       src, len(f.skipped), stop, first_few(f.skipped))
    return f


def _validate_items(items: Sequence[Any], src: Path, n_labels: int, n_images: int) -> dict[str, Any]:
    """Check every entry; return per-entry ints, lengths and the channel count."""
    import torch

    n = len(items)
    out = {k: np.empty(n, dtype=np.int64) for k in ("label", "image", "subject", "length")}
    n_ch = None
    for i, item in enumerate(items):
        where = f"{str(src)!r}: dataset[{i}]"
        if not isinstance(item, Mapping):
            raise ImportFormatError(f"{where} is {type(item).__name__}; expected a dict with keys {list(ITEM_KEYS)}")
        lacking = [k for k in ITEM_KEYS if k not in item]
        if lacking:
            raise ImportFormatError(f"{where} is missing key(s) {lacking}; found {sorted(map(str, item))}")
        eeg = item["eeg"]
        if not isinstance(eeg, torch.Tensor):
            raise ImportFormatError(f"{where}['eeg'] is {type(eeg).__name__}; expected a float tensor "
                                    "(channels, samples)")
        if eeg.ndim != 2 or not eeg.dtype.is_floating_point:
            raise ImportFormatError(f"{where}['eeg'] has shape {tuple(eeg.shape)} and dtype {eeg.dtype}; "
                                    "expected a 2-D float tensor (channels, samples), e.g. (128, 500)")
        if n_ch is None:
            n_ch = int(eeg.shape[0])
        elif eeg.shape[0] != n_ch:
            raise ImportFormatError(f"{where}['eeg'] has shape {tuple(eeg.shape)}: {eeg.shape[0]} channels, "
                                    f"but dataset[0] has {n_ch}")
        out["length"][i] = eeg.shape[1]
        for key, bound in (("label", n_labels), ("image", n_images), ("subject", None)):
            v = _as_int(item[key], f"{where}[{key!r}]")
            if bound is not None and not 0 <= v < bound:
                raise ImportFormatError(f"{where}[{key!r}] = {v} is out of range: the file lists {bound} "
                                        f"{'labels' if key == 'label' else 'images'}")
            out[key][i] = v
    out["n_channels"] = n_ch
    return out


def read_published_splits(path: str | os.PathLike, n_file: int) -> list[dict[str, np.ndarray]]:
    """Read the splits file: ``{"splits": [{"train": [...], "val": [...], "test": [...]}, ...]}``.

    Parameters
    ----------
    path : str or os.PathLike
        Splits ``.pth`` file (``torch.load(weights_only=True)``).
    n_file : int
        Number of entries in the dataset file; every index must be below it.

    Returns
    -------
    list of dict
        Per split, ``part -> int64 indices into the file's dataset list``.
    """
    src = require_file(path, "EEG-ImageNet splits file")
    obj = load_torch_file(src, "EEG-ImageNet splits file")
    if not isinstance(obj, Mapping) or "splits" not in obj:
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise ImportFormatError(f"splits file {str(src)!r} is missing key 'splits' (found {found}); expected "
                                "{'splits': [{'train': [...], 'val': [...], 'test': [...]}, ...]}")
    splits = obj["splits"]
    if not isinstance(splits, (list, tuple)) or not splits:
        raise ImportFormatError(f"splits file {str(src)!r}: 'splits' must be a non-empty list of dicts")
    return [_split_parts(s, f"splits file {str(src)!r}: splits[{k}]", n_file) for k, s in enumerate(splits)]


def _split_parts(split: Any, where: str, n_file: int) -> dict[str, np.ndarray]:
    import torch

    if not isinstance(split, Mapping):
        raise ImportFormatError(f"{where} is {type(split).__name__}; expected a dict with keys {list(PARTS)}")
    lacking = [p for p in PARTS if p not in split]
    if lacking:
        raise ImportFormatError(f"{where} is missing key(s) {lacking}; found {sorted(map(str, split))}")
    parts = {}
    for part in PARTS:
        value = split[part]
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise ImportFormatError(f"{where}[{part!r}] is {type(value).__name__}; expected a list of ints")
        idx = np.array([_as_int(v, f"{where}[{part!r}][{j}]") for j, v in enumerate(value)], dtype=np.int64)
        bad = idx[(idx < 0) | (idx >= n_file)]
        if len(bad):
            raise ImportFormatError(f"{where}[{part!r}] has index {int(bad[0])} out of range for a dataset "
                                    f"of {n_file} entries")
        parts[part] = idx
    return parts


# --------------------------------------------------------------------------- blocks and splits
def reconstruct_blocks(subject: np.ndarray, label: np.ndarray, mode: str = "subject-label") -> np.ndarray:
    """Block id per epoch (int64, globally unique).

    Parameters
    ----------
    subject, label : ndarray, shape (n,)
    mode : {"subject-label", "consecutive"}
        ``"subject-label"``: one block per (subject, class) pair, as in the
        EEG-ImageNet protocol (each class shown in one block per subject).
        ``"consecutive"``: a new block whenever (subject, class) changes in order.
    """
    if mode not in BLOCK_MODES:
        raise ValueError(f"blocks={mode!r} is not one of {list(BLOCK_MODES)}")
    pairs = np.stack([np.asarray(subject, np.int64), np.asarray(label, np.int64)], axis=1)
    if mode == "subject-label":
        _, inverse = np.unique(pairs, axis=0, return_inverse=True)
        return inverse.reshape(-1).astype(np.int64)
    change = np.ones(len(pairs), dtype=bool)
    change[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
    return (np.cumsum(change) - 1).astype(np.int64)


def remap_split(parts: dict[str, np.ndarray], kept: np.ndarray, n_file: int) -> tuple[dict[str, np.ndarray], int]:
    """File indices -> dataset rows; indices of left-out epochs are dropped (count returned), repeats merged."""
    row = np.full(n_file, -1, dtype=np.int64)
    row[kept] = np.arange(len(kept))
    out, dropped = {}, 0
    for part, idx in parts.items():
        r = row[np.unique(idx)]
        dropped += int((r < 0).sum())
        out[part] = r[r >= 0]
    return out, dropped


# --------------------------------------------------------------------------- import
def import_eeg_imagenet(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    splits_path: str | os.PathLike | None = None,
    time_slice: tuple[int, int] | str | None = DEFAULT_TIME_SLICE,
    sfreq: float = DEFAULT_SFREQ,
    ch_names: Sequence[str] | None = None,
    class_names: Mapping[str, str] | None = None,
    images_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    blocks: str = "subject-label",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Import an EEG-ImageNet ``.pth`` file (and its splits file) as an epoch dataset.

    Parameters
    ----------
    path : str or os.PathLike
        The dataset ``.pth`` (see the module docstring for the layout).
    out : str or os.PathLike
        Epoch dataset directory to create.
    splits_path : str or os.PathLike, optional
        The published splits ``.pth``; each split is stored as ``published-<k>``
        (``k`` from 1), checked for leaks and recorded as leaking when it leaks.
    time_slice : (start, stop) or ``"start:stop"``
        Samples kept of every epoch (default ``20:460``).
    sfreq : float
        Sampling rate of the file (Hz, default 1000).
    ch_names : sequence of str, optional
        Channel names (default ``EEG001``...).
    class_names : dict, optional
        Class id (e.g. WordNet id) -> readable name, for class names and template
        captions; ids not in it keep the id.
    images_dir : str or os.PathLike, optional
        Folder with the stimulus images (``n02106662_13.JPEG``, possibly in class
        subfolders); read into the dataset's image table.
    image_size : int
        Side of the stored square images.
    blocks : {"subject-label", "consecutive"}
        How blocks are reconstructed (see :func:`reconstruct_blocks`).
    seed : int
        Seed of the block-aware splits.
    overwrite : bool
        Replace ``out``.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The dataset directory. Splits: ``block`` and ``subject`` (block-aware),
        ``published-1``... (with ``splits_path``).
    """
    from offline.data.epochs import EpochDatasetWriter
    from tqdm import tqdm

    out = check_output(out, overwrite)
    f = read_eeg_imagenet(path, time_slice)
    published = read_published_splits(splits_path, f.n_file) if splits_path is not None else []
    channels = _channel_names(ch_names, f.n_channels)
    names = _class_names(f.label_names, class_names)
    kept = f.kept
    subj_codes, subj_names = codes(f.subject[kept])
    block = reconstruct_blocks(f.subject[kept], f.label[kept], blocks)
    image_ids = [f.image_names[i] for i in f.image[kept]]
    table = _image_table(f, names, images_dir, image_size, progress)
    source = _source(f, splits_path, sfreq, channels, ch_names is not None, blocks, table)
    with EpochDatasetWriter(out, n_channels=f.n_channels, n_times=f.stop - f.start, sfreq=sfreq,
                            ch_names=channels, class_names=names, modality="eeg", overwrite=overwrite,
                            source=source, attrs={"window": _window(f, sfreq)}) as writer:
        bar = tqdm(total=len(kept), desc="epochs", unit="ep", disable=not progress, leave=False)
        for rows, x in f.iter_epochs():
            writer.append(x, labels=f.label[kept][rows], image_ids=[image_ids[r] for r in rows],
                          subject=subj_codes[rows], session=subj_codes[rows], block=block[rows])
            bar.update(len(rows))
        bar.close()
        if table is not None:
            writer.set_images(table["images"], table["ids"], template_captions=table["templates"])
        writer.close(subject_names=subj_names, session_names=[f"subject {s}" for s in subj_names])
    store_splits(out, _split_specs(f, subj_codes, block, published, splits_path, f.stop - f.start, sfreq,
                                   names, seed))
    logger.info("imported %s -> %s: %d epochs", f.path, out, len(kept))
    return out


def _window(f: EEGImageNetFile, sfreq: float) -> dict[str, Any]:
    """How the epochs sit relative to stimulus onset (sample 0 of every item), for the live window offset."""
    return {"offset": f.start / float(sfreq), "n_times": f.stop - f.start, "input_sfreq": float(sfreq),
            "marker_filter": None, "code_path": "imported: EEG-ImageNet items sliced [start:stop] from onset"}


def _channel_names(ch_names: Sequence[str] | None, n: int) -> list[str]:
    if ch_names is None:
        return [f"EEG{i + 1:03d}" for i in range(n)]
    names = [str(c) for c in ch_names]
    if len(names) != n:
        raise ValueError(f"ch_names has {len(names)} names but the EEG has {n} channels; give one name per channel")
    return names


def _class_names(label_ids: list[str], mapping: Mapping[str, str] | None) -> list[str]:
    names = [str((mapping or {}).get(c, c)) for c in label_ids]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"class_names maps several class ids to the same name(s) {dup[:5]}; names must be distinct")
    return names


def _image_table(f: EEGImageNetFile, names: list[str], images_dir: str | os.PathLike | None, size: int,
                 progress: bool) -> dict[str, Any] | None:
    """Images of the kept epochs (file order of ``images``) with class-template captions."""
    if images_dir is None:
        return None
    from offline.importers.images import load_image_folder

    rows = np.unique(f.image[f.kept])
    ids = [f.image_names[i] for i in rows]
    first_label = {}
    for img, lab in zip(f.image[f.kept], f.label[f.kept]):
        first_label.setdefault(int(img), int(lab))
    images, report = load_image_folder(images_dir, ids, size, progress=progress)
    return {"images": images, "ids": ids, "report": report,
            "templates": [template_caption(names[first_label[int(i)]], article="a") for i in rows]}


def _source(f: EEGImageNetFile, splits_path: str | os.PathLike | None, sfreq: float, channels: list[str],
            named: bool, blocks: str, table: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "importer": "eeg-imagenet",
        "dataset": "EEG-ImageNet (Spampinato et al., CVPR 2017)",
        "file": f.path.name,
        "path": str(f.path.resolve()),
        "splits_file": None if splits_path is None else str(Path(splits_path).resolve()),
        "time_slice": [f.start, f.stop],
        "tmin": f.start / float(sfreq),
        "sfreq": float(sfreq),
        "unit": "as stored in the file (the published files are filtered and standardised, not volts)",
        "channel_names": "given" if named else "generic EEG001..; the file does not name its channels",
        "n_file": f.n_file,
        "n_kept": int(len(f.kept)),
        "n_skipped_short": len(f.skipped),
        "skipped_short": f.skipped[:100],
        "eeg_length_range": [int(f.length.min()), int(f.length.max())],
        "class_ids": f.label_names,
        "blocks": blocks,
        "assumptions": [
            "block = (subject, class): each class was shown in one block per subject (block design)"
            if blocks == "subject-label" else
            "block = run of consecutive entries with the same (subject, class) in file order",
            "session = subject: one recording session per subject",
        ],
        "protocol_notes": (
            "EEG-ImageNet used a block design: all images of a class were shown in one block per subject. "
            "Published splits mix epochs of the same block in train and test, so slow drifts identify the "
            "class (Li et al. 2021); the 'block' and 'subject' splits hold out whole blocks/subjects. "
            "Run 'bci check-splits' on the dataset."
        ),
        "images": None if table is None else table["report"].to_dict(),
    }


def _split_specs(f: EEGImageNetFile, subj_codes: np.ndarray, block: np.ndarray,
                 published: list[dict[str, np.ndarray]], splits_path: str | os.PathLike | None,
                 n_times: int, sfreq: float, class_names: list[str], seed: int) -> dict[str, Any]:
    from offline.data.splits import block_split, subject_split

    table = epoch_table(f.label[f.kept], subj_codes, subj_codes, block, class_names, n_times / float(sfreq))
    specs: dict[str, Any] = {}
    try:
        specs["block"] = {"parts": block_split(table, val=0.1, test=0.2, seed=seed), "kind": "block",
                          "meta": {"builder": "offline.data.splits.block_split", "val": 0.1, "test": 0.2, "seed": seed}}
    except ValueError as e:
        logger.warning("%s: no block split (%s)", f.path, e)
    if len(np.unique(subj_codes)) >= 3:
        specs["subject"] = {"parts": subject_split(table, test=0.2, val=0.1, seed=seed), "kind": "subject",
                            "meta": {"builder": "offline.data.splits.subject_split", "val": 0.1, "test": 0.2,
                                     "seed": seed}}
    for k, parts in enumerate(published, start=1):
        rows, dropped = remap_split(parts, f.kept, f.n_file)
        specs[f"published-{k}"] = {
            "parts": rows, "kind": "custom", "allow_leak": True,
            "meta": {"protocol": "published", "file": Path(str(splits_path)).name, "index": k - 1,
                     "dropped_short_epochs": dropped,
                     "note": "published EEG-ImageNet split: block-design confounded (Li et al. 2021)"},
        }
    return specs
