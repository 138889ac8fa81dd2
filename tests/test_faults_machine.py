"""Faults of the machine: the disk refusing writes during ``bci record``, ``kill -9`` mid-session.

Everything is real: an independent amplifier process (tests/lsl_quiet_amplifier.py, pylsl + numpy
only), ``bci record`` / ``bci live --record`` as subprocesses, a per-file size limit set with
``RLIMIT_FSIZE`` in the recorder's process (unprivileged; SIGXFSZ ignored so that the kernel
returns EFBIG instead of killing it), ``SIGKILL``, and the stores read back from the file system.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bci.cli.main import main
from bci.runtime.sinks import read_events
from streams.errors import StreamsError
from streams.lsl import local_clock
from streams.session import SessionReader
from tests.conftest import REPO

RATE, CHANNELS, MARKER_EVERY = 500, 8, 125  # a marker every 125 samples (0.25 s)
#: Per-file limit of the recorder's process: the quiet part's 1-s chunks (~1.5 KB) fit, a chunk of noise
#: (~15 KB) does not, so the third EEG chunk (samples 1000-1500, the first after --quiet 2 s) fails.
FILE_LIMIT = 8192


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}


def _amplifier(name: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-u", "-m", "tests.lsl_quiet_amplifier", "--name", name,
                             "--rate", str(RATE), "--channels", str(CHANNELS), *args],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"amplifier did not start: {line!r} {proc.stderr.read()}")
    return proc


def _bci(*args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-u", "-m", "bci.cli", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _limit_file_size() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def _check_eeg_prefix(reader: SessionReader, key: str) -> np.ndarray:
    """The recorded EEG is samples 0..n-1 of the amplifier, in order, none lost or repeated; returns times."""
    data, times = reader.data(key), reader.times(key)
    np.testing.assert_array_equal(data[:, 0], (np.arange(len(data)) * 1e-9).astype(np.float32))
    np.testing.assert_allclose(np.diff(times), 1.0 / RATE, atol=2e-4)
    return times


def _check_marker_prefix(reader: SessionReader, key: str) -> list[int]:
    """The recorded markers are the amplifier's first markers, in order; returns their sample indices."""
    _, values = reader.markers(key)
    samples = [int(v.rsplit("/", 1)[1]) for v in values]
    assert samples == list(range(0, MARKER_EVERY * len(samples), MARKER_EVERY))
    return samples


def test_disk_full_during_bci_record_stops_with_one_line_and_keeps_what_came_before(
        tmp_path: Path, unique_name: str, capsys: pytest.CaptureFixture) -> None:
    amp = _amplifier(unique_name, "--quiet", "2", "--duration", "30")
    out = tmp_path / "rec.zarr"
    try:
        rec = _bci("record", "--stream", unique_name, "--stream", f"{unique_name}-Markers", "--duration", "30",
                   "--out", str(out), preexec_fn=_limit_file_size)
        _, err = rec.communicate(timeout=60)
    finally:
        _stop(amp)
    # stderr: the status lines (one a second, stderr not a terminal), then one error line
    lines = [line for line in err.splitlines() if line.strip() and _status_samples(line, unique_name) is None]
    assert rec.returncode == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("bci record: error: recording stopped")
    assert repr(unique_name) in lines[0] and "file size limit" in lines[0] and "1000 samples (2.0 s)" in lines[0]
    reader = SessionReader(out)
    assert not reader.complete and "file size limit" in reader.write_error
    eeg = reader.find(unique_name)
    assert reader.n_samples(eeg) == 1000  # the two quiet chunks; the first chunk of noise is the one refused
    times = _check_eeg_prefix(reader, eeg)
    samples = _check_marker_prefix(reader, f"{unique_name}-Markers")
    assert samples[:8] == list(range(0, 1000, MARKER_EVERY))  # every marker of the data kept, and the next ones
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "not closed cleanly" in info and "recording stopped early: " in info and "file size limit" in info
    assert reader.markers(f"{unique_name}-Markers")[0][7] <= times[-1]


