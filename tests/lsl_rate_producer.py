"""An independent amplifier at any rate: EEG + marker outlets using only pylsl and numpy (no project imports).

EEG: ``--channels`` channels at ``--rate`` Hz, float32 volts, a seeded mix of sines and noise, pushed in
``--chunk``-sample chunks in real time, sample ``i`` stamped ``t0 + i / rate``. Markers ``stim/imgNNNN/k``
at ``t0 + (k + 0.3) / rate`` (between two samples on purpose), each pushed when its sample is.
Prints ``ready`` once both outlets exist and ``done`` after the last sample; the first sample comes
``--start-delay`` seconds after both outlets have a consumer (time for a second consumer to connect).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pylsl


def _outlet(name: str, kind: str, n_channels: int, rate: float, fmt: int) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, kind, n_channels, rate, fmt, name + "-" + kind)
    if kind == "EEG":
        chans = info.desc().append_child("channels")
        for c in range(n_channels):
            ch = chans.append_child("channel")
            ch.append_child_value("label", f"E{c}")
            ch.append_child_value("unit", "volts")
            ch.append_child_value("type", "EEG")
    return pylsl.StreamOutlet(info)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--rate", type=float, default=512.0)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--markers-at", default="256,614,973", help="sample indices of the markers")
    p.add_argument("--start-delay", type=float, default=0.0,
                   help="seconds to wait after the first consumers before the first sample (for more consumers)")
    a = p.parse_args()
    eeg = _outlet(a.name, "EEG", a.channels, a.rate, pylsl.cf_float32)
    mk = _outlet(a.name + "-Markers", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string)
    print("ready", flush=True)
    for outlet in (eeg, mk):
        outlet.wait_for_consumers(20)
    n = int(a.duration * a.rate)
    rng = np.random.default_rng(7)
    t = np.arange(n) / a.rate
    freqs = rng.uniform(2.0, 30.0, (1, a.channels))
    data = (1e-5 * np.sin(2 * np.pi * freqs * t[:, None]) + 2e-6 * rng.standard_normal((n, a.channels)))
    data = data.astype(np.float32)
    marks = [int(k) for k in a.markers_at.split(",")]
    t0 = pylsl.local_clock() + 0.2 + a.start_delay
    for first in range(0, n, a.chunk):
        last = min(first + a.chunk, n) - 1
        time.sleep(max(0.0, t0 + last / a.rate - pylsl.local_clock()))
        eeg.push_chunk(data[first : last + 1].tolist(), t0 + last / a.rate)
        for i, k in enumerate(marks):
            if first <= k <= last:
                mk.push_sample([f"stim/img{i:04d}/{k}"], t0 + (k + 0.3) / a.rate)
    print("done", flush=True)
    time.sleep(1.0)


if __name__ == "__main__":
    main()
