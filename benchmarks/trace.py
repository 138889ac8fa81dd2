"""Per-stage trace of ``ours`` in ``benchmarks/latency.py`` (``--trace``).

Installed only in the consumer process and only when asked: nothing in ``bci`` or
``streams`` knows about it, so it costs nothing when off. When on, thin wrappers around
the real objects (instance attributes that shadow their methods, a forwarding wrapper
around the encoder) note ``local_clock()`` at each hand-over into preallocated numpy
arrays (chunks) and into the window records (windows): no logging, no allocation per
chunk beyond the arrays' slots. Each wrapper adds ~1 µs per call.

Stages of one window (each a difference of two ``local_clock()`` readings, the same clock
as the producer's push time):

* ``transport``: producer push of the window's last chunk → ``pull_chunk`` returns it
  on the acquisition thread (liblsl, the socket, the inlet's wake-up);
* ``accept``: → the chunk is in the receiver's ring buffer and its listeners run
  (finite check, ring push, counters);
* ``handover``: → the decode thread starts ``Pipeline.push_data`` with that chunk
  (``threading.Event`` wake-up, the GIL, reading the ring buffer);
* ``preprocess``: ``OnlinePreprocessor.process`` of the last chunk (filters, reference);
* ``window``: → the window is cut (pipeline ring push, marker location, window copy);
* ``encoder``: ``apply_window`` + ``Encoder.__call__`` (batch stack, scaler, forward);
* ``record``: → ``emitted_time`` (the record, result steps);
* ``sinks``: → the record reached the sink (``delivered``).

Also counted: pulls of the acquisition thread that returned nothing (timeouts), chunks
and drains of the decode thread (wake-ups), and chunks taken per drain.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from benchmarks.common import percentiles

#: Stage names, in order; each is ``t[stage] - t[previous stage]``.
STAGES = ("transport", "accept", "handover", "preprocess", "window", "encoder", "record", "sinks")


class _EncoderTimer:
    """Forwards to an :class:`~bci.runtime.inference.Encoder`, noting when each call starts and ends."""

    def __init__(self, encoder: Any, trace: StageTrace) -> None:
        self._encoder = encoder
        self._trace = trace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        cur = self._trace.current
        cur["encoder_start"] = self._trace.clock()
        out = self._encoder(batch)
        cur["encoder_end"] = self._trace.clock()
        return out


class StageTrace:
    """Timestamps of one ``ours`` run, per chunk and per window.

    Parameters
    ----------
    clock : callable
        ``local_clock`` (the producer's clock).
    capacity : int
        Chunks that can be recorded (later ones are counted, not stored).
    """

    def __init__(self, clock: Callable[[], float], capacity: int = 200_000) -> None:
        self.clock = clock
        self.chunk_total = np.zeros(capacity, np.int64)  # receiver buffer total after the chunk
        self.chunk_pulled = np.zeros(capacity)
        self.chunk_notified = np.zeros(capacity)
        self.n_chunks = 0
        self.n_empty_pulls = 0
        self.n_drains = 0
        self.n_drains_with_data = 0
        self.current: dict[str, float] = {}
        self._pulled = 0.0
        self._no_preprocess = False

    # ------------------------------------------------------------------ installing
    def install(self, runtime: Any) -> None:
        """Wrap the runtime's receiver, hand-over and (once built) pipeline; call before ``start()``."""
        receiver = runtime.data_receiver
        pull, on_data, drain, make = receiver._pull, runtime._on_data, runtime._drain, runtime._make_pipeline
        clock = self.clock

        def traced_pull(dest: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
            data, stamps = pull(dest)
            self._pulled = clock()
            if len(stamps) == 0:
                self.n_empty_pulls += 1
            return data, stamps

        def traced_on_data(data: np.ndarray, times: np.ndarray) -> None:
            i = self.n_chunks
            if i < len(self.chunk_total):
                self.chunk_total[i] = receiver.buffer.total
                self.chunk_pulled[i] = self._pulled
                self.chunk_notified[i] = clock()
            self.n_chunks = i + 1
            on_data(data, times)

        def traced_drain() -> None:
            self.n_drains += 1
            self.current = {"drain": clock()}
            drain()

        def traced_make(desc: Any) -> Any:
            pipeline = make(desc)
            self._wrap_pipeline(pipeline)
            return pipeline

        receiver._pull = traced_pull
        runtime._on_data = traced_on_data
        runtime._drain = traced_drain
        runtime._make_pipeline = traced_make

    def _wrap_pipeline(self, pipeline: Any) -> None:
        clock = self.clock
        push_data, poll = pipeline.push_data, pipeline.windower.poll
        process = pipeline.pre.process if pipeline.pre is not None else None

        def traced_push_data(data: np.ndarray, times: np.ndarray, arrival: float | None = None) -> list[dict]:
            self.n_drains_with_data += 1
            self.current["push_data"] = clock()
            return push_data(data, times, arrival)

        def traced_process(chunk: np.ndarray) -> np.ndarray:
            self.current["preprocess_start"] = clock()
            out = process(chunk)
            self.current["preprocess_end"] = clock()
            return out

        def traced_poll(buffer: Any) -> Any:
            out = poll(buffer)
            if out[0]:
                self.current["window_cut"] = clock()
            return out

        pipeline.push_data = traced_push_data
        if process is not None:
            pipeline.pre.process = traced_process
        else:  # no preprocessing: the stage is empty
            self._no_preprocess = True
        pipeline.windower.poll = traced_poll
        pipeline.encoder = _EncoderTimer(pipeline.encoder, self)

    def stamp(self, record: dict[str, Any]) -> dict[str, Any]:
        """The decode thread's timestamps of the drain that emitted ``record`` (called by the sink)."""
        return dict(self.current)

    # ------------------------------------------------------------------ analysis
    def chunk_of(self, end_index: int) -> int | None:
        """Row of the first chunk whose buffer total reaches ``end_index`` (the window's last sample)."""
        n = min(self.n_chunks, len(self.chunk_total))
        k = int(np.searchsorted(self.chunk_total[:n], end_index, side="left"))
        return k if k < n else None

    def window_times(self, record: dict[str, Any], n_times: int) -> dict[str, float] | None:
        """Stage end times of one window record (None when a stamp is missing)."""
        stamps = dict(record.get("trace") or {})
        if self._no_preprocess and "push_data" in stamps:
            stamps["preprocess_start"] = stamps["preprocess_end"] = stamps["push_data"]
        k = self.chunk_of(int(record["window_start_index"]) + n_times)
        need = ("push_data", "preprocess_start", "preprocess_end", "window_cut", "encoder_end")
        if k is None or any(s not in stamps for s in need):
            return None
        return {"pulled": float(self.chunk_pulled[k]), "notified": float(self.chunk_notified[k]),
                "push_data": stamps["push_data"], "preprocess": stamps["preprocess_end"],
                "preprocess_alone_ms": (stamps["preprocess_end"] - stamps["preprocess_start"]) * 1e3,
                "window": stamps["window_cut"], "encoder": stamps["encoder_end"],
                "encoder_alone_ms": (stamps["encoder_end"] - stamps["encoder_start"]) * 1e3,
                "drain_to_push_data_ms": (stamps["push_data"] - stamps["drain"]) * 1e3}

    def counts(self) -> dict[str, int]:
        """Wake-up counters of the run."""
        return {"chunks": self.n_chunks, "empty_pulls": self.n_empty_pulls, "drains": self.n_drains,
                "drains_with_data": self.n_drains_with_data}


def stage_table(rows: list[dict[str, float]], push_times: list[float]) -> dict[str, Any]:
    """p50/p99 per stage from per-window stage end times and the producer's push times.

    Parameters
    ----------
    rows : list of dict
        Per window: ``pulled``, ``notified``, ``push_data``, ``preprocess``, ``window``,
        ``encoder``, ``emitted``, ``delivered`` (local_clock seconds), plus the ``*_ms`` extras.
    push_times : list of float
        The producer's push time of each window's last chunk.

    Returns
    -------
    dict
        ``stages``: ``{stage: percentiles (ms)}``; ``extras``: the same for the ``*_ms`` values.
    """
    order = ("pulled", "notified", "push_data", "preprocess", "window", "encoder", "emitted", "delivered")
    per: dict[str, list[float]] = {s: [] for s in STAGES}
    for row, push in zip(rows, push_times):
        prev = push
        for stage, key in zip(STAGES, order):
            per[stage].append((row[key] - prev) * 1e3)
            prev = row[key]
    extras = sorted({k for r in rows for k in r if k.endswith("_ms")})
    return {"stages": {s: percentiles(v) for s, v in per.items()},
            "extras": {k: percentiles(r[k] for r in rows if k in r) for k in extras}}
