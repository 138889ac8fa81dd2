"""Epoch datasets: event-locked windows with labels, images and leak-free splits, in Zarr v3.

An epoch dataset is one Zarr v3 directory store (schema ``bci-epochs``, version 1)::

    epochs.zarr/
    ├── zarr.json            root attributes (schema, sfreq, channels, classes, splits, ...)
    ├── data                 (n_epochs, n_channels, n_times) float32, chunks of ``chunk_epochs``
    ├── label                (n_epochs,) int64, index into ``class_names``
    ├── image_id             (n_epochs, width) uint8: UTF-8 bytes, NUL-padded
    ├── subject, session, block   (n_epochs,) int64
    ├── run                  (n_epochs,) int64           optional
    ├── marker_time          (n_epochs,) float64         optional (seconds, session clock)
    ├── images               (n_images, H, W, 3) uint8   optional image table
    ├── image_table_id       (n_images, width) uint8     ids of the image rows
    ├── caption, template_caption  (n_images, width) uint8  optional, per image row
    └── splits/<name>/<part> int64 epoch indices (sorted)

Strings are stored as NUL-padded UTF-8 bytes in ``uint8`` arrays: zarr 3 has no stable
v3 specification for string dtypes yet (it warns for both fixed- and variable-length
strings), while ``uint8`` is portable to any Zarr reader.

``data`` is uncompressed, so a chunk file is the raw little-endian bytes of its epochs.
Reading is chunk-aware: :meth:`EpochDataset.get_batch` sorts the requested epochs and
reads each run of consecutive epochs of a chunk with one positioned read of exactly
those bytes (other layouts, e.g. a compressed array written by another tool, are decoded
chunk by chunk through zarr), and returns them in the order asked; a dataset that fits
under ``cache_bytes`` (default 2 GiB) is read once into memory.
:meth:`EpochDataset.to_torch` iterates shuffled batches, shuffling the chunk order and
then the epochs within a buffer of chunks when the data are not cached.

A split is refused by :meth:`EpochDataset.add_split` when it leaks (the same epoch or
block, or overlapping windows, in two parts; see :mod:`offline.data.splits`), unless
``allow_leak=True`` records it, e.g. a published split, as leaking.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from streams._checks import check_float, check_int
from streams._context import ClosingContext
from streams._store import jsonable, now, remove_existing, store_header
from offline.data.leaks import analyse_split
from offline.data.table import EpochTable, SplitInfo, sha256_arrays, split_hash
from streams.errors import OutputExistsError

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "MODALITIES",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "SPLIT_KINDS",
    "DatasetFormatError",
    "EpochArrays",
    "EpochDataset",
    "EpochDatasetWriter",
    "EpochLoader",
    "EpochMetadata",
    "EpochTable",
    "ImageTable",
    "SplitInfo",
    "SplitLeakError",
    "write_epoch_dataset",
]

logger = logging.getLogger(__name__)

#: Root attribute ``schema`` of every epoch dataset.
SCHEMA_NAME = "bci-epochs"
#: Layout version; a reader refuses newer versions.
SCHEMA_VERSION = 1
#: Datasets up to this many bytes of ``data`` are read once into memory.
DEFAULT_CACHE_BYTES = 2 * 1024**3
#: Recognised modalities.
MODALITIES = ("eeg", "fmri")
#: Split kinds and what each one holds out for the test part (see offline.data.splits).
SPLIT_KINDS = ("block", "session", "subject", "zero_shot", "custom")

_PER_EPOCH_INT = ("label", "subject", "session", "block")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_READ_RUN_CHUNKS = 16  # at most this many chunks per zarr read call
_MAX_OPEN_FILES = 64  # chunk files kept open by a dataset for raw reads


class DatasetFormatError(ValueError):
    """Arrays or attributes of an epoch dataset are missing or inconsistent (named in the message)."""


class SplitLeakError(ValueError):
    """A split puts the same epochs or blocks, or overlapping windows, into two parts."""


# --------------------------------------------------------------------------- strings
def _encode_strings(values: Sequence[str], what: str) -> np.ndarray:
    """``(n, width)`` uint8: each string's UTF-8 bytes, NUL-padded (width >= 1)."""
    encoded = []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise DatasetFormatError(f"{what}[{i}]={v!r} must be a str, got {type(v).__name__}")
        if "\x00" in v:
            raise DatasetFormatError(f"{what}[{i}]={v!r} contains a NUL character; remove it")
        encoded.append(v.encode("utf-8"))
    width = max([1, *(len(b) for b in encoded)])
    out = np.zeros((len(encoded), width), dtype=np.uint8)
    for i, b in enumerate(encoded):
        out[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    return out


def _decode_strings(arr: np.ndarray) -> list[str]:
    """Inverse of :func:`_encode_strings`."""
    return [bytes(row).rstrip(b"\x00").decode("utf-8") for row in np.asarray(arr, dtype=np.uint8)]


# --------------------------------------------------------------------------- helpers
def _int_vector(name: str, value: Any, n: int) -> np.ndarray:
    """``value`` as an int64 vector of length ``n`` (a scalar is broadcast)."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.ndim != 1 or len(arr) != n:
        raise DatasetFormatError(f"{name} has shape {arr.shape}; expected ({n},), one value per epoch")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise DatasetFormatError(f"{name} has dtype {arr.dtype}; expected integers (int64)")
    if arr.dtype.kind == "f" and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        raise DatasetFormatError(f"{name} holds non-integer values; expected integers (int64)")
    return arr.astype(np.int64)


def _float_vector(name: str, value: Any, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64) if value is not None else None
    if arr is None or arr.ndim != 1 or len(arr) != n:
        shape = None if arr is None else arr.shape
        raise DatasetFormatError(f"{name} has shape {shape}; expected ({n},), one value per epoch")
    return arr


def _string_list(name: str, value: Any, n: int | None = None) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise DatasetFormatError(f"{name}={value!r:.80} must be a sequence of str")
    out = [v.item() if isinstance(v, np.str_) else v for v in value]
    for i, v in enumerate(out):
        if not isinstance(v, str) or not v:
            raise DatasetFormatError(f"{name}[{i}]={v!r} must be a non-empty str")
    if n is not None and len(out) != n:
        raise DatasetFormatError(f"{name} has {len(out)} entries; expected {n}")
    return out


def _index_array(name: str, value: Any, n_epochs: int) -> np.ndarray:
    """Sorted unique int64 epoch indices in ``[0, n_epochs)``."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} has shape {arr.shape}; expected a 1-D array of epoch indices")
    if arr.size and (arr.dtype.kind not in "iu"):
        raise TypeError(f"{name} has dtype {arr.dtype}; epoch indices must be integers")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_epochs):
        raise ValueError(f"{name} holds indices from {arr.min()} to {arr.max()}; valid epochs are 0..{n_epochs - 1}")
    uniq = np.unique(arr)
    if len(uniq) != len(arr):
        raise ValueError(f"{name} lists {len(arr) - len(uniq)} epoch(s) more than once; list each epoch once")
    return uniq




