"""bci record / Recorder: real LSL streams from other processes into real Zarr sessions on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streams.description import StreamDescription
from streams.errors import OutputExistsError, StreamNotFoundError
from streams.lsl import Outlet
from streams.recorder import Recorder
from streams.session import SessionReader

REPO = Path(__file__).resolve().parents[1]


def _bci(*args: str) -> list[str]:
    return [sys.executable, "-m", "bci.cli", *args]


def test_records_regular_string_and_irregular_float_streams(producer, unique_name: str, tmp_path: Path) -> None:
    eeg, mk = unique_name + "-eeg", unique_name + "-mk"
    p1 = producer("--name", eeg, "--rate", "1000", "--channels", "8", "--duration", "2", "--chunk", "13")
    p2 = producer("--name", mk, "--markers", "--duration", "2")
    irregular = StreamDescription(unique_name + "-ann", "Annotations", unique_name + "-ann", ("x", "y", "z"),
                                  nominal_rate=0.0, dtype="float64")
    out = tmp_path / "rec.zarr"
    with Outlet(irregular) as ann:
        rec = Recorder([eeg, f"name={mk}", f"name={irregular.name}"], out, resolve_timeout=10).start()
        for i in range(5):
            ann.push_sample([i, i * 2.0, -i], 0.0)
            time.sleep(0.05)
        p1.wait(), p2.wait()
        time.sleep(0.3)
        rec.drain()
        status = {s.name: s for s in rec.status()}
        rec.stop()
    assert status[eeg].n_samples == 2000 and status[mk].n_samples == 20 and status[irregular.name].n_samples == 5
    reader = SessionReader(out)
    assert reader.complete
    key = reader.find(eeg)
    expected = (np.arange(2000)[:, None] + np.arange(8) / 1000.0).astype(np.float32)
    np.testing.assert_array_equal(reader.data(key), expected)
    assert reader.description(key).nominal_rate == 1000.0
    t, values = reader.markers(reader.find(mk))
    assert list(values[:3]) == ["stim/img0000/label 0", "stim/img0001/label 1", "stim/img0002/label 2"]
    ann_data = reader.data(reader.find(irregular.name))
    np.testing.assert_array_equal(ann_data[:, 1], np.arange(5) * 2.0)
    assert reader.description(reader.find(irregular.name)).dtype == "float64"


def test_existing_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "rec.zarr"
    out.mkdir()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        Recorder(["whatever"], out)


def test_missing_stream_writes_nothing(tmp_path: Path, unique_name: str) -> None:
    out = tmp_path / "rec.zarr"
    with pytest.raises(StreamNotFoundError, match="Visible streams"):
        Recorder([unique_name], out, resolve_timeout=0.5).start()
    assert not out.exists()


def test_slow_consumer_gets_counted_drop_and_gap(producer, unique_name: str, tmp_path: Path) -> None:
    p = producer("--name", unique_name, "--rate", "1000", "--duration", "1.5")
    rec = Recorder([unique_name], tmp_path / "rec.zarr", buffer_seconds=0.2, resolve_timeout=10).start()
    p.wait()  # never drained while 1.5 s arrive into a 0.2 s ring buffer
    time.sleep(0.3)
    rec.drain()
    status = rec.status()[0]
    rec.stop()
    assert status.n_dropped == 1500 - 200
    reader = SessionReader(tmp_path / "rec.zarr")
    key = reader.streams[0]
    assert len(reader.times(key)) == 200
    assert any("fell behind" in g["reason"] for g in reader.gaps(key))


def test_cli_record_duration_and_exit_code(producer, unique_name: str, tmp_path: Path) -> None:
    producer("--name", unique_name, "--rate", "250", "--duration", "20")
    out = tmp_path / "cli.zarr"
    res = subprocess.run(_bci("record", "--stream", unique_name, "--duration", "1.5", "--out", str(out)),
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "samples" in res.stdout and str(out) in res.stdout
    n = len(SessionReader(out).times(SessionReader(out).streams[0]))
    assert 250 <= n <= 250 * (1.5 + 2.0)  # the duration bounds the recording (start-up slack allowed)
    again = subprocess.run(_bci("record", "--stream", unique_name, "--duration", "1", "--out", str(out)),
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_cli_record_wrong_name_lists_visible(producer, unique_name: str, tmp_path: Path) -> None:
    producer("--name", unique_name, "--rate", "100", "--duration", "20")
    res = subprocess.run(
        _bci("record", "--stream", unique_name + "-nope", "--resolve-timeout", "0.5", "--out", str(tmp_path / "x")),
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert unique_name in res.stderr and "Visible streams" in res.stderr
    assert not (tmp_path / "x").exists()


def test_killed_recorder_leaves_readable_session(producer, unique_name: str, tmp_path: Path) -> None:
    """kill -9 of `bci record` loses at most the last buffered second."""
    producer("--name", unique_name, "--rate", "1000", "--channels", "4", "--duration", "30")
    out = tmp_path / "killed.zarr"
    proc = subprocess.Popen(_bci("record", "--stream", unique_name, "--out", str(out)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("recording")
        started = time.monotonic()
        time.sleep(3.5)
        elapsed = time.monotonic() - started
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    reader = SessionReader(out)
    assert not reader.complete
    key = reader.streams[0]
    data, times = reader.data(key), reader.times(key)
    assert len(data) == len(times)
    assert len(times) >= (elapsed - 1.0 - 0.5) * 1000  # at most ~the last buffered second is missing
    np.testing.assert_array_equal(data[:, 0], np.arange(len(data), dtype=np.float32))


def test_sigterm_closes_the_session_cleanly(producer, unique_name: str, tmp_path: Path) -> None:
    producer("--name", unique_name, "--rate", "500", "--duration", "30")
    out = tmp_path / "term.zarr"
    proc = subprocess.Popen(_bci("record", "--stream", unique_name, "--out", str(out)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("recording")
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out_text, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "saved" in out_text
    reader = SessionReader(out)
    assert reader.complete and len(reader.times(reader.streams[0])) > 400


def test_dropout_during_recording_is_written_as_a_gap(producer, unique_name: str, tmp_path: Path) -> None:
    args = ["--name", unique_name, "--source-id", unique_name, "--rate", "500", "--channels", "2"]
    first = producer(*args, "--duration", "30")
    rec = Recorder([unique_name], tmp_path / "gap.zarr", resolve_timeout=10, lost_timeout=1.0).start()
    time.sleep(1.0)
    rec.drain()
    first.kill()
    time.sleep(0.5)
    second = producer(*args, "--duration", "1", "--start-index", "50000")
    second.wait()
    time.sleep(0.3)
    rec.drain()
    rec.stop()
    reader = SessionReader(tmp_path / "gap.zarr")
    key = reader.streams[0]
    gaps = reader.gaps(key)
    assert len(gaps) == 1 and "reconnected" in gaps[0]["reason"]
    data, times = reader.data(key), reader.times(key)
    k = int(np.argmax(data[:, 0] >= 50000))
    assert k > 0 and times[k - 1] == gaps[0]["start_time"] and times[k] == gaps[0]["end_time"]
    assert data[-1, 0] == 50000 + 499


def test_reconnect_with_other_rate_fails_clearly_and_keeps_what_was_recorded(producer, unique_name: str,
                                                                              tmp_path: Path) -> None:
    first = producer("--name", unique_name, "--source-id", unique_name, "--rate", "500", "--duration", "30")
    out = tmp_path / "mm.zarr"
    proc = subprocess.Popen(_bci("record", "--stream", unique_name, "--out", str(out), "--lost-timeout", "1",
                                 "--duration", "20"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().startswith("recording")
    time.sleep(1.0)
    first.kill()
    producer("--name", unique_name, "--source-id", unique_name, "--rate", "250", "--duration", "10")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "rate 250 Hz instead of 500 Hz" in err and "Traceback" not in err and str(out) in err
    reader = SessionReader(out)
    data = reader.data(reader.streams[0])
    assert len(data) >= 400 and np.all(np.diff(data[:, 0]) == 1)  # only the original stream, intact
