"""The benchmark scripts run end to end on tiny sizes (so they do not rot).

They assert nothing about speed (tests never assert wall-clock times); they check that each
script finishes, writes its JSON with the fields docs/benchmarks.md quotes, and decodes every
window it should.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_replay_speed_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    _run(["-m", "benchmarks.replay_speed", "--duration", "6", "--out", str(out)], 100)
    result = json.loads(out.read_text())
    assert result["machine"]["cpu_count"] >= 1
    ours = result["ours"]
    assert {r["chunk_size"] for r in ours} == {"default", 10}
    # both chunkings decode the same windows with the same numbers
    assert ours[0]["windows"] == ours[1]["windows"] > 0
    assert ours[0]["checksum"] == pytest.approx(ours[1]["checksum"], rel=1e-5)
    assert result["mne_offline"]["epochs"] == ours[0]["windows"]


@pytest.mark.timeout(110)
def test_latency_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    _run(
        ["-m", "benchmarks.latency", "--consumers", "floor-block,ours", "--duration", "4",
         "--warmup", "1", "--pause", "0.5", "--out", str(out)],
        100,
    )
    result = json.loads(out.read_text())
    for name in ("floor-block", "ours"):
        entry = result["results"][name]
        assert entry["windows"] == 4 and entry["missing"] == 0
        assert entry["latency_ms"]["p99"] > 0
    assert "ours_minus_floor-block_p99_ms" in result["comparisons"]
