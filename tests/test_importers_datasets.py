"""Dataset importers: EEG-ImageNet ``.pth``, THINGS-EEG2 ``.npy``, fMRI npz/CSV -> epoch datasets.

The inputs are written by the tests in the real formats (torch.save of the
EEG-ImageNet dict, np.save of the THINGS-EEG2 dict, np.savez), including
malformed ones; every error must name the key or shape.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from offline.data.epochs import EpochDataset
from offline.importers import (
    ImportFormatError,
    UnsafeFileError,
    import_eeg_imagenet,
    import_fmri,
    import_things_eeg2,
)
from offline.importers.eeg_imagenet import reconstruct_blocks
from offline.data.splits import check_splits
from tests.importer_files import eeg_imagenet_content, things_content, write_eeg_imagenet, write_splits, write_things


def _blocks_disjoint(ds: EpochDataset, name: str) -> None:
    parts = ds.split(name)
    keys = {p: set(zip(ds.subject[i].tolist(), ds.session[i].tolist(), ds.block[i].tolist()))
            for p, i in parts.items()}
    for a in keys:
        for b in keys:
            if a < b:
                assert not keys[a] & keys[b], f"split {name}: parts {a} and {b} share blocks"


# ============================================================================ EEG-ImageNet
@pytest.fixture
def eeg_content() -> dict:
    return eeg_imagenet_content(n_subjects=4, n_classes=4, per_class=3, n_channels=6, seed=1)


def test_eeg_imagenet_values_ids_blocks_and_splits(tmp_path: Path, eeg_content: dict) -> None:
    items = eeg_content["dataset"]
    originals = [it["eeg"].clone() for it in items]
    pth = write_eeg_imagenet(tmp_path / "eeg.pth", eeg_content)
    splits = write_splits(tmp_path / "splits.pth", len(items))
    ds = EpochDataset.open(import_eeg_imagenet(pth, tmp_path / "ds", splits_path=splits))
    assert (ds.n_epochs, ds.n_channels, ds.n_times, ds.sfreq, ds.modality) == (48, 6, 440, 1000.0, "eeg")
    for i in (0, 17, 47):
        np.testing.assert_array_equal(ds.get_batch([i])[0], originals[i][:, 20:460].numpy())
    assert ds.class_names == eeg_content["labels"]
    assert ds.labels.tolist() == [it["label"] for it in items]
    assert ds.image_ids == [eeg_content["images"][it["image"]] for it in items]
    assert ds.subject_names == ["1", "2", "3", "4"]
    assert [ds.subject_names[s] for s in ds.subject] == [str(it["subject"]) for it in items]
    assert (ds.session == ds.subject).all()                              # one session per subject
    pairs = {(int(s), int(lab)) for s, lab in zip(ds.subject, ds.labels)}
    assert len(set(ds.block.tolist())) == len(pairs) == 16               # block = (subject, class)
    assert sorted(ds.splits) == ["block", *(f"published-{k}" for k in range(1, 7)), "subject"]
    for k in range(1, 7):
        info = ds.split_info(f"published-{k}")
        assert info.kind == "custom" and info.leaking and info.meta["protocol"] == "published"
        assert sum(len(v) for v in info.parts.values()) == 48
    for name in ("block", "subject"):
        assert not ds.split_info(name).leaking
        _blocks_disjoint(ds, name)
    test_subjects = set(ds.subject[ds.split("subject")["test"]].tolist())
    assert not test_subjects & set(ds.subject[ds.split("subject")["train"]].tolist())
    report = check_splits(ds)
    leaking = sorted(c.name for c in report.splits if c.leaking)
    assert leaking == [f"published-{k}" for k in range(1, 7)]
    assert any("block design" in w for w in report.warnings)
    src = ds.source
    assert src["importer"] == "eeg-imagenet" and src["time_slice"] == [20, 460] and src["n_skipped_short"] == 0
    assert ds.attrs["window"]["offset"] == pytest.approx(0.020) and ds.attrs["window"]["n_times"] == 440
    assert "Li et al. 2021" in src["protocol_notes"]


def test_eeg_imagenet_options_short_epochs_and_images(tmp_path: Path, eeg_content: dict) -> None:
    from PIL import Image

    items = eeg_content["dataset"]
    items[5]["eeg"] = items[5]["eeg"][:, :300]                           # too short for 0:400 -> left out
    pth = write_eeg_imagenet(tmp_path / "eeg.pth", eeg_content)
    splits = write_splits(tmp_path / "splits.pth", len(items), n_splits=2)
    img_dir = tmp_path / "imgs"
    for name in eeg_content["images"][1:]:                               # the first image is missing
        (img_dir / name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 10), (9, 99, 199)).save(img_dir / name.split("_")[0] / f"{name}.JPEG")
    names = {cid: f"thing {k}" for k, cid in enumerate(eeg_content["labels"])}
    ds = EpochDataset.open(import_eeg_imagenet(
        pth, tmp_path / "ds", splits_path=splits, time_slice="0:400", sfreq=500.0,
        ch_names=[f"C{i}" for i in range(6)], class_names=names, images_dir=img_dir, image_size=8,
        blocks="consecutive"))
    assert (ds.n_epochs, ds.n_times, ds.sfreq, ds.ch_names[0]) == (47, 400, 500.0, "C0")
    assert ds.attrs["window"]["offset"] == 0.0
    assert ds.source["skipped_short"] == [5]
    np.testing.assert_array_equal(ds.get_batch([5])[0], items[6]["eeg"][:, :400].numpy())
    assert ds.class_names == [f"thing {k}" for k in range(4)]
    assert ds.images.shape == (12, 8, 8, 3) and ds.image_table_ids == eeg_content["images"]
    assert not ds.images[0].any() and np.abs(ds.images[1].astype(int) - [9, 99, 199]).max() <= 3
    assert ds.template_captions[0] == "an image of a thing 0"
    rep = ds.source["images"]
    assert (rep["found"], rep["missing"]) == (11, [eeg_content["images"][0]])
    assert ds.split_info("published-1").meta["dropped_short_epochs"] == 1
    assert sum(len(v) for v in ds.split("published-1").values()) == 47


def test_reconstruct_blocks_modes() -> None:
    subject = np.array([1, 1, 1, 1, 2, 2, 1, 1])
    label = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    assert reconstruct_blocks(subject, label).tolist() == [0, 0, 1, 1, 2, 2, 0, 0]
    assert reconstruct_blocks(subject, label, "consecutive").tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="blocks='runs'"):
        reconstruct_blocks(subject, label, "runs")


def _mutated(content: dict, how: str) -> object:
    items = content["dataset"]
    if how == "missing_images":
        del content["images"]
    elif how == "missing_subject":
        del items[3]["subject"]
    elif how == "eeg_list":
        items[2]["eeg"] = items[2]["eeg"].tolist()
    elif how == "eeg_1d":
        items[4]["eeg"] = items[4]["eeg"][0]
    elif how == "channels":
        items[7]["eeg"] = items[7]["eeg"][:5]
    elif how == "int_eeg":
        items[1]["eeg"] = items[1]["eeg"].to(torch.int32)
    elif how == "label_range":
        items[6]["label"] = 99
    elif how == "label_float":
        items[6]["label"] = 1.5
    elif how == "top_list":
        return items
    elif how == "empty":
        content["dataset"] = []
    return content


@pytest.mark.parametrize("how, match", [
    ("missing_images", r"missing key\(s\) \['images'\]"),
    ("missing_subject", r"dataset\[3\] is missing key\(s\) \['subject'\]"),
    ("eeg_list", r"dataset\[2\]\['eeg'\] is list; expected a float tensor"),
    ("eeg_1d", r"dataset\[4\]\['eeg'\] has shape \(\d+,\) and dtype torch.float32; expected a 2-D"),
    ("channels", r"dataset\[7\]\['eeg'\] has shape \(5, \d+\): 5 channels, but dataset\[0\] has 6"),
    ("int_eeg", r"dataset\[1\]\['eeg'\] has shape \(6, \d+\) and dtype torch.int32"),
    ("label_range", r"dataset\[6\]\['label'\] = 99 is out of range"),
    ("label_float", r"dataset\[6\]\['label'\] is float 1.5; expected an int"),
    ("top_list", "holds a list; expected a dict"),
    ("empty", "'dataset' must be a non-empty list"),
])
def test_malformed_eeg_imagenet_files(tmp_path: Path, how: str, match: str) -> None:
    content = eeg_imagenet_content(n_subjects=1, n_classes=3, per_class=3, n_channels=6, length=470)
    pth = tmp_path / "bad.pth"
    torch.save(_mutated(content, how), pth)
    with pytest.raises(ImportFormatError, match=match):
        import_eeg_imagenet(pth, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_eeg_imagenet_truncated_and_unsafe_files(tmp_path: Path) -> None:
    content = eeg_imagenet_content(n_subjects=1, n_classes=2, per_class=2, n_channels=3)
    full = write_eeg_imagenet(tmp_path / "ok.pth", content).read_bytes()
    for n in (len(full) // 2, 10, 0):
        cut = tmp_path / f"cut{n}.pth"
        cut.write_bytes(full[:n])
        with pytest.raises(ImportFormatError, match=f"cut{n}.pth"):
            import_eeg_imagenet(cut, tmp_path / "ds")
    content["dataset"][0]["eeg"] = content["dataset"][0]["eeg"].numpy()    # a numpy array needs unpickling
    torch.save(content, tmp_path / "np.pth")
    with pytest.raises(UnsafeFileError, match=r"np\.pth.*full unpickling.*refused"):
        import_eeg_imagenet(tmp_path / "np.pth", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("splits, match", [
    ({"folds": []}, "missing key 'splits'"),
    ({"splits": [{"train": [0], "val": [1]}]}, r"splits\[0\] is missing key\(s\) \['test'\]"),
    ({"splits": [{"train": [0], "val": [1], "test": [999]}]}, r"splits\[0\]\['test'\] has index 999 out of range"),
    ({"splits": [{"train": ["a"], "val": [1], "test": [2]}]}, r"splits\[0\]\['train'\]\[0\] is str"),
    ({"splits": "abc"}, "'splits' must be a non-empty list"),
])
def test_malformed_splits_files(tmp_path: Path, splits: dict, match: str) -> None:
    pth = write_eeg_imagenet(tmp_path / "eeg.pth", n_subjects=1, n_classes=2, per_class=2, n_channels=3)
    torch.save(splits, tmp_path / "s.pth")
    with pytest.raises(ImportFormatError, match=match):
        import_eeg_imagenet(pth, tmp_path / "ds", splits_path=tmp_path / "s.pth")


# ============================================================================ THINGS-EEG2
class _Bomb:
    """Unpickling this creates a directory: proof that a file was (or was not) unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.target,))


