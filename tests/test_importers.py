"""Session importers (MNE raw files, XDF), the image folder reader and the ``bci import`` CLI.

Every input is a real file in its real format, written by the test: FIF with mne,
EDF with mne.export (edfio), XDF with the spec-following writer in
tests/importer_files.py. Dataset importers: tests/test_importers_datasets.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
import pytest

from offline.importers import ImportFormatError, import_raw, import_xdf, load_event_map, load_image_folder
from offline.importers._checks import normalize_event_map, parse_time_slice
from streams.session import SessionReader
from tests.importer_files import XdfStream, eeg_imagenet_content, write_eeg_imagenet, write_splits, write_xdf

mne = pytest.importorskip("mne")

SFREQ = 250.0


# ============================================================================ raw files
def _raw(n_seconds: float = 6.0, first_samp: int = 0, seed: int = 0) -> tuple[mne.io.RawArray, np.ndarray]:
    """3 EEG channels (volts) + 1 EOG + a stim channel with codes 5 at 1.2 s and 7 at 3.2 s."""
    rng = np.random.default_rng(seed)
    n = int(n_seconds * SFREQ)
    x = rng.normal(scale=2e-5, size=(5, n))
    x[4] = 0.0
    x[4, 300:303], x[4, 800:803] = 5, 7
    info = mne.create_info(["Fz", "Cz", "Pz", "EOG1", "STI"], SFREQ, ["eeg", "eeg", "eeg", "eog", "stim"])
    raw = mne.io.RawArray(x, info, first_samp=first_samp, verbose="error")
    return raw, x


def _fif(tmp_path: Path) -> tuple[Path, np.ndarray]:
    raw, x = _raw(first_samp=125)
    raw.set_meas_date(datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc))
    raw.set_montage(_montage(), on_missing="ignore", verbose="error")
    # onsets relative to the first sample: 1.0 s and 2.5 s after it
    raw.set_annotations(mne.Annotations([1.0, 2.5], [0.5, 0.0], ["cat", "BAD_blink"]))
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    return path, x


def _montage() -> mne.channels.DigMontage:
    pos = {"Fz": [0.0, 0.06, 0.08], "Cz": [0.0, 0.0, 0.1], "Pz": [0.0, -0.06, 0.08]}
    return mne.channels.make_dig_montage(ch_pos={k: np.array(v) for k, v in pos.items()}, coord_frame="head")


def test_fif_with_annotations_stim_events_and_event_map(tmp_path: Path) -> None:
    path, x = _fif(tmp_path)
    out = import_raw(path, tmp_path / "s.zarr", event_map={"5": ("img05", "dog"), "cat": "img_cat"})
    r = SessionReader(out)
    assert r.complete and r.streams == ["rec_raw", "rec_raw-Markers"]
    desc = r.description("rec_raw")
    assert desc.type == "EEG" and desc.nominal_rate == SFREQ and desc.dtype == "float32"
    assert desc.channel_names == ("Fz", "Cz", "Pz", "EOG1")            # stim channel -> markers only
    assert desc.channel_types == ("eeg", "eeg", "eeg", "eog") and set(desc.channel_units) == {"V"}
    data = r.data("rec_raw")
    assert data.dtype == np.float32 and data.shape == (x.shape[1], 4)
    np.testing.assert_array_equal(data, x[:4].T.astype(np.float32))
    np.testing.assert_allclose(r.times("rec_raw"), (125 + np.arange(x.shape[1])) / SFREQ, rtol=0, atol=1e-9)
    t, values = r.markers()
    # annotations: 0.5 s (first_samp) + 1.0 / 2.5; stim: (125 + 300) / 250, (125 + 800) / 250
    np.testing.assert_allclose(t, [1.5, 1.7, 3.0, 3.7], atol=1e-9)
    assert list(values) == ["stim/img_cat", "stim/img05/dog", "event/BAD_blink", "event/7"]
    mattrs = r.stream_attrs("rec_raw-Markers")
    assert mattrs["durations"] == [0.5, 0.0, 0.0, 0.0]
    assert mattrs["event_sources"] == ["annotation", "stim:STI", "annotation", "stim:STI"]
    info = r.attrs["imported_from"]
    assert (info["n_mapped"], info["n_unmapped"], info["unmapped_values"]) == (2, 2, ["7", "BAD_blink"])
    assert r.attrs["meas_date"].startswith("2021-03-04T05:06:07")
    montage = r.stream_attrs("rec_raw")["montage"]
    assert montage["coord_frame"] == "head"
    np.testing.assert_allclose(montage["ch_pos"]["Cz"], [0.0, 0.0, 0.1])


def test_fif_without_event_map_keeps_event_texts(tmp_path: Path) -> None:
    path, _ = _fif(tmp_path)
    r = SessionReader(import_raw(path, tmp_path / "s.zarr", stim_channel=[]))
    assert list(r.markers()[1]) == ["cat", "BAD_blink"]                  # no stim channel read
    assert r.description(r.streams[0]).n_channels == 5                   # STI kept as data then


def test_edf_written_by_mne_export(tmp_path: Path) -> None:
    pytest.importorskip("edfio")
    raw, x = _raw(first_samp=0)
    raw.pick(["Fz", "Cz", "Pz"])
    raw.set_annotations(mne.Annotations([0.8, 2.0], [0.0, 0.0], ["stim 1", "stim 2"]))
    path = tmp_path / "rec.edf"
    mne.export.export_raw(path, raw, verbose="error")
    out = import_raw(path, tmp_path / "s.zarr", event_map={"stim 1": ["a", "x"], "stim 2": "b"})
    r = SessionReader(out)
    key = r.streams[0]
    data = r.data(key)
    assert data.shape == (x.shape[1], 3)
    step = (x[:3].max() - x[:3].min()) / 65535                           # EDF stores 16-bit integers
    assert np.abs(data - x[:3].T).max() <= 2 * step
    np.testing.assert_allclose(r.times(key), np.arange(x.shape[1]) / SFREQ, atol=1e-9)
    t, values = r.markers()
    np.testing.assert_allclose(t, [0.8, 2.0], atol=1 / SFREQ)
    assert list(values) == ["stim/a/x", "stim/b"]


def test_imported_session_cuts_into_an_epoch_dataset(tmp_path: Path) -> None:
    """The stim/<image_id>/<label> markers are the runtime's: the epoch builder reads them."""
    from offline.data.epochs import EpochDataset
    from offline.data.build import LabelOptions, WindowOptions, epochs_from_sessions

    raw, x = _raw(n_seconds=8.0)
    raw.save(tmp_path / "r_raw.fif", verbose="error")
    session = import_raw(tmp_path / "r_raw.fif", tmp_path / "s.zarr", event_map={5: ["img5", "dog"], 7: ["img7", "cat"]})
    window = WindowOptions(preprocessing=None, n_times=25, offset=0.0)
    rep = epochs_from_sessions([session], tmp_path / "ep.zarr", window, LabelOptions(stimuli=None), splits=())
    ds = EpochDataset.open(rep.path)
    assert ds.image_ids == ["img5", "img7"] and [ds.class_names[i] for i in ds.labels] == ["dog", "cat"]
    np.testing.assert_array_equal(ds.get_batch([0])[0], x[:4, 300:325].astype(np.float32))


