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
from bci.runtime.sinks import ListSink, ResultsOutletSink

REPO = Path(__file__).resolve().parents[1]
OFFSET = 20  # samples from marker to window start (the default 20 ms at 1 kHz)


def _model(tmp: Path, n_chans: int, *, n_times: int = 440, preprocessing: dict | None = None) -> Path:
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_chans=n_chans, n_times=n_times, embed_dim=16)
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


def _live(name: str, model: Path, sinks: list, **kw) -> LiveRuntime:
    encoder = load_encoder(model, device="cpu")
    return LiveRuntime(name, name + "-Markers", pipeline_factory(encoder, sinks), resolve_timeout=20, **kw)


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


# --------------------------------------------------------------------------- 3. NaN/inf bursts
def test_nan_and_inf_bursts_are_counted_flagged_and_never_emitted_as_embeddings(model8: Path,
                                                                                unique_name: str) -> None:
    # markers every 700 samples from 600: windows [k+20, k+460); the NaN burst [1400, 1450) in 3 channels
    # lies in the window of the marker at 1300, the inf at 2100 in that of 2000
    records, runtime, (n, m) = _run(unique_name, model8, "--seconds", "5", "--nan-at", "1400:50:3",
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
