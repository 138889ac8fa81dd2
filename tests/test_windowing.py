"""Event-locked and sliding windows: the timing rule to the sample, never early, never twice, drops reported."""

from __future__ import annotations

import numpy as np
import pytest

from bci.runtime.windowing import EventWindower, SlidingWindower, WindowSpec
from streams.ringbuffer import RingBuffer

SFREQ = 1000.0


def _buffer(n: int, t0: float = 100.0, n_ch: int = 3, capacity: int = 100_000) -> RingBuffer:
    buf = RingBuffer(capacity, n_ch)
    idx = np.arange(n)
    buf.push((idx[:, None] + np.arange(n_ch) / 10).astype(np.float32), t0 + idx / SFREQ)
    return buf


def test_window_starts_at_nearest_sample_to_marker_plus_offset() -> None:
    buf = _buffer(2000)
    win = EventWindower(WindowSpec(n_times=440, offset=0.020), SFREQ)
    # marker 0.3 ms after sample 100 -> window starts at sample 120 (nearest to 100.1003 + 0.020)
    win.add_marker("stim/a", 100.0 + 0.1003)
    # marker 0.6 ms after sample 200 -> nearest sample to 100.2206 is 221
    win.add_marker("stim/b", 100.0 + 0.2006)
    windows, dropped = win.poll(buf)
    assert dropped == []
    assert [w.start_index for w in windows] == [120, 221]
    assert windows[0].data.shape == (3, 440) and windows[0].data.dtype == np.float32
    np.testing.assert_array_equal(windows[0].data[0], np.arange(120, 560, dtype=np.float32))
    assert windows[0].start_time == pytest.approx(100.120)
    assert windows[0].end_time == pytest.approx(100.559)


def test_window_is_emitted_exactly_when_its_last_sample_arrives_and_once() -> None:
    buf = RingBuffer(10_000, 1)
    win = EventWindower(WindowSpec(n_times=10, offset=0.0), SFREQ)
    win.add_marker("m", 0.005)  # first sample index 5, last index 14
    emitted_at = []
    for i in range(30):
        buf.push(np.array([[float(i)]], np.float32), np.array([i / SFREQ]))
        windows, _ = win.poll(buf)
        emitted_at += [(i, w.start_index) for w in windows]
    assert emitted_at == [(14, 5)]
    assert win.n_pending == 0


def test_marker_before_its_data_waits() -> None:
    buf = _buffer(100)
    win = EventWindower(WindowSpec(n_times=50, offset=0.0), SFREQ)
    win.add_marker("future", 100.0 + 0.5)  # data reach only 100.099 so far
    assert win.poll(buf) == ([], [])
    assert win.n_pending == 1
    idx = np.arange(100, 700)
    buf.push(np.repeat(idx[:, None], 3, axis=1).astype(np.float32), 100.0 + idx / SFREQ)
    windows, _ = win.poll(buf)
    assert [w.start_index for w in windows] == [500]


def test_late_marker_is_served_from_the_buffer() -> None:
    buf = _buffer(5000)
    win = EventWindower(WindowSpec(n_times=440), SFREQ)
    win.add_marker("late", 100.0 + 1.0, arrival=None)  # its data arrived long ago
    windows, dropped = win.poll(buf)
    assert [w.start_index for w in windows] == [1020] and dropped == []


def test_duplicate_marker_is_reported_not_decoded_twice() -> None:
    buf = _buffer(2000)
    win = EventWindower(WindowSpec(n_times=100), SFREQ)
    assert win.add_marker("stim/x", 100.5) is None
    d = win.add_marker("stim/x", 100.5)
    assert d is not None and d.reason == "duplicate"
    windows, _ = win.poll(buf)
    assert len(windows) == 1


def test_overwritten_data_is_reported() -> None:
    buf = _buffer(5000, capacity=1000)  # holds samples 4000..4999 only
    win = EventWindower(WindowSpec(n_times=100), SFREQ)
    win.add_marker("too-late", 100.0 + 1.0)
    windows, dropped = win.poll(buf)
    assert windows == [] and [d.reason for d in dropped] == ["overwritten"]
    assert win.stats.dropped == {"overwritten": 1}


def test_window_spanning_a_gap_is_reported() -> None:
    buf = RingBuffer(10_000, 1)
    t = np.concatenate([np.arange(500), np.arange(1500, 2000)]) / SFREQ  # 1 s missing
    buf.push(np.zeros((1000, 1), np.float32), t)
    win = EventWindower(WindowSpec(n_times=200, offset=0.0), SFREQ)
    win.add_marker("across", 0.4)   # window 400..599 crosses the gap
    win.add_marker("inside", 1.0)   # falls into the gap
    win.add_marker("after", 1.6)
    windows, dropped = win.poll(buf)
    assert [w.marker for w in windows] == ["after"]
    assert sorted(d.reason for d in dropped) == ["gap", "gap"]


