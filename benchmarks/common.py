"""Helpers shared by the benchmark scripts: statistics, CPU sampling, tables, JSON, models.

Nothing here is imported by ``bci``, ``streams`` or ``offline``; the benchmarks are
scripts run from the repository root (``python -m benchmarks.latency`` or
``python benchmarks/latency.py``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

#: Repository root (benchmarks/ is one level below it).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where results go unless ``--out`` says otherwise.
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------- statistics
def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """p50/p95/p99 (and n, mean, max) of ``values``; NaN entries when there are none.

    Parameters
    ----------
    values : iterable of float
        Samples, e.g. latencies in ms.
    qs : sequence of float
        Percentiles to report, as ``p<q>`` keys.

    Returns
    -------
    dict
        ``{"n": int, "p50": ..., "p95": ..., "p99": ..., "mean": ..., "max": ...}``.
    """
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    out: dict[str, float] = {"n": int(arr.size)}
    for q in qs:
        out[f"p{q:g}"] = float(np.percentile(arr, q)) if arr.size else float("nan")
    out["mean"] = float(arr.mean()) if arr.size else float("nan")
    out["max"] = float(arr.max()) if arr.size else float("nan")
    return out


# ---------------------------------------------------------------------- CPU
@dataclass
class CpuMonitor:
    """Sample this process's CPU time (all threads) against ``clock`` every ``period`` s.

    Use :meth:`percent_between` afterwards to get the CPU use, in % of one core, over
    the part of the run that was measured (e.g. from the first to the last window).
    One wake-up per period: negligible next to what is measured.
    """

    clock: Any
    period: float = 0.5
    samples: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-monitor", daemon=True)

    def start(self) -> CpuMonitor:
        """Start sampling (one sample now)."""
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (one last sample)."""
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _sample(self) -> None:
        t = self._proc.cpu_times()
        self.samples.append((float(self.clock()), float(t.user + t.system)))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def percent_between(self, t_start: float, t_end: float) -> float:
        """CPU % of one core between the samples nearest inside ``[t_start, t_end]``."""
        inside = [(t, c) for t, c in self.samples if t_start <= t <= t_end]
        if len(inside) < 2:
            inside = self.samples
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return float("nan")
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return 100.0 * (c1 - c0) / (t1 - t0)


# ---------------------------------------------------------------------- output
def default_out(name: str) -> Path:
    """``benchmarks/results/<name>.json``."""
    return RESULTS_DIR / f"{name}.json"


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (with NaN as null) to ``path``, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=1) + "\n", encoding="utf-8")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable on a terminal); floats with 2 decimals."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if not np.isfinite(v) else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """CPU count and model, load, Python and library versions, git commit (for the JSON files).

    Call it when a benchmark starts: the commit is the code that is about to be measured.
    """
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "git_commit": _git_commit(),
    }
    for mod in ("pylsl", "torch", "scipy", "mne", "mne_lsl"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # not installed / no version: leave it out
            pass
    try:
        import psutil

        info["load_avg_1min"] = os.getloadavg()[0]
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_commit() -> str | None:
    """Short HEAD commit, with ``+modified`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+modified" if dirty else "")) or None


def command_line() -> str:
    """The command that produced a result (``python -m benchmarks.<name> ...``), for the JSON files."""
    script = Path(sys.argv[0])
    if script.suffix == ".py" and script.resolve().parent == REPO_ROOT / "benchmarks":
        return " ".join(["python", "-m", f"benchmarks.{script.stem}", *sys.argv[1:]])
    return " ".join(["python", *sys.argv])


# ---------------------------------------------------------------------- model
def make_default_checkpoint(directory: str | os.PathLike, *, seed: int = 0) -> Path:
    """An untrained, seeded ``eeg_convnet`` checkpoint with the default preprocessing.

    ``default_config("eeg_convnet")`` -> ``build_model`` -> the default
    :class:`~bci.preprocessing.PreprocessConfig` stored in the config (so the runtime
    applies it, as for a trained model) -> ``save_checkpoint``. Untrained weights cost
    exactly the same time as trained ones.
    """
    import torch

    from bci.models import build_model, default_config, save_checkpoint
    from bci.preprocessing import PreprocessConfig

    torch.manual_seed(seed)
    model = build_model(default_config("eeg_convnet"))
    model.set_metadata(preprocessing=PreprocessConfig().to_dict(), extra={"trained": False, "seed": seed})
    return save_checkpoint(model, directory, overwrite=True)


def wait_quietly(seconds: float) -> None:
    """Sleep (used between consecutive benchmark runs so sockets and threads settle)."""
    time.sleep(max(0.0, seconds))
