"""Gallery retrieval on the CPU: exact torch vs FAISS flat vs FAISS HNSW (approximate).

1. ``bci.retrieval.search.clustered_unit_vectors`` draws a seeded gallery (default 100,000 x 512,
   1,000 clusters, spread 1.0: cosine ~0.71 to the cluster centre, ~0.5 between members
   of a cluster, ~0 across clusters) and two query sets from the same clusters: one to
   tune HNSW's ``efSearch``, one to time.
2. For each backend, a :class:`bci.retrieval.search.Retriever` is built (time and resident
   memory growth measured, plus the size of the searchable structure), then every
   timed query is searched alone (batch of 1, top-k): latency p50/p99 of
   ``Retriever.search``, which includes normalising the query and converting the
   result. Also one batched call over all timed queries (ms per query).
3. HNSW: ``efSearch`` is the smallest of ``--ef-search`` whose recall@k on the tuning
   queries reaches ``--target-recall``; if recall@k on the timed queries then falls
   short, the next value is taken and timed again (recorded under ``bumped``). Same for
   IVF's ``nprobe``. Recall is against an exact numpy brute-force search.
4. Ratios: every backend's p50/p99 divided by exact torch's, from this same run.

Threads: ``--threads`` (default 1) for torch (``torch.set_num_threads``) and FAISS
(``faiss.omp_set_num_threads``) while searching; ``--build-threads`` (default: all CPUs)
while building the FAISS indexes. Both are written in the output.

Example::

    python -m benchmarks.retrieval                       # 100k x 512, ~3 min on 2 vCPUs
    python -m benchmarks.retrieval --n 20000 --dim 128 --queries 200
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import format_table, percentiles
from streams._checks import check_int, check_value

BACKENDS = ("torch", "faiss-flat", "faiss-hnsw", "faiss-ivf")


def set_threads(n: int) -> None:
    """Threads for torch and (when installed) FAISS."""
    import torch

    torch.set_num_threads(n)
    try:
        common.require("faiss").omp_set_num_threads(n)
    except common.MissingDependency:
        pass  # a torch-only run: the FAISS backends are skipped, each with its own line


def build(gallery: Any, backend: str, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Build one retriever; its build time, memory growth and index size."""
    from bci.retrieval.search import Retriever

    set_threads(args.threads if backend == "torch" else args.build_threads)
    gc.collect()
    rss0 = common.rss_mb()
    retriever = Retriever(gallery, backend=backend, k=args.k, hnsw_m=args.hnsw_m,
                          ef_construction=args.ef_construction, ef_search=args.ef_search[0],
                          nprobe=args.nprobe[0])
    gc.collect()
    info = {"build_s": retriever.build_seconds, "rss_growth_mb": common.rss_mb() - rss0,
            "index_mb": retriever.index_bytes / 2**20}
    set_threads(args.threads)
    return retriever, info


