"""Peak memory of ``bci replay SESSION --decode --speed max`` against the session's length.

For each ``--minutes`` value a simulated session (128 ch at 1 kHz, the synthetic world's own
amplifier) is written once into the work folder, then decoded by ``bci replay --decode --speed max``
in a fresh process, three ways, in the same run:

* **ours**: the command as shipped (``decode_session`` reads the samples 60 s at a time);
* **whole arrays** (the peer: what the command did before): the same command with
  ``bci.runtime.replay.READ_BLOCK_S`` set to infinity, so the session's samples are read at once;
* **floor**: the same command on a 10-second session (imports, model, buffers: what any replay costs).

Peak RSS is the child's ``ru_maxrss`` (``os.wait4``), not a sampled value; where the child is forked
before exec it also counts the parent's pages until the exec, so this script stays smaller than the floor. Also reported: wall
time, times faster than real time, the session's size on disk. The verdict: ours flat within
``--max-growth-mb`` from the shortest to the longest session.

Example::

    python -m benchmarks.replay_memory --minutes 5,20,80       # ~2.7 GB of scratch disk for 80 min
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.common import format_table
from streams._checks import check_float

#: Runs ``bci replay`` with the whole-array read of the earlier versions (the peer).
_WHOLE = ("import math, sys; import bci.runtime.replay as r; r.READ_BLOCK_S = math.inf; "
          "from bci.cli.main import main; sys.exit(main(sys.argv[1:]))")
_OURS = "import sys; from bci.cli.main import main; sys.exit(main(sys.argv[1:]))"


def peak_rss_run(code: str, args: list[str]) -> dict[str, Any]:
    """Run ``python -c code args`` and return its wall time and its own peak RSS (MiB)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=common.REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"bci {' '.join(args)} exited {proc.returncode}: {err[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0}


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _session(workdir: Path, minutes: float, seed: int) -> Path:
    path = workdir / f"session_{minutes:g}min.zarr"
    if not (path / "zarr.json").is_file():
        took = common.simulate_session(path, minutes * 60.0, seed)
        print(f"simulated {minutes:g} min in {took:.0f} s", flush=True)
    return path


def measure(session: Path, checkpoint: Path, seconds: float, code: str) -> dict[str, Any]:
    args = ["replay", str(session), "--decode", "--model", str(checkpoint), "--speed", "max", "--device", "cpu",
            "--results-stream", ""]
    run = peak_rss_run(code, args)
    return {**run, "x_real_time": seconds / run["wall_s"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked (usage error naming the flag otherwise); ``minutes`` sorted."""
    p = common.make_parser(__doc__, "python -m benchmarks.replay_memory --minutes 5,20,80")
    p.add_argument("--minutes", default="5,20,80", help="session lengths, minutes, comma-separated [5,20,80]")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the simulated sessions here (reused by the next run) [a temporary folder]")
    p.add_argument("--max-growth-mb", type=float, default=100.0,
                   help="flat: ours grows at most this much from the shortest to the longest session [100]")
    common.add_seed(p)
    common.add_out(p, "replay_memory")
    args = p.parse_args(argv)
    try:
        minutes = sorted(float(m) for m in args.minutes.split(",") if m.strip())
    except ValueError:
        p.error(f"--minutes {args.minutes!r} must be numbers of minutes, e.g. 5,20,80")
    for m in minutes:
        common.checked(p, check_float, "--minutes", m, low=0.5, high=24 * 60.0)
    if not minutes:
        p.error("--minutes: give at least one length")
    common.checked(p, check_float, "--max-growth-mb", args.max_growth_mb, low=0.0)
    args.minutes = minutes
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    minutes = args.minutes
    machine = common.machine_info()
    rows: list[dict[str, Any]] = []
    with common.scratch_dir() as tmp:
        workdir = args.workdir or tmp
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint = common.make_default_checkpoint(tmp / "eeg_convnet", seed=args.seed)
        floor_session = workdir / "session_floor.zarr"
        if not (floor_session / "zarr.json").is_file():
            common.simulate_session(floor_session, 10.0, args.seed)
        floor = measure(floor_session, checkpoint, 10.0, _OURS)
        print(f"floor (10 s session): peak RSS {floor['peak_rss_mb']:.0f} MiB", flush=True)
        for m in minutes:
            session = _session(workdir, m, args.seed)
            ours = measure(session, checkpoint, m * 60.0, _OURS)
            whole = measure(session, checkpoint, m * 60.0, _WHOLE)
            for run in (ours, whole):  # decoding alone: the floor's wall time is start-up (imports, model)
                net = run["wall_s"] - floor["wall_s"]
                run["x_real_time_net"] = m * 60.0 / net if net > 0.5 else float("nan")  # noise below that
            rows.append({"minutes": m, "session_mb_on_disk": _size_mb(session), "ours": ours, "whole_arrays": whole,
                         "ours_over_floor_mb": ours["peak_rss_mb"] - floor["peak_rss_mb"],
                         "whole_over_ours": whole["peak_rss_mb"] / ours["peak_rss_mb"]})
            print(f"{m:g} min: ours {ours['peak_rss_mb']:.0f} MiB ({ours['x_real_time']:.0f}x real time), "
                  f"whole arrays {whole['peak_rss_mb']:.0f} MiB ({whole['x_real_time']:.0f}x)", flush=True)
    growth = rows[-1]["ours"]["peak_rss_mb"] - rows[0]["ours"]["peak_rss_mb"] if rows else float("nan")
    verdict = {"ours_growth_mb": growth, "flat": growth <= args.max_growth_mb, "max_growth_mb": args.max_growth_mb}
    print()
    print(format_table(["session min", "on disk MiB", "ours peak RSS MiB", "ours x real time (net)",
                        "whole arrays peak RSS MiB", "whole arrays x real time (net)", "ours - floor MiB"],
                       [[r["minutes"], r["session_mb_on_disk"], r["ours"]["peak_rss_mb"],
                         f"{r['ours']['x_real_time']:.0f} ({r['ours']['x_real_time_net']:.0f})",
                         r["whole_arrays"]["peak_rss_mb"],
                         f"{r['whole_arrays']['x_real_time']:.0f} ({r['whole_arrays']['x_real_time_net']:.0f})",
                         r["ours_over_floor_mb"]] for r in rows]))
    print("x real time: session seconds per wall second of the whole command; (net): without the floor's "
          "wall time (start-up)")
    print(f"\nfloor {floor['peak_rss_mb']:.0f} MiB; verdict: {'OK' if verdict['flat'] else 'FAILED'} "
          f"(ours grows {growth:.0f} MiB from {minutes[0]:g} to {minutes[-1]:g} min, bound {args.max_growth_mb:g}); "
          f"load average {common.load_avg():.2f}")
    sections = {"config": {"minutes": minutes, "seed": args.seed}, "floor": floor, "rows": rows, "verdict": verdict}
    print(f"wrote {common.write_report(args.out, machine, sections, benchmark='replay_memory')}")
    return 0 if verdict["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
