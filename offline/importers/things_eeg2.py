"""THINGS-EEG2 (Gifford et al. 2022) preprocessed ``.npy`` files to an epoch dataset.

Input layout, per subject (``sub-01/preprocessed_eeg_training.npy`` and
``sub-01/preprocessed_eeg_test.npy``): a dict saved with ``np.save``::

    {"preprocessed_eeg_data": float array (images, repetitions, channels, times),
     "ch_names": [17 names], "times": (times,) seconds, "sfreq": Hz (optional)}

training: (16540, 4, 17, 100) -- 1654 concepts x 10 images, 4 repetitions;
test: (200, 80, 17, 100) -- 200 other concepts x 1 image, 80 repetitions; 100 Hz,
-0.2..0.8 s. Optional ``image_metadata.npy`` (same kind of file) or a JSON with the
keys ``train_img_concepts``, ``train_img_files``, ``test_img_concepts``,
``test_img_files`` names the images and concepts.

**Pickle.** These files are pickled Python objects: loading them runs pickle,
which can execute arbitrary code stored in the file. They are refused unless
``trust_pickle=True`` (``--trust-pickle``) is passed. The header is checked
first without unpickling anything.

What the dataset gets: one epoch per (image, repetition) -- or per image with
``average_repetitions`` -- with ``block`` = the image (all repetitions of an
image are one block, so no split separates them), ``subject`` = code 0 named after
the source (``sub-07`` -> ``subject_names == ["7"]``, as :func:`offline.importers._checks.codes`
names every importer's subjects; combining datasets keeps subjects apart by these names,
:func:`offline.data.mne_epochs.from_mne_epochs`), ``session`` = 0 named
``"7: all sessions (merged in the file)"`` (the files merge the recording sessions and do
not say which repetition came from which),
and the split ``zero_shot`` (``offline.data.splits.zero_shot_split``): every epoch of
the 200 test concepts -- never seen in training -- in test (200-way zero-shot),
the training images in train, 10 % of them (whole images) in val.

**Rate.** The rate the file declares (a ``sfreq`` key) or, as the preprocessed files
declare none, the rate of ``times``: samples over the span, ``(n - 1) / (times[-1] -
times[0])``, rounded to 1e-6 Hz (:func:`sampling_rate`; ``times`` are rounded, so the
differences of neighbours give 99.99999999999991 Hz where the file means 100 Hz). Every
``times[k]`` must then be ``times[0] + k / sfreq`` to within 1 % of a sample, else the
import is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
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
    require_file,
    store_splits,
)
from streams.synthetic.stimuli import template_caption

logger = logging.getLogger(__name__)

#: Keys of a preprocessed THINGS-EEG2 file.
THINGS_KEYS: tuple[str, ...] = ("preprocessed_eeg_data", "ch_names", "times")
#: Name of the one session code (after the subject's name): the files merge the sessions.
MERGED_SESSIONS = "all sessions (merged in the file)"
#: Keys of the image metadata.
METADATA_KEYS: tuple[str, ...] = ("train_img_concepts", "train_img_files", "test_img_concepts", "test_img_files")
#: Images per training concept in THINGS-EEG2.
TRAIN_IMAGES_PER_CONCEPT = 10
#: Precision of a rate derived from ``times`` (Hz).
RATE_PRECISION_HZ = 1e-6
#: ``times`` may deviate from ``times[0] + k / sfreq`` by this fraction of a sample.
TIMES_TOLERANCE_SAMPLES = 0.01


@dataclass
class ThingsPart:
    """One validated file: data (images, reps, channels, times), channel names, times, rate (Hz)."""

    data: np.ndarray
    ch_names: list[str]
    times: np.ndarray
    path: Path
    sfreq: float
    sfreq_from: str = "declared"

    @property
    def n_images(self) -> int:
        """Images in the file."""
        return int(self.data.shape[0])

    @property
    def n_reps(self) -> int:
        """Repetitions per image."""
        return int(self.data.shape[1])


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, read from its header without loading (or unpickling) data.

    Raises
    ------
    ImportFormatError
        Not a ``.npy`` file, or a truncated header.
    """
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, EOFError, OSError) as e:
            raise ImportFormatError(f"{str(path)!r} is not a .npy file or its header is truncated ({e})") from None
    return tuple(shape), dtype


