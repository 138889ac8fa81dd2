"""What the viewer costs the decoder: ``latency_ms`` headless vs viewer in-process vs viewer in its own process.

128 channels at 1 kHz in 10-sample chunks with one marker per second, from
``benchmarks/producer.py`` in its own process. Each variant is a fresh decoder process
against a fresh producer, one after another (never concurrently), all running
:func:`bci.runtime.live.run_live` with the same untrained default ``eeg_convnet``
checkpoint (default preprocessing, CPU), the same synthetic 40-image gallery (top-5
retrieval, thumbnails in the viewer) and an LSL results outlet:

* ``headless``: no viewer (``bci live --no-view``);
* ``inline``: the viewer in the decoder's process, Qt offscreen (``bci live --view inline``):
  the Qt loop runs on the main thread next to the decoding thread;
* ``process``: the viewer in its own process (``bci live``, the default), Qt offscreen,
  subscribed over LSL to the results outlet the decoder publishes anyway (the LSL
  transport: no extra work on the decoder's side).

Reported per variant: the pipeline's ``latency_ms`` (record emitted − arrival of the chunk
holding the window's last sample in the decoder process) over the measured windows,
p50/p95/p99/max, the decoder process's CPU (% of one core; the viewer child's own CPU is
not included), and the ratios and differences to ``headless`` within this run. The goal is
``process`` p99 <= ``headless`` p99 + 1 ms.

Example::

    python -m benchmarks.viewer_latency --duration 30
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import REPO_ROOT, CpuMonitor, format_table, percentiles
from benchmarks.producer import seq_of_marker
from streams._checks import check_int, check_value

VARIANTS = ("headless", "inline", "process")
#: Images in the synthetic gallery (ids img0000..; the producer's markers name them).
GALLERY_SIZE = 40
#: The goal: the viewer may add at most this much to the decoder's p99 (ms).
GOAL_P99_MS = 1.0


def missing_gui() -> str | None:
    """Why the viewer variants cannot run here (one line), or None."""
    missing = [m for m in ("PySide6", "pyqtgraph") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install -e .[viewer]): viewer variants skipped"
    return None


def make_gallery(folder: Path, embed_dim: int, seed: int) -> Path:
    """A synthetic gallery: ``GALLERY_SIZE`` unit embeddings and one saturated 64x64 thumbnail per image."""
    from bci.retrieval.gallery import Gallery

    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(GALLERY_SIZE, embed_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    thumbs = np.full((GALLERY_SIZE, 64, 64, 3), 20, np.uint8)
    thumbs[:, 8:56, 8:56] = rng.integers(60, 256, size=(GALLERY_SIZE, 1, 1, 3), dtype=np.uint8)
    ids = [f"img{i:04d}" for i in range(GALLERY_SIZE)]
    gallery = Gallery(embeddings=emb, ids=ids, labels=[f"label{i % 10:02d}" for i in range(GALLERY_SIZE)],
                      captions=[""] * GALLERY_SIZE, thumbnails=thumbs, meta={"name": "viewer-latency"})
    return gallery.save(folder)


# ====================================================================== one variant (child process)
def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    """Child-process entry: decode the producer's streams with ``run_live`` and the variant's loop."""
    from bci.runtime.assemble import DecodeOptions
    from bci.runtime.live import LiveOptions, run_live
    from streams.lsl import local_clock

    kind = check_value("--run-variant", args.run_variant, VARIANTS)
    decode = DecodeOptions(args.checkpoint, events=args.events, overwrite=True, device="cpu",
                           results_stream=f"{args.name}-res", gallery=args.gallery, marker_filter="^stim/")
    live = LiveOptions(f"name={args.name}", f"name={args.name}-Markers", decode, duration=args.n_markers + 4.0,
                       resolve_timeout=30.0)
    monitor = CpuMonitor(local_clock).start()
    run_live(live, loop=_loop(kind, args, decode.results_stream), say=lambda text: print(f"  {text}", flush=True))
    monitor.stop()
    times = [r["emitted_time"] for r in _measured(_read_events(args.events), args.warmup)]
    cpu = monitor.percent_between(min(times), max(times)) if len(times) > 1 else float("nan")
    return {"kind": kind, "cpu_percent": cpu}


def _read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _measured(records: list[dict[str, Any]], warmup: int) -> list[dict[str, Any]]:
    """The window records of markers number ``warmup`` and later."""
    return [r for r in records if r["type"] == "window" and seq_of_marker(r["marker"]) >= warmup]


def _loop(kind: str, args: argparse.Namespace, results: str) -> Any:
    if kind == "headless":
        return None
    from bci.viewer.app import ViewerOptions

    if kind == "inline":
        from bci.viewer.images import load_gallery
        from bci.viewer.live_loop import viewer_loop

        return viewer_loop(ViewerOptions(gallery=load_gallery(args.gallery)))
    from bci.viewer.process import ViewerProcessOptions, viewer_process_loop

    return viewer_process_loop(ViewerProcessOptions(results, ViewerOptions(), gallery=args.gallery,
                                                    model=args.checkpoint, resolve_timeout=30.0))


# ====================================================================== orchestration
def run_one(kind: str, args: argparse.Namespace, workdir: Path, checkpoint: Path, gallery: Path) -> dict[str, Any]:
    """Fresh producer + one decoder process of variant ``kind``; the analysed result."""
    name = f"vbench{os.getpid()}-{kind}"
    events, out = workdir / f"events-{kind}.jsonl", workdir / f"variant-{kind}.json"
    n_markers = args.warmup + args.duration
    load_before = common.load_avg()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    with common.producer_process(["--name", name, "--duration", str(n_markers), "--log", str(workdir / f"producer-{kind}.json")],
                                 f"producer for {kind}", stop_timeout=10) as producer:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.viewer_latency", "--run-variant", kind, "--name", name,
             "--n-markers", str(n_markers), "--checkpoint", str(checkpoint), "--gallery", str(gallery),
             "--events", str(events), "--result", str(out), "--warmup", str(args.warmup)],
            cwd=REPO_ROOT, timeout=n_markers + 120, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"decoder {kind} failed with exit code {proc.returncode}")
        producer.wait(timeout=60)
    result = analyse(kind, events, json.loads(out.read_text()), args.warmup, n_markers)
    result["load_avg_1min"] = {"before": load_before, "after": common.load_avg()}
    return result


def analyse(kind: str, events: Path, child: dict[str, Any], warmup: int, n_markers: int) -> dict[str, Any]:
    """Latency statistics of the measured windows (marker number >= ``warmup``) and the decoder's CPU."""
    records = _read_events(events)
    windows = _measured(records, warmup)
    latencies = [r["latency_ms"] for r in windows]
    return {
        "kind": kind,
        "latency_ms": percentiles(latencies),
        "cpu_percent": float("nan") if child["cpu_percent"] is None else child["cpu_percent"],
        "windows": len(windows),
        "missing": (n_markers - warmup) - len({seq_of_marker(r["marker"]) for r in windows}),
        "dropped": [r["reason"] for r in records if r["type"] == "dropped"],
        "latencies_ms": [round(v, 4) for v in latencies],
    }


