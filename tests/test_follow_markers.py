"""``bci simulate --follow-markers``: the simulated amplifier follows an external stimulus program's markers.

The stimulus program is a bare pylsl outlet in the test; the EEG is read with a bare pylsl inlet
(or decoded by ``bci live``), and compared with the offline simulator for the received schedule.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pylsl
import pytest
import torch

from bci.cli.main import main as bci_main
from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.preprocessing import PreprocessConfig
from bci.runtime.assemble import DecodeOptions
from bci.runtime.live import LiveOptions, run_live
from streams.follow import FollowedEEG, FollowOptions, FollowSimulation
from streams.simulate import SimulationSpec
from streams.synthetic import EEGSimConfig, EEGSimulator, StimulusEvent, make_stimuli

REPO = Path(__file__).resolve().parents[1]
SFREQ = 1000.0


def _marker_outlet(name: str) -> pylsl.StreamOutlet:
    """The stimulus program: a plain pylsl string marker outlet."""
    return pylsl.StreamOutlet(pylsl.StreamInfo(name, "Markers", 1, 0.0, "string", name + "-src"))


def test_followed_eeg_equals_the_offline_generator_whatever_the_chunks() -> None:
    """Events added just before the chunk holding their onset (ties included) give generate()'s samples exactly."""
    stimuli = make_stimuli(seed=3)
    sim = EEGSimulator(stimuli, EEGSimConfig(seed=3, snr=2.0))
    events = [(120, 5), (120, 7), (900, 1), (1450, 2), (1460, 2), (2700, 39)]
    ref, _ = sim.generate([StimulusEvent(s / SFREQ, i, 0, "m") for s, i in events], 3.5)
    followed, out, todo, pos = FollowedEEG(sim), [], list(events), 0
    sizes = np.random.default_rng(0).integers(1, 300, 100)
    for size in sizes:
        n = min(int(size), len(ref) - pos)
        if n == 0:
            break
        while todo and todo[0][0] < pos + n:
            followed.add(*todo.pop(0))
        out.append(followed.chunk(n))
        pos += n
    assert pos == len(ref)
    np.testing.assert_array_equal(np.concatenate(out), ref)
    quiet, _ = sim.generate([], 3.5)
    assert np.abs(ref[900:1400] - quiet[900:1400]).max() > 1e-6  # the responses are there to compare


def test_options_and_modality_are_checked_at_the_boundary(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TypeError, match="markers must be the name of an LSL marker stream"):
        FollowOptions(3)
    with pytest.raises(ValueError, match="latency_ms=-5"):
        FollowOptions("Presenter", latency_ms=-5)
    with pytest.raises(ValueError, match="markers='' .--follow-markers."):
        FollowOptions("")
    with pytest.raises(ValueError, match="supported for EEG only"):
        FollowSimulation(SimulationSpec(modality="fmri", duration=20.0), FollowOptions("Presenter"))
    assert bci_main(["simulate", "--follow-markers", "Presenter", "--out", "x.zarr"]) == 2
    assert "--follow-markers streams live over LSL and cannot write --out" in capsys.readouterr().err


