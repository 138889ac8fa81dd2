"""An independent "amplifier" for the tests: pylsl + numpy only (no project import), in its own process.

Reads ``--data`` (an ``.npz`` with ``data (n, c)`` float32, ``times (n,)``, ``names (c,)``,
``marker_times (m,)``, ``marker_values (m,)``), opens an EEG outlet whose channels carry
``names`` and a string marker outlet, prints ``ready``, waits for a consumer on both, then
sends the data in chunks of ``--chunk`` samples in real time (sample ``i`` stamped
``t0 + times[i] - times[0]``) and each marker when its sample is due, stamped the same way.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pylsl


def _outlet(name: str, kind: str, names: list[str], rate: float, fmt: int) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, kind, len(names), rate, fmt, f"{name}-amp")
    chans = info.desc().append_child("channels")
    for n in names:
        ch = chans.append_child("channel")
        ch.append_child_value("label", n)
        ch.append_child_value("type", "EEG" if kind == "EEG" else "Markers")
        ch.append_child_value("unit", "volts" if kind == "EEG" else "")
    return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--wait-consumer", type=float, default=20.0)
    a = p.parse_args()
    f = np.load(a.data, allow_pickle=False)
    data, times, names = f["data"].astype(np.float32), f["times"], [str(n) for n in f["names"]]
    m_times, m_values = f["marker_times"], [str(v) for v in f["marker_values"]]
    eeg = _outlet(a.name, "EEG", names, a.rate, pylsl.cf_float32)
    markers = _outlet(a.name + "-Markers", "Markers", ["marker"], pylsl.IRREGULAR_RATE, pylsl.cf_string)
    print("ready", flush=True)
    if not (eeg.wait_for_consumers(a.wait_consumer) and markers.wait_for_consumers(a.wait_consumer)):
        print("no consumer", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.3)
    t0 = pylsl.local_clock() + 0.2
    rel = times - times[0]
    next_marker = 0
    for first in range(0, len(data), a.chunk):
        last = min(first + a.chunk, len(data)) - 1
        stamp = t0 + rel[last]
        time.sleep(max(0.0, stamp - pylsl.local_clock()))
        eeg.push_chunk(data[first:last + 1], stamp)
        while next_marker < len(m_times) and m_times[next_marker] - times[0] <= rel[last]:
            markers.push_sample([m_values[next_marker]], t0 + m_times[next_marker] - times[0])
            next_marker += 1
    print(f"pushed {len(data)}", flush=True)
    time.sleep(1.0)  # let the inlets drain before the outlets go away
    sys.exit(0)


if __name__ == "__main__":
    main()
