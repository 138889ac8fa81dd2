"""A model whose output overflows on finite input: the window is a ``non_finite`` dropped record, never numbers.

The model is a real eeg_convnet checkpoint whose spatial filters are scaled by 1e30 (finite), and the
data a simulated session with one window's samples scaled by 1e20 (finite, like a saturated amplifier
sending huge values): that window's output overflows to inf/NaN, the others stay finite. The windows
are decoded as one batch, so the kept windows of the same batch must still be emitted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.runtime.assemble import load_encoder, pipeline_factory
from bci.runtime.sinks import ListSink
from streams.session import SessionReader
from streams.simulate import SimulationSpec, simulate_to_session


def _finite(record: dict) -> bool:
    scores = [c["score"] for c in record.get("class_scores") or []]  # the top classes, each with its score
    return bool(np.isfinite(np.asarray(record["embedding"], dtype=np.float64)).all() and np.isfinite(scores).all())


def test_a_non_finite_model_output_is_dropped_and_the_rest_of_its_batch_emitted(tmp_path: Path) -> None:
    session = SessionReader(simulate_to_session(SimulationSpec(name="NonFinite", duration=6.0, seed=4),
                                                tmp_path / "s.zarr"))
    torch.manual_seed(0)
    model = build_model(default_config("eeg_convnet", n_classes=40))
    with torch.no_grad():
        next(p for p in model.parameters() if p.ndim > 1).mul_(1e30)
    encoder = load_encoder(save_checkpoint(model, tmp_path / "ck"), device="cpu")
    key = session.find("type=EEG")
    sink = ListSink()
    pipeline = pipeline_factory(encoder, [sink])(session.description(key))
    marker_times, marker_values = session.markers(session.marker_keys()[0])
    stims = [t for t, v in zip(marker_times, marker_values) if str(v).startswith("stim/")]
    data, times = session.data(key).copy(), session.times(key)
    hit = float(stims[1])
    start = int(np.searchsorted(times, hit))
    data[start:start + 600] *= 1e20
    assert np.isfinite(data).all()  # finite input: only the model's arithmetic overflows
    pipeline.push_markers(list(marker_values), marker_times)
    pipeline.push_data(data, times)  # one push: the windows are decoded together, as one batch
    pipeline.finish()
    records = [r for r in sink.records if r["type"] in ("window", "dropped")]
    assert len(records) == len(marker_values) and len(stims) >= 4  # every marker accounted for
    dropped = [r for r in records if r["type"] == "dropped"]
    assert [r["marker_time"] for r in dropped] == pytest.approx([hit])
    assert dropped[0]["reason"] == "non_finite" and "model's output" in dropped[0]["detail"]
    windows = [r for r in records if r["type"] == "window"]
    assert len(windows) == len(marker_values) - 1 and all(_finite(r) for r in windows)
    assert pipeline.stats.dropped == {"non_finite": 1}
