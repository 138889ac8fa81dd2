"""Simulator over LSL (in another process), Zarr output, replay, and the round trip."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streams.recorder import Recorder
from streams.replay import SessionReplayer, plan_chunks
from streams.session import SessionReader
from streams.simulate import SimulationSpec, simulate_to_session

REPO = Path(__file__).resolve().parents[1]


def _bci(*args: str) -> list[str]:
    return [sys.executable, "-m", "bci.cli", *args]


def _record(streams: list[str], out: Path, until) -> SessionReader:
    rec = Recorder(streams, out, resolve_timeout=15).start()
    until()
    time.sleep(0.4)
    rec.stop()
    return SessionReader(out)


def test_simulate_to_zarr_is_deterministic(tmp_path: Path) -> None:
    spec = SimulationSpec(name="S", duration=3.0, seed=7)
    a = SessionReader(simulate_to_session(spec, tmp_path / "a.zarr"))
    b = SessionReader(simulate_to_session(spec, tmp_path / "b.zarr"))
    key = a.find("type=EEG")
    assert a.data(key).shape == (3000, 128) and a.data(key).dtype == np.float32
    np.testing.assert_array_equal(a.data(key), b.data(b.find("type=EEG")))
    np.testing.assert_array_equal(a.times(key), np.arange(3000) / 1000.0)
    t, values = a.markers()
    assert len(values) > 0 and all(v.startswith(("stim/", "block_")) for v in values)
    # every marker time is exactly a sample time (the timing rule)
    assert np.all(np.isin(np.round(t * 1000), np.arange(3000)))
    assert a.attrs["synthetic"] is True


def test_simulate_fmri_to_zarr(tmp_path: Path) -> None:
    reader = SessionReader(simulate_to_session(SimulationSpec(name="F", modality="fmri", duration=120.0),
                                               tmp_path / "f.zarr"))
    key = reader.find("type=fMRI")
    assert reader.data(key).shape == (60, 967)
    assert reader.description(key).nominal_rate == pytest.approx(0.5)


def test_simulate_writes_the_stimuli_its_markers_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--stimuli DIR: every stim marker's image id is a file there, labels as the markers say; a gallery folder."""
    from bci.cli.main import main
    from bci.retrieval.gallery import images_from_folder
    from streams.synthetic.stimuli import make_binary_patterns

    for modality, duration in (("fmri", "120"), ("eeg", "20")):
        out, folder = tmp_path / f"{modality}.zarr", tmp_path / f"{modality}-stimuli"
        assert main(["simulate", "--modality", modality, "--duration", duration, "--seed", "2", "--out", str(out),
                     "--stimuli", str(folder)]) == 0
        _, values = SessionReader(out).markers()
        stim = [v.split("/") for v in values if v.startswith("stim/")]
        assert len(stim) >= 8
        images, ids, labels, _ = images_from_folder(folder, size=60)
        label_of = dict(zip(ids, labels))
        for _, image_id, label in stim:
            assert label_of[image_id] == label
        if modality == "fmri":  # the pattern a marker names is the one shown at that trial
            shown = make_binary_patterns(10, seed=2)
            for _, image_id, _ in stim:
                k = int(image_id[len("pattern"):])
                np.testing.assert_array_equal(images[ids.index(image_id)][3::6, 3::6, 0] > 127, shown[k] > 0)
    assert main(["simulate", "--duration", "5", "--out", str(tmp_path / "x.zarr"), "--stimuli", str(folder)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


def test_live_simulation_from_cli_matches_offline(tmp_path: Path, unique_name: str) -> None:
    """`bci simulate` in another process, recorded live == the same world written straight to Zarr."""
    proc = subprocess.Popen(_bci("simulate", "--name", unique_name, "--duration", "3", "--seed", "3",
                                 "--wait-for-consumers", "30"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        live = _record([unique_name, unique_name + "-Markers"], tmp_path / "live.zarr",
                       lambda: proc.wait(60))
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err
    offline = SessionReader(simulate_to_session(SimulationSpec(name=unique_name, duration=3.0, seed=3),
                                                tmp_path / "off.zarr"))
    key = live.find("type=EEG")
    data, times = live.data(key), live.times(key)
    ref = offline.data(offline.find("type=EEG"))
    assert len(data) == len(ref) == 3000
    np.testing.assert_array_equal(data, ref)
    # markers keep their sample-exact relation to the data
    t_live, v_live = live.markers()
    t_off, v_off = offline.markers()
    assert list(v_live) == list(v_off)
    idx_live = np.round((t_live - times[0]) * 1000).astype(int)
    np.testing.assert_array_equal(idx_live, np.round(t_off * 1000).astype(int))


def test_round_trip_simulate_record_replay_record(tmp_path: Path, unique_name: str) -> None:
    """simulate → record → replay → record: bit-identical data, timestamps within 1 ms."""
    first = SessionReader(simulate_to_session(SimulationSpec(name=unique_name, duration=4.0, seed=1),
                                              tmp_path / "sim.zarr"))
    assert len(first.markers()[0]) >= 2
    replayer = SessionReplayer(first, speed=1.0, name_suffix="-rp")
    replayer.open()
    names = [d.name for d in replayer.descs]
    thread = threading.Thread(target=replayer.play)
    second = _record(names, tmp_path / "second.zarr", lambda: (thread.start(), thread.join(30)))
    replayer.close()
    for key in first.streams:
        name = first.description(key).name + "-rp"
        k2 = second.find(name)
        d1, d2 = first.data(key), second.data(k2)
        assert d1.shape == d2.shape
        if first.description(key).is_string:
            assert list(d1[:, 0]) == list(d2[:, 0])
        else:
            np.testing.assert_array_equal(d1, d2)
    # relative timing across both streams is preserved within 1 ms
    t0_first = first.times(first.find("type=EEG"))[0]
    t0_second = second.times(second.find("type=EEG"))[0]
    for key in first.streams:
        k2 = second.find(first.description(key).name + "-rp")
        err = np.abs((second.times(k2) - t0_second) - (first.times(key) - t0_first))
        assert err.max() < 1e-3


def test_replay_speed_scales_time(tmp_path: Path, unique_name: str) -> None:
    first = SessionReader(simulate_to_session(SimulationSpec(name=unique_name, duration=2.0, seed=2),
                                              tmp_path / "sim.zarr"))
    replayer = SessionReplayer(first, speed=4.0, streams=["type=EEG"], name_suffix="-fast")
    replayer.open()
    thread = threading.Thread(target=replayer.play)
    started = time.monotonic()
    second = _record([replayer.descs[0].name], tmp_path / "fast.zarr", lambda: (thread.start(), thread.join(30)))
    replayer.close()
    assert time.monotonic() - started < 10
    t = second.times(second.streams[0])
    assert len(t) == 2000
    np.testing.assert_allclose(np.diff(t), 1 / 4000.0, atol=1e-4)


def test_plan_chunks_merges_streams_in_time_order() -> None:
    plan = plan_chunks([np.arange(10) / 10.0, np.array([0.05, 0.45])], [4, 1])
    assert list(plan.due) == sorted(plan.due)
    assert list(zip(plan.stream, plan.start, plan.stop)) == [(1, 0, 1), (0, 0, 4), (1, 1, 2), (0, 4, 8), (0, 8, 10)]


def test_replay_rejects_bad_speed(tmp_path: Path) -> None:
    path = simulate_to_session(SimulationSpec(name="S", duration=1.0), tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="speed=0"):
        SessionReplayer(path, speed=0)