def test_things_refuses_pickle_without_trust(tmp_path: Path) -> None:
    flag = tmp_path / "unpickled"
    content = things_content(4, 2)
    content["ch_names"] = [_Bomb(str(flag))] + content["ch_names"][1:]
    tr = write_things(tmp_path / "train.npy", content)
    te = write_things(tmp_path / "test.npy", things_content(2, 3))
    with pytest.raises(UnsafeFileError, match=r"train\.npy.*pickle.*arbitrary code.*trust_pickle=True"):
        import_things_eeg2(tr, te, tmp_path / "ds")
    assert not flag.exists() and not (tmp_path / "ds").exists()


def test_things_import_layout_labels_and_zero_shot(tmp_path: Path) -> None:
    train_c, test_c = things_content(12, 4, seed=1), things_content(5, 6, seed=2)
    sub = tmp_path / "sub-07"
    sub.mkdir()
    tr, te = write_things(sub / "train.npy", train_c), write_things(sub / "test.npy", test_c)
    ds = EpochDataset.open(import_things_eeg2(tr, te, tmp_path / "ds", trust_pickle=True, images_per_concept=3))
    assert (ds.n_epochs, ds.n_channels, ds.n_times) == (12 * 4 + 5 * 6, 5, 20)
    assert ds.sfreq == pytest.approx(100.0) and ds.source["tmin"] == pytest.approx(-0.2)
    # the live window of a model trained on it starts 0.2 s before each marker, as these epochs do
    assert ds.attrs["window"]["offset"] == pytest.approx(-0.2) and ds.attrs["window"]["n_times"] == 20
    assert ds.ch_names == train_c["ch_names"] and ds.subject_names == ["7"]
    np.testing.assert_array_equal(ds.get_batch([4 * 5 + 2])[0], train_c["preprocessed_eeg_data"][5, 2].astype(np.float32))
    np.testing.assert_array_equal(ds.get_batch([48 + 6 * 3 + 1])[0], test_c["preprocessed_eeg_data"][3, 1].astype(np.float32))
    assert ds.image_ids[4 * 5] == "train_00006" and ds.image_ids[48 + 6 * 3] == "test_004"
    assert ds.labels[4 * 5] == 5 // 3 and len(ds.class_names) == 4 + 5
    zs = ds.split("zero_shot")
    assert ds.split_info("zero_shot").kind == "zero_shot" and not ds.split_info("zero_shot").leaking
    assert zs["test"].tolist() == list(range(48, 78))                    # exactly the test set
    assert not set(ds.labels[zs["test"]].tolist()) & set(ds.labels[np.r_[zs["train"], zs["val"]]].tolist())
    assert len(zs["val"]) > 0
    _blocks_disjoint(ds, "zero_shot")                                    # repetitions stay together
    for part in ("train", "val"):
        reps = np.bincount(ds.block[zs[part]])
        assert set(reps[reps > 0].tolist()) == {4}


