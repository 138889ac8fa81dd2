"""``bci demo``: the end-to-end tour of the runtime on the synthetic world.

Today it exercises the streams layer and the decoding runtime for real: the
synthetic EEG world written straight to Zarr, then streamed live over LSL, recorded
and decoded live, the recording decoded again from Zarr at ``--speed max`` (same
windows and embeddings), then replayed over LSL and recorded again, and the copies
compared. The encoder is an *untrained* ``eeg_convnet`` until training lands
(``bci train``): its embeddings show the plumbing and the latency, not decoding skill.
Later stages (training, retrieval, the viewer) join as they land.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np

from bci.runtime.assemble import load_encoder, make_sinks, pipeline_factory
from bci.runtime.sinks import ListSink
from bci.runtime.live import LiveRuntime
from bci.runtime.replay import decode_session
from streams.recorder import Recorder
from streams.replay import SessionReplayer
from streams.session import SessionReader
from streams.simulate import LiveSimulation, SimulationSpec, simulate_to_session


def _say(text: str) -> None:
    print(text, flush=True)


def _run_in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _record_while(streams: list[str], out: Path, seconds: float, producer) -> Path:
    """Record ``streams`` to ``out`` while ``producer`` (a callable) streams them."""
    recorder = Recorder(streams, out, overwrite=True, resolve_timeout=10.0)
    recorder.start()
    thread = _run_in_thread(producer)
    thread.join(seconds + 30.0)
    time.sleep(0.5)  # let the last chunks arrive
    recorder.stop()
    return out


def _summarise(path: Path) -> None:
    reader = SessionReader(path)
    for key in reader.streams:
        d = reader.description(key)
        t = reader.times(key)
        span = t[-1] - t[0] if len(t) > 1 else 0.0
        _say(f"    {key:>16}: {len(t):7d} samples, {d.n_channels:3d} ch, {span:6.2f} s, "
             f"{len(reader.gaps(key))} gaps")


def run_demo(out: Path, seconds: float = 8.0, seed: int = 0) -> dict:
    """Run the demo, print each step, return the numbers it checked."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tag = f"{int(time.time() * 1000) % 100000}"
    name = f"DemoEEG-{tag}"
    _say("bci demo: synthetic world (all data below is simulated)")

    _say(f"[1/5] simulate {seconds:g} s of 128-ch EEG at 1 kHz + markers straight to Zarr")
    offline_path = simulate_to_session(SimulationSpec(name=name, duration=seconds, seed=seed), out / "simulated.zarr")
    _summarise(offline_path)

    model_dir = _untrained_model(out / "model-untrained", seed)
    _say(f"[2/5] stream the same world live over LSL ({name!r}); record it and decode it live")
    _say(f"      encoder: UNTRAINED eeg_convnet ({model_dir}) - random weights, so embeddings carry no meaning yet")
    sim = LiveSimulation(SimulationSpec(name=name, duration=seconds, seed=seed))
    sim.open()
    live_records = ListSink()
    encoder = load_encoder(model_dir, device="cpu")
    sinks = [live_records, *make_sinks(events=out / "live-events.jsonl")]
    runtime = LiveRuntime(name, sim.spec.marker_name, pipeline_factory(encoder, sinks), resolve_timeout=10.0)

    def stream_when_both_listen() -> None:
        runtime.start()
        sim.run()

    live_path = _record_while([name, sim.spec.marker_name], out / "recorded.zarr", seconds, stream_when_both_listen)
    runtime.stop()
    sim.close()
    _summarise(live_path)
    _say(f"      live decoding: {runtime.pipeline.stats.summary()}")
    _say(f"      events written to {out / 'live-events.jsonl'}")

    _say("[3/5] decode the recording from Zarr at --speed max (no LSL) and compare with the live run")
    max_records = ListSink()
    reader = SessionReader(live_path)
    eeg_key = reader.find("type=EEG")
    pipeline = pipeline_factory(encoder, [max_records])(reader.description(eeg_key))
    started = time.perf_counter()
    decode_session(reader, pipeline, data_key=eeg_key, marker_key=reader.marker_keys()[0])
    elapsed = time.perf_counter() - started
    same = _same_windows(live_records.records, max_records.records)
    _say(f"      {pipeline.stats.n_windows} windows in {elapsed:.2f} s ({seconds / elapsed:.0f}x real time); "
         f"same windows and embeddings as live: {same}")

    _say("[4/5] replay the recording over LSL at 2x speed and record the replay")
    replayer = SessionReplayer(live_path, speed=2.0, name_suffix="-replay")
    replayer.open()
    replay_path = _record_while([d.name for d in replayer.descs], out / "replayed.zarr", seconds / 2, replayer.play)
    replayer.close()
    _summarise(replay_path)

    _say("[5/5] compare the recordings")
    result = compare_sessions(offline_path, live_path, replay_path, speed=2.0)
    result["live_equals_max_speed_decoding"] = same
    _say(f"    live recording == offline simulation, sample for sample: {result['live_matches_offline']}")
    _say(f"    replayed data identical to the recording:               {result['replay_identical']}")
    _say(f"    replay timing error (max |dt|, after speed/offset):     {result['replay_timing_error_ms']:.3f} ms")
    _say(f"done: sessions, events and model in {out}/  (inspect with 'bci info {out}/recorded.zarr')")
    return result


def _untrained_model(path: Path, seed: int) -> Path:
    """An untrained, seeded eeg_convnet checkpoint with the default preprocessing."""
    import torch

    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config
    from bci.preprocessing import PreprocessConfig

    torch.manual_seed(seed)
    config = default_config("eeg_convnet").replace(
        preprocessing=PreprocessConfig().to_dict(), extra={"trained": False, "seed": seed}
    )
    return save_checkpoint(build_model(config), path, overwrite=True)


def _same_windows(a: list[dict], b: list[dict]) -> bool:
    wa = [r for r in a if r["type"] == "window"]
    wb = [r for r in b if r["type"] == "window"]
    if not wa or [r["window_start_index"] for r in wa] != [r["window_start_index"] for r in wb]:
        return False
    return bool(np.allclose([r["embedding"] for r in wa], [r["embedding"] for r in wb], atol=1e-5))


def compare_sessions(offline: Path, live: Path, replay: Path, speed: float) -> dict:
    """Check live == offline samples, and replay == live samples and (scaled) timing."""
    off, rec, rep = SessionReader(offline), SessionReader(live), SessionReader(replay)
    eeg_off = off.data(off.find("type=EEG"))
    key_live = rec.find("type=EEG")
    eeg_live, t_live = rec.data(key_live), rec.times(key_live)
    key_rep = rep.find("type=EEG")
    eeg_rep, t_rep = rep.data(key_rep), rep.times(key_rep)
    n = min(len(eeg_live), len(eeg_off))
    live_matches = bool(n > 0 and np.array_equal(eeg_live[:n], eeg_off[:n]))
    m = min(len(eeg_rep), len(eeg_live))
    identical = bool(m > 0 and np.array_equal(eeg_rep[:m], eeg_live[:m]))
    rel_live = (t_live[:m] - t_live[0]) / speed
    rel_rep = t_rep[:m] - t_rep[0]
    err = float(np.max(np.abs(rel_rep - rel_live)) * 1000) if m else float("nan")
    return {
        "live_matches_offline": live_matches,
        "replay_identical": identical,
        "replay_timing_error_ms": err,
        "n_live": int(len(eeg_live)),
        "n_replay": int(len(eeg_rep)),
    }
