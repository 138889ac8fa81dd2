"""Any sampling rate: the online rational resampler, its time base, and a model served from 250-5000 Hz streams."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
import torch

from bci.models.registry import build_model, default_config
from bci.preprocessing import (PreprocessConfig, RationalResampler, plan_rate, preprocess_recording, rational_ratio,
                               resample_taps)
from bci.runtime.assemble import pipeline_factory
from bci.runtime.inference import Encoder
from bci.runtime.live import LiveRuntime
from bci.runtime.pipeline import Pipeline
from bci.runtime.replay import decode_session
from bci.runtime.sinks import ListSink
from bci.runtime.windowing import WindowSpec
from streams.recorder import Recorder
from streams.session import SessionReader

REPO = Path(__file__).resolve().parents[1]
RATES = (250.0, 256.0, 500.0, 512.0, 1024.0, 2048.0, 5000.0)
N_CH = 8
NAMES = [f"E{i}" for i in range(N_CH)]
T0 = 50.0
MARKER_TIMES = T0 + np.array([0.9004, 1.6, 2.3007])
OFFSET = 0.020


class _Capture:
    """A real :class:`Encoder` that also keeps every window batch it is given."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder, self.config, self.windows = encoder, encoder.config, []

    def check_stream(self, *args: object, **kwargs: object) -> None:
        self.encoder.check_stream(*args, **kwargs)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.windows.extend(np.asarray(batch, dtype=np.float32))
        return self.encoder(batch)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    torch.manual_seed(0)
    model = build_model(default_config("eeg_convnet", n_chans=N_CH, n_times=440,
                                       preprocessing=PreprocessConfig().to_dict()))
    return Encoder(model, device="cpu", compile=False, warmup=0, cuda_graph=False)


