"""An independent amplifier for the tests: pylsl and numpy only, no project imports.

An EEG outlet pushes random-sized chunks (1-97 samples) in real time; a marker outlet
pushes ``stim/imgNNNN/k`` markers from the first second on, each stamped with the time of
EEG sample ``k``. After ``--before`` seconds the EEG outlet is destroyed (the amplifier
drops out) and, ``--dropout`` seconds later, recreated with the same source_id (and,
with ``--after-rate`` / ``--after-channels``, another rate or channel count) for
``--after`` seconds; the markers go on throughout. Channel 0 of sample ``k`` holds
``k * 1e-9`` (so a lost or repeated sample is visible), the others seeded noise (plus a
DC offset of 0.5 mV after the dropout).

Prints ``ready`` once the outlets exist, ``pushed N`` when the first outlet is gone,
``done N`` at the end (N: samples pushed in all).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pylsl


def eeg_outlet(name: str, rate: float, channels: int, first_label: int = 0) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "EEG", channels, rate, "float32", name + "-src")
    chans = info.desc().append_child("channels")
    for c in range(channels):
        ch = chans.append_child("channel")
        ch.append_child_value("label", f"E{c + first_label}")
        ch.append_child_value("type", "EEG")
        ch.append_child_value("unit", "volts")
    return pylsl.StreamOutlet(info, chunk_size=1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--before", type=float, default=2.5)
    p.add_argument("--dropout", type=float, default=2.0)
    p.add_argument("--after", type=float, default=2.5)
    p.add_argument("--after-rate", type=float, default=None)
    p.add_argument("--after-channels", type=int, default=None)
    p.add_argument("--marker-every", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--first-label", type=int, default=0, help="channels are labelled E<first>, E<first+1>, ...")
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    markers = pylsl.StreamOutlet(pylsl.StreamInfo(a.name + "-Markers", "Markers", 1, 0.0, "string", a.name + "-m"))
    eeg = eeg_outlet(a.name, a.rate, a.channels, a.first_label)
    print("ready", flush=True)
    for outlet in (eeg, markers):
        outlet.wait_for_consumers(30)
    state = {"k": 0, "next_marker": 0.1}

    def run(outlet: pylsl.StreamOutlet, rate: float, channels: int, seconds: float, offset: float) -> None:
        t0 = pylsl.local_clock() + 0.02
        k0, n = state["k"], int(seconds * rate)
        first = 0
        while first < n:
            size = min(int(rng.integers(1, 98)), n - first)
            idx = np.arange(first, first + size)
            stamps = t0 + idx / rate
            time.sleep(max(0.0, stamps[-1] - pylsl.local_clock()))
            data = rng.normal(0.0, 1e-5, (size, channels)).astype(np.float32)
            data[:, 1:] += offset  # the amplifier comes back with another DC offset
            data[:, 0] = ((k0 + idx) * 1e-9).astype(np.float32)
            outlet.push_chunk(data.tolist(), float(stamps[-1]))
            # markers up to now, each at one of this outlet's sample times
            while state["next_marker"] <= (stamps[-1] - t0):
                j = int(round(state["next_marker"] * rate))
                markers.push_sample([f"stim/img{j:04d}/{k0 + j}"], float(t0 + j / rate))
                state["next_marker"] += a.marker_every
            first += size
        state["k"] = k0 + n
        state["next_marker"] = 0.1

    run(eeg, a.rate, a.channels, a.before, 0.0)
    time.sleep(1.0)  # let liblsl send the last chunk before the outlet goes (0.3 s lost samples under load)
    del eeg  # the amplifier drops out
    print(f"pushed {state['k']}", flush=True)
    end = time.monotonic() + a.dropout
    t_drop = pylsl.local_clock()
    while time.monotonic() < end:  # markers go on during the dropout (they fall into the gap)
        time.sleep(a.marker_every)
        markers.push_sample([f"during/{pylsl.local_clock() - t_drop:.2f}"], pylsl.local_clock())
    rate = a.after_rate or a.rate
    channels = a.after_channels or a.channels
    eeg = eeg_outlet(a.name, rate, channels, a.first_label)
    eeg.wait_for_consumers(15)
    run(eeg, rate, channels, a.after, 5e-4)
    time.sleep(0.5)
    print(f"done {state['k']}", flush=True)
    time.sleep(1.0)


if __name__ == "__main__":
    main()
