"""The closed loop a live session is for, with every piece the real program:

``bci present`` (stimulus presenter, markers via bci.markers) -> ``bci simulate --follow-markers``
(a simulated amplifier that responds to the images the presenter names) -> ``bci live`` (decodes at the
presenter's markers, retrieves from a gallery, publishes results) -> the presenter shows the decoded
image back after each trial.

The simulator and the decoder run as their own processes (the CLI), the presenter in this process
(Qt, offscreen). The model is untrained, so hits are not the point: every trial must get its own
result back, matched by marker and time, and shown.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.preprocessing import PreprocessConfig
from bci.present import PresenterOptions, load_stimulus_gallery, run_presenter
from bci.retrieval.gallery import build_gallery
from tests.test_gallery import PixelEmbedder

REPO = Path(__file__).resolve().parents[1]
N_TRIALS = 4


def _bci(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bci.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # bci commands stop cleanly on SIGTERM (summary printed, files closed)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_presenter_drives_a_decoded_closed_loop(qapp, tmp_path: Path, unique_name: str) -> None:
    from bci.cli.main import main as bci_main

    # the world's stimuli as a gallery folder (what the presenter shows) and a gallery store (what bci live retrieves)
    stimuli = tmp_path / "stimuli"
    assert bci_main(["simulate", "--out", str(tmp_path / "unused.zarr"), "--duration", "2", "--seed", "0",
                     "--stimuli", str(stimuli)]) == 0
    shown = load_stimulus_gallery(stimuli)
    gallery = tmp_path / "gallery"
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_classes=40).replace(preprocessing=PreprocessConfig().to_dict())
    model = save_checkpoint(build_model(cfg), tmp_path / "model")
    build_gallery(np.asarray(shown.images), list(shown.ids), list(shown.labels), [""] * len(shown.ids),
                  embedder=PixelEmbedder(embed_dim=cfg.embed_dim), thumb_size=32, progress=False).save(gallery)

    markers, eeg, results = unique_name + "-stim", unique_name + "-eeg", unique_name + "-results"
    events = tmp_path / "events.jsonl"
    sim = _bci("simulate", "--name", eeg, "--seed", "0", "--follow-markers", markers, "--follow-timeout", "60",
               "--duration", "120", "--wait-for-consumers", "60")
    live = _bci("live", "--eeg", eeg, "--markers", markers, "--model", str(model), "--gallery", str(gallery),
                "--events", str(events), "--results-stream", results, "--device", "cpu", "--no-view",
                "--resolve-timeout", "60", "--marker-filter", "^stim/")
    try:
        options = PresenterOptions(stimuli, markers=markers, results=results, n_trials=N_TRIALS, order="sequential",
                                   duration_ms=100.0, isi_ms=300.0, jitter_ms=0.0, feedback_ms=100.0,
                                   result_timeout_ms=10_000.0, fullscreen=False, window_size=(320, 240),
                                   image_size=64, wait_for_consumers=60.0, resolve_timeout=60.0, seed=1)
        shown_back: list[tuple[int, str | None]] = []

        def on_event(kind: str, log, widget) -> None:
            if kind == "feedback":
                shown_back.append((log.index, log.top1_id))

        # the presenter opens its marker outlet, waits for a consumer on it, then resolves the results stream
        # (bci live publishes it once it has its inputs), so the first marker goes out with everything running
        report = run_presenter(options, app=qapp, on_event=on_event)
    finally:
        live_out, live_err = _stop(live)
        sim_out, sim_err = _stop(sim)
    assert report.markers_sent == N_TRIALS, report.summary()
    assert report.count("missed") == 0 and report.late == 0, report.summary() + live_err + sim_err
    # every trial got its own decoded result back, and the presenter showed its top-1 image
    assert [t.image_id for t in report.trials] == list(shown.ids[:N_TRIALS])
    assert all(t.result == "window" and t.top1_id in shown.ids for t in report.trials), report.summary()
    assert [i for i, _ in shown_back] == list(range(N_TRIALS))
    assert [top for _, top in shown_back] == [t.top1_id for t in report.trials]
    # the decoder's own record agrees: one window per presenter marker, at the presenter's timestamps
    records = [json.loads(x) for x in events.read_text().splitlines()]
    windows = [r for r in records if r.get("type") == "window"]
    assert [w["marker"] for w in windows] == [t.marker for t in report.trials], live_err
    assert not [r for r in records if r.get("type") == "dropped"]
    np.testing.assert_allclose([w["marker_time"] for w in windows], [t.marker_time for t in report.trials],
                               atol=1e-6)
    assert [w["topk"][0]["id"] for w in windows] == [t.top1_id for t in report.trials]
    # and the simulator answered every marker in time
    assert f"followed: {N_TRIALS} (late: 0)" in sim_out, sim_out + sim_err
