"""``bci live --record``: one acquisition per stream, and the recording replays to the live events.

The amplifier is an independent process (tests/lsl_amplifier.py: pylsl + numpy only) with
random chunks, markers from the first second and a 2 s dropout (outlet destroyed and
recreated with the same source_id).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pylsl
import pytest
import torch

from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.preprocessing import PreprocessConfig
from bci.runtime.assemble import DecodeOptions
from bci.runtime.live import LiveOptions, LiveRuntime, RunLoop, run_live
from bci.runtime.replay import ReplayOptions, replay_decode
from streams.acquisition import StreamReceiver
from streams.errors import OutputExistsError, StreamMismatchError
from streams.session import SessionReader

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained model with filters (so a filter restart at a gap shows in the embeddings)."""
    torch.manual_seed(0)
    cfg = replace(default_config("eeg_convnet", n_chans=8, n_times=440), preprocessing=PreprocessConfig().to_dict())
    return save_checkpoint(build_model(cfg), tmp_path_factory.mktemp("m") / "ck")


class _Amplifier:
    def __init__(self, name: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-u", str(REPO / "tests" / "lsl_amplifier.py"), "--name", name,
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.kill()
            raise RuntimeError(f"amplifier did not start: {line!r}")
        self.lines: list[str] = []

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        self.lines += out.splitlines(keepends=True)

    def count(self, what: str = "pushed") -> int:
        """Samples pushed before the dropout (``pushed``) or in all (``done``)."""
        return int(next(line for line in self.lines if line.startswith(what)).split()[1])


def _inlets_of(name: str) -> int:
    """pylsl inlets alive in this process on the stream ``name``."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is pylsl.StreamInlet and _inlet_name(o) == name)


def _inlet_name(inlet: pylsl.StreamInlet) -> str | None:
    """The stream name of an inlet; None for an inlet of an earlier test whose stream is gone."""
    try:
        return inlet.info(timeout=1.0).name()
    except (pylsl.util.LostError, TimeoutError):
        return None


def _loop_until_exit(amp: _Amplifier, seen: dict) -> RunLoop:
    """Decode until the amplifier process ends; counts the inlets once data flows."""

    def run(runtime: LiveRuntime, duration: float | None, on_tick) -> None:
        def tick() -> None:
            if "inlets" not in seen and runtime.pipeline.stats.n_samples > 500:
                seen["inlets"] = _inlets_of(runtime.data_receiver.desc.name)
                seen["marker_inlets"] = _inlets_of(runtime.marker_receiver.desc.name)
            if amp.proc.poll() is not None:
                runtime.request_stop()

        runtime.run(None, on_tick=tick, tick=0.1)

    return RunLoop(run=run)


def _options(name: str, model: Path, tmp_path: Path, **kw) -> LiveOptions:
    decode = DecodeOptions(model, events=tmp_path / "live.jsonl", results_stream=name + "-results", device="cpu")
    return LiveOptions(name, name + "-Markers", decode, record=tmp_path / "rec.zarr", resolve_timeout=15, **kw)


def _records(path: Path) -> list[dict]:
    """The window and dropped records of an events file (its header line and gap records aside)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["type"] == "header"
    return [r for r in records[1:] if r["type"] != "gap"]


def _assert_replay_is_live(tmp_path: Path, decode: DecodeOptions, live: list[dict], *, start: str) -> None:
    """``bci replay --decode`` of ``tmp_path/rec.zarr`` gives the live events: the same records (keyed by
    type, marker, reason and ``start``) and the same embeddings.

    Same samples, same filter state; the encoder batches differ (live: as windows complete;
    replay: per 1 s chunk), hence float32 rounding.
    """
    replay_events = tmp_path / "replay.jsonl"
    replay_decode(ReplayOptions(tmp_path / "rec.zarr", replace(decode, events=replay_events), speed=float("inf")),
                  say=lambda _: None)
    replay = _records(replay_events)

    def key(r: dict) -> tuple:
        return r["type"], r["marker"], r["marker_time"], r.get("reason"), r.get(start)

    assert sorted(map(key, replay)) == sorted(map(key, live))
    by_key = {key(r): r for r in replay}
    for r in live:
        if r["type"] == "window":
            np.testing.assert_allclose(by_key[key(r)]["embedding"], r["embedding"], rtol=1e-5, atol=1e-6)


def test_record_is_what_the_decoder_consumed_and_replays_to_the_live_events(
        small_model: Path, unique_name: str, tmp_path: Path) -> None:
    amp = _Amplifier(unique_name, "--before", "2", "--after", "2")
    seen: dict = {}
    try:
        result = run_live(_options(unique_name, small_model, tmp_path), loop=_loop_until_exit(amp, seen),
                          say=lambda _: None)
    finally:
        amp.kill()
    runtime = result.runtime
    # one inlet per stream: the decoder's; the recording has no receiver of its own
    assert seen["inlets"] == 1 and seen["marker_inlets"] == 1
    assert not any(isinstance(v, StreamReceiver) for v in vars(runtime.recording).values())
    rec = SessionReader(tmp_path / "rec.zarr")
    data_key, marker_key = rec.find("type=EEG"), rec.marker_keys()[0]
    # the session holds exactly the samples the pipeline consumed, from the very first one
    data = rec.data(data_key)
    assert len(data) == runtime.pipeline.stats.n_samples
    k = np.round(data[:, 0].astype(np.float64) * 1e9).astype(int)
    n_before = amp.count()
    assert np.array_equal(k, np.arange(amp.count("done")))  # every sample sent, once, from the first one
    gaps = rec.gaps(data_key)
    assert len(gaps) == 1 and "reconnected" in gaps[0]["reason"] and gaps[0]["end_time"] - gaps[0]["start_time"] > 1.5
    assert gaps[0]["end_time"] == rec.times(data_key)[n_before]
    assert runtime.pipeline.stats.n_gaps == 1
    # every recorded marker gave a live window or a dropped record; markers of the first second decode
    live = _records(tmp_path / "live.jsonl")
    m_times, m_values = rec.markers(marker_key)
    assert sorted((r["marker"], r["marker_time"]) for r in live) == sorted(zip(m_values, m_times))
    windows = [r for r in live if r["type"] == "window"]
    assert any(r["marker_time"] < rec.times(data_key)[0] + 1.0 for r in windows)
    reasons = {r["reason"] for r in live if r["type"] == "dropped"}
    assert "gap" in reasons and reasons <= {"gap", "end_of_data"}  # the dropout; the last marker(s) at the end
    assert any(r["window_start_time"] > gaps[0]["end_time"] for r in windows)  # decoding resumed
    # the results stream of the session: every record, as the outlet sent it
    results = [json.loads(v) for v in rec.data(rec.find("type=BCIResults"))[:, 0]]
    assert [r for r in results if r["type"] != "gap"] == live
    assert [r["reason"] for r in results if r["type"] == "gap"] == [gaps[0]["reason"]]  # the gap, said live
    # bci replay --decode of the recording gives the same events
    _assert_replay_is_live(tmp_path, DecodeOptions(small_model, results_stream="", device="cpu"), live,
                           start="window_start_index")


@pytest.mark.parametrize("change", [("--after-rate", "500"), ("--after-channels", "9")], ids=["rate", "channels"])
def test_a_stream_that_comes_back_changed_is_refused_and_nothing_is_overwritten(
        small_model: Path, unique_name: str, tmp_path: Path, change: tuple[str, str]) -> None:
    amp = _Amplifier(unique_name, "--before", "1.5", *change)
    seen: dict = {}
    try:
        with pytest.raises(StreamMismatchError):
            run_live(_options(unique_name, small_model, tmp_path), loop=_loop_until_exit(amp, seen),
                     say=lambda _: None)
    finally:
        amp.kill()
    n_before = amp.count()
    rec = SessionReader(tmp_path / "rec.zarr")
    assert rec.complete
    data_key = rec.find("type=EEG")
    assert "error" in rec.stream_attrs(data_key)
    assert rec.description(data_key).nominal_rate == 1000.0 and rec.description(data_key).n_channels == 8
    k = np.round(rec.data(data_key)[:, 0].astype(np.float64) * 1e9).astype(int)
    assert np.array_equal(k, np.arange(n_before))  # what came before, nothing of the changed stream
    listing = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in (tmp_path / "rec.zarr").rglob("*"))
    with pytest.raises(OutputExistsError, match="--record"):  # a second run refuses before opening a stream
        run_live(_options(unique_name, small_model, tmp_path), say=lambda _: None)
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns)
                  for p in (tmp_path / "rec.zarr").rglob("*")) == listing


