"""Run a :class:`~bci.runtime.pipeline.Pipeline` on live LSL streams (``bci live``).

Two :class:`~streams.acquisition.StreamReceiver` threads (data, markers) fill their
ring buffers; their chunk listeners wake one decoding thread (an event, not a polling
loop), which moves the new markers and samples into the pipeline, tells it of every gap
at the sample where it happened (:meth:`Pipeline.gap`) and, when recording, hands the
same samples, gaps and results to a :class:`~streams.recorder.SessionRecording`: one
inlet per stream, and the session holds exactly what the pipeline consumed. The time a chunk
reached the process is taken on the acquisition thread, so ``latency_ms`` covers
hand-off, preprocessing, windowing, encoding and output.

:func:`run_live` is the whole ``bci live`` run from :class:`LiveOptions`: open the
inlets, assemble the decoder (the inlets buffer meanwhile), record if asked, decode until
the duration ends, report. Recorded sessions are
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

from bci.models.checkpoint import read_config
from bci.runtime.assemble import DecodeOptions, warn_stderr, assemble
from bci.runtime.pipeline import Pipeline
from streams._checks import check_bool, check_float, check_type, ensure_path
from bci.runtime.sinks import results_description, to_json
from streams.acquisition import Gap, StreamReceiver
from streams.description import StreamDescription
from streams.lsl import StreamQuery, local_clock
from streams.recorder import SessionRecording

logger = logging.getLogger(__name__)

PipelineFactory = Callable[[StreamDescription], Pipeline]


@dataclass
class _Cursor:
    receiver: StreamReceiver
    index: int = 0
    overwritten: int = 0  # samples that left the ring buffer before the decoder read them
    last_time: float = float("nan")  # of the last sample read
    n_gaps: int = 0  # receiver gaps handed on
    key: str | None = None  # session key when recording


class _SessionResultsSink:
    """Writes every record into the recording's results stream (one JSON string, stamped ``emitted_time``)."""

    def __init__(self, recording: SessionRecording, key: str) -> None:
        self.recording = recording
        self.key = key

    def write(self, record: dict[str, Any]) -> None:
        stamp = record.get("emitted_time") or 0.0
        self.recording.append(self.key, np.array([[to_json(record)]], dtype=object), np.array([float(stamp)]))

    def close(self) -> None:
        pass  # the runtime closes the recording after the pipeline's last record


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
    make_pipeline : callable, optional
        Builds the pipeline from the data stream's description (so the model can be
        checked against the real channel count and rate before anything runs); may
        instead be given to :meth:`start`.
    resolve_timeout, buffer_seconds, lost_timeout, dejitter
        Passed to the receivers (turn dejitter off for replays faster than real time:
        LSL's dejitter assumes the nominal rate). ``buffer_seconds`` is also how long
        the receivers may buffer between :meth:`open` and :meth:`start` (e.g. while a
        model loads); older samples are reported as overwritten (a gap, with its markers
        dropped).
    """

    def __init__(
        self,
        data_stream: str | StreamQuery,
        marker_stream: str | StreamQuery | None,
        make_pipeline: PipelineFactory | None = None,
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
        self._opened = False
        self.recording: SessionRecording | None = None
        self._results_desc: StreamDescription | None = None
        self._markers_lost_since = float("nan")  # time of the last marker read
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

    def open(self) -> LiveRuntime:
        """Resolve the streams, open their inlets and start buffering (idempotent).

        Call it before anything slow (loading a model): everything received from now on
        reaches the pipeline that :meth:`start` builds (within ``buffer_seconds``).
        """
        if self._opened:
            return self
        desc = self._data.receiver.open()
        if not desc.is_regular:
            self._data.receiver.stop()
            raise ValueError(f"data stream {desc.name!r} is irregular; decode a regular EEG/fMRI stream")
        if self._markers is not None:
            mdesc = self._markers.receiver.open()
            if mdesc.n_channels < 1:
                raise ValueError(f"marker stream {mdesc.name!r} has no channels")
        self._data.receiver.add_chunk_listener(self._on_data)
        if self._markers is not None:
            self._markers.receiver.add_chunk_listener(self._on_marker)
            self._markers.receiver.start()
        self._data.receiver.start()
        self._opened = True
        return self

    def record_to(self, recording: SessionRecording, *, results: StreamDescription | None = None) -> None:
        """Record what the pipeline consumes into ``recording`` (started here if not yet).

        The data and marker streams get exactly the samples (values and the receiver's
        corrected, dejittered timestamps) and the gaps handed to the pipeline; ``results``
        (a string stream, e.g. :func:`~bci.runtime.sinks.results_description`) gets every
        record. Call between :meth:`open` and :meth:`start`; :meth:`stop` closes the recording.
        """
        check_type("recording", recording, SessionRecording)
        if self._thread is not None:
            raise RuntimeError("record_to() must come before start(): the recording holds everything decoded")
        self.open()
        if recording._writer is None:
            recording.start()
        self.recording = recording
        self._results_desc = results
        for cursor in (self._data, self._markers):
            if cursor is not None:
                cursor.key = recording.add_stream(cursor.receiver.desc)

    def start(self, make_pipeline: PipelineFactory | None = None) -> LiveRuntime:
        """Open (if needed), build the pipeline (model checked against the stream), start decoding.

        The pipeline consumes everything buffered since :meth:`open`.
        """
        self.open()
        make = make_pipeline or self._make_pipeline
        if make is None:
            raise TypeError("no pipeline factory: pass make_pipeline to LiveRuntime(...) or to start()")
        self.pipeline = make(self._data.receiver.desc)
        if self.recording is not None:
            if self._results_desc is not None:
                key = self.recording.add_stream(self._results_desc)
                self.pipeline.sinks.append(_SessionResultsSink(self.recording, key))
            channel_map = getattr(self.pipeline, "channel_map", None)
            if channel_map is not None:
                self.recording.set_attrs(self._data.key, channel_map=channel_map.to_dict())
        self.pipeline.sinks.extend(self._listeners)
        self._thread = threading.Thread(target=self._run, name="bci-decode", daemon=True)
        self._thread.start()
        self._wake.set()  # what arrived while the pipeline was built
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
        try:
            if self.pipeline is not None:
                self._drain()
                self.pipeline.finish()
                self.pipeline.close()
        finally:
            if self.recording is not None:
                self._close_recording()

    def _close_recording(self) -> None:
        """Note a failed stream (e.g. it came back with other channels) and close the session."""
        for cursor in (self._data, self._markers):
            if cursor is not None and cursor.receiver.error is not None and cursor.key is not None:
                self.recording.set_attrs(cursor.key, error=str(cursor.receiver.error))
        self.recording.close()

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
            values, times, lost = _take_new(self._markers)
            gaps = _new_gaps(self._markers, times, lost)
            self._record(self._markers, values, times, gaps)
            if lost:  # their values are gone: one record says how many, and when
                pipeline.markers_lost(lost, self._markers_lost_since, float(times[0]) if len(times) else float("nan"))
            if len(times):
                self._markers_lost_since = float(times[-1])
                pipeline.push_markers([str(v[0]) for v in values], times, arrival=local_clock())
        data, times, lost = _take_new(self._data)
        if not len(times):
            return
        gaps = _new_gaps(self._data, times, lost)
        self._record(self._data, data, times, gaps)
        arrival = self._arrival_for(self._data.index)
        start = 0
        for at, gap in gaps:  # the pipeline hears of each gap at its first sample, as a replay does
            if at > start:
                pipeline.push_data(data[start:at], times[start:at], arrival=arrival)
                start = at
            pipeline.gap(gap.start_time, gap.end_time, gap.reason)
        pipeline.push_data(data[start:], times[start:], arrival=arrival)

    def _record(self, cursor: _Cursor, data: np.ndarray, times: np.ndarray, gaps: list[tuple[int, Gap]]) -> None:
        if self.recording is None or cursor.key is None:
            return
        for _, gap in gaps:
            self.recording.add_gap(cursor.key, gap)
        if len(times):
            self.recording.append(cursor.key, data, times)

    def _arrival_for(self, total: int) -> float | None:
        while self._arrivals:
            end, t = self._arrivals[0]
            if end >= total:
                return t
            self._arrivals.popleft()
        return None


def _take_new(cursor: _Cursor) -> tuple[np.ndarray, np.ndarray, int]:
    """New samples of a receiver's ring buffer, and how many were overwritten before they could be read."""
    first, data, times = cursor.receiver.buffer.read_from(cursor.index)  # one read: no race with the writer
    if not len(times):  # nothing new: the cursor stays, so a later read still counts what was overwritten
        return data, times, 0
    lost = first - cursor.index
    if lost:
        cursor.overwritten += lost
        logger.error("decoder fell behind: %d samples of %s overwritten before decoding", lost,
                     cursor.receiver.desc.name)
    cursor.index = first + len(times)
    return data, times, lost


def _new_gaps(cursor: _Cursor, times: np.ndarray, lost: int) -> list[tuple[int, Gap]]:
    """Gaps that end within ``times`` (just read), with the index of their first sample after.

    The receiver lists a gap before it buffers the first sample after it, so every gap of
    the samples just read is listed; later ones wait for the next read. Samples lost to
    an overwrite are a gap too.
    """
    out: list[tuple[int, Gap]] = []
    if lost and len(times):
        out.append((0, Gap(cursor.last_time, float(times[0]),
                           f"decoder fell behind: {lost} samples overwritten in the ring buffer")))
    gaps = cursor.receiver.gaps
    read_from = cursor.index - len(times)  # absolute index of times[0] (cursor.index: one past the last read)
    while cursor.n_gaps < len(gaps) and len(times) and _gap_ends_within(gaps[cursor.n_gaps], times, cursor.index):
        gap = gaps[cursor.n_gaps]
        if gap.first_index is not None:  # placed by index: right even where a clock jump ran the times backwards
            at = min(max(gap.first_index - read_from, 0), len(times))
        else:
            at = int(np.searchsorted(times, gap.end_time, side="left"))
        out.append((at, gap))
        cursor.n_gaps += 1
    if len(times):
        cursor.last_time = float(times[-1])
    out.sort(key=lambda item: item[0])
    return out


def _gap_ends_within(gap: Gap, times: np.ndarray, read_to: int) -> bool:
    """Whether ``gap``'s first sample after is among those just read (up to absolute index ``read_to``)."""
    if gap.first_index is not None:
        return gap.first_index < read_to
    return gap.end_time <= times[-1]


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
        Also record the data, marker and results streams into this Zarr session: the
        samples, gaps and records the decoder consumed and produced, from its own
        receivers (the results stream is named ``decode.results_stream``, which must be set).
    resolve_timeout : float
        Seconds to find each stream.
    dejitter : bool
        Smooth the data stream's timestamps with LSL's dejitter (it assumes the nominal rate: turn it off
        for a stream played faster than real time, e.g. ``bci simulate --speed 20``).
    """

    data_stream: str
    markers: str | None
    decode: DecodeOptions
    duration: float | None = None
    record: str | os.PathLike | None = None
    resolve_timeout: float = 5.0
    dejitter: bool = True

    def __post_init__(self) -> None:
        check_type("data_stream", self.data_stream, str)
        check_bool("dejitter", self.dejitter)
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
            raise ValueError("--record stores the results as the results stream (type BCIResults) under its "
                             "--results-stream name; do not disable --results-stream")


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
    read_config(options.decode.model)  # a missing or broken checkpoint fails at once, before any stream is opened
    recording = _recording(options) if options.record is not None else None  # so does an existing --record path
    runtime = LiveRuntime(options.data_stream, options.markers, resolve_timeout=options.resolve_timeout,
                          dejitter=options.dejitter)
    runtime.open()  # the inlets buffer while the model loads
    try:
        decoder = assemble(options.decode, warn=warn)
        if recording is not None:
            runtime.record_to(recording, results=results_description(options.decode.results_stream))
        runtime.start(decoder.make_pipeline)
    except BaseException:
        runtime.stop()
        raise
    duration = options.duration
    say(f"decoding {runtime.data_receiver.desc.name!r}"
        + (f" at markers of {runtime.marker_receiver.desc.name!r}" if runtime.marker_receiver else "")
        + f" with {decoder.encoder.config.name} on {decoder.encoder.device}"
        + (f", recording to {options.record}" if recording else "")
        + loop.note
        + (f" for {duration:g} s" if duration else loop.until if loop.until is not None else "; Ctrl-C stops"))
    loop.run(runtime, duration, None)  # stopping the runtime closes the recording
    recorded = recording.streams if recording is not None else []
    say(runtime.pipeline.stats.summary())
    if loop.done is not None:
        say(loop.done)
    if recording is not None:
        backlog = recording.backlog_summary()
        say(f"recorded {', '.join(recorded)} to {options.record} (writer backlog peak {backlog['peak_mib']:.1f} MiB"
            + (f"; decoding waited {backlog['waited_s']:.1f} s for the disk, {backlog['waits']} times)"
               if backlog["waits"] else ")"))
    return LiveResult(runtime, recorded)


def _say(text: str) -> None:
    print(text, flush=True)


def _recording(options: LiveOptions) -> SessionRecording:
    """The session ``record`` names, fed by the runtime's receivers (nothing is created yet)."""
    return SessionRecording(Path(options.record), overwrite=options.decode.overwrite,
                            attrs={"recorded_with": "bci live"})