@pytest.mark.parametrize("suffix, content", [(".txt", b"not eeg"), (".edf", b"0       truncated header")])
def test_unreadable_raw_files_are_clear_errors(tmp_path: Path, suffix: str, content: bytes) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(ImportFormatError, match=r"mne could not read .*bad"):
        import_raw(path, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_truncated_fif_is_a_clear_error(tmp_path: Path) -> None:
    path, _ = _fif(tmp_path)
    cut = tmp_path / "cut_raw.fif"
    cut.write_bytes(path.read_bytes()[:600])
    with pytest.raises(ImportFormatError, match="cut_raw.fif"):
        import_raw(cut, tmp_path / "s.zarr")


def test_raw_argument_errors(tmp_path: Path) -> None:
    path, _ = _fif(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.fif"):
        import_raw(tmp_path / "nope.fif", tmp_path / "s.zarr")
    with pytest.raises(ImportFormatError, match=r"stim_channel \['TRIG'\]"):
        import_raw(path, tmp_path / "s.zarr", stim_channel="TRIG")
    (tmp_path / "exists.zarr").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        import_raw(path, tmp_path / "exists.zarr")
    assert import_raw(path, tmp_path / "exists.zarr", overwrite=True).exists()


# ============================================================================ event maps
def test_event_map_files_json_and_csv(tmp_path: Path) -> None:
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"1": "img1", "2": ["img2", "dog"], "S  3": {"image_id": "img3", "label": "cat"}}))
    assert load_event_map(js) == {"1": ("img1", None), "2": ("img2", "dog"), "S  3": ("img3", "cat")}
    cs = tmp_path / "m.csv"
    cs.write_text("event,image_id,label\n1,img1,dog\nStimulus/S  2,img2,\n")
    assert load_event_map(cs) == {"1": ("img1", "dog"), "Stimulus/S  2": ("img2", None)}
    assert normalize_event_map({5: "a", 6.0: "b"}) == {"5": ("a", None), "6": ("b", None)}


