"""Acquisition: an LSL inlet pulled by a thread into a ring buffer, with loss detection and reconnect.

One :class:`StreamReceiver` per stream. Its thread blocks in ``pull_chunk`` until at
least one sample is there (no polling loop), applies LSL clock correction and, for
regular streams, dejittering, and pushes every chunk into a :class:`RingBuffer`.

Loss handling:

* the outlet disappears (``LostError``) or a regular stream delivers nothing for
  ``lost_timeout`` seconds → the stream is treated as lost, logged, and re-resolved
  by its ``source_id`` (same name and type) until it comes back or the receiver stops;
* the stream that comes back must have the same channels, rate and format
  (:meth:`StreamDescription.check_same_source`); otherwise the receiver stops with a
  :class:`StreamMismatchError` in :attr:`StreamReceiver.error` and appends nothing more;
* every interruption is recorded as a :class:`Gap` (last sample time before, first
  sample time after), also when timestamps jump without a reconnect;
* a stream that comes back on another clock (its timestamps moved more, or less, than the
  time that passed on this computer's clock, by over ``clock_jump_tolerance``: the amplifier
  restarted with its clock off) is a gap whose reason starts ``clock jump +3600 s``
  (:func:`clock_jump_reason`; :attr:`Gap.clock_jump` reads it back). Its samples are kept as
  stamped; their times may then run backwards across the gap (``end_time < start_time``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pylsl

from streams._checks import check_float
from streams.clock import CLOCK_JUMP_TOLERANCE, clock_jump_reason, parse_clock_jump
from streams.description import StreamDescription
from streams.errors import StreamLostError, StreamMismatchError, StreamNotFoundError
from streams.lsl import StreamQuery, pull_string_chunk, resolve
from streams.ringbuffer import RingBuffer

logger = logging.getLogger(__name__)

_PULL_TIMEOUT = 0.1  # seconds a pull may block before the thread checks for stop
_PULL_BYTES = 16 * 1024**2  # largest pull buffer (a 100,000-channel stream pulls 41 samples at a time)

#: Largest ring buffer a receiver allocates; a stream whose rate x channels x buffer_seconds needs more is
#: refused at open (a hostile or mistyped stream description must not exhaust the machine's memory).
MAX_BUFFER_BYTES = 4 * 1024**3


def _capacity(rate: float, buffer_seconds: float) -> int:
    """Ring-buffer samples: ``buffer_seconds`` of a regular stream, ``IRREGULAR_RATE_BOUND x buffer_seconds`` (>= 1000) else."""
    return int(np.ceil(buffer_seconds * rate)) if rate > 0 else max(1000, int(buffer_seconds * IRREGULAR_RATE_BOUND))


def _check_buffer_size(desc: StreamDescription, buffer_seconds: float) -> None:
    """Refuse a ring buffer over :data:`MAX_BUFFER_BYTES`, naming the stream, its rate and channels."""
    itemsize = 8 if desc.is_string else desc.numpy_dtype.itemsize  # object arrays hold pointers
    n_bytes = _capacity(desc.nominal_rate, buffer_seconds) * (desc.n_channels * itemsize + 8)  # + float64 time
    if n_bytes > MAX_BUFFER_BYTES:
        raise ValueError(
            f"stream {desc.name!r}: {desc.nominal_rate:g} Hz x {desc.n_channels} channels x {buffer_seconds:g} s "
            f"needs a {n_bytes / 1024**3:.3g} GiB buffer, over the {MAX_BUFFER_BYTES / 1024**3:g} GiB limit; check "
            "the stream's nominal_rate and channel count, or lower buffer_seconds"
        )

#: Samples per second an irregular stream's ring buffer is sized for (markers: a flood of 1,000/s is held
#: for ``buffer_seconds``).
IRREGULAR_RATE_BOUND = 1000


@dataclass(frozen=True)
class Gap:
    """An interval with no data: ``start_time`` is the last sample before, ``end_time`` the first after.

    ``first_index`` is the receiver's absolute sample index of the first sample after the gap (None when
    not known, e.g. a gap read from a session); it places the gap even where the times run backwards.
    """

    start_time: float
    end_time: float
    reason: str
    first_index: int | None = field(default=None, compare=False)

    @property
    def duration(self) -> float:
        """Length of the interval in seconds."""
        return self.end_time - self.start_time

    @property
    def clock_jump(self) -> float | None:
        """Seconds the stream's clock jumped at this gap (None: an ordinary gap)."""
        return parse_clock_jump(self.reason)

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        out = asdict(self)
        del out["first_index"]
        return out