def comparisons(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each viewer variant over and minus ``headless``, on p50 and p99, within this run; the goal check."""
    out: dict[str, Any] = {}
    base = results.get("headless")
    if base is None:
        return out
    for kind in ("inline", "process"):
        if kind not in results:
            continue
        for q in ("p50", "p99"):
            a, b = results[kind]["latency_ms"][q], base["latency_ms"][q]
            out[f"{kind}_over_headless_{q}"] = a / b if b else float("nan")
            out[f"{kind}_minus_headless_{q}_ms"] = a - b
    if "process" in results:
        out["goal_process_p99_within_1ms"] = bool(out["process_minus_headless_p99_ms"] <= GOAL_P99_MS)
    return out


def print_report(results: dict[str, dict[str, Any]], comp: dict[str, Any], skipped: dict[str, str]) -> None:
    rows = [[k, r["windows"], r["missing"], r["latency_ms"]["p50"], r["latency_ms"]["p95"], r["latency_ms"]["p99"],
             r["latency_ms"]["max"], r["cpu_percent"], "{before:.2f}/{after:.2f}".format(**r["load_avg_1min"])]
            for k, r in results.items()]
    print(format_table(["variant", "windows", "missing", "p50 ms", "p95 ms", "p99 ms", "max ms", "decoder CPU %",
                        "load before/after"], rows))
    for kind, why in skipped.items():
        print(f"{kind}: {why}")
    for key, value in comp.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.make_parser(__doc__, "python -m benchmarks.viewer_latency --duration 30")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--duration", type=int, default=30, help="measured seconds (= markers) per variant [30]")
    p.add_argument("--warmup", type=int, default=3, help="markers discarded at the start [3]")
    p.add_argument("--pause", type=float, default=2.0, help="seconds between variants [2]")
    common.add_seed(p)
    common.add_out(p, "viewer_latency")
    # child-process mode
    p.add_argument("--run-variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n-markers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--gallery", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--events", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_variant is None:
        kinds = [k.strip() for k in args.variants.split(",") if k.strip()]
        if not kinds:
            p.error(f"--variants {args.variants!r}: name at least one of {', '.join(VARIANTS)}")
        for kind in kinds:
            common.checked(p, check_value, "--variants", kind, VARIANTS)
        common.checked(p, check_int, "--duration", args.duration, low=1, high=900)
        common.checked(p, check_int, "--warmup", args.warmup, low=0, high=100)
        args.kinds = kinds
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_variant is not None:
        common.write_json(args.result, run_variant(args))
        return 0
    machine = common.machine_info()
    why = missing_gui()
    skipped = {k: why for k in args.kinds if k != "headless" and why}
    results: dict[str, dict[str, Any]] = {}
    with common.scratch_dir() as workdir:
        checkpoint = common.make_default_checkpoint(workdir / "eeg_convnet", seed=args.seed)
        embed_dim = json.loads((checkpoint / "config.json").read_text())["embed_dim"]
        gallery = make_gallery(workdir / "gallery", embed_dim, args.seed)
        for i, kind in enumerate(k for k in args.kinds if k not in skipped):
            if i:
                time.sleep(args.pause)
            print(f"[{kind}] {args.duration} s ...", flush=True)
            results[kind] = run_one(kind, args, workdir, checkpoint, gallery)
            r = results[kind]["latency_ms"]
            print(f"[{kind}] p50 {r['p50']:.2f} p99 {r['p99']:.2f} ms, decoder CPU {results[kind]['cpu_percent']:.1f} %",
                  flush=True)
    comp = comparisons(results)
    print()
    print_report(results, comp, skipped)
    sections = {"config": {"channels": 128, "rate": 1000.0, "chunk": 10, "markers_per_s": 1.0,
                           "duration_s": args.duration, "warmup_markers": args.warmup, "gallery_size": GALLERY_SIZE,
                           "order": args.kinds, "goal_p99_ms": GOAL_P99_MS},
                "results": results, "skipped": skipped, "comparisons": comp}
    print(f"\nwrote {common.write_report(args.out, machine, sections, benchmark='viewer_latency')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