@pytest.mark.parametrize("mapping, match", [
    ({"1": "a/b"}, r"entry '1'.*must not contain '/'"),
    ({"1": 3}, r"entry '1' -> 3 must be an image id"),
    ({}, "is empty"),
])
def test_bad_event_map_entries(mapping: dict, match: str) -> None:
    with pytest.raises(ImportFormatError, match=match):
        normalize_event_map(mapping)


def test_bad_event_map_files(tmp_path: Path) -> None:
    cs = tmp_path / "m.csv"
    cs.write_text("code,image\n1,a\n")
    with pytest.raises(ImportFormatError, match=r"columns 'event' and 'image_id'.*\['code', 'image'\]"):
        load_event_map(cs)
    js = tmp_path / "m.json"
    js.write_text("[1, 2]")
    with pytest.raises(ImportFormatError, match="must be a JSON object"):
        load_event_map(js)


def test_time_slice_parser() -> None:
    assert parse_time_slice("20:460") == (20, 460) and parse_time_slice(":") is None
    assert parse_time_slice((0, 5)) == (0, 5) and parse_time_slice(":100") == (0, 100)
    for bad in ("460:20", "a:b", "20", "-1:5"):
        with pytest.raises(ValueError, match="time slice"):
            parse_time_slice(bad)


# ============================================================================ XDF
def _xdf_streams(rng: np.random.Generator) -> tuple[list[XdfStream], dict]:
    n = 600
    eeg = rng.normal(size=(n, 4)).astype(np.float32)
    t_eeg = 1000.0 + np.arange(n) / SFREQ
    markers = [["stim/img1/dog"], ["hello world"], ["stim/img2"]]
    t_mk = np.array([1000.5, 1001.0, 1001.75])
    gaze = rng.integers(-500, 500, size=(7, 3)).astype(np.int16)
    t_gaze = np.sort(rng.uniform(1000, 1002, size=7))
    temp = rng.normal(size=(20, 1))
    t_temp = 1000.0 + np.arange(20) / 10.0
    offsets = [(1000.0 + k, 0.25) for k in range(4)]
    drift = [(1000.0 + k, 0.01 * k) for k in range(4)]                  # clock drifting by 10 ms/s
    streams = [
        XdfStream(1, "Amp EEG", "EEG", "float32", SFREQ, eeg, t_eeg, ["Fz", "Cz", "Pz", "Oz"], ["microvolts"] * 4,
                  "amp-1", offsets),
        XdfStream(2, "Task", "Markers", "string", 0.0, markers, t_mk, None, None, "task-1", offsets),
        XdfStream(3, "Gaze", "Gaze", "int16", 0.0, gaze, t_gaze, ["x", "x", "y"], None, "gaze-1", drift),
        XdfStream(4, "Temp", "Temperature", "double64", 10.0, temp, t_temp, None, None, "temp-1", offsets),
    ]
    truth = {"eeg": (eeg, t_eeg), "markers": (markers, t_mk), "gaze": (gaze, t_gaze), "temp": (temp, t_temp)}
    return streams, truth