def _things_subject(root: Path, number: int, n_train: int = 6, n_test: int = 2, **content: object) -> tuple[Path, Path]:
    """A ``sub-NN/`` folder of the THINGS-EEG2 layout, written with numpy only (tests.importer_files)."""
    sub = root / f"sub-{number:02d}"
    sub.mkdir(parents=True)
    train_c, test_c = things_content(n_train, 2, seed=number), things_content(n_test, 3, seed=100 + number)
    for c in (train_c, test_c):
        c.update(content)
    return (write_things(sub / "preprocessed_eeg_training.npy", train_c),
            write_things(sub / "preprocessed_eeg_test.npy", test_c))


def test_things_subject_and_exact_rate_from_the_source(tmp_path: Path) -> None:
    ds = EpochDataset.open(import_things_eeg2(*_things_subject(tmp_path, 7), tmp_path / "ds", trust_pickle=True,
                                              images_per_concept=3))
    # rounded times (np.round(..., 2)): the differences give 99.99999999999991 Hz, the file means 100 Hz
    assert ds.sfreq == 100.0 and ds.attrs["window"]["input_sfreq"] == 100.0
    assert ds.subject_names == ["7"] and set(ds.subject.tolist()) == {0} and ds.source["subject"] == 7
    assert ds.session_names == ["7: all sessions (merged in the file)"]
    times250 = np.round(-0.2 + np.arange(20) / 250.0, 3)       # 250 Hz, times rounded to 1 ms
    ds = EpochDataset.open(import_things_eeg2(*_things_subject(tmp_path / "b", 3, times=times250), tmp_path / "d2",
                                              trust_pickle=True, images_per_concept=3))
    assert ds.sfreq == 250.0 and ds.source["sfreq_from"].startswith("'times'")
    ds = EpochDataset.open(import_things_eeg2(*_things_subject(tmp_path / "c", 4, sfreq=100.0), tmp_path / "d3",
                                              trust_pickle=True, images_per_concept=3))
    assert ds.sfreq == 100.0 and ds.source["sfreq_from"] == "the file's 'sfreq'"


