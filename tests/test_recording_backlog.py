"""SessionRecording's queue is bounded: a disk that falls behind makes the consumer wait, memory stays bounded.

The writer thread is stalled for real: the test holds the lock it takes to write each block
(what a stalled disk does to it), on a real Zarr session on disk.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streams.description import StreamDescription
from streams.recorder import MAX_BACKLOG_BYTES, SessionRecording
from streams.session import SessionReader

N_CHANS = 4
CHUNK = 100  # samples per append: 100 x 4 float32 + 100 float64 = 2,400 bytes


def _desc() -> StreamDescription:
    return StreamDescription(name="Backlog", type="EEG", source_id="backlog-test",
                             channel_names=tuple(f"C{i}" for i in range(N_CHANS)), nominal_rate=100.0)


def _chunk(i: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.full((CHUNK, N_CHANS), i, dtype=np.float32)
    times = (i * CHUNK + np.arange(CHUNK)) / 100.0
    return data, times


def test_a_stalled_writer_makes_append_wait_at_the_bound_and_loses_nothing(tmp_path: Path) -> None:
    limit = 10 * 2_400  # ten chunks
    rec = SessionRecording(tmp_path / "s.zarr", max_backlog_bytes=limit).start()
    key = rec.add_stream(_desc())
    appended = []

    def consumer() -> None:
        for i in range(40):
            rec.append(key, *_chunk(i))
            appended.append(i)

    rec._lock.acquire()  # the disk stalls: the writer thread cannot write a block
    try:
        thread = threading.Thread(target=consumer, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while rec.waited_s == 0 and rec._n_waits == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        # at most one item is taken by the writer (it waits on the lock holding it); the rest wait in line
        assert len(appended) <= 11, appended
        assert rec.backlog_bytes <= limit
        assert thread.is_alive()  # the consumer waits for the disk
    finally:
        rec._lock.release()
    thread.join(10)
    assert not thread.is_alive() and appended == list(range(40))
    rec.close()
    summary = rec.backlog_summary()
    assert summary["waits"] >= 1 and summary["waited_s"] > 0.2
    assert 0 < summary["peak_bytes"] <= limit
    session = SessionReader(tmp_path / "s.zarr")
    assert session.n_samples(key) == 40 * CHUNK  # nothing lost
    data = session.data(key)
    assert np.array_equal(data[::CHUNK, 0], np.arange(40, dtype=np.float32))  # in order
    assert session.attrs["recording_backlog"]["waits"] == summary["waits"]


def test_a_writer_that_keeps_up_never_makes_the_consumer_wait(tmp_path: Path) -> None:
    rec = SessionRecording(tmp_path / "s.zarr").start()
    assert rec.max_backlog_bytes == MAX_BACKLOG_BYTES
    key = rec.add_stream(_desc())
    for i in range(20):
        rec.append(key, *_chunk(i))
    rec.close()
    assert rec.backlog_bytes == 0
    attrs = SessionReader(tmp_path / "s.zarr").attrs["recording_backlog"]
    assert attrs["waits"] == 0 and attrs["waited_s"] == 0 and attrs["peak_mib"] > 0


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_a_bad_backlog_bound_is_refused_naming_it(tmp_path: Path, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match="max_backlog_bytes"):
        SessionRecording(tmp_path / "s.zarr", max_backlog_bytes=value)
