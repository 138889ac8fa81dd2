"""The benchmark scripts run end to end on tiny sizes (so they do not rot).

They assert nothing about speed (tests never assert wall-clock times); they check that each
script finishes, writes its JSON with the fields docs/benchmarks.md quotes, and decodes every
window it should.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import torch_threads_kept


@pytest.fixture
def bench(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """``bench(MODULE, ARGV)``: ``python -m benchmarks.MODULE ARGV`` run in this process (its ``main``; the
    producers and consumers it starts are still their own processes, as in a real run); asserts exit status 0
    and returns what it printed, captured at the file descriptors (its children's output included).

    In-process because a benchmark's top-level process spent 5-8 s importing torch before its first line,
    and these tests are about the script's run and report, not about its own process."""
    import importlib

    from benchmarks import common

    def run(module: str, argv: list[str]) -> pytest.CaptureResult[str]:
        monkeypatch.setattr(common, "SKIPPED", [])  # what a fresh process starts with
        capfd.readouterr()
        with torch_threads_kept():
            code = importlib.import_module(f"benchmarks.{module}").main(argv)
        captured = capfd.readouterr()
        assert code == 0, captured.out[-3000:] + captured.err[-3000:]
        return captured

    return run


def test_replay_speed_benchmark_runs(tmp_path: Path, bench) -> None:
    out = tmp_path / "replay.json"
    bench("replay_speed", ["--duration", "6", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["machine"]["cpu_count"] >= 1
    ours = result["ours"]
    assert {r["chunk_size"] for r in ours} == {"default", 10}
    # both chunkings decode the same windows with the same numbers
    assert ours[0]["windows"] == ours[1]["windows"] > 0
    assert ours[0]["checksum"] == pytest.approx(ours[1]["checksum"], rel=1e-5)
    assert result["mne_offline"]["epochs"] == ours[0]["windows"]


@pytest.mark.timeout(110)
def test_latency_benchmark_runs(tmp_path: Path, bench) -> None:
    """Both consumers decode every window; --trace gives every stage of every window of ours."""
    out = tmp_path / "latency.json"
    bench("latency", ["--consumers", "floor-block,ours", "--duration", "4", "--warmup", "1", "--pause", "0.5",
                      "--trace", "--out", str(out)])
    result = json.loads(out.read_text())
    for name in ("floor-block", "ours"):
        entry = result["results"][name]
        assert entry["windows"] == 4 and entry["missing"] == 0
        assert entry["latency_ms"]["p99"] > 0
    assert "ours_minus_floor-block_p99_ms" in result["comparisons"]
    trace = result["results"]["ours"]["trace"]
    assert trace["windows_traced"] == 4
    from benchmarks.trace import STAGES

    assert list(trace["stages"]) == list(STAGES)
    # the stages follow one another: their means add up to the delivered latency
    total = sum(trace["stages"][s]["mean"] for s in STAGES)
    assert total == pytest.approx(result["results"]["ours"]["delivered_latency_ms"]["mean"], rel=1e-6)
    assert all(trace["stages"][s]["n"] == 4 for s in STAGES)
    counts = trace["counts"]
    assert counts["chunks"] >= 400 and 0 < counts["drains_with_data"] <= counts["chunks"]
    assert "skipped" not in result


@pytest.mark.timeout(90)
def test_latency_benchmark_without_mne_lsl(tmp_path: Path, bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """mne-lsl missing (forced through BCI_BENCH_MISSING): one line, the other consumers' results kept.

    Also runs the random-chunk producer (1-97 samples): every window still arrives.
    """
    out = tmp_path / "latency.json"
    monkeypatch.setenv("BCI_BENCH_MISSING", "mne_lsl")
    proc = bench("latency", ["--consumers", "mne-lsl,floor-block", "--duration", "3", "--warmup", "1",
                             "--pause", "0.2", "--chunks", "random", "--out", str(out)])
    assert "Traceback" not in proc.err
    lines = [line for line in proc.err.splitlines() if "mne_lsl" in line]
    assert lines == ["skipped consumer mne-lsl: module 'mne_lsl' is not installed (pip install -e .[bench])"]
    result = json.loads(out.read_text())
    assert list(result["results"]) == ["floor-block"]
    entry = result["results"]["floor-block"]
    assert entry["windows"] == 3 and entry["missing"] == 0
    assert result["config"]["chunks"] == "random"
    assert [s["part"] for s in result["skipped"]] == ["consumer mne-lsl"]
    assert result["skipped"][0]["install"] == "pip install -e .[bench]"


def test_require_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that is really absent, and one forced absent, both raise MissingDependency with the pip line."""
    from benchmarks import common

    with pytest.raises(common.MissingDependency, match=r"'no_such_module_xyz' is not installed \(pip install no_such"):
        common.require("no_such_module_xyz")
    assert common.require("numpy").__name__ == "numpy"
    monkeypatch.setenv(common.MISSING_ENV, "numpy, faiss")
    with pytest.raises(common.MissingDependency, match=r"\(pip install -e \.\[faiss\]\)"):
        common.require("faiss")
    with pytest.raises(ImportError):
        common.require("numpy")
    monkeypatch.setattr(common, "SKIPPED", [])
    assert common.run_optional("part a", common.require, "numpy") is None
    assert common.run_optional("part a", common.require, "numpy") is None  # said once
    assert [s["part"] for s in common.SKIPPED] == ["part a"]


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("drift", ["--minutes", "-1"], "--minutes=-1.0 must be > 0"),
        ("drift", ["--minutes", "3", "--compare-minutes", "2"], "--compare-minutes=2.0 must be <= 1.5"),
        ("replay_speed", ["--chunk-sizes", "default,0"], "--chunk-sizes=0 must be an integer >= 1"),
        ("latency", ["--consumers", "floor-block,nope"], "--consumers='nope' is not one of"),
        ("latency", ["--duration", "999"], "must be an integer >= 1 and <= 999"),
        ("retrieval", ["--n", "0"], "--n=0 must be an integer >= 1"),
        ("replay_memory", ["--minutes", "5,0.1"], "--minutes=0.1 must be >= 0.5"),
        ("replay_memory", ["--minutes", "five"], "--minutes 'five' must be numbers of minutes"),
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


def test_resampler_benchmark_runs(tmp_path: Path, bench) -> None:
    out = tmp_path / "resampler.json"
    bench("resampler", ["--rates", "512", "--seconds", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    ours = next(r for r in rows if r["method"] == "polyphase (ours)")
    assert ours["max_abs_error_vs_resample_poly"] < 1e-12 and ours["chunking_max_abs_diff"] == 0.0
    assert abs(ours["max_abs_group_delay_samples"]) < 1e-3 and ours["output_lag_ms"]["p50"] < 25


@pytest.mark.slow
@pytest.mark.timeout(110)
def test_soak_benchmark_runs(tmp_path: Path, bench) -> None:
    """bci simulate --speed -> bci live --record: every sample and marker accounted for in every row."""
    out = tmp_path / "soak.json"
    proc = bench("soak", ["--hours", "0.005", "--speed", "6", "--bin-minutes", "0.15", "--drain", "1",
                          "--max-p99-ratio", "1e6", "--max-p99-ms", "1e6", "--max-rss-growth-mb", "1e6",
                          "--out", str(out)])
    assert "verdict: OK" in proc.out
    result = json.loads(out.read_text())
    assert result["benchmark"] == "soak" and result["config"]["speed"] == 6.0
    totals, rows = result["totals"], result["rows"]
    assert len(rows) == 2
    assert totals["samples_recorded"] == totals["samples_pushed"] == 250 * 18 == sum(r["samples_recorded"] for r in rows)
    assert totals["windows"] + totals["dropped"] == totals["markers_sent"] == totals["markers_recorded"] > 5
    assert [r["samples_pushed"] for r in rows] == [r["samples_recorded"] for r in rows]
    assert [r["markers_sent"] for r in rows] == [r["windows"] + r["dropped"] for r in rows]
    assert totals["results_recorded"] == totals["markers_sent"] and totals["gaps"] == []
    assert all(r["latency_ms"]["p99"] > 0 and r["rss_mb_max"] > 0 for r in rows)
    from benchmarks.soak import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--hours", "0"])


def test_replay_memory_reads_a_childs_own_peak_rss() -> None:
    """benchmarks.replay_memory reads the child's ru_maxrss: a child holding 300 MiB says so; a failing child raises."""
    from benchmarks.replay_memory import peak_rss_run

    big = peak_rss_run("import sys; block = bytearray(int(sys.argv[1]) * 2**20); block[::4096] = b'x' * len(block[::4096])",
                       ["300"])
    assert big["peak_rss_mb"] >= 300  # (a forked child also counts its parent's pages before exec: no upper check)
    with pytest.raises(RuntimeError, match="exited 3"):
        peak_rss_run("import sys; sys.exit(3)", [])
