"""The demo's intervals: live top-1/top-5 resampled over the recorded blocks; a test part big enough for +-5 points."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from offline import demo
from offline.data.splits import block_split
from offline.data.table import EpochTable
from streams.description import StreamDescription
from streams.session import SessionWriter


def _live_run(path: Path) -> list[dict]:
    """A recorded marker stream of 12 blocks x 4 stimuli and the live windows: blocks 0, 3, 6, 9 all wrong."""
    markers, windows, t = [], [], 1.0
    for b in range(12):
        markers.append((t, f"block_start/{b}"))
        t += 0.1
        for j in range(4):
            markers.append((t, f"stim/img{b}-{j}/c{b}"))
            hit = b % 3 != 0
            windows.append({"type": "window", "marker_time": t, "true_label": f"c{b}", "latency_ms": 1.0,
                            "true_rank": 1 if hit else 9, "topk": [{"label": f"c{b}" if hit else "x"}] * 5})
            t += 1.0
    desc = StreamDescription(name="Sim-Markers", type="Markers", source_id="m", channel_names=("marker",),
                             channel_types=("marker",), channel_units=("",), nominal_rate=0.0, dtype="string")
    with SessionWriter(path) as w:
        key = w.add_stream(desc)
        w.append(key, np.array([[v] for _, v in markers], dtype=object), np.array([t for t, _ in markers]))
    return windows


def test_live_hit_rates_resample_the_recorded_blocks(tmp_path: Path) -> None:
    windows = _live_run(tmp_path / "live.zarr")
    rates = demo._hit_rates(windows, tmp_path / "live.zarr")
    assert rates["class_top1"] == rates["class_top5"] == 8 / 12
    assert rates["intervals"] == {"level": 0.95, "unit": "block", "n_units": 12, "n_boot": 2000, "seed": 0}
    low, high = rates["class_top1_ci95_low"], rates["class_top1_ci95_high"]
    assert low < 8 / 12 < high
    # the blocks are right or wrong as a whole: resampling single windows would understate the uncertainty
    windows_only = demo._hit_rates(windows)
    assert windows_only["intervals"]["unit"] == "window" and windows_only["intervals"]["n_units"] == 48
    assert high - low > 1.5 * (windows_only["class_top1_ci95_high"] - windows_only["class_top1_ci95_low"])
    assert demo._pct(rates, "class_top1") == f"66.7% [{100 * low:.1f}, {100 * high:.1f}]"


def test_demo_split_enlarges_only_the_test_part() -> None:
    """The demo's block split keeps the 84 training / 12 validation blocks of the 120-block demo; the rest is test."""
    n_blocks = 40 * demo.DEMO_BLOCKS
    per_block = demo.DEMO_TRIALS_PER_CLASS // demo.DEMO_BLOCKS
    block = np.repeat(np.arange(n_blocks), per_block)
    labels = np.repeat(np.tile(np.arange(40), demo.DEMO_BLOCKS), per_block)
    table = EpochTable(labels=labels, subject=np.zeros_like(block), session=np.zeros_like(block), block=block,
                       run=None, marker_time=np.arange(len(block), dtype=float), class_names=[str(c) for c in range(40)],
                       window_seconds=0.44)
    parts = block_split(table, val=demo.DEMO_VAL_FRACTION, test=demo.DEMO_TEST_FRACTION, seed=0)
    assert per_block == 4 and len(parts["train"]) == 336 and len(parts["val"]) == 48
    assert len(parts["test"]) >= 576 and len(np.unique(labels[parts["test"]])) == 40
