"""Online resampling to a model's rate: our polyphase FIR (bci.preprocessing.RationalResampler) vs soxr.

For each stream rate (default 250, 256, 500, 512, 1024, 2048, 5000 Hz) to ``--to`` (1000 Hz):

1. Cost: ``--seconds`` of 128-channel noise fed in 10-sample chunks and in random 1-97-sample
   chunks (seeded): microseconds per call (p50/p99) and % of one core (time / signal time).
2. Accuracy against the offline reference, ``scipy.signal.resample_poly`` on the whole signal
   (its default filter): max abs error away from the edges (0.25 s) for a signal of sines from
   1 to 40 Hz of unit amplitude.
3. Passband and time base: a unit sine at each of a few frequencies up to 0.8 x the lower
   Nyquist frequency; the output is fitted with a sine at the same frequency on the output's
   nominal time base (output ``k`` at ``k / to`` s after input sample 0): the gain gives the
   passband ripple (max |gain| in dB) and the phase gives the group delay, in output samples
   (0 means marker -> sample mapping is exact).
4. Chunking: max abs difference between the 10-sample and the random chunkings' outputs.
5. Lag: how far the output trails the input while streaming 10-sample chunks (p50 over the calls
   after the first second, ms): the latency the resampler adds to every window.

soxr (``soxr.ResampleStream``, quality HQ and VHQ, float64) is optional: without it, one line says
so and the other results are still reported. Timings are noisy on a shared machine.

Example::

    python -m benchmarks.resampler                       # ~1 min on 2 vCPUs
    python -m benchmarks.resampler --rates 512 --seconds 5
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import scipy.signal as ss

from benchmarks import common
from benchmarks.common import format_table, percentiles
from bci.preprocessing import RationalResampler, rational_ratio
from streams._checks import check_float

DEFAULT_RATES = (250.0, 256.0, 500.0, 512.0, 1024.0, 2048.0, 5000.0)
N_CHANNELS = 128
EDGE_SECONDS = 0.25

#: A candidate: ``make(sfreq_in, sfreq_out, n_channels)`` returns ``process(chunk) -> output``.
Factory = Callable[[float, float, int], Callable[[np.ndarray], np.ndarray]]


def ours(sfreq_in: float, sfreq_out: float, n_channels: int) -> Callable[[np.ndarray], np.ndarray]:
    """The runtime's resampler (timestamps computed too, as the pipeline does)."""
    res = RationalResampler(sfreq_in, sfreq_out, n_channels)
    return lambda chunk: res.process(chunk, np.zeros(len(chunk)))[0]


def soxr_factory(quality: str) -> Factory | None:
    """``soxr.ResampleStream`` at ``quality``, or None (and one line) when soxr is missing."""
    try:
        import soxr
    except ImportError:
        return None

    def make(sfreq_in: float, sfreq_out: float, n_channels: int) -> Callable[[np.ndarray], np.ndarray]:
        stream = soxr.ResampleStream(sfreq_in, sfreq_out, n_channels, dtype="float64", quality=quality)
        return lambda chunk: stream.resample_chunk(np.ascontiguousarray(chunk, dtype=np.float64))

    return make


def _run(make: Factory, sfreq: float, to: float, x: np.ndarray, sizes: list[int],
         lag: list[float] | None = None) -> tuple[np.ndarray, list[float]]:
    """Feed ``x`` in chunks of ``sizes``; the output and the per-call times in microseconds.

    ``lag`` (if given) receives, after each call past the first second, how far the output lags
    the input: ``(inputs / sfreq - outputs / to)`` in ms (the latency a resampler adds).
    """
    process, parts, costs, i, n_out = make(sfreq, to, x.shape[1]), [], [], 0, 0
    for size in sizes:
        chunk = x[i : i + size]
        t0 = time.perf_counter()
        parts.append(process(chunk))
        costs.append((time.perf_counter() - t0) * 1e6)
        i += size
        n_out += len(parts[-1])
        if lag is not None and i > sfreq:
            lag.append((i / sfreq - n_out / to) * 1e3)
    return np.concatenate(parts), costs


def _sizes(n: int, rng: np.random.Generator | None) -> list[int]:
    sizes, total = [], 0
    while total < n:
        size = min(n - total, int(rng.integers(1, 98)) if rng is not None else 10)
        sizes.append(size)
        total += size
    return sizes


def _fit_sine(y: np.ndarray, f: float, to: float, skip: int) -> tuple[float, float]:
    """Gain and delay (output samples) of ``y`` against ``sin(2 pi f k / to)``."""
    k = np.arange(skip, len(y) - skip)
    w = 2 * np.pi * f * k / to
    a, b = np.linalg.lstsq(np.stack([np.sin(w), np.cos(w)], 1), y[skip : len(y) - skip], rcond=None)[0]
    phase = np.arctan2(b, a)  # y = g sin(w + phase) -> delayed by -phase / (2 pi f)
    return float(np.hypot(a, b)), float(-phase / (2 * np.pi * f) * to)