@dataclass
class AcquisitionStats:
    """Counters kept by the acquisition thread (read them via :meth:`StreamReceiver.snapshot`)."""

    n_samples: int = 0
    n_chunks: int = 0
    n_nonfinite: int = 0
    n_reconnects: int = 0
    first_time: float | None = None
    last_time: float | None = None
    gaps: list[Gap] = field(default_factory=list)

    def measured_rate(self) -> float | None:
        """Samples per second from the timestamps (None until two samples)."""
        if self.first_time is None or self.last_time is None or self.n_samples < 2:
            return None
        span = self.last_time - self.first_time - sum(g.duration for g in self.gaps)
        return (self.n_samples - 1) / span if span > 0 else None


class StreamReceiver:
    """Receive one LSL stream into a ring buffer on a background thread.

    Parameters
    ----------
    query : StreamQuery or str
        Which stream (``"NAME"``, ``"type=EEG"``, …).
    buffer_seconds : float
        Ring-buffer capacity in seconds of the nominal rate (irregular streams:
        ``buffer_seconds * 1000`` samples: 30 s of a 1,000 markers/s flood).
    resolve_timeout : float
        Seconds to wait for the stream at :meth:`open`.
    lost_timeout : float
        A regular stream that has delivered data and then stays silent this long is
        treated as lost and re-resolved (a stream that has not started is waited for).
    reconnect : bool
        Re-resolve a lost stream by its source_id (False: stop with an error).
    dejitter : bool
        Apply LSL's dejitter to regular streams (clock sync is always on).
    gap_tolerance : float
        Seconds beyond one sample period by which consecutive timestamps may
        differ before a jump is recorded as a gap.
    clock_jump_tolerance : float
        Seconds by which a reconnected stream's timestamps may disagree with the time that
        passed here before its gap is a clock jump (:data:`CLOCK_JUMP_TOLERANCE`).
    """

    def __init__(
        self,
        query: StreamQuery | str,
        *,
        buffer_seconds: float = 30.0,
        resolve_timeout: float = 5.0,
        lost_timeout: float = 2.0,
        reconnect: bool = True,
        dejitter: bool = True,
        gap_tolerance: float = 0.05,
        clock_jump_tolerance: float = CLOCK_JUMP_TOLERANCE,
    ) -> None:
        self.query = StreamQuery.parse(query) if isinstance(query, str) else query
        for name, seconds in (("buffer_seconds", buffer_seconds), ("resolve_timeout", resolve_timeout),
                              ("lost_timeout", lost_timeout)):
            check_float(name, seconds, positive=True, finite=False)  # inf: wait forever
        self.buffer_seconds = float(buffer_seconds)
        self.resolve_timeout = float(resolve_timeout)
        self.lost_timeout = float(lost_timeout)
        self.reconnect = bool(reconnect)
        self.dejitter = bool(dejitter)
        self.gap_tolerance = float(gap_tolerance)
        self.clock_jump_tolerance = check_float("clock_jump_tolerance", clock_jump_tolerance, positive=True)
        self._last_arrival: float | None = None  # time.monotonic() of the last chunk
        self.desc: StreamDescription | None = None
        self.buffer: RingBuffer | None = None
        self.error: BaseException | None = None
        self._inlet: pylsl.StreamInlet | None = None
        self._stats = AcquisitionStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._chunk_listeners: list[Callable[[np.ndarray, np.ndarray], None]] = []
        self._gap_listeners: list[Callable[[Gap], None]] = []
        self._reconnect_reason: str | None = None

    # ------------------------------------------------------------------ life cycle
    def open(self) -> StreamDescription:
        """Resolve the stream, open the inlet and size the ring buffer; returns its description."""
        info = resolve(self.query, timeout=self.resolve_timeout)
        # checked on the resolved info, before liblsl sizes the inlet's queue from the same rate and channels
        _check_buffer_size(StreamDescription.from_lsl_info(info), self.buffer_seconds)
        self._inlet, self.desc = self._open_inlet(info)
        rate = self.desc.nominal_rate
        capacity = _capacity(rate, self.buffer_seconds)
        self.buffer = RingBuffer(capacity, self.desc.n_channels, self.desc.numpy_dtype)
        logger.info("opened %s (%d ch, %g Hz)", self.desc.name, self.desc.n_channels, rate)
        return self.desc

    def start(self) -> StreamReceiver:
        """Open if needed and start the acquisition thread."""
        if self._inlet is None:
            self.open()
        if self._thread is not None:
            raise RuntimeError(f"receiver for {self.query} is already started")
        self._thread = threading.Thread(target=self._run, name=f"lsl-acq-{self.desc.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, close the inlet and wake anyone waiting on the buffer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close_inlet()
        if self.buffer is not None:
            self.buffer.close()

    def __enter__(self) -> StreamReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the acquisition thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ observers
    def add_chunk_listener(self, callback: Callable[[np.ndarray, np.ndarray], None]) -> None:
        """Call ``callback(data, times)`` on the acquisition thread after each chunk is buffered.

        Callbacks must be quick (hand work to another thread); an exception in one
        is logged and the callback removed.
        """
        self._chunk_listeners.append(callback)

    def add_gap_listener(self, callback: Callable[[Gap], None]) -> None:
        """Call ``callback(gap)`` on the acquisition thread when a gap is recorded.

        The gap is listed (and its listeners called) just before the first sample after it
        is pushed into the ring buffer.
        """
        self._gap_listeners.append(callback)

    def snapshot(self) -> AcquisitionStats:
        """A consistent copy of the counters."""
        with self._lock:
            s = self._stats
            return AcquisitionStats(
                s.n_samples, s.n_chunks, s.n_nonfinite, s.n_reconnects,
                s.first_time, s.last_time, list(s.gaps),
            )

    @property
    def gaps(self) -> list[Gap]:
        """Gaps recorded so far."""
        return self.snapshot().gaps

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        try:
            self._acquire_loop()
        except BaseException as exc:  # stored for the owner; the thread must not die silently
            self.error = exc
            logger.error("acquisition of %s stopped: %s", self.query, exc)
        finally:
            if self.buffer is not None:
                self.buffer.close()

    def _acquire_loop(self) -> None:
        assert self.desc is not None and self.buffer is not None  # set by open()
        # at most 1024 samples per pull, fewer for very wide streams (a pull buffer stays <= _PULL_BYTES)
        rows = max(1, min(1024, _PULL_BYTES // (self.desc.n_channels * self.desc.numpy_dtype.itemsize)))
        dest = None if self.desc.is_string else np.empty((rows, self.desc.n_channels), self.desc.numpy_dtype)
        last_data = time.monotonic()
        while not self._stop.is_set():
            try:
                data, stamps = self._pull(dest)
            except pylsl.util.LostError:
                self._handle_loss("stream lost (outlet gone)")
                last_data = time.monotonic()
                continue
            if len(stamps) == 0:
                # a regular stream that delivered data and then went silent is lost; one that
                # has not started yet (amplifier idle) is only waited for
                started = self._stats.n_samples > 0
                if started and self.desc.is_regular and time.monotonic() - last_data > self.lost_timeout:
                    self._handle_loss(f"no data for {self.lost_timeout:g} s")
                    last_data = time.monotonic()
                continue
            last_data = time.monotonic()
            self._accept(data, stamps)

    def _pull(self, dest: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        inlet = self._inlet
        if inlet is None:
            raise pylsl.util.LostError("inlet closed")
        if dest is None:
            data, stamps, n_escaped = pull_string_chunk(inlet, _PULL_TIMEOUT, max_samples=1024, min_samples=1)
            if n_escaped:
                logger.warning("%s: %d string value(s) were not valid UTF-8; kept with \\xNN escapes",
                               self.desc.name, n_escaped)
            return data, stamps
        # as_numpy: the timestamps come back as a float64 array (no list round trip)
        _, stamps = inlet.pull_chunk(timeout=_PULL_TIMEOUT, max_samples=len(dest), dest_obj=dest, min_samples=1,
                                     as_numpy=True)
        return dest[: len(stamps)], stamps

    def _accept(self, data: np.ndarray, stamps: np.ndarray) -> None:
        gap = self._check_jump(stamps[0])
        n_bad = 0
        if not self.desc.is_string and data.dtype.kind == "f" and not np.isfinite(data).all():
            n_bad = int(np.count_nonzero(~np.isfinite(data).all(axis=1)))
            if n_bad:
                logger.warning("%s: %d samples with NaN/inf (kept, counted)", self.desc.name, n_bad)
        if gap is not None:  # listed before its first sample is buffered: a reader never sees one without the other
            self._record_gap(gap)
        self._last_arrival = time.monotonic()
        self.buffer.push(data, stamps)
        with self._lock:
            s = self._stats
            s.n_samples += len(stamps)
            s.n_chunks += 1
            s.n_nonfinite += n_bad
            if s.first_time is None:
                s.first_time = float(stamps[0])
            s.last_time = float(stamps[-1])
        self._notify(self._chunk_listeners, data, stamps)

    def _check_jump(self, first_new: float) -> Gap | None:
        last = self._stats.last_time
        reason, self._reconnect_reason = self._reconnect_reason, None
        if last is None:
            return None
        index = self.buffer.total
        if reason is not None:  # first chunk after a reconnect: always a gap
            return Gap(last, float(first_new), self._clock_jump_prefix(last, first_new) + f"{reason}; reconnected",
                       index)
        if not self.desc.is_regular:
            return None
        if first_new - last > 1.0 / self.desc.nominal_rate + self.gap_tolerance:
            return Gap(last, float(first_new), "timestamps jump (samples missing)", index)
        return None

    def _clock_jump_prefix(self, last: float, first_new: float) -> str:
        """``"clock jump +3600 s (...); "`` when the stamps moved unlike this computer's clock, else ``""``."""
        if self._last_arrival is None:
            return ""
        elapsed = time.monotonic() - self._last_arrival
        jump = (first_new - last) - elapsed
        if abs(jump) <= self.clock_jump_tolerance:
            return ""
        return (f"{clock_jump_reason(jump)} (timestamps moved {first_new - last:+.3f} s while {elapsed:.3f} s passed "
                "here; samples after it are on another clock); ")

    def _record_gap(self, gap: Gap) -> None:
        with self._lock:
            self._stats.gaps.append(gap)
        logger.warning("%s: gap of %.3f s (%s)", self.desc.name, gap.duration, gap.reason)
        self._notify(self._gap_listeners, gap)

    def _notify(self, listeners: list, *args: object) -> None:
        for cb in list(listeners):
            try:
                cb(*args)
            except Exception:
                logger.exception("listener %r failed and was removed", cb)
                listeners.remove(cb)

    # ------------------------------------------------------------------ reconnect
    def _handle_loss(self, reason: str) -> None:
        logger.warning("%s: %s", self.desc.name, reason)
        self._close_inlet()
        if not self.reconnect:
            raise StreamLostError(f"stream {self.desc.name!r} was lost ({reason}) and reconnect is off")
        query = StreamQuery(name=self.desc.name, type=self.desc.type, source_id=self.desc.source_id or None)
        while not self._stop.is_set():
            try:
                info = resolve(query, timeout=1.0)
            except StreamNotFoundError:
                continue
            try:
                inlet, desc = self._open_inlet(info)
            except (pylsl.util.LostError, pylsl.util.TimeoutError):
                continue  # it went away again between resolve and open
            try:
                self.desc.check_same_source(desc)
            except StreamMismatchError:
                del inlet
                raise
            self._inlet = inlet
            with self._lock:
                self._stats.n_reconnects += 1
            self._reconnect_reason = reason
            logger.warning("%s: reconnected", self.desc.name)
            return

    def _open_inlet(self, info: pylsl.StreamInfo) -> tuple[pylsl.StreamInlet, StreamDescription]:
        regular = info.nominal_srate() > 0
        flags = pylsl.proc_clocksync | pylsl.proc_monotonize
        if regular and self.dejitter:
            flags |= pylsl.proc_dejitter
        inlet = pylsl.StreamInlet(info, max_buflen=360, recover=False, processing_flags=flags)
        full = inlet.info(timeout=self.resolve_timeout)
        inlet.open_stream(timeout=self.resolve_timeout)
        # the first clock-offset estimate otherwise happens lazily at the first pull and
        # delays that sample by ~0.1-0.2 s (seen on the first marker of a session)
        inlet.time_correction(timeout=self.resolve_timeout)
        return inlet, StreamDescription.from_lsl_info(full)

    def _close_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            try:
                inlet.close_stream()
            except Exception:  # the stream may already be gone
                pass
            del inlet
