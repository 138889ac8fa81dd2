"""fMRI trials (a voxel matrix + a stimulus table) to an epoch dataset with modality ``fmri``.

Input: an ``.npz`` (read with ``allow_pickle=False``) with

============  =======================  ==========================================
key           shape                    meaning
============  =======================  ==========================================
``voxels``    (n_trials, n_voxels)     one response pattern per trial (e.g. 967 voxels)
``run``       (n_trials,) int          run of each trial (the block of leak checks)
``stimulus``  (n_trials, H, W)         stimulus per trial, e.g. Miyawaki 10x10 binary
                                       patterns (0/1, or 0..255; (..., 3) for RGB)
``labels``    (n_trials,) int or str   class per trial
``image_ids`` (n_trials,) str or int   stimulus id per trial
``subject``   (n_trials,) int          optional (default 0)
``session``   (n_trials,) int          optional (default 0)
============  =======================  ==========================================

At least one of ``stimulus``, ``labels``, ``image_ids`` is needed. Or a ``.csv``
with a header: ``run`` (required), optional ``subject``, ``session``, ``label``,
``image_id``; every other column is a voxel (its header is the channel name).

Output: ``data (n_trials, n_voxels, 1)`` float32, ``sfreq = 1 / TR``; image ids
from ``image_ids``, else one id per distinct stimulus pattern (``pattern000``...
in order of first appearance), else the label; classes from ``labels``, else one
class per image. Stimulus patterns become the image table as RGB uint8 (0 -> 0,
1 -> 255), kept at their own size (10x10) unless ``image_size`` asks for a
nearest-neighbour resize (e.g. 28). Split ``block`` (kind ``block``, blocks =
runs): whole runs held out -- the runs in ``test_runs`` (val: the last other
run), or 20 % test / 10 % val of the runs drawn by ``offline.data.splits.block_split``.
"""

from __future__ import annotations

import csv
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offline.importers._checks import (
    ImportFormatError,
    check_output,
    codes,
    epoch_table,
    first_few,
    require_file,
)
from streams._checks import check_float, check_int

logger = logging.getLogger(__name__)

#: Default repetition time (s).
DEFAULT_TR = 2.0
_CSV_META = ("run", "subject", "session", "label", "image_id")


@dataclass
class FMRITrials:
    """Validated trials: voxels, per-trial metadata, optional stimulus patterns."""

    voxels: np.ndarray
    run: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    labels: np.ndarray | None
    image_ids: np.ndarray | None
    stimulus: np.ndarray | None
    voxel_names: list[str]
    path: Path


# --------------------------------------------------------------------------- reading
def read_fmri(path: str | os.PathLike) -> FMRITrials:
    """Read and validate an fMRI trial file (``.npz`` or ``.csv``, see the module docstring).

    Raises
    ------
    ImportFormatError
        Unreadable or truncated file, a missing key, a wrong shape (named), object
        arrays (which would need pickle), non-finite voxel values.
    """
    src = require_file(path, "fMRI file")
    arrays, names = _read_csv(src) if src.suffix.lower() == ".csv" else _read_npz(src)
    return _validate(arrays, names, src)


def _read_npz(src: Path) -> tuple[dict[str, np.ndarray], list[str] | None]:
    single = ImportFormatError(f"{str(src)!r} is a single .npy array; expected an .npz with keys "
                               "'voxels', 'run' and 'stimulus'/'labels'/'image_ids'")
    out = {}
    try:
        with open(src, "rb") as fh:  # our handle: np.load leaves its own open when the zip is bad
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise single
            with loaded as z:
                for key in z.files:
                    try:
                        out[key] = z[key]
                    except ValueError as e:
                        raise ImportFormatError(
                            f"{str(src)!r}: key {key!r} is an object array ({e}); loading it would need pickle. "
                            "Save strings as a str array (np.array(values, dtype=str))"
                        ) from None
    except ImportFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ImportFormatError(f"{str(src)!r} is not a readable .npz file; it is truncated, corrupt or of "
                                f"another format ({type(e).__name__}: {e})") from None
    return out, None


