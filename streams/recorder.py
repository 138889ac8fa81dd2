"""Record streams into one Zarr session: from inlets of its own, or from another consumer's.

* :class:`Recorder` (``bci record``) opens a :class:`~streams.acquisition.StreamReceiver`
  per stream and records everything they receive.
* :class:`SessionRecording` opens nothing: the process's one consumer of each stream
  (``bci live --record``: the decoder) hands it exactly the samples, gaps and results it
  consumed, and a writer thread appends them, so disk I/O never delays the consumer.

For :class:`Recorder`: each stream has a :class:`~streams.acquisition.StreamReceiver` (its own thread and
ring buffer). :meth:`Recorder.drain` moves what arrived since the last call from
each ring buffer into the :class:`~streams.session.SessionWriter`, which appends
to disk in ~1 s blocks. The writer is only touched from the thread that calls
:meth:`drain` (the CLI's main loop), so the Zarr store needs no lock.

If the drain falls so far behind that a ring buffer overwrote unread samples,
the loss is counted and written as a gap — never silent.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from streams._checks import check_bool, check_int, ensure_path
from streams.acquisition import Gap, StreamReceiver
from streams.errors import OutputExistsError, SessionWriteError, StreamsError
from streams.description import StreamDescription
from streams.lsl import StreamQuery
from streams.session import SessionWriter

logger = logging.getLogger(__name__)

#: How many bytes of samples a :class:`SessionRecording` holds in memory, queued for its writer
#: thread, before :meth:`SessionRecording.append` waits for the disk (64 MiB: about two minutes of
#: 128 channels at 1 kHz in float32). A disk that keeps up never reaches it; one that stalls makes the
#: consumer wait instead of growing memory without bound (a long stall then overflows the consumer's
#: ring buffer, which is a recorded gap).
MAX_BACKLOG_BYTES = 64 * 2**20


@dataclass
class StreamStatus:
    """What one recorded stream has done so far."""

    key: str
    name: str
    n_samples: int
    rate: float | None
    nominal_rate: float
    n_gaps: int
    n_dropped: int
    n_nonfinite: int
    n_reconnects: int
    error: str | None

    def line(self) -> str:
        """Short status text for the live status line."""
        rate = f"{self.rate:7.1f} Hz" if self.rate else "      - Hz" if self.nominal_rate else " irregular"
        text = f"{self.name}: {self.n_samples} samples {rate} gaps={self.n_gaps}"
        if self.n_dropped:
            text += f" dropped={self.n_dropped}"
        if self.n_nonfinite:
            text += f" nan/inf={self.n_nonfinite}"
        if self.error:
            text += " FAILED"
        return text


class _Track:
    """Book-keeping of one stream: receiver, session key, read cursor, gaps written."""

    def __init__(self, receiver: StreamReceiver, key: str) -> None:
        self.receiver = receiver
        self.key = key
        self.cursor = 0
        self.n_gaps_written = 0
        self.n_dropped = 0
        self.last_time = float("nan")
        self.failed = False
        self.write_failed = False


class Recorder:
    """Record LSL streams to a Zarr session until stopped.

    Parameters
    ----------
    streams : list of str or StreamQuery
        Streams to record (``"NAME"`` or ``"type=EEG"`` style).
    out : path
        Session directory to create.
    overwrite : bool
        Replace ``out`` if it exists (otherwise refuse).
    buffer_seconds, resolve_timeout, lost_timeout, dejitter
        Passed to each :class:`StreamReceiver`.
    flush_seconds : float
        How much data the writer buffers before appending a block.
    """

    def __init__(
        self,
        streams: list[str | StreamQuery],
        out: str | os.PathLike,
        *,
        overwrite: bool = False,
        buffer_seconds: float = 30.0,
        resolve_timeout: float = 5.0,
        lost_timeout: float = 2.0,
        dejitter: bool = True,
        flush_seconds: float = 1.0,
    ) -> None:
        if not streams:
            raise ValueError("streams=[]: name at least one stream to record (--stream NAME)")
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise OutputExistsError(
                f"--out {str(self.out)!r} already exists; choose a new path or pass --overwrite"
            )
        self.overwrite = overwrite
        self.flush_seconds = flush_seconds
        self._receivers = [
            StreamReceiver(
                q,
                buffer_seconds=buffer_seconds,
                resolve_timeout=resolve_timeout,
                lost_timeout=lost_timeout,
                dejitter=dejitter,
            )
            for q in streams
        ]
        self._tracks: list[_Track] = []
        self._writer: SessionWriter | None = None
        self.started_at: float | None = None
        #: Set when the disk refused a block (full, file size limit): recording stops, the session keeps the rest.
        self.write_error: SessionWriteError | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Recorder:
        """Resolve every stream (nothing is written if one is missing), create the session, start."""
        descs = [r.open() for r in self._receivers]
        self._writer = SessionWriter(self.out, overwrite=self.overwrite, flush_seconds=self.flush_seconds,
                                     attrs={"recorded_with": "bci record"})
        for receiver, desc in zip(self._receivers, descs):
            key = self._writer.add_stream(desc)
            self._tracks.append(_Track(receiver, key))
        for receiver in self._receivers:
            receiver.start()
        self.started_at = time.monotonic()
        return self

    def drain(self) -> None:
        """Move newly arrived samples and gaps into the session (call every ~0.1 s).

        A write failure (disk full, file size limit) sets :attr:`write_error`; the other streams are
        still drained (their samples stay buffered for the best-effort close), and :meth:`run` stops.
        """
        for track in self._tracks:
            if track.write_failed:
                continue
            try:
                self._drain_track(track)
            except SessionWriteError as exc:
                track.write_failed = True
                if self.write_error is None:
                    self.write_error = exc

    def stop(self) -> None:
        """Stop acquisition, write what is left, close the session (idempotent)."""
        for receiver in self._receivers:
            receiver._stop.set()
        for receiver in self._receivers:
            receiver.stop()
        if self._writer is not None:
            self.drain()
            if self._writer.error is None:
                self._writer.set_attrs(stopped_cleanly=True)
            self._writer.close()
            self._writer = None

    def run(
        self,
        duration: float | None = None,
        *,
        interval: float = 0.1,
        on_status: Callable[[list[StreamStatus]], None] | None = None,
        status_every: float = 1.0,
    ) -> list[StreamStatus]:
        """Record until ``duration`` seconds pass (None: until KeyboardInterrupt), then stop.

        Returns the final status. A stream that failed (e.g. came back with other
        channels) is reported in the status and raises after the session is closed.
        """
        if self._writer is None:
            self.start()
        end = None if duration is None else time.monotonic() + duration
        next_status = time.monotonic()
        try:
            while end is None or time.monotonic() < end:
                time.sleep(interval if end is None else max(0.0, min(interval, end - time.monotonic())))
                self.drain()
                if on_status is not None and time.monotonic() >= next_status:
                    on_status(self.status())
                    next_status += status_every
                if all(t.failed for t in self._tracks) or self.write_error is not None:
                    break
        except KeyboardInterrupt:
            logger.info("interrupted; closing the session")
        finally:
            self.stop()
        final = self.status()
        if self.write_error is not None:
            raise SessionWriteError(f"recording stopped after {time.monotonic() - self.started_at:.1f} s: "
                                    f"{self.write_error}")
        errors = [s for s in final if s.error]
        if errors:
            raise StreamsError(
                "; ".join(f"{s.name}: {s.error}" for s in errors)
                + f". What arrived before is saved in {str(self.out)!r}."
            )
        return final

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ status
    def status(self) -> list[StreamStatus]:
        """Per-stream counters."""
        out = []
        for t in self._tracks:
            s = t.receiver.snapshot()
            out.append(
                StreamStatus(
                    key=t.key,
                    name=t.receiver.desc.name,
                    n_samples=t.cursor,
                    rate=s.measured_rate(),
                    nominal_rate=t.receiver.desc.nominal_rate,
                    n_gaps=len(s.gaps) + (1 if t.n_dropped else 0),
                    n_dropped=t.n_dropped,
                    n_nonfinite=s.n_nonfinite,
                    n_reconnects=s.n_reconnects,
                    error=None if t.receiver.error is None else str(t.receiver.error),
                )
            )
        return out

    # ------------------------------------------------------------------ internals
    def _drain_track(self, track: _Track) -> None:
        buf = track.receiver.buffer
        writer = self._writer
        first, data, times = buf.read_from(track.cursor)  # one read: no race with the acquisition thread
        if len(times):
            if first > track.cursor:
                self._write_overflow_gap(track, first - track.cursor, float(times[0]))
            writer.append(track.key, data, times)
            track.cursor = first + len(times)
            track.last_time = float(times[-1])
        gaps = track.receiver.gaps
        for gap in gaps[track.n_gaps_written :]:
            writer.add_gap(track.key, gap.start_time, gap.end_time, gap.reason)
        track.n_gaps_written = len(gaps)
        if track.receiver.error is not None and not track.failed:
            track.failed = True
            writer.set_attrs(track.key, error=str(track.receiver.error))

    def _write_overflow_gap(self, track: _Track, n_lost: int, resume_time: float) -> None:
        track.n_dropped += n_lost
        gap = Gap(track.last_time, resume_time, f"recorder fell behind: {n_lost} samples overwritten in the ring buffer")
        logger.error("%s: %s", track.receiver.desc.name, gap.reason)
        self._writer.add_gap(track.key, gap.start_time, gap.end_time, gap.reason)


class SessionRecording:
    """A Zarr session written from what another consumer of the streams received (no inlet of its own).

    :meth:`append` and :meth:`add_gap` may be called from any thread (they queue copies);
    a writer thread appends them to the :class:`~streams.session.SessionWriter` in order.
    Nothing is created before :meth:`start`.

    Parameters
    ----------
    out : path
        Session directory to create.
    overwrite : bool
        Replace ``out`` if it exists (otherwise :class:`~streams.errors.OutputExistsError`,
        raised at once, before any stream is opened).
    flush_seconds : float
        How much data the writer buffers before appending a block.
    attrs : dict, optional
        Root attributes (JSON types), e.g. ``{"recorded_with": "bci live"}``.
    option : str
        The option that named ``out``, for messages (default ``--record``).
    max_backlog_bytes : int
        Bytes of samples queued for the writer thread beyond which :meth:`append` waits
        (default :data:`MAX_BACKLOG_BYTES`). How far it fell behind is kept:
        :attr:`peak_backlog_bytes`, :attr:`waited_s`, and the session's ``recording_backlog``
        attribute.
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, flush_seconds: float = 1.0,
                 attrs: dict[str, Any] | None = None, option: str = "--record",
                 max_backlog_bytes: int = MAX_BACKLOG_BYTES) -> None:
        self.out = ensure_path("out", out)
        check_bool("overwrite", overwrite)
        if (self.out.exists() or self.out.is_symlink()) and not overwrite:
            raise OutputExistsError(f"{option} {str(self.out)!r} already exists; choose a new path or pass --overwrite")
        self.overwrite = bool(overwrite)
        self.flush_seconds = flush_seconds
        self.attrs = dict(attrs or {})
        self.error: BaseException | None = None
        self._writer: SessionWriter | None = None
        self._lock = threading.Lock()  # the writer is used by one thread at a time
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._names: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self.max_backlog_bytes = check_int("max_backlog_bytes", max_backlog_bytes, low=1)
        self._backlog = threading.Condition()
        self._backlog_bytes = 0
        self.peak_backlog_bytes = 0
        self.waited_s = 0.0
        self._n_waits = 0

    # ------------------------------------------------------------------ life cycle
    def start(self) -> SessionRecording:
        """Create the session and start the writer thread."""
        if self._writer is not None:
            raise RuntimeError(f"recording {str(self.out)!r} is already started")
        self._writer = SessionWriter(self.out, overwrite=self.overwrite, flush_seconds=self.flush_seconds,
                                     attrs=self.attrs)
        self._thread = threading.Thread(target=self._run, name="session-writer", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Write everything queued, mark the session complete and close it (idempotent).

        Raises the writer thread's error, if it had one (what was written before stays).
        """
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._writer is not None:
                try:
                    if self.error is None:
                        self._writer.set_attrs(recording_backlog=self.backlog_summary(), stopped_cleanly=True)
                finally:
                    self._writer.close()
                    self._writer = None
        if self.error is not None:
            raise self.error

    # ------------------------------------------------------------------ streams
    def add_stream(self, desc: StreamDescription) -> str:
        """Add a stream (its description becomes the group's ``stream`` attribute); returns its key."""
        with self._lock:
            key = self._started().add_stream(desc)
        self._names[key] = desc.name
        self._counts[key] = 0
        return key

    def set_attrs(self, key: str | None = None, **attrs: Any) -> None:
        """Set attributes at the root (``key=None``) or on stream ``key`` (written at once)."""
        with self._lock:
            self._started().set_attrs(key, **attrs)

    def append(self, key: str, data: np.ndarray, times: np.ndarray) -> None:
        """Queue samples of stream ``key`` (copied; appended in call order).

        Waits while more than :attr:`max_backlog_bytes` are queued (the disk is behind); the
        first wait of each episode is logged.
        """
        self._counts[key] = self._counts.get(key, 0) + len(times)
        data = np.array(data, copy=True)
        times = np.array(times, dtype=np.float64, copy=True)
        size = _nbytes(data) + times.nbytes
        with self._backlog:
            if self._backlog_bytes + size > self.max_backlog_bytes and self._backlog_bytes > 0 \
                    and self._thread is not None:
                self._wait_for_disk(size)
            self._backlog_bytes += size
            self.peak_backlog_bytes = max(self.peak_backlog_bytes, self._backlog_bytes)
        self._queue.put(("append", key, data, times, size))

    def _wait_for_disk(self, size: int) -> None:
        """Block (holding the backlog condition) until ``size`` more bytes fit or the writer is gone."""
        self._n_waits += 1
        if self._n_waits == 1 or self._n_waits % 100 == 0:
            logger.warning("recording to %s is %.1f MiB behind the disk (wait %d); the consumer waits for it",
                           self.out, self._backlog_bytes / 2**20, self._n_waits)
        started = time.perf_counter()
        while (self._backlog_bytes > 0 and self._backlog_bytes + size > self.max_backlog_bytes
               and self._thread is not None and self._thread.is_alive()):
            self._backlog.wait(0.5)
        self.waited_s += time.perf_counter() - started

    @property
    def backlog_bytes(self) -> int:
        """Bytes of samples queued for the writer thread now."""
        return self._backlog_bytes

    def backlog_summary(self) -> dict[str, float | int]:
        """How far the writer fell behind: peak queued MiB, waits and seconds the consumer waited."""
        return {"peak_bytes": self.peak_backlog_bytes, "peak_mib": round(self.peak_backlog_bytes / 2**20, 3),
                "limit_bytes": self.max_backlog_bytes,
                "waits": self._n_waits, "waited_s": round(self.waited_s, 3)}

    def add_gap(self, key: str, gap: Gap) -> None:
        """Queue a gap of stream ``key``."""
        self._queue.put(("gap", key, gap))

    @property
    def streams(self) -> list[str]:
        """Names of the recorded streams, in the order they were added."""
        return list(self._names.values())

    def n_samples(self, key: str) -> int:
        """Samples handed to :meth:`append` for stream ``key`` so far."""
        return self._counts[key]

    # ------------------------------------------------------------------ writer thread
    def _started(self) -> SessionWriter:
        if self._writer is None:
            raise RuntimeError(f"recording {str(self.out)!r} is not started (or already closed); call start()")
        return self._writer

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                if item[0] == "append":
                    self._written(item[4])
                continue  # keep draining the queue; close() reports the first error
            try:
                with self._lock:
                    if item[0] == "append":
                        try:
                            self._writer.append(item[1], item[2], item[3])
                        finally:
                            self._written(item[4])
                    else:
                        gap = item[2]
                        self._writer.add_gap(item[1], gap.start_time, gap.end_time, gap.reason)
            except SessionWriteError as exc:  # the disk refused a write: one line now, close() raises it
                self.error = exc
                logger.error("recording to %s stopped (the consumer goes on): %s", self.out, exc)
            except Exception as exc:  # reported by close(); the consumer must not stop
                self.error = exc
                logger.exception("recording to %s failed; what was written before is kept", self.out)

    def _written(self, size: int) -> None:
        with self._backlog:
            self._backlog_bytes -= size
            self._backlog.notify_all()


def _nbytes(data: np.ndarray) -> int:
    """Memory held by ``data`` (object arrays: their strings too, roughly)."""
    if data.dtype == object:
        return data.nbytes + sum(len(v) if isinstance(v, (str, bytes)) else 64 for v in data.flat)
    return data.nbytes
