"""MNE round trips of epoch datasets: :class:`mne.EpochsArray` out, any :class:`mne.Epochs` in.

:func:`to_mne_epochs` turns an epoch dataset (:mod:`offline.data.epochs`) into an
:class:`mne.EpochsArray`:

- ``data`` as stored (float32 → float64, exact), ``sfreq``, channel names and types
  (types mne does not know, e.g. ``fmri``, become ``misc``; the original ones are kept in
  the description), ``tmin`` = the window offset of the dataset (``attrs["window"]["offset"]``,
  0 when the dataset does not record one);
- events: ``events[:, 0]`` = epoch index × ``n_times`` (mne's convention for epochs that are
  not cut from one raw recording; the real onset is the metadata column ``marker_time``),
  ``events[:, 2]`` = label index + 1 with ``event_id = {class_name: code}``
  (``event_by="label"``), or image row + 1 with ``event_id = {"class/image_id": code}``
  (``event_by="image"``: ``epochs["class"]`` still selects a class, mne's ``/`` tags);
- metadata (a :class:`pandas.DataFrame`, one row per epoch, see :data:`METADATA_COLUMNS`);
- ``info["description"]``: ``"bci-epochs " + JSON`` with what an epoch dataset holds and
  mne has no place for (class order, modality, channel types, window, preprocessing, split
  kinds, subject/session names, the source dataset's path and fingerprint).

:func:`from_mne_epochs` writes an epoch dataset through :func:`write_epoch_dataset` from
any :class:`mne.Epochs` (or an ``-epo.fif`` file, :func:`read_epochs_file`): labels from
the metadata column ``label``, else from the event names; image ids from the metadata
column ``image_id``, else the event name's part after the last ``/``, else the event name.
The image table (pixels, captions) has no place in a FIF file and is not carried; pass
``images=`` to attach one.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streams._checks import check_bool, check_type, check_value, ensure_path
from offline.data.epochs import (
    DatasetFormatError,
    EpochArrays,
    EpochDataset,
    EpochMetadata,
    ImageTable,
    write_epoch_dataset,
)

__all__ = [
    "DESCRIPTION_PREFIX",
    "FIF_SUFFIXES",
    "METADATA_COLUMNS",
    "MneImport",
    "check_fif_name",
    "describe_fif",
    "from_mne_epochs",
    "import_mne_epochs",
    "read_epochs_file",
    "save_epochs_fif",
    "to_mne_epochs",
    "write_epochs_fif",
]

#: ``info["description"]`` of epochs written by :func:`to_mne_epochs` starts with this.
DESCRIPTION_PREFIX = "bci-epochs "
#: File name endings mne accepts for epochs without a naming warning.
FIF_SUFFIXES = ("-epo.fif", "_epo.fif", "-epo.fif.gz", "_epo.fif.gz")
#: Metadata columns written by :func:`to_mne_epochs` (``run``, ``marker_time``, the names and
#: ``split_<name>`` only when the dataset holds them) and read back by :func:`from_mne_epochs`.
METADATA_COLUMNS = ("image_id", "label", "label_index", "subject", "subject_name", "session", "session_name",
                    "block", "run", "marker_time", "split_<name>")
_SPLIT_PREFIX = "split_"
_EVENT_BY = ("label", "image")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("mne epochs metadata need pandas, a dependency of bci-runtime: pip install pandas") from None
    return pandas


def _mne_types(ch_types: list[str]) -> list[str]:
    import mne

    known = set(mne.io.get_channel_type_constants())
    return [t if t in known else "misc" for t in ch_types]


# --------------------------------------------------------------------------- dataset -> mne
def _selection(ds: EpochDataset, split: str | None, part: str | None) -> np.ndarray:
    if split is None:
        if part is not None:
            raise ValueError(f"part={part!r} needs split=NAME (the stored split it is a part of)")
        return np.arange(ds.n_epochs)
    check_type("split", split, str)
    if split not in ds.splits:
        raise ValueError(f"split={split!r} is not stored in {str(ds.path)!r}; stored splits: "
                         f"{sorted(ds.splits) or 'none'}")
    parts = ds.split(split)
    if part is None:
        return np.unique(np.concatenate(list(parts.values()))) if parts else np.arange(0)
    check_value("part", part, tuple(parts))
    return parts[part]


def _metadata(ds: EpochDataset, idx: np.ndarray) -> Any:
    pd = _pandas()
    cols: dict[str, Any] = {
        "image_id": [ds.image_ids[i] for i in idx],
        "label": [ds.class_names[ds.labels[i]] for i in idx],
        "label_index": ds.labels[idx],
        "subject": ds.subject[idx],
    }
    if ds.subject_names:
        cols["subject_name"] = [ds.subject_names[c] for c in ds.subject[idx]]
    cols["session"] = ds.session[idx]
    if ds.session_names:
        cols["session_name"] = [ds.session_names[c] for c in ds.session[idx]]
    cols["block"] = ds.block[idx]
    if ds.run is not None:
        cols["run"] = ds.run[idx]
    if ds.marker_time is not None:
        cols["marker_time"] = ds.marker_time[idx]
    for name, parts in sorted(ds.splits.items()):
        where = np.full(ds.n_epochs, "", dtype=object)
        for p, members in parts.items():
            where[members] = p
        cols[_SPLIT_PREFIX + name] = where[idx].tolist()
    return pd.DataFrame(cols)


def _events(ds: EpochDataset, idx: np.ndarray, event_by: str) -> tuple[np.ndarray, dict[str, int]]:
    if event_by == "label":
        codes = ds.labels[idx] + 1
        event_id = {name: i + 1 for i, name in enumerate(ds.class_names) if i + 1 in set(codes.tolist())}
    else:
        images = sorted({ds.image_ids[i] for i in idx})
        row = {image_id: k for k, image_id in enumerate(images)}
        codes = np.array([row[ds.image_ids[i]] + 1 for i in idx], dtype=np.int64)
        event_id = {}
        for i in idx:
            event_id[f"{ds.class_names[ds.labels[i]]}/{ds.image_ids[i]}"] = row[ds.image_ids[i]] + 1
        if len(event_id) != len(images):
            raise ValueError(f"event_by='image': an image id of {str(ds.path)!r} has epochs of two labels; "
                             "use event_by='label'")
        event_id = dict(sorted(event_id.items(), key=lambda kv: kv[1]))
    events = np.column_stack([np.arange(len(idx), dtype=np.int64) * ds.n_times,
                              np.zeros(len(idx), dtype=np.int64), codes.astype(np.int64)])
    return events, event_id


def _description(ds: EpochDataset, event_by: str) -> str:
    record = {
        "schema": "bci-epochs",
        "class_names": ds.class_names,
        "modality": ds.modality,
        "ch_types": ds.ch_types,
        "window": ds.attrs.get("window"),
        "preprocessing": ds.preprocessing,
        "split_kinds": {name: ds.split_info(name).kind for name in sorted(ds.splits)},
        "subject_names": ds.subject_names,
        "session_names": ds.session_names,
        "event_by": event_by,
        "dataset": str(ds.path),
        "fingerprint": ds.fingerprint(),
    }
    return DESCRIPTION_PREFIX + json.dumps(record)


def to_mne_epochs(dataset: EpochDataset | str | os.PathLike, split: str | None = None, part: str | None = None,
                  *, event_by: str = "label") -> Any:
    """An epoch dataset (or some of its epochs) as an :class:`mne.EpochsArray` with events and metadata.

    Parameters
    ----------
    dataset : EpochDataset or path
        The epoch dataset (opened when a path is given).
    split : str, optional
        Keep only the epochs of this stored split (all of its parts, or ``part``) [all epochs].
    part : str, optional
        With ``split``: keep only this part (e.g. ``"test"``).
    event_by : {'label', 'image'}
        Event codes per class (``label index + 1``) or per image (``image row + 1``, names
        ``"class/image_id"``).

    Returns
    -------
    mne.EpochsArray
        Data exact (float32 stored, float64 in mne), ``tmin`` the window offset, metadata
        columns :data:`METADATA_COLUMNS` (a ``split_<name>`` column per stored split holds
        each epoch's part, ``""`` for none).

    Raises
    ------
    ValueError
        Unknown split or part, ``event_by`` not one of ``label``/``image``, an empty selection.
    ImportError
        pandas is not installed (mne's metadata need it).
    """
    import mne

    ds = dataset if isinstance(dataset, EpochDataset) else EpochDataset.open(ensure_path("dataset", dataset, must_exist=True))
    check_value("event_by", event_by, _EVENT_BY)
    idx = _selection(ds, split, part)
    if not len(idx):
        raise ValueError(f"split={split!r} part={part!r} of {str(ds.path)!r} holds no epochs; nothing to convert")
    window = ds.attrs.get("window") or {}
    tmin = float(window.get("offset", 0.0) or 0.0)
    info = mne.create_info(list(ds.ch_names), ds.sfreq, _mne_types(list(ds.ch_types or [ds.modality] * ds.n_channels)))
    info["description"] = _description(ds, event_by)
    events, event_id = _events(ds, idx, event_by)
    data = ds.get_batch(idx).astype(np.float64)
    return mne.EpochsArray(data, info, events=events, tmin=tmin, event_id=event_id, metadata=_metadata(ds, idx),
                           verbose="error")


def check_fif_name(path: str | os.PathLike, what: str = "fif file") -> Path:
    """``path`` as a Path when it ends with an mne epochs suffix (``-epo.fif``, ...); else a ValueError."""
    p = ensure_path(what, path)
    if not p.name.endswith(FIF_SUFFIXES):
        raise ValueError(f"{what} {str(p)!r} must end with {' or '.join(FIF_SUFFIXES)} (mne's naming rule for "
                         f"epochs), e.g. {p.stem.removesuffix('.fif')}-epo.fif")
    return p


def save_epochs_fif(epochs: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save mne epochs as ``path`` (checked by :func:`check_fif_name`); refuses to replace a file unless ``overwrite``."""
    p = check_fif_name(path)
    check_bool("overwrite", overwrite)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{str(p)!r} already exists; choose a new file or pass overwrite=True (--overwrite)")
    epochs.save(p, overwrite=overwrite, verbose="error")
    return p


def write_epochs_fif(dataset: EpochDataset | str | os.PathLike, path: str | os.PathLike, *,
                     split: str | None = None, part: str | None = None, event_by: str = "label",
                     overwrite: bool = False) -> Any:
    """:func:`to_mne_epochs` then :func:`save_epochs_fif` (``bci epochs --to-fif``, ``bci dataset to-fif``).

    The file name is checked before any conversion. Returns the :class:`mne.EpochsArray` written.
    """
    p = check_fif_name(path)
    check_bool("overwrite", overwrite)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{str(p)!r} already exists; choose a new file or pass overwrite=True (--overwrite)")
    epochs = to_mne_epochs(dataset, split, part, event_by=event_by)
    save_epochs_fif(epochs, p, overwrite=overwrite)
    return epochs


def describe_fif(epochs: Any, path: str | os.PathLike) -> str:
    """One line about epochs written to ``path``: count, event ids, metadata columns."""
    columns = ", ".join(map(str, epochs.metadata.columns)) if epochs.metadata is not None else "none"
    return (f"wrote mne epochs {path}: {len(epochs)} epochs x {len(epochs.ch_names)} channels x {len(epochs.times)} "
            f"samples, {len(epochs.event_id)} event ids; metadata columns: {columns}")


def read_epochs_file(path: str | os.PathLike) -> Any:
    """Read an mne epochs ``.fif`` (any name); a clear ValueError when the file holds no epochs."""
    import mne

    p = ensure_path("epochs file", path, must_exist=True, kind="file")
    try:
        with warnings.catch_warnings():  # a name without -epo.fif is accepted here: we read what we are given
            warnings.filterwarnings("ignore", message=".*does not conform to MNE naming conventions.*")
            return mne.read_epochs(p, preload=True, verbose="error")
    except (ValueError, OSError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{str(p)!r} is not an mne epochs file ({type(exc).__name__}: {exc}); give a file "
                         "written by mne.Epochs.save (-epo.fif); raw recordings go through 'bci import raw'") from None


# --------------------------------------------------------------------------- mne -> dataset
@dataclass(frozen=True)
class MneImport:
    """What :func:`from_mne_epochs` wrote and what it had to make up.

    Attributes
    ----------
    path : Path
        The epoch dataset.
    n_epochs : int
    labels_from, image_ids_from : str
        ``"metadata"``, ``"event names"``.
    defaulted : tuple of str
        Per-epoch fields the epochs did not carry (set to 0: ``subject``, ``session``, ``block``).
    splits : tuple of str
        Splits restored from ``split_<name>`` metadata columns.
    """

    path: Path
    n_epochs: int
    labels_from: str
    image_ids_from: str
    defaulted: tuple[str, ...]
    splits: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"wrote epoch dataset {self.path}: {self.n_epochs} epochs; labels from {self.labels_from}, "
                 f"image ids from {self.image_ids_from}"]
        if self.defaulted:
            lines.append(f"  not in the epochs, set to 0 for every epoch: {', '.join(self.defaulted)}")
        lines.append(f"  splits restored: {', '.join(self.splits) if self.splits else 'none'}")
        return "\n".join(lines)


def _carried(epochs: Any) -> dict[str, Any]:
    """The JSON record :func:`to_mne_epochs` put in ``info["description"]`` (empty for other epochs)."""
    text = epochs.info.get("description") or ""
    if not text.startswith(DESCRIPTION_PREFIX):
        return {}
    try:
        record = json.loads(text[len(DESCRIPTION_PREFIX):])
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def _event_names(epochs: Any) -> list[str]:
    name_of = {int(code): str(name) for name, code in epochs.event_id.items()}
    missing = sorted({int(c) for c in epochs.events[:, 2]} - set(name_of))
    if missing:
        raise DatasetFormatError(f"event codes {missing[:5]} of the epochs have no name in event_id; "
                                 "give every code a name")
    return [name_of[int(c)] for c in epochs.events[:, 2]]


def _labels(epochs: Any, meta: Any, carried: Mapping[str, Any], names: list[str]) -> tuple[list[str], str]:
    if meta is not None and "label" in meta.columns:
        return [str(v) for v in meta["label"].tolist()], "metadata"
    if all(name == str(code) for name, code in epochs.event_id.items()):
        raise DatasetFormatError(
            f"the epochs carry no labels: no metadata column 'label' and event_id {dict(epochs.event_id)} holds "
            "only mne's default names (the codes themselves); build the epochs with event_id={'class': code, ...} "
            "or metadata with a 'label' column (and 'image_id')")
    if carried.get("event_by") == "image" or any("/" in n for n in names):
        return [n.split("/", 1)[0] for n in names], "event names"
    return names, "event names"


def _image_ids(meta: Any, names: list[str]) -> tuple[list[str], str]:
    if meta is not None and "image_id" in meta.columns:
        return [str(v) for v in meta["image_id"].tolist()], "metadata"
    return [n.rsplit("/", 1)[-1] for n in names], "event names"


def _int_column(meta: Any, name: str, n: int) -> np.ndarray | None:
    if meta is None or name not in meta.columns:
        return None
    values = np.asarray(meta[name].to_numpy())
    if values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.all(values == np.round(values))):
        raise DatasetFormatError(f"metadata column {name!r} has dtype {values.dtype}; expected integers "
                                 "(one code per epoch)")
    return values.astype(np.int64)


