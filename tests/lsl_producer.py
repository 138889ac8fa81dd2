"""A deterministic LSL outlet run in its own process by the tests.

Sample ``i`` has value ``i + c / 1000`` on channel ``c`` (so loss, duplication and
reordering are visible) and timestamp ``t0 + i / rate``. Prints ``ready`` once the
outlet exists, then pushes ``--chunk`` samples at a time in real time.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from streams.description import StreamDescription
from streams.lsl import Outlet, local_clock


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--type", default="EEG")
    p.add_argument("--source-id", default=None)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--start-index", type=int, default=0)
    p.add_argument("--wait-consumer", type=float, default=10.0)
    p.add_argument("--nan-every", type=int, default=0, help="put NaN in every k-th sample")
    p.add_argument("--markers", action="store_true", help="string stream: one marker every 0.1 s")
    a = p.parse_args()
    if a.markers:
        desc = StreamDescription(a.name, "Markers", a.source_id or a.name, ("marker",), nominal_rate=0.0, dtype="string")
    else:
        desc = StreamDescription(
            a.name, a.type, a.source_id or a.name,
            tuple(f"C{c}" for c in range(a.channels)), nominal_rate=a.rate,
        )
    outlet = Outlet(desc)
    print("ready", flush=True)
    outlet.wait_for_consumers(a.wait_consumer)
    t0 = local_clock() + 0.05
    if a.markers:
        n = int(a.duration / 0.1)
        for i in range(n):
            t = t0 + i * 0.1
            time.sleep(max(0.0, t - local_clock()))
            outlet.push_sample([f"stim/img{i:04d}/label {i}"], t)
    else:
        n = int(a.duration * a.rate)
        chans = np.arange(a.channels) / 1000.0
        for first in range(0, n, a.chunk):
            idx = np.arange(first, min(first + a.chunk, n)) + a.start_index
            data = (idx[:, None] + chans[None, :]).astype(np.float32)
            if a.nan_every:
                data[idx % a.nan_every == 0, 0] = np.nan
            t_last = t0 + (idx[-1] - a.start_index) / a.rate
            time.sleep(max(0.0, t_last - local_clock()))
            outlet.push_chunk(data, t_last)
    print(f"pushed {n}", flush=True)
    time.sleep(0.5)  # let inlets drain before the outlet goes away
    outlet.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
