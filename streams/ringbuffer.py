"""Fixed-capacity, thread-safe ring buffer of samples and timestamps for one stream.

Samples are addressed by **absolute index**: the n-th sample ever pushed (since
construction or the last :meth:`RingBuffer.clear`) has index ``n - 1``, whatever has
been overwritten since. ``total`` is the index the next sample will get; the buffer
holds the indices ``[oldest_index, total)``. A consumer that remembers an absolute
index can always tell whether its data is still there (``index >= oldest_index``)
or has already been overwritten (:class:`~streams.errors.BufferOverflowError`).

One writer (the acquisition thread) and any number of readers share the buffer.
Every method takes one lock for a short, bounded time (at most two vectorised slice
copies, or two binary searches); :meth:`RingBuffer.wait_for` blocks on a
``threading.Condition`` that :meth:`RingBuffer.push` notifies, so readers wake as
soon as data arrives, without polling. See ``docs/ringbuffer.md``.
"""

from __future__ import annotations

import math
import operator
import threading

import numpy as np

from streams._checks import check_int
from streams.errors import BufferOverflowError

__all__ = ["RingBuffer"]

_SIDES = ("left", "right")


def _as_index(name: str, value: object) -> int:
    """``value`` as an int (numpy integers accepted), or a TypeError naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be an integer sample index, not a bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name}={value!r} must be an integer sample index") from None


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the storage itself stays writable for the writer)."""
    v = a.view()
    v.flags.writeable = False
    return v