@pytest.mark.parametrize("content, match", [
    ({"sfreq": 250.0}, r"'times' disagree with the rate 250 Hz declared by its sfreq: times\[19\] = -0.01 s is 28.5 samples"),
    ({"sfreq": "fast"}, r"'sfreq' is 'fast'; expected a positive number of Hz"),
    ({"sfreq": -100.0}, r"'sfreq' is -100.0; expected a positive number of Hz"),
])
def test_things_rate_that_disagrees_with_times(tmp_path: Path, content: dict, match: str) -> None:
    with pytest.raises(ImportFormatError, match=match):
        import_things_eeg2(*_things_subject(tmp_path, 7, **content), tmp_path / "ds", trust_pickle=True,
                           images_per_concept=3)


def test_things_two_subjects_combined_stay_apart(tmp_path: Path) -> None:
    """Two imported subjects joined the project's way (mne.concatenate_epochs) keep their names and codes apart."""
    import mne

    from offline.data.mne_epochs import from_mne_epochs, to_mne_epochs

    parts = []
    for number in (7, 8):
        out = import_things_eeg2(*_things_subject(tmp_path, number), tmp_path / f"ds{number}", trust_pickle=True,
                                 images_per_concept=3)
        parts.append(EpochDataset.open(out))
    joined = mne.concatenate_epochs([to_mne_epochs(d) for d in parts], verbose=False)
    ds = EpochDataset.open(from_mne_epochs(joined, tmp_path / "both").path)
    n7 = parts[0].n_epochs
    assert ds.subject_names == ["7", "8"] and ds.subject.tolist() == [0] * n7 + [1] * parts[1].n_epochs
    assert ds.session_names == ["7: all sessions (merged in the file)", "8: all sessions (merged in the file)"]
    np.testing.assert_array_equal(ds.get_batch([n7 + 1])[0], parts[1].get_batch([1])[0])
    # leave-one-subject-out: hold sub-08 out; its blocks are not sub-07's (same image numbers, other subject)
    info = ds.add_split("loso", {"train": np.arange(n7), "test": np.arange(n7, ds.n_epochs)}, kind="subject")
    assert not info.leaking


