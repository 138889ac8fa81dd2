"""Batch-1 CPU latency of the registry's EEG encoders on the live window (128 ch x 440 samples at 1 kHz).

Each model is built (seeded, untrained) with ``n_chans=128``, ``n_times=440``, ``sfreq=1000``
and ``embed_dim=512`` (the default window and embedding of ``eeg_convnet``, the floor), put in
eval mode, and called on one window under ``torch.inference_mode()``: ``--warmup`` calls, then
``--calls`` timed ones, on ``--threads`` torch threads (1, as the live ``Encoder``); the median
is the run's figure. ``--runs`` runs one after another, each
over every model, with the 1-minute load average before and after (on a shared machine the
numbers move with it). The braindecode entries need the extra (``pip install -e .[braindecode]``);
without it they are skipped with one line. Parameter counts are printed beside the latency.

Example::

    python -m benchmarks.encoder_latency
    python -m benchmarks.encoder_latency --models eeg_convnet,nice_tsconv --runs 1
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks import common
from bci.models import build_model, default_config
from bci.models.braindecode_adapter import BraindecodeNotInstalledError
from streams._checks import check_int

#: The floor first, then the field's encoders.
MODELS = ("eeg_convnet", "eeg_shallow", "bd_eegnet", "bd_shallow", "bd_deep4", "bd_eegconformer", "bd_atcnet",
          "nice_tsconv", "atm")
SHAPE: dict[str, Any] = {"n_chans": 128, "n_times": 440, "sfreq": 1000.0, "embed_dim": 512}


def build(name: str, seed: int) -> torch.nn.Module:
    """The model ``name`` at :data:`SHAPE`, seeded, in eval mode (braindecode's warnings silenced)."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EEGConformer: "only tested on no more than 64 channels"
        return build_model(default_config(name, **SHAPE)).eval()


def median_ms(model: torch.nn.Module, warmup: int, calls: int, seed: int) -> float:
    """Median wall time in ms of ``calls`` batch-1 forward passes after ``warmup`` ones."""
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, SHAPE["n_chans"], SHAPE["n_times"]),
                                                                     dtype=np.float32))
    times = []
    with torch.inference_mode():
        for i in range(warmup + calls):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = common.make_parser(__doc__, "python -m benchmarks.encoder_latency --runs 3")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads [1: the live Encoder's default]")
    common.add_seed(parser)
    common.add_out(parser, "encoder_latency")
    args = parser.parse_args(argv)
    for flag in ("runs", "warmup", "calls", "threads"):
        common.checked(parser, check_int, f"--{flag}", getattr(args, flag), low=1 if flag != "warmup" else 0)
    torch.set_num_threads(args.threads)
    machine = common.machine_info()
    models = {}
    for name in (n.strip() for n in args.models.split(",") if n.strip()):
        try:
            models[name] = build(name, args.seed)
        except BraindecodeNotInstalledError as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
    runs = []
    for _ in range(args.runs):
        load_before = common.load_avg()
        ms = {name: median_ms(m, args.warmup, args.calls, args.seed) for name, m in models.items()}
        runs.append({"load_before": load_before, "load_after": common.load_avg(), "median_ms": ms})
    rows = [[name, f"{sum(p.numel() for p in m.parameters()):,}",
             " / ".join(f"{r['median_ms'][name]:.2f}" for r in runs)] for name, m in models.items()]
    print(common.format_table(["model", "parameters", "median ms per run"], rows))
    print("load average (1 min) before/after each run: "
          + ", ".join(f"{r['load_before']:.2f}/{r['load_after']:.2f}" for r in runs))
    common.write_report(args.out, machine, {"config": {**SHAPE, "batch": 1, "threads": torch.get_num_threads(),
                                                       "warmup": args.warmup, "calls": args.calls},
                                            "runs": runs}, benchmark="encoder_latency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