def load_pickled_npy(path: str | os.PathLike, what: str, *, trust_pickle: bool) -> Any:
    """Load a ``.npy`` holding a pickled object (a dict saved with ``np.save``), only when trusted.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    what : str
        What the file is, for messages.
    trust_pickle : bool
        Must be True: unpickling can run arbitrary code from the file.

    Raises
    ------
    UnsafeFileError
        The file is a pickled object and ``trust_pickle`` is false.
    ImportFormatError
        A plain numeric array instead of a dict, or a truncated/corrupt file.
    """
    src = require_file(path, what)
    shape, dtype = npy_header(src)
    if dtype != np.dtype(object):
        raise ImportFormatError(
            f"{what} {str(src)!r} holds a plain {dtype} array of shape {shape}; expected a dict saved with "
            f"np.save (keys {list(THINGS_KEYS)}), as in the THINGS-EEG2 preprocessed files"
        )
    if not trust_pickle:
        raise UnsafeFileError(
            f"{what} {str(src)!r} is a pickled Python object (a dict saved with np.save). Loading it runs "
            "pickle, which can execute arbitrary code stored in the file. Pass trust_pickle=True "
            "(--trust-pickle) only if you trust where the file comes from (e.g. the official THINGS-EEG2 "
            "release); or convert it once in a trusted environment to .npz/JSON"
        )
    try:
        arr = np.load(src, allow_pickle=True)  # trusted explicitly by the caller (trust_pickle=True)
    except (ValueError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise ImportFormatError(f"{what} {str(src)!r} is truncated or corrupt ({type(e).__name__}: {e})") from None
    except Exception as e:  # a damaged pickle stream fails in any way (ImportError, KeyError, AttributeError, ...)
        raise ImportFormatError(f"{what} {str(src)!r} is corrupt: unpickling failed ({type(e).__name__}: "
                                f"{str(e)[:200]})") from None
    return arr.item() if isinstance(arr, np.ndarray) and arr.shape == () else arr


def read_things_file(path: str | os.PathLike, what: str, *, trust_pickle: bool) -> ThingsPart:
    """Load and validate one preprocessed THINGS-EEG2 file.

    Raises
    ------
    ImportFormatError
        Not a dict, missing keys, data not 4-D numeric, ``ch_names`` or ``times``
        not matching the data's channel/time axes, non-uniform ``times``.
    """
    obj = load_pickled_npy(path, what, trust_pickle=trust_pickle)
    src = Path(path)
    if not isinstance(obj, Mapping):
        raise ImportFormatError(f"{what} {str(src)!r} holds a {type(obj).__name__}; expected a dict with keys "
                                f"{list(THINGS_KEYS)}")
    missing = [k for k in THINGS_KEYS if k not in obj]
    if missing:
        raise ImportFormatError(f"{what} {str(src)!r} is missing key(s) {missing}; found {sorted(map(str, obj))}")
    data = obj["preprocessed_eeg_data"]
    if not isinstance(data, np.ndarray) or data.ndim != 4 or data.dtype.kind not in "fiu":
        desc = f"shape {data.shape} dtype {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ImportFormatError(f"{what} {str(src)!r}: 'preprocessed_eeg_data' has {desc}; expected a numeric "
                                "array (images, repetitions, channels, times), e.g. (16540, 4, 17, 100)")
    ch = obj["ch_names"]
    ch = list(ch) if isinstance(ch, (list, tuple, np.ndarray)) else ch
    if not isinstance(ch, list) or not all(isinstance(c, (str, np.str_)) for c in ch) or len(ch) != data.shape[2]:
        n = len(ch) if isinstance(ch, list) else type(ch).__name__
        raise ImportFormatError(f"{what} {str(src)!r}: 'ch_names' has {n} entries but 'preprocessed_eeg_data' "
                                f"has shape {data.shape} ({data.shape[2]} channels on axis 2); expected a list of "
                                "that many strings")
    times = np.asarray(obj["times"], dtype=np.float64) if _numeric(obj["times"]) else None
    if times is None or times.ndim != 1 or len(times) != data.shape[3]:
        got = times.shape if times is not None else type(obj["times"]).__name__
        raise ImportFormatError(f"{what} {str(src)!r}: 'times' has shape {got} but 'preprocessed_eeg_data' has "
                                f"shape {data.shape} ({data.shape[3]} times on axis 3)")
    if len(times) > 1:
        step = np.diff(times)
        if not (step > 0).all() or np.ptp(step) > 1e-6 * max(1.0, abs(step.mean())) + 1e-9:
            raise ImportFormatError(f"{what} {str(src)!r}: 'times' is not evenly spaced and increasing")
    if data.shape[0] < 1 or data.shape[1] < 1:
        raise ImportFormatError(f"{what} {str(src)!r}: 'preprocessed_eeg_data' has shape {data.shape}; no epochs")
    _check_float32_range(data, f"{what} {str(src)!r}: 'preprocessed_eeg_data'")
    sfreq = sampling_rate(times, obj.get("sfreq"), f"{what} {str(src)!r}")
    sfreq_from = ("the file's 'sfreq'" if obj.get("sfreq") is not None else
                  f"'times': (n - 1) / (times[-1] - times[0]) rounded to {RATE_PRECISION_HZ:g} Hz")
    return ThingsPart(data=data, ch_names=[str(c) for c in ch], times=times, path=src, sfreq=sfreq,
                      sfreq_from=sfreq_from)