def test_things_average_repetitions_and_metadata(tmp_path: Path) -> None:
    import json

    train_c, test_c = things_content(4, 4, seed=3), things_content(2, 5, seed=4)
    tr, te = write_things(tmp_path / "tr.npy", train_c), write_things(tmp_path / "te.npy", test_c)
    meta = {"train_img_concepts": ["00001_aardvark"] * 2 + ["00002_abacus"] * 2,
            "train_img_files": ["aardvark_01b.jpg", "aardvark_02s.jpg", "abacus_01b.jpg", "abacus_02s.jpg"],
            "test_img_concepts": ["00003_zebra", "00004_yo_yo"], "test_img_files": ["zebra_01b.jpg", "yo_yo_01b.jpg"]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    ds = EpochDataset.open(import_things_eeg2(tr, te, tmp_path / "ds", trust_pickle=True, average_repetitions=True,
                                              metadata_path=tmp_path / "meta.json", subject=2))
    assert ds.n_epochs == 6 and ds.image_ids == ["aardvark_01b", "aardvark_02s", "abacus_01b", "abacus_02s",
                                                 "zebra_01b", "yo_yo_01b"]
    assert ds.class_names == ["aardvark", "abacus", "zebra", "yo yo"] and ds.labels.tolist() == [0, 0, 1, 1, 2, 3]
    np.testing.assert_allclose(ds.get_batch([5])[0], test_c["preprocessed_eeg_data"][1].mean(axis=0), rtol=1e-5,
                               atol=1e-6)
    assert ds.split("zero_shot")["test"].tolist() == [4, 5]
    meta["test_img_concepts"][0] = "00001_aardvark"
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ImportFormatError, match="both the training and the test set"):
        import_things_eeg2(tr, te, tmp_path / "ds2", trust_pickle=True, metadata_path=tmp_path / "meta.json")


def _things_bad(how: str) -> object:
    c = things_content(3, 2)
    if how == "missing_times":
        del c["times"]
    elif how == "ch_names":
        c["ch_names"] = c["ch_names"][:3]
    elif how == "data_3d":
        c["preprocessed_eeg_data"] = c["preprocessed_eeg_data"][0]
    elif how == "times_len":
        c["times"] = c["times"][:7]
    elif how == "plain":
        return np.zeros((3, 2, 5, 20))
    elif how == "list":
        return np.array([1, "a"], dtype=object)
    return c