def test_xdf_every_stream_clock_corrected(tmp_path: Path, rng: np.random.Generator) -> None:
    streams, truth = _xdf_streams(rng)
    path = write_xdf(tmp_path / "rec.xdf", streams, chunk=64)
    r = SessionReader(import_xdf(path, tmp_path / "s.zarr"))
    assert r.streams == ["Amp_EEG", "Task", "Gaze", "Temp"]
    d = r.description("Amp_EEG")
    assert (d.type, d.source_id, d.nominal_rate, d.dtype) == ("EEG", "amp-1", SFREQ, "float32")
    assert d.channel_names == ("Fz", "Cz", "Pz", "Oz") and d.channel_units == ("microvolts",) * 4
    eeg, t_eeg = truth["eeg"]
    np.testing.assert_array_equal(r.data("Amp_EEG"), eeg)
    np.testing.assert_allclose(r.times("Amp_EEG"), t_eeg + 0.25, atol=1e-9)    # constant offset applied
    t, values = r.markers("Task")
    assert list(values) == ["stim/img1/dog", "hello world", "stim/img2"]
    np.testing.assert_allclose(t, truth["markers"][1] + 0.25, atol=1e-9)
    gaze, t_gaze = truth["gaze"]
    dg = r.description("Gaze")
    assert dg.dtype == "int16" and dg.channel_names == ("x", "x-2", "y") and not dg.is_regular
    np.testing.assert_array_equal(r.data("Gaze"), gaze)
    np.testing.assert_allclose(r.times("Gaze"), t_gaze + 0.01 * (t_gaze - 1000.0), atol=1e-9)  # drift fitted
    assert r.description("Temp").channel_names == ("ch001",) and r.data("Temp").dtype == np.float64
    xdf = r.stream_attrs("Amp_EEG")["xdf"]
    assert xdf["n_clock_offsets"] == 4 and xdf["footer"]["sample_count"] == "600"
    assert xdf["desc"]["channels"][0]["channel"][0]["label"] == ["Fz"]
    assert r.attrs["imported_from"]["problems"] == []