def sampling_rate(times: np.ndarray, declared: Any, where: str) -> float:
    """The rate of a THINGS-EEG2 file: ``declared`` (its ``sfreq`` key) or derived from ``times``; checked.

    Parameters
    ----------
    times : numpy.ndarray, shape (n,)
        Increasing, evenly spaced seconds (checked by :func:`read_things_file`).
    declared : float or None
        The file's ``sfreq`` value, when it has one.
    where : str
        The file, for messages.

    Returns
    -------
    float
        ``declared``, else ``(n - 1) / (times[-1] - times[0])`` rounded to
        :data:`RATE_PRECISION_HZ`; 1.0 for a single sample without a declared rate.

    Raises
    ------
    ImportFormatError
        ``declared`` is not a positive finite number, or ``times`` disagree with the rate
        by more than :data:`TIMES_TOLERANCE_SAMPLES` of a sample.
    """
    if declared is not None:
        if isinstance(declared, bool) or not _numeric(declared) or np.ndim(declared) != 0 \
                or not np.isfinite(declared) or float(declared) <= 0:
            raise ImportFormatError(f"{where}: 'sfreq' is {declared!r}; expected a positive number of Hz")
        sfreq = float(declared)
    elif len(times) > 1:
        digits = round(-np.log10(RATE_PRECISION_HZ))
        sfreq = round((len(times) - 1) / float(times[-1] - times[0]), digits)
    else:
        return 1.0
    off = np.abs(times - (times[0] + np.arange(len(times)) / sfreq)) * sfreq
    if off.size and off.max() > TIMES_TOLERANCE_SAMPLES:
        k = int(off.argmax())
        raise ImportFormatError(
            f"{where}: 'times' disagree with the rate {sfreq:g} Hz"
            f"{' declared by its sfreq' if declared is not None else ''}: times[{k}] = {times[k]:.9g} s is "
            f"{off[k]:.3g} samples from times[0] + {k}/{sfreq:g}; the file is inconsistent (check 'sfreq' and "
            "'times')")
    return sfreq


def _check_float32_range(data: np.ndarray, where: str, images: int = 256) -> None:
    """ImportFormatError unless every value is finite and fits float32 (the dataset's dtype), ``images`` at a time."""
    limit = float(np.finfo(np.float32).max)
    for first in range(0, data.shape[0], images):
        block = np.asarray(data[first:first + images], dtype=np.float64)
        bad = ~np.isfinite(block) | (np.abs(block) > limit)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ImportFormatError(f"{where} holds {int(bad.sum())} value(s) that are NaN, infinite or beyond "
                                    f"float32 (the first at index {(first + at[0], *at[1:])}); the file is damaged")


