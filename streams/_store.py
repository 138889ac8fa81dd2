"""Helpers shared by the Zarr writers (``streams.session`` and ``offline.data.epochs``).

One definition each of: JSON-safe attribute values (:func:`jsonable`), the creation/closing
time stamp (:func:`now`), the ``writer`` attribute (:func:`writer_version`) and the
``overwrite=True`` deletion guard (:func:`remove_existing`).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from streams.errors import OutputExistsError

__all__ = ["is_zarr_store", "jsonable", "now", "remove_existing", "writer_version"]

#: The root metadata file of a Zarr v3 store: the only format the writers produce.
ZARR_V3_ROOT = "zarr.json"


def writer_version() -> str:
    """``"bci-runtime <version>"`` (or ``"bci-runtime (not installed)"``), the ``writer`` attribute."""
    try:
        return f"bci-runtime {version('bci-runtime')}"
    except PackageNotFoundError:
        return "bci-runtime (not installed)"


def now() -> str:
    """The current UTC time, ISO 8601 to the second (``created`` and ``closed`` attributes)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def store_header(schema: str, schema_version: int) -> dict[str, Any]:
    """The attributes every store this project writes starts with (a new, not yet complete store).

    ``schema`` and ``schema_version`` name the format; ``created`` (UTC), ``writer`` (this package
    and its version) and ``zarr_version`` say who wrote it and when; ``complete`` is ``False`` until
    the writer closes the store cleanly.
    """
    return {"schema": schema, "schema_version": schema_version, "created": now(), "writer": writer_version(),
            "zarr_version": zarr.__version__, "complete": False}


def jsonable(value: Any, where: str | None = None) -> Any:
    """``value`` as plain JSON types, for a Zarr attribute or a JSON record.

    numpy scalars and arrays become Python numbers and lists, tuples become lists, paths
    become strings, mappings become dicts with ``str`` keys, and non-finite floats become
    ``None``.

    Parameters
    ----------
    value : object
        The value to convert.
    where : str or None
        What the value is, for the message (e.g. ``"gap"`` or ``"attribute 'note'"``): anything
        else is refused. ``None`` (records and reports) writes anything else as ``str(value)``.

    Raises
    ------
    TypeError
        ``where`` is given and ``value`` holds something that is not str, int, float, bool, None, a sequence or a mapping.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, where) for k, v in value.items()}
    if where is None:
        return str(value)
    raise TypeError(f"{where}: value {value!r} of type {type(value).__name__} cannot be stored as JSON (a Zarr "
                    "attribute); use str, int, float, bool, None, lists or dicts of those")


def is_zarr_store(path: Path) -> bool:
    """True if ``path`` is a directory holding a Zarr v3 root (a ``zarr.json`` *file*).

    Zarr v2 markers (``.zgroup``, ``.zarray``) do not count: every store this project writes
    is Zarr v3, so a v2 directory is someone else's data, never ours to delete.
    """
    return path.is_dir() and (path / ZARR_V3_ROOT).is_file()


def remove_existing(path: Path) -> None:
    """Delete ``path`` for ``overwrite=True``, refusing a non-empty directory that is not a Zarr v3 store.

    A file or a symlink is unlinked; an empty directory or a Zarr v3 store (:func:`is_zarr_store`)
    is removed with its contents.

    Raises
    ------
    OutputExistsError
        ``path`` is a non-empty directory without a ``zarr.json`` file.
    """
    if path.is_dir() and not path.is_symlink():
        if not is_zarr_store(path) and any(path.iterdir()):
            raise OutputExistsError(
                f"{str(path)!r} is a non-empty directory that is not a Zarr store; refusing to delete it "
                "even with overwrite=True. Choose another output path."
            )
        shutil.rmtree(path)
    else:
        path.unlink()