def measure(name: str, make: Factory, sfreq: float, to: float, seconds: float, seed: int) -> dict[str, Any]:
    """Cost, accuracy, passband and delay of one candidate at one rate."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    noise = rng.standard_normal((n, N_CHANNELS))
    lag: list[float] = []
    y10, cost10 = _run(make, sfreq, to, noise, _sizes(n, None), lag)
    yr, costr = _run(make, sfreq, to, noise, _sizes(n, np.random.default_rng(seed + 1)))
    m = min(len(y10), len(yr))
    # accuracy against resample_poly on the whole signal
    t = np.arange(int(4 * sfreq)) / sfreq
    sig = np.sin(2 * np.pi * np.linspace(1, 40, 8)[None, :] * t[:, None] + np.arange(8))
    up, down = rational_ratio(sfreq, to)
    ref = ss.resample_poly(sig, up, down, axis=0)
    got, _ = _run(make, sfreq, to, sig, _sizes(len(sig), None))
    skip = int(EDGE_SECONDS * to)
    stop = min(len(got), len(ref)) - skip
    err = float(np.abs(got[skip:stop] - ref[skip:stop]).max())
    # passband and group delay
    nyq = min(sfreq, to) / 2
    gains, delays = [], []
    for f in (1.0, 10.0, 40.0, 0.5 * nyq, 0.8 * nyq):
        tone = np.sin(2 * np.pi * f * t)[:, None]
        y, _ = _run(make, sfreq, to, tone, _sizes(len(tone), None))
        g, d = _fit_sine(y[:, 0], f, to, skip)
        gains.append(g)
        delays.append(d)
    seconds_total = n / sfreq
    return {
        "method": name, "sfreq": sfreq, "to": to, "up": up, "down": down,
        "us_per_call_10": percentiles(cost10), "us_per_call_random": percentiles(costr),
        "cpu_percent_10": 100 * sum(cost10) / 1e6 / seconds_total,
        "cpu_percent_random": 100 * sum(costr) / 1e6 / seconds_total,
        "max_abs_error_vs_resample_poly": err,
        "passband_ripple_db": float(np.abs(20 * np.log10(gains)).max()),
        "group_delay_samples": delays, "max_abs_group_delay_samples": float(np.abs(delays).max()),
        "output_lag_ms": percentiles(lag),
        "chunking_max_abs_diff": float(np.abs(y10[:m] - yr[:m]).max()) if m else float("nan"),
        "n_out_10": len(y10), "n_out_random": len(yr),
    }


def main(argv: list[str] | None = None) -> int:
    p = common.make_parser(__doc__, "python -m benchmarks.resampler --rates 512 2048 --seconds 5")
    p.add_argument("--rates", type=float, nargs="+", default=list(DEFAULT_RATES), help="stream rates in Hz")
    p.add_argument("--to", type=float, default=1000.0, help="model rate in Hz [1000]")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of 128-channel data per cost run [10]")
    common.add_seed(p)
    common.add_out(p, "resampler")
    args = p.parse_args(argv)
    common.checked(p, check_float, "--seconds", args.seconds, positive=True)
    common.checked(p, check_float, "--to", args.to, positive=True)
    machine = common.machine_info()
    candidates: list[tuple[str, Factory]] = [("polyphase (ours)", ours)]
    for quality in ("HQ", "VHQ"):
        make = soxr_factory(quality)
        if make is None:
            print("soxr: not installed (pip install soxr); its rows are skipped")
            break
        candidates.append((f"soxr {quality}", make))
    results = [measure(name, make, rate, args.to, args.seconds, args.seed)
               for rate in args.rates for name, make in candidates]
    rows = [[r["method"], f"{r['sfreq']:g}", f"{r['up']}/{r['down']}", r["us_per_call_10"]["p50"],
             r["us_per_call_random"]["p50"], r["cpu_percent_10"], f"{r['max_abs_error_vs_resample_poly']:.1e}",
             f"{r['passband_ripple_db']:.4f}", f"{r['max_abs_group_delay_samples']:.4f}",
             f"{r['chunking_max_abs_diff']:.1e}", r["output_lag_ms"]["p50"]] for r in results]
    print(format_table(["method", "Hz", "up/down", "us/call 10", "us/call 1-97", "% core (10)",
                        "max err vs resample_poly", "ripple dB", "|delay| samples", "chunking diff", "lag ms p50"], rows))
    sections = {"config": {"rates": args.rates, "to": args.to, "seconds": args.seconds, "seed": args.seed,
                           "n_channels": N_CHANNELS, "edge_seconds": EDGE_SECONDS}, "results": results}
    print(f"\nwrote {common.write_report(args.out, machine, sections, benchmark='resampler')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
