"""Helpers shared by the benchmark scripts: statistics, CPU sampling, tables, JSON, models,
command-line flags, scratch folders, simulated sessions and the producer process.

Nothing here is imported by ``bci``, ``streams`` or ``offline``; the benchmarks are
scripts run from the repository root (``python -m benchmarks.latency`` or
``python benchmarks/latency.py``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Sequence, TypeVar

import numpy as np

#: Repository root (benchmarks/ is one level below it).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where results go unless ``--out`` says otherwise.
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

_T = TypeVar("_T")


# ---------------------------------------------------------------------- optional dependencies
#: How to install each optional module a benchmark part needs (the extras are in pyproject.toml).
INSTALL = {
    "mne_lsl": "pip install -e .[bench]",
    "psutil": "pip install -e .[bench]",
    "faiss": "pip install -e .[faiss]",
    "mne": "pip install -e .",
    "soxr": "pip install soxr",
    "pyqtgraph": "pip install -e .",
    "open_clip": "pip install -e .",
}
#: Comma-separated module names the helpers treat as not installed (e.g. ``BCI_BENCH_MISSING=mne_lsl``):
#: to see, and test, what a benchmark does on a machine without them. Child processes inherit it.
MISSING_ENV = "BCI_BENCH_MISSING"
#: Parts of this run skipped for a missing module (:func:`run_optional`); :func:`write_report` stores them.
SKIPPED: list[dict[str, str]] = []


class MissingDependency(ImportError):
    """An optional module a benchmark part needs is not installed; the message says what to install."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.install = INSTALL.get(module, f"pip install {module}")
        super().__init__(f"module {module!r} is not installed ({self.install})", name=module)


def require(module: str) -> ModuleType:
    """Import an optional ``module``, or raise :class:`MissingDependency` (also when :data:`MISSING_ENV` names it).

    Parameters
    ----------
    module : str
        The import name (``"mne_lsl"``, ``"psutil"``, ``"faiss"`` ...).

    Returns
    -------
    module
        The imported module.
    """
    forced = {m.strip() for m in os.environ.get(MISSING_ENV, "").split(",") if m.strip()}
    if module in forced or importlib.util.find_spec(module) is None:
        raise MissingDependency(module)
    return importlib.import_module(module)


def run_optional(what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
    """``fn(*args, **kwargs)``; if it needs a missing module: one line on stderr, ``None``, the rest goes on.

    The part is noted in :data:`SKIPPED` (written to the report by :func:`write_report`), so
    a run without, e.g., mne-lsl still reports every consumer that ran.

    Parameters
    ----------
    what : str
        The part, as the line names it (``"consumer mne-lsl"``).
    fn : callable
        Runs the part; it imports its optional modules with :func:`require`.
    """
    try:
        return fn(*args, **kwargs)
    except MissingDependency as err:
        line = f"skipped {what}: {err}"
        if all(s["message"] != line for s in SKIPPED):  # said once per run
            print(line, file=sys.stderr, flush=True)
            SKIPPED.append({"part": what, "module": err.module, "install": err.install, "message": line})
        return None


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
    """Sample this process's CPU time (all threads, ``time.process_time``) against ``clock`` every ``period`` s.

    Use :meth:`percent_between` afterwards to get the CPU use, in % of one core, over
    the part of the run that was measured (e.g. from the first to the last window).
    One wake-up per period: negligible next to what is measured.
    """

    clock: Any
    period: float = 0.5
    samples: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
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
        # CPU time of the whole process, all threads (user + system), without psutil
        self.samples.append((float(self.clock()), time.process_time()))

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


def rss_mb() -> float:
    """Resident memory of this process in MiB (psutil); NaN, with the one-line note, without psutil."""
    psutil = run_optional("memory (RSS) figures", require, "psutil")
    return float("nan") if psutil is None else psutil.Process().memory_info().rss / 2**20


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
        psutil = require("psutil")
        info["load_avg_1min"] = load_avg()
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    return info


def load_avg() -> float:
    """The machine's 1-minute load average (recorded before and after a measurement)."""
    return os.getloadavg()[0]


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


def write_report(out: str | os.PathLike, machine: dict[str, Any], sections: dict[str, Any], *,
                 benchmark: str | None) -> Path:
    """Write a benchmark's JSON report: ``benchmark``, ``command``, ``machine``, then ``sections``.

    Parameters
    ----------
    out : path
        The JSON file (``--out``).
    machine : dict
        :func:`machine_info`, taken when the benchmark started.
    sections : dict
        The rest of the report (config, results ...), in the order they are written; then
        ``skipped`` (parts skipped for a missing module, :data:`SKIPPED`) when there are any.
    benchmark : str or None
        The ``benchmark`` key; ``None`` leaves it out (``dataset_loading``'s reports have none).

    Returns
    -------
    Path
        The file written.
    """
    head: dict[str, Any] = {} if benchmark is None else {"benchmark": benchmark}
    tail = {"skipped": list(SKIPPED)} if SKIPPED else {}
    return write_json(out, {**head, "command": command_line(), "machine": machine, **sections, **tail})


# ---------------------------------------------------------------------- command line
def make_parser(doc: str | None, example: str, *, raw: bool = False) -> argparse.ArgumentParser:
    """A benchmark's parser: the first paragraph of ``doc`` as description, ``example`` as epilog.

    Parameters
    ----------
    doc : str or None
        The script's module docstring.
    example : str
        One command line, shown as ``example: ...`` under the flags.
    raw : bool
        Keep the line breaks of the description and epilog (``RawDescriptionHelpFormatter``).
    """
    kwargs: dict[str, Any] = {"formatter_class": argparse.RawDescriptionHelpFormatter} if raw else {}
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0], epilog=f"example: {example}", **kwargs)


