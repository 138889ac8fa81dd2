"""EEG + marker outlets in their own process, with awkward timing on purpose (used by the runtime tests).

EEG sample ``i`` has value ``i`` on every channel and timestamp ``t0 + i / rate``. A marker
``stim/imgNNNN/k`` refers to sample ``k`` and carries its timestamp. Options make chunks
odd-sized, markers early (pushed before their sample), late (pushed well after), or
duplicated.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from streams.description import StreamDescription
from streams.lsl import Outlet, local_clock


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--chunk", default="10", help="samples per chunk, or 'random' (1..1000)")
    p.add_argument("--markers-at", default="500,1200,1900", help="sample indices of markers")
    p.add_argument("--marker-shift", type=float, default=0.0,
                   help="push each marker this many seconds after (>0) or before (<0) its sample is pushed")
    p.add_argument("--duplicate", action="store_true", help="push every marker twice")
    a = p.parse_args()
    eeg = Outlet(StreamDescription(a.name, "EEG", a.name, tuple(f"E{i}" for i in range(a.channels)),
                                   nominal_rate=a.rate))
    mk = Outlet(StreamDescription(a.name + "-Markers", "Markers", a.name + "-m", ("marker",), dtype="string"))
    print("ready", flush=True)
    eeg.wait_for_consumers(20)
    mk.wait_for_consumers(20)
    rng = np.random.default_rng(0)
    n = int(a.duration * a.rate)
    marks = sorted(int(k) for k in a.markers_at.split(","))
    t0 = local_clock() + 0.1
    pending = [(t0 + k / a.rate + a.marker_shift, k) for k in marks]  # (push time, sample)
    first = 0
    while first < n:
        size = int(rng.integers(1, 1001)) if a.chunk == "random" else int(a.chunk)
        last = min(first + size, n) - 1
        due = t0 + last / a.rate
        _push_markers_due(mk, pending, min(due, local_clock()), t0, a, marks)
        time.sleep(max(0.0, due - local_clock()))
        idx = np.arange(first, last + 1)
        eeg.push_chunk(np.repeat(idx[:, None], a.channels, axis=1).astype(np.float32), due)
        _push_markers_due(mk, pending, due, t0, a, marks)
        first = last + 1
    end = local_clock() + 1.0
    while pending and local_clock() < end:
        _push_markers_due(mk, pending, local_clock(), t0, a, marks)
        time.sleep(0.01)
    print("done", flush=True)
    time.sleep(1.0)


def _push_markers_due(mk: Outlet, pending: list, now: float, t0: float, a, marks) -> None:
    while pending and pending[0][0] <= now:
        _, k = pending.pop(0)
        for _ in range(2 if a.duplicate else 1):
            mk.push_sample([f"stim/img{marks.index(k):04d}/{k}"], t0 + k / a.rate)


if __name__ == "__main__":
    main()
