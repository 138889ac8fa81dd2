"""streams._store: the one owner of the Zarr writers' JSON and overwrite helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import zarr

from streams._store import is_zarr_store, jsonable, now, remove_existing, writer_version
from streams.errors import OutputExistsError


def test_jsonable_converts_numpy_tuples_paths_mappings_and_non_finite() -> None:
    value = {"a": np.float32(1.5), 2: (np.int64(3), [np.arange(2)]), "p": Path("x/y"), "nan": math.nan,
             "inf": np.float64(np.inf), "m": {"k": np.bool_(True)}}
    assert jsonable(value, "here") == {"a": 1.5, "2": [3, [[0, 1]]], "p": "x/y", "nan": None, "inf": None,
                                       "m": {"k": True}}


def test_jsonable_refuses_other_objects_naming_where() -> None:
    with pytest.raises(TypeError, match=r"gap: value <object.*cannot be stored"):
        jsonable({"x": object()}, "gap")


def test_jsonable_without_where_writes_other_objects_as_text() -> None:
    """Records and reports (training state, evaluation reports) keep what they cannot type as its str()."""
    import torch

    out = jsonable({"device": torch.device("cpu"), "x": [np.float32(np.nan), np.int16(4)], "t": (True,)})
    assert out == {"device": "cpu", "x": [None, 4], "t": [True]}


def test_now_and_writer_version() -> None:
    assert now().endswith("+00:00") and "T" in now()
    assert writer_version().startswith("bci-runtime ")


def test_only_a_zarr_v3_root_counts_as_a_store(tmp_path: Path) -> None:
    v3 = tmp_path / "v3.zarr"
    zarr.create_group(str(v3))
    assert is_zarr_store(v3)
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / ".zgroup").write_text('{"zarr_format": 2}')
    assert not is_zarr_store(v2)  # the writers only write v3: a v2 directory is not ours
    fake = tmp_path / "fake"
    (fake / "zarr.json").mkdir(parents=True)  # a directory named zarr.json is no Zarr root
    assert not is_zarr_store(fake)
    assert not is_zarr_store(tmp_path / "missing")


def test_remove_existing_deletes_stores_files_and_empty_dirs_but_refuses_foreign_dirs(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    zarr.create_group(str(store)).create_array("x", shape=(2,), dtype="f4")
    remove_existing(store)
    assert not store.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    remove_existing(empty)
    assert not empty.exists()
    f = tmp_path / "f.txt"
    f.write_text("x")
    remove_existing(f)
    assert not f.exists()
    for name, marker in (("v2", ".zgroup"), ("fake", "zarr.json/")):
        d = tmp_path / name
        d.mkdir()
        if marker.endswith("/"):
            (d / marker.rstrip("/")).mkdir()
        else:
            (d / marker).write_text("{}")
        with pytest.raises(OutputExistsError, match="not a Zarr store; refusing to delete"):
            remove_existing(d)
        assert d.exists()