def _read_csv(src: Path) -> tuple[dict[str, np.ndarray], list[str] | None]:
    rows = list(csv.reader(src.read_text(encoding="utf-8").splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ImportFormatError(f"{str(src)!r}: a CSV needs a header row and at least one trial row")
    header = [h.strip() for h in rows[0]]
    if "run" not in header:
        raise ImportFormatError(f"{str(src)!r}: the CSV header has no 'run' column; found {first_few(header, 8)}")
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise ImportFormatError(f"{str(src)!r} line {i}: {len(r)} fields but the header has {len(header)}")
    cols = {h: [r[j].strip() for r in rows[1:]] for j, h in enumerate(header)}
    voxel_names = [h for h in header if h not in _CSV_META]
    out: dict[str, np.ndarray] = {}
    try:
        out["voxels"] = np.array([[float(v) for v in cols[h]] for h in voxel_names], dtype=np.float64).T
        for key in ("run", "subject", "session"):
            if key in cols:
                out[key] = np.array([int(v) for v in cols[key]], dtype=np.int64)
    except ValueError as e:
        raise ImportFormatError(f"{str(src)!r}: a voxel or run/subject/session value is not a number ({e})") from None
    if "label" in cols:
        out["labels"] = np.array(cols["label"], dtype=str)
    if "image_id" in cols:
        out["image_ids"] = np.array(cols["image_id"], dtype=str)
    return out, voxel_names


def _validate(a: dict[str, np.ndarray], voxel_names: list[str] | None, src: Path) -> FMRITrials:
    where = str(src)
    missing = [k for k in ("voxels", "run") if k not in a]
    if missing:
        raise ImportFormatError(f"{where!r} is missing key(s) {missing}; found {sorted(a)}. Expected 'voxels' "
                                "(n_trials, n_voxels), 'run' (n_trials,) and 'stimulus', 'labels' or 'image_ids'")
    if not any(k in a for k in ("stimulus", "labels", "image_ids")):
        raise ImportFormatError(f"{where!r} has none of the keys 'stimulus', 'labels', 'image_ids'; found "
                                f"{sorted(a)}. Give what each trial showed")
    vox = a["voxels"]
    if vox.ndim != 2 or vox.dtype.kind not in "fiu" or vox.shape[0] < 1 or vox.shape[1] < 1:
        raise ImportFormatError(f"{where!r}: 'voxels' has shape {vox.shape} and dtype {vox.dtype}; expected a "
                                "numeric (n_trials, n_voxels) array, e.g. (1200, 967)")
    n = vox.shape[0]
    bad = ~np.isfinite(vox).all(axis=1)
    if bad.any():
        raise ImportFormatError(f"{where!r}: 'voxels' has NaN/inf in {int(bad.sum())} trial(s) (first: trial "
                                f"{int(np.flatnonzero(bad)[0])}); mask or drop those voxels/trials first")
    per_trial = {k: _vector(a, k, n, where) for k in ("run", "subject", "session", "labels", "image_ids")}
    for k in ("run", "subject", "session"):
        if per_trial[k] is not None and per_trial[k].dtype.kind not in "iu":
            raise ImportFormatError(f"{where!r}: {k!r} has dtype {per_trial[k].dtype}; expected integers")
    stim = a.get("stimulus")
    if stim is not None:
        ok = stim.ndim == 3 or (stim.ndim == 4 and stim.shape[-1] == 3)
        if not ok or stim.shape[0] != n or stim.dtype.kind not in "biuf":
            raise ImportFormatError(f"{where!r}: 'stimulus' has shape {stim.shape} and dtype {stim.dtype}; "
                                    f"expected ({n}, H, W) (e.g. ({n}, 10, 10)) or ({n}, H, W, 3), numeric")
    names = voxel_names or [f"v{i:04d}" for i in range(vox.shape[1])]
    zeros = np.zeros(n, dtype=np.int64)
    return FMRITrials(
        voxels=vox, run=per_trial["run"].astype(np.int64),
        subject=zeros if per_trial["subject"] is None else per_trial["subject"].astype(np.int64),
        session=zeros if per_trial["session"] is None else per_trial["session"].astype(np.int64),
        labels=per_trial["labels"], image_ids=per_trial["image_ids"], stimulus=stim, voxel_names=names, path=src,
    )


def _vector(a: dict[str, np.ndarray], key: str, n: int, where: str) -> np.ndarray | None:
    if key not in a:
        return None
    v = a[key]
    if v.ndim != 1 or len(v) != n:
        raise ImportFormatError(f"{where!r}: {key!r} has shape {v.shape}; expected ({n},), one value per trial "
                                f"('voxels' has {n} trials)")
    if v.dtype.kind not in "iuUS":
        raise ImportFormatError(f"{where!r}: {key!r} has dtype {v.dtype}; expected integers or strings")
    return v


# --------------------------------------------------------------------------- images and labels
def pattern_images(stimulus: np.ndarray, size: int | None = None) -> np.ndarray:
    """Stimulus patterns as RGB uint8 images.

    Binary or [0, 1] patterns map 0 -> 0 and 1 -> 255; other values are clipped to
    0..255. ``size`` resizes with nearest neighbour (square), None keeps the grid.
    """
    x = np.asarray(stimulus, dtype=np.float64)
    if x.size and x.max() <= 1.0 and x.min() >= 0.0:
        x = x * 255.0
    img = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        img = np.repeat(img[..., None], 3, axis=-1)
    if size is not None and img.shape[1:3] != (size, size):
        from PIL import Image

        img = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.NEAREST))
                        for im in img])
    return img


