"""An independent faulty amplifier for the stream-fault tests: pylsl and numpy only, no project imports.

An EEG outlet (``--channels`` float32 channels declared at ``--rate`` Hz) and a marker outlet. Channel 0 of
sample ``k`` holds ``k`` (exact in float32 up to 16.7 M samples), the others seeded noise. Sample ``k`` is stamped
``t0 + k / true_rate`` (``--true-rate``, default the declared rate), every sample with its own timestamp,
and pushed when ``t0 + k / true_rate / speed`` is reached (``--speed`` > 1: faster than real time). A marker
``stim/imgNNNN/k`` is stamped with sample ``k``'s timestamp and pushed with it, one every
``--marker-every`` samples from ``--marker-from`` on (``--marker-burst B``: B markers per sample slot, on
B consecutive samples: the flood). Faults:

* ``--nan-at START:LEN:CHANS`` (repeatable): samples ``[START, START+LEN)`` are NaN in the first CHANS
  channels; ``--inf-at K`` (repeatable): sample ``K`` is +inf in channel 1;
* ``--jump-at K --jump S --dropout D``: after sample ``K`` the EEG outlet is destroyed; D s later it comes
  back with the same source_id, its timestamps ``S`` seconds off the markers' clock (the amplifier's clock
  jumped); the markers go on, on the true clock.

Prints ``ready`` once the outlets exist, ``done N M`` after the last sample (N samples, M markers pushed).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pylsl


def eeg_outlet(name: str, rate: float, channels: int) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "EEG", channels, rate, "float32", name + "-src")
    chans = info.desc().append_child("channels")
    for c in range(channels):
        ch = chans.append_child("channel")
        ch.append_child_value("label", f"E{c}")
        ch.append_child_value("type", "EEG")
        ch.append_child_value("unit", "volts")
    return pylsl.StreamOutlet(info, chunk_size=32)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--true-rate", type=float, default=None)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="stream time to push")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--chunk", type=int, default=20)
    p.add_argument("--marker-every", type=int, default=700)
    p.add_argument("--marker-from", type=int, default=600)
    p.add_argument("--marker-until", type=int, default=None, help="no marker at or after this sample")
    p.add_argument("--marker-burst", type=int, default=1)
    p.add_argument("--nan-at", action="append", default=[])
    p.add_argument("--inf-at", action="append", type=int, default=[])
    p.add_argument("--jump-at", type=int, default=None)
    p.add_argument("--jump", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=1.0)
    p.add_argument("--tail", type=float, default=1.5, help="seconds to keep the outlets after the last sample")
    a = p.parse_args()
    true_rate = a.true_rate or a.rate
    n = int(a.seconds * true_rate)
    rng = np.random.default_rng(3)
    markers = pylsl.StreamOutlet(pylsl.StreamInfo(a.name + "-Markers", "Markers", 1, 0.0, "string", a.name + "-m"))
    eeg = eeg_outlet(a.name, a.rate, a.channels)
    print("ready", flush=True)
    for outlet in (eeg, markers):
        outlet.wait_for_consumers(30)
    until = n - 1000 if a.marker_until is None else a.marker_until
    marks = [k for k in range(a.marker_from, until, a.marker_every) for k in range(k, k + a.marker_burst)]
    bad = np.zeros((n, a.channels), bool)
    for spec in a.nan_at:
        start, length, chans = (int(x) for x in spec.split(":"))
        bad[start : start + length, :chans] = True
    t0 = pylsl.local_clock() + 0.2
    wall0, offset, next_mark, n_marks = t0, 0.0, 0, 0
    first = 0
    while first < n:
        last = min(first + a.chunk, n)
        if a.jump_at is not None and first <= a.jump_at < last:
            last = a.jump_at + 1
        idx = np.arange(first, last)
        stamps = t0 + idx / true_rate
        time.sleep(max(0.0, wall0 + (stamps[-1] - t0) / a.speed - pylsl.local_clock()))
        data = rng.normal(0.0, 1e-5, (len(idx), a.channels)).astype(np.float32)
        data[:, 0] = idx
        data[bad[first:last]] = np.nan
        for k in a.inf_at:
            if first <= k < last:
                data[k - first, 1] = np.inf
        eeg.push_chunk(data.tolist(), (stamps + offset).tolist())
        while next_mark < len(marks) and marks[next_mark] < last:
            k = marks[next_mark]
            markers.push_sample([f"stim/img{next_mark % 10000:04d}/{k}"], float(t0 + k / true_rate))
            next_mark += 1
            n_marks += 1
        first = last
        if a.jump_at is not None and last == a.jump_at + 1:  # the amplifier restarts on another clock
            time.sleep(0.5)  # let liblsl send the last chunk
            del eeg
            time.sleep(a.dropout)
            eeg = eeg_outlet(a.name, a.rate, a.channels)
            eeg.wait_for_consumers(15)
            t0 += pylsl.local_clock() - (t0 + (last - 1) / true_rate)  # the true clock went on during the dropout
            wall0 = pylsl.local_clock() - (last - 1) / true_rate / a.speed
            offset = a.jump
    print(f"done {n} {n_marks}", flush=True)
    time.sleep(a.tail)


if __name__ == "__main__":
    main()
