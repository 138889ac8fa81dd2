"""Faults on the stream (issue 18), each injected by an independent LSL producer in another process.

The producer is tests/lsl_fault_producer.py (pylsl + numpy only): channel 0 of sample ``k`` holds ``k``
and the marker ``stim/imgNNNN/k`` carries sample ``k``'s own timestamp, so every window can be checked to
the sample. The receiving side is the project's real live runtime (:class:`bci.runtime.live.LiveRuntime`
with the pipeline ``bci live`` builds), in this process. docs/reliability.md ("Faults on the stream")
has the table of what each test shows.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.preprocessing import PreprocessConfig
from bci.runtime.assemble import load_encoder, pipeline_factory
from bci.runtime.live import LiveRuntime
from bci.runtime.sinks import ListSink
from tests.test_viewer import COLORS, _count_color, gallery_dir  # noqa: F401 (fixture)
from tests.test_viewer_process import watch_viewer_start

REPO = Path(__file__).resolve().parents[1]
OFFSET = 20  # samples from marker to window start (the default 20 ms at 1 kHz)


def _model(tmp: Path, n_chans: int, *, n_times: int = 440, preprocessing: dict | None = None) -> Path:
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_chans=n_chans, n_times=n_times, embed_dim=8)
    if preprocessing is not None:
        cfg = cfg.replace(preprocessing=preprocessing)
    return save_checkpoint(build_model(cfg), tmp / "ck")


@pytest.fixture(scope="module")
def model8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 channels, 440 samples, with the default band-pass (its filters see the faults)."""
    return _model(tmp_path_factory.mktemp("m8"), 8, preprocessing=PreprocessConfig().to_dict())


