"""Shared checks of the importers: errors, input/output paths, small option parsers.

Every error a user can fix is a :class:`ImportFormatError` (a ``ValueError``),
a ``FileNotFoundError`` or a ``FileExistsError`` whose message names the file,
the key or shape that is wrong, and what to do.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streams.errors import OutputExistsError

#: One mapped event: image id and label (or None).
EventTarget = tuple[str, "str | None"]


class ImportFormatError(ValueError):
    """A file does not have the layout an importer expects.

    The message names the file, the key or shape that is wrong, what was found
    and what was expected.
    """


class UnsafeFileError(ImportFormatError):
    """Loading the file would run arbitrary code (pickle) and was not allowed explicitly."""


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` if it is an existing file.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.
    what : str
        What the file is, for the message (e.g. ``"EEG-ImageNet .pth file"``).

    Raises
    ------
    FileNotFoundError
        The path does not exist or is a directory.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise FileNotFoundError(f"{what} {str(p)!r} is a directory; pass the file itself")
    return p


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` if it is an existing directory, else ``FileNotFoundError``."""
    p = Path(path)
    if not p.is_dir():
        state = "is a file, not a directory" if p.exists() else "does not exist"
        raise FileNotFoundError(f"{what} {str(p)!r} {state}; pass an existing directory")
    return p


def check_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output path unless ``overwrite`` (the writer replaces it then).

    Raises
    ------
    streams.errors.OutputExistsError
        ``out`` exists and ``overwrite`` is false (a ``FileExistsError``).
    """
    p = Path(out)
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"output {str(p)!r} already exists; choose a new path or pass overwrite=True (--overwrite)"
        )
    return p


def parse_time_slice(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """Parse ``"20:460"`` (or ``(20, 460)``) into ``(start, stop)``; ``None`` or ``":"`` keeps all.

    Raises
    ------
    ValueError
        Not two non-negative integers with ``start < stop``.
    """
    if text is None:
        return None
    if isinstance(text, str):
        if text.strip() in ("", ":", "all"):
            return None
        start_s, sep, stop_s = text.partition(":")
        try:
            if not sep:
                raise ValueError
            start, stop = int(start_s or 0), int(stop_s)
        except ValueError:
            raise ValueError(
                f"time slice {text!r} is not START:STOP in samples (e.g. 20:460), or ':' for all samples"
            ) from None
    else:
        if len(text) != 2:
            raise ValueError(f"time slice {text!r} must be (start, stop) in samples, e.g. (20, 460)")
        start, stop = int(text[0]), int(text[1])
    if start < 0 or stop <= start:
        raise ValueError(f"time slice {start}:{stop} must satisfy 0 <= start < stop (samples)")
    return start, stop


def read_names(path: str | os.PathLike, what: str) -> list[str]:
    """Read a list of names: a JSON list of strings, or one name per line.

    Used for channel names (``--channel-names FILE``).
    """
    p = require_file(path, what)
    text = p.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise ImportFormatError(f"{what} {str(p)!r} is not valid JSON: {e}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ImportFormatError(f"{what} {str(p)!r} must be a JSON list of strings")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ImportFormatError(f"{what} {str(p)!r} lists no names")
    return names


def read_mapping(path: str | os.PathLike, what: str) -> dict[str, str]:
    """Read ``key -> name``: a JSON object of strings, or a two-column CSV (header row optional)."""
    p = require_file(path, what)
    if p.suffix.lower() == ".json":
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ImportFormatError(f"{what} {str(p)!r} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ImportFormatError(f"{what} {str(p)!r} must be a JSON object {{key: name}}")
        return {str(k): str(v) for k, v in obj.items()}
    rows = list(csv.reader(p.read_text(encoding="utf-8").splitlines()))
    out = {}
    for i, row in enumerate(rows):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < 2:
            raise ImportFormatError(f"{what} {str(p)!r} line {i + 1}: expected 'key,name', got {row!r}")
        out[row[0].strip()] = row[1].strip()
    return out


# --------------------------------------------------------------------------- event maps
def load_event_map(path: str | os.PathLike) -> dict[str, EventTarget]:
    """Read an event map file (JSON or CSV) for :func:`offline.importers.import_raw`.

    JSON: an object whose keys are event codes or annotation descriptions and
    whose values are an image id (``"img0012"``), ``[image_id, label]`` or
    ``{"image_id": ..., "label": ...}``. CSV: a header row with the columns
    ``event`` and ``image_id`` and optionally ``label``.

    Returns
    -------
    dict
        ``event -> (image_id, label or None)``.
    """
    p = require_file(path, "event map")
    if p.suffix.lower() == ".csv":
        return normalize_event_map(_event_map_csv(p), source=str(p))
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImportFormatError(
            f"event map {str(p)!r} is neither a .csv file nor valid JSON ({e}); see docs/data.md"
        ) from None
    if not isinstance(obj, dict):
        raise ImportFormatError(f"event map {str(p)!r} must be a JSON object {{event: image_id}}, "
                                f"got {type(obj).__name__}")
    return normalize_event_map(obj, source=str(p))


def _event_map_csv(p: Path) -> dict[str, Any]:
    reader = csv.DictReader(p.read_text(encoding="utf-8").splitlines())
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "event" not in fields or "image_id" not in fields:
        raise ImportFormatError(
            f"event map {str(p)!r}: the CSV header must name the columns 'event' and 'image_id' "
            f"(and optionally 'label'); got {fields}"
        )
    out: dict[str, Any] = {}
    for row in reader:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row.get("event"):
            continue
        out[row["event"]] = {"image_id": row["image_id"], "label": row.get("label") or None}
    return out


def normalize_event_map(mapping: Mapping[Any, Any], source: str = "event_map") -> dict[str, EventTarget]:
    """Check an event map and bring every entry to ``(image_id, label or None)``.

    Keys are converted to ``str`` (``1`` and ``"1"`` are the same event code).

    Raises
    ------
    ImportFormatError
        An entry is not an image id, ``[image_id, label]`` or a dict with
        ``image_id`` (and ``label``), or contains ``"/"``.
    """
    from streams.synthetic.markers import format_marker  # lazy: the package pulls in the simulators

    if not isinstance(mapping, Mapping):
        raise TypeError(f"{source} must be a dict {{event: image_id}}, got {type(mapping).__name__}")
    out: dict[str, EventTarget] = {}
    for key, value in mapping.items():
        if isinstance(value, str):
            image_id, label = value, None
        elif isinstance(value, (list, tuple)) and len(value) in (1, 2):
            image_id, label = value[0], (value[1] if len(value) == 2 else None)
        elif isinstance(value, Mapping) and "image_id" in value:
            image_id, label = value["image_id"], value.get("label")
        else:
            raise ImportFormatError(
                f"{source}: entry {key!r} -> {value!r} must be an image id, [image_id, label] or "
                "{'image_id': ..., 'label': ...}"
            )
        image_id = str(image_id)
        label = None if label in (None, "") else str(label)
        try:
            format_marker(image_id, label)
        except (TypeError, ValueError) as e:
            raise ImportFormatError(f"{source}: entry {key!r}: {e}") from None
        out[_event_key(key)] = (image_id, label)
    if not out:
        raise ImportFormatError(f"{source} is empty; map at least one event to an image id")
    return out


def _event_key(key: Any) -> str:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return str(int(key))
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key).strip()


def first_few(items: Sequence[Any], n: int = 5) -> str:
    """``"a, b, c"`` or ``"a, b, c, ... (12 in all)"`` for messages."""
    items = [str(i) for i in items]
    if len(items) <= n:
        return ", ".join(items)
    return ", ".join(items[:n]) + f", ... ({len(items)} in all)"


# --------------------------------------------------------------------------- dataset helpers
def codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes ``0..k-1`` for ``values`` (sorted unique order) and their names as strings."""
    uniq, inverse = np.unique(np.asarray(values), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), [str(u) for u in uniq.tolist()]


