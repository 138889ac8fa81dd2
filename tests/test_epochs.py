"""Epoch datasets: Zarr round trip, validation, chunk-aware reads, torch batches, and offline == online windows."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from bci.cli.main import _add_parser
from bci.runtime.assemble import load_encoder, pipeline_factory
from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.runtime.sinks import ListSink
from bci.preprocessing import PreprocessConfig, preprocess_recording
from bci.runtime.replay import decode_session
from offline.cli.dataset import register
from offline.data.epochs import (
    DatasetFormatError,
    EpochArrays,
    EpochDataset,
    EpochDatasetWriter,
    EpochMetadata,
    ImageTable,
    write_epoch_dataset,
)
from offline.data.build import (
    LabelOptions,
    SimulationOptions,
    WindowOptions,
    epochs_from_sessions,
    epochs_from_simulation,
    simulation_schedule,
)
from offline.data.splits import check_splits
from streams.description import StreamDescription
from streams.errors import OutputExistsError
from streams.session import SessionReader, SessionWriter
from streams.simulate import SimulationSpec, simulate_to_session
from streams.synthetic import make_stimuli

N, C, T = 40, 3, 16
CLASSES = ["cat", "dog", "car", "cup", "hat"]


def _arrays(seed: int = 0, n: int = N) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        data=rng.standard_normal((n, C, T)).astype(np.float32),
        labels=np.arange(n) % len(CLASSES),
        image_ids=[f"img{i % 8}" for i in range(n)],
        subject=np.zeros(n, dtype=np.int64),
        session=np.arange(n) // 20,
        block=np.arange(n) // 5,
        sfreq=100.0,
        ch_names=["Oz", "Pz", "Cz"],
        class_names=CLASSES,
    )


_IMAGE_FIELDS = {"images": "images", "image_table_ids": "ids", "captions": "captions",
                 "template_captions": "template_captions"}


def _write(path: Path, **overrides) -> Path:
    """Write a dataset from flat keywords, sorted into EpochArrays, EpochMetadata and ImageTable."""
    kw = _arrays()
    kw.update(overrides)
    arrays = {f.name: kw.pop(f.name) for f in fields(EpochArrays) if f.name in kw}
    meta = {f.name: kw.pop(f.name) for f in fields(EpochMetadata) if f.name in kw}
    table = {_IMAGE_FIELDS[k]: kw.pop(k) for k in list(kw) if k in _IMAGE_FIELDS}
    return write_epoch_dataset(path, EpochArrays(**arrays), EpochMetadata(**meta),
                               images=ImageTable(**table) if table else None, **kw)


# --------------------------------------------------------------------------- round trip
def test_round_trip_keeps_every_array_and_attribute(tmp_path: Path) -> None:
    a = _arrays()
    images = np.random.default_rng(1).integers(0, 255, (8, 6, 6, 3), dtype=np.uint8)
    ids = [f"img{i}" for i in range(8)]
    caps = [f"a caption with ümlauts {i}" for i in range(8)]
    run = np.arange(N) // 10
    mt = np.arange(N) * 1.5
    path = _write(tmp_path / "ds.zarr", images=images, image_table_ids=ids, captions=caps,
                  template_captions=[f"an image of {i}" for i in range(8)], run=run, marker_time=mt,
                  source={"importer": "test", "file": Path("x.bdf")}, chunk_epochs=7,
                  subject_names=["S01"], session_names=["a", "b"], preprocessing={"l_freq": 0.5})
    ds = EpochDataset.open(path, verify=True)
    assert (ds.n_epochs, ds.n_channels, ds.n_times, ds.chunk_epochs) == (N, C, T, 7)
    np.testing.assert_array_equal(ds.data[...], a["data"])
    for name in ("labels", "subject", "session", "block"):
        np.testing.assert_array_equal(getattr(ds, name), a[name])
        assert getattr(ds, name).dtype == np.int64
    np.testing.assert_array_equal(ds.run, run)
    np.testing.assert_array_equal(ds.marker_time, mt)
    assert ds.image_ids == a["image_ids"]
    assert ds.class_names == CLASSES and ds.ch_names == a["ch_names"] and ds.ch_types == ["eeg"] * C
    assert ds.sfreq == 100.0 and ds.modality == "eeg"
    np.testing.assert_array_equal(ds.images, images)
    assert ds.image_table_ids == ids and ds.captions == caps and ds.template_captions[3] == "an image of 3"
    np.testing.assert_array_equal(ds.image_rows([0, 9]), [0, 1])
    assert ds.source == {"importer": "test", "file": "x.bdf"}
    assert ds.subject_names == ["S01"] and ds.session_names == ["a", "b"]
    assert ds.preprocessing == {"l_freq": 0.5}
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["schema"] == "bci-epochs" and root.attrs["schema_version"] == 1


@pytest.mark.parametrize(("cache_bytes", "layout"), [(0, "raw"), (10**9, "raw"), (0, "zstd")])
def test_get_batch_equals_written_data_in_any_order(tmp_path: Path, cache_bytes: int, layout: str) -> None:
    a = _arrays()
    path = _write(tmp_path / "ds.zarr", chunk_epochs=6)
    if layout == "zstd":  # a compressed 'data' array (e.g. written by another tool): read through zarr
        root = zarr.open_group(str(path), mode="r+")
        del root["data"]
        root.create_array("data", data=a["data"], chunks=(6, C, T))
    ds = EpochDataset.open(path, cache_bytes=cache_bytes)
    assert ds._raw_chunks is (layout == "raw")
    rng = np.random.default_rng(3)
    for idx in (rng.permutation(N), rng.integers(0, N, 25), np.array([39, 0, 0, 17, 5]), np.array([], int),
                np.arange(N)[::-1]):
        batch = ds.get_batch(idx)
        assert batch.dtype == np.float32 and batch.shape == (len(idx), C, T)
        np.testing.assert_array_equal(batch, a["data"][idx])
    assert ds.cached is (cache_bytes > 0)
    chunks = list(ds.iter_chunks([30, 1, 2, 13]))
    assert [c[0].tolist() for c in chunks] == [[1, 2], [13], [30]]
    np.testing.assert_array_equal(chunks[2][1], a["data"][[30]])


def test_a_truncated_chunk_file_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path / "ds.zarr", chunk_epochs=8)
    chunk = path / "data" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[: 3 * C * T * 4])
    ds = EpochDataset.open(path, cache_bytes=0)
    np.testing.assert_array_equal(ds.get_batch([9, 0]), _arrays()["data"][[9, 0]])
    with pytest.raises(DatasetFormatError, match=r"is shorter than a chunk of 'data' \(0 of 192 bytes read\)"):
        ds.get_batch([12])
    ds.close()


def test_get_batch_rejects_bad_indices(tmp_path: Path) -> None:
    ds = EpochDataset.open(_write(tmp_path / "ds.zarr"))
    with pytest.raises(IndexError, match=r"indices go from 0 to 40; valid epochs are 0\.\.39"):
        ds.get_batch([0, 40])
    with pytest.raises(TypeError, match="indices have dtype float64; expected integers"):
        ds.get_batch(np.array([1.0]))
    with pytest.raises(ValueError, match=r"indices have shape \(2, 2\); expected a 1-D"):
        ds.get_batch(np.zeros((2, 2), int))
    with pytest.raises(TypeError, match="batch_size=8.0 must be an integer"):
        ds.to_torch(batch_size=8.0)
    with pytest.raises(ValueError, match="seed=-1 must be an integer >= 0"):
        ds.to_torch(seed=-1)
    with pytest.raises(TypeError, match="cache_bytes=True must be an integer"):
        EpochDataset.open(ds.path, cache_bytes=True)


def test_incremental_writer_equals_one_shot_write_and_fingerprint_tracks_content(tmp_path: Path) -> None:
    a = _arrays()
    one = _write(tmp_path / "one.zarr", chunk_epochs=4)
    with EpochDatasetWriter(tmp_path / "inc.zarr", n_channels=C, n_times=T, sfreq=100.0, ch_names=a["ch_names"],
                            class_names=CLASSES, chunk_epochs=4) as w:
        for lo, hi in ((0, 3), (3, 4), (4, 21), (21, 40)):
            w.append(a["data"][lo:hi], labels=a["labels"][lo:hi], image_ids=a["image_ids"][lo:hi], subject=0,
                     session=a["session"][lo:hi], block=a["block"][lo:hi])
    d1, d2 = EpochDataset.open(one), EpochDataset.open(tmp_path / "inc.zarr")
    np.testing.assert_array_equal(d1.data[...], d2.data[...])
    assert d1.attrs["data_sha256"] == d2.attrs["data_sha256"]
    assert d1.fingerprint() == d2.fingerprint() and len(d1.fingerprint()) == 16
    labels = a["labels"].copy()
    labels[0] = 4
    d3 = EpochDataset.open(_write(tmp_path / "other.zarr", labels=labels))
    assert d3.fingerprint() != d1.fingerprint()
    d1.add_split("block", {"train": np.arange(20), "test": np.arange(20, 40)}, kind="session")
    assert d1.fingerprint("block") != d1.fingerprint()


# --------------------------------------------------------------------------- validation
BAD_WRITES = [
    (dict(data=np.zeros((N, C))), r"data has shape \(40, 3\) \(2-D\); expected \(n_epochs, n_channels, n_times\)"),
    (dict(labels=np.zeros(N - 1, int)), r"label has shape \(39,\) but data has 40 epochs; give one label per epoch"),
    (dict(labels=np.full(N, 5)), r"label holds 5, outside 0\.\.4 \(class_names has 5 entries\)"),
    (dict(block=np.zeros(N - 1, int)), r"block has shape \(39,\); expected \(40,\), one value per epoch"),
    (dict(subject=np.full(N, 0.5)), "subject holds non-integer values; expected integers"),
    (dict(data=np.zeros((N, C, T), dtype=bool)), "data has dtype bool; expected real-valued samples"),
    (dict(ch_names=["Oz", "Pz"]), "ch_names has 2 entries; expected 3"),
    (dict(ch_names=["Oz", "Oz", "Cz"]), r"ch_names has duplicates: \['Oz'\]"),
    (dict(class_names=["a", "a", "b", "c", "d"]), "class_names has duplicates"),
    (dict(image_ids=["x"] * (N - 1)), "image_id has 39 entries; expected 40"),
    (dict(images=np.zeros((2, 4, 4, 3), np.uint8), image_table_ids=["img0", "img1"]),
     r"6 image_id\(s\) of epochs are not in image_table_ids \(e\.g\. \['img2'"),
    (dict(images=np.zeros((8, 4, 4), np.uint8), image_table_ids=[f"img{i}" for i in range(8)]),
     r"images has shape \(8, 4, 4\) and dtype uint8; expected \(n_images, H, W, 3\) uint8"),
    (dict(images=np.zeros((8, 4, 4, 3), np.uint8)), "images and image_table_ids go together"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_WRITES)
def test_write_validation_names_the_problem(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(DatasetFormatError, match=message):
        _write(tmp_path / "bad.zarr", **overrides)
    assert not (tmp_path / "bad.zarr").exists()


def test_nan_in_data_is_refused_with_the_epoch_named(tmp_path: Path) -> None:
    data = _arrays()["data"]
    data[3, 1, 2] = np.nan
    data[7, 0, 0] = np.inf
    with pytest.raises(DatasetFormatError, match=r"NaN or inf in 2 epoch\(s\) \(first: epoch 3\)"):
        _write(tmp_path / "nan.zarr", data=data)


def test_existing_path_needs_overwrite_and_foreign_directories_are_never_deleted(tmp_path: Path) -> None:
    path = _write(tmp_path / "ds.zarr")
    with pytest.raises(OutputExistsError, match="already exists; choose a new path or pass overwrite=True"):
        _write(path)
    _write(path, overwrite=True, labels=np.zeros(N, int))
    assert EpochDataset.open(path).labels.sum() == 0
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="not a Zarr store; refusing to delete"):
        _write(foreign, overwrite=True)
    assert (foreign / "holiday.jpg").exists()


def test_open_refuses_foreign_newer_incomplete_and_inconsistent_stores(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="does not exist"):
        EpochDataset.open(tmp_path / "missing.zarr")
    zarr.create_group(str(tmp_path / "foreign.zarr"), attributes={"hello": 1})
    with pytest.raises(DatasetFormatError, match="root attribute 'schema' is missing"):
        EpochDataset.open(tmp_path / "foreign.zarr")
    path = _write(tmp_path / "ds.zarr")
    root = zarr.open_group(str(path), mode="r+")
    root.attrs["schema_version"] = 2
    with pytest.raises(DatasetFormatError, match="schema_version 2, newer than this reader"):
        EpochDataset.open(path)
    root.attrs["schema_version"] = 1
    del root["label"]
    root.create_array("label", data=np.zeros(N - 1, dtype=np.int64))
    with pytest.raises(DatasetFormatError, match=r"array 'label' has shape \(39,\) but 'data' has 40 epochs"):
        EpochDataset.open(path)
    del root["label"]
    root.create_array("label", data=np.full(N, 9, dtype=np.int64))
    with pytest.raises(DatasetFormatError, match=r"array 'label' holds values from 9 to 9, outside class_names"):
        EpochDataset.open(path)
    del root["label"]
    with pytest.raises(DatasetFormatError, match="array 'label' is missing"):
        EpochDataset.open(path)
    w = EpochDatasetWriter(tmp_path / "crashed.zarr", n_channels=C, n_times=T, sfreq=100.0,
                           ch_names=["a", "b", "c"], class_names=CLASSES)
    w.append(np.zeros((2, C, T)), labels=[0, 1], image_ids=["a", "b"], subject=0, session=0, block=0)
    with pytest.raises(DatasetFormatError, match="is incomplete"):
        EpochDataset.open(tmp_path / "crashed.zarr")


def test_verify_finds_nan_and_modified_data(tmp_path: Path) -> None:
    path = _write(tmp_path / "ds.zarr", chunk_epochs=8)
    EpochDataset.open(path, verify=True)
    root = zarr.open_group(str(path), mode="r+")
    root["data"][5, 0, 0] = 123.0
    with pytest.raises(DatasetFormatError, match="does not match the hash stored when it was written"):
        EpochDataset.open(path, verify=True)
    root["data"][12, 0, 0] = np.nan
    with pytest.raises(DatasetFormatError, match=r"NaN or inf in epoch\(s\) \[12\]"):
        EpochDataset.open(path, verify=True)


# --------------------------------------------------------------------------- torch
@pytest.mark.parametrize("cache_bytes", [0, 10**9])
def test_to_torch_covers_each_epoch_once_per_pass_reproducibly(tmp_path: Path, cache_bytes: int) -> None:
    a = _arrays()
    ds = EpochDataset.open(_write(tmp_path / "ds.zarr", chunk_epochs=6), cache_bytes=cache_bytes)
    subset = np.arange(3, 37)
    loader = ds.to_torch(subset, batch_size=8, seed=7, buffer_chunks=2)
    assert len(loader) == 5
    passes = []
    for _ in range(2):
        seen = []
        for x, y, idx in loader:
            assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(x) <= 8
            np.testing.assert_array_equal(x.numpy(), a["data"][idx.numpy()])
            np.testing.assert_array_equal(y.numpy(), a["labels"][idx.numpy()])
            seen.append(idx.numpy())
        order = np.concatenate(seen)
        assert sorted(order.tolist()) == subset.tolist()
        passes.append(order)
    assert not np.array_equal(passes[0], passes[1])
    again = ds.to_torch(subset, batch_size=8, seed=7, buffer_chunks=2)
    np.testing.assert_array_equal(np.concatenate([i.numpy() for _, _, i in again]), passes[0])
    plain = np.concatenate([i.numpy() for _, _, i in ds.to_torch(subset, batch_size=8, shuffle=False)])
    np.testing.assert_array_equal(plain, subset)
    sizes = [len(i) for _, _, i in ds.to_torch(subset, batch_size=8, drop_last=True)]
    assert sizes == [8, 8, 8, 8]


# --------------------------------------------------------------------------- offline == online
def _simulated_session(tmp_path: Path, seconds: float = 24.0) -> Path:
    spec = SimulationSpec(name="SimEEG", duration=seconds, snr=1.0, seed=5, design="rapid")
    return simulate_to_session(spec, tmp_path / "session.zarr")


def test_raw_epochs_are_the_session_samples_at_marker_plus_offset(tmp_path: Path) -> None:
    session = _simulated_session(tmp_path, 12.0)
    report = epochs_from_sessions([session], tmp_path / "raw.zarr", WindowOptions(preprocessing=None), splits=())
    ds = EpochDataset.open(report.path)
    reader = SessionReader(session)
    data = reader.data("SimEEG")
    m_times, m_values = reader.markers()
    stim = [(t, v) for t, v in zip(m_times, m_values) if v.startswith("stim/")]
    assert ds.n_epochs == len(stim) >= 8 and report.dropped == {}
    for i, (t, v) in enumerate(stim):
        k = int(round(t * 1000.0))
        np.testing.assert_array_equal(ds.get_batch([i])[0], data[k + 20:k + 460].T)
        assert ds.image_ids[i] == v.split("/")[1] and ds.class_names[ds.labels[i]] == v.split("/")[2]
        assert ds.marker_time[i] == t
    stimuli = make_stimuli(seed=5)
    assert ds.class_names == stimuli.class_names and ds.image_table_ids == stimuli.image_ids


def test_offline_windows_equal_the_runtime_windows(tmp_path: Path) -> None:
    """The dataset's windows, through a model, give the runtime's embeddings for the same session."""
    session = _simulated_session(tmp_path, 16.0)
    torch.manual_seed(0)
    pre = PreprocessConfig(resample_to=250.0, baseline=(0.0, 0.04))
    config = default_config("eeg_convnet", n_times=110, sfreq=250.0).replace(preprocessing=pre.to_dict())
    ckpt = save_checkpoint(build_model(config), tmp_path / "model")
    report = epochs_from_sessions([session], tmp_path / "ds.zarr", WindowOptions(model=ckpt, offset=0.020), splits=())
    ds = EpochDataset.open(report.path)
    assert (ds.n_times, ds.sfreq) == (110, 250.0) and ds.preprocessing == pre.to_dict()
    # the runtime: bci replay SESSION --decode --model DIR --speed max
    encoder = load_encoder(ckpt, device="cpu")
    sink = ListSink()
    pipeline = pipeline_factory(encoder, [sink], marker_filter="^stim/", offset=0.020)(
        SessionReader(session).description("SimEEG"))
    decode_session(SessionReader(session), pipeline, data_key="SimEEG", marker_key="SimEEG-Markers")
    online = [r for r in sink.records if r["type"] == "window"]
    assert len(online) == ds.n_epochs >= 10
    np.testing.assert_array_equal([r["marker_time"] for r in online], ds.marker_time)
    assert [r["image_id"] for r in online] == ds.image_ids
    offline = encoder(ds.get_batch(np.arange(ds.n_epochs)))["embedding"]
    emb = np.array([r["embedding"] for r in online], dtype=np.float32)
    np.testing.assert_allclose(offline, emb, rtol=1e-5, atol=1e-6 * np.abs(emb).max())
    # and both equal an independent cut of the whole preprocessed recording (the documented timing rule)
    reader = SessionReader(session)
    full = preprocess_recording(reader.data("SimEEG"), 1000.0, list(reader.description("SimEEG").channel_names),
                                pre)
    kept_times = reader.times("SimEEG")[3::4]  # decimation keeps input samples 3, 7, 11, ...
    for i, t in enumerate(ds.marker_time):
        k = int(np.searchsorted(kept_times, t))  # nearest kept sample; a tie goes to the later one
        if k > 0 and t - kept_times[k - 1] < kept_times[k] - t:
            k -= 1
        window = full[k + 5:k + 115].T
        window = window - window[:, :10].mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        np.testing.assert_allclose(ds.get_batch([i])[0], window, rtol=0, atol=1e-6 * np.abs(window).max())


def test_model_with_another_rate_is_refused(tmp_path: Path) -> None:
    """A model at another rate is served by resampling (tests/test_resample.py) unless its band does not fit."""
    session = _simulated_session(tmp_path, 4.0)
    config = default_config("eeg_convnet", n_times=110, sfreq=64.0).replace(
        preprocessing=PreprocessConfig().to_dict())
    ckpt = save_checkpoint(build_model(config), tmp_path / "model")
    with pytest.raises(ValueError, match="cannot serve model .* at 64 Hz: the model's low-pass h_freq=40 Hz"):
        epochs_from_sessions([session], tmp_path / "ds.zarr", WindowOptions(model=ckpt))
    assert not (tmp_path / "ds.zarr").exists()


# --------------------------------------------------------------------------- blocks and labels
def _hand_session(path: Path, markers: list[tuple[float, str]], seconds: float = 20.0) -> Path:
    desc = StreamDescription(name="Amp", type="EEG", source_id="amp", channel_names=("C3", "C4"),
                             channel_types=("eeg", "eeg"), channel_units=("V", "V"), nominal_rate=100.0,
                             dtype="float32")
    mdesc = StreamDescription(name="Amp-Markers", type="Markers", source_id="amp-m", channel_names=("marker",),
                              channel_types=("marker",), channel_units=("",), nominal_rate=0.0, dtype="string")
    n = int(seconds * 100)
    data = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    with SessionWriter(path, attrs={"subject": "P07", "session": "day1"}) as w:
        key = w.add_stream(desc)
        mkey = w.add_stream(mdesc)
        w.append(key, data, np.arange(n) / 100.0)
        w.append(mkey, np.array([[v] for _, v in markers], dtype=object), np.array([t for t, _ in markers]))
    return path


def test_blocks_from_time_gaps_and_labels_from_markers(tmp_path: Path) -> None:
    times = [1.0, 2.0, 3.0, 7.0, 8.0, 9.0, 14.0, 15.0]
    labels = ["dog", "dog", "dog", "cat", "cat", "cat", "dog", "dog"]
    markers = [(t, f"stim/i{j}/{lab}") for j, (t, lab) in enumerate(zip(times, labels))] + [(5.0, "pause")]
    session = _hand_session(tmp_path / "s.zarr", sorted(markers))
    raw = WindowOptions(preprocessing=None, n_times=50)
    report = epochs_from_sessions([session], tmp_path / "ds.zarr", raw, splits=("block",))
    ds = EpochDataset.open(report.path)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [1, 1, 1, 0, 0, 0, 1, 1]
    assert ds.block.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert ds.subject_names == ["P07"] and ds.session_names == ["day1"] and ds.images is None
    assert "gaps between stimulus markers > 2.5 s" in ds.source["sessions"][0]["block_rule"]
    assert report.splits == ["block"] and not check_splits(ds).leaking
    explicit = epochs_from_sessions([session], tmp_path / "gap.zarr", raw,
                                    LabelOptions(block_gap=4.5, class_names=["dog", "cat", "bird"]), splits=())
    ds2 = EpochDataset.open(explicit.path)
    assert ds2.block.tolist() == [0, 0, 0, 0, 0, 0, 1, 1] and ds2.labels.tolist() == [0, 0, 0, 1, 1, 1, 0, 0]


def test_unlabelled_markers_need_an_image_map(tmp_path: Path) -> None:
    session = _hand_session(tmp_path / "s.zarr", [(1.0, "stim/a"), (2.0, "stim/b"), (3.0, "stim/a")])
    raw = WindowOptions(preprocessing=None, n_times=50)
    with pytest.raises(ValueError, match="the stimulus markers carry no labels"):
        epochs_from_sessions([session], tmp_path / "ds.zarr", raw, splits=())
    with pytest.raises(ValueError, match=r"image id 'b' of a marker is not in image_map \(1 ids\)"):
        epochs_from_sessions([session], tmp_path / "ds.zarr", raw, LabelOptions(image_map={"a": "apple"}), splits=())
    assert not (tmp_path / "ds.zarr").exists()
    report = epochs_from_sessions([session], tmp_path / "ds.zarr", raw,
                                  LabelOptions(image_map={"a": "apple", "b": "banana"}), splits=())
    assert EpochDataset.open(report.path).labels.tolist() == [0, 1, 0]


def test_end_of_data_markers_are_reported_not_written(tmp_path: Path) -> None:
    session = _hand_session(tmp_path / "s.zarr", [(1.0, "stim/a/x"), (19.8, "stim/b/y")])
    report = epochs_from_sessions([session], tmp_path / "ds.zarr", WindowOptions(preprocessing=None, n_times=50),
                                  splits=())
    assert report.n_epochs == 1 and report.dropped == {"end_of_data": 1}
    assert EpochDataset.open(report.path).class_names == ["x", "y"]


# --------------------------------------------------------------------------- simulation
def test_simulation_schedule_balances_classes_over_blocks() -> None:
    stim = make_stimuli(n_per_class=3, seed=0)
    events = [e for e in simulation_schedule(stim, n_per_class=5, n_blocks=2, seed=1) if e.is_stimulus]
    classes = stim.class_ids[[e.image_index for e in events]]
    assert np.bincount(classes).tolist() == [5] * 40
    blocks = np.array([e.block for e in events])
    assert len(np.unique(blocks)) == 80
    assert all(len(np.unique(classes[blocks == b])) == 1 for b in np.unique(blocks))
    rapid = [e for e in simulation_schedule(stim, n_per_class=4, n_blocks=2, design="rapid") if e.is_stimulus]
    rb = np.array([e.block for e in rapid])
    assert sorted(np.unique(rb).tolist()) == [0, 1] and np.all(np.diff([e.onset for e in rapid]) >= 1.0)
    with pytest.raises(ValueError, match=r"n_blocks=6 must be an int in 1\.\.n_per_class=5"):
        simulation_schedule(stim, n_per_class=5, n_blocks=6)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sim") / "sim.zarr"
    return epochs_from_simulation(out, SimulationOptions(n_classes=3, n_per_class=4, n_blocks=2, seed=2, snr=1.0))


def test_epochs_from_simulation_holds_images_captions_and_clean_splits(simulated) -> None:
    ds = EpochDataset.open(simulated.path)
    assert ds.n_epochs == 12 and np.bincount(ds.labels).tolist() == [4, 4, 4]
    assert ds.class_names == [make_stimuli(seed=2).class_names[c] for c in (0, 20, 39)]
    assert ds.images.shape == (15, 64, 64, 3) and len(ds.captions) == 15
    assert len(np.unique(ds.block)) == 6
    rows = ds.image_rows()
    assert [ds.template_captions[r] for r in rows] == [f"an image of a {ds.class_names[k]}" for k in ds.labels]
    assert sorted(ds.splits) == ["block", "zero_shot"]
    assert ds.split_info("zero_shot").meta["held_out_classes"]
    report = check_splits(ds)
    assert not report.leaking and report.summary["block_design"]
    assert any("Li et al. 2021" in w for w in report.warnings)
    assert ds.source["synthetic"] is True and ds.source["simulation"]["n_blocks"] == 2
    assert simulated.epochs_per_second > 0 and "simulating the session took" in simulated.notes[-1]


def test_rapid_design_simulation_has_mixed_blocks(tmp_path: Path) -> None:
    report = epochs_from_simulation(tmp_path / "rapid.zarr",
                                    SimulationOptions(n_classes=3, n_per_class=4, n_blocks=2, seed=4, design="rapid"),
                                    WindowOptions(preprocessing=None, n_times=100), splits=("zero_shot",))
    ds = EpochDataset.open(report.path)
    assert ds.n_epochs == 12 and sorted(np.unique(ds.block).tolist()) == [0, 1]
    assert all(len(np.unique(ds.labels[ds.block == b])) == 3 for b in (0, 1))
    check = check_splits(ds)
    assert not check.summary["block_design"] and not check.warnings and not check.leaking
    zs = ds.split("zero_shot")
    assert not set(ds.labels[zs["test"]]) & set(ds.labels[np.concatenate([zs["train"], zs["val"]])])


# --------------------------------------------------------------------------- CLI
def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bci")
    register(parser.add_subparsers(dest="command"), _add_parser)
    return parser


def _run(argv: list[str]) -> int:
    args = _cli().parse_args(argv)
    return args.func(args)


def test_cli_epochs_and_dataset_info(tmp_path: Path, capsys: pytest.CaptureFixture[str], simulated) -> None:
    session = _hand_session(tmp_path / "s.zarr", [(1.0, "stim/a/x"), (2.0, "stim/b/y"), (6.0, "stim/a/x"),
                                                  (7.0, "stim/b/y")])
    assert _run(["epochs", str(session), str(tmp_path / "e.zarr"), "--raw", "--n-times", "30",
                 "--subject", "S9"]) == 0
    out = capsys.readouterr().out
    assert "4 epochs from 1 session(s)" in out and "splits: block" in out
    ds = EpochDataset.open(tmp_path / "e.zarr")
    assert ds.subject_names == ["S9"] and ds.n_times == 30
    with pytest.raises(OutputExistsError):
        _run(["epochs", str(session), str(tmp_path / "e.zarr"), "--raw", "--n-times", "30"])
    assert _run(["dataset", "info", str(simulated.path), "--verify"]) == 0
    info = capsys.readouterr().out
    assert "n_epochs=12" in info and "split 'block' (block)" in info and "data verified" in info
    json.loads(json.dumps(EpochDataset.open(simulated.path).attrs))


# --------------------------------------------------------------------------- parameter objects
def test_build_options_check_their_values_when_made() -> None:
    assert WindowOptions().marker_filter == "^stim/" and WindowOptions().preprocess_config() == PreprocessConfig()
    assert WindowOptions(preprocessing=None).preprocess_config() is None
    assert WindowOptions(marker_filter="").compiled_filter() is None
    with pytest.raises(ValueError, match="preprocessing='raw': pass 'default'"):
        WindowOptions(preprocessing="raw")
    with pytest.raises(TypeError, match="preprocessing must be a PreprocessConfig"):
        WindowOptions(preprocessing=3)
    with pytest.raises(ValueError, match=r"n_times=0 must be an integer >= 1"):
        WindowOptions(n_times=0)
    with pytest.raises(TypeError, match="offset='0.02' must be a number"):
        WindowOptions(offset="0.02")
    with pytest.raises(ValueError, match=r"marker_filter='\(' is not a valid regular expression"):
        WindowOptions(marker_filter="(")
    with pytest.raises(TypeError, match="data_stream must be"):
        WindowOptions(data_stream=1)
    with pytest.raises(ValueError, match="stimuli='mine': pass a StimulusSet, 'auto' or None"):
        LabelOptions(stimuli="mine")
    with pytest.raises(TypeError, match="stimuli must be a StimulusSet, 'auto' or None, got int"):
        LabelOptions(stimuli=1)
    with pytest.raises(TypeError, match="class_names='dog' must be a sequence"):
        LabelOptions(class_names="dog")
    with pytest.raises(ValueError, match=r"block_gap=0 must be > 0"):
        LabelOptions(block_gap=0)
    with pytest.raises(TypeError, match="subject=True must be a str or int"):
        LabelOptions(subject=True)
    assert SimulationOptions().n_classes == 40
    with pytest.raises(ValueError, match=r"n_classes=41 must be an integer >= 1 and <= 40"):
        SimulationOptions(n_classes=41)
    with pytest.raises(TypeError, match="n_classes=True must be an integer"):
        SimulationOptions(n_classes=True)
    with pytest.raises(ValueError, match="snr=-1.0 must be >= 0"):
        SimulationOptions(snr=-1.0)
    with pytest.raises(ValueError, match="design='mixed' is not one of 'block', 'rapid'"):
        SimulationOptions(design="mixed")


def test_builders_refuse_other_objects_for_their_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="window must be WindowOptions"):
        epochs_from_sessions([tmp_path], tmp_path / "ds.zarr", {"n_times": 50})
    with pytest.raises(TypeError, match="simulation must be SimulationOptions"):
        epochs_from_simulation(tmp_path / "ds.zarr", WindowOptions())
    assert not (tmp_path / "ds.zarr").exists()
