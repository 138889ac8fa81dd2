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


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("drift", ["--minutes", "-1"], "--minutes=-1.0 must be > 0"),
        ("drift", ["--minutes", "3", "--compare-minutes", "2"], "--compare-minutes=2.0 must be <= 1.5"),
        ("replay_speed", ["--chunk-sizes", "default,0"], "--chunk-sizes=0 must be an integer >= 1"),
        ("latency", ["--consumers", "floor-block,nope"], "--consumers='nope' is not one of"),
        ("latency", ["--duration", "999"], "must be an integer >= 1 and <= 999"),
        ("retrieval", ["--n", "0"], "--n=0 must be an integer >= 1"),
        ("retrieval", ["--n", "3", "-k", "5"], "-k=5 must be an integer <= 3"),
    ],
)
def test_bad_flag_values_are_usage_errors(module: str, argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A flag value that fails its streams._checks check exits with argparse's usage error (2), naming it."""
    import importlib

    parse_args = importlib.import_module(f"benchmarks.{module}").parse_args
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err


def test_write_report_layout(tmp_path: Path) -> None:
    """benchmark, command, machine first, then the sections in order; NaN as null; no key for benchmark=None."""
    from benchmarks.common import write_report

    machine = {"cpu_count": 1}
    path = write_report(tmp_path / "a" / "r.json", machine, {"config": {"x": 1}, "value": float("nan")},
                        benchmark="drift")
    report = json.loads(path.read_text())
    assert list(report) == ["benchmark", "command", "machine", "config", "value"]
    assert report["benchmark"] == "drift" and report["machine"] == machine and report["value"] is None
    bare = json.loads(write_report(tmp_path / "b.json", machine, {"read": {}}, benchmark=None).read_text())
    assert list(bare) == ["command", "machine", "read"]


def test_session_or_simulate_keeps_a_given_session(tmp_path: Path) -> None:
    from benchmarks.common import session_or_simulate

    given = tmp_path / "given.zarr"
    assert session_or_simulate(given, tmp_path, 10.0, 0) == (given, None)
    assert not (tmp_path / "session").exists()


def test_resampler_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "resampler.json"
    _run(["-m", "benchmarks.resampler", "--rates", "512", "--seconds", "2", "--out", str(out)], 120)
    rows = json.loads(out.read_text())["results"]
    ours = next(r for r in rows if r["method"] == "polyphase (ours)")
    assert ours["max_abs_error_vs_resample_poly"] < 1e-12 and ours["chunking_max_abs_diff"] == 0.0
    assert abs(ours["max_abs_group_delay_samples"]) < 1e-3 and ours["output_lag_ms"]["p50"] < 25
