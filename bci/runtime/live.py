"""Run a :class:`~bci.runtime.pipeline.Pipeline` on live LSL streams (``bci live``).

Two :class:`~streams.acquisition.StreamReceiver` threads (data, markers) fill their
ring buffers; their chunk listeners wake one decoding thread (an event, not a polling
loop), which moves the new markers and samples into the pipeline. The time a chunk
reached the process is taken on the acquisition thread, so ``latency_ms`` covers
hand-off, preprocessing, windowing, encoding and output.

:func:`run_live` is the whole ``bci live`` run from :class:`LiveOptions`: assemble the
decoder, record if asked, decode until the duration ends, report. Recorded sessions are
decoded by :mod:`bci.runtime.replay`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bci.runtime.assemble import DecodeOptions, warn_stderr, assemble
from bci.runtime.pipeline import Pipeline
from streams._checks import check_float, check_type, ensure_path
from streams.acquisition import StreamReceiver
from streams.description import StreamDescription
from streams.lsl import StreamQuery, local_clock

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


# --------------------------------------------------------------------------- a whole live run
@dataclass
class LiveOptions:
    """A ``bci live`` run; checked when made.

    Parameters
    ----------
    data_stream : str
        The EEG (or fMRI) stream (name, or ``type=EEG``).
    markers : str, optional
        The marker stream; without it, ``decode.hop`` must give sliding windows.
    decode : DecodeOptions
        Model, sinks and result steps.
    duration : float, optional
        Seconds to run (None: until Ctrl-C / the loop stops).
    record : path, optional
        Also record the data, marker and results streams into this Zarr session (needs
        ``decode.results_stream``).
    resolve_timeout : float
        Seconds to find each stream.
    """

    data_stream: str
    markers: str | None
    decode: DecodeOptions
    duration: float | None = None
    record: str | os.PathLike | None = None
    resolve_timeout: float = 5.0

    def __post_init__(self) -> None:
        check_type("data_stream", self.data_stream, str)
        if self.markers is not None:
            check_type("markers", self.markers, str)
        check_type("decode", self.decode, DecodeOptions)
        if self.duration is not None:
            self.duration = check_float("duration", self.duration)
        if self.record is not None:
            self.record = ensure_path("record", self.record)
        self.resolve_timeout = check_float("resolve_timeout", self.resolve_timeout, positive=True)
        if self.markers is None and self.decode.hop is None:
            raise ValueError("without --markers there are no events to decode; pass --markers NAME or --hop S "
                             "for sliding windows")
        if self.record is not None and not self.decode.results_stream:
            raise ValueError("--record stores the results from the LSL results outlet; do not disable "
                             "--results-stream")


def _run_headless(runtime: LiveRuntime, duration: float | None, on_tick: Callable[[], None] | None) -> None:
    runtime.run(duration, on_tick=on_tick, tick=0.1)


@dataclass(frozen=True)
class RunLoop:
    """How :func:`run_live` drives the runtime: its own loop (headless) or, e.g., a viewer's.

    Parameters
    ----------
    run : callable
        ``run(runtime, duration, on_tick)``: start the runtime if needed, run until
        ``duration`` ends (or the loop stops), stop it.
    note : str
        Added to the start line (e.g. ``", with the viewer"``).
    until : str, optional
        Said instead of ``"; Ctrl-C stops"`` when there is no duration (e.g. when a screenshot ends the run).
    done : str, optional
        Said after the summary.
    """

    run: Callable[[LiveRuntime, float | None, Callable[[], None] | None], None] = _run_headless
    note: str = ""
    until: str | None = None
    done: str | None = None


@dataclass
class LiveResult:
    """What a :func:`run_live` run did: its runtime (pipeline, stats) and the streams it recorded."""

    runtime: LiveRuntime
    recorded: list[str] = field(default_factory=list)


def run_live(options: LiveOptions, *, loop: RunLoop | None = None, say: Callable[[str], None] | None = None,
             warn: Callable[[str], None] = warn_stderr) -> LiveResult:
    """Decode live streams as ``options`` say (``bci live``): assemble, record, run, report.

    Parameters
    ----------
    options : LiveOptions
        The run.
    loop : RunLoop, optional
        How to drive the runtime (default: headless, :meth:`LiveRuntime.run`).
    say : callable, optional
        Progress lines (default: print, flushed).
    warn : callable
        What is skipped, e.g. a missing extra (default: stderr).
    """
    check_type("options", options, LiveOptions)
    loop = RunLoop() if loop is None else check_type("loop", loop, RunLoop)
    say = say or _say
    decoder = assemble(options.decode, warn=warn)
    runtime = LiveRuntime(options.data_stream, options.markers, decoder.make_pipeline,
                          resolve_timeout=options.resolve_timeout)
    recorder = _start_recorder(options) if options.record is not None else None  # first: it sees every result
    runtime.start()
    duration = options.duration
    say(f"decoding {runtime.data_receiver.desc.name!r}"
        + (f" at markers of {runtime.marker_receiver.desc.name!r}" if runtime.marker_receiver else "")
        + f" with {decoder.encoder.config.name} on {decoder.encoder.device}"
        + (f", recording to {options.record}" if recorder else "")
        + loop.note
        + (f" for {duration:g} s" if duration else loop.until if loop.until is not None else "; Ctrl-C stops"))
    try:
        loop.run(runtime, duration, recorder.drain if recorder else None)
    finally:
        if recorder is not None:
            time.sleep(0.3)  # let the last results reach the recorder's inlet
            recorder.stop()
    recorded = [s.name for s in recorder.status()] if recorder is not None else []
    say(runtime.pipeline.stats.summary())
    if loop.done is not None:
        say(loop.done)
    if recorder is not None:
        say(f"recorded {', '.join(recorded)} to {options.record}")
    return LiveResult(runtime, recorded)


def _say(text: str) -> None:
    print(text, flush=True)


def _start_recorder(options: LiveOptions):
    """Record the data, marker and results streams into one Zarr session (``record``)."""
    from streams.recorder import Recorder

    streams = [options.data_stream] + ([options.markers] if options.markers else [])
    streams.append(f"name={options.decode.results_stream},type=BCIResults")
    return Recorder(streams, Path(options.record), overwrite=options.decode.overwrite,
                    resolve_timeout=options.resolve_timeout).start()
