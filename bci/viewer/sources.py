"""Where the viewer's data come from: a running :class:`~bci.runtime.live.LiveRuntime`, or LSL.

A *provider* fills a :class:`~bci.viewer.model.ViewerModel` and reports the health of
the session (:meth:`health`). Both providers leave all work to background threads:

* :class:`RuntimeProvider` (in-process, ``bci live``): the traces are the runtime's own
  ring buffers (raw samples from its acquisition thread, preprocessed samples from its
  pipeline), records arrive through :meth:`LiveRuntime.add_record_listener` on the
  decoding thread;
* :class:`LslProvider` (``bci view``): its own :class:`~streams.acquisition.StreamReceiver`
  threads subscribe to the EEG/fMRI stream, the marker stream and the ``BCIResults``
  stream (JSON strings, parsed on the acquisition thread); preprocessing for display runs
  on one more thread, only while the preprocessed view is on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bci.viewer.model import TraceSource, ViewerModel
from streams.acquisition import StreamReceiver
from streams.description import StreamDescription
from streams.lsl import StreamQuery
from streams.ringbuffer import RingBuffer

#: Seconds :meth:`LslProvider.stop` waits for its receivers (stopped together).
STOP_TIMEOUT = 2.0

if TYPE_CHECKING:
    from bci.preprocessing import PreprocessConfig
    from bci.runtime.live import LiveRuntime

logger = logging.getLogger(__name__)


@dataclass
class Health:
    """Session health as the health panel shows it."""

    stream: str = "-"
    stream_type: str = "-"
    n_channels: int = 0
    nominal_rate: float = 0.0
    measured_rate: float | None = None
    buffer_held_s: float = 0.0
    buffer_capacity_s: float = 0.0
    decoder_backlog: int | None = None
    n_samples: int = 0
    n_gaps: int = 0
    missing_samples: int = 0
    overwritten: int = 0
    n_nonfinite: int = 0
    n_reconnects: int = 0
    device: str = "-"
    latency_p50: float = math.nan
    latency_p99: float = math.nan
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def buffer_fill(self) -> float:
        """Fraction of the ring buffer holding data (0..1)."""
        return self.buffer_held_s / self.buffer_capacity_s if self.buffer_capacity_s else 0.0


class Provider(Protocol):
    """What the viewer window needs from a data source."""

    model: ViewerModel
    desc: StreamDescription

    def health(self) -> Health:
        """Current health figures."""

    def set_processed(self, on: bool) -> bool:
        """Turn the preprocessed trace on/off; False when it is not available."""

    def data_arrived(self) -> int:
        """Samples received so far."""

    def pending(self) -> bool:
        """True while something asked for (the preprocessed view) is still being prepared."""

    def stop(self) -> None:
        """Stop the threads the provider started."""


class RateMeter:
    """Samples per second over the last ``span`` seconds of wall time (from a growing counter)."""

    def __init__(self, span: float = 5.0) -> None:
        self.span = span
        self._points: deque[tuple[float, int]] = deque()

    def update(self, count: int, now: float | None = None) -> float | None:
        """Record the counter now; returns the rate, None until a second of history exists."""
        now = time.monotonic() if now is None else now
        self._points.append((now, count))
        while len(self._points) > 2 and now - self._points[1][0] >= self.span:
            self._points.popleft()
        t0, c0 = self._points[0]
        if now - t0 < 1.0:
            return None
        return (count - c0) / (now - t0)


def _receiver_health(h: Health, receiver: StreamReceiver, meter: RateMeter) -> None:
    """Fill the acquisition part of ``h`` from a receiver."""
    desc, buf = receiver.desc, receiver.buffer
    snap = receiver.snapshot()
    h.stream, h.stream_type, h.n_channels = desc.name, desc.type, desc.n_channels
    h.nominal_rate = desc.nominal_rate
    h.measured_rate = meter.update(snap.n_samples)
    if desc.nominal_rate > 0:
        h.buffer_held_s = len(buf) / desc.nominal_rate
        h.buffer_capacity_s = buf.capacity / desc.nominal_rate
        h.missing_samples = int(sum(max(0, round(g.duration * desc.nominal_rate) - 1) for g in snap.gaps))
    h.n_samples, h.n_gaps = snap.n_samples, len(snap.gaps)
    h.n_nonfinite, h.n_reconnects = snap.n_nonfinite, snap.n_reconnects


# --------------------------------------------------------------------------- in-process
class RuntimeProvider:
    """The viewer's data from a :class:`~bci.runtime.live.LiveRuntime` in this process.

    Parameters
    ----------
    runtime : LiveRuntime
        Started or not: the record listener is registered at once, the buffers are
        taken when :meth:`attach` is called (after ``runtime.start()``).
    device : str, optional
        Shown in the health panel (default: the encoder's device).
    """

    def __init__(self, runtime: LiveRuntime, device: str | None = None) -> None:
        self.runtime = runtime
        self.model = ViewerModel()
        self.device = device
        self.desc: StreamDescription | None = None
        self._meter = RateMeter()
        self._processed_on = False
        runtime.add_record_listener(self.model.add_record)

    def attach(self) -> RuntimeProvider:
        """Point the model at the runtime's buffers (the runtime must be started)."""
        receiver = self.runtime.data_receiver
        pipeline = self.runtime.pipeline
        if receiver.buffer is None or pipeline is None:
            raise RuntimeError("attach() needs a started runtime: call runtime.start() first")
        self.desc = receiver.desc
        self.model.modality = _modality(self.desc)
        self.model.raw = TraceSource(receiver.buffer, self.desc.nominal_rate, tuple(self.desc.channel_names), "raw")
        if pipeline.pre is not None:
            label = _preprocess_label(pipeline.pre.config)
            self.model.processed = TraceSource(pipeline.buffer, pipeline.out_sfreq, tuple(pipeline.ch_names), label)
        markers = self.runtime.marker_receiver
        self.model.markers = markers.buffer if markers is not None else None
        if self.device is None:
            self.device = str(getattr(pipeline.encoder, "device", "-"))
        return self

    def health(self) -> Health:
        """Acquisition, decoding and latency figures of the runtime."""
        h = Health()
        if self.desc is None:
            return h
        _receiver_health(h, self.runtime.data_receiver, self._meter)
        h.decoder_backlog = self.runtime.decoder_backlog
        h.overwritten = self.runtime.decoder_overwritten
        h.device = self.device or "-"
        h.latency_p50, h.latency_p99 = self.model.latency_percentiles()
        h.extra["results"] = "in-process"
        return h

    def set_processed(self, on: bool) -> bool:
        """The pipeline's own preprocessed buffer (available when the model preprocesses)."""
        self._processed_on = bool(on) and self.model.processed is not None
        return self.model.processed is not None

    def pending(self) -> bool:
        """Nothing is prepared in the background."""
        return False

    def data_arrived(self) -> int:
        """Samples the runtime has received."""
        return self.runtime.data_receiver.snapshot().n_samples if self.desc is not None else 0

    def stop(self) -> None:
        """Nothing to stop: the runtime's owner stops it."""


# --------------------------------------------------------------------------- stand-alone
class ProcessedStream:
    """Preprocess a receiver's samples for display on a thread of its own.

    Woken by the receiver's chunk events (no polling); reads new samples from the
    receiver's ring buffer into an :class:`~bci.preprocessing.OnlinePreprocessor` and
    pushes the output into its own ring buffer. If it falls behind by more than the
    buffer, it restarts the filters and carries on (display only).
    """

    def __init__(self, receiver: StreamReceiver, config: PreprocessConfig, buffer_seconds: float = 30.0) -> None:
        from bci.preprocessing import OnlinePreprocessor

        desc = receiver.desc
        self.receiver = receiver
        self.pre = OnlinePreprocessor(config, desc.nominal_rate, list(desc.channel_names))
        self.buffer = RingBuffer(max(16, int(buffer_seconds * self.pre.out_sfreq)), desc.n_channels, np.float32)
        self.source = TraceSource(self.buffer, self.pre.out_sfreq, tuple(desc.channel_names),
                                  _preprocess_label(config))
        self._cursor = receiver.buffer.oldest_index
        self._n_in = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._enabled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewer-preprocess", daemon=True)
        receiver.add_chunk_listener(self._on_chunk)
        self._thread.start()

    def enable(self, on: bool) -> None:
        """Process (True) or pause (False); (re)starting takes the last 10 s of samples first."""
        if on and not self._enabled.is_set():
            back = int(10 * self.receiver.desc.nominal_rate)
            self._cursor = max(self._cursor, self.receiver.buffer.total - back)
            self._enabled.set()
            self._wake.set()
        elif not on:
            self._enabled.clear()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def _on_chunk(self, data: np.ndarray, times: np.ndarray) -> None:
        if self._enabled.is_set():
            self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                if self._enabled.is_set():
                    self._step()
        except Exception:  # display only: log, keep the raw view working
            logger.exception("display preprocessing stopped")

    def _step(self) -> None:
        first, data, times = self.receiver.buffer.read_from(self._cursor)  # one read: no race with the writer
        if not len(times):
            return
        if first > self._cursor:  # fell behind by more than the buffer: restart the filters
            self.pre.reset()
        self._cursor = first + len(times)
        out = self.pre.process(data.astype(np.float32, copy=False))
        idx = np.arange(self._n_in, self._n_in + len(times))
        self._n_in += len(times)
        kept = times[(idx + 1) % self.pre.decim == 0] if self.pre.decim > 1 else times
        if len(out):
            self.buffer.push(out, kept)


class LslProvider:
    """The viewer's data from LSL streams (stand-alone ``bci view``).

    Parameters
    ----------
    data_stream : str or StreamQuery
        The EEG (or fMRI) stream.
    results_stream : str or StreamQuery, optional
        A ``BCIResults`` stream (one JSON record per sample).
    marker_stream : str or StreamQuery, optional
        A marker stream (drawn as lines on the traces).
    preprocess : PreprocessConfig or mapping, optional
        Preprocessing for the preprocessed view (a mapping is read with
        ``PreprocessConfig.from_dict``; ``{}`` is the default configuration; None: the
        view is not offered). It is built on a background thread the first time the
        view is turned on, so the import of the filter code never stalls the GUI.
    resolve_timeout, buffer_seconds
        Passed to the receivers.
    """

    def __init__(
        self,
        data_stream: str | StreamQuery,
        *,
        results_stream: str | StreamQuery | None = None,
        marker_stream: str | StreamQuery | None = None,
        preprocess: PreprocessConfig | Mapping[str, Any] | None = None,
        resolve_timeout: float = 5.0,
        buffer_seconds: float = 30.0,
    ) -> None:
        kw: dict[str, Any] = {"resolve_timeout": resolve_timeout, "buffer_seconds": buffer_seconds}
        self.model = ViewerModel()
        self.data = StreamReceiver(data_stream, **kw)
        self.results = StreamReceiver(results_stream, **kw) if results_stream is not None else None
        self.markers = StreamReceiver(marker_stream, **kw) if marker_stream is not None else None
        self.preprocess = preprocess
        self.buffer_seconds = float(buffer_seconds)
        self.desc: StreamDescription | None = None
        self.processed: ProcessedStream | None = None
        self._meter = RateMeter()
        self._processed_lock = threading.Lock()
        self._processed_building = False
        self._processed_wanted = False
        self._processed_error: BaseException | None = None

    def start(self) -> LslProvider:
        """Resolve the streams (clear errors if one is missing) and start the receivers."""
        self.desc = self.data.open()
        if not self.desc.is_regular or self.desc.is_string:
            raise ValueError(f"--eeg {self.desc.name!r} is not a regular numeric stream (type {self.desc.type!r}); "
                             "pass the EEG/fMRI stream")
        self.model.modality = _modality(self.desc)
        self.model.raw = TraceSource(self.data.buffer, self.desc.nominal_rate, tuple(self.desc.channel_names), "raw")
        if self.results is not None:
            rdesc = self.results.open()
            if not rdesc.is_string:
                raise ValueError(f"--results {rdesc.name!r} has type {rdesc.type!r} and format {rdesc.dtype}; "
                                 "pass the runtime's string stream of type BCIResults")
            self.results.add_chunk_listener(self._on_results)
        if self.markers is not None:
            self.markers.open()
            self.model.markers = self.markers.buffer
        for receiver in (self.results, self.markers, self.data):
            if receiver is not None:
                receiver.start()
        return self

    def _on_results(self, data: np.ndarray, times: np.ndarray) -> None:
        for row, stamp in zip(data, times, strict=True):
            self.model.add_result_text(str(row[0]), float(stamp))

    def health(self) -> Health:
        """Acquisition figures of the data stream; latency and device from the records."""
        h = Health()
        if self.desc is None:
            return h
        _receiver_health(h, self.data, self._meter)
        h.device = self.model.device or "- (not in the records)"
        h.latency_p50, h.latency_p99 = self.model.latency_percentiles()
        if self.results is not None and self.results.desc is not None:
            h.extra["results"] = (f"stream {self.results.desc.name!r}: {self.results.snapshot().n_samples} records, "
                                  f"{self.results.snapshot().n_reconnects} reconnects")
        return h

    def set_processed(self, on: bool) -> bool:
        """Start/pause display preprocessing; False when there is none (fMRI, or not configured)."""
        if self.preprocess is None or self.model.modality != "eeg" or self._processed_error is not None:
            return False
        with self._processed_lock:
            self._processed_wanted = bool(on)
            if self.processed is not None:
                self.processed.enable(on)
            elif on and not self._processed_building and self.desc is not None:
                self._processed_building = True
                threading.Thread(target=self._build_processed, name="viewer-preprocess-setup", daemon=True).start()
        return True

    def _build_processed(self) -> None:
        """Import the filter code and design the filters off the GUI thread."""
        try:
            from bci.preprocessing import PreprocessConfig

            config = self.preprocess
            if not isinstance(config, PreprocessConfig):
                config = PreprocessConfig.from_dict(config) if config else PreprocessConfig()
            stream = ProcessedStream(self.data, config, self.buffer_seconds)
        except Exception as exc:  # display only: report it and keep the raw view
            logger.error("preprocessed view unavailable: %s", exc)
            with self._processed_lock:
                self._processed_error = exc
                self._processed_building = False
            return
        with self._processed_lock:
            self.processed = stream
            self.model.processed = stream.source
            self._processed_building = False
            stream.enable(self._processed_wanted)

    def pending(self) -> bool:
        """True while the preprocessed view is asked for but not ready yet."""
        return self._processed_wanted and self._processed_error is None and (
            self.processed is None or self.processed.buffer.total == 0)

    def data_arrived(self) -> int:
        """Samples received on the data stream."""
        return self.data.snapshot().n_samples

    def stop(self) -> None:
        """Stop every receiver and the preprocessing thread, all at once and within ``STOP_TIMEOUT`` seconds.

        A receiver whose stream was lost may be waiting to re-resolve it: stopping the receivers
        one after another could take their resolve timeouts added up (the viewer process of
        ``bci live`` must end soon after SIGTERM). Their threads are daemons.
        """
        if self.processed is not None:
            self.processed.stop()
        stoppers = [threading.Thread(target=r.stop, args=(STOP_TIMEOUT,), name=f"viewer-stop-{r.query}", daemon=True)
                    for r in (self.data, self.results, self.markers) if r is not None]
        for t in stoppers:
            t.start()
        end = time.monotonic() + STOP_TIMEOUT + 0.5
        for t in stoppers:
            t.join(max(0.0, end - time.monotonic()))

    def errors(self) -> list[BaseException]:
        """Errors that stopped a receiver (e.g. a reconnect to a different stream)."""
        return [r.error for r in (self.data, self.results, self.markers) if r is not None and r.error is not None]


def _modality(desc: StreamDescription) -> str:
    return "fmri" if desc.type.lower() == "fmri" else "eeg"


def _preprocess_label(config: Any) -> str:
    lo, hi = getattr(config, "l_freq", None), getattr(config, "h_freq", None)
    band = f"{lo:g}-{hi:g} Hz" if lo and hi else f">{lo:g} Hz" if lo else f"<{hi:g} Hz" if hi else "no band"
    return f"preprocessed ({band}, ref {getattr(config, 'reference', '?')})"
