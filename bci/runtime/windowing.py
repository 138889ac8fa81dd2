"""Event-locked and sliding windows cut from a ring buffer.

Timing rule (documented in docs/runtime.md, tested to the sample):
both streams' timestamps are corrected LSL times on the receiving clock. A marker at
time ``m`` is located at the sample ``k`` *nearest* to it in time (of the last sample
before ``m`` and the first at or after it; a tie goes to the later); the window starts
``round(offset * sfreq)`` samples
later and holds ``n_times`` samples. Counting the offset in samples (not seconds) keeps
the window identical when a recording is replayed faster than real time. A window is
emitted as soon as its last sample is in the buffer — never earlier, never twice.

A marker whose window can no longer be filled is reported as a :class:`DroppedMarker`
with a reason (``overwritten``: the data left the ring buffer before the marker came;
``gap``: the window spans an interruption, or the marker falls into one; ``duplicate``:
the same marker value and time came twice; ``stale``: the marker is older than the
stream's first sample; ``clock_jump``: the marker comes after the data stream's clock
jumped, :meth:`EventWindower.clock_break`). Nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from streams._checks import check_float, check_int
from streams.errors import BufferOverflowError
from streams.ringbuffer import RingBuffer


@dataclass(frozen=True)
class WindowSpec:
    """Shape and placement of event-locked windows.

    Parameters
    ----------
    n_times : int
        Samples per window (440 at 1 kHz by default, EEG-ImageNet's ``[20:460]``).
    offset : float
        Seconds from the marker to the window's first sample (default 0.020).
    """

    n_times: int = 440
    offset: float = 0.020

    def __post_init__(self) -> None:
        check_int("n_times", self.n_times, low=1)  # samples
        check_float("offset", self.offset)  # seconds, finite


@dataclass
class Window:
    """One cut window and where it came from."""

    data: np.ndarray  # (n_channels, n_times) float32
    start_index: int
    marker: str | None
    marker_time: float | None
    start_time: float
    end_time: float
    marker_arrival: float | None = None  # local_clock() when the marker was seen
    window_index: int = 0


@dataclass(frozen=True)
class DroppedMarker:
    """A marker that produced no window, and why."""

    marker: str
    marker_time: float
    reason: str
    detail: str = ""


@dataclass
class _Pending:
    marker: str
    time: float
    arrival: float | None
    start_index: int | None = None
    located_time: float | None = None  # time of the sample the marker was located at


@dataclass(frozen=True)
class _ClockBreak:
    index: int  # absolute index of the first sample on the other clock
    before_time: float  # time of the last sample on the markers' clock
    jump: float
    reason: str


@dataclass
class WindowerStats:
    """Counts kept by a windower."""

    n_markers: int = 0
    n_filtered: int = 0
    n_windows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class EventWindower:
    """Cut a window for every marker once its data has arrived.

    Parameters
    ----------
    spec : WindowSpec
    sfreq : float
        Rate of the buffer the windows are cut from.
    marker_filter : str, optional
        Regular expression; only markers it matches (``re.search``) open windows.
    gap_tolerance : float
        Seconds by which a window's time span may exceed ``(n_times - 1) / sfreq``
        before it is considered to span a gap.
    max_pending : int
        Markers waiting for data beyond this are dropped with reason ``backlog``.
    """

    def __init__(
        self,
        spec: WindowSpec,
        sfreq: float,
        *,
        marker_filter: str | None = None,
        gap_tolerance: float = 0.005,
        max_pending: int = 10_000,
    ) -> None:
        if not (np.isfinite(sfreq) and sfreq > 0):
            raise ValueError(f"sfreq={sfreq!r}: event windows need a regular stream with a positive rate")
        self.spec = spec
        self.sfreq = float(sfreq)
        try:
            self._filter = re.compile(marker_filter) if marker_filter else None
        except re.error as exc:
            raise ValueError(f"marker_filter={marker_filter!r} is not a valid regular expression: {exc}") from None
        self.gap_tolerance = float(gap_tolerance)
        self._offset_samples = int(round(spec.offset * self.sfreq))
        self.max_pending = int(max_pending)
        self._pending: deque[_Pending] = deque()
        self._seen: deque[tuple[str, float]] = deque(maxlen=256)
        self._seen_set: set[tuple[str, float]] = set()
        self._gaps: deque[tuple[float, float, str]] = deque(maxlen=64)
        self._break: _ClockBreak | None = None
        self.stats = WindowerStats()

    def note_gap(self, start_time: float, end_time: float, reason: str) -> None:
        """Remember a gap (last sample before, first after, why) so a marker dropped for it names it."""
        self._gaps.append((float(start_time), float(end_time), str(reason)))

    def clock_break(self, index: int, before_time: float, jump: float, reason: str) -> None:
        """The data from absolute index ``index`` on is on another clock (it jumped ``jump`` s).

        Markers up to ``before_time`` (the last sample before) are still cut from the data before
        the break; a window reaching across it is dropped (``gap``); a later marker is dropped
        with reason ``clock_jump`` — its time cannot be placed on samples stamped by another clock
        (the jump is known only to the arrival jitter, not to the sample). The first break counts.
        """
        if self._break is None:
            self._break = _ClockBreak(int(index), float(before_time), float(jump), str(reason))

    @property
    def n_pending(self) -> int:
        """Markers waiting for their data."""
        return len(self._pending)

    def add_marker(self, value: str, time: float, arrival: float | None = None) -> DroppedMarker | None:
        """Queue a marker; returns a :class:`DroppedMarker` for duplicates/backlog, else None."""
        value = str(value)
        self.stats.n_markers += 1
        if self._filter is not None and not self._filter.search(value):
            self.stats.n_filtered += 1
            return None
        key = (value, round(float(time), 6))
        if key in self._seen_set:
            return self._drop(value, time, "duplicate", "same marker value and timestamp seen before")
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(key)
        self._seen_set.add(key)
        if len(self._pending) >= self.max_pending:
            return self._drop(value, time, "backlog", f"more than {self.max_pending} markers wait for data")
        self._pending.append(_Pending(value, float(time), arrival))
        return None

    def poll(self, buffer: RingBuffer) -> tuple[list[Window], list[DroppedMarker]]:
        """Cut every window whose data is complete; report markers that cannot be served."""
        windows: list[Window] = []
        dropped: list[DroppedMarker] = []
        still: deque[_Pending] = deque()
        while self._pending:
            p = self._pending.popleft()
            outcome = self._try_cut(p, buffer)
            if outcome is None:
                still.append(p)
            elif isinstance(outcome, Window):
                windows.append(outcome)
            else:
                dropped.append(outcome)
        self._pending = still
        windows.sort(key=lambda w: w.start_index)
        return windows, dropped

    def flush(self) -> list[DroppedMarker]:
        """At the end of a stream: report every marker still waiting (reason ``end_of_data``)."""
        out = [self._drop(p.marker, p.time, "end_of_data", "the stream ended before the window was complete")
               for p in self._pending]
        self._pending.clear()
        return out

    # ------------------------------------------------------------------ internals
    def _try_cut(self, p: _Pending, buffer: RingBuffer) -> Window | DroppedMarker | None:
        n = self.spec.n_times
        brk = self._break
        if brk is not None and p.start_index is None and p.time > brk.before_time + 0.5 / self.sfreq + self.gap_tolerance:
            return self._drop(p.marker, p.time, "clock_jump",
                              f"the data stream's clock jumped {brk.jump:+g} s after {brk.before_time:.3f} s "
                              f"({brk.reason}); a marker after it cannot be placed on its samples")
        if p.start_index is None:
            located = self._locate(p, buffer)
            if located is None or isinstance(located, DroppedMarker):
                return located
            p.start_index = located + self._offset_samples
            if p.start_index < 0:  # a negative offset (e.g. -0.2 s) reaching before the stream's first sample
                return self._drop(p.marker, p.time, "stale",
                                  f"the window starts {-self.spec.offset:g} s before the marker, before the "
                                  "stream's first sample")
        if brk is not None and p.start_index < brk.index < p.start_index + n:
            return self._drop(p.marker, p.time, "gap", f"the window spans the clock jump ({brk.reason})")
        if buffer.total < p.start_index + n:
            return None
        try:
            data, times = buffer.get(p.start_index, p.start_index + n)
        except BufferOverflowError as exc:
            return self._drop(p.marker, p.time, "overwritten", str(exc))
        span = times[-1] - times[0]
        if span > (n - 1) / self.sfreq + self.gap_tolerance:
            return self._drop(p.marker, p.time, "gap", f"window spans {span:.3f} s instead of {(n - 1) / self.sfreq:.3f} s"
                              + self._gap_detail(float(times[0]), float(times[-1])))
        lead = times[0] - p.located_time if p.located_time is not None else 0.0
        if self._offset_samples > 0 and lead > self._offset_samples / self.sfreq + self.gap_tolerance:
            # the window itself is whole, but a gap lies between the marker and its first sample
            return self._drop(p.marker, p.time, "gap", f"a gap lies between the marker and its window: the window "
                              f"starts {lead:.3f} s after it instead of {self._offset_samples / self.sfreq:.3f} s"
                              + self._gap_detail(p.time, float(times[0])))
        self.stats.n_windows += 1
        return Window(
            data=np.ascontiguousarray(data.T, dtype=np.float32),
            start_index=p.start_index,
            marker=p.marker,
            marker_time=p.time,
            start_time=float(times[0]),
            end_time=float(times[-1]),
            marker_arrival=p.arrival,
            window_index=self.stats.n_windows - 1,
        )

    def _locate(self, p: _Pending, buffer: RingBuffer) -> int | DroppedMarker | None:
        """Index of the sample nearest the marker; None until a sample at or after it arrived.

        The nearer of the last sample before the marker and the first at or after it is
        chosen by time, so the rule holds at any playback speed.
        """
        try:
            idx = self._index_at_time(buffer, p.time)
            if idx >= buffer.total:
                return None
            first = max(idx - 1, buffer.oldest_index)
            _, t = buffer.get(first, idx + 1)
        except BufferOverflowError as exc:
            return self._drop(p.marker, p.time, "overwritten", str(exc))
        if first < idx and p.time - t[0] < t[-1] - p.time:
            idx, t_near = first, float(t[0])
        else:
            t_near = float(t[-1])
        distance = t_near - p.time
        # between two samples a gap apart, the marker's own sample is missing unless it is within half a sample
        # of one of them: no slack then, or a marker in the gap would be snapped onto the data at its edge
        in_gap = len(t) == 2 and t[-1] - t[0] > 1.0 / self.sfreq + self.gap_tolerance and t[0] < p.time < t[-1]
        slack = 0.0 if in_gap else self.gap_tolerance
        if abs(distance) > 0.5 / self.sfreq + slack:
            if idx == 0 and distance > 0:
                return self._drop(p.marker, p.time, "stale", "the marker is older than the stream's first sample")
            return self._drop(p.marker, p.time, "gap",
                              f"no data at the marker (nearest sample {distance:+.3f} s away)"
                              + self._gap_detail(p.time, p.time))
        p.located_time = t_near
        return idx

    def _gap_detail(self, lo: float, hi: float) -> str:
        """``"; gap 6.999-8.000 s: <reason>"`` for a noted gap overlapping ``[lo, hi]`` ('' if none)."""
        for start, end, reason in self._gaps:
            if start <= hi and end >= lo:
                return f"; gap {start:.3f}-{end:.3f} s: {reason}"
        return ""

    def _index_at_time(self, buffer: RingBuffer, t: float) -> int:
        """``buffer.index_at_time(t)``; after a clock break, searched among the samples before it only
        (those after it are on another clock, and their times may even run backwards)."""
        brk = self._break
        if brk is None or brk.index >= buffer.total:
            return buffer.index_at_time(t, side="left")
        oldest = buffer.oldest_index
        if brk.index <= oldest:
            raise BufferOverflowError(f"the samples before the clock jump (index {brk.index}) were overwritten")
        _, times = buffer.get(oldest, brk.index)
        return min(oldest + int(np.searchsorted(times, t, side="left")), brk.index - 1)

    def _drop(self, marker: str, time: float, reason: str, detail: str) -> DroppedMarker:
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
        return DroppedMarker(marker, float(time), reason, detail)


class SlidingWindower:
    """Windows of ``n_times`` samples every ``hop`` samples, for marker-less decoding.

    Parameters
    ----------
    n_times : int
        Window length in samples.
    hop : int
        Samples between window starts.
    """

    def __init__(self, n_times: int, hop: int) -> None:
        if n_times < 1 or hop < 1:
            raise ValueError(f"n_times={n_times!r} and hop={hop!r} must both be >= 1 sample")
        self.n_times = int(n_times)
        self.hop = int(hop)
        self._next_start: int | None = None
        self.n_windows = 0
        self.n_skipped = 0
        self._restarts: deque[int] = deque()

    def restart_at(self, index: int) -> None:
        """A gap before buffer ``index`` (the first sample after it): windows end before it or start at it."""
        self._restarts.append(int(index))

    def poll(self, buffer: RingBuffer) -> list[Window]:
        """Every window complete since the last call (skipped ones, if overwritten, are counted)."""
        if self._next_start is None:
            self._next_start = buffer.oldest_index
        out = []
        while buffer.total >= self._next_start + self.n_times:
            if self._restarts and self._next_start + self.n_times > self._restarts[0]:
                self._next_start = max(self._next_start, self._restarts.popleft())  # no window across a gap
                continue
            if self._next_start < buffer.oldest_index:
                behind = buffer.oldest_index - self._next_start
                k = -(-behind // self.hop)
                self.n_skipped += k
                self._next_start += k * self.hop
                continue
            data, times = buffer.get(self._next_start, self._next_start + self.n_times)
            out.append(Window(np.ascontiguousarray(data.T, dtype=np.float32), self._next_start, None, None,
                              float(times[0]), float(times[-1]), window_index=self.n_windows))
            self.n_windows += 1
            self._next_start += self.hop
        return out