@pytest.mark.parametrize("how, match", [
    ("missing_times", r"missing key\(s\) \['times'\]"),
    ("ch_names", r"'ch_names' has 3 entries but 'preprocessed_eeg_data' has shape \(3, 2, 5, 20\)"),
    ("data_3d", r"'preprocessed_eeg_data' has shape \(2, 5, 20\)"),
    ("times_len", r"'times' has shape \(7,\) but 'preprocessed_eeg_data' has shape \(3, 2, 5, 20\)"),
    ("plain", r"plain float64 array of shape \(3, 2, 5, 20\); expected a dict"),
    ("list", "holds a ndarray; expected a dict"),
])
def test_malformed_things_files(tmp_path: Path, how: str, match: str) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, _things_bad(how), allow_pickle=True)
    te = write_things(tmp_path / "te.npy", things_content(2, 3))
    with pytest.raises(ImportFormatError, match=match):
        import_things_eeg2(bad, te, tmp_path / "ds", trust_pickle=True)


def test_truncated_and_mismatched_things_files(tmp_path: Path) -> None:
    full = write_things(tmp_path / "tr.npy", things_content(3, 2)).read_bytes()
    te = write_things(tmp_path / "te.npy", things_content(2, 3))
    for n, match in ((len(full) - 40, "truncated or corrupt"), (30, "header is truncated"), (3, "not a .npy file")):
        (tmp_path / "cut.npy").write_bytes(full[:n])
        with pytest.raises(ImportFormatError, match=match):
            import_things_eeg2(tmp_path / "cut.npy", te, tmp_path / "ds", trust_pickle=True)
    other = things_content(2, 3, n_channels=4)
    write_things(tmp_path / "te4.npy", other)
    with pytest.raises(ImportFormatError, match="different channels"):
        import_things_eeg2(tmp_path / "tr.npy", tmp_path / "te4.npy", tmp_path / "ds", trust_pickle=True)


# ============================================================================ fMRI
def _fmri_npz(tmp_path: Path, rng: np.random.Generator, **override: np.ndarray) -> tuple[Path, dict]:
    patterns = (rng.random((5, 10, 10)) > 0.5).astype(np.uint8)
    which = np.tile([3, 1, 4, 0, 2, 1], 4)
    arrays = {"voxels": rng.normal(size=(24, 30)), "stimulus": patterns[which], "run": np.repeat([1, 2, 3, 4], 6)}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "f.npz"
    np.savez(path, **arrays)
    return path, {"patterns": patterns, "which": which, **arrays}


def test_fmri_npz_with_patterns(tmp_path: Path, rng: np.random.Generator) -> None:
    path, a = _fmri_npz(tmp_path, rng)
    ds = EpochDataset.open(import_fmri(path, tmp_path / "ds", tr=1.5, test_runs=[4]))
    assert (ds.modality, ds.n_epochs, ds.n_channels, ds.n_times) == ("fmri", 24, 30, 1)
    assert ds.sfreq == pytest.approx(1 / 1.5) and ds.ch_types == ["fmri"] * 30 and ds.ch_names[0] == "v0000"
    np.testing.assert_array_equal(ds.get_batch(np.arange(24))[:, :, 0], a["voxels"].astype(np.float32))
    # ids in order of first appearance: pattern 3 -> pattern000, 1 -> pattern001, 4 -> 002, 0 -> 003, 2 -> 004
    first_seen = [3, 1, 4, 0, 2]
    assert ds.image_ids[:6] == ["pattern000", "pattern001", "pattern002", "pattern003", "pattern004", "pattern001"]
    for row, p in enumerate(first_seen):
        assert ds.images[row].shape == (10, 10, 3)
        np.testing.assert_array_equal(ds.images[row][..., 0], a["patterns"][p] * 255)
    assert len(ds.class_names) == 5 and (ds.run == a["run"]).all()
    parts = ds.split("block")
    assert set(ds.run[parts["test"]].tolist()) == {4} and set(ds.run[parts["val"]].tolist()) == {3}
    assert not ds.split_info("block").leaking
    assert "window" not in ds.attrs  # the delay of the extraction is unknown unless given
    ds = EpochDataset.open(import_fmri(path, tmp_path / "ds5", tr=1.5, test_runs=[4], offset=5.0))
    assert ds.attrs["window"]["offset"] == 5.0 and ds.attrs["window"]["n_times"] == 1