def _status_samples(line: str, name: str) -> int | None:
    """Sample count of stream ``name`` in one ``bci record`` status line."""
    head = f"{name}: "
    return int(line.split(head, 1)[1].split(" ", 1)[0]) if line.startswith(head) else None


def test_kill_9_of_bci_record_leaves_a_session_that_opens_with_what_was_written(tmp_path: Path,
                                                                               unique_name: str) -> None:
    amp = _amplifier(unique_name, "--quiet", "0", "--duration", "60")
    out = tmp_path / "rec.zarr"
    rec = _bci("record", "--stream", unique_name, "--stream", f"{unique_name}-Markers", "--out", str(out))
    try:
        seen = 0
        while seen < 2 * RATE:  # two seconds recorded (the status line comes once a second)
            line = rec.stderr.readline()  # status lines go to stderr
            assert line, rec.stdout.read()
            seen = _status_samples(line, unique_name) or seen
        rec.send_signal(signal.SIGKILL)
        killed_at = local_clock()
        rec.wait(timeout=10)
    finally:
        _stop(rec, amp)
    assert rec.returncode == -signal.SIGKILL
    reader = SessionReader(out)
    assert not reader.complete and reader.write_error is None
    eeg = reader.find(unique_name)
    times = _check_eeg_prefix(reader, eeg)
    # the writer appends 1-s blocks (500 samples): all blocks complete when the status line was printed are on
    # disk, except at most the one being written when the kill came
    assert len(times) >= (seen // RATE - 1) * RATE
    samples = _check_marker_prefix(reader, f"{unique_name}-Markers")
    assert samples, "no marker was recorded"
    print(f"kill -9 of bci record: {len(times)} samples kept, lost {killed_at - times[-1]:.2f} s of EEG")


def _samples_on_disk(path: Path, name: str) -> int:
    """Samples of stream ``name`` a reader finds in a session being written (0 while it is not there yet)."""
    try:
        reader = SessionReader(path)
        return reader.n_samples(reader.find(name))
    except (StreamsError, OSError):
        return 0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained checkpoint for the quiet amplifier's 8 channels at 500 Hz."""
    from bci.cli.main import main

    path = tmp_path_factory.mktemp("model") / "eeg"
    params = {"n_chans": CHANNELS, "ch_names": [f"E{c}" for c in range(CHANNELS)], "sfreq": float(RATE),
              "n_times": 100, "embed_dim": 8}
    assert main(["model", "init", "eeg_convnet", "--out", str(path), "--params", json.dumps(params)]) == 0
    return path


def test_kill_9_of_bci_live_record_leaves_a_session_and_an_events_file_of_whole_lines(
        tmp_path: Path, unique_name: str, model_dir: Path) -> None:
    amp = _amplifier(unique_name, "--quiet", "0", "--duration", "60")
    events, out = tmp_path / "ev.jsonl", tmp_path / "live.zarr"
    live = _bci("live", "--eeg", unique_name, "--markers", f"{unique_name}-Markers", "--model", str(model_dir),
                "--events", str(events), "--no-view", "--device", "cpu", "--resolve-timeout", "20",
                "--results-stream", f"{unique_name}-results", "--record", str(out))
    try:
        n_windows, n_written, end = 0, 0, time.monotonic() + 90
        # 6 windows decoded (~1.5 s) and the first 1-s block on disk (read while the writer writes)
        while (n_windows < 6 or n_written < RATE) and time.monotonic() < end and live.poll() is None:
            time.sleep(0.1)
            if events.exists():
                n_windows = events.read_text(encoding="utf-8").count('"type":"window"')
            n_written = _samples_on_disk(out, unique_name)
        assert live.poll() is None, live.communicate()[1]
        live.send_signal(signal.SIGKILL)
        killed_at = local_clock()
        live.wait(timeout=10)
    finally:
        _stop(live, amp)
    assert live.returncode == -signal.SIGKILL and n_windows >= 6 and n_written >= RATE
    text = events.read_text(encoding="utf-8")
    assert text.endswith("\n")  # one write() per record: never half a line
    records = [json.loads(line) for line in text.splitlines()]
    assert read_events(events).records == records
    windows = [r for r in records if r["type"] == "window"]
    assert len(windows) >= 6
    reader = SessionReader(out)
    assert not reader.complete
    times = _check_eeg_prefix(reader, reader.find(unique_name))
    assert len(times) >= RATE  # at least the first 1-s block
    _check_marker_prefix(reader, f"{unique_name}-Markers")
    results = [json.loads(v) for v in reader.data(reader.find("type=BCIResults"))[:, 0]]
    recorded = [r["marker"] for r in results if r["type"] == "window"]
    assert recorded == [r["marker"] for r in windows][: len(recorded)]  # the session's results: a prefix
    print(f"kill -9 of bci live --record: {len(times)} samples kept, lost {killed_at - times[-1]:.2f} s of EEG; "
          f"{len(records)} whole event lines")


def test_a_torn_last_events_line_is_skipped_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    whole = [{"type": "header", "stream": "X"}, {"type": "window", "marker": "stim/img0001/a"}]
    text = "".join(json.dumps(r) + "\n" for r in whole)
    path.write_text(text + '{"type":"window","mar', encoding="utf-8")  # what a writer killed mid-line leaves
    events = read_events(path)
    assert events.records == whole
    assert len(events.notes) == 1 and "line 3" in events.notes[0] and "torn" in events.notes[0]
    path.write_text(text + '{"type":"window","mar\n' + text, encoding="utf-8")  # a bad line inside: an error
    with pytest.raises(ValueError, match="line 3"):
        read_events(path)


def test_disk_full_during_bci_live_record_keeps_decoding_and_ends_with_one_line(
        tmp_path: Path, unique_name: str, model_dir: Path) -> None:
    """The disk refuses the recording and the events file of `bci live`: decoding goes on, the end says why."""
    import pylsl

    amp = _amplifier(unique_name, "--quiet", "2", "--duration", "30")
    events, out = tmp_path / "ev.jsonl", tmp_path / "live.zarr"
    results: list[dict] = []
    try:
        live = _bci("live", "--eeg", unique_name, "--markers", f"{unique_name}-Markers", "--model", str(model_dir),
                    "--no-view", "--device", "cpu", "--resolve-timeout", "20", "--duration", "6",
                    "--results-stream", f"{unique_name}-results", "--record", str(out), "--events", str(events),
                    preexec_fn=_limit_file_size)
        found = pylsl.resolve_byprop("name", f"{unique_name}-results", 1, 30)
        assert found, live.communicate(timeout=30)[1]
        inlet = pylsl.StreamInlet(found[0])
        while live.poll() is None:  # what the decoder publishes, read while it runs
            chunk, _ = inlet.pull_chunk(timeout=0.2)
            results += [json.loads(c[0]) for c in chunk]
        chunk, _ = inlet.pull_chunk(timeout=0.5)
        results += [json.loads(c[0]) for c in chunk]
        _, err = live.communicate(timeout=30)
    finally:
        _stop(amp)
    assert live.returncode == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if " ERROR " in line or line.startswith("bci live: error:")]
    assert len(errors) == 3, err  # the recording and the events file each say so when refused, then the end
    assert "stopped (the consumer goes on)" in errors[0] and "file size limit" in errors[0]
    assert f"events file {events}: file size limit reached" in errors[1] and "decoding goes on" in errors[1]
    assert errors[2].startswith("bci live: error:") and repr(unique_name) in errors[2]
    assert "1000 samples (2.0 s)" in errors[2]
    # decoding went on after both failures: windows of markers long after the refused block (samples 1000-1500)
    late = [r for r in results if r["type"] == "window" and int(r["marker"].rsplit("/", 1)[1]) >= 2 * RATE]
    assert len(late) >= 4, results
    text = events.read_text(encoding="utf-8")
    assert text.endswith("\n") and len(text.encode()) <= FILE_LIMIT  # whole lines up to the refused one
    assert len(read_events(events).records) < len(results)
    reader = SessionReader(out)
    assert not reader.complete and "file size limit" in reader.write_error
    _check_eeg_prefix(reader, reader.find(unique_name))
    assert reader.n_samples(reader.find(unique_name)) == 1000  # what came before the refused block
