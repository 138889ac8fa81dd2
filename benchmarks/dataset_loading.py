"""Epoch dataset speed: building from a (simulated) session, and reading batches vs a .npy memmap.

1. **Build**: ``offline.data.build.epochs_from_simulation`` simulates a session of the
   synthetic world (128 ch at 1 kHz, default 40 classes x 10 trials in 2 blocks per class)
   and cuts it through the runtime's pipeline (default preprocessing, 440-sample windows);
   then ``epochs_from_sessions`` cuts the kept session again, alone (no simulation).
2. **Read**: a dataset of ``--epochs`` random epochs (128 x 440 float32, 225 KB each) is
   written with ``write_epoch_dataset``, and the same array with ``np.save``; then, in the
   same run, batches of ``--batch`` epochs are read:

   * random batches with ``EpochDataset.get_batch`` (not cached: whole chunks read per batch),
     and from ``np.load(..., mmap_mode="r")`` by fancy indexing (the peer);
   * sequential batches, both ways;
   * one shuffled pass of ``EpochDataset.to_torch`` (chunk-buffer shuffle, not cached);
   * the whole array into RAM: ``EpochDataset.load()`` vs ``np.load``; then random batches
     from the cached dataset.

   Both files were just written, so both are read from the OS page cache (warm), which is
   the steady state of a training run that reads the same files every epoch.

Example::

    python -m benchmarks.dataset_loading --epochs 2048
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import format_table


def _rate(n_epochs: int, fn: Callable[[], Any], repeats: int = 3) -> float:
    """Best-of-``repeats`` epochs per second of ``fn`` (which reads ``n_epochs`` epochs)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_epochs / best


def measure_build(tmp: Path, *, n_classes: int, n_per_class: int, n_blocks: int, seed: int) -> dict[str, Any]:
    """Epochs/s of epochs_from_simulation (simulate + cut) and of epochs_from_sessions alone."""
    from offline.data.build import SimulationOptions, epochs_from_sessions, epochs_from_simulation

    simulation = SimulationOptions(n_classes=n_classes, n_per_class=n_per_class, n_blocks=n_blocks, seed=seed)
    sim = epochs_from_simulation(tmp / "sim.zarr", simulation, keep_session=tmp / "session.zarr")
    cut = epochs_from_sessions([tmp / "session.zarr"], tmp / "cut.zarr", splits=("block",))
    from streams.session import SessionReader

    seconds_of_data = SessionReader(tmp / "session.zarr").n_samples("SimEEG") / 1000.0
    return {
        "n_epochs": sim.n_epochs,
        "session_seconds": seconds_of_data,
        "simulate_and_cut_s": sim.seconds,
        "simulate_and_cut_epochs_per_s": sim.epochs_per_second,
        "cut_only_s": cut.seconds,
        "cut_only_epochs_per_s": cut.epochs_per_second,
        "cut_only_x_real_time": seconds_of_data / cut.seconds,
    }