def _create_1d(root: Any, name: str, values: np.ndarray) -> None:
    chunk = (max(1, min(len(values), 1 << 20)),) + values.shape[1:]
    arr = root.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunk)
    if values.size:
        arr[...] = values


# --------------------------------------------------------------------------- writer
class EpochDatasetWriter:
    """Write an epoch dataset incrementally (constant memory for the signal data).

    Parameters
    ----------
    path : str or os.PathLike
        Directory store to create.
    n_channels, n_times : int
        Shape of one epoch.
    sfreq : float
        Sampling rate of the epochs in Hz (after any resampling).
    ch_names : sequence of str
        One per channel.
    class_names : sequence of str
        Labels are indices into this list.
    ch_types : sequence of str, optional
        One per channel (default ``"eeg"`` for EEG, ``"fmri"`` for fMRI).
    modality : {'eeg', 'fmri'}
    chunk_epochs : int
        Epochs per chunk of ``data`` (one chunk is one contiguous file).
    overwrite : bool
        Replace an existing dataset at ``path``.
    source : dict, optional
        Provenance (importer/builder, files, options, protocol notes).
    preprocessing : dict or str, optional
        What was done to the signal before cutting (e.g. ``PreprocessConfig.to_dict()``).
    attrs : dict, optional
        More root attributes (JSON), e.g. ``window`` settings.

    Notes
    -----
    Call :meth:`append` any number of times, optionally :meth:`set_images`, then
    :meth:`close` (or use it as a context manager). The store is marked complete only
    by a successful :meth:`close`; :meth:`EpochDataset.open` refuses an incomplete one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_channels: int,
        n_times: int,
        sfreq: float,
        ch_names: Sequence[str],
        class_names: Sequence[str],
        ch_types: Sequence[str] | None = None,
        modality: str = "eeg",
        chunk_epochs: int = 64,
        overwrite: bool = False,
        source: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | str | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        for name, v in (("n_channels", n_channels), ("n_times", n_times), ("chunk_epochs", chunk_epochs)):
            check_int(name, v, low=1)
        check_float("sfreq", sfreq, positive=True)  # Hz
        if modality not in MODALITIES:
            raise ValueError(f"modality={modality!r}: choose one of {', '.join(MODALITIES)}")
        self.n_channels, self.n_times = int(n_channels), int(n_times)
        self.chunk_epochs = int(chunk_epochs)
        self.ch_names = _string_list("ch_names", ch_names, self.n_channels)
        if len(set(self.ch_names)) != len(self.ch_names):
            dup = sorted({c for c in self.ch_names if self.ch_names.count(c) > 1})
            raise DatasetFormatError(f"ch_names has duplicates: {dup[:5]}")
        default_type = "eeg" if modality == "eeg" else "fmri"
        self.ch_types = (_string_list("ch_types", ch_types, self.n_channels) if ch_types is not None
                         else [default_type] * self.n_channels)
        self.class_names = _string_list("class_names", class_names)
        if not self.class_names:
            raise DatasetFormatError("class_names is empty; give at least one class name")
        if len(set(self.class_names)) != len(self.class_names):
            raise DatasetFormatError("class_names has duplicates; every class needs a distinct name")
        base_attrs = {
            **store_header(SCHEMA_NAME, SCHEMA_VERSION),
            "sfreq": float(sfreq),
            "n_channels": self.n_channels,
            "n_times": self.n_times,
            "ch_names": self.ch_names,
            "ch_types": self.ch_types,
            "class_names": self.class_names,
            "modality": modality,
            "preprocessing": jsonable(preprocessing, "preprocessing"),
            "source": jsonable(dict(source or {}), "source"),
            "splits": {},
            "string_encoding": "utf-8 bytes in uint8 arrays, NUL-padded",
            **jsonable(dict(attrs or {}), "attrs"),
        }
        self.path = Path(path)
        if self.path.exists() or self.path.is_symlink():
            if not overwrite:
                raise OutputExistsError(f"{str(self.path)!r} already exists; choose a new path or pass "
                                        "overwrite=True (--overwrite on the CLI)")
            remove_existing(self.path)
        self._root = zarr.create_group(store=LocalStore(self.path), zarr_format=3, attributes=base_attrs)
        self._data = self._root.create_array(
            "data", shape=(0, self.n_channels, self.n_times), dtype="float32",
            chunks=(self.chunk_epochs, self.n_channels, self.n_times), compressors=None,
            dimension_names=("epoch", "channel", "time"), config={"write_empty_chunks": True},
        )
        self._buffer: list[np.ndarray] = []
        self._n_buffered = 0
        self._n_written = 0
        self._hash = hashlib.sha256()
        self._meta: dict[str, list[np.ndarray]] = {k: [] for k in (*_PER_EPOCH_INT, "run", "marker_time")}
        self._image_ids: list[str] = []
        self._images: dict[str, Any] | None = None
        self._closed = False

    # ------------------------------------------------------------------ appending
    @property
    def n_epochs(self) -> int:
        """Epochs appended so far."""
        return self._n_written + self._n_buffered

    def append(
        self,
        data: np.ndarray,
        *,
        labels: Any,
        image_ids: Sequence[str],
        subject: Any,
        session: Any,
        block: Any,
        run: Any = None,
        marker_time: Any = None,
    ) -> None:
        """Add epochs.

        Parameters
        ----------
        data : numpy.ndarray, shape (k, n_channels, n_times)
            Real-valued, finite (cast to float32).
        labels : array-like of int, shape (k,)
            Indices into ``class_names``.
        image_ids : sequence of str, length k
        subject, session, block : int or array-like of int
            A scalar applies to all ``k`` epochs.
        run : int or array-like of int, optional
            Given for every append or for none.
        marker_time : array-like of float, optional
            Given for every append or for none.
        """
        if self._closed:
            raise ValueError("the writer is closed; open a new EpochDatasetWriter")
        x = self._checked_data(data)
        k = x.shape[0]
        lab = _int_vector("label", labels, k)
        if k and (lab.min() < 0 or lab.max() >= len(self.class_names)):
            bad = lab[(lab < 0) | (lab >= len(self.class_names))][0]
            raise DatasetFormatError(
                f"label holds {bad}, outside 0..{len(self.class_names) - 1} (class_names has "
                f"{len(self.class_names)} entries); give a label index per epoch"
            )
        ids = _string_list("image_id", image_ids, k)
        self._add_optional("run", None if run is None else _int_vector("run", run, k))
        self._add_optional("marker_time", None if marker_time is None else _float_vector("marker_time", marker_time, k))
        for name, value in (("subject", subject), ("session", session), ("block", block)):
            self._meta[name].append(_int_vector(name, value, k))
        self._meta["label"].append(lab)
        self._image_ids += ids
        self._buffer.append(x)
        self._n_buffered += k
        if self._n_buffered >= self.chunk_epochs:
            self._flush(whole_chunks=True)

    def _checked_data(self, data: Any) -> np.ndarray:
        x = np.asarray(data)
        want = (self.n_channels, self.n_times)
        if x.ndim != 3 or x.shape[1:] != want:
            raise DatasetFormatError(
                f"data has shape {x.shape}; expected (n_epochs, n_channels={want[0]}, n_times={want[1]})"
            )
        if x.dtype.kind not in "fiu" or x.dtype.kind == "b":
            raise DatasetFormatError(f"data has dtype {x.dtype}; expected real-valued samples (float32)")
        x = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise DatasetFormatError(
                f"data holds NaN or inf in {len(bad)} epoch(s) (first: epoch {self.n_epochs + int(bad[0])}); "
                "drop or repair those epochs before writing"
            )
        return x

    def _add_optional(self, name: str, value: np.ndarray | None) -> None:
        had = self.n_epochs > 0 and len(self._meta[name]) > 0
        if self.n_epochs > 0 and (value is not None) != had:
            raise DatasetFormatError(f"{name} must be given for every append or for none")
        if value is not None:
            self._meta[name].append(value)

    def _flush(self, *, whole_chunks: bool) -> None:
        if not self._buffer:
            return
        x = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        n = (len(x) // self.chunk_epochs) * self.chunk_epochs if whole_chunks else len(x)
        if n == 0:
            return
        n0, n1 = self._n_written, self._n_written + n
        self._data.resize((n1, self.n_channels, self.n_times))
        self._data[n0:n1] = x[:n]
        self._hash.update(x[:n].tobytes())
        self._n_written = n1
        rest = x[n:]
        self._buffer = [rest] if len(rest) else []
        self._n_buffered = len(rest)

    # ------------------------------------------------------------------ images
    def set_images(
        self,
        images: np.ndarray,
        image_table_ids: Sequence[str],
        captions: Sequence[str] | None = None,
        template_captions: Sequence[str] | None = None,
    ) -> None:
        """The image table: ``images (n_images, H, W, 3) uint8`` with one id (and caption) per row."""
        img = np.asarray(images)
        if img.ndim != 4 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise DatasetFormatError(f"images has shape {img.shape} and dtype {img.dtype}; "
                                     "expected (n_images, H, W, 3) uint8")
        n = img.shape[0]
        ids = _string_list("image_table_ids", image_table_ids, n)
        if len(set(ids)) != n:
            raise DatasetFormatError("image_table_ids has duplicates; every image row needs a distinct id")
        caps = None if captions is None else _string_list("captions", captions, n)
        temps = None if template_captions is None else _string_list("template_captions", template_captions, n)
        self._images = {"images": img, "ids": ids, "captions": caps, "template_captions": temps}

    def set_attrs(self, **attrs: Any) -> None:
        """Set or replace root attributes (JSON values), e.g. ``source=...``; layout keys are refused."""
        reserved = {"schema", "schema_version", "complete", "n_epochs", "n_channels", "n_times", "data_sha256",
                    "ch_names", "class_names", "splits"}
        bad = sorted(set(attrs) & reserved)
        if bad:
            raise ValueError(f"attributes {bad} are set by the writer itself; rename them")
        self._root.attrs.update({k: jsonable(v, f"attribute {k!r}") for k, v in attrs.items()})

    # ------------------------------------------------------------------ closing
    def close(self, *, subject_names: Sequence[str] | None = None,
              session_names: Sequence[str] | None = None) -> Path:
        """Write the rest, the per-epoch arrays and the image table; mark the store complete.

        Parameters
        ----------
        subject_names, session_names : sequence of str, optional
            Names of subject/session codes ``0..k-1`` (stored in the attributes).

        Returns
        -------
        Path
            The dataset directory.
        """
        if self._closed:
            return self.path
        if self.n_epochs == 0:
            raise DatasetFormatError("no epochs were appended; an epoch dataset needs at least one epoch")
        self._flush(whole_chunks=False)
        meta = {k: np.concatenate(v) for k, v in self._meta.items() if v}
        for name in _PER_EPOCH_INT:
            _create_1d(self._root, name, meta[name])
        for name in ("run", "marker_time"):
            if name in meta:
                _create_1d(self._root, name, meta[name])
        _create_1d(self._root, "image_id", _encode_strings(self._image_ids, "image_id"))
        self._write_images()
        extra = {
            "n_epochs": self.n_epochs,
            "data_sha256": self._hash.hexdigest(),
            "subject_names": self._names("subject_names", subject_names, meta["subject"]),
            "session_names": self._names("session_names", session_names, meta["session"]),
        }
        self._root.attrs.update(extra)
        self._root.attrs.update({"complete": True, "closed": now()})
        self._closed = True
        return self.path

    def _names(self, what: str, names: Sequence[str] | None, codes: np.ndarray) -> list[str] | None:
        if names is None:
            return None
        out = _string_list(what, names)
        if codes.size and (codes.min() < 0 or codes.max() >= len(out)):
            raise DatasetFormatError(f"{what} has {len(out)} names but the codes go from {codes.min()} to "
                                     f"{codes.max()}")
        return out

    def _write_images(self) -> None:
        if self._images is None:
            return
        table = self._images
        known = set(table["ids"])
        missing = sorted({i for i in self._image_ids if i not in known})
        if missing:
            raise DatasetFormatError(
                f"{len(missing)} image_id(s) of epochs are not in image_table_ids (e.g. {missing[:5]}); "
                "add their images to the table or leave the image table out"
            )
        img = table["images"]
        self._root.create_array("images", shape=img.shape, dtype="uint8",
                                chunks=(max(1, min(len(img), 256)), *img.shape[1:]))[...] = img
        _create_1d(self._root, "image_table_id", _encode_strings(table["ids"], "image_table_ids"))
        for key, name in (("captions", "caption"), ("template_captions", "template_caption")):
            if table[key] is not None:
                _create_1d(self._root, name, _encode_strings(table[key], key))

    def __enter__(self) -> EpochDatasetWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()


@dataclass(frozen=True, eq=False)
class EpochArrays:
    """The per-epoch arrays of an epoch dataset, one row per epoch (checked by the writer).

    Attributes
    ----------
    data : numpy.ndarray, shape (n_epochs, n_channels, n_times)
        Finite real values (stored as float32).
    labels : array-like of int, shape (n_epochs,)
        Indices into :attr:`EpochMetadata.class_names`.
    image_ids : sequence of str
        One per epoch.
    subject, session, block : array-like of int, shape (n_epochs,)
        A block is identified by ``(subject, session, block)``.
    run : array-like of int, optional
    marker_time : array-like of float, optional
        Marker times in seconds (enables the overlapping-window check of splits).
    """

    data: np.ndarray
    labels: Any
    image_ids: Sequence[str]
    subject: Any
    session: Any
    block: Any
    run: Any = None
    marker_time: Any = None


@dataclass(frozen=True, eq=False)
class EpochMetadata:
    """Dataset-level metadata of an epoch dataset: sampling, channels, classes and provenance.

    Attributes
    ----------
    sfreq : float
        Sampling rate of the epochs (Hz).
    ch_names : sequence of str
        One per channel.
    class_names : sequence of str
    ch_types : sequence of str, optional
        One per channel (default: the modality).
    modality : {'eeg', 'fmri'}
    source : dict, optional
        Provenance.
    preprocessing : dict or str, optional
        What was done to the signal.
    subject_names, session_names : sequence of str, optional
        Names of the integer codes.
    attrs : dict, optional
        More root attributes.
    """

    sfreq: float
    ch_names: Sequence[str]
    class_names: Sequence[str]
    ch_types: Sequence[str] | None = None
    modality: str = "eeg"
    source: Mapping[str, Any] | None = None
    preprocessing: Mapping[str, Any] | str | None = None
    subject_names: Sequence[str] | None = None
    session_names: Sequence[str] | None = None
    attrs: Mapping[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class ImageTable:
    """The image table of an epoch dataset: one row per distinct image.

    Attributes
    ----------
    images : numpy.ndarray, optional
        ``(n_images, H, W, 3)`` uint8, rows matching ``ids``; every epoch's image id must
        be in the table.
    ids, captions, template_captions : sequence of str, optional
        Per image row (``images`` and ``ids`` go together; captions need both).
    """

    images: np.ndarray | None = None
    ids: Sequence[str] | None = None
    captions: Sequence[str] | None = None
    template_captions: Sequence[str] | None = None


def write_epoch_dataset(
    path: str | Path,
    epochs: EpochArrays,
    meta: EpochMetadata,
    *,
    images: ImageTable | None = None,
    splits: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    split_kinds: Mapping[str, str] | None = None,
    overwrite: bool = False,
    chunk_epochs: int = 64,
) -> Path:
    """Write a whole epoch dataset at once (see the module docstring for the layout).

    Parameters
    ----------
    path : str or os.PathLike
        Directory store to create.
    epochs : EpochArrays
        The per-epoch arrays (signal, labels, image ids, subject/session/block, ...).
    meta : EpochMetadata
        Sampling rate, channels, classes, modality and provenance.
    images : ImageTable, optional
        The stimulus images and their captions.
    splits : dict, optional
        ``{name: {part: indices}}``; each is checked and stored with
        :meth:`EpochDataset.add_split` (kind from ``split_kinds``, default
        ``"custom"``); a leaking split is refused *before* anything is written.
    split_kinds : dict, optional
        ``{name: kind}`` for ``splits``.
    overwrite : bool
    chunk_epochs : int
        Epochs per chunk of ``data``.

    Returns
    -------
    Path

    Raises
    ------
    DatasetFormatError
        Wrong shapes or dtypes, label count different from the epoch count, NaN in
        ``data``, labels outside ``class_names``, unknown image ids (all named).
    SplitLeakError
        A split shares epochs, blocks or overlapping windows between parts.
    """
    e, table = epochs, images or ImageTable()
    x = np.asarray(e.data)
    if x.ndim != 3:
        raise DatasetFormatError(f"data has shape {x.shape} ({x.ndim}-D); expected (n_epochs, n_channels, n_times)")
    n = x.shape[0]
    if n == 0:
        raise DatasetFormatError("data holds no epochs; an epoch dataset needs at least one epoch")
    lab = np.asarray(e.labels)
    if lab.ndim != 1 or len(lab) != n:
        raise DatasetFormatError(f"label has shape {lab.shape} but data has {n} epochs; give one label per epoch")
    for name, value in (("subject", e.subject), ("session", e.session), ("block", e.block)):
        _int_vector(name, value, n)
    checked = _check_splits_before_write(splits, split_kinds, x, e.labels, e.subject, e.session, e.block, e.run,
                                         e.marker_time, meta.class_names, meta.sfreq)
    writer = EpochDatasetWriter(
        path, n_channels=x.shape[1], n_times=x.shape[2], sfreq=meta.sfreq, ch_names=meta.ch_names,
        ch_types=meta.ch_types, class_names=meta.class_names, modality=meta.modality, chunk_epochs=chunk_epochs,
        overwrite=overwrite, source=meta.source, preprocessing=meta.preprocessing, attrs=meta.attrs,
    )
    try:
        writer.append(x, labels=e.labels, image_ids=e.image_ids, subject=e.subject, session=e.session,
                      block=e.block, run=e.run, marker_time=e.marker_time)
        if table.images is not None or table.ids is not None:
            if table.images is None or table.ids is None:
                raise DatasetFormatError("images and image_table_ids go together; give both or neither")
            writer.set_images(table.images, table.ids, table.captions, table.template_captions)
        elif table.captions is not None or table.template_captions is not None:
            raise DatasetFormatError("captions and template_captions describe image rows; give images and "
                                     "image_table_ids too")
        out = writer.close(subject_names=meta.subject_names, session_names=meta.session_names)
    except BaseException:
        shutil.rmtree(writer.path, ignore_errors=True)  # the incomplete store this call created
        raise
    if checked:
        ds = EpochDataset.open(out)
        for name, (parts, kind) in checked.items():
            ds.add_split(name, parts, kind=kind)
    return out


def _check_splits_before_write(splits: Mapping[str, Mapping[str, np.ndarray]] | None,
                               kinds: Mapping[str, str] | None, x: np.ndarray, labels: Any, subject: Any,
                               session: Any, block: Any, run: Any, marker_time: Any,
                               class_names: Sequence[str], sfreq: float) -> dict[str, tuple[dict, str]]:
    """Validate and leak-check ``splits`` on the metadata alone, so nothing is written if one leaks."""
    if not splits:
        return {}
    n = x.shape[0]
    table = EpochTable(
        labels=_int_vector("label", labels, n), subject=_int_vector("subject", subject, n),
        session=_int_vector("session", session, n), block=_int_vector("block", block, n),
        run=None if run is None else _int_vector("run", run, n),
        marker_time=None if marker_time is None else _float_vector("marker_time", marker_time, n),
        class_names=list(class_names), window_seconds=x.shape[2] / float(sfreq),
    )
    out = {}
    for name, parts in splits.items():
        kind = (kinds or {}).get(name, "custom")
        clean = _checked_parts(name, parts, n)
        _check_kind(kind)
        check = analyse_split(table, clean, kind=kind, name=name)
        if check.leaks:
            raise SplitLeakError(_leak_message(name, check.leaks))
        out[name] = (clean, kind)
    return out


def _checked_parts(name: str, parts: Any, n_epochs: int) -> dict[str, np.ndarray]:
    if not _NAME_RE.match(str(name)):
        raise ValueError(f"split name {name!r} must start with a letter or digit and use only "
                         "letters, digits, '_', '.', '-'")
    if not isinstance(parts, Mapping) or not parts:
        raise TypeError(f"split {name!r}: parts must be a non-empty dict {{part name: epoch indices}}, "
                        f"got {type(parts).__name__}")
    out = {}
    for part, idx in parts.items():
        if not isinstance(part, str) or not _NAME_RE.match(part):
            raise ValueError(f"split {name!r}: part name {part!r} must be letters, digits, '_', '.', '-'")
        out[part] = _index_array(f"split {name!r} part {part!r}", idx, n_epochs)
    if not any(len(v) for v in out.values()):
        raise ValueError(f"split {name!r}: every part is empty")
    return out


def _check_kind(kind: str) -> None:
    if kind not in SPLIT_KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(SPLIT_KINDS)}")


def _leak_message(name: str, leaks: list[str]) -> str:
    lines = "; ".join(leaks)
    return (f"split {name!r} leaks: {lines}. Build it with offline.data.splits (block_split, session_split, "
            "subject_split, zero_shot_split), which keep whole blocks apart; to store a published split "
            "as it is, pass allow_leak=True (it is then recorded as leaking)")


# --------------------------------------------------------------------------- reading
class EpochDataset(ClosingContext):
    """An epoch dataset opened for reading (``EpochDataset.open(path)``).

    Attributes
    ----------
    path : Path
    data : zarr.Array
        ``(n_epochs, n_channels, n_times)`` float32, read lazily (use :meth:`get_batch`).
    labels, subject, session, block : numpy.ndarray, int64
    run : numpy.ndarray or None
    marker_time : numpy.ndarray or None
    image_ids : list of str
        One per epoch.
    sfreq : float
    ch_names, ch_types, class_names : list of str
    modality : str
    source : dict
    preprocessing : dict, str or None
    attrs : dict
        All root attributes.
    """

    def __init__(self, path: Path, root: Any, attrs: dict[str, Any], cache_bytes: int) -> None:
        self.path = path
        self._root = root
        self.attrs = attrs
        self.cache_bytes = int(cache_bytes)
        self._cache: np.ndarray | None = None
        self._images: np.ndarray | None = None
        self._files: dict[int, int] = {}  # chunk number -> open file descriptor (insertion order = age)
        self._load()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, *, cache_bytes: int = DEFAULT_CACHE_BYTES, verify: bool = False) -> EpochDataset:
        """Open and validate a dataset.

        Parameters
        ----------
        path : str or os.PathLike
        cache_bytes : int
            If ``data`` is at most this many bytes, the first read loads all of it into
            memory; otherwise every read goes to the chunks it needs. 0 never caches.
        verify : bool
            Also read all data: check it is finite and matches the stored hash.

        Raises
        ------
        DatasetFormatError
            Not a dataset, a newer schema, an incomplete write, or arrays whose shapes,
            dtypes or values disagree (named in the message).
        """
        p = Path(path)
        if not p.exists():
            raise DatasetFormatError(f"{str(p)!r} does not exist; expected an epoch dataset ({SCHEMA_NAME})")
        try:
            root = zarr.open_group(store=LocalStore(p, read_only=True), mode="r")
        except (FileNotFoundError, ValueError, TypeError, zarr.errors.BaseZarrError) as e:
            raise DatasetFormatError(f"{str(p)!r} is not a Zarr group ({e}); expected an epoch dataset") from None
        attrs = dict(root.attrs)
        _check_root_attrs(attrs, p)
        ds = cls(p, root, attrs, check_int("cache_bytes", cache_bytes, low=0))
        if verify:
            ds.verify()
        return ds

    def _array(self, name: str) -> Any:
        try:
            return self._root[name]
        except KeyError:
            raise DatasetFormatError(f"{str(self.path)!r}: array {name!r} is missing; the dataset is damaged "
                                     "or was not written by EpochDatasetWriter") from None

    def _load(self) -> None:
        a = self.attrs
        self.data = self._array("data")
        self._raw_chunks = _is_raw_layout(self.data)
        self._fill_value = float(self.data.metadata.fill_value or 0.0)
        shape = tuple(self.data.shape)
        where = str(self.path)
        if len(shape) != 3:
            raise DatasetFormatError(f"{where!r}: array 'data' has shape {shape}; expected 3-D "
                                     "(n_epochs, n_channels, n_times)")
        if self.data.dtype != np.float32:
            raise DatasetFormatError(f"{where!r}: array 'data' has dtype {self.data.dtype}; expected float32")
        n = shape[0]
        if n != a.get("n_epochs"):
            raise DatasetFormatError(f"{where!r}: array 'data' has {n} epochs but attribute n_epochs is "
                                     f"{a.get('n_epochs')!r}")
        self.sfreq = float(a["sfreq"])
        self.ch_names = list(a["ch_names"])
        self.ch_types = list(a.get("ch_types") or [])
        self.class_names = list(a["class_names"])
        if len(self.ch_names) != shape[1]:
            raise DatasetFormatError(f"{where!r}: {len(self.ch_names)} ch_names but array 'data' has {shape[1]} "
                                     "channels")
        per_epoch = {name: self._vector(name, n, np.int64) for name in _PER_EPOCH_INT}
        self.labels = per_epoch["label"]
        self.subject, self.session, self.block = per_epoch["subject"], per_epoch["session"], per_epoch["block"]
        self.run = self._vector("run", n, np.int64) if "run" in self._root else None
        self.marker_time = self._vector("marker_time", n, np.float64) if "marker_time" in self._root else None
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DatasetFormatError(f"{where!r}: array 'label' holds values from {self.labels.min()} to "
                                     f"{self.labels.max()}, outside class_names (0..{len(self.class_names) - 1})")
        self.image_ids = self._strings("image_id", n)
        self._load_image_table()
        self.modality = str(a.get("modality", "eeg"))
        self.source = dict(a.get("source") or {})
        self.preprocessing = a.get("preprocessing")
        self._split_meta: dict[str, dict[str, Any]] = dict(a.get("splits") or {})
        self._splits: dict[str, dict[str, np.ndarray]] = {}
        for name, meta in self._split_meta.items():
            self._splits[name] = self._read_split(name, meta)

    def _vector(self, name: str, n: int, dtype: type) -> np.ndarray:
        arr = self._array(name)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise DatasetFormatError(f"{str(self.path)!r}: array {name!r} has shape {tuple(arr.shape)} but "
                                     f"'data' has {n} epochs; expected ({n},)")
        if arr.dtype != dtype:
            raise DatasetFormatError(f"{str(self.path)!r}: array {name!r} has dtype {arr.dtype}; "
                                     f"expected {np.dtype(dtype).name}")
        return np.asarray(arr[...])

    def _strings(self, name: str, n: int) -> list[str]:
        arr = self._array(name)
        if arr.ndim != 2 or arr.shape[0] != n or arr.dtype != np.uint8:
            raise DatasetFormatError(f"{str(self.path)!r}: array {name!r} has shape {tuple(arr.shape)} and dtype "
                                     f"{arr.dtype}; expected ({n}, width) uint8 (UTF-8 strings)")
        return _decode_strings(arr[...])

    def _load_image_table(self) -> None:
        self.image_table_ids: list[str] | None = None
        self.captions: list[str] | None = None
        self.template_captions: list[str] | None = None
        if "images" not in self._root:
            return
        img = self._array("images")
        if img.ndim != 4 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise DatasetFormatError(f"{str(self.path)!r}: array 'images' has shape {tuple(img.shape)} and dtype "
                                     f"{img.dtype}; expected (n_images, H, W, 3) uint8")
        m = img.shape[0]
        self.image_table_ids = self._strings("image_table_id", m)
        if "caption" in self._root:
            self.captions = self._strings("caption", m)
        if "template_caption" in self._root:
            self.template_captions = self._strings("template_caption", m)
        self._image_row = {image_id: i for i, image_id in enumerate(self.image_table_ids)}

    def _read_split(self, name: str, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        parts = {}
        for part in meta.get("parts", []):
            key = f"splits/{name}/{part}"
            if key not in self._root:
                raise DatasetFormatError(f"{str(self.path)!r}: split {name!r} lists part {part!r} but array "
                                         f"{key!r} is missing")
            idx = np.asarray(self._root[key][...], dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self.n_epochs):
                raise DatasetFormatError(f"{str(self.path)!r}: split {name!r} part {part!r} holds indices outside "
                                         f"0..{self.n_epochs - 1}")
            parts[part] = idx
        return parts

    # ------------------------------------------------------------------ shape & metadata
    @property
    def n_epochs(self) -> int:
        """Number of epochs."""
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        """Channels per epoch."""
        return int(self.data.shape[1])

    @property
    def n_times(self) -> int:
        """Samples per epoch."""
        return int(self.data.shape[2])

    @property
    def chunk_epochs(self) -> int:
        """Epochs per chunk of ``data``."""
        return int(self.data.chunks[0])

    @property
    def window_seconds(self) -> float:
        """Time span of one epoch window (``n_times / sfreq``)."""
        return self.n_times / self.sfreq

    @property
    def subject_names(self) -> list[str] | None:
        """Names of the subject codes, when stored."""
        return self.attrs.get("subject_names")

    @property
    def session_names(self) -> list[str] | None:
        """Names of the session codes, when stored."""
        return self.attrs.get("session_names")

    @property
    def table(self) -> EpochTable:
        """Per-epoch metadata for split builders and checks."""
        return EpochTable(labels=self.labels, subject=self.subject, session=self.session, block=self.block,
                          run=self.run, marker_time=self.marker_time, class_names=self.class_names,
                          window_seconds=self.window_seconds)

    @property
    def images(self) -> np.ndarray | None:
        """``(n_images, H, W, 3)`` uint8 image table (read on first access), or None."""
        if self._images is None and "images" in self._root:
            self._images = np.asarray(self._root["images"][...])
        return self._images

    def image_rows(self, indices: Any | None = None) -> np.ndarray:
        """Row of the image table of each epoch (``indices``: all epochs by default).

        Raises
        ------
        ValueError
            The dataset has no image table.
        """
        if self.image_table_ids is None:
            raise ValueError(f"{str(self.path)!r} has no image table (images/image_table_id)")
        idx = self._checked_indices(np.arange(self.n_epochs) if indices is None else indices)
        return np.array([self._image_row[self.image_ids[i]] for i in idx], dtype=np.int64)

    def __len__(self) -> int:
        return self.n_epochs

    def __repr__(self) -> str:
        return (f"EpochDataset({str(self.path)!r}, n_epochs={self.n_epochs}, n_channels={self.n_channels}, "
                f"n_times={self.n_times}, sfreq={self.sfreq:g}, classes={len(self.class_names)}, "
                f"splits={sorted(self._splits)})")

    # ------------------------------------------------------------------ reading
    @property
    def cached(self) -> bool:
        """True once all data are held in memory."""
        return self._cache is not None

    @property
    def fits_cache(self) -> bool:
        """True when ``data`` is small enough to be cached (``nbytes <= cache_bytes``)."""
        return self.n_epochs * self.n_channels * self.n_times * 4 <= self.cache_bytes

    def load(self) -> np.ndarray:
        """Read all data into memory (whatever ``cache_bytes``) and keep it; returns it."""
        if self._cache is None:
            self._cache = self._read(np.arange(self.n_epochs))
        return self._cache

    def _checked_indices(self, indices: Any) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"indices have shape {idx.shape}; expected a 1-D list of epoch indices")
        if idx.size == 0:
            return idx.astype(np.int64)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices have dtype {idx.dtype}; expected integers")
        if idx.min() < 0 or idx.max() >= self.n_epochs:
            raise IndexError(f"indices go from {idx.min()} to {idx.max()}; valid epochs are 0..{self.n_epochs - 1}")
        return idx.astype(np.int64)

    def get_batch(self, indices: Any) -> np.ndarray:
        """Epochs ``indices`` (any order, repeats allowed) as ``(k, n_channels, n_times)`` float32.

        From memory when the data are cached (or fit ``cache_bytes``: the first call then
        loads them). Otherwise the indices are sorted and grouped by chunk: for the
        uncompressed layout this class writes, each run of consecutive epochs of a chunk
        is one read of exactly those bytes of the chunk file; for other layouts each
        needed chunk is decoded once through zarr.
        """
        idx = self._checked_indices(indices)
        if self._cache is None and self.fits_cache and idx.size:
            self.load()
        if self._cache is not None:
            return self._cache[idx]
        return self._read(idx)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.n_channels, self.n_times), dtype=np.float32)
        if not idx.size:
            return out
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        if self._raw_chunks:
            self._read_raw(sorted_idx, order, out)
        else:
            self._read_zarr(sorted_idx, order, out)
        return out

    def _read_zarr(self, sorted_idx: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
        """Each needed chunk decoded once by zarr (consecutive chunks in one call)."""
        ce = self.chunk_epochs
        for first, last in _chunk_runs(np.unique(sorted_idx // ce), _READ_RUN_CHUNKS):
            start, stop = first * ce, min((last + 1) * ce, self.n_epochs)
            lo, hi = np.searchsorted(sorted_idx, [start, stop])
            block = self.data[start:stop]
            out[order[lo:hi]] = block[sorted_idx[lo:hi] - start]

    def _read_raw(self, sorted_idx: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
        """Uncompressed little-endian chunks: read only the bytes of the wanted epochs.

        Each run of consecutive epochs within one chunk is one ``pread``, straight into
        ``out`` when its destination rows are contiguous (always for single epochs).
        """
        ce = self.chunk_epochs
        chunk = sorted_idx // ce
        breaks = np.flatnonzero((np.diff(sorted_idx) != 1) | (np.diff(chunk) != 0)) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        stops = np.concatenate([breaks, [len(sorted_idx)]]).tolist()
        for lo, hi in zip(starts, stops):
            c = int(chunk[lo])
            first = int(sorted_idx[lo]) - c * ce
            dest_rows = order[lo:hi]
            if hi - lo == 1 or np.all(np.diff(dest_rows) == 1):
                p0 = int(dest_rows[0])
                self._pread_epochs(c, first, out[p0:p0 + hi - lo])
            else:
                tmp = np.empty((hi - lo, self.n_channels, self.n_times), dtype=np.float32)
                self._pread_epochs(c, first, tmp)
                out[dest_rows] = tmp

    def _pread_epochs(self, c: int, first: int, dest: np.ndarray) -> None:
        """Fill ``dest`` (contiguous, ``(k, n_channels, n_times)``) with epochs ``first..`` of chunk ``c``."""
        path = self.path / "data" / "c" / str(c) / "0" / "0"
        fd = self._files.get(c)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:  # zarr leaves out chunks that hold only the fill value
                dest[...] = self._fill_value
                return
            self._remember_file(c, fd)
        view = memoryview(dest).cast("B")
        offset = first * self.n_channels * self.n_times * 4
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view], offset)
        else:  # pragma: no cover - platforms without preadv (Windows): a positioned read of our own
            with open(path, "rb", buffering=0) as f:
                f.seek(offset)
                got = f.readinto(view) or 0
        if got != view.nbytes:
            raise DatasetFormatError(f"{str(path)!r} is shorter than a chunk of 'data' ({got} of {view.nbytes} "
                                     "bytes read); the dataset is damaged")

    def _remember_file(self, c: int, fd: int) -> None:
        self._files[c] = fd
        while len(self._files) > _MAX_OPEN_FILES:
            os.close(self._files.pop(next(iter(self._files))))

    def close(self) -> None:
        """Close the chunk files kept open for reading and drop the cache."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        self._cache = None

    def __del__(self) -> None:
        files = getattr(self, "_files", None)
        for fd in (files or {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def iter_chunks(self, indices: Any | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(epoch_indices, data)`` chunk by chunk over ``indices`` (sorted), all by default."""
        idx = np.unique(self._checked_indices(np.arange(self.n_epochs) if indices is None else indices))
        ce = self.chunk_epochs
        for c in np.unique(idx // ce):
            lo, hi = np.searchsorted(idx, [c * ce, (c + 1) * ce])
            yield idx[lo:hi], self.get_batch(idx[lo:hi])

    def to_torch(
        self,
        indices: Any | None = None,
        *,
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        buffer_chunks: int = 4,
    ) -> EpochLoader:
        """A reusable iterator of ``(x, y, index)`` torch batches (see :class:`EpochLoader`)."""
        idx = np.arange(self.n_epochs) if indices is None else self._checked_indices(indices)
        return EpochLoader(self, idx, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                           buffer_chunks=buffer_chunks)

    # ------------------------------------------------------------------ integrity
    def verify(self) -> None:
        """Read all data: check every value is finite and the hash matches the one stored at write.

        Raises
        ------
        DatasetFormatError
            NaN/inf in ``data`` (epochs named) or a hash mismatch (the data changed after writing).
        """
        h = hashlib.sha256()
        ce = self.chunk_epochs
        for start in range(0, self.n_epochs, ce):
            x = np.ascontiguousarray(self.data[start:start + ce], dtype=np.float32)
            finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
            if not finite.all():
                bad = start + np.flatnonzero(~finite)
                raise DatasetFormatError(f"{str(self.path)!r}: array 'data' holds NaN or inf in epoch(s) "
                                         f"{bad[:5].tolist()}; rebuild the dataset")
            h.update(x.tobytes())
        stored = self.attrs.get("data_sha256")
        if stored is not None and h.hexdigest() != stored:
            raise DatasetFormatError(f"{str(self.path)!r}: array 'data' does not match the hash stored when it "
                                     "was written (data_sha256); the data were modified or damaged")

    def fingerprint(self, split: str | None = None) -> str:
        """Short hash (16 hex digits) of the data, labels, epoch metadata and optionally one split.

        Store it in a checkpoint (``extra["data_fingerprint"]``) to tie a model to the exact
        data it was trained on. The data part uses the hash stored at write time.
        """
        parts: list[bytes | np.ndarray | str] = [
            f"{SCHEMA_NAME}/{SCHEMA_VERSION}",
            str(self.attrs.get("data_sha256", "")),
            np.ascontiguousarray(self.labels, dtype="<i8"),
            "\n".join(self.image_ids),
            np.ascontiguousarray(self.subject, dtype="<i8"),
            np.ascontiguousarray(self.session, dtype="<i8"),
            np.ascontiguousarray(self.block, dtype="<i8"),
            json.dumps(self.class_names),
        ]
        if split is not None:
            parts.append(self.split_info(split).sha256)
        return sha256_arrays(*parts)[:16]

    # ------------------------------------------------------------------ splits
    @property
    def splits(self) -> dict[str, dict[str, np.ndarray]]:
        """``{name: {part: sorted epoch indices}}`` of every stored split."""
        return {name: {p: v.copy() for p, v in parts.items()} for name, parts in self._splits.items()}

    def split(self, name: str) -> dict[str, np.ndarray]:
        """Parts of split ``name`` (e.g. ``{"train": idx, "val": idx, "test": idx}``).

        Raises
        ------
        KeyError
            No such split (the message lists the stored ones).
        """
        if name not in self._splits:
            raise KeyError(f"no split {name!r} in {str(self.path)!r}; stored splits: {sorted(self._splits) or 'none'} "
                           "(add one with EpochDataset.add_split or offline.data.splits)")
        return {p: v.copy() for p, v in self._splits[name].items()}

    def split_info(self, name: str) -> SplitInfo:
        """Split ``name`` with its kind, hash, leaks and builder metadata."""
        parts = self.split(name)
        meta = self._split_meta[name]
        return SplitInfo(name=name, kind=str(meta.get("kind", "custom")), parts=parts,
                         sha256=str(meta.get("sha256", split_hash(parts))), leaks=list(meta.get("leaks", [])),
                         meta=dict(meta.get("meta") or {}), created=str(meta.get("created", "")))

    def add_split(
        self,
        name: str,
        parts: Mapping[str, Any],
        kind: str = "custom",
        *,
        allow_leak: bool = False,
        overwrite: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> SplitInfo:
        """Check and store a split.

        Parameters
        ----------
        name : str
            Letters, digits, ``_``, ``.``, ``-``.
        parts : dict of str to array-like of int
            Epoch indices per part (``train``/``val``/``test``, or other names).
        kind : {'block', 'session', 'subject', 'zero_shot', 'custom'}
            What the split holds out (decides which sharing is a leak; see offline.data.splits).
        allow_leak : bool
            Store a leaking split anyway (e.g. a published one), recorded as leaking with
            the reasons in the attributes and a logged warning.
        overwrite : bool
            Replace a stored split of the same name.
        meta : dict, optional
            Builder arguments to keep with it.

        Raises
        ------
        SplitLeakError
            The split shares epochs, blocks or overlapping windows between parts
            (or, by kind, sessions/subjects/classes with the test part).
        ValueError
            Bad name, indices out of range or repeated, or the name exists without ``overwrite``.
        """
        if name in self._splits and not overwrite:
            raise ValueError(f"split {name!r} already exists in {str(self.path)!r}; pass overwrite=True to "
                             "replace it or choose another name")
        _check_kind(kind)
        clean = _checked_parts(name, parts, self.n_epochs)
        check = analyse_split(self.table, clean, kind=kind, name=name)
        if check.leaks and not allow_leak:
            raise SplitLeakError(_leak_message(name, check.leaks))
        if check.leaks:
            logger.warning("split %r of %s is stored although it leaks: %s", name, self.path, "; ".join(check.leaks))
        record = {
            "kind": kind,
            "parts": list(clean),
            "sizes": {p: int(len(v)) for p, v in clean.items()},
            "sha256": split_hash(clean),
            "leaks": check.leaks,
            "warning": (f"LEAKING split stored with allow_leak=True: {'; '.join(check.leaks)}"
                        if check.leaks else None),
            "meta": jsonable(dict(meta or {}), f"split {name!r} meta"),
            "created": now(),
        }
        self._write_split(name, clean, record)
        self._splits[name] = clean
        self._split_meta[name] = record
        self.attrs["splits"] = dict(self._split_meta)
        return self.split_info(name)

    def _write_split(self, name: str, parts: dict[str, np.ndarray], record: dict[str, Any]) -> None:
        root = zarr.open_group(store=LocalStore(self.path), mode="r+")
        splits = root.require_group("splits")
        if name in splits:
            del splits[name]
        group = splits.create_group(name)
        for part, idx in parts.items():
            _create_1d(group, part, idx.astype(np.int64))
        all_meta = dict(root.attrs.get("splits") or {})
        all_meta[name] = record
        root.attrs.update({"splits": all_meta})


def _check_root_attrs(attrs: dict[str, Any], path: Path) -> None:
    where = str(path)
    expected = f"expected an epoch dataset of schema {SCHEMA_NAME!r} version <= {SCHEMA_VERSION}"
    schema = attrs.get("schema")
    if schema is None:
        raise DatasetFormatError(f"{where!r} is a Zarr store but not an epoch dataset: root attribute 'schema' is "
                                 f"missing; {expected}")
    if schema != SCHEMA_NAME:
        raise DatasetFormatError(f"{where!r} has schema {schema!r}; {expected}")
    v = attrs.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise DatasetFormatError(f"{where!r}: attribute 'schema_version' is {v!r}; {expected}")
    if v > SCHEMA_VERSION:
        raise DatasetFormatError(f"{where!r} was written with schema_version {v}, newer than this reader "
                                 f"({SCHEMA_VERSION}); upgrade bci-runtime to read it")
    if attrs.get("complete") is not True:
        raise DatasetFormatError(f"{where!r} is incomplete (the writer did not finish: crashed or interrupted); "
                                 "build the dataset again")
    for key in ("sfreq", "ch_names", "class_names", "n_epochs"):
        if key not in attrs:
            raise DatasetFormatError(f"{where!r}: root attribute {key!r} is missing; {expected}")


def _is_raw_layout(arr: Any) -> bool:
    """True when ``arr``'s chunk files are plain little-endian float32 bytes at ``c/<k>/0/0``.

    That is the layout :class:`EpochDatasetWriter` writes (no compressor, default chunk
    key encoding, whole channels x times per chunk); reads then go straight to the bytes.
    """
    try:
        m = arr.metadata
        codecs = m.codecs
        endian = getattr(codecs[0], "endian", None)
        return (
            len(codecs) == 1
            and type(codecs[0]).__name__ == "BytesCodec"
            and getattr(endian, "value", endian) == "little"
            and getattr(m.chunk_key_encoding, "name", None) == "default"
            and getattr(m.chunk_key_encoding, "separator", None) == "/"
            and tuple(m.chunk_grid.chunk_shape[1:]) == tuple(arr.shape[1:])
            and arr.dtype == np.float32
            and isinstance(arr.store, LocalStore)
        )
    except (AttributeError, IndexError, TypeError):
        return False


def _chunk_runs(chunks: np.ndarray, max_len: int) -> Iterator[tuple[int, int]]:
    """``(first, last)`` of runs of consecutive chunk numbers, each at most ``max_len`` long."""
    if not len(chunks):
        return
    first = prev = int(chunks[0])
    for c in chunks[1:]:
        c = int(c)
        if c != prev + 1 or c - first >= max_len:
            yield first, prev
            first = c
        prev = c
    yield first, prev


# --------------------------------------------------------------------------- torch
class EpochLoader:
    """Batches of ``(x, y, index)`` torch tensors from an :class:`EpochDataset`.

    ``x`` is ``(B, n_channels, n_times)`` float32, ``y`` the labels (int64), ``index``
    the epoch indices (int64). Every iteration is one pass over ``indices``; the shuffle
    differs per pass (seeded by ``seed`` and the pass number, see :meth:`set_epoch`), so
    runs are reproducible.

    Cached (or cacheable) datasets are shuffled epoch by epoch. Larger ones are read
    whole chunks at a time: the chunk order is shuffled, ``buffer_chunks`` chunks are
    read together and their epochs shuffled within that buffer (no per-epoch reads).
    Without shuffling, batches follow the order of ``indices``.

    Parameters
    ----------
    dataset : EpochDataset
    indices : numpy.ndarray
        Epochs to iterate (e.g. ``ds.split("block")["train"]``).
    batch_size : int
    shuffle : bool
    seed : int
    drop_last : bool
        Leave out a last batch smaller than ``batch_size``.
    buffer_chunks : int
        Chunks read and shuffled together when the data are not cached.
    """

    def __init__(self, dataset: EpochDataset, indices: np.ndarray, *, batch_size: int = 64, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, buffer_chunks: int = 4) -> None:
        for name, v in (("batch_size", batch_size), ("buffer_chunks", buffer_chunks)):
            check_int(name, v, low=1)
        check_int("seed", seed, low=0)
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.drop_last, self.buffer_chunks = bool(drop_last), int(buffer_chunks)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use the shuffle of pass ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        import torch

        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        if self.dataset.cached or self.dataset.fits_cache or not self.shuffle:
            batches = self._plain_batches(rng)
        else:
            batches = self._buffered_batches(rng)
        for x, idx in batches:
            yield (torch.from_numpy(x), torch.from_numpy(self.dataset.labels[idx]), torch.from_numpy(idx))

    def _plain_batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of consecutive entries of ``indices`` (permuted first when shuffling)."""
        order = rng.permutation(self.indices) if self.shuffle else self.indices
        b = self.batch_size
        stop = len(order) - len(order) % b if self.drop_last else len(order)
        for i in range(0, stop, b):
            idx = np.array(order[i:i + b])
            yield self.dataset.get_batch(idx), idx

    def _buffered_batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Read ``buffer_chunks`` chunks at a time (sorted reads), shuffle within, carry the rest over."""
        b = self.batch_size
        carry_x = np.zeros((0, self.dataset.n_channels, self.dataset.n_times), dtype=np.float32)
        carry_i = np.zeros(0, dtype=np.int64)
        for members in self._chunk_groups(rng):
            x = self.dataset.get_batch(members)
            perm = rng.permutation(len(members)) if self.shuffle else np.arange(len(members))
            need = (b - len(carry_i)) % b
            if len(carry_i):
                head = perm[:need]
                carry_x = np.concatenate([carry_x, x[head]])
                carry_i = np.concatenate([carry_i, members[head]])
                perm = perm[need:]
                if len(carry_i) < b:
                    continue
                yield carry_x, carry_i
            full = len(perm) - len(perm) % b
            for i in range(0, full, b):
                sel = perm[i:i + b]
                yield x[sel], members[sel]
            carry_x, carry_i = x[perm[full:]], members[perm[full:]]
        if len(carry_i) and not self.drop_last:
            yield carry_x, carry_i

    def _chunk_groups(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Sorted epoch indices of ``buffer_chunks`` chunks at a time (chunk order shuffled)."""
        ce = self.dataset.chunk_epochs
        chunk_of = self.indices // ce
        chunks = np.unique(chunk_of)
        if self.shuffle:
            chunks = rng.permutation(chunks)
        for i in range(0, len(chunks), self.buffer_chunks):
            yield np.sort(self.indices[np.isin(chunk_of, chunks[i:i + self.buffer_chunks])])
