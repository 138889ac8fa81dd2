"""BIDS out and in: ``bci export bids`` / ``bci import bids`` with real mne-bids files and real Zarr sessions."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bci.cli.main import main
from offline.exporters.bids import GAP_TRIAL_TYPE, BidsExportOptions, bids_path, export_bids, lsl_paths
from offline.importers.bids import BidsImportOptions, import_bids
from streams.description import StreamDescription
from streams.session import SessionReader, SessionWriter
from streams.synthetic.markers import parse_marker

mne = pytest.importorskip("mne")
mne_bids = pytest.importorskip("mne_bids")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12 s session written by ``bci simulate --out`` (128 channels at 1 kHz, with markers)."""
    path = tmp_path_factory.mktemp("sim") / "sim.zarr"
    assert main(["simulate", "--duration", "12", "--seed", "3", "--out", str(path)]) == 0
    return path


def _events_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _lsl_session(path: Path, rng: np.random.Generator) -> Path:
    """A session the simulator cannot make: jittered timestamps, a gap, a marker before the data, results."""
    sfreq, n = 250.0, 2000
    times = 1000.0 + np.arange(n) / sfreq + rng.normal(0, 1e-5, n)
    times[1200:] += 0.75  # a 0.75 s recording gap
    names = ("Fp1", "Fz", "Cz", "Pz", "O1", "O2")
    data = (rng.standard_normal((n, len(names))) * 1e-5).astype(np.float32)
    marker_t = np.array([999.5, times[100] + 0.0013, times[700], times[1500], times[1999]])
    markers = ["block_start/0", "stim/img0003/red triangle", "stim/img0007", "9", "block_end/0"]
    with SessionWriter(path, attrs={"subject": "P07", "channel_map": {"Fp1": "EEG 1"}}) as w:
        g = w.add_stream(StreamDescription("Gaze", "Gaze", "eye-1", ("x", "y"), nominal_rate=60.0, dtype="float64"))
        w.append(g, rng.random((300, 2)), 1000.0 + np.arange(300) / 60.0)
        e = w.add_stream(StreamDescription("Notes", "Annotations", "notes-1", ("text",), dtype="string"))
        w.append(e, np.array([["subject moved"]], dtype=object), np.array([1003.25]))
        k = w.add_stream(StreamDescription("amp: 1", "EEG", "amp-serial-42", names, nominal_rate=sfreq,
                                           hostname="labpc"))
        w.set_attrs(k, impedances_kohm=[5, 6, 5, 7, 9, 8])
        for start in range(0, n, 300):
            w.append(k, data[start:start + 300], times[start:start + 300])
        w.add_gap(k, float(times[1199]), float(times[1200]), "inlet lost the stream")
        m = w.add_stream(StreamDescription("amp-Markers", "Markers", "markers-1", ("marker",), dtype="string"))
        w.append(m, np.array(markers, dtype=object)[:, None], marker_t)
        r = w.add_stream(StreamDescription("BCIResults", "BCIResults", "res-1", ("record",), dtype="string"))
        w.append(r, np.array([['{"top": ["img0003"], "note": "a\\tb"}'], ['{"top": []}']], dtype=object),
                 np.array([times[300], times[1600]]))
    return path


def _same_session(a: SessionReader, b: SessionReader) -> None:
    assert a.streams == b.streams
    for k in a.streams:
        assert a.description(k) == b.description(k)
        assert a.description(k).hostname == b.description(k).hostname
        assert np.array_equal(a.times(k), b.times(k))
        if a.description(k).is_string:
            assert a.data(k).tolist() == b.data(k).tolist()
        else:
            assert a.data(k).dtype == b.data(k).dtype
            assert np.array_equal(a.data(k), b.data(k))
        assert a.gaps(k) == b.gaps(k)
        user = {n: v for n, v in a.stream_attrs(k).items() if n not in ("index", "flush_rows", "n_samples")}
        assert {n: b.stream_attrs(k).get(n) for n in user} == user


