"""The decoding pipeline end to end: Zarr replay at max speed, live LSL, and their equality."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.runtime.assemble import load_encoder, make_sinks, pipeline_factory
from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.runtime.sinks import ListSink
from bci.preprocessing import PreprocessConfig
from bci.runtime.live import LiveRuntime
from bci.runtime.replay import decode_session
from streams.replay import SessionReplayer
from streams.session import SessionReader
from streams.simulate import SimulationSpec, simulate_to_session

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> SessionReader:
    path = tmp_path_factory.mktemp("sess") / "sim.zarr"
    return SessionReader(simulate_to_session(SimulationSpec(name="PipeSim", duration=6.0, seed=4), path))


def _checkpoint(path: Path, preprocessing: dict | None = None) -> Path:
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_classes=40)
    if preprocessing is not None:
        cfg = cfg.replace(preprocessing=preprocessing)
    return save_checkpoint(build_model(cfg), path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("model") / "ck", PreprocessConfig().to_dict())


@pytest.fixture(scope="module")
def raw_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("model") / "raw")


def _decode_offline(session: SessionReader, model: Path, chunk_size: int = 10) -> list[dict]:
    encoder = load_encoder(model, device="cpu")
    sink = ListSink()
    pipeline = pipeline_factory(encoder, [sink])(session.description(session.find("type=EEG")))
    decode_session(session, pipeline, data_key=session.find("type=EEG"), marker_key=session.marker_keys()[0],
                   chunk_size=chunk_size)
    return sink.records


def test_windows_start_exactly_offset_after_each_stimulus(session: SessionReader, raw_model_dir: Path) -> None:
    records = [r for r in _decode_offline(session, raw_model_dir) if r["type"] == "window"]
    t_m, values = session.markers()
    stim = [(t, v) for t, v in zip(t_m, values)]
    assert len(records) >= 3
    data_t = session.times(session.find("type=EEG"))
    for r in records:
        k = int(round(r["marker_time"] * 1000))  # the simulator's marker for sample k has time k/1000
        assert r["window_start_index"] == k + 20
        assert r["window_start_time"] == data_t[k + 20] and r["window_end_time"] == data_t[k + 459]
    decoded = {r["marker"] for r in records}
    assert decoded <= {v for _, v in stim}


def test_windows_use_the_offset_the_model_was_trained_with(session: SessionReader, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint that records its training windows' offset (bci epochs -> bci train) is decoded with it."""
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_classes=40).replace(extra={"data": {"window": {"offset": 0.05}}})
    model = save_checkpoint(build_model(cfg), tmp_path / "ck50")
    records = [r for r in _decode_offline(session, model) if r["type"] == "window"]
    assert records and all(r["window_start_index"] == int(round(r["marker_time"] * 1000)) + 50 for r in records)
    encoder = load_encoder(model, device="cpu")
    desc = session.description(session.find("type=EEG"))
    with caplog.at_level("WARNING", logger="bci.runtime.assemble"):
        pipeline = pipeline_factory(encoder, [ListSink()], offset=0.02)(desc)
    assert "--offset 0.020 s differs from the 0.050 s the model was trained with" in caplog.text
    assert pipeline.window.offset == pytest.approx(0.02)


def test_window_content_is_the_raw_slice(session: SessionReader, raw_model_dir: Path) -> None:
    """Without preprocessing, the encoder sees exactly data[k+20 : k+460]."""
    encoder = load_encoder(raw_model_dir, device="cpu")
    seen: list[np.ndarray] = []
    original = encoder.__call__

    class Spy:
        config = encoder.config

        def check_stream(self, *a, **k):
            return encoder.check_stream(*a, **k)

        def __call__(self, batch):
            seen.extend(np.array(b) for b in batch)
            return original(batch)

    sink = ListSink()
    desc = session.description(session.find("type=EEG"))
    pipeline = pipeline_factory(Spy(), [sink])(desc)
    decode_session(session, pipeline, data_key=session.find("type=EEG"), marker_key=session.marker_keys()[0])
    data = session.data(session.find("type=EEG"))
    windows = [r for r in sink.records if r["type"] == "window"]
    for r, x in zip(windows, seen):
        s = r["window_start_index"]
        np.testing.assert_array_equal(x, data[s : s + 440].T)