def _signal(sfreq: float, seconds: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A band-limited signal (sines 3-35 Hz on a 1 mV offset) sampled at ``sfreq``, and its times."""
    t = np.arange(int(seconds * sfreq)) / sfreq
    freqs = np.linspace(3.0, 35.0, N_CH)[None, :]
    data = 1e-3 + 1e-5 * np.sin(2 * np.pi * freqs * t[:, None] + np.arange(N_CH))
    return data.astype(np.float32), T0 + t


def _feed(pipeline: Pipeline, data: np.ndarray, times: np.ndarray, seed: int) -> None:
    """Markers first, then the data in random 1-97-sample chunks."""
    rng = np.random.default_rng(seed)
    pipeline.push_markers([f"stim/img{i:04d}/m" for i in range(len(MARKER_TIMES))], MARKER_TIMES)
    i = 0
    while i < len(data):
        size = int(rng.integers(1, 98))
        pipeline.push_data(data[i : i + size], times[i : i + size])
        i += size
    pipeline.finish()


def _decode(encoder: Encoder, sfreq: float, data: np.ndarray, times: np.ndarray,
            pre: PreprocessConfig | None = PreprocessConfig(), seed: int = 0) -> tuple[list[dict], _Capture, Pipeline]:
    cap, sink = _Capture(encoder), ListSink()
    pipeline = Pipeline(cap, sfreq=sfreq, ch_names=NAMES, preprocess=pre, window=WindowSpec(440, OFFSET),  # type: ignore[arg-type]
                        sinks=[sink])
    _feed(pipeline, data, times, seed)
    return sink.records, cap, pipeline


# --------------------------------------------------------------------------- the resampler
@pytest.mark.parametrize("sfreq", RATES)
def test_resampler_matches_resample_poly_and_ignores_chunking(sfreq: float) -> None:
    rng = np.random.default_rng(int(sfreq))
    n = int(2 * sfreq)
    x = rng.standard_normal((n, 3))
    t = T0 + np.arange(n) / sfreq
    outs = []
    for seed in (1, 2):
        res, parts, i, chunks = RationalResampler(sfreq, 1000.0, 3), [], 0, np.random.default_rng(seed)
        while i < n:
            size = int(chunks.integers(1, 98))
            parts.append(res.process(x[i : i + size], t[i : i + size]))
            i += size
        outs.append((np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
    whole = RationalResampler(sfreq, 1000.0, 3).process(x, t)
    for y, ty in outs:  # bit-identical whatever the chunking
        np.testing.assert_array_equal(y, whole[0])
        np.testing.assert_array_equal(ty, whole[1])
    y, ty = whole
    up, down = res.up, res.down
    ref = ss.resample_poly(x, up, down, axis=0, window=resample_taps(up, down))
    edge = 40  # resample_poly pads with zeros, the resampler with the first sample
    assert len(y) > 0.97 * len(ref)
    np.testing.assert_allclose(y[edge:], ref[edge : len(y)], rtol=0, atol=1e-12)
    # output k sits at input position k * sfreq / 1000: the time base of a 1 kHz stream
    np.testing.assert_allclose(ty, T0 + np.arange(len(y)) / 1000.0, rtol=0, atol=1e-9)


def test_rational_ratio_and_latency() -> None:
    assert rational_ratio(512.0, 1000.0) == (125, 64)
    assert rational_ratio(5000.0, 1000.0) == (1, 5)
    assert RationalResampler(512.0, 1000.0, 1).latency == pytest.approx(10 / 512)
    with pytest.raises(ValueError, match=r"cannot resample 999\.9999.* Hz to 1000 Hz"):
        rational_ratio(999.999937, 1000.0)
    with pytest.raises(ValueError, match=r"n_channels=3"):
        RationalResampler(512.0, 1000.0, 3).process(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"one timestamp per sample"):
        RationalResampler(512.0, 1000.0, 2).process(np.zeros((4, 2)), np.zeros(3))


def test_a_nan_sample_spoils_only_the_outputs_that_cover_it() -> None:
    x = np.ones((2000, 2))
    x[1000, 0] = np.nan
    y, _ = RationalResampler(512.0, 1000.0, 2).process(x, np.arange(2000) / 512.0)
    bad = np.flatnonzero(np.isnan(y[:, 0]))
    assert 0 < len(bad) <= 2 * 10 * 1000 / 512 + 2 and not np.isnan(y[:, 1]).any()
    assert bad.min() > 1000 * 1000 / 512 - 25 and bad.max() < 1000 * 1000 / 512 + 25
    np.testing.assert_allclose(y[bad.max() + 1 :, 0], 1.0, rtol=0, atol=2e-3)


def test_flush_gives_every_output_the_input_covers_and_starts_a_new_segment() -> None:
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((700, 2)), T0 + np.arange(700) / 512.0
    whole = RationalResampler(512.0, 1000.0, 2)
    y1, t1 = whole.process(x[:500], t[:500])
    y2, t2 = whole.flush()
    # every output position within the 500 samples received: k * 512 / 1000 <= 499
    assert len(y1) + len(y2) == 499 * 125 // 64 + 1 and len(y2) > 0 and whole.n_in == 0
    assert t2[-1] <= t[499] and np.all(np.diff(np.concatenate([t1, t2])) > 0)
    # the last sample is held: flushing a constant input gives what more of the constant would
    const = RationalResampler(512.0, 1000.0, 1)
    head = const.process(np.full((300, 1), 2.5), t[:300])[0]
    tail = const.flush()[0]
    longer = RationalResampler(512.0, 1000.0, 1).process(np.full((400, 1), 2.5), t[:400])[0]
    np.testing.assert_allclose(np.concatenate([head, tail]), longer[: len(head) + len(tail)], rtol=0, atol=1e-12)
    # chunking does not matter, and the next segment is the output of a fresh resampler
    chunked = RationalResampler(512.0, 1000.0, 2)
    parts = [chunked.process(x[i : min(i + 37, 500)], t[i : min(i + 37, 500)])[0] for i in range(0, 500, 37)]
    np.testing.assert_array_equal(np.concatenate(parts + [chunked.flush()[0]]), np.concatenate([y1, y2]))
    after = whole.process(x[500:], t[500:] + 3.0)
    fresh = RationalResampler(512.0, 1000.0, 2).process(x[500:], t[500:] + 3.0)
    np.testing.assert_array_equal(after[0], fresh[0])
    np.testing.assert_array_equal(after[1], fresh[1])
    assert RationalResampler(512.0, 1000.0, 2).flush()[0].shape == (0, 2)


def test_a_gap_in_a_resampled_stream_decodes_the_same_however_it_is_chunked(encoder: Encoder) -> None:
    """Live chunks vs one replay chunk per segment, with Pipeline.gap between: the same windows."""
    data, times = _signal(512.0, seconds=4.0)
    cut = int(2.0 * 512)
    times = times.copy()
    times[cut:] += 2.0  # a 2 s dropout after 2 s
    markers = [T0 + 0.9, T0 + 1.95, T0 + 2.5, T0 + 4.0 + 0.5]  # before, across the end, inside, after the gap

    def run(chunk: int | None) -> list[dict]:
        sink = ListSink()
        p = Pipeline(encoder, sfreq=512.0, ch_names=NAMES, preprocess=PreprocessConfig(),
                     window=WindowSpec(440, OFFSET), sinks=[sink])
        p.push_markers([f"stim/img{i:04d}/m" for i in range(len(markers))], np.array(markers))
        for lo, hi in ((0, cut), (cut, len(data))):
            if lo:
                p.gap(float(times[lo - 1]), float(times[lo]), "test")
            step = chunk or hi - lo
            for i in range(lo, hi, step):
                p.push_data(data[i : min(i + step, hi)], times[i : min(i + step, hi)])
        p.finish()
        gaps = [r for r in sink.records if r["type"] == "gap"]
        assert [(g["start_time"], g["end_time"], g["reason"]) for g in gaps] == [
            (float(times[cut - 1]), float(times[cut]), "test")]  # the gap is a record of its own
        return [r for r in sink.records if r["type"] in ("window", "dropped")]

    live, replay = (sorted(run(c), key=lambda r: r["marker_time"]) for c in (13, None))  # emitted in another order
    assert [(r["type"], r["marker_time"]) for r in live] == [(r["type"], r["marker_time"]) for r in replay]
    kinds = {r["marker_time"]: (r["type"], r.get("reason")) for r in live}
    assert kinds[markers[0]] == ("window", None) and kinds[markers[3]] == ("window", None)
    assert kinds[markers[1]][0] == "dropped" and kinds[markers[2]][0] == "dropped"
    for a, b in zip(live, replay):
        if a["type"] == "window":
            assert a["window_start_time"] == b["window_start_time"]
            np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- serving a 1 kHz model
@pytest.mark.parametrize("sfreq", RATES)
def test_any_rate_serves_a_1khz_model_with_windows_aligned_to_one_stream_sample(encoder: Encoder,
                                                                                sfreq: float) -> None:
    records, cap, pipeline = _decode(encoder, sfreq, *_signal(sfreq))
    windows = [r for r in records if r["type"] == "window"]
    assert [r["marker_time"] for r in windows] == list(MARKER_TIMES)  # every marker: a window, none dropped
    assert pipeline.resampler is not None and pipeline.out_sfreq == 1000.0
    starts = np.array([r["window_start_time"] for r in windows])
    # the onset is the model-rate sample nearest to marker + offset: within half a 1 kHz sample, so
    # within one stream sample for every stream up to 2 kHz
    error = np.abs(starts - (MARKER_TIMES + OFFSET)).max()
    assert error <= 0.5e-3 + 1e-9 and (sfreq > 2000.0 or error <= 1.0 / sfreq)
    # the same signal sampled at the model's rate gives (nearly) the same windows
    _, ref, _ = _decode(encoder, 1000.0, *_signal(1000.0))
    err = np.abs(np.stack(cap.windows) - np.stack(ref.windows)).max()
    assert err < 0.02 * np.abs(np.stack(ref.windows)).max()


def test_integer_path_is_bit_identical_to_the_code_before_resampling(encoder: Encoder) -> None:
    """Digests computed by the code before the resampler existed (commit 6d99f54) on this very input."""
    expected = {(1000.0, True): "fb1f0b176ba14358", (4000.0, True): "598d5bd455d4910e",
                (1000.0, False): "98d705dce95b046b"}
    for (sfreq, with_pre), want in expected.items():
        rng = np.random.default_rng(3)
        n = int(4 * sfreq)
        data = (rng.standard_normal((n, N_CH)) * 1e-5).astype(np.float32)
        times = T0 + np.arange(n) / sfreq
        pre = (PreprocessConfig(resample_to=1000.0) if sfreq != 1000.0 else PreprocessConfig()) if with_pre else None
        cap, sink = _Capture(encoder), ListSink()
        pipeline = Pipeline(cap, sfreq=sfreq, ch_names=NAMES, preprocess=pre, window=WindowSpec(440),  # type: ignore[arg-type]
                            sinks=[sink])
        pipeline.push_markers(["stim/img0000/a", "stim/img0001/b", "stim/img0002/c"],
                              T0 + np.array([0.5004, 1.3, 2.1007]))
        i = 0
        while i < n:
            size = int(rng.integers(1, 98))
            pipeline.push_data(data[i : i + size], times[i : i + size])
            i += size
        pipeline.finish()
        assert pipeline.resampler is None
        digest = hashlib.sha256()
        for w in cap.windows:
            digest.update(w.tobytes())
        digest.update(np.array([r["window_start_time"] for r in sink.records if r["type"] == "window"]).tobytes())
        assert (len(cap.windows), digest.hexdigest()[:16]) == (3, want), (sfreq, with_pre)


def test_a_model_without_preprocessing_is_served_from_a_faster_stream(encoder: Encoder) -> None:
    data, times = _signal(2048.0)
    records, cap, pipeline = _decode(encoder, 2048.0, data, times, pre=None)
    windows = [r for r in records if r["type"] == "window"]
    assert len(windows) == len(MARKER_TIMES) and pipeline.pre is None
    res = RationalResampler(2048.0, 1000.0, N_CH)
    ref = ss.resample_poly(data.astype(np.float64), res.up, res.down, axis=0, window=resample_taps(res.up, res.down))
    for w, r in zip(cap.windows, windows):
        start = r["window_start_index"]
        np.testing.assert_allclose(w, ref[start : start + 440].T, rtol=0, atol=1e-9)


def test_offline_preprocessing_equals_the_pipeline(encoder: Encoder) -> None:
    data, times = _signal(512.0)
    records, cap, _ = _decode(encoder, 512.0, data, times)
    full = preprocess_recording(data, 512.0, NAMES, PreprocessConfig(), chunk_size=333, model_sfreq=1000.0)
    for w, r in zip(cap.windows, [r for r in records if r["type"] == "window"]):
        start = r["window_start_index"]
        np.testing.assert_array_equal(w, full[start : start + 440].T)


def test_a_rate_that_cannot_carry_the_models_band_is_a_clear_error(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match=r"a 64 Hz stream cannot serve model 'eeg_convnet' at 1000 Hz: "
                                         r"the model's low-pass h_freq=40 Hz.*record at >= 100 Hz"):
        Pipeline(encoder, sfreq=64.0, ch_names=NAMES, preprocess=PreprocessConfig())
    with pytest.raises(ValueError, match=r"a 512 Hz stream cannot serve .* no low-pass \(h_freq=None\)"):
        Pipeline(encoder, sfreq=512.0, ch_names=NAMES, preprocess=None)
    with pytest.raises(TypeError, match="preprocess"):
        plan_rate(512.0, 1000.0, {"h_freq": 40})  # type: ignore[arg-type]
    assert Pipeline(encoder, sfreq=100.0, ch_names=NAMES, preprocess=PreprocessConfig(notch=())).resampler


# --------------------------------------------------------------------------- a real 512 Hz amplifier
def test_live_512hz_amplifier_with_a_1khz_model_and_its_replay(encoder: Encoder, unique_name: str,
                                                             tmp_path: Path) -> None:
    marks = (256, 614, 973)
    proc = subprocess.Popen([sys.executable, "-u", str(REPO / "tests" / "lsl_rate_producer.py"), "--name",
                             unique_name, "--rate", "512", "--channels", str(N_CH), "--duration", "2.6", "--start-delay", "2",
                             "--markers-at", ",".join(map(str, marks))],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sink, stop = ListSink(), threading.Event()
    try:
        assert proc.stdout.readline().startswith("ready")
        factory = pipeline_factory(encoder, [sink], offset=OFFSET)
        runtime = LiveRuntime(unique_name, unique_name + "-Markers", factory, resolve_timeout=15).start()
        # the recorder connects during the producer's start delay, so it sees the same first sample
        recorder = Recorder([unique_name, unique_name + "-Markers"], tmp_path / "amp.zarr", resolve_timeout=15).start()
        drain = threading.Thread(target=lambda: [recorder.drain() for _ in iter(lambda: stop.wait(0.1), True)])
        drain.start()
        assert proc.stdout.readline().startswith("done")
        time.sleep(0.3)
        runtime.stop()
        stop.set()
        drain.join()
        recorder.stop()
    finally:
        proc.kill()
        proc.communicate()
    live = [r for r in sink.records if r["type"] == "window"]
    assert runtime.pipeline.resampler is not None and runtime.pipeline.stats.dropped == {}
    assert [r["marker"] for r in live] == [f"stim/img{i:04d}/{k}" for i, k in enumerate(marks)]
    for r in live:  # within one 512 Hz sample of marker + offset
        assert abs(r["window_start_time"] - (r["marker_time"] + OFFSET)) <= 1 / 512
    # the recording decoded at --speed max gives the same windows and embeddings
    session = SessionReader(tmp_path / "amp.zarr")
    replay_sink = ListSink()
    replay = pipeline_factory(encoder, [replay_sink], offset=OFFSET)(session.description(session.find("type=EEG")))
    decode_session(session, replay, data_key=session.find("type=EEG"), marker_key=session.marker_keys()[0])
    again = [r for r in replay_sink.records if r["type"] == "window"]
    assert [r["marker"] for r in again] == [r["marker"] for r in live]
    assert [r["window_start_index"] for r in again] == [r["window_start_index"] for r in live]
    # the recorder's receiver corrects the clock on its own (a few microseconds apart from the runtime's)
    np.testing.assert_allclose([r["window_start_time"] for r in again], [r["window_start_time"] for r in live],
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose([r["embedding"] for r in again], [r["embedding"] for r in live], atol=1e-5)


def test_epochs_from_a_512hz_session_for_a_1khz_model_are_the_pipelines_windows(encoder: Encoder,
                                                                                  tmp_path: Path) -> None:
    """``bci epochs --model``: a session at another rate is cut with the runtime's resampler (offline = online)."""
    from bci.models.checkpoint import save_checkpoint
    from offline.data.build import epochs_from_sessions
    from offline.data.build_options import WindowOptions
    from offline.data.epochs import EpochDataset
    from streams.description import StreamDescription
    from streams.session import SessionWriter

    data, times = _signal(512.0)
    path = tmp_path / "amp512.zarr"
    with SessionWriter(path) as writer:
        eeg = writer.add_stream(StreamDescription("Amp", "EEG", "amp", tuple(NAMES), nominal_rate=512.0))
        mk = writer.add_stream(StreamDescription("Amp-Markers", "Markers", "amp-m", ("marker",), dtype="string"))
        writer.append(eeg, data, times)
        writer.append(mk, np.array([[f"stim/img{i:04d}/c{i % 2}"] for i in range(3)], dtype=object), MARKER_TIMES)
    model = save_checkpoint(encoder.model, tmp_path / "ck")
    report = epochs_from_sessions([path], tmp_path / "ep.zarr", WindowOptions(model=model, offset=OFFSET), splits=())
    ds = EpochDataset.open(report.path)
    assert report.n_epochs == 3 and ds.sfreq == 1000.0
    records, cap, _ = _decode(encoder, 512.0, data, times)
    np.testing.assert_array_equal(np.asarray(ds.data[:]), np.stack(cap.windows))