def test_export_reads_back_sample_for_sample_with_mne_bids(sim: Path, tmp_path: Path) -> None:
    root = tmp_path / "bids"
    assert main(["export", "bids", str(sim), str(root), "--subject", "01", "--task", "images", "--no-progress"]) == 0
    store = SessionReader(sim)
    bp = bids_path(root, "01", None, "images", None)
    raw = mne_bids.read_raw_bids(bp, verbose="error")
    # data: BrainVision float32 in volts is bit-exact for the float32 store
    assert raw.ch_names == list(store.description("SimEEG").channel_names)
    assert np.array_equal(raw.get_data().T.astype(np.float32), store.data("SimEEG"))
    # events: every marker, at its sample, with its exact string, image id and label
    t, values = store.markers()
    samples = np.rint((t - store.times("SimEEG")[0]) * 1000.0).astype(int)
    assert len(values) > 5
    assert raw.annotations.description.tolist() == values.tolist()
    assert np.array_equal(np.rint(raw.annotations.onset * 1000.0).astype(int), samples)
    rows = _events_tsv(Path(bp.copy().update(suffix="events", extension=".tsv").fpath))
    assert [r["trial_type"] for r in rows] == values.tolist()
    assert [int(r["sample"]) for r in rows] == samples.tolist()
    for r, v, ti in zip(rows, values, t):
        image_id, label = parse_marker(v)
        assert (r["image_id"], r["label"]) == (image_id or "n/a", label or "n/a")
        assert float(r["lsl_time"]) == ti
    channels = _events_tsv(Path(bp.copy().update(suffix="channels", extension=".tsv").fpath))
    assert {c["units"] for c in channels} == {"V"} and {c["type"] for c in channels} == {"EEG"}
    sidecar = json.loads(Path(bp.copy().update(suffix="eeg", extension=".json").fpath).read_text())
    assert sidecar["LSLStream"]["name"] == "SimEEG" and sidecar["SamplingFrequency"] == 1000.0
    assert json.loads((root / "dataset_description.json").read_text())["Name"]


def test_export_import_round_trips_timestamps_gaps_markers_and_results(tmp_path: Path,
                                                                       rng: np.random.Generator) -> None:
    src = _lsl_session(tmp_path / "rec.zarr", rng)
    root = tmp_path / "bids"
    result = export_bids(BidsExportOptions(src, root, subject="P07", session_label="2", run="1"))
    assert result.n_gaps == 1 and result.n_markers_outside == 1 and result.results_file is not None
    assert result.in_sourcedata == ["Gaze", "Notes"]
    # the gap is a BAD_gap event at the last sample before it; the marker before the data is not an event
    rows = _events_tsv(result.events_file)
    gap = [r for r in rows if r["trial_type"] == GAP_TRIAL_TYPE]
    assert [int(r["sample"]) for r in gap] == [1199]
    assert [r["trial_type"] for r in rows if r["trial_type"] != GAP_TRIAL_TYPE] == [
        "stim/img0003/red triangle", "stim/img0007", "9", "block_end/0"]
    deriv = json.loads((root / "derivatives" / "bci" / "dataset_description.json").read_text())
    assert deriv["DatasetType"] == "derivative"
    assert len(_events_tsv(result.results_file)) == 2
    out = tmp_path / "back.zarr"
    assert main(["import", "bids", str(root), "--subject", "P07", str(out), "--no-progress"]) == 0
    back = SessionReader(out)
    _same_session(SessionReader(src), back)
    assert back.attrs["subject"] == "P07" and back.attrs["channel_map"] == {"Fp1": "EEG 1"}
    assert back.attrs["imported_from"]["lsl_restored"] is True