def test_chunk_size_does_not_change_results(session: SessionReader, model_dir: Path) -> None:
    a = [r for r in _decode_offline(session, model_dir, 1) if r["type"] == "window"]
    b = [r for r in _decode_offline(session, model_dir, 997) if r["type"] == "window"]
    assert [r["window_start_index"] for r in a] == [r["window_start_index"] for r in b]
    np.testing.assert_allclose([r["embedding"] for r in a], [r["embedding"] for r in b], atol=1e-5)


def test_records_have_the_documented_fields(session: SessionReader, model_dir: Path) -> None:
    r = next(r for r in _decode_offline(session, model_dir) if r["type"] == "window" and r["marker"].startswith("stim/"))
    for key in ("marker", "marker_time", "window_start_time", "window_end_time", "emitted_time", "latency_ms",
                "embedding_dim", "class_scores", "image_id", "true_label"):
        assert key in r
    assert r["embedding_dim"] == 512 and len(r["class_scores"]) == 5
    assert r["image_id"].startswith("img") and r["latency_ms"] >= 0


def test_model_channel_mismatch_is_clear_at_start(tmp_path: Path, session: SessionReader) -> None:
    torch.manual_seed(0)
    path = save_checkpoint(build_model(default_config("eeg_convnet", n_chans=64)), tmp_path / "ck64")
    encoder = load_encoder(path, device="cpu")
    with pytest.raises(ValueError, match="stream .PipeSim. has 128 channels but the model .eeg_convnet. expects 64"):
        pipeline_factory(encoder, [])(session.description(session.find("type=EEG")))


def test_live_over_lsl_equals_replay_at_max_speed(session: SessionReader, model_dir: Path, tmp_path: Path,
                                                   unique_name: str) -> None:
    """Live decoding of a replayed recording gives the same windows and embeddings as --speed max."""
    offline = [r for r in _decode_offline(session, model_dir) if r["type"] == "window"]
    replayer = SessionReplayer(session, speed=1.0, name_suffix="-" + unique_name)
    replayer.open()
    encoder = load_encoder(model_dir, device="cpu")
    sink = ListSink()
    events = tmp_path / "events.jsonl"
    sinks = [sink, *make_sinks(events=events)]
    eeg, markers = (d.name for d in replayer.descs)
    runtime = LiveRuntime(eeg, markers, pipeline_factory(encoder, sinks), resolve_timeout=10).start()
    thread = threading.Thread(target=replayer.play)
    thread.start()
    thread.join(30)
    time.sleep(0.5)
    runtime.stop()
    replayer.close()
    live = [r for r in sink.records if r["type"] == "window"]
    assert [r["marker"] for r in live] == [r["marker"] for r in offline]
    assert [r["window_start_index"] for r in live] == [r["window_start_index"] for r in offline]
    np.testing.assert_allclose([r["embedding"] for r in live], [r["embedding"] for r in offline], atol=1e-5)
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert [x["marker"] for x in lines if x["type"] == "window"] == [r["marker"] for r in live]
    assert all(x["latency_ms"] is not None and x["latency_ms"] < 1000 for x in lines if x["type"] == "window")
    assert runtime.pipeline.stats.n_windows == len(live)


