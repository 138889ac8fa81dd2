"""No drift: latency in the last minutes of a long accelerated replay vs the first minutes.

A simulated session (default 10 min; the issue's full test is 60 min) is played over LSL by
:class:`streams.replay.SessionReplayer` at ``--speed`` (default 10) in a separate process
(``benchmarks/producer.py --replay``), and decoded live in this process by
:class:`bci.runtime.live.LiveRuntime` with the default model and preprocessing, as
``bci replay --decode --speed N`` does (dejitter off at speed != 1), but with the
replayer in its own process. Every window's latency (``emitted_time - window_end_time``; the same up to
the moment the record reached the sink, "delivered"; and the pipeline's own
``latency_ms``) is assigned to the session minute of its marker; the
percentiles of the first ``--compare-minutes`` are compared with those of the last.
Also reported: latency per session minute, the consumer's CPU and memory (RSS) at
the start and end, dropped markers and acquisition gaps.

At speed 10 the replayed timestamps advance 10x faster (``t_replay = offset + t / 10``),
so 1 ms of latency is 10 ms of session time; latencies are reported in real (wall)
milliseconds.

Examples::

    python -m benchmarks.drift --minutes 10 --speed 10             # ~1 min of replay
    python -m benchmarks.drift --minutes 60 --speed 10 --compare-minutes 10   # the full test, ~6 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import CpuMonitor, format_table, percentiles
from streams._checks import check_float

N_TIMES = 440
_FIELDS = ("marker", "marker_time", "window_start_time", "window_end_time", "emitted_time", "latency_ms",
           "window_start_index")


class TimingSink:
    """Keeps only the timing fields of each record (a long run must not grow by embeddings),
    plus ``local_clock()`` when the record reached the sink ("delivered")."""

    def __init__(self) -> None:
        from streams.lsl import local_clock

        self._clock = local_clock
        self.windows: list[tuple] = []
        self.dropped: list[str] = []
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        delivered = self._clock()
        with self._lock:
            if record["type"] == "window":
                self.windows.append(tuple(record[k] for k in _FIELDS) + (delivered,))
            else:
                self.dropped.append(str(record.get("reason")))

    def close(self) -> None:
        pass


def stream_names(session: Path, suffix: str) -> tuple[str, str, float]:
    """Names of the replayed EEG and marker streams, and the EEG's first timestamp."""
    from streams.session import SessionReader

    reader = SessionReader(session)
    data, marker = common.session_keys(reader)
    if marker is None:
        raise ValueError(f"session {str(session)!r} has no marker stream to open windows")
    t0 = float(reader.times(data)[0])
    return reader.description(data).name + suffix, reader.description(marker).name + suffix, t0