class RingBuffer:
    """Ring buffer of ``(n, n_channels)`` samples with ``(n,)`` float64 timestamps.

    Parameters
    ----------
    capacity : int
        Number of samples held; pushing more overwrites the oldest ones.
    n_channels : int
        Values per sample.
    dtype : str or numpy.dtype, default ``"float32"``
        Sample dtype; ``object`` for string streams (markers).

    Raises
    ------
    ValueError
        ``capacity`` or ``n_channels`` is not a positive integer.
    TypeError
        ``dtype`` is not a numpy dtype.

    Notes
    -----
    Timestamps must be non-decreasing across pushes (LSL inlets opened with
    ``proc_monotonize`` guarantee it); :meth:`index_at_time` binary-searches them.
    This is a documented precondition, not checked on every push, so that a single
    jittered timestamp cannot stop the acquisition thread.

    Examples
    --------
    >>> buf = RingBuffer(4, 2)
    >>> buf.push(np.ones((6, 2), np.float32), np.arange(6.0))
    >>> buf.total, buf.oldest_index, len(buf)
    (6, 2, 4)
    >>> buf.index_at_time(3.5)
    4
    """

    def __init__(self, capacity: int, n_channels: int, dtype: str | np.dtype = "float32") -> None:
        self._capacity = check_int("capacity", capacity, low=1)
        self._n_channels = check_int("n_channels", n_channels, low=1)
        try:
            self._dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(
                f"dtype={dtype!r} is not a numpy dtype ({exc}); use e.g. 'float32', or object for strings"
            ) from None
        self._data = np.empty((self._capacity, self._n_channels), dtype=self._dtype)
        self._times = np.zeros(self._capacity, dtype=np.float64)
        self._total = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())

    def __repr__(self) -> str:
        return (
            f"RingBuffer(capacity={self._capacity}, n_channels={self._n_channels}, dtype={self._dtype}, "
            f"total={self._total}, held={len(self)}{', closed' if self._closed else ''})"
        )

    # ------------------------------------------------------------------ properties
    @property
    def capacity(self) -> int:
        """Maximum number of samples held."""
        return self._capacity

    @property
    def n_channels(self) -> int:
        """Values per sample."""
        return self._n_channels

    @property
    def dtype(self) -> np.dtype:
        """Sample dtype."""
        return self._dtype

    @property
    def total(self) -> int:
        """Samples pushed so far: the absolute index the next sample will get."""
        return self._total

    @property
    def oldest_index(self) -> int:
        """Absolute index of the oldest sample still held (``total - len(self)``)."""
        return max(0, self._total - self._capacity)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __len__(self) -> int:
        """Number of samples currently held (at most ``capacity``)."""
        return min(self._total, self._capacity)

    # ------------------------------------------------------------------ writing
    def push(self, data: np.ndarray, times: np.ndarray) -> None:
        """Append samples and their timestamps; wakes every :meth:`wait_for` caller.

        Parameters
        ----------
        data : array_like, shape (n, n_channels)
            Samples; ``n`` may be 0, or larger than ``capacity`` (then only the newest
            ``capacity`` are stored, but ``total`` still advances by ``n``).
        times : array_like, shape (n,)
            Timestamps in seconds (converted to float64), non-decreasing.

        Raises
        ------
        ValueError
            The shapes do not match ``(n, n_channels)`` and ``(n,)``.
        TypeError
            ``data`` cannot be stored in this buffer's dtype without losing its kind
            (e.g. floats into an integer buffer, strings into a float buffer).
        """
        data = self._check_data(data)
        times = np.asarray(times, dtype=np.float64)
        if times.shape != (data.shape[0],):
            raise ValueError(
                f"times has shape {times.shape} but data has shape {data.shape}; "
                f"pass one timestamp per sample, shape ({data.shape[0]},)"
            )
        n = data.shape[0]
        if n == 0:
            return
        skipped = max(0, n - self._capacity)  # only the newest `capacity` can be kept
        with self._cond:
            self._store((self._total + skipped) % self._capacity, data[skipped:], times[skipped:])
            self._total += n
            self._cond.notify_all()

    def _check_data(self, data: np.ndarray) -> np.ndarray:
        """``data`` as a 2-D array this buffer can store, or a clear error."""
        data = np.asarray(data, dtype=self._dtype if self._dtype.kind == "O" else None)
        if data.ndim != 2 or data.shape[1] != self._n_channels:
            raise ValueError(
                f"data has shape {data.shape}; expected (n_samples, {self._n_channels}) "
                f"for this {self._n_channels}-channel buffer"
            )
        if self._dtype.kind == "O" or np.can_cast(data.dtype, self._dtype, casting="same_kind"):
            return data
        if data.dtype.kind == "O":  # e.g. numbers pulled as Python objects
            try:
                return data.astype(self._dtype)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"data of dtype object cannot be stored as {self._dtype}: {exc}") from None
        raise TypeError(
            f"data has dtype {data.dtype}, which does not fit this {self._dtype} buffer without "
            f"changing its kind; convert it first (data.astype({str(self._dtype)!r}))"
        )

    def _store(self, pos: int, data: np.ndarray, times: np.ndarray) -> None:
        """Copy ``data``/``times`` (at most ``capacity`` rows) into storage from ``pos``, wrapping."""
        m = data.shape[0]
        first = min(m, self._capacity - pos)
        self._data[pos : pos + first] = data[:first]
        self._times[pos : pos + first] = times[:first]
        if first < m:
            self._data[: m - first] = data[first:]
            self._times[: m - first] = times[first:]

    def clear(self) -> None:
        """Forget every sample; absolute indices restart at 0 (``total == 0``).

        Waiters keep waiting for their index, now counted from the restart.
        """
        with self._cond:
            self._total = 0
            if self._dtype.kind == "O":  # drop references to the old Python objects
                self._data.fill(None)

    def close(self) -> None:
        """Mark the buffer closed and wake every waiter.

        :meth:`wait_for` then returns at once: True if its index was reached, False if
        not. Pushing and reading still work (a closed buffer keeps its data).
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ reading
    def latest(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``min(n, len(self))`` samples and their times, oldest first.

        Parameters
        ----------
        n : int
            How many samples, ``>= 0``.

        Returns
        -------
        data : numpy.ndarray, shape (k, n_channels)
        times : numpy.ndarray, shape (k,)

        Notes
        -----
        When the samples are contiguous in storage (they do not wrap around its end),
        the arrays are **read-only views** of the storage: no copy, but the writer
        overwrites them once ``capacity`` newer samples have arrived, so copy them if
        you keep them or read them slowly. When they wrap, the arrays are fresh copies
        (still treat them as read-only). For data that must stay valid, use :meth:`get`.
        """
        n = _as_index("n", n)
        if n < 0:
            raise ValueError(f"n={n} must be >= 0")
        with self._cond:
            n = min(n, len(self))
            stop = (self._total - 1) % self._capacity + 1 if self._total else 0
            begin = stop - n
            if begin >= 0:
                return _readonly(self._data[begin:stop]), _readonly(self._times[begin:stop])
            return (
                np.concatenate((self._data[begin:], self._data[:stop])),
                np.concatenate((self._times[begin:], self._times[:stop])),
            )

    def read_from(self, start: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Everything from ``start`` (or the oldest sample still held, if later) to the newest, at once.

        The one way for a consumer that may fall behind to read without a race: the oldest
        index and the samples are taken under the same lock, so what the writer overwrites
        meanwhile is counted, never raised.

        Parameters
        ----------
        start : int
            Absolute index of the first sample wanted (``>= 0``).

        Returns
        -------
        first : int
            Absolute index of ``data[0]`` (``first - start`` samples were overwritten unread;
            empty arrays when nothing new has arrived).
        data : numpy.ndarray, shape (total - first, n_channels)
        times : numpy.ndarray, shape (total - first,)
            New arrays owned by the caller.
        """
        start = _as_index("start", start)
        if start < 0:
            raise ValueError(f"start={start} must be >= 0")
        with self._cond:
            first = max(start, self.oldest_index)
            if first >= self._total:
                return first, np.empty((0, self._n_channels), self._data.dtype), np.empty(0)
            data, times = self._copy(first, self._total)
            return first, data, times

    def get(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the samples with absolute indices ``[start, stop)`` and their times.

        Parameters
        ----------
        start, stop : int
            Absolute indices, ``oldest_index <= start <= stop <= total``.

        Returns
        -------
        data : numpy.ndarray, shape (stop - start, n_channels)
        times : numpy.ndarray, shape (stop - start,)
            New arrays owned by the caller (safe to keep while the writer goes on).

        Raises
        ------
        BufferOverflowError
            ``start < oldest_index``: some of those samples were already overwritten.
        ValueError
            ``start < 0``, ``start > stop`` or ``stop > total`` (not arrived yet).
        TypeError
            ``start`` or ``stop`` is not an integer.
        """
        start, stop = _as_index("start", start), _as_index("stop", stop)
        if start < 0 or start > stop:
            raise ValueError(f"start={start}, stop={stop}: need 0 <= start <= stop")
        with self._cond:
            if stop > self._total:
                raise ValueError(
                    f"stop={stop} is beyond the newest sample (total={self._total}); "
                    "wait_for(stop) before reading"
                )
            oldest = self.oldest_index
            if start < oldest:
                raise BufferOverflowError(
                    f"samples [{start}, {oldest}) ({oldest - start} samples) were overwritten before they "
                    f"were read; the ring buffer holds only the newest {self._capacity} samples "
                    f"(now [{oldest}, {self._total})) — read more often or use a larger capacity"
                )
            return self._copy(start, stop)

    def _copy(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of held absolute indices ``[start, stop)`` (caller holds the lock)."""
        n = stop - start
        a = start % self._capacity
        first = min(n, self._capacity - a)
        if first == n:
            return self._data[a : a + n].copy(), self._times[a : a + n].copy()
        return (
            np.concatenate((self._data[a:], self._data[: n - first])),
            np.concatenate((self._times[a:], self._times[: n - first])),
        )

    def index_at_time(self, t: float, side: str = "left") -> int:
        """Absolute index of the first held sample with time ``>= t`` (or ``> t``).

        Parameters
        ----------
        t : float
            Time in the same clock as the pushed timestamps.
        side : {"left", "right"}
            ``"left"``: first sample with time ``>= t``; ``"right"``: time ``> t``.

        Returns
        -------
        int
            An absolute index in ``[oldest_index, total]``; ``total`` when every held
            sample is earlier (the sample has not arrived yet), and also when the
            buffer holds nothing.

        Raises
        ------
        BufferOverflowError
            ``t`` is earlier than the oldest held sample's time and samples have been
            overwritten (the answer may be lost). When nothing was ever overwritten
            (``oldest_index == 0``) such a ``t`` gives 0.
        ValueError
            ``side`` is not ``"left"``/``"right"`` or ``t`` is NaN.

        Notes
        -----
        Two binary searches over the two contiguous segments of the storage:
        O(log capacity), no copy.
        """
        if side not in _SIDES:
            raise ValueError(f"side={side!r} must be 'left' or 'right'")
        t = float(t)
        if math.isnan(t):
            raise ValueError("t=nan is not a time; pass a finite LSL timestamp")
        with self._cond:
            held = len(self)
            if held == 0:
                return self._total
            oldest = self.oldest_index
            a = oldest % self._capacity
            first = min(held, self._capacity - a)
            seg1 = self._times[a : a + first]
            if oldest > 0 and t < seg1[0]:
                raise BufferOverflowError(
                    f"time {t!r} is older than the oldest sample held (index {oldest}, time {seg1[0]!r}); "
                    f"{oldest} samples were already overwritten — read more often or use a larger capacity "
                    f"(now {self._capacity} samples)"
                )
            k = int(np.searchsorted(seg1, t, side=side))
            if k < first or first == held:
                return oldest + k
            seg2 = self._times[: held - first]
            return oldest + first + int(np.searchsorted(seg2, t, side=side))

    def wait_for(self, index: int, timeout: float | None = None) -> bool:
        """Block until ``total >= index`` (sample ``index - 1`` has arrived).

        Parameters
        ----------
        index : int
            Absolute index to wait for; ``index <= total`` returns True at once.
        timeout : float or None
            Seconds to wait at most; None waits until reached or :meth:`close`.

        Returns
        -------
        bool
            Whether ``total >= index`` on return: False after a timeout, or when the
            buffer was closed before the index was reached.

        Notes
        -----
        Event-driven: the caller sleeps on a condition variable that :meth:`push`
        and :meth:`close` notify; there is no polling interval.
        """
        index = _as_index("index", index)
        with self._cond:
            self._cond.wait_for(lambda: self._total >= index or self._closed, timeout)
            return self._total >= index
