"""Leak-free splits of epoch datasets: builders, the leak checker, add_split refusals, the CLI."""

from __future__ import annotations

import argparse
import json
import logging
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from bci.cli.main import _add_parser
from offline.cli.dataset import register
from offline.data.epochs import EpochArrays, EpochDataset, EpochMetadata, SplitLeakError, write_epoch_dataset
from offline.data.splits import (
    analyse_split,
    block_design,
    block_split,
    check_splits,
    session_split,
    subject_split,
    zero_shot_split,
)

CLASSES = [f"class{i}" for i in range(6)]
PER_BLOCK = 4


def _layout(design: str, n_subjects: int = 2, n_sessions: int = 2, n_blocks: int = 6) -> dict:
    """Epoch metadata of a recording: subjects x sessions x blocks x PER_BLOCK epochs, one marker per second."""
    rows = []
    for subj in range(n_subjects):
        for sess in range(n_sessions):
            t = 0.0
            for b in range(n_blocks):
                for j in range(PER_BLOCK):
                    label = b % len(CLASSES) if design == "block" else (b + j) % len(CLASSES)
                    rows.append((subj, sess, b, b // 3, label, t))
                    t += 1.0
                t += 5.0
    subject, session, block, run, labels, times = (np.array(c) for c in zip(*rows))
    return dict(subject=subject, session=session, block=block, run=run, labels=labels, marker_time=times.astype(float))


def _dataset(path: Path, design: str = "block", **layout_kw) -> EpochDataset:
    meta = _layout(design, **layout_kw)
    n = len(meta["labels"])
    data = np.random.default_rng(0).standard_normal((n, 2, 20)).astype(np.float32)
    write_epoch_dataset(path, EpochArrays(data, image_ids=[f"i{k}" for k in range(n)], **meta),
                        EpochMetadata(sfreq=100.0, ch_names=["a", "b"], class_names=CLASSES), chunk_epochs=16)
    return EpochDataset.open(path)


@pytest.fixture
def block_ds(tmp_path: Path) -> EpochDataset:
    return _dataset(tmp_path / "block.zarr", "block")


@pytest.fixture
def rapid_ds(tmp_path: Path) -> EpochDataset:
    return _dataset(tmp_path / "rapid.zarr", "rapid")


def _blocks(ds: EpochDataset, idx: np.ndarray) -> set[tuple[int, int, int]]:
    return set(zip(ds.subject[idx].tolist(), ds.session[idx].tolist(), ds.block[idx].tolist()))


def _assert_partition(ds: EpochDataset, parts: dict[str, np.ndarray]) -> None:
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(ds.n_epochs))
    for a, b in combinations(parts, 2):
        assert not _blocks(ds, parts[a]) & _blocks(ds, parts[b]), f"{a} and {b} share a block"


# --------------------------------------------------------------------------- builders
@pytest.mark.parametrize("design", ["block", "rapid"])
def test_block_split_never_shares_blocks_and_trains_every_class(tmp_path: Path, design: str) -> None:
    ds = _dataset(tmp_path / "ds.zarr", design)
    n_blocks = len(_blocks(ds, np.arange(ds.n_epochs)))
    for seed in range(8):
        parts = block_split(ds, val=0.1, test=0.2, seed=seed)
        _assert_partition(ds, parts)
        assert set(ds.labels[parts["train"]]) == set(range(len(CLASSES)))
        assert len(_blocks(ds, parts["test"])) == round(0.2 * n_blocks)
        assert len(_blocks(ds, parts["val"])) == round(0.1 * n_blocks)
        assert not analyse_split(ds, parts, kind="block").leaks
    a, b = block_split(ds, seed=1), block_split(ds, seed=1)
    assert all(np.array_equal(a[p], b[p]) for p in a)
    assert not np.array_equal(block_split(ds, seed=2)["test"], a["test"])


def test_block_split_refuses_when_no_block_can_be_held_out(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "one.zarr", "block", n_subjects=1, n_sessions=1, n_blocks=6)
    with pytest.raises(ValueError, match="cannot hold out any block for 'test': every stratum has a single block"):
        block_split(ds)
    with pytest.raises(ValueError, match=r"val=0\.5 \+ test=0\.5 must leave blocks for train"):
        block_split(ds, val=0.5, test=0.5)
    with pytest.raises(ValueError, match=r"test=1\.5 must be a fraction in \[0, 1\)"):
        block_split(ds, test=1.5)


def test_session_split_holds_out_whole_sessions(block_ds: EpochDataset) -> None:
    parts = session_split(block_ds, test=0.5, val=0.2, seed=3)
    _assert_partition(block_ds, parts)
    sessions = {p: set(zip(block_ds.subject[v].tolist(), block_ds.session[v].tolist())) for p, v in parts.items()}
    assert len(sessions["test"]) == 2 and not sessions["test"] & (sessions["train"] | sessions["val"])
    assert {s for s, _ in sessions["test"]} == {0, 1}  # stratified: one session of each subject
    assert not analyse_split(block_ds, parts, kind="session").leaks
    fixed = session_split(block_ds, test_sessions=[1], val=0.0)
    assert set(block_ds.session[fixed["test"]]) == {1} and len(fixed["val"]) == 0
    with pytest.raises(ValueError, match=r"test_sessions=\[0, 1\] must hold out some but not all sessions"):
        session_split(block_ds, test_sessions=[0, 1])


def test_subject_split_is_cross_subject(block_ds: EpochDataset) -> None:
    parts = subject_split(block_ds, seed=0)
    _assert_partition(block_ds, parts)
    assert len(set(block_ds.subject[parts["test"]])) == 1
    assert not set(block_ds.subject[parts["test"]]) & set(block_ds.subject[parts["train"]])
    assert not analyse_split(block_ds, parts, kind="subject").leaks
    fixed = subject_split(block_ds, test_subjects=[0])
    assert set(block_ds.subject[fixed["test"]]) == {0} and set(block_ds.subject[fixed["train"]]) == {1}


def test_subject_split_with_validation_subjects(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds.zarr", "rapid", n_subjects=5, n_sessions=1, n_blocks=3)
    parts = subject_split(ds, test=0.2, val=0.25, val_unit="subject", seed=1)
    subj = {p: set(ds.subject[v].tolist()) for p, v in parts.items()}
    assert len(subj["test"]) == 1 and len(subj["val"]) == 1 and len(subj["train"]) == 3
    assert not analyse_split(ds, parts, kind="subject").leaks


@pytest.mark.parametrize("design", ["block", "rapid"])
def test_zero_shot_split_keeps_held_out_classes_out_of_train_and_val(tmp_path: Path, design: str) -> None:
    ds = _dataset(tmp_path / "ds.zarr", design)
    for seed in range(5):
        parts = zero_shot_split(ds, n_held_out=2, seed=seed)
        held = set(ds.labels[parts["test"]].tolist())
        assert len(held) == 2
        assert not held & set(ds.labels[np.concatenate([parts["train"], parts["val"]])].tolist())
        assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(ds.n_epochs))
        assert not _blocks(ds, parts["train"]) & _blocks(ds, parts["val"])
        check = analyse_split(ds, parts, kind="zero_shot")
        assert not check.leaks
        assert any("allowed for a zero-shot split" in n for n in check.notes) == (design == "rapid")
    named = zero_shot_split(ds, held_out_classes=["class1", 4])
    assert set(ds.labels[named["test"]].tolist()) == {1, 4}


def test_zero_shot_split_validates_its_classes(block_ds: EpochDataset) -> None:
    with pytest.raises(ValueError, match="'zebra' is not a class name"):
        zero_shot_split(block_ds, held_out_classes=["zebra"])
    with pytest.raises(ValueError, match=r"n_held_out=6 must leave classes to train on \(6 classes present\)"):
        zero_shot_split(block_ds, n_held_out=6)
    with pytest.raises(TypeError, match="must be a list of class names or indices"):
        zero_shot_split(block_ds, held_out_classes="class1")


# --------------------------------------------------------------------------- checks
def test_check_splits_flags_a_random_epoch_split_as_leaking(block_ds: EpochDataset) -> None:
    perm = np.random.default_rng(0).permutation(block_ds.n_epochs)
    random_parts = {"train": perm[:70], "test": perm[70:]}
    block_ds.add_split("published", random_parts, allow_leak=True)
    block_ds.add_split("clean", block_split(block_ds, seed=0), kind="block")
    report = check_splits(EpochDataset.open(block_ds.path))
    assert report.leaking
    by_name = {c.name: c for c in report.splits}
    leaky = by_name["published"]
    assert leaky.leaking and leaky.stored_as_leaking
    assert leaky.shared["blocks"]["train/test"] > 0 and leaky.shared["runs"]["train/test"] > 0
    assert any("share" in text and "block(s)" in text for text in leaky.leaks)
    assert not by_name["clean"].leaking
    text = str(report)
    assert "LEAK: parts 'train' and 'test' share" in text and "result: 1 of 2 split(s) leak" in text
    json.dumps(report.to_dict())
    only = check_splits(block_ds, "clean")
    assert [c.name for c in only.splits] == ["clean"] and not only.leaking
    with pytest.raises(KeyError, match="no split 'nope'"):
        check_splits(block_ds, "nope")


def test_overlapping_windows_across_parts_are_a_leak(block_ds: EpochDataset) -> None:
    table = block_ds.table
    t = table.marker_time.copy()
    first_of_block1 = int(np.flatnonzero((block_ds.block == 1) & (block_ds.session == 0) & (block_ds.subject == 0))[0])
    t[first_of_block1] = t[first_of_block1 - 1] + 0.1  # 0.1 s after the last marker of block 0 (window 0.2 s)
    shifted = type(table)(**{**table.__dict__, "marker_time": t})
    parts = {"train": np.arange(first_of_block1), "test": np.arange(first_of_block1, block_ds.n_epochs)}
    check = analyse_split(shifted, parts, kind="block")
    assert check.adjacent == {"train/test": 1}
    assert any("overlapping windows" in text for text in check.leaks)
    assert not analyse_split(block_ds, parts, kind="block").leaks


def test_block_design_confound_is_reported(block_ds: EpochDataset, rapid_ds: EpochDataset) -> None:
    design = block_design(block_ds)
    assert design["block_design"] and design["n_single_class"] == design["n_multi"] == 24
    report = check_splits(block_ds)
    assert any("block design: 24 of 24 blocks show a single class" in w and "Li et al. 2021" in w
               for w in report.warnings)
    assert "-> block design" in str(report) and "no splits stored" in str(report)
    assert not block_design(rapid_ds)["block_design"] and not check_splits(rapid_ds).warnings


# --------------------------------------------------------------------------- add_split
def test_add_split_refuses_leaks_and_records_allowed_ones(block_ds: EpochDataset,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    n = block_ds.n_epochs
    with pytest.raises(SplitLeakError, match=r"split 'half' leaks: parts 'train' and 'test' share 1 block\(s\)"):
        block_ds.add_split("half", {"train": np.arange(0, 50), "test": np.arange(50, n)})
    with pytest.raises(SplitLeakError, match=r"parts 'train' and 'test' share 2 epoch\(s\)"):
        block_ds.add_split("dup", {"train": np.arange(0, 50), "test": np.arange(48, 50)})
    parts = block_split(block_ds, seed=0)
    with pytest.raises(SplitLeakError, match=r"share 2 session\(s\); a session split holds whole sessions out"):
        block_ds.add_split("sess", parts, kind="session")
    assert "half" not in block_ds.splits
    with caplog.at_level(logging.WARNING, logger="offline.data.epochs"):
        info = block_ds.add_split("half", {"train": np.arange(0, 50), "test": np.arange(50, n)}, allow_leak=True)
    assert info.leaking and "stored although it leaks" in caplog.text
    reopened = EpochDataset.open(block_ds.path)
    assert reopened.split_info("half").leaks == info.leaks
    assert reopened.attrs["splits"]["half"]["warning"].startswith("LEAKING split stored with allow_leak=True")
    np.testing.assert_array_equal(reopened.split("half")["test"], np.arange(50, n))


def test_add_split_validates_names_and_indices(block_ds: EpochDataset) -> None:
    parts = block_split(block_ds, seed=0)
    info = block_ds.add_split("block", parts, kind="block", meta={"seed": 0})
    assert info.sha256 == EpochDataset.open(block_ds.path).split_info("block").sha256
    with pytest.raises(ValueError, match="split 'block' already exists"):
        block_ds.add_split("block", parts, kind="block")
    block_ds.add_split("block", block_split(block_ds, seed=5), kind="block", overwrite=True)
    assert EpochDataset.open(block_ds.path).split_info("block").sha256 != info.sha256
    with pytest.raises(ValueError, match=r"part 'test' holds indices from 0 to 96; valid epochs are 0\.\.95"):
        block_ds.add_split("x", {"train": [1], "test": [0, 96]})
    with pytest.raises(ValueError, match=r"lists 1 epoch\(s\) more than once"):
        block_ds.add_split("x", {"train": [1, 1]})
    with pytest.raises(TypeError, match="epoch indices must be integers"):
        block_ds.add_split("x", {"train": [0.5]})
    with pytest.raises(ValueError, match="split name 'a b' must start with a letter or digit"):
        block_ds.add_split("a b", parts)
    with pytest.raises(ValueError, match="kind='random': choose one of block, session"):
        block_ds.add_split("x", parts, kind="random")
    with pytest.raises(KeyError, match=r"no split 'x'.*stored splits: \['block'\]"):
        block_ds.split("x")


def test_write_refuses_a_leaking_split_before_writing(tmp_path: Path) -> None:
    meta = _layout("block", n_subjects=1, n_sessions=1)
    n = len(meta["labels"])
    with pytest.raises(SplitLeakError, match="split 'random' leaks"):
        write_epoch_dataset(tmp_path / "ds.zarr", EpochArrays(np.zeros((n, 1, 4), np.float32), image_ids=["x"] * n,
                                                              **meta),
                            EpochMetadata(sfreq=10.0, ch_names=["a"], class_names=CLASSES),
                            splits={"random": {"train": np.arange(0, n, 2), "test": np.arange(1, n, 2)}})
    assert not (tmp_path / "ds.zarr").exists()
    write_epoch_dataset(tmp_path / "ok.zarr", EpochArrays(np.zeros((n, 1, 4), np.float32), image_ids=["x"] * n, **meta),
                        EpochMetadata(sfreq=10.0, ch_names=["a"], class_names=CLASSES),
                        splits={"sessions": {"train": np.arange(12), "test": np.arange(12, n)}},
                        split_kinds={"sessions": "block"})
    assert EpochDataset.open(tmp_path / "ok.zarr").split_info("sessions").kind == "block"


# --------------------------------------------------------------------------- CLI
def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bci")
    register(parser.add_subparsers(dest="command"), _add_parser)
    args = parser.parse_args(argv)
    return args.func(args)


def test_check_splits_cli_exit_status(block_ds: EpochDataset, capsys: pytest.CaptureFixture[str]) -> None:
    block_ds.add_split("block", block_split(block_ds, seed=0), kind="block")
    assert _run(["check-splits", str(block_ds.path)]) == 0
    out = capsys.readouterr().out
    assert "split 'block' (kind block)" in out and "WARNING: block design" in out and "0 of 1 split(s) leak" in out
    block_ds.add_split("epochwise", {"train": np.arange(0, 95, 2), "test": np.arange(1, 96, 2)}, allow_leak=True)
    assert _run(["check-splits", str(block_ds.path)]) == 1
    assert "status: LEAKS (stored with allow_leak=True)" in capsys.readouterr().out
    assert _run(["check-splits", str(block_ds.path), "--split", "block", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["leaking"] is False and [s["name"] for s in data["splits"]] == ["block"]
    with pytest.raises(ValueError, match="no split 'zzz'"):
        _run(["check-splits", str(block_ds.path), "--split", "zzz"])
