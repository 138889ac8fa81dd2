"""An independent amplifier that starts quiet: pylsl and numpy only, no project imports.

For the machine-fault tests (tests/test_faults_machine.py). An EEG outlet pushes 10-sample
chunks in real time; channel 0 of sample ``k`` holds ``float32(k * 1e-9)`` (a lost or repeated
sample is visible). For the first ``--quiet`` seconds the other channels are 0 (electrodes not
yet attached: a recorder's chunks of that part compress to a few KB), then seeded noise (chunks
that hardly compress): a per-file size limit between the two sizes is reached mid-recording. A
marker outlet pushes ``stim/imgNNNN/k`` every ``--marker-every`` seconds, stamped with the time of
EEG sample ``k``.

Prints ``ready`` once the outlets exist and ``pushed N M`` (samples, markers) at the end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pylsl


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--quiet", type=float, default=2.0, help="seconds of flat channels 1.. before the noise")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--marker-every", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    info = pylsl.StreamInfo(a.name, "EEG", a.channels, a.rate, "float32", a.name + "-src")
    chans = info.desc().append_child("channels")
    for c in range(a.channels):
        ch = chans.append_child("channel")
        ch.append_child_value("label", f"E{c}")
        ch.append_child_value("type", "EEG")
        ch.append_child_value("unit", "volts")
    eeg = pylsl.StreamOutlet(info, chunk_size=10)
    markers = pylsl.StreamOutlet(pylsl.StreamInfo(a.name + "-Markers", "Markers", 1, 0.0, "string", a.name + "-m"))
    print("ready", flush=True)
    for outlet in (eeg, markers):
        outlet.wait_for_consumers(30)
    t0 = pylsl.local_clock() + 0.05
    n, n_quiet, every = int(a.duration * a.rate), int(a.quiet * a.rate), int(round(a.marker_every * a.rate))
    n_markers = 0
    for first in range(0, n, 10):
        k = np.arange(first, min(first + 10, n))
        data = np.zeros((len(k), a.channels), np.float32)
        data[:, 0] = k * 1e-9
        loud = k >= n_quiet
        data[loud, 1:] = rng.normal(0.0, 1e-5, (int(loud.sum()), a.channels - 1))
        t_last = t0 + k[-1] / a.rate
        time.sleep(max(0.0, t_last - pylsl.local_clock()))
        eeg.push_chunk(data.tolist(), t_last)
        for j in k[k % every == 0]:
            markers.push_sample([f"stim/img{n_markers % 50:04d}/{j}"], t0 + j / a.rate)
            n_markers += 1
    print(f"pushed {n} {n_markers}", flush=True)
    time.sleep(1.0)


if __name__ == "__main__":
    main()
