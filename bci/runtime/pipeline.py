"""The decoding pipeline: preprocess → window → encode → results, whatever the source.

One :class:`Pipeline` object serves live LSL (driven by :mod:`bci.runtime.live`), replay
over LSL, and replay at ``--speed max`` (driven straight from Zarr arrays by
:func:`bci.runtime.replay.decode_session`). It is fed time-stamped chunks of data and markers and
emits one record per decoded window (and one per marker that could not be served)
to its sinks. It does no I/O of its own and never blocks on a clock, so feeding a
recording chunk by chunk gives the same windows and embeddings as the live run.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from bci.runtime.inference import Encoder
from bci.runtime.sinks import Sink
from bci.preprocessing import OnlinePreprocessor, PreprocessConfig, plan_rate
from bci.preprocessing.channel_map import ChannelMap
from bci.runtime.steps import ResultStep, run_steps
from bci.runtime.windowing import DroppedMarker, EventWindower, SlidingWindower, Window, WindowSpec
from streams._checks import check_type
from streams.clock import parse_clock_jump
from streams.lsl import local_clock
from streams.ringbuffer import RingBuffer
from streams.synthetic.markers import parse_marker

logger = logging.getLogger(__name__)


@dataclass
class PipelineStats:
    """Counters and latencies of a pipeline run."""

    n_samples: int = 0
    n_markers: int = 0
    n_windows: int = 0
    n_gaps: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def latency_percentiles(self) -> dict[str, float]:
        """p50/p95/p99 of the window latency in ms (NaN when nothing was decoded)."""
        if not self.latencies_ms:
            return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
        arr = np.asarray(self.latencies_ms)
        return {f"p{q}": float(np.percentile(arr, q)) for q in (50, 95, 99)}

    def summary(self) -> str:
        """One paragraph for the end of a run."""
        lat = self.latency_percentiles()
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        return (
            f"windows decoded: {self.n_windows}; markers: {self.n_markers}; dropped markers: {drops}; "
            f"latency p50/p95/p99: {lat['p50']:.2f}/{lat['p95']:.2f}/{lat['p99']:.2f} ms"
        )


class Pipeline:
    """Preprocess a continuous stream, cut event-locked windows, encode them, emit results.

    Parameters
    ----------
    encoder : Encoder
        The model, already on its device.
    sfreq : float
        Rate of the incoming stream. Any rate the model can be served from: the model's rate or an
        integer multiple decimated by ``preprocess.resample_to`` (unchanged path), otherwise a
        :class:`~bci.preprocessing.RationalResampler` to the model's rate runs before the
        preprocessing (:func:`~bci.preprocessing.plan_rate`; a rate that cannot carry the model's
        band is a ValueError naming both rates and the model's low-pass).
    ch_names : list of str
        Channel names of the incoming stream.
    channel_map : ChannelMap, optional
        Maps the stream's channels to the model's, first thing in :meth:`push_data`
        (``stream_names`` must be ``ch_names``); the preprocessing and the model then see the
        model's channels. None (or an identity map): the stream's channels as they are.
    preprocess : PreprocessConfig or None
        Online preprocessing (None: windows of raw data).
    window : WindowSpec
        Window length and offset; ``n_times`` must match the model.
    marker_filter : str, optional
        Regex: only matching markers open windows.
    hop : float, optional
        Also cut sliding windows every ``hop`` seconds (marker-less decoding).
    sinks : iterable of Sink
        Where records go.
    buffer_seconds : float
        Seconds of preprocessed data kept for windowing (late markers can be served
        this long after their data).
    clock : callable
        Source of ``emitted_time`` (LSL ``local_clock`` by default).
    stream_name : str
        For error messages.
    steps : sequence of ResultStep
        Run on each decoded batch before its records are emitted (retrieval, image
        generation; see :mod:`bci.runtime.steps`). Their time counts in ``latency_ms``.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        sfreq: float,
        ch_names: list[str],
        preprocess: PreprocessConfig | None = None,
        window: WindowSpec | None = None,
        marker_filter: str | None = None,
        hop: float | None = None,
        sinks: Iterable[Sink] = (),
        buffer_seconds: float = 30.0,
        clock: Callable[[], float] = local_clock,
        stream_name: str = "",
        steps: Iterable[ResultStep] = (),
        channel_map: ChannelMap | None = None,
    ) -> None:
        self.encoder = encoder
        self.ch_names = list(ch_names)
        self.channel_map = channel_map
        names = self._mapped_names(channel_map)
        self._map = None if channel_map is None or channel_map.is_identity else channel_map.apply
        cfg = encoder.config
        # rate handling: the integer path as before, or a rational resampler to the model's rate
        # (after the channel map, so it runs on the model's channels)
        self.rate_plan = plan_rate(sfreq, getattr(cfg, "sfreq", None), preprocess, model_name=f"model {cfg.name!r}")
        self.resampler = self.rate_plan.resampler(len(names))
        pre_cfg, pre_sfreq = self.rate_plan.preprocess, self.rate_plan.preprocess_sfreq
        self.pre = OnlinePreprocessor(pre_cfg, pre_sfreq, names) if pre_cfg is not None else None
        self.out_sfreq = self.pre.out_sfreq if self.pre is not None else float(pre_sfreq)
        self._decim = int(round(pre_sfreq / self.out_sfreq))
        self.window = window or WindowSpec(n_times=cfg.n_times)
        if self.window.n_times != cfg.n_times:
            raise ValueError(
                f"window of {self.window.n_times} samples but model {cfg.name!r} expects n_times={cfg.n_times}; "
                "use the model's window length"
            )
        encoder.check_stream(len(names), self.out_sfreq, names, stream_name=stream_name)
        self.buffer = RingBuffer(max(int(buffer_seconds * self.out_sfreq), 4 * self.window.n_times),
                                 len(names), np.float32)
        self.windower = EventWindower(self.window, self.out_sfreq, marker_filter=marker_filter)
        self.sliding = None
        if hop is not None:
            hop_samples = int(round(hop * self.out_sfreq))
            if not hop > 0 or hop_samples < 1:
                raise ValueError(f"hop={hop!r} s is shorter than one sample at {self.out_sfreq:g} Hz")
            self.sliding = SlidingWindower(self.window.n_times, hop_samples)
        self.sinks = list(sinks)
        self.steps = list(steps)
        self.clock = clock
        self.stats = PipelineStats()
        # (buffer total after a chunk, its arrival time); as long as the buffer's chunks
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=max(1000, self.buffer.capacity))
        self._n_in = 0

    # ------------------------------------------------------------------ feeding
    def push_markers(self, values: Iterable[str], times: np.ndarray, arrival: float | None = None) -> list[dict]:
        """Queue markers (string values with their LSL times); returns records emitted now."""
        dropped = []
        for value, t in zip(values, np.asarray(times, dtype=np.float64)):
            self.stats.n_markers += 1
            d = self.windower.add_marker(str(value), float(t), arrival)
            if d is not None:
                dropped.append(d)
        return self._emit_dropped(dropped) + self._decode_ready()

    def push_data(self, data: np.ndarray, times: np.ndarray, arrival: float | None = None) -> list[dict]:
        """Feed ``(n, n_channels)`` samples with their times; returns records emitted now.

        ``arrival`` is when the last of these samples reached the process (for latency);
        None means "now".
        """
        data = np.asarray(data)
        times = np.asarray(times, dtype=np.float64)
        if len(times) == 0:
            return []
        self.stats.n_samples += len(times)
        if self._map is not None:
            data = self._map(data)
        if self.resampler is not None:
            data, times = self.resampler.process(data, times)
        self._push_model_rate(data, times, arrival)
        return self._decode_ready()

    def _push_model_rate(self, data: np.ndarray, times: np.ndarray, arrival: float | None) -> None:
        """Preprocess samples already at the model's channels and rate (or its integer multiple); buffer them."""
        if self.pre is not None:
            processed = self.pre.process(data.astype(np.float32, copy=False))
            kept = self._kept_times(times, len(processed))
        else:
            processed, kept = data.astype(np.float32, copy=False), times
        self._n_in += len(times)
        if len(kept):
            self.buffer.push(processed, kept)
            self._arrivals.append((self.buffer.total, self.clock() if arrival is None else arrival))

    def gap(self, start_time: float, end_time: float, reason: str = "") -> None:
        """The stream was interrupted: the next sample pushed is the first after the gap.

        Live (:class:`~bci.runtime.live.LiveRuntime`, from the receiver's gaps) and replay
        (:func:`~bci.runtime.replay.decode_session`, from the recorded gaps) both call it
        at the same sample, so both restart the preprocessor's filters there (and a resampler,
        after emitting the samples it still owed from before the gap), as at the start of a
        stream. Windows spanning the gap and markers inside it are dropped by
        the windower (reason ``gap``).

        Parameters
        ----------
        start_time, end_time : float
            Last sample before and first sample after the gap (seconds).
        reason : str
            Why (logged, and written to the sinks as a ``{"type": "gap", ...}`` record). A clock jump
            (:func:`streams.clock.parse_clock_jump`) also tells the windower: markers after it are
            dropped (reason ``clock_jump``), since the data after it is on another clock.
        """
        self.stats.n_gaps += 1
        logger.info("gap of %.3f s in the data (%s): filters restart", end_time - start_time, reason or "?")
        if self.resampler is not None and self.resampler.n_in:
            # the samples before the gap still owed by the resampler, then a fresh segment after it
            data, times = self.resampler.flush()
            if len(times):
                self._push_model_rate(data, times, None)
        if self.pre is not None:
            self.pre.reset()
        self.windower.note_gap(start_time, end_time, reason)
        if self.sliding is not None:
            self.sliding.restart_at(self.buffer.total)
        jump = parse_clock_jump(reason)
        if jump is not None:  # the samples after it are on another clock than the markers
            self.windower.clock_break(self.buffer.total, float(start_time), jump, reason)
        self._write({"type": "gap", "marker": None, "start_time": float(start_time), "end_time": float(end_time),
                     "reason": reason, "emitted_time": self.clock()})

    def markers_lost(self, n: int, after: float, before: float) -> list[dict]:
        """``n`` markers were overwritten in the marker ring buffer before they were read (values unknown).

        One ``dropped`` record (reason ``overwritten``, ``marker`` null, ``n_markers``: ``n``) says how
        many and between which marker times (``after``: the last marker read, ``before``: the next one).
        """
        self.stats.n_markers += n
        self.stats.dropped["overwritten"] = self.stats.dropped.get("overwritten", 0) + n
        detail = (f"{n} markers between {after:.3f} s and {before:.3f} s were overwritten in the marker ring buffer "
                  "before the decoder read them (a larger buffer_seconds holds more)")
        logger.error("%s", detail)
        record = {"type": "dropped", "marker": None, "marker_time": None, "reason": "overwritten", "detail": detail,
                  "n_markers": int(n), "emitted_time": self.clock()}
        self._write(record)
        return [record]

    def finish(self) -> list[dict]:
        """End of data: decode what is complete, report markers left waiting."""
        if self.resampler is not None and self.resampler.n_in:
            data, times = self.resampler.flush()  # the last input samples' outputs
            if len(times):
                self._push_model_rate(data, times, None)
        records = self._decode_ready()
        return records + self._emit_dropped(self.windower.flush())

    def close(self) -> None:
        """Close every step and sink; the first error a sink raises is raised once all are closed."""
        for step in self.steps:
            step.close()
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # e.g. an events file the disk refused: close the others first
                first = first or exc
        if first is not None:
            raise first

    # ------------------------------------------------------------------ internals
    def _mapped_names(self, channel_map: ChannelMap | None) -> list[str]:
        """The channel names after ``channel_map`` (the stream's own names without one)."""
        if channel_map is None:
            return self.ch_names
        check_type("channel_map", channel_map, ChannelMap, "a ChannelMap (bci.preprocessing.channel_map) or None")
        if list(channel_map.stream_names) != self.ch_names:
            raise ValueError(f"channel_map was built for stream channels {list(channel_map.stream_names[:3])}... "
                             f"({len(channel_map.stream_names)}) but the stream has {self.ch_names[:3]}... "
                             f"({len(self.ch_names)}); build the map from this stream's channel names")
        return list(channel_map.model_names)

    def _kept_times(self, times: np.ndarray, n_out: int) -> np.ndarray:
        """Timestamps of the samples a decimating preprocessor kept (the last of each group)."""
        if self._decim == 1:
            return times
        first_global = self._n_in
        idx = np.arange(first_global, first_global + len(times))
        kept = times[(idx + 1) % self._decim == 0]
        if len(kept) != n_out:
            raise RuntimeError(f"preprocessor returned {n_out} samples, expected {len(kept)}")
        return kept

    def _decode_ready(self) -> list[dict]:
        windows, dropped = self.windower.poll(self.buffer)
        if self.sliding is not None:
            windows += self.sliding.poll(self.buffer)
        windows, dropped = _split_non_finite(windows, dropped)
        records = self._emit_dropped(dropped)
        if windows:
            records += self._decode(windows)
        return records

    def _decode(self, windows: list[Window]) -> list[dict]:
        # one window (the live case): a view, not a stacked copy; the per-window steps then
        # run once on the whole batch (the same values as window by window, one copy fewer)
        batch = windows[0].data[None] if len(windows) == 1 else np.stack([w.data for w in windows])
        if self.pre is not None:
            batch = self.pre.apply_window(batch)
        out = self.encoder(batch)
        bad = _non_finite_outputs(out, len(windows))
        if bad.any():  # a model that overflows on finite input: reported, never emitted as numbers
            records = self._emit_dropped([_dropped_window(w, "non_finite", "the model's output is not finite "
                                                          "(NaN/inf embedding or scores) for this window")
                                          for w, b in zip(windows, bad) if b])
            keep = ~bad
            if not keep.any():
                return records
            windows = [w for w, k in zip(windows, keep) if k]
            out = {key: value[keep] for key, value in out.items()}
            batch = batch[keep]
            return records + self._decode_records(windows, batch, out)
        return self._decode_records(windows, batch, out)

    def _decode_records(self, windows: list[Window], batch: np.ndarray, out: dict[str, np.ndarray]) -> list[dict]:
        records = [self._window_record(w, out, i) for i, w in enumerate(windows)]
        if self.steps:
            run_steps(self.steps, batch, out, records)
        emitted = self.clock()
        for w, record in zip(windows, records):
            arrival = self._arrival_of(w.start_index + self.window.n_times)
            self._stamp(record, w, emitted, arrival)
            self.stats.n_windows += 1
            if arrival is not None:
                self.stats.latencies_ms.append(record["latency_ms"])
            self._write(record)
        return records

    @staticmethod
    def _stamp(record: dict[str, Any], w: Window, emitted: float, arrival: float | None) -> None:
        """Emission time and latencies, set last so they include every step."""
        record["emitted_time"] = emitted
        record["latency_ms"] = (emitted - arrival) * 1000.0 if arrival is not None else None
        record["marker_lateness_ms"] = (
            (w.marker_arrival - arrival) * 1000.0 if w.marker_arrival is not None and arrival is not None else None
        )

    def _window_record(self, w: Window, out: dict[str, np.ndarray], i: int) -> dict[str, Any]:
        image_id, label = parse_marker(w.marker) if w.marker is not None else (None, None)
        embedding = out["embedding"][i]
        record: dict[str, Any] = {
            "type": "window",
            "window_kind": "event" if w.marker is not None else "sliding",
            "window_index": w.window_index,
            "marker": w.marker,
            "marker_time": w.marker_time,
            "image_id": image_id,
            "true_label": label,
            "window_start_time": w.start_time,
            "window_end_time": w.end_time,
            "window_start_index": w.start_index,
            "emitted_time": None,
            "latency_ms": None,
            "marker_lateness_ms": None,
            "embedding_dim": int(embedding.shape[-1]),
            "embedding": embedding.tolist(),
        }
        if "scores" in out:
            record["class_scores"] = self._top_classes(out["scores"][i])
        return record

    def _top_classes(self, scores: np.ndarray, k: int = 5) -> list[dict[str, Any]]:
        labels = self.encoder.config.labels
        order = np.argsort(-scores)[:k]
        return [
            {"id": int(j), "label": labels[j] if labels and j < len(labels) else str(j), "score": float(scores[j])}
            for j in order
        ]

    def _arrival_of(self, end_index: int) -> float | None:
        """When the sample with absolute index ``end_index - 1`` arrived.

        Searched from the newest chunk backwards: a window completes near the head of
        the stream, so this stays a few steps however long the session runs.
        """
        found = None
        for total, t in reversed(self._arrivals):
            if total < end_index:
                break
            found = t
        return found

    def _emit_dropped(self, dropped: list[DroppedMarker]) -> list[dict]:
        records = []
        for d in dropped:
            self.stats.dropped[d.reason] = self.stats.dropped.get(d.reason, 0) + 1
            logger.warning("marker %r at %.3f produced no window: %s (%s)", d.marker, d.marker_time, d.reason, d.detail)
            record = {"type": "dropped", "marker": d.marker, "marker_time": d.marker_time,
                      "reason": d.reason, "detail": d.detail, "emitted_time": self.clock()}
            self._write(record)
            records.append(record)
        return records

    def _write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)


