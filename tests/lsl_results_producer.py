"""A ``BCIResults`` outlet in its own process, for the viewer tests.

Publishes result records as a runtime would (one JSON string per sample, stamped with
``emitted_time``), every ``--every`` seconds: window records whose top-k lists the true
image first, then the other ``--ids``, then ``--missing`` (an id no gallery has), with a
small saliency image as a data URI (and with ``--reconstruction`` a decoded 10x10 fMRI
pattern); a follow-up ``image`` record (the "diffusion" image,
as a PNG file path) for every third window; and, at fixed positions, malformed samples
(not JSON, a JSON list, a window whose ``topk`` is not a list). Prints ``ready`` once the
outlet exists and ``pushed N malformed M`` at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bci.runtime.sinks import results_description, to_json
from streams.lsl import Outlet, local_clock

MALFORMED = ("{not json", "[1, 2, 3]", json.dumps({"type": "window", "topk": "oops"}))


def _saliency(i: int) -> np.ndarray:
    """A 32x32 colourful blob that changes with ``i``."""
    yy, xx = np.mgrid[:32, :32]
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., i % 3] = (255 * np.exp(-((xx - 8 - i % 16) ** 2 + (yy - 16) ** 2) / 60.0)).astype(np.uint8)
    img[..., (i + 1) % 3] = 60
    return img


def reconstruction(i: int) -> np.ndarray:
    """The decoded 10x10 pattern of window ``i`` as a pattern decoder's step draws it: cell (i % 10, i % 10) on."""
    cells = np.zeros((10, 10), np.uint8)
    cells[i % 10, i % 10] = 255
    return np.repeat(np.kron(cells, np.ones((6, 6), np.uint8))[..., None], 3, axis=2)


def _record(i: int, ids: list[str], missing: str, now: float, with_reconstruction: bool = False) -> dict:
    from bci.viewer.images import encode_png_data_uri

    true_id = ids[i % len(ids)]
    order = [true_id] + [x for x in ids if x != true_id][:3] + [missing]
    return {
        "type": "window", "window_kind": "event", "window_index": i,
        "marker": f"stim/{true_id}/label {true_id}", "marker_time": now - 0.5,
        "image_id": true_id, "true_label": f"label {true_id}",
        "window_start_time": now - 0.48, "window_end_time": now - 0.04, "window_start_index": 1000 + i,
        "emitted_time": now, "latency_ms": 3.0 + (i % 5), "marker_lateness_ms": -400.0,
        "embedding_dim": 4, "embedding": [0.5, 0.5, 0.5, 0.5],
        "topk": [{"id": x, "label": f"label {x}", "score": round(0.9 - 0.1 * r, 3)} for r, x in enumerate(order)],
        "images": {"saliency": encode_png_data_uri(_saliency(i)),
                   **({"reconstruction": encode_png_data_uri(reconstruction(i))} if with_reconstruction else {})},
        "device": "cpu (test producer)",
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--ids", default="img0000,img0001,img0002,img0003")
    p.add_argument("--missing", default="not-in-gallery")
    p.add_argument("--every", type=float, default=0.1)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--malformed-at", default="2,5,9", help="sample positions of the malformed samples")
    p.add_argument("--reconstruction", action="store_true", help="add a decoded fMRI pattern to every window")
    a = p.parse_args()
    ids = a.ids.split(",")
    bad_at = {int(x) for x in a.malformed_at.split(",") if x}
    outlet = Outlet(results_description(a.name))
    tmp = Path(tempfile.mkdtemp(prefix="viewer-diffusion-"))
    print("ready", flush=True)
    outlet.wait_for_consumers(90)
    time.sleep(0.3)
    n_pushed = n_bad = window = 0
    end = time.monotonic() + a.duration
    position = 0
    while time.monotonic() < end:
        if position in bad_at:
            outlet.push_sample([MALFORMED[n_bad % len(MALFORMED)]], local_clock())
            n_bad += 1
        else:
            record = _record(window, ids, a.missing, local_clock(), a.reconstruction)
            outlet.push_sample([to_json(record)], record["emitted_time"])
            if window % 3 == 0:
                from PIL import Image

                path = tmp / f"diffusion_{window:06d}.png"
                Image.fromarray(np.roll(_saliency(window + 1), 5, axis=1)).save(path)
                outlet.push_sample([to_json({"type": "image", "window_index": window,
                                             "images": {"diffusion": str(path)}, "emitted_time": local_clock()})],
                                   local_clock())
            window += 1
        n_pushed += 1
        position += 1
        time.sleep(a.every)
    print(f"pushed {n_pushed} malformed {n_bad}", flush=True)
    time.sleep(1.0)
    outlet.close()


if __name__ == "__main__":
    main()