class _Producer:
    """tests/lsl_fault_producer.py in its own process."""

    def __init__(self, name: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "tests.lsl_fault_producer", "--name", name,
                                      *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.kill()
            raise RuntimeError(f"producer did not start: {line!r} {self.proc.stderr.read()}")

    def wait_done(self, timeout: float = 90.0) -> tuple[int, int]:
        """(samples, markers) pushed, once the last sample is out."""
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line.startswith("done") or time.monotonic() > deadline:
            raise RuntimeError(f"producer failed: {line!r} {self.proc.stderr.read()}")
        _, n, m = line.split()
        return int(n), int(m)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


def _live(name: str, model: Path, sinks: list, *, buffer_seconds: float = 30.0, **kw) -> LiveRuntime:
    """The runtime ``bci live`` runs; ``buffer_seconds`` for the receivers and the pipeline (faster than real
    time, 30 s of stream time is a fraction of a second)."""
    encoder = load_encoder(model, device="cpu")
    return LiveRuntime(name, name + "-Markers", pipeline_factory(encoder, sinks, buffer_seconds=buffer_seconds),
                       resolve_timeout=20, buffer_seconds=buffer_seconds, **kw)


def _run(name: str, model: Path, *args: str, sinks: list | None = None, settle: float = 0.5,
         **kw) -> tuple[list[dict], LiveRuntime, tuple[int, int]]:
    """Producer with ``args`` -> the live runtime until the producer is done; the records and counts."""
    sink = ListSink()
    producer = _Producer(name, *args)
    runtime = _live(name, model, [sink, *(sinks or [])], **kw)
    try:
        runtime.start()
        counts = producer.wait_done()
        time.sleep(settle)
    finally:
        runtime.stop()
        producer.kill()
    return sink.records, runtime, counts


def _kind(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["type"] == kind]


def _marker_sample(record: dict) -> int:
    return int(record["marker"].rsplit("/", 1)[1])


def _all_finite(record: dict) -> bool:
    values = list(record.get("embedding") or []) + [c["score"] for c in record.get("class_scores") or []]
    return all(v is not None and math.isfinite(v) for v in values)


# --------------------------------------------------------------------------- 1. amplifier clock jump
@pytest.mark.parametrize("jump", [-5.0])  # +3600 s behaves alike (gap, clock_jump); -5 s also runs the times backwards
def test_a_clock_jump_is_marked_and_no_marker_is_cut_from_data_on_the_other_clock(
        model8: Path, unique_name: str, tmp_path: Path, jump: float) -> None:
    """The amplifier restarts (same source_id) after sample 2999 with its timestamps ``jump`` s off."""
    from streams.recorder import SessionRecording
    from bci.runtime.replay import decode_session
    from streams.clock import parse_clock_jump
    from streams.session import SessionReader
    from bci.runtime.sinks import results_description

    # markers at 600, 1300, 2000 (before the jump), 2700 (its window spans it), 3400 (after it)
    sink = ListSink()
    producer = _Producer(unique_name, "--seconds", "5", "--jump-at", "2999", "--jump", str(jump),
                         "--dropout", "0.5")
    runtime = _live(unique_name, model8, [sink], lost_timeout=1.0)
    store = tmp_path / "s.zarr"
    try:
        runtime.record_to(SessionRecording(store), results=results_description(unique_name + "-res"))
        runtime.start()
        n, m = producer.wait_done()
        time.sleep(0.5)
    finally:
        runtime.stop()
        producer.kill()
    records = sink.records
    by_sample = {_marker_sample(r): r for r in records if r["type"] in ("window", "dropped")}
    assert sorted(by_sample) == [600, 1300, 2000, 2700, 3400] and m == 5
    for k in (600, 1300, 2000):  # on the old clock, before the jump: decoded on the sample
        assert by_sample[k]["type"] == "window" and by_sample[k]["window_start_index"] == k + OFFSET
    assert by_sample[2700]["type"] == "dropped" and by_sample[2700]["reason"] == "gap"  # spans the jump
    for k in (3400,):  # on the markers' clock, the data on another: never cut, always said why
        assert by_sample[k]["type"] == "dropped" and by_sample[k]["reason"] == "clock_jump", by_sample[k]
    gaps = _kind(records, "gap")  # the live events say so: "clock jump +3600 s (...); ...; reconnected"
    assert len(gaps) == 1 and "reconnected" in gaps[0]["reason"], gaps
    said = parse_clock_jump(gaps[0]["reason"])  # estimated from arrival times: to the reconnect's latency
    assert said is not None and abs(said - jump) < 2.0, gaps[0]["reason"]
    assert runtime.data_receiver.snapshot().n_samples == n  # nothing lost: every sample kept
    session = SessionReader(store)  # the recorded session too: every sample, the gap and its reason
    key = next(k for k in session.streams if session.description(k).type == "EEG")
    recorded = session.gaps(key)
    assert len(recorded) == 1 and recorded[0]["reason"] == gaps[0]["reason"]
    assert session.n_samples(key) == n
    # and its replay says what the live run said, marker by marker
    replayed = ListSink()
    pipeline = pipeline_factory(load_encoder(model8, device="cpu"), [replayed])(session.description(key))
    decode_session(session, pipeline, data_key=key, marker_key=session.marker_keys()[0])

    def outcome(r: dict) -> tuple:
        return r["type"], r["marker"], r.get("reason"), r.get("window_start_index")
    assert sorted(map(outcome, replayed.records), key=str) == sorted(map(outcome, records), key=str)


# --------------------------------------------------------------------------- 3. NaN/inf bursts
def test_nan_and_inf_bursts_are_counted_flagged_and_never_emitted_as_embeddings(model8: Path,
                                                                                unique_name: str) -> None:
    # markers every 700 samples from 600: windows [k+20, k+460); the NaN burst [1400, 1450) in 3 channels
    # lies in the window of the marker at 1300, the inf at 2100 in that of 2000
    records, runtime, (n, m) = _run(unique_name, model8, "--seconds", "4", "--nan-at", "1400:50:3",
                                    "--inf-at", "2100")
    windows, dropped = _kind(records, "window"), _kind(records, "dropped")
    assert len(windows) + len(dropped) == m  # every marker accounted for
    assert all(_all_finite(w) for w in windows)  # no NaN embedding emitted unflagged
    bad = {_marker_sample(d) for d in dropped if d["reason"] == "non_finite"}
    assert {1300, 2000} <= bad  # the windows holding the burst / the inf
    assert {d["reason"] for d in dropped} == {"non_finite"}
    assert 600 in {_marker_sample(w) for w in windows}  # before the burst: decoded
    assert all("non-finite samples" in d["detail"] for d in dropped)
    stats = runtime.data_receiver.snapshot()
    assert stats.n_nonfinite == 51  # 50 NaN rows + 1 inf row, counted on arrival
    assert runtime.pipeline.stats.dropped == {"non_finite": len(bad)}
    assert [w["window_start_index"] for w in windows] == [_marker_sample(w) + OFFSET for w in windows]


# --------------------------------------------------------------------------- 5. stalled consumers
def test_a_stalled_results_consumer_and_a_stopped_viewer_do_not_touch_the_decoder(
        model8: Path, gallery_dir: Path, unique_name: str, tmp_path: Path) -> None:  # noqa: F811
    """``bci live`` with its viewer child; a results inlet that never pulls; the viewer SIGSTOPped for 2.5 s."""
    import json
    import threading

    import pylsl

    producer = _Producer(unique_name, "--seconds", "8", "--tail", "6")
    events, shot = tmp_path / "events.jsonl", tmp_path / "after.png"
    live = subprocess.Popen(
        [sys.executable, "-m", "bci.cli", "live", "--eeg", unique_name, "--markers", unique_name + "-Markers",
         "--model", str(model8), "--device", "cpu", "--results-stream", unique_name + "-res",
         "--resolve-timeout", "30", "--events", str(events), "--gallery", str(gallery_dir),
         "--screenshot", str(shot), "--after", "4.5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines, started, reader = watch_viewer_start(live)
    stalled = None
    try:
        info = pylsl.resolve_byprop("name", unique_name + "-res", timeout=30)
        assert info, "no results stream"
        stalled = pylsl.StreamInlet(info[0])  # subscribes and never pulls
        stalled.open_stream(timeout=10)
        assert started.wait(60), "".join(err_lines)
        viewer = psutil.Process(int(next(x for x in err_lines if x.startswith("viewer: started")).split()[4]))
        deadline = time.monotonic() + 20
        while viewer.cpu_times().user < 0.5 and time.monotonic() < deadline:  # the viewer runs
            time.sleep(0.1)
        os.kill(viewer.pid, signal.SIGSTOP)
        stopped_at = pylsl.local_clock()
        time.sleep(2.5)
        resumed_at = pylsl.local_clock()
        written = {json.loads(x)["window_start_index"] for x in events.read_text().splitlines()
                   if '"type":"window"' in x}  # what the decoder had written out while the viewer was stopped
        os.kill(viewer.pid, signal.SIGCONT)
        live.wait(timeout=90)
        out = live.stdout.read()
    finally:
        if live.poll() is None:
            os.kill(live.pid, signal.SIGCONT)
            live.kill()
        live.communicate()
        producer.kill()
        del stalled
    reader.join(10)
    err = "".join(err_lines)
    assert live.returncode == 0, err
    records = [json.loads(x) for x in events.read_text().splitlines()]
    windows = _kind(records, "window")
    during = [w for w in windows if stopped_at <= w["emitted_time"] <= resumed_at]
    assert len(during) >= 2  # decoding went on while the viewer was stopped (a window every 0.7 s)
    # no window waited for a consumer: each one complete (its last sample sent) 1 s before SIGCONT was in the
    # events file before it
    due = {w["window_start_index"] for w in windows if w["window_end_time"] < resumed_at - 1.0}
    assert due <= written, sorted(due - written)
    starts = [w["window_start_index"] for w in windows]
    assert starts == [k + OFFSET for k in range(600, 7000, 700)][: len(starts)]  # none missing, in order
    assert not _kind(records, "dropped") or {d["reason"] for d in _kind(records, "dropped")} == {"end_of_data"}
    assert "saved screenshot" in out, err  # the viewer, resumed, rendered the results it had been sent
    from PIL import Image

    with Image.open(shot) as img:
        right = np.asarray(img.convert("RGB"))[:, 760:]
    assert sum(_count_color(right, c) > 300 for c in COLORS) >= 2
    lat = sorted(w["latency_ms"] for w in during)
    print(f"windows while the viewer was stopped: {len(during)}; their latency max {lat[-1]:.1f} ms")


# --------------------------------------------------------------------------- 4. marker flood
class _CountingSink:
    """Keeps only what a record says about its marker (so the test's own memory stays flat)."""

    def __init__(self) -> None:
        self.windows: list[tuple[int, int]] = []  # (marker sample, window start index)
        self.offsets: list[float] = []  # window start time - marker time (s)
        self.dropped: dict[str, int] = {}
        self.non_finite = 0

    def write(self, record: dict) -> None:
        if record["type"] == "window":
            self.windows.append((_marker_sample(record), record["window_start_index"]))
            self.offsets.append(record["window_start_time"] - record["marker_time"])
            self.non_finite += not _all_finite(record)
        elif record["type"] == "dropped":
            self.dropped[record["reason"]] = self.dropped.get(record["reason"], 0) + 1

    def close(self) -> None:
        pass


def test_a_marker_flood_keeps_memory_bounded_and_accounts_for_every_marker(model8: Path, unique_name: str) -> None:
    import threading

    sink = _CountingSink()
    me = psutil.Process()
    # 1,000 markers/s of stream time for 10 s, pushed at twice real time (2,000 markers/s arrive)
    producer = _Producer(unique_name, "--seconds", "11.2", "--marker-every", "1", "--marker-from", "600",
                         "--marker-until", "10600", "--speed", "2")
    runtime = _live(unique_name, model8, [sink])
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], me.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        runtime.start()
        before = me.memory_info().rss
        watcher.start()
        n, m = producer.wait_done()
        time.sleep(0.5)
    finally:
        runtime.stop()
        done.set()
        producer.kill()
    watcher.join(5)
    grown_mb = (max(peak[0], me.memory_info().rss) - before) / 2**20
    assert m == 10_000
    assert len(sink.windows) + sum(sink.dropped.values()) == m  # every marker decoded or reported dropped
    assert set(sink.dropped) <= {"backlog", "end_of_data", "overwritten"}, sink.dropped  # reasons that say why
    assert all(start == k + OFFSET for k, start in sink.windows) and sink.non_finite == 0
    assert runtime.pipeline.stats.n_markers == m
    assert grown_mb < 500, grown_mb
    print(f"flood: {len(sink.windows)} windows, dropped {sink.dropped}, RSS +{grown_mb:.0f} MB (peak)")


# --------------------------------------------------------------------------- 2. true rate off nominal
@pytest.fixture(scope="module")
def model2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 channels (fewer samples to move at 360x real time), 440 samples, no preprocessing."""
    return _model(tmp_path_factory.mktemp("m2"), 2)


@pytest.mark.parametrize("true_rate", [1000.5])
def test_windows_stay_on_the_sample_when_the_true_rate_is_off_nominal_for_30_minutes(
        model2: Path, unique_name: str, true_rate: float) -> None:
    # declared 1000 Hz, stamped at 1000.5 Hz (0.05 % fast), 30 min of stream time pushed at 360x real time;
    # a marker every 10 s on the sample it names
    records, runtime, (n, m) = _run(unique_name, model2, "--rate", "1000", "--true-rate", str(true_rate),
                                    "--channels", "2", "--seconds", "1800", "--speed", "360", "--chunk", "500",
                                    "--marker-every", "10000", "--tail", "2", buffer_seconds=600.0)
    windows = _kind(records, "window")
    assert not _kind(records, "dropped") and len(windows) == m == 180
    assert runtime.data_receiver.snapshot().n_samples == n and runtime.decoder_overwritten == 0
    # every window starts OFFSET samples after the marker's sample, by the stream's own timestamps ...
    assert [w["window_start_index"] for w in windows] == [_marker_sample(w) + OFFSET for w in windows]
    assert all(abs(w["window_start_time"] - w["marker_time"] - OFFSET / true_rate) < 0.25e-3 for w in windows)
    # ... where the nominal rate would be off by ~900 samples at the end (the test can tell the two apart)
    first_time = runtime.data_receiver.snapshot().first_time
    last = windows[-1]
    nominal_index = round((last["marker_time"] - first_time) * 1000.0)
    assert abs(nominal_index - _marker_sample(last)) > 800
    print(f"rate: {len(windows)} windows on the sample; nominal-rate index off by "
          f"{_marker_sample(last) - nominal_index} samples after {last['marker_time'] - first_time:.0f} s")


class _StallingSink(_CountingSink):
    """A sink that blocks the decoder for ``seconds`` at its first window (a stalled disk or network share)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.lost = 0

    def write(self, record: dict) -> None:
        if record["type"] == "dropped" and record["marker"] is None:
            self.lost += record["n_markers"]
            self.dropped["overwritten"] = self.dropped.get("overwritten", 0) + record["n_markers"]
            return
        if record["type"] == "window" and self.seconds:
            seconds, self.seconds = self.seconds, 0.0
            time.sleep(seconds)
        super().write(record)


def test_markers_overwritten_while_the_decoder_stalls_are_counted_not_lost(model8: Path, unique_name: str) -> None:
    # 1,000 markers/s for 3 s; 1 s buffers; the decoder blocked 2.5 s by its sink: data and markers are
    # overwritten meanwhile, and every marker still ends up as a window or in a dropped record
    sink = _StallingSink(2.5)
    records, runtime, (n, m) = _run(unique_name, model8, "--seconds", "4.5", "--marker-every", "1",
                                    "--marker-from", "600", "--marker-until", "3600", sinks=[sink],
                                    buffer_seconds=1.0)
    assert m == 3000
    assert len(sink.windows) + sum(sink.dropped.values()) == m, (len(sink.windows), sink.dropped)
    assert sink.lost > 0 and runtime.pipeline.stats.n_markers == m  # some were overwritten unread, and counted
    # samples were lost before the pipeline (a gap), so its indices are not the producer's: check by time
    bad = [(w, d) for w, d in zip(sink.windows, sink.offsets) if abs(d - OFFSET / 1000) >= 0.5e-3]
    assert sink.windows and not bad, bad[:5]
    print(f"stalled decoder: {len(sink.windows)} windows, dropped {sink.dropped}")