def test_marker_before_stream_start_is_stale() -> None:
    buf = _buffer(1000, t0=100.0)
    win = EventWindower(WindowSpec(n_times=100, offset=0.0), SFREQ)
    win.add_marker("before", 99.0)
    _, dropped = win.poll(buf)
    assert [d.reason for d in dropped] == ["stale"]


def test_negative_offset_cuts_before_the_marker_and_drops_what_precedes_the_stream() -> None:
    buf = _buffer(1000, t0=100.0)
    win = EventWindower(WindowSpec(n_times=100, offset=-0.2), SFREQ)  # e.g. THINGS-EEG2 epochs: -0.2..0.8 s
    win.add_marker("early", 100.05)   # sample 50: its window would start at sample -150
    win.add_marker("ok", 100.5)       # sample 500 -> window [300, 400)
    windows, dropped = win.poll(buf)
    assert [(w.marker, w.start_index) for w in windows] == [("ok", 300)]
    assert [(d.marker, d.reason) for d in dropped] == [("early", "stale")]
    assert "starts 0.2 s before the marker, before the stream's first sample" in dropped[0].detail
    assert win.n_pending == 0


def test_marker_filter_and_flush() -> None:
    buf = _buffer(300)
    win = EventWindower(WindowSpec(n_times=100, offset=0.0), SFREQ, marker_filter=r"^stim/")
    win.add_marker("block_start/1", 100.0)
    win.add_marker("stim/img0001/x", 100.25)  # needs data up to 100.349: not there
    assert win.stats.n_filtered == 1
    assert win.poll(buf) == ([], [])
    assert [d.reason for d in win.flush()] == ["end_of_data"]


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="n_times=0"):
        WindowSpec(n_times=0)
    with pytest.raises(ValueError, match="marker_filter='\\('"):
        EventWindower(WindowSpec(), SFREQ, marker_filter="(")
    with pytest.raises(ValueError, match="sfreq=0"):
        EventWindower(WindowSpec(), 0)


def test_sliding_windows_cover_the_stream_with_hop() -> None:
    buf = RingBuffer(10_000, 2)
    sw = SlidingWindower(n_times=100, hop=50)
    starts = []
    for first in range(0, 1000, 37):  # odd chunking
        n = min(37, 1000 - first)
        idx = np.arange(first, first + n)
        buf.push(np.repeat(idx[:, None], 2, axis=1).astype(np.float32), idx / SFREQ)
        starts += [w.start_index for w in sw.poll(buf)]
    assert starts == list(range(0, 901, 50))


def test_sliding_windows_count_what_was_overwritten() -> None:
    buf = RingBuffer(200, 1)
    sw = SlidingWindower(n_times=100, hop=50)
    idx = np.arange(1000)
    buf.push(idx[:100, None].astype(np.float32), idx[:100] / SFREQ)
    assert [w.start_index for w in sw.poll(buf)] == [0]
    buf.push(idx[100:, None].astype(np.float32), idx[100:] / SFREQ)  # the reader falls 800 samples behind
    windows = sw.poll(buf)
    assert [w.start_index for w in windows] == [800, 850, 900]
    assert sw.n_skipped == 15  # starts 50..750 were overwritten before they could be cut


@pytest.mark.parametrize("speed", [1.0, 2.0, 10.0])
def test_rule_holds_for_replays_faster_than_real_time(speed: float) -> None:
    """Timestamps compressed by `speed` (replay) give the same windows, counted in samples."""
    buf = RingBuffer(10_000, 1)
    idx = np.arange(3000)
    buf.push(idx[:, None].astype(np.float32), 50.0 + idx / SFREQ / speed)
    win = EventWindower(WindowSpec(n_times=440, offset=0.020), SFREQ)
    for k, jitter in ((500, 0.0), (1200, 0.3), (1900, -0.4)):  # marker within +-0.4 sample of sample k
        win.add_marker(f"m{k}", 50.0 + (k + jitter) / SFREQ / speed)
    windows, dropped = win.poll(buf)
    assert dropped == []
    assert [w.start_index for w in windows] == [520, 1220, 1920]


def test_marker_inside_a_gap_is_reported_even_when_the_last_sample_before_is_nearer() -> None:
    buf = RingBuffer(10_000, 1)
    t = np.concatenate([np.arange(500), np.arange(1500, 2500)]) / SFREQ  # samples 500..1499 missing
    buf.push(np.zeros((1500, 1), np.float32), t)
    # with a 20-sample offset the window itself would lie entirely after the gap: only the
    # marker's position tells that its data are missing
    win = EventWindower(WindowSpec(n_times=100, offset=0.020), SFREQ)
    win.add_marker("early-in-gap", 0.6)  # 0.1 s after the last sample before the gap
    _, dropped = win.poll(buf)
    assert [(d.marker, d.reason) for d in dropped] == [("early-in-gap", "gap")]
