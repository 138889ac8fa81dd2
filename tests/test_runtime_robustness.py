"""The live runtime against real LSL outlets in another process: odd chunks, early/late/duplicate markers, dropouts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bci.runtime.assemble import load_encoder, pipeline_factory
from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.runtime.sinks import ListSink
from bci.runtime.live import LiveRuntime

REPO = Path(__file__).resolve().parents[1]
MARKS = (500, 1200, 1900)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_chans=8, n_times=440)
    return save_checkpoint(build_model(cfg), tmp_path_factory.mktemp("m") / "ck")


def _run(name: str, model: Path, *producer_args: str) -> tuple[list[dict], LiveRuntime]:
    proc = subprocess.Popen([sys.executable, "-u", "-m", "tests.lsl_event_producer", "--name", name,
                             "--markers-at", ",".join(map(str, MARKS)), *producer_args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sink = ListSink()
    try:
        assert proc.stdout.readline().startswith("ready")
        encoder = load_encoder(model, device="cpu")
        runtime = LiveRuntime(name, name + "-Markers", pipeline_factory(encoder, [sink]), resolve_timeout=15)
        runtime.start()
        assert proc.stdout.readline().startswith("done")
        time.sleep(0.3)
        runtime.stop()
    finally:
        proc.kill()
        proc.communicate()
    return sink.records, runtime


def _windows(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "window"]


@pytest.mark.parametrize("chunk", ["1", "7", "1000", "random"])
def test_odd_chunk_sizes_give_sample_exact_windows(small_model: Path, unique_name: str, chunk: str) -> None:
    records, runtime = _run(unique_name, small_model, "--chunk", chunk)
    wins = _windows(records)
    assert [w["window_start_index"] for w in wins] == [k + 20 for k in MARKS]
    assert all(w["latency_ms"] is not None and w["latency_ms"] >= 0 for w in wins)
    assert runtime.pipeline.stats.dropped == {}


def test_markers_before_their_data_wait(small_model: Path, unique_name: str) -> None:
    records, _ = _run(unique_name, small_model, "--marker-shift", "-0.3")
    wins = _windows(records)
    assert [w["window_start_index"] for w in wins] == [k + 20 for k in MARKS]
    assert all(w["marker_lateness_ms"] < 0 for w in wins)  # the markers came first


def test_markers_after_their_data_are_served_and_reported_late(small_model: Path, unique_name: str) -> None:
    records, _ = _run(unique_name, small_model, "--marker-shift", "0.8", "--duration", "3.5")
    wins = _windows(records)
    assert [w["window_start_index"] for w in wins] == [k + 20 for k in MARKS]
    assert all(w["marker_lateness_ms"] > 200 for w in wins)  # window complete 460 ms after onset; marker 800 ms


def test_duplicated_markers_decode_once_and_are_reported(small_model: Path, unique_name: str) -> None:
    records, runtime = _run(unique_name, small_model, "--duplicate")
    assert [w["window_start_index"] for w in _windows(records)] == [k + 20 for k in MARKS]
    dropped = [r for r in records if r["type"] == "dropped"]
    assert [d["reason"] for d in dropped] == ["duplicate"] * len(MARKS)
    assert runtime.pipeline.stats.dropped == {"duplicate": len(MARKS)}


def test_dropout_reconnect_marks_gap_and_decoding_resumes(small_model: Path, unique_name: str, producer) -> None:
    from streams.description import StreamDescription
    from streams.lsl import Outlet, local_clock

    args = ["--name", unique_name, "--source-id", unique_name, "--rate", "1000", "--channels", "8"]
    first = producer(*args, "--duration", "30")
    markers = Outlet(StreamDescription(unique_name + "-Markers", "Markers", unique_name + "-m", ("marker",),
                                       dtype="string"))
    sink = ListSink()
    encoder = load_encoder(small_model, device="cpu")
    runtime = LiveRuntime(unique_name, unique_name + "-Markers", pipeline_factory(encoder, [sink]),
                          resolve_timeout=15, lost_timeout=1.0).start()
    try:
        time.sleep(1.0)
        markers.push_sample(["before"], local_clock() - 0.2)
        time.sleep(0.8)
        first.kill()  # amplifier dies
        markers.push_sample(["during"], local_clock() + 0.1)
        time.sleep(0.6)
        producer(*args, "--duration", "30", "--start-index", "100000")
        deadline = time.monotonic() + 15
        while runtime.data_receiver.snapshot().n_reconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        markers.push_sample(["after"], local_clock() - 0.1)
        time.sleep(1.0)
    finally:
        runtime.stop()
        markers.close()
    by_marker = {r["marker"]: r for r in sink.records}
    assert by_marker["before"]["type"] == "window" and by_marker["after"]["type"] == "window"
    assert by_marker["during"]["type"] == "dropped" and by_marker["during"]["reason"] == "gap"
    gaps = runtime.data_receiver.gaps
    assert len(gaps) == 1 and "reconnected" in gaps[0].reason