def _class_names(labels: list[str], carried: Mapping[str, Any], epochs: Any) -> list[str]:
    stored = carried.get("class_names")
    if isinstance(stored, list) and set(labels) <= set(stored):
        return [str(c) for c in stored]
    order = [n.split("/", 1)[0] for n in sorted(epochs.event_id, key=lambda k: epochs.event_id[k])]
    known = list(dict.fromkeys(c for c in order if c in set(labels)))
    return known + sorted(set(labels) - set(known))


def _splits(meta: Any, carried: Mapping[str, Any]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    splits: dict[str, dict[str, np.ndarray]] = {}
    kinds: dict[str, str] = {}
    if meta is None:
        return splits, kinds
    stored_kinds = carried.get("split_kinds") or {}
    for column in meta.columns:
        if not str(column).startswith(_SPLIT_PREFIX):
            continue
        name = str(column)[len(_SPLIT_PREFIX):]
        values = np.array(["" if v is None else str(v) for v in meta[column].tolist()], dtype=object)
        splits[name] = {p: np.flatnonzero(values == p) for p in dict.fromkeys(values.tolist()) if p}
        kinds[name] = str(stored_kinds.get(name, "custom"))
    return splits, kinds


def from_mne_epochs(epochs: Any, out: str | os.PathLike, *, images: ImageTable | None = None,
                    overwrite: bool = False, source: Mapping[str, Any] | None = None) -> MneImport:
    """Write any :class:`mne.Epochs` as an epoch dataset (the Zarr format, through its one writer).

    Parameters
    ----------
    epochs : mne.BaseEpochs
        Loaded or not (the data are read). Labels come from the metadata column ``label``,
        else from the event names (``"class/image"`` tags: the part before the first ``/``);
        image ids from the metadata column ``image_id``, else the event name after the last
        ``/``. Metadata columns ``subject``, ``session``, ``block``, ``run``, ``marker_time``
        and ``split_<name>`` (each epoch's part) are used when present; ``subject_name`` /
        ``session_name`` keep apart subjects (sessions) whose codes collide, as in epochs of
        several datasets joined with :func:`mne.concatenate_epochs`.
    out : path
        Dataset to create.
    images : ImageTable, optional
        An image table to store with the epochs (FIF files carry none).
    overwrite : bool
        Replace ``out``.
    source : dict, optional
        Provenance stored with the dataset (e.g. the file read).

    Returns
    -------
    MneImport

    Raises
    ------
    TypeError
        ``epochs`` is not mne epochs.
    DatasetFormatError
        No labels (neither a ``label`` column nor event names), non-integer code columns,
        event codes without a name.
    SplitLeakError
        A ``split_<name>`` column describes a leaking split.
    """
    import mne

    check_type("epochs", epochs, mne.BaseEpochs)
    check_bool("overwrite", overwrite)
    if images is not None:
        check_type("images", images, ImageTable)
    carried = _carried(epochs)
    meta = epochs.metadata
    n = len(epochs.events)
    names = _event_names(epochs)
    labels, labels_from = _labels(epochs, meta, carried, names)
    image_ids, image_ids_from = _image_ids(meta, names)
    class_names = _class_names(labels, carried, epochs)
    codes = {c: i for i, c in enumerate(class_names)}
    per_epoch = {k: _int_column(meta, k, n) for k in ("subject", "session", "block", "run")}
    defaulted = tuple(k for k in ("subject", "session", "block") if per_epoch[k] is None)
    marker_time = None
    if meta is not None and "marker_time" in meta.columns:
        marker_time = np.asarray(meta["marker_time"].to_numpy(), dtype=np.float64)
    splits, kinds = _splits(meta, carried)
    ch_types = carried.get("ch_types")
    if not (isinstance(ch_types, list) and len(ch_types) == len(epochs.ch_names)):
        ch_types = list(epochs.get_channel_types())
    window = carried.get("window") or {"offset": float(epochs.tmin), "n_times": len(epochs.times)}
    subject, subject_names = _named_codes(meta, "subject", _or_zero(per_epoch["subject"], n), carried)
    session, session_names = _named_codes(meta, "session", _or_zero(per_epoch["session"], n), carried)
    arrays = EpochArrays(
        data=epochs.get_data(copy=False).astype(np.float32), labels=np.array([codes[v] for v in labels]),
        image_ids=image_ids, subject=subject, session=session,
        block=_or_zero(per_epoch["block"], n), run=per_epoch["run"], marker_time=marker_time,
    )
    provenance = {"importer": "offline.data.mne_epochs.from_mne_epochs", "mne_version": mne.__version__,
                  "labels_from": labels_from, "image_ids_from": image_ids_from, "defaulted": list(defaulted),
                  "from_dataset": carried.get("dataset"), "from_fingerprint": carried.get("fingerprint"),
                  **dict(source or {})}
    metadata = EpochMetadata(
        sfreq=float(epochs.info["sfreq"]), ch_names=list(epochs.ch_names), class_names=class_names,
        ch_types=ch_types, modality=str(carried.get("modality") or "eeg"), source=provenance,
        preprocessing=carried.get("preprocessing") if carried else {
            "from_mne_info": {"highpass": epochs.info["highpass"], "lowpass": epochs.info["lowpass"]}},
        subject_names=subject_names, session_names=session_names,
        attrs={"window": window},
    )
    path = write_epoch_dataset(out, arrays, metadata, images=images, splits=splits or None,
                               split_kinds=kinds or None, overwrite=overwrite)
    return MneImport(path=path, n_epochs=n, labels_from=labels_from, image_ids_from=image_ids_from,
                     defaulted=defaulted, splits=tuple(splits))


def _or_zero(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64) if values is None else values


def _named_codes(meta: Any, key: str, codes: np.ndarray, carried: Mapping[str, Any]
                 ) -> tuple[np.ndarray, list[str] | None]:
    """Subject or session codes and their names, keeping apart what the ``<key>_name`` column names apart.

    Epochs of several datasets joined with :func:`mne.concatenate_epochs` carry the first
    one's description (its names) and codes that restart at 0 in each dataset: two subjects
    ``"7"`` and ``"8"`` would both be code 0 named ``"7"``. When the per-epoch names of the
    metadata column disagree with the carried names, the codes are rebuilt from the column
    (names in order of first appearance); otherwise the carried codes and names are kept.
    """
    names = _names(carried.get(f"{key}_names"), codes)
    column = f"{key}_name"
    if meta is None or column not in meta.columns:
        return codes, names
    per_epoch = [str(v) for v in meta[column].tolist()]
    if names is not None and all(names[c] == v for c, v in zip(codes.tolist(), per_epoch)):
        return codes, names
    order = list(dict.fromkeys(per_epoch))
    index = {v: i for i, v in enumerate(order)}
    return np.array([index[v] for v in per_epoch], dtype=np.int64), order


def _names(names: Any, codes: np.ndarray) -> list[str] | None:
    """Carried subject/session names when they still cover the codes (else None: codes only)."""
    if isinstance(names, list) and codes.size and 0 <= codes.min() and codes.max() < len(names):
        return [str(v) for v in names]
    return None


def import_mne_epochs(path: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> MneImport:
    """``bci import mne-epochs FILE OUT``: read an mne epochs ``.fif`` and write it as an epoch dataset."""
    epochs = read_epochs_file(path)
    return from_mne_epochs(epochs, out, overwrite=overwrite, source={"file": str(Path(path))})