def _pull(inlet: pylsl.StreamInlet, n: int, on_data, timeout: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples from a bare inlet; ``on_data(first_stamp)`` runs after every pull."""
    data, stamps = [], []
    end = pylsl.local_clock() + timeout
    while sum(len(d) for d in data) < n and pylsl.local_clock() < end:
        chunk, ts = inlet.pull_chunk(timeout=0.02, max_samples=1000)
        if ts:
            data.append(np.asarray(chunk, dtype=np.float32))
            stamps.append(np.asarray(ts))
        if stamps:
            on_data(stamps[0][0])
    assert data, "no EEG samples arrived"
    return np.concatenate(data), np.concatenate(stamps)


def test_responses_appear_at_the_marker_onsets_late_and_unknown_markers_are_counted(unique_name: str) -> None:
    outlet = _marker_outlet(unique_name + "-presenter")
    spec = SimulationSpec(name=unique_name, duration=3.0, seed=2, snr=2.0)
    warnings: list[str] = []
    sim = FollowSimulation(spec, FollowOptions(unique_name + "-presenter", latency_ms=400.0), warn=warnings.append)
    ids = [str(i) for i in sim.world.stimuli.image_ids]
    # (seconds after the first sample: its timestamp, when the presenter pushes it, marker)
    plan = [(0.6, 0.6, f"stim/{ids[3]}/a"), (0.7, 0.7, "block_start/0"), (0.9, 0.9, "stim/nosuch/cat"),
            (1.0, 1.0, "stim/nosuch/cat"), (1.2, 1.2, f"stim/{ids[10]}/b"), (1.2, 1.2, f"stim/{ids[11]}"),
            (1.6, 2.25, f"stim/{ids[20]}/late"), (0.3, 2.3, f"stim/{ids[30]}/too late")]
    pending = sorted(plan, key=lambda p: p[1])

    def present(first_stamp: float) -> None:
        while pending and pylsl.local_clock() >= first_stamp + pending[0][1]:
            onset, _, marker = pending.pop(0)
            outlet.push_sample([marker], first_stamp + onset)

    with sim:
        info = pylsl.resolve_byprop("name", unique_name, 1, 10.0)[0]
        inlet = pylsl.StreamInlet(info, max_buflen=60)  # one process, one clock: raw stamps
        inlet.open_stream(timeout=10.0)
        assert sim.wait_for_consumers(10.0)
        assert not pylsl.resolve_byprop("name", spec.marker_name, 1, 0.3)  # the presenter's stream is the marker stream
        thread = threading.Thread(target=sim.run)
        thread.start()
        data, stamps = _pull(inlet, 3000, present)
        thread.join(10)
    assert not pending and data.shape == (3000, 128)
    np.testing.assert_allclose(np.diff(stamps), 1 / SFREQ, atol=1e-6)

    report = sim.report
    by_marker = {e.marker: e for e in report.events}
    assert list(by_marker) == [f"stim/{ids[3]}/a", f"stim/{ids[10]}/b", f"stim/{ids[11]}",
                               f"stim/{ids[20]}/late", f"stim/{ids[30]}/too late"]
    for onset, _, marker in plan:
        if marker in by_marker:  # the onset sample is the marker's own timestamp on the EEG's clock
            assert by_marker[marker].sample == round(onset * SFREQ)
    assert report.unknown == {"nosuch": 2} and report.n_other == 1 and report.n_outside == 0
    late = by_marker[f"stim/{ids[20]}/late"]
    assert 0 < late.missed < 500  # 650 ms late for a 400 ms latency: about 250 samples were already out
    assert by_marker[f"stim/{ids[30]}/too late"].missed == 500  # the whole response was already out
    assert [e.marker for e in report.late] == [f"stim/{ids[20]}/late", f"stim/{ids[30]}/too late"]
    assert sum("nosuch" in w for w in warnings) == 1 and sum("arrived more than 400 ms" in w for w in warnings) == 2
    assert "followed: 5 (late: 2); unknown image ids: 2 (nosuch); not a stimulus: 1" in report.summary()

    # the same samples as the offline simulator for the on-time events, plus the late one's remaining response
    on_time = [e for e in report.events if not e.missed]
    ref, _ = sim.world.sim.generate([StimulusEvent(e.sample / SFREQ, e.image_index, 0, e.marker) for e in on_time],
                                    3.0)
    tail = slice(late.sample + late.missed, late.sample + 500)
    outside = np.ones(len(ref), bool)
    outside[tail] = False
    np.testing.assert_array_equal(data[outside], ref[outside])
    response = sim.world.sim.trial_response(late.sample, late.image_index)[late.missed:]
    np.testing.assert_allclose(data[tail] - ref[tail], response, rtol=0, atol=1e-10)
    assert np.abs(response).max() > 1e-6
    # and on-time events alone reproduce generate() exactly with their schedule
    assert report.schedule()[:3] == [StimulusEvent(e.sample / SFREQ, e.image_index, 0, e.marker) for e in on_time]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_classes=40).replace(preprocessing=PreprocessConfig().to_dict())
    return save_checkpoint(build_model(cfg), tmp_path_factory.mktemp("model") / "ck")


def test_bci_live_decodes_one_window_per_marker_of_a_followed_stream(tmp_path: Path, model_dir: Path,
                                                                     unique_name: str) -> None:
    """``bci simulate --follow-markers`` in its own process, ``bci live`` (the library call) on its EEG + the markers."""
    presenter = unique_name + "-presenter"
    outlet = _marker_outlet(presenter)
    sim = subprocess.Popen([sys.executable, "-m", "bci.cli", "simulate", "--name", unique_name, "--follow-markers",
                            presenter, "--duration", "4", "--seed", "4", "--wait-for-consumers", "30"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "events.jsonl"
    options = LiveOptions(unique_name, presenter, DecodeOptions(model=model_dir, events=events, device="cpu",
                                                                results_stream=None), duration=3.5,
                          resolve_timeout=20.0)
    result: dict = {}
    said: list[str] = []
    decoding = threading.Event()  # set once bci live has its inlets on both streams

    def say(text: str) -> None:
        said.append(text)
        decoding.set()

    live = threading.Thread(target=lambda: result.update(r=run_live(options, say=say)))
    try:
        live.start()
        lines = []
        for line in sim.stdout:
            lines.append(line)
            if line.startswith("following markers of"):
                break
        assert lines and lines[-1].startswith("following markers of"), "".join(lines) + sim.stderr.read()
        assert decoding.wait(30), said
        ids = [f"img{i:04d}" for i in (0, 7, 21, 39)]
        now = pylsl.local_clock()
        for k, image_id in enumerate(ids):  # announced ahead, as a presenter that schedules its flips
            outlet.push_sample([f"stim/{image_id}/x"], now + 0.3 + 0.5 * k)
        live.join(60)
        out, err = sim.communicate(timeout=60)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.communicate()
    assert sim.returncode == 0, err
    assert "followed: 4 (late: 0); unknown image ids: 0" in out, out + err
    records = [json.loads(x) for x in events.read_text().splitlines()]
    windows = [r for r in records if r["type"] == "window"]
    assert [w["marker"] for w in windows] == [f"stim/{i}/x" for i in ids], said
    assert not [r for r in records if r["type"] == "dropped"]
    assert result["r"].runtime.pipeline.stats.n_windows == 4