def _numeric(x: Any) -> bool:
    try:
        return np.asarray(x).dtype.kind in "fiu"
    except (TypeError, ValueError):
        return False


def read_metadata(path: str | os.PathLike, *, trust_pickle: bool) -> dict[str, list[str]]:
    """Image metadata: ``image_metadata.npy`` (pickled, needs trust) or JSON with the same keys."""
    src = require_file(path, "THINGS-EEG2 image metadata")
    if src.suffix.lower() == ".json":
        try:
            obj = json.loads(src.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ImportFormatError(f"image metadata {str(src)!r} is not valid JSON: {e}") from None
    else:
        obj = load_pickled_npy(src, "THINGS-EEG2 image metadata", trust_pickle=trust_pickle)
    if not isinstance(obj, Mapping):
        raise ImportFormatError(f"image metadata {str(src)!r} must be a dict with keys {list(METADATA_KEYS)}")
    missing = [k for k in METADATA_KEYS if k not in obj]
    if missing:
        raise ImportFormatError(f"image metadata {str(src)!r} is missing key(s) {missing}")
    return {k: [str(v) for v in obj[k]] for k in METADATA_KEYS}


def subject_from_path(path: str | os.PathLike, default: int = 1) -> int:
    """Subject number from a ``sub-XX`` part of the path, else ``default``."""
    m = re.search(r"sub-?(\d+)", str(path), flags=re.IGNORECASE)
    return int(m.group(1)) if m else default


def concept_name(concept: str) -> str:
    """``"00001_aardvark"`` -> ``"aardvark"``; underscores become spaces."""
    name = re.sub(r"^\d+_", "", concept)
    return name.replace("_", " ")


# --------------------------------------------------------------------------- import
def _names_for(meta: dict[str, list[str]] | None, train: ThingsPart, test: ThingsPart,
               images_per_concept: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray, list[str]]:
    """Image ids (train, test), concept codes (train, test) and concept names (train first)."""
    if meta is None:
        if train.n_images % images_per_concept:
            raise ImportFormatError(
                f"{str(train.path)!r} has {train.n_images} training images, not a multiple of "
                f"images_per_concept={images_per_concept}; pass the right number or the image metadata")
        n_c = train.n_images // images_per_concept
        train_ids = [f"train_{i + 1:05d}" for i in range(train.n_images)]
        test_ids = [f"test_{i + 1:03d}" for i in range(test.n_images)]
        names = [f"train concept {c + 1:04d}" for c in range(n_c)] + \
                [f"test concept {c + 1:03d}" for c in range(test.n_images)]
        return (train_ids, test_ids, np.arange(train.n_images) // images_per_concept,
                n_c + np.arange(test.n_images), names)
    for part, key_f, key_c in ((train, "train_img_files", "train_img_concepts"),
                               (test, "test_img_files", "test_img_concepts")):
        if len(meta[key_f]) != part.n_images or len(meta[key_c]) != part.n_images:
            raise ImportFormatError(f"image metadata lists {len(meta[key_f])} {key_f} and {len(meta[key_c])} "
                                    f"{key_c}, but {str(part.path)!r} has {part.n_images} images")
    train_ids = [Path(f).stem for f in meta["train_img_files"]]
    test_ids = [Path(f).stem for f in meta["test_img_files"]]
    concepts = list(dict.fromkeys(meta["train_img_concepts"] + meta["test_img_concepts"]))
    shared = set(meta["train_img_concepts"]) & set(meta["test_img_concepts"])
    if shared:
        raise ImportFormatError(f"image metadata: {len(shared)} concept(s) are in both the training and the test "
                                f"set ({first_few(sorted(shared))}); zero-shot evaluation needs disjoint concepts")
    code = {c: i for i, c in enumerate(concepts)}
    names = [concept_name(c) for c in concepts]
    if len(set(names)) != len(names):
        names = concepts
    return (train_ids, test_ids, np.array([code[c] for c in meta["train_img_concepts"]]),
            np.array([code[c] for c in meta["test_img_concepts"]]), names)


def import_things_eeg2(
    train_path: str | os.PathLike,
    test_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    average_repetitions: bool = False,
    subject: int | None = None,
    metadata_path: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    images_per_concept: int = TRAIN_IMAGES_PER_CONCEPT,
    val: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Import one THINGS-EEG2 subject (training + test file) as an epoch dataset.

    Parameters
    ----------
    train_path, test_path : str or os.PathLike
        ``preprocessed_eeg_training.npy`` and ``preprocessed_eeg_test.npy``.
    out : str or os.PathLike
        Epoch dataset directory to create.
    trust_pickle : bool
        Required: the files are pickled dicts (unpickling can run arbitrary code).
    average_repetitions : bool
        One epoch per image (mean over repetitions) instead of one per repetition.
    subject : int, optional
        Subject number (default: from ``sub-XX`` in the path, else 1).
    metadata_path : str or os.PathLike, optional
        ``image_metadata.npy`` (needs ``trust_pickle``) or a JSON with its keys:
        image file names and concepts.
    images_dir : str or os.PathLike, optional
        Folder with the images (``training_images/...``, ``test_images/...``).
    image_size : int
        Side of the stored images.
    images_per_concept : int
        Training images per concept when no metadata is given (10).
    val : float
        Fraction of the training images (whole images: all their repetitions)
        held out for validation in ``zero_shot``.
    seed : int
        Seed of the choice of validation images.
    overwrite, progress : bool

    Returns
    -------
    Path
        The dataset directory, with the split ``zero_shot`` (kind ``zero_shot``).

    Raises
    ------
    UnsafeFileError
        ``trust_pickle`` is false.
    ImportFormatError
        Missing keys, wrong shapes, training and test files that disagree on
        channels or times.
    """
    from offline.data.epochs import EpochDatasetWriter
    from offline.data.splits import zero_shot_split
    from tqdm import tqdm

    out = check_output(out, overwrite)
    train = read_things_file(train_path, "THINGS-EEG2 training file", trust_pickle=trust_pickle)
    test = read_things_file(test_path, "THINGS-EEG2 test file", trust_pickle=trust_pickle)
    _check_same_layout(train, test)
    meta = read_metadata(metadata_path, trust_pickle=trust_pickle) if metadata_path is not None else None
    train_ids, test_ids, train_c, test_c, class_names = _names_for(meta, train, test, images_per_concept)
    subj = subject_from_path(train_path) if subject is None else int(subject)
    sfreq = train.sfreq
    subject_name = codes(np.array([subj]))[1][0]
    table = _image_table(images_dir, train_ids + test_ids, np.concatenate([train_c, test_c]), class_names,
                         image_size, progress)
    source = _source(train, test, meta is not None, subj, average_repetitions, table)
    reps = {id(train): 1 if average_repetitions else train.n_reps, id(test): 1 if average_repetitions else test.n_reps}
    with EpochDatasetWriter(out, n_channels=train.data.shape[2], n_times=train.data.shape[3], sfreq=sfreq,
                            ch_names=train.ch_names, class_names=class_names, overwrite=overwrite,
                            source=source,
                            attrs={"window": {"offset": float(train.times[0]), "n_times": int(train.data.shape[3]),
                                              "input_sfreq": sfreq, "marker_filter": None,
                                              "code_path": "imported: THINGS-EEG2 epochs, 'times' from onset"}},
                            ) as writer:
        bar = tqdm(total=train.n_images + test.n_images, desc="images", unit="img", disable=not progress,
                   leave=False)
        block0 = 0
        for part, ids, concept in ((train, train_ids, train_c), (test, test_ids, test_c)):
            for x, rows in _chunks(part, average_repetitions):
                r = reps[id(part)]
                img = np.repeat(rows, r)
                writer.append(x, labels=concept[img], image_ids=[ids[i] for i in img], subject=0, session=0,
                              block=block0 + img)
                bar.update(len(rows))
            block0 += part.n_images
        bar.close()
        if table is not None:
            writer.set_images(table["images"], table["ids"], template_captions=table["templates"])
        writer.close(subject_names=[subject_name], session_names=[f"{subject_name}: {MERGED_SESSIONS}"])
    labels = np.concatenate([np.repeat(train_c, reps[id(train)]), np.repeat(test_c, reps[id(test)])])
    blocks = np.concatenate([np.repeat(np.arange(train.n_images), reps[id(train)]),
                             train.n_images + np.repeat(np.arange(test.n_images), reps[id(test)])])
    zeros = np.zeros(len(labels), dtype=np.int64)
    table = epoch_table(labels, zeros, zeros, blocks, class_names, train.data.shape[3] / sfreq)
    held = np.unique(test_c).tolist()
    parts = zero_shot_split(table, held_out_classes=held, val=val, seed=seed)
    store_splits(out, {"zero_shot": {"parts": parts, "kind": "zero_shot", "meta": {
        "builder": "offline.data.splits.zero_shot_split", "held_out": "the THINGS-EEG2 test concepts (never in training)",
        "n_held_out_classes": len(held), "val": val, "seed": seed}}})
    return out


def _check_same_layout(train: ThingsPart, test: ThingsPart) -> None:
    if train.ch_names != test.ch_names:
        raise ImportFormatError(f"the training and test files name different channels ({first_few(train.ch_names)} "
                                f"vs {first_few(test.ch_names)}); use files of the same subject and preprocessing")
    if not math.isclose(train.sfreq, test.sfreq, rel_tol=1e-9):
        raise ImportFormatError(f"the training file is at {train.sfreq:g} Hz and the test file at {test.sfreq:g} Hz; "
                                "use files of the same preprocessing")
    if train.data.shape[3] != test.data.shape[3] or not np.allclose(train.times, test.times):
        raise ImportFormatError(f"the training and test files have different 'times' ({len(train.times)} vs "
                                f"{len(test.times)} samples); use files of the same preprocessing")


def _chunks(part: ThingsPart, average: bool, images: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(data, image rows)``: (k*reps or k, channels, times) float32 for ``k`` images at a time."""
    for first in range(0, part.n_images, images):
        rows = np.arange(first, min(part.n_images, first + images))
        x = np.asarray(part.data[rows], dtype=np.float32)
        if average:
            x = x.mean(axis=1, dtype=np.float64).astype(np.float32)
        else:
            x = x.reshape(-1, x.shape[2], x.shape[3])
        yield x, rows


def _image_table(images_dir: str | os.PathLike | None, ids: list[str], concept: np.ndarray,
                 class_names: list[str], size: int, progress: bool) -> dict[str, Any] | None:
    if images_dir is None:
        return None
    from offline.importers.images import load_image_folder

    images, report = load_image_folder(images_dir, ids, size, progress=progress)
    return {"images": images, "ids": ids, "report": report,
            "templates": [template_caption(class_names[c], article="a") for c in concept]}


def _source(train: ThingsPart, test: ThingsPart, has_meta: bool, subject: int, average: bool,
            table: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "importer": "things-eeg2",
        "dataset": "THINGS-EEG2 (Gifford et al. 2022), preprocessed",
        "train_file": str(train.path.resolve()), "test_file": str(test.path.resolve()),
        "train_shape": list(train.data.shape), "test_shape": list(test.data.shape),
        "tmin": float(train.times[0]), "subject": subject,
        "sfreq": train.sfreq, "sfreq_from": train.sfreq_from,
        "average_repetitions": bool(average),
        "image_names": "from image metadata" if has_meta else "generic train_00001.. / test_001.. (no metadata)",
        "block": "image: all repetitions of an image form one block",
        "session": "0 for all epochs: the files merge the recording sessions",
        "subject_code": "0 for all epochs, named after the source subject (subject_names)",
        "unit": "as stored (the preprocessed files are whitened, not volts)",
        "protocol_notes": ("zero_shot split: test = the 200 test concepts (never in training); val = held-out "
                           "training concepts. Training and test images were interleaved in the same sessions."),
        "trusted_pickle": True,
        "images": None if table is None else table["report"].to_dict(),
    }