def test_cli_live_decodes_a_simulate_process(tmp_path: Path, model_dir: Path, unique_name: str, bci_cli) -> None:
    """``bci simulate`` in its own process; ``bci live`` in this one (the test is about the command, not its
    process: a ``bci live`` subprocess spends ~8 s importing torch)."""
    sim = subprocess.Popen([sys.executable, "-m", "bci.cli", "simulate", "--name", unique_name, "--duration", "12",
                            "--wait-for-consumers", "30"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "ev.jsonl"
    try:
        res = bci_cli("live", "--eeg", unique_name, "--markers", unique_name + "-Markers", "--model", model_dir,
                      "--events", events, "--duration", "6", "--no-view", "--device", "cpu",
                      "--results-stream", unique_name + "-results", "--resolve-timeout", "15",
                      "--record", tmp_path / "live.zarr")
    finally:
        sim.kill()
        sim.communicate()
    assert res.returncode == 0, res.stderr
    assert "windows decoded:" in res.stdout and "latency p50/p95/p99" in res.stdout
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    windows = [x for x in lines if x["type"] == "window"]
    assert len(windows) >= 2
    assert all(x["marker"].startswith(("stim/", "block_")) for x in windows)
    # --record: data, markers and the results outlet in one session
    rec = SessionReader(tmp_path / "live.zarr")
    assert rec.data(rec.find("type=EEG")).shape[1] == 128
    results = [json.loads(v) for v in rec.data(rec.find("type=BCIResults"))[:, 0]]
    assert [r["marker"] for r in results if r["type"] == "window"] == [x["marker"] for x in windows]


def test_cli_replay_decode_max(tmp_path: Path, session: SessionReader, model_dir: Path, bci_cli) -> None:
    events = tmp_path / "ev.jsonl"
    res = bci_cli("replay", session.path, "--decode", "--model", model_dir, "--speed", "max", "--events", events,
                  "--device", "cpu", "--results-stream", "")
    assert res.returncode == 0, res.stderr
    assert "windows decoded:" in res.stdout
    n = sum(1 for x in events.read_text().splitlines() if json.loads(x)["type"] == "window")
    assert n == len([r for r in _decode_offline(session, model_dir) if r["type"] == "window"])


def test_sliding_windows_without_markers(session: SessionReader, raw_model_dir: Path) -> None:
    encoder = load_encoder(raw_model_dir, device="cpu")
    sink = ListSink()
    key = session.find("type=EEG")
    pipeline = pipeline_factory(encoder, [sink], hop=0.5)(session.description(key))
    decode_session(session, pipeline, data_key=key, marker_key=None)
    starts = [r["window_start_index"] for r in sink.records if r["type"] == "window"]
    assert starts == list(range(0, 6000 - 440 + 1, 500))
    assert all(r["window_kind"] == "sliding" and r["marker"] is None for r in sink.records)


def test_fmri_windows_average_trs_after_the_hrf_delay(tmp_path: Path) -> None:
    reader = SessionReader(simulate_to_session(SimulationSpec(name="F", modality="fmri", duration=120.0),
                                               tmp_path / "f.zarr"))
    torch.manual_seed(0)
    path = save_checkpoint(build_model(default_config("fmri_mlp", n_times=2, sfreq=0.5)), tmp_path / "fm")
    encoder = load_encoder(path, device="cpu")
    sink = ListSink()
    key = reader.find("type=fMRI")
    pipeline = pipeline_factory(encoder, [sink])(reader.description(key))
    decode_session(reader, pipeline, data_key=key, marker_key=reader.marker_keys()[0])
    windows = [r for r in sink.records if r["type"] == "window"]
    t_m, _ = reader.markers()
    assert len(windows) >= 3
    for r in windows:
        k = int(round(r["marker_time"] / 2.0))  # volume index of the onset (TR 2 s)
        assert r["window_start_index"] == k + 2  # 4 s HRF delay = 2 volumes
        assert r["embedding_dim"] == 512


def test_live_without_markers_or_hop_is_a_clear_error(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bci.cli.main import main

    assert main(["live", "--eeg", "X", "--model", str(model_dir), "--no-view"]) == 2
    assert "--markers NAME or --hop S" in capsys.readouterr().err


def test_ctrl_c_stops_live_cleanly_with_a_summary(tmp_path: Path, model_dir: Path, unique_name: str) -> None:
    import signal

    # long enough that the stream is still alive when Ctrl-C comes on a loaded machine (it is killed below)
    sim = subprocess.Popen([sys.executable, "-m", "bci.cli", "simulate", "--name", unique_name, "--duration", "120"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "ev.jsonl"
    live = subprocess.Popen(
        [sys.executable, "-m", "bci.cli", "live", "--eeg", unique_name, "--markers", unique_name + "-Markers",
         "--model", str(model_dir), "--events", str(events), "--no-view", "--device", "cpu", "--results-stream", "",
         "--resolve-timeout", "15"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert live.stdout.readline().startswith("decoding")
        deadline = time.monotonic() + 60  # Ctrl-C once a window is decoded (not after a fixed sleep)
        while (not events.exists() or '"type":"window"' not in events.read_text()) and time.monotonic() < deadline \
                and live.poll() is None:
            time.sleep(0.05)
        live.send_signal(signal.SIGINT)
        out, err = live.communicate(timeout=30)
    finally:
        for p in (sim, live):
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert live.returncode == 0, err
    assert "windows decoded:" in out and "latency p50/p95/p99" in out
    assert '"type":"window"' in events.read_text()  # what was decoded is on disk