def _dropped_window(w: Window, reason: str, detail: str) -> DroppedMarker:
    """The dropped record of a cut window (a sliding one has no marker: its start time stands in)."""
    return DroppedMarker(w.marker, w.marker_time if w.marker_time is not None else w.start_time, reason, detail)


def _split_non_finite(windows: list[Window], dropped: list[DroppedMarker]) -> tuple[list[Window], list[DroppedMarker]]:
    """Windows holding NaN/inf samples become ``non_finite`` dropped records (the model never sees them)."""
    if all(np.isfinite(w.data).all() for w in windows):
        return windows, dropped
    kept = []
    for w in windows:
        bad = ~np.isfinite(w.data).all(axis=0)
        if bad.any():
            dropped.append(_dropped_window(
                w, "non_finite", f"{int(bad.sum())} non-finite samples (NaN/inf) in the window "
                f"[{w.start_time:.3f}, {w.end_time:.3f}] s"))
        else:
            kept.append(w)
    return kept, dropped


def _non_finite_outputs(out: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Per window of a batch of ``n``: whether any of the model's numeric per-window outputs is NaN/inf."""
    bad = np.zeros(n, dtype=bool)
    for value in out.values():
        value = np.asarray(value)
        if value.ndim and len(value) == n and value.dtype.kind in "fc":
            bad |= ~np.isfinite(value.reshape(n, -1)).all(axis=1)
    return bad