def decode_replay(session: Path, checkpoint: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start the replay process, decode it live until it ends; returns raw results."""
    from bci.runtime.assemble import load_encoder, pipeline_factory
    from bci.runtime.live import LiveRuntime
    from streams.lsl import local_clock

    suffix = f"-drift{os.getpid()}"
    data_name, marker_name, data_t0 = stream_names(session, suffix)
    log = workdir / "producer.json"
    producer_args = ["--replay", str(session), "--speed", str(args.speed), f"--suffix={suffix}", "--log", str(log)]
    with common.producer_process(producer_args, "replay process", stop_timeout=30) as producer:
        sink = TimingSink()
        encoder = load_encoder(checkpoint, device="cpu")
        runtime = LiveRuntime(f"name={data_name}", f"name={marker_name}",
                              pipeline_factory(encoder, [sink], marker_filter=args.marker_filter),
                              resolve_timeout=30.0, dejitter=args.speed == 1.0)  # as `bci replay --decode`
        rss0 = common.rss_mb()
        monitor = CpuMonitor(local_clock, period=1.0).start()
        runtime.start()
        while producer.poll() is None and runtime.error is None:
            time.sleep(0.5)
        time.sleep(1.0)
        runtime.stop()
        monitor.stop()
        rss1 = common.rss_mb()
        if runtime.error is not None:
            raise runtime.error
    snap = runtime.data_receiver.snapshot()
    return {"sink": sink, "producer": json.loads(log.read_text()), "monitor": monitor,
            "rss_start_mb": rss0, "rss_end_mb": rss1,
            "gaps": [g.to_dict() for g in snap.gaps], "samples_received": snap.n_samples,
            "rate": runtime.data_receiver.desc.nominal_rate, "data_t0": data_t0,
            "pipeline_summary": runtime.pipeline.stats.summary(),
            # diagnostic: entries in the pipeline's chunk-arrival log (searched for every window)
            "pipeline_arrival_entries": len(getattr(runtime.pipeline, "_arrivals", ())),
            "load_avg_1min": common.load_avg()}


def analyse(raw: dict[str, Any], minutes: float, compare: float) -> dict[str, Any]:
    """Latency of the first vs the last ``compare`` session minutes, and per minute."""
    prod = raw["producer"]
    w = np.array([row[1:] for row in raw["sink"].windows], dtype=np.float64)  # drop the marker string
    marker_t, start_t, end_t, emitted, pipe_ms, start_i, delivered = w.T if len(w) else (np.empty(0),) * 7
    session_t = (marker_t - prod["offset"]) * prod["speed"]
    lat = (emitted - end_t) * 1e3
    lat_delivered = (delivered - end_t) * 1e3
    # where the replay really put the window's last sample (sample i of the session has time i / rate)
    true_end = prod["offset"] + (raw["data_t0"] + (start_i + N_TIMES - 1) / raw["rate"]) / prod["speed"]
    lat_true = (emitted - true_end) * 1e3
    first = session_t < compare * 60.0
    last = session_t >= (minutes - compare) * 60.0
    per_minute = []
    for m in range(int(np.ceil(minutes))):
        sel = (session_t >= 60.0 * m) & (session_t < 60.0 * (m + 1))
        per_minute.append({"minute": m, **percentiles(lat[sel]),
                           "delivered_p50": percentiles(lat_delivered[sel])["p50"]})
    mon = raw["monitor"]
    return {
        "windows": int(len(w)), "dropped": raw["sink"].dropped,
        "first": {"latency_ms": percentiles(lat[first]), "pipeline_latency_ms": percentiles(pipe_ms[first]),
                  "latency_vs_true_time_ms": percentiles(lat_true[first]),
                  "delivered_latency_ms": percentiles(lat_delivered[first])},
        "last": {"latency_ms": percentiles(lat[last]), "pipeline_latency_ms": percentiles(pipe_ms[last]),
                 "latency_vs_true_time_ms": percentiles(lat_true[last]),
                 "delivered_latency_ms": percentiles(lat_delivered[last])},
        "timestamp_error_ms": percentiles((end_t - true_end) * 1e3),
        "per_minute": per_minute,
        "cpu_percent": mon.percent_between(mon.samples[0][0], mon.samples[-1][0]),
        "rss_start_mb": raw["rss_start_mb"], "rss_end_mb": raw["rss_end_mb"],
        "gaps": raw["gaps"], "samples_received": raw["samples_received"],
        "window_offset_session_s": float(np.median(start_t - marker_t) * prod["speed"]) if len(w) else None,
        "window_span_session_s": float(np.median(end_t - start_t) * prod["speed"]) if len(w) else None,
        "replay_wall_s": prod["wall_s"], "pipeline_summary": raw["pipeline_summary"],
        "pipeline_arrival_entries": raw["pipeline_arrival_entries"], "load_avg_1min_end": raw["load_avg_1min"],
    }


def print_report(res: dict[str, Any], compare: float) -> None:
    rows = []
    for part in ("first", "last"):
        a, b, c = res[part]["latency_ms"], res[part]["pipeline_latency_ms"], res[part]["delivered_latency_ms"]
        rows.append([f"{part} {compare:g} min", a["n"], a["p50"], a["p95"], a["p99"], a["max"], b["p50"], b["p99"],
                     c["p50"], c["p99"]])
    print(format_table(["session part", "windows", "p50 ms", "p95 ms", "p99 ms", "max ms",
                        "latency_ms p50", "latency_ms p99", "delivered p50", "delivered p99"], rows))
    print("\nper session minute, p50 / p99 of (emitted - window end) and p50 of (delivered - window end), ms:")
    print("  " + "  ".join(f"{m['minute']}: {m['p50']:.2f}/{m['p99']:.2f}/{m['delivered_p50']:.2f}"
                           for m in res["per_minute"]))
    print(f"\nCPU {res['cpu_percent']:.1f} % of a core; RSS {res['rss_start_mb']:.0f} -> {res['rss_end_mb']:.0f} MB; "
          f"dropped {len(res['dropped'])}; gaps {len(res['gaps'])}; "
          f"pipeline arrival-log entries at the end: {res['pipeline_arrival_entries']}")
    err, lt = res["timestamp_error_ms"], res["last"]["latency_vs_true_time_ms"]
    print(f"received window-end timestamp - true replay time: p50 {err['p50']:.3f} ms, max {err['max']:.3f} ms; "
          f"last part vs true time: p50 {lt['p50']:.2f} p99 {lt['p99']:.2f} ms")
    print(f"window start - marker (session s): {res['window_offset_session_s']}; "
          f"window span (session s): {res['window_span_session_s']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.make_parser(__doc__, "python -m benchmarks.drift --minutes 10 --speed 10")
    p.add_argument("--minutes", type=float, default=10.0, help="session length in minutes [10]")
    p.add_argument("--speed", type=float, default=10.0, help="replay speed [10]")
    p.add_argument("--compare-minutes", type=float, default=None,
                   help="length of the first/last parts compared [min(10, minutes/3)]")
    p.add_argument("--marker-filter", default="^stim/", help="markers that open windows [^stim/]")
    p.add_argument("--session", type=Path, default=None, help="replay this Zarr session instead of simulating")
    common.add_seed(p)
    common.add_out(p, "drift")
    args = p.parse_args(argv)
    common.checked(p, check_float, "--minutes", args.minutes, positive=True)
    common.checked(p, check_float, "--speed", args.speed, positive=True, finite=False)
    if args.compare_minutes is None:
        args.compare_minutes = min(10.0, args.minutes / 3)
    common.checked(p, check_float, "--compare-minutes", args.compare_minutes, positive=True, high=args.minutes / 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = common.machine_info()
    with common.scratch_dir() as workdir:
        session, sim_s = common.session_or_simulate(args.session, workdir, args.minutes * 60.0, args.seed)
        if sim_s is not None:
            print(f"simulated {args.minutes:g} min in {sim_s:.0f} s", flush=True)
        minutes = args.minutes
        checkpoint = common.make_default_checkpoint(workdir / "eeg_convnet")
        print(f"replaying at speed {args.speed:g} (~{minutes * 60 / args.speed:.0f} s) ...", flush=True)
        res = analyse(decode_replay(session, checkpoint, args, workdir), minutes, args.compare_minutes)
    print()
    print_report(res, args.compare_minutes)
    diff = {q: res["last"]["latency_ms"][q] - res["first"]["latency_ms"][q] for q in ("p50", "p95", "p99")}
    diff_delivered = {q: res["last"]["delivered_latency_ms"][q] - res["first"]["delivered_latency_ms"][q]
                      for q in ("p50", "p95", "p99")}
    print("last - first (emitted): " + ", ".join(f"{q} {v:+.2f} ms" for q, v in diff.items()))
    print("last - first (delivered): " + ", ".join(f"{q} {v:+.2f} ms" for q, v in diff_delivered.items()))
    sections = {"config": {"minutes": minutes, "speed": args.speed, "compare_minutes": args.compare_minutes,
                           "marker_filter": args.marker_filter, "simulate_s": sim_s, "seed": args.seed},
                "last_minus_first_ms": diff, "last_minus_first_delivered_ms": diff_delivered, **res}
    print(f"\nwrote {common.write_report(args.out, machine, sections, benchmark='drift')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