def _unique_patterns(stimulus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct patterns in order of first appearance, and each trial's pattern index."""
    flat = np.ascontiguousarray(stimulus.reshape(len(stimulus), -1))
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def _ids_and_labels(t: FMRITrials) -> tuple[list[str], np.ndarray, list[str], np.ndarray | None, list[str] | None]:
    """Per-trial image ids, label codes, class names, and the image table (patterns, ids) if any."""
    table, table_ids = None, None
    if t.stimulus is not None:
        first, which = _unique_patterns(t.stimulus)
        if t.image_ids is not None:
            ids = [str(v) for v in t.image_ids]
            table_ids = [ids[i] for i in first]
            _check_consistent(ids, which, t.path)
        else:
            table_ids = [f"pattern{k:03d}" for k in range(len(first))]
            ids = [table_ids[k] for k in which]
        table = t.stimulus[first]
    elif t.image_ids is not None:
        ids = [str(v) for v in t.image_ids]
    else:
        ids = [str(v) for v in t.labels]
    if any(not i for i in ids):
        raise ImportFormatError(f"{str(t.path)!r}: an image id is empty; give every trial a non-empty id")
    if t.labels is not None:
        label, class_names = codes(t.labels)
    else:
        label, class_names = codes(np.array(ids, dtype=str))
    return ids, label, class_names, table, table_ids


def _check_consistent(ids: list[str], which: np.ndarray, src: Path) -> None:
    by_id: dict[str, int] = {}
    for i, k in zip(ids, which):
        if by_id.setdefault(i, int(k)) != int(k):
            raise ImportFormatError(f"{str(src)!r}: image id {i!r} is used for two different stimulus patterns")
    if len(by_id) != len(set(which.tolist())):
        raise ImportFormatError(f"{str(src)!r}: one stimulus pattern has several image ids; use one id per pattern")


# --------------------------------------------------------------------------- splits
def run_split(table: Any, run: np.ndarray, test_runs: Sequence[int] | None = None,
              seed: int = 0) -> dict[str, np.ndarray] | None:
    """Whole runs held out.

    With ``test_runs``: those runs test, the last other run val (when two or more
    remain), the rest train. Otherwise ``offline.data.splits.block_split`` (blocks are
    runs; 20 % test, 10 % val). None when the runs are too few for a split.
    """
    from offline.data.splits import block_split

    runs = np.unique(run)
    if test_runs is None:
        try:
            return block_split(table, val=0.1, test=0.2, seed=seed)
        except ValueError as e:
            logger.warning("no run-wise split (%s)", e)
            return None
    test = np.array(sorted({int(r) for r in test_runs}), dtype=np.int64)
    unknown = sorted(set(test.tolist()) - set(runs.tolist()))
    if unknown:
        raise ValueError(f"test_runs {unknown} are not in the data; its runs are {runs.tolist()}")
    rest = runs[~np.isin(runs, test)]
    if not len(rest):
        raise ValueError(f"test_runs {test.tolist()} are all the runs; leave some runs for training")
    val = rest[-1:] if len(rest) >= 2 else rest[:0]
    train = rest[~np.isin(rest, val)]
    return {"train": np.flatnonzero(np.isin(run, train)), "val": np.flatnonzero(np.isin(run, val)),
            "test": np.flatnonzero(np.isin(run, test))}


# --------------------------------------------------------------------------- import
def import_fmri(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tr: float = DEFAULT_TR,
    image_size: int | None = None,
    test_runs: Sequence[int] | None = None,
    seed: int = 0,
    offset: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Import fMRI trials (``.npz`` or ``.csv``) as an epoch dataset (modality ``fmri``).

    Parameters
    ----------
    path : str or os.PathLike
        Trial file (see the module docstring).
    out : str or os.PathLike
        Epoch dataset directory to create.
    tr : float
        Repetition time in seconds; ``sfreq = 1 / tr``.
    image_size : int, optional
        Resize stimulus patterns to ``image_size`` square (nearest neighbour);
        default keeps their grid (10x10).
    test_runs : sequence of int, optional
        Runs of the test part of the ``block`` split (default: 20 % of the runs,
        10 % for val, drawn with ``seed`` by ``offline.data.splits.block_split``).
    seed : int
        Seed of the split.
    offset : float, optional
        Seconds from stimulus onset to the volume of each trial (the HRF delay used when the
        trials were extracted). Recorded as the dataset's ``window`` so a model trained on it
        decodes live volumes at the same delay; without it, live decoding uses the fMRI
        default (4 s).
    overwrite : bool
        Replace ``out``.
    progress : bool
        Unused (the import is one write); kept for a uniform signature.

    Returns
    -------
    Path
        The dataset directory.
    """
    from offline.data.epochs import EpochArrays, EpochMetadata, ImageTable, write_epoch_dataset

    check_float("tr", tr, positive=True)  # seconds
    if image_size is not None:
        check_int("image_size", image_size, low=1)  # pixels
    if offset is not None:
        check_float("offset", offset)  # seconds from the onset to the trial's volume
    out = check_output(out, overwrite)
    t = read_fmri(path)
    ids, label, class_names, patterns, table_ids = _ids_and_labels(t)
    subj, subj_names = codes(t.subject)
    sess, sess_names = codes(t.session)
    run_codes, _ = codes(t.run)
    table = epoch_table(label, subj, sess, run_codes, class_names, float(tr), run=t.run)
    split = run_split(table, t.run, test_runs, seed)
    images = None if patterns is None else pattern_images(patterns, image_size)
    source = {
        "importer": "fmri", "file": t.path.name, "path": str(t.path.resolve()), "tr": float(tr),
        "n_trials": int(len(ids)), "n_voxels": int(t.voxels.shape[1]),
        "stimulus_shape": None if t.stimulus is None else list(t.stimulus.shape[1:]),
        "images": None if images is None else (
            f"stimulus patterns as RGB uint8 (0->0, 1->255), {images.shape[1]}x{images.shape[2]}"
            + (" (nearest-neighbour resize)" if image_size is not None else " (original grid)")),
        "block": "run", "labels": "from 'labels'" if t.labels is not None else "one class per image",
    }
    splits = None if split is None else {"block": split}
    window = None if offset is None else {"window": {
        "offset": float(offset), "n_times": 1, "input_sfreq": 1.0 / float(tr), "marker_filter": None,
        "code_path": "imported: fMRI trials, one volume each at onset + offset"}}
    write_epoch_dataset(
        out,
        EpochArrays(t.voxels.astype(np.float32)[:, :, None], labels=label, image_ids=ids, subject=subj,
                    session=sess, block=run_codes, run=t.run),
        EpochMetadata(sfreq=1.0 / float(tr), ch_names=t.voxel_names, class_names=class_names, source=source,
                      modality="fmri", subject_names=subj_names, session_names=sess_names, attrs=window),
        images=ImageTable(images, table_ids), overwrite=overwrite, splits=splits, split_kinds={"block": "block"},
    )
    return out