def test_fmri_resized_patterns_labels_and_csv(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = np.array(["random", "figure"] * 12)
    path, a = _fmri_npz(tmp_path, rng, labels=labels)
    ds = EpochDataset.open(import_fmri(path, tmp_path / "ds", image_size=30))
    assert ds.images.shape == (5, 30, 30, 3) and ds.class_names == ["figure", "random"]
    np.testing.assert_array_equal(ds.images[0][::3, ::3, 1], a["patterns"][3] * 255)   # nearest, 3x
    assert ds.splits and not ds.split_info("block").leaking                              # runs drawn by block_split
    csv = tmp_path / "f.csv"
    header = "run,subject,label,image_id,V1_a,V1_b,V2_c\n"
    rows = "".join(f"{r},{s},{lab},img{i},{i}.5,{-i},{2 * i}\n"
                   for i, (r, s, lab) in enumerate([(1, 1, "a"), (1, 1, "b"), (2, 1, "a"), (2, 2, "b")]))
    csv.write_text(header + rows)
    ds = EpochDataset.open(import_fmri(csv, tmp_path / "ds_csv", test_runs=[2]))
    assert ds.ch_names == ["V1_a", "V1_b", "V2_c"] and ds.image_ids == ["img0", "img1", "img2", "img3"]
    np.testing.assert_array_equal(ds.get_batch([3])[0, :, 0], [3.5, -3.0, 6.0])
    assert ds.subject_names == ["1", "2"] and ds.images is None


@pytest.mark.parametrize("override, match", [
    ({"run": None}, r"missing key\(s\) \['run'\]"),
    ({"stimulus": None}, "none of the keys 'stimulus', 'labels', 'image_ids'"),
    ({"voxels": np.zeros(24)}, r"'voxels' has shape \(24,\)"),
    ({"stimulus": np.zeros((24, 100))}, r"'stimulus' has shape \(24, 100\).*expected \(24, H, W\)"),
    ({"run": np.arange(23)}, r"'run' has shape \(23,\); expected \(24,\)"),
    ({"run": np.linspace(0, 1, 24)}, "'run' has dtype float64; expected integers"),
    ({"labels": np.array([None] * 24, dtype=object)}, r"key 'labels' is an object array.*pickle"),
    ({"voxels": np.full((24, 30), np.nan)}, r"'voxels' has NaN/inf in 24 trial"),
])
def test_malformed_fmri_files(tmp_path: Path, rng: np.random.Generator, override: dict, match: str) -> None:
    if "labels" in override:
        path = tmp_path / "f.npz"
        np.savez(path, voxels=rng.normal(size=(24, 3)), run=np.zeros(24, int), labels=override["labels"])
    else:
        path, _ = _fmri_npz(tmp_path, rng, **override)
    with pytest.raises(ImportFormatError, match=match):
        import_fmri(path, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_truncated_fmri_and_bad_arguments(tmp_path: Path, rng: np.random.Generator) -> None:
    path, _ = _fmri_npz(tmp_path, rng)
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImportFormatError, match=r"cut\.npz.*not a readable \.npz"):
        import_fmri(tmp_path / "cut.npz", tmp_path / "ds")
    with pytest.raises(ValueError, match="tr=0"):
        import_fmri(path, tmp_path / "ds", tr=0)
    with pytest.raises(ValueError, match="offset=nan must be a finite number"):
        import_fmri(path, tmp_path / "ds", offset=float("nan"))
    with pytest.raises(ValueError, match=r"test_runs \[9\] are not in the data"):
        import_fmri(path, tmp_path / "ds", test_runs=[9])
