"""Window latency: from the push of a window's last sample to the window (or result) in hand.

128 channels at 1 kHz in 10-sample chunks with one marker per second, produced by
``benchmarks/producer.py`` in its own process over real LSL outlets. Consumers, each in a
fresh process against a fresh producer, one after another (never concurrently: on 2 cores
a second consumer would distort the first):

* ``floor-block``: bare pylsl, ``pull_chunk(timeout=0.2, min_samples=1)`` (wakes when a
  chunk arrives) into a numpy ring; a window of 440 samples starting at marker + 20 ms is
  copied out as soon as it is complete.
* ``floor-poll``: the same with ``pull_chunk(timeout=0)`` and ``time.sleep(0.001)``
  between polls (the usual 1-ms polling loop).
* ``floor-spin``: the same, busy-polling (no sleep).
* ``ours``: :class:`bci.runtime.live.LiveRuntime` + :class:`bci.runtime.pipeline.Pipeline` with an
  untrained default ``eeg_convnet`` checkpoint, the default ``PreprocessConfig`` (0.5-40 Hz
  + 50 Hz notch + average reference), CPU, results to a ``ListSink``. "In hand" is the
  record's ``emitted_time`` (after preprocessing, windowing and the encoder); also
  reported: when the record reached the sink ("delivered").
* ``mne-lsl``: ``StreamLSL`` (data, ``bufsize`` 2 s) + ``StreamLSL`` (numeric event stream)
  + ``EpochsStream`` (tmin 0.020, tmax 0.4595 → 440 samples, no baseline), all with the
  default 1-ms acquisition delay and ``processing_flags='all'``. "In hand" is when the
  epoch lands in the ``EpochsStream`` buffer (taken inside its acquisition thread, right
  after the buffer update, before its 1-ms sleep): the earliest a user could read it.

Latency of a window = ``local_clock()`` when it is in hand − the producer's
``local_clock()`` when it pushed the chunk holding the window's last sample (same machine,
same clock). Also reported: the same against the window's last-sample *timestamp*
(differs by the producer's push lateness), and for ``ours`` the pipeline's own
``latency_ms`` (emitted − arrival of the chunk in the process). CPU is the consumer
process's CPU time (all threads, psutil) over the measured part, in % of one core.

Example::

    python -m benchmarks.latency --duration 30
    python -m benchmarks.latency --consumers floor-block,ours --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import REPO_ROOT, CpuMonitor, format_table, percentiles
from benchmarks.producer import CHUNKS, CODE_CYCLE, seq_of_marker
from benchmarks.trace import STAGES, StageTrace, stage_table
from streams._checks import check_int, check_value

CONSUMERS = ("floor-block", "floor-poll", "floor-spin", "ours", "mne-lsl")
OFFSET = 0.020
N_TIMES = 440
#: Filled by :func:`consume_ours`: the encoder alone, timed after the run, for context.
_OURS_EXTRA: dict[str, Any] = {}
#: mne-lsl: n = ceil((tmax - tmin) * sfreq) samples (tmax exclusive); 0.459 would give 439.
MNE_TMAX = 0.4595


# ====================================================================== consumers
class _Ring:
    """Minimal time-major numpy ring with absolute sample indices (the floor's buffer)."""

    def __init__(self, capacity: int, n_channels: int) -> None:
        self.data = np.empty((capacity, n_channels), np.float32)
        self.times = np.zeros(capacity)
        self.capacity = capacity
        self.total = 0

    def push(self, data: np.ndarray, times: np.ndarray) -> None:
        n = len(times)
        pos = (self.total + np.arange(n)) % self.capacity
        self.data[pos] = data
        self.times[pos] = times
        self.total += n

    def index_at(self, t: float) -> int | None:
        """Absolute index of the first held sample with time >= t (None: not arrived)."""
        oldest = max(0, self.total - self.capacity)
        idx = np.arange(oldest, self.total)
        k = int(np.searchsorted(self.times[idx % self.capacity], t))
        return oldest + k if k < len(idx) else None

    def copy(self, start: int, n: int) -> np.ndarray:
        return self.data[(start + np.arange(n)) % self.capacity]


def _resolve_pylsl(name: str, timeout: float = 30.0) -> Any:
    import pylsl

    found = pylsl.resolve_byprop("name", name, 1, timeout)
    if not found:
        raise RuntimeError(f"stream {name!r} not found after {timeout} s; is the producer running?")
    return found[0]


def consume_floor(name: str, n_markers: int, deadline: float, mode: str) -> list[dict]:
    """Bare pylsl consumer; ``mode`` is ``block``, ``poll`` (1 ms) or ``spin``."""
    import pylsl

    clock = pylsl.local_clock
    data_in = pylsl.StreamInlet(_resolve_pylsl(name), max_buflen=360, processing_flags=pylsl.proc_clocksync)
    mark_in = pylsl.StreamInlet(_resolve_pylsl(f"{name}-Markers"), processing_flags=pylsl.proc_clocksync)
    data_in.open_stream(10)
    mark_in.open_stream(10)
    n_ch = data_in.info().channel_count()
    half = 0.5 / data_in.info().nominal_srate()
    ring, dest = _Ring(8192, n_ch), np.empty((1024, n_ch), np.float32)
    pending: list[list] = []  # [seq, start time, start index or None]
    rows: list[dict] = []
    last_seq = n_markers - 1
    while clock() < deadline and not (rows and rows[-1]["seq"] >= last_seq):
        if mode == "block":
            _, ts = data_in.pull_chunk(timeout=0.2, max_samples=1024, dest_obj=dest, min_samples=1, as_numpy=True)
        else:
            _, ts = data_in.pull_chunk(timeout=0.0, max_samples=1024, dest_obj=dest, as_numpy=True)
        if len(ts):
            ring.push(dest[: len(ts)], ts)
            values, mts = mark_in.pull_chunk(timeout=0.0)
            pending += [[seq_of_marker(v[0]), t + OFFSET - half, None] for v, t in zip(values, mts)]
            pending = _serve_floor(ring, pending, rows, clock)
        if mode == "poll":
            time.sleep(0.001)
    return rows


def _serve_floor(ring: _Ring, pending: list[list], rows: list[dict], clock: Callable[[], float]) -> list[list]:
    still = []
    for p in pending:
        if p[2] is None:
            p[2] = ring.index_at(p[1])
        if p[2] is not None and ring.total >= p[2] + N_TIMES:
            window = ring.copy(p[2], N_TIMES)
            rows.append({"seq": p[0], "t_in_hand": clock(), "window_end_time": float(ring.times[(p[2] + N_TIMES - 1)
                                                                                              % ring.capacity]),
                         "checksum": float(window[0, 0])})
        else:
            still.append(p)
    return still


def consume_ours(name: str, n_markers: int, deadline: float, checkpoint: Path, trace: bool = False) -> list[dict]:
    """LiveRuntime + Pipeline, default model and preprocessing, CPU, ListSink (``trace``: per-stage times)."""
    from bci.runtime.assemble import load_encoder, pipeline_factory
    from bci.runtime.inference import measure_latency
    from bci.runtime.sinks import ListSink
    from bci.runtime.live import LiveRuntime
    from streams.lsl import local_clock

    tracer = StageTrace(local_clock) if trace else None

    class StampingSink(ListSink):
        """A ListSink that also notes when each record reached it (and, tracing, the drain's stamps)."""

        def write(self, record: dict[str, Any]) -> None:
            t = local_clock()
            extra = {"trace": tracer.stamp(record)} if tracer is not None else {}
            super().write({**record, "delivered_time": t, **extra})

    encoder = load_encoder(checkpoint, device="cpu")
    sink = StampingSink()
    runtime = LiveRuntime(f"name={name}", f"name={name}-Markers", pipeline_factory(encoder, [sink]),
                          resolve_timeout=30.0)
    if tracer is not None:
        tracer.install(runtime)
    runtime.start()
    last = f"stim/img{n_markers - 1:04d}/"
    try:
        while local_clock() < deadline and runtime.error is None:
            if any(str(r.get("marker", "")).startswith(last) for r in sink.records[-3:]):
                break
            time.sleep(0.1)
    finally:
        runtime.stop()
    if runtime.error is not None:
        raise runtime.error
    _OURS_EXTRA["encoder_alone_ms"] = measure_latency(encoder, n_calls=300)
    _OURS_EXTRA["pipeline_stats"] = runtime.pipeline.stats.summary()
    if tracer is not None:
        _OURS_EXTRA["trace_counts"] = tracer.counts()
    rows = []
    for r in sink.records:
        if r["type"] != "window":
            continue
        row = {"seq": seq_of_marker(r["marker"]), "t_in_hand": r["emitted_time"],
               "window_end_time": r["window_end_time"], "pipeline_latency_ms": r["latency_ms"], "marker_lateness_ms": r["marker_lateness_ms"],
               "t_delivered": r["delivered_time"]}
        if tracer is not None:
            row["stages"] = tracer.window_times(r, N_TIMES)
        rows.append(row)
    return rows + [{"seq": None, "dropped": r["reason"]} for r in sink.records if r["type"] == "dropped"]


def consume_mne_lsl(name: str, n_markers: int, deadline: float) -> list[dict]:
    """mne-lsl StreamLSL + EpochsStream on the numeric event stream."""
    from mne_lsl.lsl import local_clock
    from mne_lsl.stream import EpochsStream, StreamLSL

    stream = StreamLSL(bufsize=2.0, name=name).connect(acquisition_delay=0.001, processing_flags="all", timeout=30)
    events = StreamLSL(bufsize=100, name=f"{name}-Codes").connect(acquisition_delay=0.001,
                                                                    processing_flags="all", timeout=30)
    event_id = {str(c): c for c in range(1, CODE_CYCLE + 1)}
    epochs = EpochsStream(stream, bufsize=20, event_id=event_id, event_channels="code", event_stream=events,
                          tmin=OFFSET, tmax=MNE_TMAX, baseline=None)
    rows: list[dict] = []
    _hook_epochs(epochs, rows, local_clock)
    epochs.connect(acquisition_delay=0.001)
    try:
        while local_clock() < deadline and not (rows and rows[-1]["seq"] >= n_markers - 1):
            time.sleep(0.1)
    finally:
        epochs.disconnect()
        events.disconnect()
        stream.disconnect()
    if rows and epochs.times.size != N_TIMES:
        raise RuntimeError(f"mne-lsl epochs have {epochs.times.size} samples, expected {N_TIMES}")
    return rows


def _hook_epochs(epochs: Any, rows: list[dict], clock: Callable[[], float]) -> None:
    """Record when new epochs land: wrap the call that ends each acquisition pass.

    ``EpochsStream._acquire`` updates its buffer and then calls
    ``self._submit_acquisition_job()`` (which sleeps 1 ms and resubmits); an instance
    attribute shadows that method, so the time is taken right after the update.
    """
    original = epochs._submit_acquisition_job
    seen = [0]

    def hooked() -> None:
        n = epochs._n_new_epochs
        if n > seen[0]:
            t = clock()
            codes = epochs._buffer_events[-(n - seen[0]):].tolist()
            rows.extend({"seq": int(c) - 1, "t_in_hand": t} for c in codes)
            seen[0] = n
        original()

    epochs._submit_acquisition_job = hooked


def run_consumer(args: argparse.Namespace) -> dict:
    """Child-process entry: run one consumer, return its rows and CPU use."""
    from streams.lsl import local_clock

    kind = check_value("--run-consumer", args.run_consumer, CONSUMERS)
    deadline = local_clock() + args.timeout
    monitor = CpuMonitor(local_clock).start()
    if kind.startswith("floor-"):
        rows = consume_floor(args.name, args.n_markers, deadline, kind.split("-", 1)[1])
    elif kind == "ours":
        rows = consume_ours(args.name, args.n_markers, deadline, args.checkpoint, trace=args.trace)
    else:  # mne-lsl
        rows = consume_mne_lsl(args.name, args.n_markers, deadline)
    monitor.stop()
    measured = [r["t_in_hand"] for r in rows if r.get("seq") is not None and r["seq"] >= args.warmup_markers]
    cpu = monitor.percent_between(min(measured), max(measured)) if len(measured) > 1 else float("nan")
    return {"kind": kind, "rows": rows, "cpu_percent": cpu, "cpu_samples": monitor.samples, "extra": _OURS_EXTRA}


# ====================================================================== orchestration
#: Optional module each consumer needs (checked before its producer starts).
NEEDS = {"mne-lsl": "mne_lsl"}


def run_one(kind: str, args: argparse.Namespace, workdir: Path, checkpoint: Path) -> dict:
    """Fresh producer + one consumer process; returns the analysed result.

    Raises
    ------
    MissingDependency
        The consumer needs a module that is not installed (:func:`benchmarks.common.run_optional` skips it).
    """
    if kind in NEEDS:
        common.require(NEEDS[kind])
    name = f"bench{os.getpid()}-{kind}"
    prod_log, cons_out = workdir / f"producer-{kind}.json", workdir / f"consumer-{kind}.json"
    n_markers = args.warmup + args.duration
    load_before = common.load_avg()
    producer_args = ["--name", name, "--duration", str(n_markers), "--log", str(prod_log),
                     "--channels", str(args.channels), "--chunk", str(args.chunk), "--chunks", args.chunks,
                     "--seed", str(args.seed)]
    with common.producer_process(producer_args, f"producer for {kind}", stop_timeout=10) as producer:
        consumer = subprocess.run(
            [sys.executable, "-m", "benchmarks.latency", "--run-consumer", kind, "--name", name,
             "--n-markers", str(int(n_markers)), "--warmup-markers", str(int(args.warmup)), "--result", str(cons_out),
             "--checkpoint", str(checkpoint), "--timeout", str(n_markers + 60), *(["--trace"] if args.trace else [])],
            cwd=REPO_ROOT, timeout=n_markers + 120)
        if consumer.returncode != 0:
            raise RuntimeError(f"consumer {kind} failed with exit code {consumer.returncode}")
        producer.wait(timeout=60)
    result = analyse(kind, json.loads(prod_log.read_text()), json.loads(cons_out.read_text()), args.warmup)
    result["load_avg_1min"] = {"before": load_before, "after": common.load_avg()}
    return result


def analyse(kind: str, producer: dict, consumer: dict, warmup: int) -> dict:
    """Join consumer rows with the producer's log by marker number; latency stats."""
    truth = {m["seq"]: m for m in producer["markers"]}
    rows = [r for r in consumer["rows"] if r.get("seq") is not None and r["seq"] >= warmup]
    vs_push = [(r["t_in_hand"] - truth[r["seq"]]["window_end_push_time"]) * 1e3 for r in rows]
    vs_stamp = [(r["t_in_hand"] - truth[r["seq"]]["window_end_time"]) * 1e3 for r in rows]
    expected = [s for s in truth if s >= warmup]
    got = {r["seq"] for r in rows}
    out = {
        "kind": kind,
        "latency_ms": percentiles(vs_push),
        "latency_vs_timestamp_ms": percentiles(vs_stamp),
        "cpu_percent": float("nan") if consumer["cpu_percent"] is None else consumer["cpu_percent"],
        "windows": len(rows),
        "missing": len([s for s in expected if s not in got]),
        "dropped": [r["dropped"] for r in consumer["rows"] if r.get("dropped")],
        "producer_push_lateness_ms": producer["push_lateness_ms"],
        "latencies_ms": [round(v, 4) for v in vs_push],
    }
    if kind == "ours":
        out["pipeline_latency_ms"] = percentiles(r["pipeline_latency_ms"] for r in rows)
        out["delivered_latency_ms"] = percentiles((r["t_delivered"] - truth[r["seq"]]["window_end_push_time"]) * 1e3
                                                  for r in rows)
        out["emitted_minus_window_end_ms"] = percentiles((r["t_in_hand"] - r["window_end_time"]) * 1e3 for r in rows)
        out.update(consumer.get("extra", {}))
        traced = [(r, truth[r["seq"]]["window_end_push_time"]) for r in rows if r.get("stages")]
        if traced:
            stage_rows = [{**r["stages"], "emitted": r["t_in_hand"], "delivered": r["t_delivered"]} for r, _ in traced]
            out["trace"] = {**stage_table(stage_rows, [p for _, p in traced]), "windows_traced": len(traced),
                            "counts": consumer.get("extra", {}).get("trace_counts", {})}
    return out


def comparisons(results: dict[str, dict]) -> dict[str, float]:
    """ours − floor and ours / mne-lsl, on p50 and p99, within this run."""
    out: dict[str, float] = {}
    ours = results.get("ours")
    if ours is None:
        return out
    for other in ("floor-block", "floor-poll", "floor-spin", "mne-lsl"):
        if other in results:
            for q in ("p50", "p99"):
                a, b = ours["latency_ms"][q], results[other]["latency_ms"][q]
                out[f"ours_minus_{other}_{q}_ms"] = a - b
                out[f"ours_over_{other}_{q}"] = a / b if b else float("nan")
    return out


def print_report(results: dict[str, dict], comp: dict[str, float]) -> None:
    rows = [
        [k, r["windows"], r["latency_ms"]["p50"], r["latency_ms"]["p95"], r["latency_ms"]["p99"],
         r["latency_ms"]["max"], r["cpu_percent"], r["missing"],
         "{before:.2f}/{after:.2f}".format(**r["load_avg_1min"])]
        for k, r in results.items()
    ]
    print(format_table(["consumer", "windows", "p50 ms", "p95 ms", "p99 ms", "max ms", "CPU %", "missing",
                        "load before/after"], rows))
    ours = results.get("ours")
    if ours:
        pl = ours["pipeline_latency_ms"]
        enc = ours.get("encoder_alone_ms", {})
        dl = ours["delivered_latency_ms"]
        print(f"\nours, pipeline latency_ms (emitted - chunk arrival): p50 {pl['p50']:.2f} p95 {pl['p95']:.2f} "
              f"p99 {pl['p99']:.2f}; encoder alone (300 calls after the run): p50 {enc.get('p50', float('nan')):.2f} "
              f"p99 {enc.get('p99', float('nan')):.2f}")
        print(f"ours, record delivered to the sink - push: p50 {dl['p50']:.2f} p95 {dl['p95']:.2f} p99 {dl['p99']:.2f}")
        if "trace" in ours:
            print_trace(ours["trace"])
    for key, value in comp.items():
        print(f"{key}: {value:.2f}")


def print_trace(trace: dict[str, Any]) -> None:
    """The per-stage table of ``--trace`` (ms, per window)."""
    stages, extras = trace["stages"], trace["extras"]
    rows = [[s, stages[s]["p50"], stages[s]["p99"], stages[s]["mean"]] for s in STAGES]
    rows += [[k, v["p50"], v["p99"], v["mean"]] for k, v in extras.items()]
    print(f"\nours, per stage ({trace['windows_traced']} windows; each from the end of the previous stage):")
    print(format_table(["stage", "p50 ms", "p99 ms", "mean ms"], rows))
    if trace.get("counts"):
        print("wake-ups: " + ", ".join(f"{k} {v}" for k, v in trace["counts"].items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.make_parser(__doc__, "python -m benchmarks.latency --duration 30")
    p.add_argument("--consumers", default=",".join(CONSUMERS), help=f"comma-separated, from {', '.join(CONSUMERS)}")
    p.add_argument("--duration", type=int, default=60, help="measured seconds (= markers) per consumer [60]")
    p.add_argument("--warmup", type=int, default=3, help="markers discarded at the start [3]")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--chunk", type=int, default=10, help="samples per chunk with --chunks fixed [10]")
    p.add_argument("--chunks", choices=CHUNKS, default="fixed",
                   help="fixed: --chunk samples per chunk; random: 1-97 samples, seeded by --seed [fixed]")
    p.add_argument("--trace", action="store_true",
                   help="ours: time each stage of every window (push -> pull -> hand-over -> preprocess -> "
                        "window -> encoder -> record -> sink); off by default")
    common.add_seed(p)
    p.add_argument("--pause", type=float, default=2.0, help="seconds between consumers [2]")
    common.add_out(p, "latency")
    # child-process mode
    p.add_argument("--run-consumer", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n-markers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--warmup-markers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_consumer is None:
        kinds = [k.strip() for k in args.consumers.split(",") if k.strip()]
        if not kinds:
            p.error(f"--consumers {args.consumers!r}: name at least one of {', '.join(CONSUMERS)}")
        for kind in kinds:
            common.checked(p, check_value, "--consumers", kind, CONSUMERS)
        # event codes cycle through 1..CODE_CYCLE: one marker per second, each with its own code
        common.checked(p, check_int, "--duration + --warmup", args.duration + args.warmup, low=1, high=CODE_CYCLE - 1)
        args.kinds = kinds
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_consumer is not None:
        common.write_json(args.result, run_consumer(args))
        return 0
    machine = common.machine_info()
    results: dict[str, dict] = {}
    with common.scratch_dir() as workdir:
        checkpoint = common.make_default_checkpoint(workdir / "eeg_convnet")
        for i, kind in enumerate(args.kinds):
            if i:
                time.sleep(args.pause)
            print(f"[{kind}] {args.duration} s ...", flush=True)
            result = common.run_optional(f"consumer {kind}", run_one, kind, args, workdir, checkpoint)
            if result is None:
                continue
            results[kind] = result
            r = results[kind]["latency_ms"]
            print(f"[{kind}] p50 {r['p50']:.2f} p99 {r['p99']:.2f} ms, CPU {results[kind]['cpu_percent']:.1f} %",
                  flush=True)
    comp = comparisons(results)
    print()
    print_report(results, comp)
    sections = {"config": {"channels": args.channels, "rate": 1000.0, "chunk": args.chunk, "chunks": args.chunks,
                           "trace": args.trace, "markers_per_s": 1.0,
                           "duration_s": args.duration, "warmup_markers": args.warmup, "offset_s": OFFSET,
                           "n_times": N_TIMES, "mne_lsl_tmax": MNE_TMAX, "order": args.kinds},
                "results": results, "comparisons": comp}
    print(f"\nwrote {common.write_report(args.out, machine, sections, benchmark='latency')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
