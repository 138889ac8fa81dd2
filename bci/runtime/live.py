"""Run a :class:`~bci.runtime.pipeline.Pipeline` on a source: live LSL streams or a recorded session.

Live: two :class:`~streams.acquisition.StreamReceiver` threads (data, markers) fill
their ring buffers; their chunk listeners wake one decoding thread (an event, not a
polling loop), which moves the new markers and samples into the pipeline. The time a
chunk reached the process is taken on the acquisition thread, so ``latency_ms`` covers
hand-off, preprocessing, windowing, encoding and output.

Replay at ``speed=max``: :func:`decode_session` feeds the pipeline straight from the
Zarr arrays in the order the live run saw them (markers up to each chunk's last
timestamp, then the chunk), without LSL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bci.runtime.pipeline import Pipeline
from streams.acquisition import StreamReceiver
from streams.description import StreamDescription
from streams.lsl import StreamQuery, local_clock
from streams.session import SessionReader

logger = logging.getLogger(__name__)

PipelineFactory = Callable[[StreamDescription], Pipeline]


@dataclass
class _Cursor:
    receiver: StreamReceiver
    index: int = 0
    overwritten: int = 0  # samples that left the ring buffer before the decoder read them


class _ListenerSink:
    """Hands every record to a callback (observers such as the viewer); a failing callback is dropped."""

    def __init__(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self.callback: Callable[[dict[str, Any]], None] | None = callback

    def write(self, record: dict[str, Any]) -> None:
        callback = self.callback
        if callback is None:
            return
        try:
            callback(record)
        except Exception:  # an observer must never stop decoding
            logger.exception("record listener %r failed and was removed", callback)
            self.callback = None

    def close(self) -> None:
        self.callback = None


class LiveRuntime:
    """Decode live LSL streams until stopped.

    Parameters
    ----------
    data_stream : str or StreamQuery
        The EEG (or fMRI) stream.
    marker_stream : str or StreamQuery, optional
        The marker stream (None: no event windows).
    make_pipeline : callable
        Builds the pipeline from the data stream's description (so the model can be
        checked against the real channel count and rate before anything runs).
    resolve_timeout, buffer_seconds, lost_timeout, dejitter
        Passed to the receivers (turn dejitter off for replays faster than real time:
        LSL's dejitter assumes the nominal rate).
    """

    def __init__(
        self,
        data_stream: str | StreamQuery,
        marker_stream: str | StreamQuery | None,
        make_pipeline: PipelineFactory,
        *,
        resolve_timeout: float = 5.0,
        buffer_seconds: float = 30.0,
        lost_timeout: float = 2.0,
        dejitter: bool = True,
    ) -> None:
        kw = {"resolve_timeout": resolve_timeout, "buffer_seconds": buffer_seconds, "lost_timeout": lost_timeout,
              "dejitter": dejitter}
        self._data = _Cursor(StreamReceiver(data_stream, **kw))
        self._markers = _Cursor(StreamReceiver(marker_stream, **kw)) if marker_stream is not None else None
        self._make_pipeline = make_pipeline
        self.pipeline: Pipeline | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stop_requested = threading.Event()
        self._listeners: list[_ListenerSink] = []
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=10_000)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def data_receiver(self) -> StreamReceiver:
        """The data stream's receiver (ring buffer, stats, gaps)."""
        return self._data.receiver

    @property
    def marker_receiver(self) -> StreamReceiver | None:
        """The marker stream's receiver, if any."""
        return self._markers.receiver if self._markers else None

    @property
    def decoder_backlog(self) -> int:
        """Data samples received but not yet handed to the pipeline."""
        buf = self._data.receiver.buffer
        return max(0, buf.total - self._data.index) if buf is not None else 0

    @property
    def decoder_overwritten(self) -> int:
        """Data samples overwritten in the ring buffer before the decoder read them."""
        return self._data.overwritten

    def add_record_listener(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(record)`` on the decoding thread for every record, after the sinks.

        For observers such as the viewer: the callback must be quick (store the record
        and return). Works before or after :meth:`start`; one that raises is logged and
        removed.
        """
        if not callable(callback):
            raise TypeError(f"callback={callback!r} must be callable (it receives each result record)")
        sink = _ListenerSink(callback)
        self._listeners.append(sink)
        if self.pipeline is not None:
            self.pipeline.sinks.append(sink)

    def request_stop(self) -> None:
        """Ask a :meth:`run` in progress (on any thread) to return; it then stops cleanly."""
        self._stop_requested.set()

    def start(self) -> LiveRuntime:
        """Resolve streams, build the pipeline (model checked against the stream), start threads."""
        desc = self._data.receiver.open()
        if not desc.is_regular:
            raise ValueError(f"data stream {desc.name!r} is irregular; decode a regular EEG/fMRI stream")
        if self._markers is not None:
            mdesc = self._markers.receiver.open()
            if mdesc.n_channels < 1:
                raise ValueError(f"marker stream {mdesc.name!r} has no channels")
        self.pipeline = self._make_pipeline(desc)
        self.pipeline.sinks.extend(self._listeners)
        self._data.receiver.add_chunk_listener(self._on_data)
        if self._markers is not None:
            self._markers.receiver.add_chunk_listener(self._on_marker)
            self._markers.receiver.start()
        self._data.receiver.start()
        self._thread = threading.Thread(target=self._run, name="bci-decode", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop receivers and the decoding thread; decode what is complete; close sinks."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        for cursor in (self._data, self._markers):
            if cursor is not None:
                cursor.receiver.stop()
        if self.pipeline is not None:
            self._drain()
            self.pipeline.finish()
            self.pipeline.close()

    def run(self, duration: float | None = None, on_tick: Callable[[], None] | None = None,
            tick: float = 1.0) -> None:
        """Start (if needed), run for ``duration`` seconds or until Ctrl-C, then stop."""
        if self._thread is None:
            self.start()
        end = None if duration is None else time.monotonic() + duration
        try:
            while (end is None or time.monotonic() < end) and not self._stop_requested.is_set():
                pause = tick if end is None else max(0.0, min(tick, end - time.monotonic()))
                self._stop_requested.wait(pause)
                if on_tick is not None:
                    on_tick()
                if self.error is not None or self._data.receiver.error is not None:
                    break
        except KeyboardInterrupt:
            logger.info("interrupted")
        finally:
            self.stop()
        err = self.error or self._data.receiver.error
        if err is not None:
            raise err

    # ------------------------------------------------------------------ threads
    def _on_data(self, data: np.ndarray, times: np.ndarray) -> None:
        self._arrivals.append((self._data.receiver.buffer.total, local_clock()))
        self._wake.set()

    def _on_marker(self, data: np.ndarray, times: np.ndarray) -> None:
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(0.2)
                self._wake.clear()
                self._drain()
        except BaseException as exc:  # reported by run()
            self.error = exc
            logger.exception("decoding stopped")

    def _drain(self) -> None:
        pipeline = self.pipeline
        if self._markers is not None:
            values, times = _take_new(self._markers)
            if len(times):
                pipeline.push_markers([str(v[0]) for v in values], times, arrival=local_clock())
        data, times = _take_new(self._data)
        if len(times):
            arrival = self._arrival_for(self._data.index)
            pipeline.push_data(data, times, arrival=arrival)

    def _arrival_for(self, total: int) -> float | None:
        while self._arrivals:
            end, t = self._arrivals[0]
            if end >= total:
                return t
            self._arrivals.popleft()
        return None


def _take_new(cursor: _Cursor) -> tuple[np.ndarray, np.ndarray]:
    buf = cursor.receiver.buffer
    total = buf.total
    if total <= cursor.index:
        return np.empty((0, buf.n_channels), buf.dtype), np.empty(0)
    start = max(cursor.index, buf.oldest_index)
    if start > cursor.index:
        cursor.overwritten += start - cursor.index
        logger.error("decoder fell behind: %d samples overwritten before decoding", start - cursor.index)
    data, times = buf.get(start, total)
    cursor.index = total
    return data, times


def decode_session(
    session: SessionReader,
    pipeline: Pipeline,
    *,
    data_key: str,
    marker_key: str | None,
    chunk_size: int | None = None,
    clock: Callable[[], float] = local_clock,
) -> None:
    """Feed a recorded session through ``pipeline`` as fast as possible (``--speed max``).

    Data are fed in ``chunk_size`` chunks (default: one second of samples; the
    results do not depend on it); before each chunk, every marker with a timestamp
    up to that chunk's last sample is fed, as a live run would have seen it. ``arrival`` is the time the chunk is handed over, so ``latency_ms`` measures
    processing time.
    """
    data = session.data(data_key)
    times = session.times(data_key)
    if chunk_size is None:
        chunk_size = max(1, int(round(session.description(data_key).nominal_rate)))
    if marker_key is not None:
        m_times, m_values = session.markers(marker_key)
    else:
        m_times, m_values = np.empty(0), np.empty(0, dtype=object)
    next_marker = 0
    for start in range(0, len(times), chunk_size):
        stop = min(start + chunk_size, len(times))
        t_last = times[stop - 1]
        end_m = int(np.searchsorted(m_times, t_last, side="right"))
        if end_m > next_marker:
            pipeline.push_markers(list(m_values[next_marker:end_m]), m_times[next_marker:end_m], arrival=clock())
            next_marker = end_m
        pipeline.push_data(data[start:stop], times[start:stop], arrival=clock())
    if next_marker < len(m_times):
        pipeline.push_markers(list(m_values[next_marker:]), m_times[next_marker:], arrival=clock())
    pipeline.finish()