def test_samples_pushed_out_before_the_pipeline_starts_are_a_recorded_gap(
        small_model: Path, unique_name: str, tmp_path: Path) -> None:
    """A start slower than the receivers' buffer: the loss is a gap, its markers dropped records.

    Also: the pipeline's channel map (when it has one) is stored with the recorded data stream.
    """
    import time

    from bci.runtime.assemble import load_encoder, pipeline_factory
    from bci.runtime.sinks import ListSink
    from streams.recorder import SessionRecording

    proc = subprocess.Popen([sys.executable, "-u", "-m", "tests.lsl_event_producer", "--name", unique_name,
                             "--markers-at", "300,2600", "--duration", "3.5"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sink = ListSink()
    runtime = LiveRuntime(unique_name, unique_name + "-Markers", buffer_seconds=1.0, resolve_timeout=15)
    try:
        assert proc.stdout.readline().startswith("ready")
        runtime.open()
        runtime.record_to(SessionRecording(tmp_path / "rec.zarr"))
        while runtime.data_receiver.buffer.total < 1800:  # a slow model load: 1.8 s, buffer 1 s
            time.sleep(0.05)
        runtime.start(pipeline_factory(load_encoder(small_model, device="cpu"), [sink]))
        assert proc.stdout.readline().startswith("done")
        time.sleep(0.3)
    finally:
        runtime.stop()
        proc.kill()
        proc.communicate()
    assert runtime.decoder_overwritten > 0
    rec = SessionReader(tmp_path / "rec.zarr")
    gaps = rec.gaps(rec.find("type=EEG"))
    assert len(gaps) == 1 and "overwritten" in gaps[0]["reason"]
    assert rec.n_samples(rec.find("type=EEG")) == runtime.pipeline.stats.n_samples
    by_marker = {r["marker"]: r for r in sink.records if r["type"] != "gap"}
    assert len(by_marker) == len(rec.markers()[0]) == 2
    assert by_marker["stim/img0000/300"]["type"] == "dropped"  # its data was pushed out: a record, not silence
    assert by_marker["stim/img0001/2600"]["type"] == "window"


def test_an_egi_named_512hz_amplifier_decodes_with_a_map_file_and_replays_to_the_live_events(
        unique_name: str, tmp_path: Path) -> None:
    """Issue 14's "done when": E1..E8 at 512 Hz, a 1 kHz model named Fp1..O2, a map file, a dropout."""
    torch.manual_seed(1)
    names = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "O1", "O2"]
    cfg = replace(default_config("eeg_convnet", n_chans=8, n_times=440, ch_names=names),
                  preprocessing=PreprocessConfig().to_dict())
    model = save_checkpoint(build_model(cfg), tmp_path / "model")
    order = [3, 0, 7, 1, 6, 2, 5, 4]  # E<i+1> -> names[order[i]]: not the identity
    mapping = tmp_path / "amp.tsv"
    mapping.write_text("stream\tmodel\n" + "".join(f"E{i + 1}\t{names[j]}\n" for i, j in enumerate(order)))
    amp = _Amplifier(unique_name, "--rate", "512", "--first-label", "1", "--before", "2", "--after", "2")
    options = _options(unique_name, model, tmp_path)
    options = replace(options, decode=replace(options.decode, channel_map=mapping))
    try:
        result = run_live(options, loop=_loop_until_exit(amp, {}), say=lambda _: None)
    finally:
        amp.kill()
    pipeline = result.runtime.pipeline
    assert pipeline.resampler is not None and pipeline.out_sfreq == 1000.0 and pipeline.stats.n_gaps == 1
    rec = SessionReader(tmp_path / "rec.zarr")
    data_key = rec.find("type=EEG")
    assert rec.n_samples(data_key) == amp.count("done")  # the stream's own 512 Hz samples, all of them
    stored = rec.stream_attrs(data_key)["channel_map"]
    header = json.loads((tmp_path / "live.jsonl").read_text().splitlines()[0])
    assert stored == header["channel_map"] == pipeline.channel_map.to_dict()
    live = _records(tmp_path / "live.jsonl")
    m_times, m_values = rec.markers(rec.marker_keys()[0])
    assert sorted((r["marker"], r["marker_time"]) for r in live) == sorted(zip(m_values, m_times))
    windows = [r for r in live if r["type"] == "window"]
    gap_end = rec.gaps(data_key)[0]["end_time"]
    assert any(r["window_start_time"] > gap_end for r in windows) and len(windows) >= 8
    onset_error = [abs(r["window_start_time"] - (r["marker_time"] + 0.020)) for r in windows]
    assert max(onset_error) <= 1 / 512  # aligned to one stream sample (default EEG offset 20 ms)
    _assert_replay_is_live(tmp_path, DecodeOptions(model, results_stream="", device="cpu", channel_map=mapping),
                           live, start="window_start_time")
