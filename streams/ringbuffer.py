"""Fixed-capacity, thread-safe ring buffer of samples and timestamps for one stream.

Samples are addressed by **absolute index**: the n-th sample ever pushed has index
``n - 1``, whatever has been overwritten since. ``total`` is the index the next
sample will get; the buffer holds indices ``[oldest_index, total)``.
"""

from __future__ import annotations

import threading

import numpy as np

from streams.errors import BufferOverflowError


class RingBuffer:
    """Ring buffer of ``(n, n_channels)`` samples with ``(n,)`` float64 timestamps.

    Parameters
    ----------
    capacity : int
        Samples held (the oldest are overwritten beyond this).
    n_channels : int
        Values per sample.
    dtype : str or numpy dtype
        Sample dtype (``object`` for string streams).
    """

    def __init__(self, capacity: int, n_channels: int, dtype: str | np.dtype = "float32") -> None:
        if not isinstance(capacity, (int, np.integer)) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity={capacity!r} must be a positive integer number of samples")
        if not isinstance(n_channels, (int, np.integer)) or isinstance(n_channels, bool) or n_channels < 1:
            raise ValueError(f"n_channels={n_channels!r} must be a positive integer")
        self._capacity = int(capacity)
        self._n_channels = int(n_channels)
        self._dtype = np.dtype(dtype)
        self._data = np.empty((self._capacity, self._n_channels), dtype=self._dtype)
        self._times = np.empty(self._capacity, dtype=np.float64)
        self._total = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())

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
        """Samples ever pushed (the absolute index of the next sample)."""
        return self._total

    @property
    def oldest_index(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self._total - self._capacity)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __len__(self) -> int:
        return min(self._total, self._capacity)

    # ------------------------------------------------------------------ writing
    def push(self, data: np.ndarray, times: np.ndarray) -> None:
        """Append ``data (n, n_channels)`` with ``times (n,)``; wakes waiters."""
        data = np.asarray(data)
        times = np.asarray(times, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self._n_channels:
            raise ValueError(f"data has shape {data.shape}; expected (n_samples, {self._n_channels})")
        if times.shape != (data.shape[0],):
            raise ValueError(f"times has shape {times.shape}; expected ({data.shape[0]},) to match data")
        n = data.shape[0]
        if n == 0:
            return
        if n > self._capacity:  # only the newest `capacity` samples can be kept
            skipped = n - self._capacity
            data, times = data[skipped:], times[skipped:]
        else:
            skipped = 0
        with self._cond:
            start = (self._total + skipped) % self._capacity
            m = data.shape[0]
            first = min(m, self._capacity - start)
            self._data[start : start + first] = data[:first]
            self._times[start : start + first] = times[:first]
            if first < m:
                self._data[: m - first] = data[first:]
                self._times[: m - first] = times[first:]
            self._total += n
            self._cond.notify_all()

    def clear(self) -> None:
        """Forget all samples (indices restart at 0)."""
        with self._cond:
            self._total = 0

    def close(self) -> None:
        """Wake every waiter; :meth:`wait_for` returns False from now on if not reached."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ reading
    def latest(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``min(n, len)`` samples in time order.

        Read-only views into the storage when they are contiguous (no copy), copies
        when they wrap around the end. A view is only valid until the writer
        overwrites that region: copy it if you keep it.
        """
        if n < 0:
            raise ValueError(f"n={n!r} must be >= 0")
        with self._cond:
            n = min(int(n), len(self))
            stop = self._total % self._capacity or (self._capacity if self._total else 0)
            begin = stop - n
            if begin >= 0:
                data, times = self._data[begin:stop], self._times[begin:stop]
                data = data.view()
                times = times.view()
                data.flags.writeable = False
                times.flags.writeable = False
                return data, times
            return (
                np.concatenate((self._data[begin:], self._data[:stop])),
                np.concatenate((self._times[begin:], self._times[:stop])),
            )

    def get(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the samples with absolute indices ``[start, stop)``.

        Raises
        ------
        BufferOverflowError
            ``start`` was already overwritten.
        ValueError
            ``stop > total`` or ``start > stop``.
        """
        with self._cond:
            if start > stop or start < 0:
                raise ValueError(f"start={start!r}, stop={stop!r}: need 0 <= start <= stop")
            if stop > self._total:
                raise ValueError(f"stop={stop!r} is beyond the newest sample (total={self._total})")
            oldest = self.oldest_index
            if start < oldest:
                raise BufferOverflowError(
                    f"samples {start}..{oldest - 1} ({oldest - start} samples) were overwritten before "
                    f"they were read; the ring buffer holds {self._capacity} samples — read more often "
                    "or use a larger capacity (buffer_seconds)"
                )
            return self._copy(start, stop)

    def _copy(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
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
        """Absolute index of the first held sample with time ``>= t`` (``side='left'``) or ``> t``.

        Returns ``total`` when every held sample is earlier. Raises
        :class:`BufferOverflowError` when ``t`` is older than the oldest held
        sample and samples have already been overwritten (the answer is lost).
        """
        if side not in ("left", "right"):
            raise ValueError(f"side={side!r} must be 'left' or 'right'")
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
                    f"time {t!r} is older than the oldest sample held ({seg1[0]!r}); "
                    f"{oldest} samples were already overwritten — use a larger capacity"
                )
            k = int(np.searchsorted(seg1, t, side=side))
            if k < first or first == held:
                return oldest + k
            seg2 = self._times[: held - first]
            return oldest + first + int(np.searchsorted(seg2, t, side=side))

    def wait_for(self, index: int, timeout: float | None = None) -> bool:
        """Block until ``total >= index`` or ``timeout`` seconds pass (or the buffer is closed)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._total >= index or self._closed, timeout) and (
                self._total >= index
            )
