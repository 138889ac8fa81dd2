"""Soak: a long synthetic session streamed live, faster than real time, through ``bci live --record``.

Two processes, as in a lab: ``bci simulate --speed S`` (the synthetic world's EEG + markers,
generated as it streams, so a 24-hour session needs no 24-hour file to replay) and ``bci live``
with ``--record`` and ``--events`` (the decoder, which also records what it consumes). This
script watches the decoder process (RSS and CPU with psutil, once a second) and, at the end,
reads the events file and the recorded session. Per simulated hour (``--bin-minutes``) it
reports windows decoded, markers dropped, markers sent, samples pushed and recorded, window
latency p50/p99 (``emitted_time - window_end_time``, real milliseconds), the pipeline's own
``latency_ms`` p99, the decoder's RSS and its CPU (% of one core; the process also runs the
recorder's writer thread). Verdict: no sample and no marker lost (every marker a window or a
``dropped`` record with its reason), RSS flat within ``--max-rss-growth-mb`` of the first row,
p99 without drift (median of the later rows within ``--max-p99-ratio`` of the earlier rows') and
under ``--max-p99-ms`` in every row.

Timing at speed S: sample ``i`` is stamped ``t0 + i / (rate * S)`` on the LSL clock (see
:class:`streams.simulate.LiveSimulation`), so latencies are real milliseconds; the recording's
time axis is S times shorter than the session's, and the decoder runs with ``--no-dejitter``.
The default amplifier is smaller than the simulator's own (32 channels, biosemi32, at 250 Hz
instead of 128 at 1 kHz): the machine these figures come from has 2 shared cores.

Examples::

    python -m benchmarks.soak --hours 1 --speed 20                 # ~3 min
    python -m benchmarks.soak --hours 24 --speed 20                # ~73 min, ~3.3 GB of recording and events
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import format_table, percentiles
from streams._checks import check_float

#: Window length of the soak's checkpoint (0.44 s at 250 Hz, as 440 samples at 1 kHz).
N_TIMES = 110


@dataclass(frozen=True)
class SoakSettings:
    """One soak run: the session, the speed and the bounds of the verdict."""

    hours: float = 1.0
    speed: float = 20.0
    sfreq: float = 250.0
    montage: str = "biosemi32"
    bin_minutes: float = 60.0
    seed: int = 0
    max_rss_growth_mb: float = 50.0
    max_p99_ratio: float = 2.0
    max_p99_ms: float = 500.0
    drain_s: float = 3.0

    @property
    def name(self) -> str:
        """Stream name (unique per run)."""
        return f"Soak{os.getpid()}"

    @property
    def bin_s(self) -> float:
        """Session seconds per reported row."""
        return self.bin_minutes * 60.0


def _bci(*args: str) -> list[str]:
    return [sys.executable, "-m", "bci.cli", *args]


def make_checkpoint(folder: Path, settings: SoakSettings) -> Path:
    """An untrained eeg_convnet for the soak amplifier (its channels and rate, 16-d embeddings)."""
    import mne

    names = mne.channels.make_standard_montage(settings.montage).ch_names
    return common.make_default_checkpoint(folder, seed=settings.seed, n_chans=len(names), ch_names=list(names),
                                          sfreq=settings.sfreq, n_times=N_TIMES, embed_dim=16)


def run_soak(settings: SoakSettings, workdir: Path) -> dict[str, Any]:
    """Run the two processes, watch the decoder; returns the raw figures."""
    psutil = common.require("psutil")
    from streams.lsl import local_clock

    name, events, record = settings.name, workdir / "events.jsonl", workdir / "soak.zarr"
    logs = {p: (workdir / f"{p}.out").open("w+", encoding="utf-8") for p in ("simulate", "live")}  # no pipe fills up
    sim = subprocess.Popen(
        _bci("simulate", "--name", name, "--duration", repr(settings.hours * 3600.0), "--speed", repr(settings.speed),
             "--sfreq", repr(settings.sfreq), "--montage", settings.montage, "--seed", str(settings.seed),
             "--wait-for-consumers", "120", "--start-delay", "1"),
        cwd=common.REPO_ROOT, stdout=logs["simulate"], stderr=subprocess.STDOUT)
    try:  # the simulator builds its world and waits for the decoder meanwhile
        checkpoint = make_checkpoint(workdir / "model", settings)
    except BaseException:
        sim.kill()
        sim.wait()
        raise
    live = subprocess.Popen(
        _bci("live", "--eeg", name, "--markers", f"{name}-Markers", "--model", str(checkpoint), "--events",
             str(events), "--record", str(record), "--results-stream", f"{name}-results", "--no-view",
             "--no-dejitter", "--device", "cpu", "--resolve-timeout", "60"),
        cwd=common.REPO_ROOT, stdout=logs["live"], stderr=subprocess.STDOUT)
    proc = psutil.Process(live.pid)
    samples: list[tuple[float, float, float, float]] = []  # (LSL clock, RSS MiB, CPU s of the decoder, load 1 min)
    try:
        while sim.poll() is None and live.poll() is None:
            cpu = proc.cpu_times()
            samples.append((local_clock(), proc.memory_info().rss / 2**20, cpu.user + cpu.system, os.getloadavg()[0]))
            time.sleep(1.0)
        time.sleep(settings.drain_s)  # the last windows reach the sinks; then stop the decoder cleanly
        if live.poll() is None:
            live.send_signal(signal.SIGTERM)
        live.wait(timeout=120)
        sim.wait(timeout=60)
    finally:
        for p in (sim, live):
            if p.poll() is None:
                p.kill()
                p.wait()
    sim_out, live_out = ((workdir / f"{p}.out").read_text(encoding="utf-8") for p in ("simulate", "live"))
    for f in logs.values():
        f.close()
    if sim.returncode != 0 or live.returncode not in (0, 130):
        raise RuntimeError(f"bci simulate exited {sim.returncode}: {sim_out[-2000:]}\n"
                           f"bci live exited {live.returncode}: {live_out[-2000:]}")
    pushed = [line for line in sim_out.splitlines() if line.startswith("pushed ")]
    n_pushed, n_markers = (int(w) for w in pushed[-1].split()[1::3])  # "pushed N samples and M markers"
    return {"samples": samples, "n_pushed": n_pushed, "n_markers_sent": n_markers, "events": events,
            "record": record, "live_summary": live_out.splitlines()[-3:], "live_returncode": live.returncode}


def _bin(session_s: np.ndarray, settings: SoakSettings, n_bins: int) -> np.ndarray:
    return np.clip(np.floor(session_s / settings.bin_s + 1e-9).astype(np.int64), 0, n_bins - 1)


def analyse(raw: dict[str, Any], settings: SoakSettings) -> dict[str, Any]:
    """Per-bin figures and the verdict."""
    from bci.runtime.sinks import read_events
    from streams.session import SessionReader
    from streams.simulate import LiveSimulation, SimulationSpec

    spec = SimulationSpec(name=settings.name, duration=settings.hours * 3600.0, seed=settings.seed,
                          sfreq=settings.sfreq, montage=settings.montage)
    sent_idx = np.array([i for i, _ in LiveSimulation(spec).world.events], dtype=np.int64)
    n_bins = max(1, math.ceil(settings.hours * 60.0 / settings.bin_minutes - 1e-9))
    reader = SessionReader(raw["record"])
    eeg = reader.find(settings.name)
    times = reader.times(eeg)
    t0 = float(times[0]) if len(times) else float("nan")  # the session's first sample, on the LSL clock

    def session_s(t: np.ndarray) -> np.ndarray:
        return (np.asarray(t, dtype=np.float64) - t0) * settings.speed

    half = 0.5 / settings.sfreq  # stamps are sample times: half a sample keeps a boundary sample in its own bin
    rec_bin = _bin(session_s(times) + half, settings, n_bins)
    sent_bin = _bin(sent_idx / settings.sfreq + half, settings, n_bins)
    n_total = raw["n_pushed"]
    edges = np.minimum(np.ceil(np.arange(n_bins + 1) * settings.bin_s * settings.sfreq - 1e-6), n_total)
    edges[-1] = n_total
    pushed_bin = np.diff(edges).astype(np.int64)
    events = read_events(raw["events"])
    windows = [r for r in events.records if r.get("type") == "window"]
    dropped = [r for r in events.records if r.get("type") == "dropped"]
    w_bin = _bin(session_s([r["marker_time"] for r in windows]) + half, settings, n_bins)
    d_bin = _bin(session_s([r.get("marker_time") or t0 for r in dropped]) + half, settings, n_bins)
    latency = np.array([(r["emitted_time"] - r["window_end_time"]) * 1e3 for r in windows])
    pipeline_ms = np.array([r.get("latency_ms") if r.get("latency_ms") is not None else np.nan for r in windows])
    res = np.array(raw["samples"]) if raw["samples"] else np.empty((0, 4))
    res_bin = _bin(session_s(res[:, 0]), settings, n_bins) if len(res) else np.empty(0, dtype=np.int64)
    rows = []
    for b in range(n_bins):
        lat = percentiles(latency[w_bin == b])
        inside = res[res_bin == b]
        cpu = (100.0 * (inside[-1, 2] - inside[0, 2]) / (inside[-1, 0] - inside[0, 0])
               if len(inside) >= 2 and inside[-1, 0] > inside[0, 0] else float("nan"))
        rows.append({"bin": b, "from_min": b * settings.bin_minutes,
                     "windows": int((w_bin == b).sum()), "dropped": int((d_bin == b).sum()),
                     "markers_sent": int((sent_bin == b).sum()), "samples_pushed": int(pushed_bin[b]),
                     "samples_recorded": int((rec_bin == b).sum()),
                     "latency_ms": lat, "pipeline_latency_ms": percentiles(pipeline_ms[w_bin == b]),
                     "rss_mb_max": float(inside[:, 1].max()) if len(inside) else float("nan"),
                     "rss_mb_end": float(inside[-1, 1]) if len(inside) else float("nan"),
                     "cpu_percent": cpu,
                     "load1_mean": float(inside[:, 3].mean()) if len(inside) and inside.shape[1] > 3 else float("nan")})
    _, marker_values = reader.markers(f"{settings.name}-Markers")
    results_key = reader.find(f"{settings.name}-results")
    totals = {"samples_pushed": raw["n_pushed"], "samples_recorded": int(len(times)),
              "markers_sent": raw["n_markers_sent"], "markers_recorded": int(len(marker_values)),
              "windows": len(windows), "dropped": len(dropped),
              "dropped_reasons": sorted({str(r.get("reason")) for r in dropped}),
              "results_recorded": reader.n_samples(results_key), "gaps": reader.gaps(eeg),
              "session_complete": reader.complete, "events_notes": events.notes,
              "recording_backlog": reader.attrs.get("recording_backlog")}
    return {"rows": rows, "totals": totals, "verdict": verdict(rows, totals, settings)}


def verdict(rows: list[dict[str, Any]], totals: dict[str, Any], settings: SoakSettings) -> dict[str, Any]:
    """Nothing lost, and RSS / p99 flat within the stated bounds."""
    lost_samples = totals["samples_pushed"] - totals["samples_recorded"]
    unaccounted = totals["markers_sent"] - totals["windows"] - totals["dropped"]
    rss = [r["rss_mb_max"] for r in rows if math.isfinite(r["rss_mb_max"])]
    rss_growth = max(rss[1:], default=rss[0] if rss else float("nan")) - rss[0] if rss else float("nan")
    # drift, not load: the median p99 of the later half of the rows against that of the earlier half (one row
    # hit by the shared machine's load does not decide), and every row's p99 under an absolute bound
    p99 = [r["latency_ms"]["p99"] for r in rows if r["latency_ms"]["n"] >= 20]
    half = len(p99) // 2
    p99_ratio = (float(np.median(p99[-half:]) / np.median(p99[:half])) if half and np.median(p99[:half]) > 0
                 else float("nan"))
    checks = {
        "no_sample_lost": lost_samples == 0 and not totals["gaps"],
        "no_marker_lost": unaccounted == 0 and totals["markers_recorded"] == totals["markers_sent"],
        "every_result_recorded": totals["results_recorded"] == totals["windows"] + totals["dropped"],
        "rss_flat": not math.isfinite(rss_growth) or rss_growth <= settings.max_rss_growth_mb,
        "p99_flat": (not math.isfinite(p99_ratio) or p99_ratio <= settings.max_p99_ratio)
        and max(p99, default=0.0) <= settings.max_p99_ms,
    }
    return {"lost_samples": lost_samples, "markers_unaccounted": unaccounted, "rss_growth_mb": rss_growth,
            "p99_later_over_earlier": p99_ratio, "p99_max_ms": max(p99, default=float("nan")), **checks, "ok": all(checks.values())}


def print_report(res: dict[str, Any], settings: SoakSettings) -> None:
    rows = [[f"{r['from_min']:g}-{r['from_min'] + settings.bin_minutes:g}", r["windows"], r["dropped"],
             r["markers_sent"], r["samples_pushed"], r["samples_recorded"], r["latency_ms"]["p50"],
             r["latency_ms"]["p99"], r["pipeline_latency_ms"]["p99"], r["rss_mb_max"], r["cpu_percent"],
             r.get("load1_mean", float("nan"))]
            for r in res["rows"]]
    print(format_table(["session min", "windows", "dropped", "markers sent", "samples pushed", "samples recorded",
                        "latency p50 ms", "latency p99 ms", "latency_ms p99", "RSS MiB (max)", "CPU % of a core",
                        "load 1 min"],
                       rows))
    t, v = res["totals"], res["verdict"]
    print(f"\ntotal: {t['samples_recorded']}/{t['samples_pushed']} samples recorded, {t['windows']} windows + "
          f"{t['dropped']} dropped {t['dropped_reasons']} for {t['markers_sent']} markers sent "
          f"({t['markers_recorded']} recorded), {t['results_recorded']} results recorded, {len(t['gaps'])} gaps")
    backlog = t.get("recording_backlog") or {}
    if backlog:
        print(f"recording writer: backlog peak {backlog['peak_mib']:.1f} MiB (bound {backlog['limit_bytes'] / 2**20:g}), "
              f"decoder waited for the disk {backlog['waits']} times, {backlog['waited_s']:.1f} s")
    print(f"verdict: {'OK' if v['ok'] else 'FAILED'} (lost samples {v['lost_samples']}, markers unaccounted "
          f"{v['markers_unaccounted']}, RSS growth {v['rss_growth_mb']:.1f} MiB <= {settings.max_rss_growth_mb:g}, "
          f"p99 later/earlier half {v['p99_later_over_earlier']:.2f} <= {settings.max_p99_ratio:g}, "
          f"p99 max {v['p99_max_ms']:.1f} ms <= {settings.max_p99_ms:g})")


def parse_args(argv: list[str] | None = None) -> tuple[SoakSettings, Path, Path | None]:
    p = common.make_parser(__doc__, "python -m benchmarks.soak --hours 1 --speed 20")
    d = SoakSettings()
    p.add_argument("--hours", type=float, default=d.hours, help=f"simulated hours [{d.hours:g}]")
    p.add_argument("--speed", type=float, default=d.speed, help=f"times faster than real time [{d.speed:g}]")
    p.add_argument("--sfreq", type=float, default=d.sfreq, help=f"amplifier rate, Hz [{d.sfreq:g}]")
    p.add_argument("--montage", default=d.montage, help=f"mne montage naming the channels [{d.montage}]")
    p.add_argument("--bin-minutes", type=float, default=d.bin_minutes,
                   help=f"simulated minutes per reported row [{d.bin_minutes:g}: per hour]")
    p.add_argument("--max-rss-growth-mb", type=float, default=d.max_rss_growth_mb,
                   help=f"flat: the decoder's RSS grows at most this much after the first row [{d.max_rss_growth_mb:g}]")
    p.add_argument("--max-p99-ratio", type=float, default=d.max_p99_ratio,
                   help="flat: median p99 latency of the later half of the rows / that of the earlier half "
                        f"[{d.max_p99_ratio:g}]")
    p.add_argument("--max-p99-ms", type=float, default=d.max_p99_ms,
                   help=f"and every row's p99 latency at most this [{d.max_p99_ms:g}]")
    p.add_argument("--drain", type=float, default=d.drain_s,
                   help=f"seconds the decoder runs on after the stream ends, before it is stopped [{d.drain_s:g}]")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the checkpoint, events file and recording here [a temporary folder, removed]")
    common.add_seed(p)
    common.add_out(p, "soak")
    args = p.parse_args(argv)
    common.checked(p, check_float, "--hours", args.hours, positive=True)
    common.checked(p, check_float, "--speed", args.speed, positive=True)
    common.checked(p, check_float, "--sfreq", args.sfreq, positive=True)
    common.checked(p, check_float, "--bin-minutes", args.bin_minutes, positive=True)
    common.checked(p, check_float, "--max-rss-growth-mb", args.max_rss_growth_mb, low=0.0)
    common.checked(p, check_float, "--max-p99-ratio", args.max_p99_ratio, low=1.0)
    common.checked(p, check_float, "--drain", args.drain, low=0.0)
    common.checked(p, check_float, "--max-p99-ms", args.max_p99_ms, positive=True)
    settings = SoakSettings(hours=args.hours, speed=args.speed, sfreq=args.sfreq, montage=args.montage,
                            bin_minutes=args.bin_minutes, seed=args.seed, max_rss_growth_mb=args.max_rss_growth_mb,
                            max_p99_ratio=args.max_p99_ratio, max_p99_ms=args.max_p99_ms, drain_s=args.drain)
    return settings, args.out, args.workdir


def main(argv: list[str] | None = None) -> int:
    settings, out, workdir = parse_args(argv)
    # what analyse() needs, imported before the hours of the run: a checkout changed meanwhile must not
    # mix module versions at the end (a 24-h run was lost to an ImportError that way)
    import bci.runtime.sinks  # noqa: F401
    import streams.session  # noqa: F401
    import streams.simulate  # noqa: F401

    machine = common.machine_info()
    print(f"soak: {settings.hours:g} h at speed {settings.speed:g} (~{settings.hours * 3600 / settings.speed:.0f} s), "
          f"{settings.montage} at {settings.sfreq:g} Hz ...", flush=True)
    t = time.monotonic()
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        res = analyse(run_soak(settings, workdir), settings)
    else:
        with common.scratch_dir() as tmp:
            res = analyse(run_soak(settings, tmp), settings)
    wall = time.monotonic() - t
    print()
    print_report(res, settings)
    sections = {"config": {**settings.__dict__, "wall_s": wall, "load_avg_1min_end": common.load_avg()}, **res}
    print(f"\nwall {wall:.0f} s, load average (1 min) {machine.get('load_avg_1min')} -> {common.load_avg():.2f}")
    print(f"wrote {common.write_report(out, machine, sections, benchmark='soak')}")
    return 0 if res["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
