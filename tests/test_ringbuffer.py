"""RingBuffer: property tests against a naive reference, threads, validation, dtypes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import BufferOverflowError
from streams.ringbuffer import RingBuffer

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True)


class Reference:
    """Everything ever pushed, kept in full: the obvious (slow) model of a ring buffer."""

    def __init__(self, capacity: int, n_channels: int) -> None:
        self.capacity = capacity
        self.data = np.empty((0, n_channels), np.float64)
        self.times = np.empty(0, np.float64)

    def push(self, data: np.ndarray, times: np.ndarray) -> None:
        self.data = np.concatenate((self.data, data))
        self.times = np.concatenate((self.times, times))

    @property
    def total(self) -> int:
        return len(self.times)

    @property
    def oldest(self) -> int:
        return max(0, self.total - self.capacity)

    def index_at_time(self, t: float, side: str) -> int | None:
        """The expected answer, or None where the buffer must raise BufferOverflowError."""
        held = self.times[self.oldest :]
        if len(held) and self.oldest > 0 and t < held[0]:
            return None
        return self.oldest + int(np.searchsorted(held, t, side=side))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, int, list[int], int]:
    """(capacity, n_channels, chunk sizes in 0..3*capacity, seed)."""
    capacity = draw(st.integers(1, 40))
    n_channels = draw(st.integers(1, 4))
    chunks = draw(st.lists(st.integers(0, 3 * capacity), min_size=0, max_size=12))
    return capacity, n_channels, chunks, draw(st.integers(0, 2**32 - 1))


def _chunk(rng: np.random.Generator, n: int, n_channels: int, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """Random samples and non-decreasing times (with repeats) starting at ``t0``."""
    data = rng.standard_normal((n, n_channels)).astype(np.float32)
    steps = rng.choice([0.0, 0.5, 1.0, 2.5], size=n)
    return data, t0 + np.cumsum(steps)


def _filled(capacity: int, n_channels: int, chunks: list[int], seed: int) -> tuple[RingBuffer, Reference]:
    rng = np.random.default_rng(seed)
    buf, ref = RingBuffer(capacity, n_channels), Reference(capacity, n_channels)
    t = 0.0
    for n in chunks:
        data, times = _chunk(rng, n, n_channels, t)
        buf.push(data, times)
        ref.push(data.astype(np.float64), times)
        if n:
            t = float(times[-1])
    return buf, ref


# ---------------------------------------------------------------------- properties
@PROPERTY
@given(scenarios())
def test_counters_match_reference(scenario: tuple[int, int, list[int], int]) -> None:
    buf, ref = _filled(*scenario)
    assert buf.total == ref.total
    assert buf.oldest_index == ref.oldest
    assert len(buf) == ref.total - ref.oldest
    assert len(buf) <= buf.capacity


@PROPERTY
@given(scenarios(), st.integers(0, 130))
def test_latest_matches_reference(scenario: tuple[int, int, list[int], int], n: int) -> None:
    buf, ref = _filled(*scenario)
    data, times = buf.latest(n)
    k = min(n, len(buf))
    assert data.shape == (k, buf.n_channels) and data.dtype == np.float32
    np.testing.assert_array_equal(data, ref.data[ref.total - k :])
    np.testing.assert_array_equal(times, ref.times[ref.total - k :])


@PROPERTY
@given(scenarios(), st.data())
def test_get_matches_reference_or_overflows(
    scenario: tuple[int, int, list[int], int], draw: st.DataObject
) -> None:
    buf, ref = _filled(*scenario)
    stop = draw.draw(st.integers(0, ref.total), label="stop")
    start = draw.draw(st.integers(0, stop), label="start")
    if start < ref.oldest:
        with pytest.raises(BufferOverflowError, match=rf"\({ref.oldest - start} samples\) were overwritten"):
            buf.get(start, stop)
        return
    data, times = buf.get(start, stop)
    np.testing.assert_array_equal(data, ref.data[start:stop])
    np.testing.assert_array_equal(times, ref.times[start:stop])
    assert data.flags.owndata and data.flags.writeable and times.flags.owndata


@PROPERTY
@given(scenarios(), st.lists(st.floats(-5.0, 400.0), min_size=1, max_size=8), st.sampled_from(["left", "right"]))
def test_index_at_time_matches_reference(
    scenario: tuple[int, int, list[int], int], queries: list[float], side: str
) -> None:
    buf, ref = _filled(*scenario)
    held_times = ref.times[ref.oldest :]
    # query exactly at held timestamps too, where "left" and "right" differ
    for t in [*queries, *held_times[:: max(1, len(held_times) // 4)]]:
        expected = ref.index_at_time(float(t), side)
        if expected is None:
            with pytest.raises(BufferOverflowError, match="older than the oldest sample held"):
                buf.index_at_time(t, side=side)
        else:
            assert buf.index_at_time(t, side=side) == expected


# ---------------------------------------------------------------------- specific cases
def test_oversized_push_keeps_newest_and_counts_all() -> None:
    buf = RingBuffer(5, 1)
    buf.push(np.arange(12.0)[:, None], np.arange(12.0))
    assert (buf.total, buf.oldest_index, len(buf)) == (12, 7, 5)
    data, times = buf.get(7, 12)
    np.testing.assert_array_equal(data[:, 0], np.arange(7.0, 12.0))
    np.testing.assert_array_equal(times, np.arange(7.0, 12.0))


def test_get_errors_name_the_problem() -> None:
    buf = RingBuffer(4, 1)
    buf.push(np.zeros((10, 1)), np.arange(10.0))
    with pytest.raises(BufferOverflowError, match=r"\(3 samples\).*larger capacity"):
        buf.get(3, 8)
    with pytest.raises(ValueError, match="stop=11 is beyond the newest sample"):
        buf.get(8, 11)
    with pytest.raises(ValueError, match="start=9, stop=8"):
        buf.get(9, 8)
    with pytest.raises(ValueError, match="start=-1"):
        buf.get(-1, 8)
    with pytest.raises(TypeError, match="start=1.5"):
        buf.get(1.5, 8)  # type: ignore[arg-type]


def test_index_at_time_edges() -> None:
    buf = RingBuffer(4, 1)
    assert buf.index_at_time(3.0) == 0  # empty: total
    buf.push(np.zeros((3, 1)), np.array([10.0, 11.0, 11.0]))
    assert buf.index_at_time(-100.0) == 0  # nothing overwritten yet: first sample
    assert buf.index_at_time(11.0, side="left") == 1
    assert buf.index_at_time(11.0, side="right") == 3 == buf.total  # not arrived yet
    buf.push(np.zeros((3, 1)), np.array([12.0, 13.0, 14.0]))  # indices 0, 1 overwritten
    assert buf.index_at_time(11.0) == 2
    with pytest.raises(BufferOverflowError, match="2 samples were already overwritten"):
        buf.index_at_time(10.5)
    with pytest.raises(ValueError, match="side='middle'"):
        buf.index_at_time(12.0, side="middle")
    with pytest.raises(ValueError, match="nan"):
        buf.index_at_time(float("nan"))


def test_latest_views_are_read_only_and_wrapped_results_are_copies() -> None:
    buf = RingBuffer(6, 2)
    buf.push(np.ones((4, 2)), np.arange(4.0))
    data, times = buf.latest(3)  # contiguous: a view
    assert np.shares_memory(data, buf._data) and np.shares_memory(times, buf._times)
    assert not data.flags.writeable and not times.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        data[0, 0] = 5.0
    buf.push(np.full((4, 2), 2.0), np.arange(4.0, 8.0))  # now wraps around the end
    data, times = buf.latest(5)
    assert not np.shares_memory(data, buf._data)
    np.testing.assert_array_equal(times, np.arange(3.0, 8.0))
    assert buf._data.flags.writeable  # the writer's storage is untouched
    with pytest.raises(ValueError, match="n=-1"):
        buf.latest(-1)
    buf.push(np.zeros((4, 2)), np.arange(8.0, 12.0))  # total == 12, a multiple of the capacity
    data, _ = buf.latest(6)
    assert np.shares_memory(data, buf._data) and not data.flags.writeable


def test_clear_restarts_indices() -> None:
    buf = RingBuffer(3, 1)
    buf.push(np.ones((5, 1)), np.arange(5.0))
    buf.clear()
    assert (buf.total, buf.oldest_index, len(buf)) == (0, 0, 0)
    assert buf.latest(2)[0].shape == (0, 1)
    buf.push(np.full((2, 1), 7.0), np.array([9.0, 10.0]))
    np.testing.assert_array_equal(buf.get(0, 2)[1], [9.0, 10.0])


def test_zero_length_push_changes_nothing() -> None:
    buf = RingBuffer(3, 2)
    buf.push(np.empty((0, 2)), np.empty(0))
    assert buf.total == 0 and len(buf) == 0


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"capacity": 0, "n_channels": 2}, ValueError, "capacity=0"),
        ({"capacity": -5, "n_channels": 2}, ValueError, "capacity=-5"),
        ({"capacity": 2.5, "n_channels": 2}, TypeError, "capacity=2.5"),
        ({"capacity": True, "n_channels": 2}, TypeError, "capacity=True"),
        ({"capacity": 10, "n_channels": 0}, ValueError, "n_channels=0"),
        ({"capacity": 10, "n_channels": 2, "dtype": "not-a-dtype"}, TypeError, "dtype='not-a-dtype'"),
    ],
)
def test_constructor_validation(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RingBuffer(**kwargs)


def test_numpy_integer_capacity_is_accepted() -> None:
    buf = RingBuffer(np.int64(8), np.int32(3), np.float64)
    assert (buf.capacity, buf.n_channels, buf.dtype) == (8, 3, np.dtype(np.float64))
    assert type(buf.capacity) is int


@pytest.mark.parametrize(
    ("data_shape", "times_shape", "match"),
    [
        ((4, 3), (4,), r"data has shape \(4, 3\); expected \(n_samples, 2\)"),
        ((4,), (4,), r"data has shape \(4,\); expected \(n_samples, 2\)"),
        ((4, 2), (3,), r"times has shape \(3,\) but data has shape \(4, 2\)"),
        ((4, 2), (4, 1), r"times has shape \(4, 1\)"),
    ],
)
def test_push_shape_validation(data_shape: tuple, times_shape: tuple, match: str) -> None:
    buf = RingBuffer(10, 2)
    with pytest.raises(ValueError, match=match):
        buf.push(np.zeros(data_shape), np.zeros(times_shape))
    assert buf.total == 0


def test_push_refuses_lossy_kind_changes() -> None:
    with pytest.raises(TypeError, match="dtype float64.*int16 buffer"):
        RingBuffer(10, 1, "int16").push(np.full((2, 1), 1.7), np.zeros(2))
    with pytest.raises(TypeError, match="dtype <U1"):
        RingBuffer(10, 1).push(np.array([["a"], ["b"]]), np.zeros(2))
    buf = RingBuffer(10, 1, "float32")  # numbers of another width or kind that fits are fine
    buf.push(np.arange(3, dtype=np.int64)[:, None], np.zeros(3))
    buf.push(np.array([[1.5]], dtype=object), np.zeros(1))
    np.testing.assert_array_equal(buf.get(0, 4)[0][:, 0], [0.0, 1.0, 2.0, 1.5])


def test_string_markers_in_object_buffer() -> None:
    buf = RingBuffer(3, 1, object)
    buf.push([["stim/12"], ["stim/7"]], [1.0, 2.0])  # lists, as pylsl returns them
    buf.push(np.array([["end"], ["rest"]], dtype=object), np.array([3.0, 4.0]))
    data, times = buf.get(1, 4)
    assert data.dtype == object and data[:, 0].tolist() == ["stim/7", "end", "rest"]
    assert all(type(v) is str for v in data[:, 0])
    assert buf.latest(2)[0][:, 0].tolist() == ["end", "rest"]
    assert buf.index_at_time(2.5) == 2
    buf.clear()
    assert buf._data[:, 0].tolist() == [None, None, None]  # old strings released


# ---------------------------------------------------------------------- threads
def test_writer_and_reader_threads_lose_nothing() -> None:
    """One writer pushes random-size chunks; a reader follows with wait_for + get.

    The writer never gets more than ``capacity`` samples ahead of what the reader has
    consumed (the capacity suffices), so every sample must arrive exactly once, in order.
    """
    rng = np.random.default_rng(7)
    n_total, capacity = 20_000, 512
    bounds = np.unique(np.minimum(np.concatenate(([0], np.cumsum(rng.integers(0, 64, size=n_total)))), n_total))
    values = np.arange(n_total, dtype=np.float64)
    buf = RingBuffer(capacity, 2, np.float64)
    received: list[np.ndarray] = []
    errors: list[BaseException] = []
    flow = threading.Condition()
    consumed = [0]

    def writer() -> None:
        for a, b in zip(bounds[:-1], bounds[1:]):
            with flow:
                if not flow.wait_for(lambda: b - consumed[0] <= capacity or buf.closed, timeout=30.0):
                    errors.append(AssertionError(f"writer starved at {a}"))
                    break
            buf.push(np.column_stack((values[a:b], -values[a:b])), values[a:b] * 1e-3)
        buf.close()

    def reader() -> None:
        local = np.random.default_rng(8)
        try:
            pos = 0
            while pos < n_total:
                want = min(pos + int(local.integers(1, 100)), n_total)
                if not buf.wait_for(want):  # no timeout: only push (or close) can wake it
                    raise AssertionError(f"wait_for({want}) failed at total={buf.total}, closed={buf.closed}")
                data, times = buf.get(pos, buf.total)
                np.testing.assert_array_equal(times, data[:, 0] * 1e-3)
                received.append(data)
                pos += len(data)
                with flow:
                    consumed[0] = pos
                    flow.notify_all()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            buf.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (writer, reader)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30.0)
    assert not any(th.is_alive() for th in threads), "threads did not finish"
    assert not errors, errors
    got = np.concatenate(received)
    np.testing.assert_array_equal(got[:, 0], values)  # every sample, once, in order
    np.testing.assert_array_equal(got[:, 1], -values)


def test_wait_for_times_out_when_nothing_arrives() -> None:
    buf = RingBuffer(10, 1)
    buf.push(np.zeros((2, 1)), np.zeros(2))
    assert buf.wait_for(2, timeout=0.0) is True  # already there
    assert buf.wait_for(3, timeout=0.05) is False
    assert buf.total == 2


def _until_blocked(buf: RingBuffer, n_waiters: int = 1) -> None:
    """Return once ``n_waiters`` threads sleep in ``buf.wait_for`` (CPython's Condition._waiters)."""
    for _ in range(5000):
        if len(buf._cond._waiters) >= n_waiters:  # type: ignore[attr-defined]
            return
        time.sleep(0.001)
    raise AssertionError("the waiter thread never blocked in wait_for")


def test_push_wakes_a_waiter() -> None:
    buf = RingBuffer(10, 1)
    result: list[bool] = []
    th = threading.Thread(target=lambda: result.append(buf.wait_for(5)), daemon=True)
    th.start()
    _until_blocked(buf)
    buf.push(np.zeros((3, 1)), np.zeros(3))
    buf.push(np.zeros((2, 1)), np.zeros(2))
    th.join(timeout=30.0)
    assert not th.is_alive() and result == [True]


def test_close_wakes_a_waiter_that_returns_false() -> None:
    buf = RingBuffer(10, 1)
    result: list[bool] = []
    th = threading.Thread(target=lambda: result.append(buf.wait_for(1, timeout=None)), daemon=True)
    th.start()
    _until_blocked(buf)
    buf.close()
    th.join(timeout=30.0)
    assert not th.is_alive() and result == [False]
    assert buf.closed
    buf.push(np.zeros((1, 1)), np.zeros(1))  # still usable; a reached index is True even when closed
    assert buf.wait_for(1) is True and buf.wait_for(2) is False
    with pytest.raises(TypeError, match="index=None"):
        buf.wait_for(None)  # type: ignore[arg-type]


def test_receiver_seconds_follow_the_type_value_rule() -> None:
    """StreamReceiver's seconds come from streams._checks: a wrong type is a TypeError, a wrong value a ValueError."""
    from streams.acquisition import StreamReceiver

    with pytest.raises(ValueError, match="buffer_seconds=0"):
        StreamReceiver("name=X", buffer_seconds=0)
    with pytest.raises(TypeError, match="lost_timeout='2'"):
        StreamReceiver("name=X", lost_timeout="2")


def test_read_from_counts_what_was_overwritten_and_never_races_the_writer() -> None:
    """A reader slower than the writer: every read is one consistent run of samples, losses are counted."""
    buf = RingBuffer(capacity=64, n_channels=1, dtype="float64")
    n_total, chunk = 200_000, 7
    done = threading.Event()

    def writer() -> None:
        for i in range(0, n_total, chunk):
            idx = np.arange(i, min(i + chunk, n_total), dtype=np.float64)
            buf.push(idx[:, None], idx)
        done.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    cursor, read, lost, n_reads = 0, 0, 0, 0
    while not (done.is_set() and cursor == buf.total):
        first, data, times = buf.read_from(cursor)
        n_reads += 1
        assert first >= cursor
        assert np.array_equal(data[:, 0], np.arange(first, first + len(data)))  # one consistent run
        assert np.array_equal(times, data[:, 0])
        if len(data):
            lost += first - cursor
            read += len(data)
            cursor = first + len(data)
    thread.join(5)
    assert read + lost == n_total and cursor == n_total and n_reads > 1
    first, data, _ = buf.read_from(n_total)
    assert first == n_total and data.shape == (0, 1)
    with pytest.raises(ValueError, match="start"):
        buf.read_from(-1)