def test_skip_damaged_exports_around_a_damaged_chunk_as_a_bad_gap(sim: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    session = Path(shutil.copytree(sim, tmp_path / "damaged.zarr"))
    chunk = session / "streams" / "SimEEG" / "data" / "c" / "5" / "0"  # samples 5000-5999, 5.000-5.999 s
    raw_bytes = bytearray(chunk.read_bytes())  # 100 seeded random bytes over the chunk file, as test_integrity does
    raw_bytes[200:300] = np.random.default_rng(0).integers(0, 256, 100, dtype=np.uint8).tobytes()
    chunk.write_bytes(bytes(raw_bytes))
    root = tmp_path / "bids"
    args = ["export", "bids", str(session), str(root), "--subject", "01", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'data' chunk 5 (samples 5000-5999, 5.000-5.999 s): checksum mismatch" in err
    assert not root.exists()  # nothing written before the damage was found
    assert main([*args, "--skip-damaged"]) == 0
    out = capsys.readouterr().out
    assert "skipped damaged chunks of 'SimEEG': 1000 samples, 1.000 s in 1 chunk(s): samples 5000-5999" in out
    assert "events:" in out and "1 gap(s) as BAD_gap" in out
    skip = SessionReader(session, skip_damaged=True)
    bp = bids_path(root, "01", None, "bci", None)
    raw = mne_bids.read_raw_bids(bp, verbose="error")
    assert raw.n_times == 11000  # the damaged samples are left out, nothing filled in
    assert np.array_equal(raw.get_data().T.astype(np.float32), skip.data("SimEEG"))
    rows = _events_tsv(Path(bp.copy().update(suffix="events", extension=".tsv").fpath))
    gap = [r for r in rows if r["trial_type"] == GAP_TRIAL_TYPE]
    assert [int(r["sample"]) for r in gap] == [4999]  # the last sample before the damage, as any gap
    assert float(gap[0]["lsl_time"]) == skip.times("SimEEG")[4999]
    markers = [r["trial_type"] for r in rows if r["trial_type"] != GAP_TRIAL_TYPE]
    assert markers == skip.markers()[1].tolist()  # every marker, also those in the damaged second
    back = import_bids(BidsImportOptions(root, tmp_path / "back.zarr", subject="01"))
    restored = SessionReader(back)
    assert np.array_equal(restored.times("SimEEG"), skip.times("SimEEG"))
    assert restored.gaps("SimEEG") == skip.gaps("SimEEG")
    assert restored.gaps("SimEEG")[-1]["reason"].startswith("damaged chunk: stream 'SimEEG' 'data' chunk 5")


def test_foreign_bids_dataset_imports_and_cuts_epochs(tmp_path: Path, rng: np.random.Generator) -> None:
    from offline.data.build import LabelOptions, WindowOptions, epochs_from_sessions
    from offline.data.epochs import EpochDataset

    sfreq, n = 200.0, 4000
    info = mne.create_info(["Oz", "O1", "O2", "Pz"], sfreq, "eeg")
    raw = mne.io.RawArray(rng.standard_normal((4, n)) * 1e-5, info, verbose=False)
    onsets = np.arange(1.0, 19.0, 1.5)
    kinds = ["face" if i % 2 else "house" for i in range(len(onsets))]
    # bad segments: over the window of the 3rd stimulus, a zero-length one in the 6th's, one at the 9th's onset
    # (as bci export bids writes a gap), one far from any window
    bad = {"BAD_muscle": (onsets[2] + 0.1, 0.3), "bad_blink": (onsets[5] + 0.05, 0.0),
           "BAD_gap": (onsets[8], 1 / sfreq), "BAD_drift": (19.5, 0.3)}
    raw.set_annotations(mne.Annotations([*onsets, *(o for o, _ in bad.values())],
                                        [0.0] * len(onsets) + [d for _, d in bad.values()], [*kinds, *bad]))
    root = tmp_path / "ds"
    mne_bids.write_raw_bids(raw, mne_bids.BIDSPath(subject="03", task="faces", root=root, datatype="eeg"),
                            event_id={"face": 1, "house": 2, **{b: 10 + i for i, b in enumerate(bad)}},
                            format="BrainVision", allow_preload=True,
                            verbose="error")
    session = import_bids(BidsImportOptions(root, tmp_path / "s.zarr", subject="03",
                                            event_map={"face": ("face01", "face"), "house": ("house01", "house")}))
    reader = SessionReader(session)
    t, values = reader.markers()
    stim = values.astype(str).tolist()
    assert [v for v in stim if v.startswith("stim/")] == [f"stim/{k}01/{k}" for k in kinds]
    assert np.allclose(t[[v.startswith("stim/") for v in stim]], onsets)
    assert sorted(v for v in stim if not v.startswith("stim/")) == sorted(f"event/{b}" for b in bad)
    assert reader.attrs["imported_from"]["lsl_restored"] is False
    window = WindowOptions(preprocessing=None, n_times=40)
    report = epochs_from_sessions([session], tmp_path / "epochs.zarr", window, LabelOptions(stimuli=None), splits=[])
    # every BAD annotation is a gap: the three windows it touches are dropped, naming it, the others cut
    assert report.n_epochs == len(onsets) - 3 and report.dropped == {"gap": 3}
    dropped = report.sessions[0]["dropped_markers"]
    assert [d["marker_time"] for d in dropped] == pytest.approx(onsets[[2, 5, 8]])
    for d, name in zip(dropped, ["BAD_muscle", "bad_blink", "BAD_gap"]):
        assert d["reason"] == "gap" and f"annotation 'event/{name}' at {bad[name][0]:.3f} s" in d["detail"], d
    assert [b["n_samples"] for b in report.sessions[0]["bad_annotations"]] == [60, 1, 1, 60]
    assert "left out BAD annotations (as gaps): 4, 122 samples" in str(report)
    # mne's reject_by_annotation drops the same epochs, and keeps the one whose marker (not window) is bad
    events = np.c_[np.rint(onsets * sfreq).astype(int), np.zeros(len(onsets), int), np.ones(len(onsets), int)]
    mne_epochs = mne.Epochs(raw, events, tmin=window.offset or 0.02, tmax=(window.offset or 0.02) + 39 / sfreq,
                            baseline=None, reject_by_annotation=True, preload=True, verbose="error")
    ds = EpochDataset.open(tmp_path / "epochs.zarr")
    assert mne_epochs.selection.tolist() == [0, 1, 3, 4, 6, 7, 8, 9, 10, 11]
    assert np.allclose(ds.marker_time, onsets[[0, 1, 3, 4, 6, 7, 9, 10, 11]])
    assert (ds.n_epochs, ds.n_channels, ds.n_times) == (len(onsets) - 3, 4, 40)
    assert sorted(ds.class_names) == ["face", "house"]


def test_edf_export_is_readable_and_close(sim: Path, tmp_path: Path) -> None:
    pytest.importorskip("edfio")
    root = tmp_path / "edf"
    result = export_bids(BidsExportOptions(sim, root, subject="01", format="EDF"))
    assert result.data_file.suffix == ".edf"
    raw = mne_bids.read_raw_bids(bids_path(root, "01", None, "bci", None), verbose="error")
    store = SessionReader(sim).data("SimEEG").T.astype(np.float64)
    span = store.max(axis=1) - store.min(axis=1)
    err = np.abs(raw.get_data() - store).max(axis=1)
    assert np.all(err <= span / 2**15)  # 16-bit: lossy, within one step of each channel's range
    assert raw.annotations.description.tolist() == SessionReader(sim).markers()[1].tolist()


def test_export_and_import_draw_a_bar_on_a_terminal_only(sim: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_mne_epochs import _stderr_on_a_terminal

    root = str(tmp_path / "bids")
    runs = [(["export", "bids", str(sim), root, "--subject", "01"], "bids export: "),
            (["export", "bids", str(sim), root, "--subject", "02", "--no-progress"], None),
            (["import", "bids", root, "--subject", "01", str(tmp_path / "a.zarr")], "samples: "),
            (["import", "bids", root, "--subject", "02", str(tmp_path / "b.zarr"), "--no-progress"], None)]
    for argv, bar in runs:
        status, shown = _stderr_on_a_terminal(monkeypatch, argv)
        assert status == 0, shown
        assert (bar in shown and "%|" in shown) if bar else "%|" not in shown, (argv, shown)


# --------------------------------------------------------------------------- bad input
def test_import_refuses_a_folder_that_is_not_bids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hello")
    assert main(["import", "bids", str(tmp_path / "random"), "--subject", "01", str(tmp_path / "o.zarr")]) == 2
    assert "not a BIDS dataset" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="BIDS_ROOT"):
        BidsImportOptions(tmp_path / "missing", tmp_path / "o.zarr", subject="01")


def test_import_unknown_subject_lists_the_subjects(sim: Path, tmp_path: Path) -> None:
    root = tmp_path / "bids"
    export_bids(BidsExportOptions(sim, root, subject="01"))
    export_bids(BidsExportOptions(sim, root, subject="02"))  # a second subject joins the dataset
    with pytest.raises(ValueError, match=r"--subject '9' is not in .*01, 02"):
        import_bids(BidsImportOptions(root, tmp_path / "o.zarr", subject="9"))


def test_several_recordings_need_a_choice(sim: Path, tmp_path: Path) -> None:
    root = tmp_path / "bids"
    for run in ("1", "2"):
        export_bids(BidsExportOptions(sim, root, subject="01", run=run))
    with pytest.raises(ValueError, match=r"2 matching EEG recordings: sub-01_task-bci_run-1_eeg.vhdr, "
                                         r"sub-01_task-bci_run-2_eeg.vhdr; choose one with --session/--task/--run"):
        import_bids(BidsImportOptions(root, tmp_path / "o.zarr", subject="01"))
    out = import_bids(BidsImportOptions(root, tmp_path / "o.zarr", subject="01", run="2"))
    assert SessionReader(out).attrs["imported_from"]["entities"]["run"] == "2"
    with pytest.raises(ValueError, match="no EEG recording of sub-01 matches"):
        import_bids(BidsImportOptions(root, tmp_path / "p.zarr", subject="01", run="3"))


def test_export_refuses_non_bids_folders_and_existing_recordings(sim: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "thesis.pdf").write_text("x")
    args = ["export", "bids", str(sim), str(full), "--subject", "01"]
    assert main(args) == 2
    assert "not empty and not a BIDS dataset" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 2  # never written into, never deleted
    assert sorted(p.name for p in full.iterdir()) == ["thesis.pdf"]
    root = tmp_path / "bids"
    export_bids(BidsExportOptions(sim, root, subject="01"))
    with pytest.raises(FileExistsError, match="already holds recording sub-01_task-bci.*--overwrite"):
        export_bids(BidsExportOptions(sim, root, subject="01"))
    export_bids(BidsExportOptions(sim, root, subject="01", run="1"))  # another recording: no --overwrite needed
    pytest.importorskip("edfio")
    export_bids(BidsExportOptions(sim, root, subject="01", format="EDF", overwrite=True))
    assert lsl_paths(bids_path(root, "01", None, "bci", None))[1].is_file()
    eeg = sorted(p.name for p in (root / "sub-01" / "eeg").glob("*_eeg.*"))
    assert eeg == ["sub-01_task-bci_eeg.edf", "sub-01_task-bci_eeg.json", "sub-01_task-bci_run-1_eeg.eeg",
                   "sub-01_task-bci_run-1_eeg.json", "sub-01_task-bci_run-1_eeg.vhdr", "sub-01_task-bci_run-1_eeg.vmrk"]
    empty = tmp_path / "empty.zarr"
    with SessionWriter(empty) as w:
        w.add_stream(StreamDescription("E", "EEG", "e", ("Cz",), nominal_rate=100.0))
    with pytest.raises(ValueError, match="has no samples"):
        export_bids(BidsExportOptions(empty, root, subject="01", run="1", overwrite=True))
    assert (root / "sub-01" / "eeg" / "sub-01_task-bci_run-1_eeg.vhdr").is_file()  # a failed export deletes nothing
    scans = _events_tsv(root / "sub-01" / "sub-01_scans.tsv")
    assert sorted(r["filename"] for r in scans) == ["eeg/sub-01_task-bci_eeg.edf", "eeg/sub-01_task-bci_run-1_eeg.vhdr"]


@pytest.mark.parametrize("subject", ["sub-01", "0 1", "01_a", ""])
def test_illegal_subject_label_names_the_flag(sim: Path, tmp_path: Path, subject: str) -> None:
    with pytest.raises(ValueError, match=r"--subject=.* is not a valid BIDS label"):
        BidsExportOptions(sim, tmp_path / "b", subject=subject)
    with pytest.raises(TypeError, match="--subject"):
        BidsExportOptions(sim, tmp_path / "b", subject=1.5)
    with pytest.raises(ValueError, match="--format"):
        BidsExportOptions(sim, tmp_path / "b", subject="01", format="FIF")


@pytest.mark.parametrize("argv", [["export", "--help"], ["export", "bids", "--help"], ["import", "bids", "--help"]])
def test_help_has_an_example(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"bci {argv[0]} bids" in out