def tune(retriever: Any, tune_queries: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Smallest efSearch / nprobe reaching the target recall on the tuning queries."""
    if retriever.backend not in ("faiss-hnsw", "faiss-ivf"):
        return {}
    name = "efSearch" if retriever.backend == "faiss-hnsw" else "nprobe"
    grid = args.ef_search if retriever.backend == "faiss-hnsw" else args.nprobe
    curve = []
    for value in grid:
        if retriever.backend == "faiss-hnsw":
            retriever.set_ef_search(value)
        else:
            retriever.set_nprobe(value)
        recall = retriever.recall_at_k(tune_queries, args.k)
        curve.append({name: value, "recall": recall})
        print(f"  {retriever.backend} {name}={value}: recall@{args.k} {recall:.4f} (tuning queries)", flush=True)
        if recall >= args.target_recall:
            break
    chosen = curve[-1]
    retriever.params[name] = chosen[name]
    return {"tuned": name, "chosen": chosen[name], "tuning_recall": chosen["recall"],
            "reached_target": chosen["recall"] >= args.target_recall, "curve": curve}


def bump(retriever: Any, info: dict[str, Any], args: argparse.Namespace) -> bool:
    """If the tuned value misses the target on the timed queries, take the next one (True: time again)."""
    name = info.get("tuned")
    if name is None or info["recall_at_k"] >= args.target_recall:
        return False
    grid = args.ef_search if name == "efSearch" else args.nprobe
    larger = [v for v in grid if v > retriever.params[name]]
    if not larger:
        return False
    info.setdefault("bumped", []).append({name: retriever.params[name], "timed_recall": info["recall_at_k"]})
    print(f"  {retriever.backend} {name}={retriever.params[name]}: recall@{args.k} {info['recall_at_k']:.4f} on the "
          f"timed queries, below {args.target_recall}; trying {name}={larger[0]}", flush=True)
    if name == "efSearch":
        retriever.set_ef_search(larger[0])
    else:
        retriever.set_nprobe(larger[0])
    return True


def time_queries(retriever: Any, queries: np.ndarray, k: int, warmup: int) -> dict[str, Any]:
    """Single-query latency (ms) of ``search`` over all queries, and one batched call."""
    for q in queries[:warmup]:
        retriever.search(q[None, :], k)
    lat = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        retriever.search(q[None, :], k)
        lat[i] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    retriever.search(queries, k)
    batch_ms = (time.perf_counter() - t) * 1e3
    return {"latency_ms": percentiles(lat, (50, 90, 99)), "batch_ms_per_query": batch_ms / len(queries)}


def run_backend(gallery: Any, backend: str, tune_q: np.ndarray, queries: np.ndarray,
                args: argparse.Namespace) -> dict[str, Any]:
    if backend.startswith("faiss"):
        common.require("faiss")  # before saying anything: a missing FAISS is its own one line
    print(f"{backend}: building", flush=True)
    retriever, info = build(gallery, backend, args)
    print(f"{backend}: built in {info['build_s']:.1f} s, index {info['index_mb']:.0f} MB", flush=True)
    info.update(tune(retriever, tune_q, args))
    while True:
        info["params"] = dict(retriever.params)
        info.update(time_queries(retriever, queries, args.k, args.warmup))
        info["recall_at_k"] = retriever.recall_at_k(queries, args.k)
        if not bump(retriever, info, args):
            break
    lat = info["latency_ms"]
    print(f"{backend}: p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, recall@{args.k} "
          f"{info['recall_at_k']:.4f}", flush=True)
    del retriever
    gc.collect()
    return info


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each backend's latency / exact torch's, same run."""
    if "torch" not in results:
        return {}
    ref = results["torch"]["latency_ms"]
    return {name: {"p50_vs_torch": r["latency_ms"]["p50"] / ref["p50"],
                   "p99_vs_torch": r["latency_ms"]["p99"] / ref["p99"]}
            for name, r in results.items()}


def print_report(results: dict[str, dict[str, Any]], rel: dict[str, dict[str, float]], k: int) -> None:
    rows = []
    for name, r in results.items():
        params = ", ".join(f"{p}={v}" for p, v in r["params"].items()) or "-"
        rr = rel.get(name, {})
        rows.append([name, params, r["build_s"], r["index_mb"], r["rss_growth_mb"], r["latency_ms"]["p50"],
                     r["latency_ms"]["p99"], rr.get("p50_vs_torch", float("nan")),
                     rr.get("p99_vs_torch", float("nan")), r["batch_ms_per_query"], f"{r['recall_at_k']:.4f}"])
    print(format_table(["backend", "parameters", "build s", "index MB", "RSS growth MB", "p50 ms", "p99 ms",
                        "p50 / torch", "p99 / torch", "batched ms/query", f"recall@{k}"], rows))


def _int_list(text: str) -> list[int]:
    """``"16,32,64"`` -> ``[16, 32, 64]`` (an argparse ``type``): at least one int, each >= 1."""
    try:
        values = [check_int("value", int(v), low=1) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints >= 1, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.make_parser(__doc__, "python -m benchmarks.retrieval --n 100000 --dim 512")
    p.add_argument("--n", type=int, default=100_000, help="gallery size [100000]")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension [512]")
    p.add_argument("--clusters", type=int, default=1000, help="clusters in the synthetic gallery [1000]")
    p.add_argument("--spread", type=float, default=1.0, help="within-cluster spread [1.0]")
    p.add_argument("--queries", type=int, default=1000, help="timed single queries per backend [1000]")
    p.add_argument("--tune-queries", type=int, default=300, help="queries used to tune HNSW/IVF [300]")
    p.add_argument("--warmup", type=int, default=20, help="untimed queries first [20]")
    p.add_argument("-k", "--k", type=int, default=5, help="results per query [5]")
    p.add_argument("--backends", default="torch,faiss-flat,faiss-hnsw",
                   help=f"comma-separated, from {','.join(BACKENDS)} [torch,faiss-flat,faiss-hnsw]")
    p.add_argument("--threads", type=int, default=1, help="torch and FAISS threads while searching [1]")
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 1,
                   help="FAISS threads while building indexes [all CPUs]")
    p.add_argument("--hnsw-m", type=int, default=16, help="HNSW graph degree M [16]")
    p.add_argument("--ef-construction", type=int, default=64, help="HNSW efConstruction [64]")
    p.add_argument("--ef-search", type=_int_list, default=_int_list("16,32,64,128,256,512"),
                   help="HNSW efSearch values tried in order until the target recall [16,32,64,128,256,512]")
    p.add_argument("--nprobe", type=_int_list, default=_int_list("4,8,16,32,64,128"),
                   help="IVF nprobe values tried in order [4,8,16,32,64,128]")
    p.add_argument("--target-recall", type=float, default=0.99, help="recall@k the tuning must reach [0.99]")
    common.add_seed(p)
    common.add_out(p, "retrieval")
    args = p.parse_args(argv)
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backend_list:
        p.error(f"--backends {args.backends!r}: name at least one of {','.join(BACKENDS)}")
    for backend in args.backend_list:
        common.checked(p, check_value, "--backends", backend, BACKENDS)
    for name in ("n", "dim", "clusters", "queries", "tune_queries", "k", "threads", "build_threads"):
        common.checked(p, check_int, f"--{name.replace('_', '-')}", getattr(args, name), low=1)
    common.checked(p, check_int, "--warmup", args.warmup, low=0)
    common.checked(p, check_int, "-k", args.k, high=args.n)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = common.machine_info()
    import torch

    from bci.retrieval.search import clustered_unit_vectors, gallery_from_vectors

    try:
        faiss = common.require("faiss")
        machine["faiss"] = faiss.__version__
    except common.MissingDependency:
        faiss = None  # each FAISS backend says it is skipped
    t = time.perf_counter()
    vectors, q = clustered_unit_vectors(args.n, args.dim, n_queries=args.tune_queries + args.queries,
                                        n_clusters=args.clusters, spread=args.spread, seed=args.seed)
    gallery = gallery_from_vectors(vectors, name=f"synthetic-{args.n}x{args.dim}")
    del vectors
    tune_q, queries = q[:args.tune_queries], q[args.tune_queries:]
    print(f"gallery {args.n} x {args.dim} ({args.clusters} clusters) drawn in {time.perf_counter() - t:.1f} s; "
          f"search threads {args.threads}, build threads {args.build_threads}", flush=True)
    ran = {b: common.run_optional(f"backend {b}", run_backend, gallery, b, tune_q, queries, args)
           for b in args.backend_list}
    results = {b: r for b, r in ran.items() if r is not None}
    rel = ratios(results)
    print()
    print_report(results, rel, args.k)
    print(f"\nsingle-query latency over {args.queries} queries, k={args.k}; torch {torch.__version__} and faiss "
          f"{getattr(faiss, '__version__', '(not installed)')} with {args.threads} search thread(s), FAISS indexes "
          f"built with "
          f"{args.build_threads} thread(s); ratios are within this run")
    sections = {"config": {"n": args.n, "dim": args.dim, "clusters": args.clusters, "spread": args.spread,
                           "queries": args.queries, "tune_queries": args.tune_queries, "warmup": args.warmup,
                           "k": args.k, "threads": args.threads, "build_threads": args.build_threads,
                           "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction,
                           "ef_search_grid": args.ef_search, "nprobe_grid": args.nprobe,
                           "target_recall": args.target_recall, "seed": args.seed},
                "results": results, "ratios_vs_torch": rel}
    print(f"\nwrote {common.write_report(args.out, machine, sections, benchmark='retrieval')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