def test_xdf_jitter_removed_and_breaks_recorded_as_gaps(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 1500
    true_t = 50.0 + np.arange(n) / SFREQ
    true_t[900:] += 3.0                                                  # a 3 s break (750 samples)
    jittered = true_t + rng.uniform(-1e-3, 1e-3, size=n)
    s = XdfStream(1, "EEG", "EEG", "float32", SFREQ, rng.normal(size=(n, 2)).astype(np.float32), jittered,
                  ["a", "b"], None, "e", [(50.0 + k, 0.0) for k in range(3)])
    r = SessionReader(import_xdf(write_xdf(tmp_path / "j.xdf", [s]), tmp_path / "s.zarr"))
    t = r.times("EEG")
    assert np.abs(t - true_t).max() < 2e-4 < np.abs(jittered - true_t).max()
    gaps = r.gaps("EEG")
    assert len(gaps) == 1 and gaps[0]["start_time"] == pytest.approx(t[899]) and gaps[0]["end_time"] == pytest.approx(t[900])


def test_truncated_xdf_refused_unless_allow_damaged(tmp_path: Path, rng: np.random.Generator) -> None:
    streams, _ = _xdf_streams(rng)
    full = write_xdf(tmp_path / "full.xdf", streams, chunk=64).read_bytes()
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(ImportFormatError, match=r"cut\.xdf.*damaged.*allow_damaged=True"):
        import_xdf(cut, tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()
    r = SessionReader(import_xdf(cut, tmp_path / "b.zarr", allow_damaged=True))
    n = r.n_samples("Amp_EEG")
    assert 0 < n < 600 and n % 64 == 0                                   # whole intact chunks only
    assert r.attrs["imported_from"]["problems"]


@pytest.mark.parametrize("make, match", [
    (lambda full: b"", r"not an XDF file: it starts with b''"),
    (lambda full: b"PK\x03\x04 zip", "not an XDF file"),
    (lambda full: full[:60], r"header, footer or clock-offset chunk"),
    (lambda full: full[:4], "holds no stream"),
])
def test_malformed_xdf_files(tmp_path: Path, rng: np.random.Generator, make, match: str) -> None:
    streams, _ = _xdf_streams(rng)
    full = write_xdf(tmp_path / "full.xdf", streams).read_bytes()
    bad = tmp_path / "bad.xdf"
    bad.write_bytes(make(full))
    with pytest.raises(ImportFormatError, match=match):
        import_xdf(bad, tmp_path / "s.zarr")


# ============================================================================ images
def _solid(path: Path, size: tuple[int, int], rgb: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def test_image_folder_report(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _solid(root / "n001" / "n001_1.JPEG", (40, 30), (200, 10, 10))
    _solid(root / "n001_2.png", (16, 16), (0, 255, 0))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    names = ["n001_1", "n001_2.png", "missing_1", "broken", "missing_2"]
    images, report = load_image_folder(root, names, size=8)
    assert images.shape == (5, 8, 8, 3) and images.dtype == np.uint8
    assert np.abs(images[0].astype(int) - [200, 10, 10]).max() <= 3     # JPEG: close to the colour
    assert (images[1] == [0, 255, 0]).all() and not images[2:].any()
    assert (report.found, report.missing) == (2, ["missing_1", "missing_2"])
    assert len(report.undecodable) == 1 and report.undecodable[0].startswith("broken:")
    text = report.summary()
    assert "2/5" in text and "2 missing" in text and "missing_1" in text and "1 undecodable" in text
    with pytest.raises(FileNotFoundError, match="image folder"):
        load_image_folder(tmp_path / "nope", names)
    with pytest.raises(ValueError, match="size"):
        load_image_folder(root, names, size=0)


# ============================================================================ CLI
def _run_cli(argv: list[str]) -> int:
    """Parse with the real sub-command wiring (bci/cli/main.py's _add_parser) and run the handler."""
    from bci.cli.main import _add_parser
    from offline.cli.imports import register

    parser = argparse.ArgumentParser(prog="bci")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub, _add_parser)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_eeg_imagenet_with_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content = eeg_imagenet_content(n_subjects=3, n_classes=3, per_class=2, n_channels=4)
    pth = write_eeg_imagenet(tmp_path / "eeg.pth", content)
    splits = write_splits(tmp_path / "splits.pth", len(content["dataset"]))
    assert _run_cli(["import", "eeg-imagenet", str(pth), "--splits", str(splits), str(tmp_path / "ds"),
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "18 epochs x 4 channels x 440 samples at 1000 Hz" in out
    assert "split block (block)" in out and "split published-1 (custom)" in out and "LEAKS" in out
    assert "bci check-splits" in out


def test_cli_raw_xdf_fmri_and_help(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   rng: np.random.Generator) -> None:
    path, _ = _fif(tmp_path)
    emap = tmp_path / "ev.csv"
    emap.write_text("event,image_id,label\n5,img5,dog\n")
    assert _run_cli(["import", "raw", str(path), str(tmp_path / "r.zarr"), "--event-map", str(emap)]) == 0
    out = capsys.readouterr().out
    assert "rec_raw: type EEG, 4 ch, 250 Hz, 1500 samples" in out and "1 mapped" in out
    streams, _ = _xdf_streams(rng)
    xdf = write_xdf(tmp_path / "x.xdf", streams)
    assert _run_cli(["import", "xdf", str(xdf), str(tmp_path / "x.zarr")]) == 0
    assert "Task: type Markers, 1 ch, irregular, 3 samples" in capsys.readouterr().out
    np.savez(tmp_path / "f.npz", voxels=rng.normal(size=(8, 5)), labels=np.array(list("abab" * 2)),
             run=np.repeat([1, 2, 3, 4], 2))
    assert _run_cli(["import", "fmri", str(tmp_path / "f.npz"), str(tmp_path / "f"), "--test-runs", "4",
                     "--offset", "4.5"]) == 0
    assert "8 epochs x 5 channels x 1 samples at 0.5 Hz" in capsys.readouterr().out
    from offline.data.epochs import EpochDataset

    assert EpochDataset.open(tmp_path / "f").attrs["window"]["offset"] == 4.5
    with pytest.raises(SystemExit):
        _run_cli(["import", "fmri", str(tmp_path / "f.npz"), str(tmp_path / "g"), "--offset", "inf"])
    assert "argument --offset: must be a finite number, got 'inf'" in capsys.readouterr().err
    for fmt in ("raw", "xdf", "eeg-imagenet", "things-eeg2", "fmri"):
        with pytest.raises(SystemExit):
            _run_cli(["import", fmt, "--help"])
        assert f"example:\n  bci import {fmt}" in capsys.readouterr().out


def test_cli_things_without_trust_pickle_is_refused(tmp_path: Path) -> None:
    from offline.importers import UnsafeFileError
    from tests.importer_files import things_content, write_things

    tr = write_things(tmp_path / "train.npy", things_content(4, 2))
    te = write_things(tmp_path / "test.npy", things_content(2, 3))
    with pytest.raises(UnsafeFileError, match=r"--trust-pickle") as info:
        _run_cli(["import", "things-eeg2", str(tr), str(te), str(tmp_path / "t")])
    assert isinstance(info.value, ValueError)                            # bci/cli/main.py prints it, exit 2
    assert not (tmp_path / "t").exists()
