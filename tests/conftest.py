"""Shared fixtures: unique LSL stream names, seeded RNG, Qt offscreen, subprocess producers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles (one owner): "ci" is the suite's default, bounded and derandomized (the same cases
# every run, no example database written); "long" is the documented longer fuzzing run:
#   HYPOTHESIS_PROFILE=long bash scripts/test.sh tests/test_fuzz_*.py
# A test's own @settings(max_examples=...) overrides the profile; fuzz targets (tests/test_fuzz_*.py) leave the
# count to the profile. `pytest --hypothesis-show-statistics` prints the cases run per target.
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, derandomize=False, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A stream name no other test (or concurrent run) uses."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:24]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded random generator."""
    return np.random.default_rng(12345)


class Producer:
    """A real LSL outlet in another process (tests/lsl_producer.py)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tests.lsl_producer", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"producer did not start: {line!r} {self.proc.stderr.read()}")

    def wait(self, timeout: float = 60.0) -> str:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"producer failed ({self.proc.returncode}): {err}")
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def producer():
    """Start ``Producer(*args)`` processes; all are killed at teardown."""
    started: list[Producer] = []

    def start(*args: str) -> Producer:
        p = Producer(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.kill()


@pytest.fixture(scope="module")
def one_torch_thread() -> object:
    """One intra-op torch thread for a module (use with ``pytestmark = pytest.mark.usefixtures(...)``):
    small training tests gain nothing from two, and the machine is shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class CliResult:
    """What ``bci ARGS`` returned and printed (the fields of ``subprocess.CompletedProcess`` that tests read)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def bci_cli(capfd: pytest.CaptureFixture[str]):
    """Run ``bci ARGS`` in this process (``bci.cli.main.main``, what the console script calls): returns a
    :class:`CliResult`.

    For tests about a command's flags, output and exit status, not about the process boundary: a ``bci``
    subprocess spends 5-8 s importing torch and open_clip before it parses a flag. An error the CLI does not
    turn into its one line (exit status 2) propagates as the exception itself, so a test cannot pass on a
    traceback. Tests about processes (kill -9, SIGSTOP, a child's stderr, independent producers) keep real ones.
    Output is captured at the file descriptors (``capfd``), so it includes what the command's own children print
    (the viewer process writes to its parent's stdout and stderr); a test using it cannot also use ``capsys``.
    """
    from bci.cli.main import main

    def run(*args: object) -> CliResult:
        capfd.readouterr()
        with torch_threads_kept():
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse's usage errors: status 2, as the console script exits
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        captured = capfd.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count after a command run in-process (decoding sets it to 1 process-wide,
    which a subprocess kept to itself)."""
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)