def add_seed(parser: argparse.ArgumentParser) -> None:
    """``--seed`` (int, default 0)."""
    parser.add_argument("--seed", type=int, default=0)


def add_out(parser: argparse.ArgumentParser, name: str, help: str | None = None) -> None:
    """``--out``: the JSON results, by default ``benchmarks/results/<name>.json``."""
    parser.add_argument("--out", type=Path, default=default_out(name),
                        help=help or f"JSON results [benchmarks/results/{name}.json]")


def checked(parser: argparse.ArgumentParser, check: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run a :mod:`streams._checks` check on a flag's value; a failure is a usage error (exit 2).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser whose ``error`` reports the failure (with the usage line).
    check : callable
        E.g. :func:`streams._checks.check_float`; name the flag as its argument name.
    *args, **kwargs
        Passed to ``check``.

    Returns
    -------
    object
        What ``check`` returns.
    """
    try:
        return check(*args, **kwargs)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
        raise  # parser.error exits; this keeps type checkers sure of the return


# ---------------------------------------------------------------------- scratch space and sessions
@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary folder (``bci-bench-*``) for sessions, checkpoints and logs, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bci-bench-") as tmp:
        yield Path(tmp)


def simulate_session(path: Path, seconds: float, seed: int) -> float:
    """Write a simulated session of ``seconds`` to ``path``; returns the seconds it took."""
    from streams.simulate import SimulationSpec, simulate_to_session

    t = time.perf_counter()
    simulate_to_session(SimulationSpec(duration=seconds, seed=seed), path, overwrite=True)
    return time.perf_counter() - t


def session_or_simulate(session: Path | None, workdir: Path, seconds: float, seed: int) -> tuple[Path, float | None]:
    """``session`` if given, else a simulated one written to ``workdir/session``.

    Returns
    -------
    session : Path
        The session to measure.
    simulate_s : float or None
        Seconds the simulation took (``None``: ``session`` was given).
    """
    if session is not None:
        return session, None
    path = workdir / "session"
    return path, simulate_session(path, seconds, seed)


def session_keys(reader: Any) -> tuple[str, str | None]:
    """The EEG (first regular) stream key and the first marker stream key (or None) of a session."""
    data_key = next(k for k in reader.streams if reader.description(k).is_regular)
    markers = reader.marker_keys()
    return data_key, (markers[0] if markers else None)


# ---------------------------------------------------------------------- producer process
@contextmanager
def producer_process(args: Sequence[str], what: str, *, stop_timeout: float) -> Iterator[subprocess.Popen[str]]:
    """``python -m benchmarks.producer ARGS`` in its own process, from when it says ``ready``.

    Parameters
    ----------
    args : sequence of str
        The producer's flags.
    what : str
        Names the process in the error raised when it does not start.
    stop_timeout : float
        Seconds to wait for it to end on the way out (it is terminated first if still running).

    Yields
    ------
    subprocess.Popen
        The running producer (its outlets are open).
    """
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.producer", *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{what} did not start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(stop_timeout)
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------- model
def make_default_checkpoint(directory: str | os.PathLike, *, seed: int = 0, **config: Any) -> Path:
    """An untrained, seeded ``eeg_convnet`` checkpoint with the default preprocessing.

    ``default_config("eeg_convnet", **config)`` (``config``: e.g. ``n_chans``, ``ch_names``, ``sfreq``,
    ``n_times`` for another amplifier) -> ``build_model`` -> the default
    :class:`~bci.preprocessing.PreprocessConfig` stored in the config (so the runtime
    applies it, as for a trained model) -> ``save_checkpoint``. Untrained weights cost
    exactly the same time as trained ones.
    """
    import torch

    from bci.models import build_model, default_config, save_checkpoint
    from bci.preprocessing import PreprocessConfig

    torch.manual_seed(seed)
    model = build_model(default_config("eeg_convnet", **config))
    model.set_metadata(preprocessing=PreprocessConfig().to_dict(), extra={"trained": False, "seed": seed})
    return save_checkpoint(model, directory, overwrite=True)


def wait_quietly(seconds: float) -> None:
    """Sleep (used between consecutive benchmark runs so sockets and threads settle)."""
    time.sleep(max(0.0, seconds))
