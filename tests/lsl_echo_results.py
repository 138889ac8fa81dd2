"""An independent stand-in for ``bci live``'s results outlet, answering a marker stream (pylsl + numpy only).

Opens a string outlet of type ``BCIResults`` (``--name``), prints ``ready``, then reads the
marker stream ``--markers`` and answers each ``stim/<id>/<label>`` marker with one JSON
record in the runtime's format (``docs/runtime.md``, *Outputs*) following ``--plan``
(cycled, one entry per marker):

* ``hit``: a ``window`` record whose top-k starts with the marker's image;
* ``wrong``: a ``window`` record whose top-1 is the next id of ``--ids`` after the marker's image;
* ``drop``: a ``dropped`` record (reason ``gap``);
* ``late``: a ``hit`` answer ``--late`` seconds after the marker (after the presenter's timeout);
* ``skip``: no answer at all.

Records carry ``marker_time`` (the marker's timestamp on this process's clock) and are
pushed with ``emitted_time`` as their timestamp, as the runtime's sink does. One malformed
sample (not JSON) goes out before the first answer. Prints ``answered N`` at the end.
"""

from __future__ import annotations

import argparse
import json
import time

import pylsl


def _record(kind: str, marker: str, marker_time: float, ids: list[str], n: int) -> dict | None:
    _, image_id, label = (marker.split("/") + [""])[:3]
    now = pylsl.local_clock()
    base = {"marker": marker, "marker_time": marker_time, "image_id": image_id, "true_label": label or None,
            "emitted_time": now}
    if kind == "skip":
        return None
    if kind == "drop":
        return {"type": "dropped", **base, "reason": "gap", "detail": "test producer"}
    top1 = image_id if kind in ("hit", "late") else ids[(ids.index(image_id) + 1) % len(ids)]
    order = [top1] + [i for i in ids if i != top1]
    return {"type": "window", "window_kind": "event", "window_index": n, **base,
            "topk": [{"id": i, "label": f"label {i}", "score": round(0.9 - 0.1 * r, 3)} for r, i in enumerate(order)]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True, help="results stream name")
    p.add_argument("--markers", required=True, help="marker stream to answer")
    p.add_argument("--ids", required=True, help="comma-separated gallery ids (for 'wrong' answers)")
    p.add_argument("--plan", default="hit", help="comma-separated hit/wrong/drop/late/skip, cycled")
    p.add_argument("--n", type=int, required=True, help="markers to answer, then exit")
    p.add_argument("--delay", type=float, default=0.05, help="seconds between a marker and its answer")
    p.add_argument("--late", type=float, default=1.5, help="seconds between a marker and a 'late' answer")
    a = p.parse_args()
    ids, plan = a.ids.split(","), a.plan.split(",")
    info = pylsl.StreamInfo(a.name, "BCIResults", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, f"echo-{a.name}")
    outlet = pylsl.StreamOutlet(info)
    print("ready", flush=True)
    found = pylsl.resolve_byprop("name", a.markers, 1, 60.0)
    if not found:
        raise SystemExit(f"marker stream {a.markers!r} not found")
    inlet = pylsl.StreamInlet(found[0])
    inlet.time_correction(10.0)  # the first estimate takes a while: before the presenter sees a consumer
    inlet.open_stream(10.0)
    outlet.wait_for_consumers(30.0)
    outlet.push_sample(["{not json"], pylsl.local_clock())
    answered = 0
    for n in range(a.n):
        sample, stamp = inlet.pull_sample(timeout=60.0)
        if sample is None:
            break
        kind = plan[n % len(plan)]
        time.sleep(a.late if kind == "late" else a.delay)
        record = _record(kind, sample[0], stamp + inlet.time_correction(), ids, n)
        if record is not None:
            outlet.push_sample([json.dumps(record)], record["emitted_time"])
            answered += 1
    print(f"answered {answered}", flush=True)
    time.sleep(1.0)  # let liblsl send the last record before the outlet goes


if __name__ == "__main__":
    main()