def store_splits(out: os.PathLike, specs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Add splits to a written epoch dataset.

    Parameters
    ----------
    out : path
        The dataset.
    specs : dict
        ``name -> {"parts": {part: indices}, "kind": str, "allow_leak": bool, "meta": dict}``.
        Splits with ``allow_leak`` (published ones) are stored and recorded as
        leaking; the others must be clean (the epochs helper refuses leaks).

    Returns
    -------
    dict
        ``name -> leak reasons`` (empty list for a clean split).
    """
    from offline.data.epochs import EpochDataset

    ds = EpochDataset.open(out)
    leaks = {}
    for name, spec in specs.items():
        info = ds.add_split(name, spec["parts"], kind=spec.get("kind", "custom"),
                            allow_leak=bool(spec.get("allow_leak", False)), meta=spec.get("meta"))
        leaks[name] = list(info.leaks)
    return leaks


def epoch_table(labels: np.ndarray, subject: np.ndarray, session: np.ndarray, block: np.ndarray,
                class_names: Sequence[str], window_seconds: float, run: np.ndarray | None = None) -> Any:
    """An :class:`offline.data.epochs.EpochTable` (metadata only) for the split builders, before writing."""
    from offline.data.epochs import EpochTable

    as_int = [np.asarray(v, dtype=np.int64) for v in (labels, subject, session, block)]
    return EpochTable(labels=as_int[0], subject=as_int[1], session=as_int[2], block=as_int[3],
                      run=None if run is None else np.asarray(run, dtype=np.int64), marker_time=None,
                      class_names=list(class_names), window_seconds=float(window_seconds))