def measure_reads(tmp: Path, *, n_epochs: int, batch: int, chunk_epochs: int, seed: int) -> dict[str, float]:
    """Epochs/s of the read patterns above, for the Zarr dataset and the .npy peer."""
    from offline.data.epochs import EpochArrays, EpochDataset, EpochMetadata, write_epoch_dataset

    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((n_epochs, 128, 440)) * 1e-5).astype(np.float32)
    labels = rng.integers(0, 40, n_epochs)
    t0 = time.perf_counter()
    path = write_epoch_dataset(tmp / "read.zarr",
                               EpochArrays(data, labels=labels, image_ids=[f"img{i}" for i in labels],
                                           subject=np.zeros(n_epochs, int), session=np.zeros(n_epochs, int),
                                           block=np.arange(n_epochs) // 40),
                               EpochMetadata(sfreq=1000.0, ch_names=[f"E{i}" for i in range(128)],
                                             class_names=[f"c{i}" for i in range(40)]),
                               chunk_epochs=chunk_epochs)
    write_s = time.perf_counter() - t0
    npy = tmp / "read.npy"
    np.save(npy, data)
    del data
    ds = EpochDataset.open(path, cache_bytes=0)
    mm = np.load(npy, mmap_mode="r", allow_pickle=False)
    batches = [rng.choice(n_epochs, batch, replace=False) for _ in range(max(1, n_epochs // batch))]
    n_read = len(batches) * batch
    seq = [np.arange(i, min(i + batch, n_epochs)) for i in range(0, n_epochs, batch)]
    out = {
        "write_epochs_per_s": n_epochs / write_s,
        "zarr_random_batches": _rate(n_read, lambda: [ds.get_batch(b) for b in batches]),
        "npy_memmap_random_batches": _rate(n_read, lambda: [np.asarray(mm[b]) for b in batches]),
        "zarr_sequential_batches": _rate(n_epochs, lambda: [ds.get_batch(b) for b in seq]),
        "npy_memmap_sequential_batches": _rate(n_epochs, lambda: [np.array(mm[b[0]:b[-1] + 1]) for b in seq]),
        "zarr_to_torch_shuffled_pass": _rate(n_epochs, lambda: [x for x, _, _ in ds.to_torch(batch_size=batch)]),
    }
    cached = EpochDataset.open(path, cache_bytes=2**40)
    t0 = time.perf_counter()
    cached.load()
    out["zarr_load_all"] = n_epochs / (time.perf_counter() - t0)
    out["npy_load_all"] = _rate(n_epochs, lambda: np.load(npy, allow_pickle=False), repeats=1)
    out["zarr_cached_random_batches"] = _rate(n_read, lambda: [cached.get_batch(b) for b in batches])
    in_ram = np.load(npy, allow_pickle=False)
    out["npy_in_ram_random_batches"] = _rate(n_read, lambda: [in_ram[b] for b in batches])
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both measurements, print Markdown tables, write JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2048, help="epochs of the read benchmark [2048 = 460 MB]")
    p.add_argument("--batch", type=int, default=64, help="batch size [64]")
    p.add_argument("--chunk-epochs", type=int, default=64, help="epochs per Zarr chunk [64]")
    p.add_argument("--classes", type=int, default=40, help="classes of the build benchmark [40]")
    p.add_argument("--n-per-class", type=int, default=10, help="trials per class of the build benchmark [10]")
    p.add_argument("--blocks", type=int, default=2, help="blocks per class of the build benchmark [2]")
    common.add_seed(p)
    common.add_out(p, "dataset_loading", help="JSON results")
    args = p.parse_args(argv)
    info = common.machine_info()
    with common.scratch_dir() as tmp:
        build = measure_build(tmp, n_classes=args.classes, n_per_class=args.n_per_class,
                              n_blocks=args.blocks, seed=args.seed)
        reads = measure_reads(tmp, n_epochs=args.epochs, batch=args.batch, chunk_epochs=args.chunk_epochs,
                              seed=args.seed)
    print(f"## Build ({build['n_epochs']} epochs, {build['session_seconds']:.0f} s of 128-ch data at 1 kHz)\n")
    print(format_table(["step", "seconds", "epochs/s"], [
        ["simulate + cut (epochs_from_simulation)", build["simulate_and_cut_s"],
         build["simulate_and_cut_epochs_per_s"]],
        ["cut only (epochs_from_sessions)", build["cut_only_s"], build["cut_only_epochs_per_s"]],
    ]))
    print(f"\ncut only: {build['cut_only_x_real_time']:.0f}x real time\n")
    print(f"## Read ({args.epochs} epochs of 128 x 440 float32, batches of {args.batch}, warm page cache)\n")
    pairs = [("random batches", "zarr_random_batches", "npy_memmap_random_batches"),
             ("sequential batches", "zarr_sequential_batches", "npy_memmap_sequential_batches"),
             ("whole array into RAM", "zarr_load_all", "npy_load_all"),
             ("random batches, in RAM", "zarr_cached_random_batches", "npy_in_ram_random_batches")]
    print(format_table(["pattern", "EpochDataset epochs/s", ".npy epochs/s", "ratio"],
                       [[name, reads[a], reads[b], reads[a] / reads[b]] for name, a, b in pairs]))
    print(f"\nto_torch shuffled pass (not cached): {reads['zarr_to_torch_shuffled_pass']:.0f} epochs/s; "
          f"write: {reads['write_epochs_per_s']:.0f} epochs/s")
    path = common.write_report(args.out, info, {"settings": vars(args), "build": build, "read": reads},
                               benchmark=None)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
