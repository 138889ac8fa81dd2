"""Tests of bci.preprocessing: causal filters with carried state, re-reference, decimation, scaler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal as ss
from hypothesis import given, settings
from hypothesis import strategies as st

from bci import preprocessing as pp
from bci.preprocessing import filters
from bci.preprocessing import (
    ChannelScaler,
    OnlinePreprocessor,
    PreprocessConfig,
    preprocess_recording,
)

SFREQ = 1000.0
NAMES = [f"E{i:02d}" for i in range(16)]
CHUNK_SIZES = (1, 7, 10, 333, 1000)


def eeg_like(n: int, n_ch: int = len(NAMES), seed: int = 0) -> np.ndarray:
    """Volts-scale test signal: per-channel DC offsets, drift, alpha, 50 Hz line noise, white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / SFREQ
    offsets = rng.uniform(-5e-3, 5e-3, n_ch)
    alpha = 10e-6 * np.sin(2 * np.pi * 10.0 * t + rng.uniform(0, 2 * np.pi, n_ch))
    line = 20e-6 * np.sin(2 * np.pi * 50.0 * t)
    drift = 1e-4 * t
    noise = 5e-6 * rng.standard_normal((n, n_ch))
    return (offsets + alpha + line + drift + noise).astype(np.float32)


def run_chunked(pre: OnlinePreprocessor, data: np.ndarray, sizes) -> np.ndarray:
    """Feed ``data`` in chunks of the given sizes (cycled); concatenate the outputs."""
    out, i, k = [], 0, 0
    sizes = list(sizes)
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(pre.process(data[i : i + n]))
        i, k = i + n, k + 1
    return np.concatenate(out)


def tone(freq: float, n: int, n_ch: int = len(NAMES), amp: float = 1.0) -> np.ndarray:
    t = np.arange(n)[:, None] / SFREQ
    return (amp * np.sin(2 * np.pi * freq * t) * np.ones((1, n_ch))).astype(np.float32)


def amplitude(x: np.ndarray) -> float:
    """Peak amplitude of a (settled) sinusoidal segment, largest over channels."""
    return float(np.abs(x).max())


# --------------------------------------------------------------------------- chunking / state carry
@pytest.mark.parametrize(
    "config",
    [
        PreprocessConfig(),
        PreprocessConfig(resample_to=250.0, reference=("E03", "E05"), notch=(50.0,), notch_harmonics=True),
        PreprocessConfig(l_freq=None, h_freq=None, notch=(), reference="none", resample_to=500.0),
    ],
    ids=["default", "resample-named-ref", "decimate-only"],
)
def test_chunking_never_changes_output(config: PreprocessConfig) -> None:
    data = eeg_like(2500)
    whole = preprocess_recording(data, SFREQ, NAMES, config, chunk_size=len(data))
    for size in CHUNK_SIZES:
        got = preprocess_recording(data, SFREQ, NAMES, config, chunk_size=size)
        assert got.dtype == np.float32 and got.shape == whole.shape
        assert np.array_equal(got, whole), f"chunk_size={size} changed the output"
    irregular = np.random.default_rng(1).integers(1, 1001, size=50)
    assert np.array_equal(run_chunked(OnlinePreprocessor(config, SFREQ, NAMES), data, irregular), whole)


_PROPERTY_DATA = eeg_like(1200, n_ch=4, seed=14)
_PROPERTY_DATA[500:505, 1] = np.nan
_PROPERTY_WHOLE = preprocess_recording(
    _PROPERTY_DATA, SFREQ, NAMES[:4], PreprocessConfig(resample_to=200.0), chunk_size=len(_PROPERTY_DATA)
)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=40))
def test_any_chunking_gives_the_same_output(sizes: list[int]) -> None:
    pre = OnlinePreprocessor(PreprocessConfig(resample_to=200.0), SFREQ, NAMES[:4])
    got = run_chunked(pre, _PROPERTY_DATA, sizes)
    assert np.array_equal(got, _PROPERTY_WHOLE, equal_nan=True)


def test_offline_recording_and_live_replay_give_identical_windows() -> None:
    config = PreprocessConfig(resample_to=250.0, baseline=(0.0, 0.05))
    data = eeg_like(6000, seed=3)
    offline = preprocess_recording(data, SFREQ, NAMES, config)
    live_pre = OnlinePreprocessor(config, SFREQ, NAMES)
    # replay as an amplifier would deliver it: chunks of 1..1000 samples
    live = run_chunked(live_pre, data, np.random.default_rng(4).integers(1, 1001, size=200))
    n_times = 110  # 440 ms at 250 Hz
    onsets = [300, 511, 777, 1100]
    off_w = np.stack([offline[s : s + n_times].T for s in onsets])
    live_w = np.stack([live[s : s + n_times].T for s in onsets])
    assert np.array_equal(live_pre.apply_window(live_w), OnlinePreprocessor(config, SFREQ, NAMES).apply_window(off_w))


def test_equals_direct_sosfilt_over_whole_signal() -> None:
    config = PreprocessConfig(resample_to=250.0)
    data = eeg_like(3000, seed=5)
    pre = OnlinePreprocessor(config, SFREQ, NAMES)
    got = run_chunked(pre, data, (13, 1, 400))
    x = data.astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    sos = pre.sos
    zi = ss.sosfilt_zi(sos)[:, :, None] * x[0][None, None, :]
    y, _ = ss.sosfilt(sos, x, axis=0, zi=zi)
    assert np.array_equal(got, y[3::4].astype(np.float32))  # the last sample of each group of 4


def test_private_kernel_matches_public_sosfilt() -> None:
    rng = np.random.default_rng(2)
    sos = pp.design_sos(PreprocessConfig(resample_to=500.0), SFREQ)
    x = rng.standard_normal((5, 300))
    zi = rng.standard_normal((5, sos.shape[0], 2))
    x_pub, zi_pub = x.copy(), zi.copy()
    filters._public_sosfilt(sos, x_pub, zi_pub)
    filters._KERNEL(sos, x, zi)
    assert np.array_equal(x, x_pub) and np.array_equal(zi, zi_pub)


def test_reset_restarts_like_a_fresh_preprocessor() -> None:
    config = PreprocessConfig()
    data = eeg_like(2000, seed=6)
    pre = OnlinePreprocessor(config, SFREQ, NAMES)
    pre.process(data[:1200])
    pre.reset()
    after = pre.process(data[1200:])
    fresh = OnlinePreprocessor(config, SFREQ, NAMES).process(data[1200:])
    assert np.array_equal(after, fresh)


def test_onset_has_no_large_transient() -> None:
    # 50 mV offsets, 10 uV signal: a zero initial state would ring at the offset's scale
    rng = np.random.default_rng(7)
    data = (0.05 * rng.uniform(-1, 1, len(NAMES)) + 1e-5 * rng.standard_normal((500, len(NAMES)))).astype(np.float32)
    out = OnlinePreprocessor(PreprocessConfig(reference="none"), SFREQ, NAMES).process(data)
    assert np.abs(out).max() < 1e-4


# --------------------------------------------------------------------------- frequency behaviour
def settled(config: PreprocessConfig, data: np.ndarray, skip_s: float = 2.0) -> np.ndarray:
    pre = OnlinePreprocessor(config, SFREQ, NAMES)
    out = pre.process(data)
    return out[int(skip_s * pre.out_sfreq) :]


NO_REF = PreprocessConfig(reference="none")


def test_10hz_passes_with_unit_gain() -> None:
    out = settled(NO_REF, tone(10.0, 4000))
    assert abs(amplitude(out) - 1.0) < 0.01


def test_line_noise_attenuated_more_than_20db() -> None:
    out = settled(NO_REF, tone(50.0, 4000))
    assert amplitude(out) < 0.1
    without_notch = settled(PreprocessConfig(reference="none", notch=()), tone(50.0, 4000))
    assert amplitude(without_notch) > 0.3  # the notch, not the low-pass, does the work


def test_high_pass_removes_dc_and_drift() -> None:
    n = 8000
    t = np.arange(n)[:, None] / SFREQ
    data = (2e-3 + 5e-4 * t + 1e-3 * np.sin(2 * np.pi * 0.02 * t)) * np.ones((1, len(NAMES)))
    out = settled(NO_REF, data.astype(np.float32), skip_s=4.0)
    assert amplitude(out) < 1e-5  # < 1 % of the slow content
    raw_low = settled(PreprocessConfig(reference="none", l_freq=None), data.astype(np.float32), skip_s=4.0)
    assert amplitude(raw_low) > 1e-3


def test_low_pass_removes_100hz() -> None:
    out = settled(NO_REF, tone(100.0, 4000))
    assert amplitude(out) < 0.03  # > 30 dB down


def test_frequency_response_matches_simulation_order_of_magnitude() -> None:
    pre = OnlinePreprocessor(NO_REF, SFREQ, NAMES)
    gain_db = 20 * np.log10(np.abs(pre.frequency_response([10.0, 50.0, 100.0, 0.05])))
    assert abs(gain_db[0]) < 0.1
    assert gain_db[1] < -40 and gain_db[2] < -30 and gain_db[3] < -60


# --------------------------------------------------------------------------- re-reference
def test_average_reference_makes_channel_mean_zero() -> None:
    out = OnlinePreprocessor(PreprocessConfig(), SFREQ, NAMES).process(eeg_like(2000))
    scale = np.abs(out).max()
    assert scale > 1e-6
    assert np.abs(out.mean(axis=1)).max() < 1e-6 * scale


def test_reference_to_named_channels() -> None:
    data = eeg_like(1500, seed=8)
    one = OnlinePreprocessor(PreprocessConfig(reference="E03"), SFREQ, NAMES).process(data)
    assert np.array_equal(one[:, 3], np.zeros(len(data), np.float32))
    x = data.astype(np.float64)
    expected = OnlinePreprocessor(NO_REF, SFREQ, NAMES).process(x - x[:, [3]])
    assert np.array_equal(one, expected)
    two = OnlinePreprocessor(PreprocessConfig(reference=("E01", "E04")), SFREQ, NAMES).process(data)
    expected2 = OnlinePreprocessor(NO_REF, SFREQ, NAMES).process(x - x[:, [1, 4]].mean(axis=1, keepdims=True))
    assert np.array_equal(two, expected2)


def test_no_reference_keeps_channels_independent() -> None:
    data = eeg_like(1000)
    full = OnlinePreprocessor(NO_REF, SFREQ, NAMES).process(data)
    single = OnlinePreprocessor(NO_REF, SFREQ, NAMES[:1]).process(data[:, :1])
    assert np.array_equal(full[:, :1], single)


# --------------------------------------------------------------------------- resampling
def test_resampling_length_and_rate() -> None:
    pre = OnlinePreprocessor(PreprocessConfig(resample_to=250.0), SFREQ, NAMES)
    assert pre.out_sfreq == 250.0 and pre.decim == 4
    sizes = [pre.process(c).shape[0] for c in np.array_split(eeg_like(1003), [1, 2, 5, 500])]
    assert sum(sizes) == 250 and sizes[:3] == [0, 0, 1]  # chunks [0], [1], [2:5]: input index 3 is kept first
    assert preprocess_recording(eeg_like(4000), SFREQ, NAMES, PreprocessConfig(resample_to=250.0)).shape == (1000, 16)


def test_resampling_does_not_alias_200hz() -> None:
    config = PreprocessConfig(l_freq=None, h_freq=None, notch=(), reference="none", resample_to=250.0)
    out = settled(config, tone(200.0, 4000))  # naive decimation would show it at 50 Hz
    assert amplitude(out) < 1e-3
    naive = tone(200.0, 4000)[3::4][500:]
    assert amplitude(naive) > 0.5
    passed = settled(config, tone(10.0, 4000))
    assert abs(amplitude(passed) - 1.0) < 0.02


# --------------------------------------------------------------------------- per-window steps
def test_baseline_correction() -> None:
    pre = OnlinePreprocessor(PreprocessConfig(baseline=(0.0, 0.1)), SFREQ, NAMES)
    rng = np.random.default_rng(9)
    window = (rng.standard_normal((len(NAMES), 440)) + rng.uniform(-5, 5, (len(NAMES), 1))).astype(np.float32)
    before = window.copy()
    out = pre.apply_window(window)
    assert np.array_equal(window, before)  # input untouched
    assert out.dtype == np.float32
    assert np.abs(out[:, :100].mean(axis=1)).max() < 1e-5
    assert np.allclose(out, window - window[:, :100].mean(axis=1, keepdims=True), atol=1e-5)
    batch = pre.apply_window(np.stack([window, 2 * window]))
    assert np.array_equal(batch[0], out)
    with pytest.raises(ValueError, match="baseline"):
        pre.apply_window(window[:, :50])


def test_apply_window_without_baseline_is_identity() -> None:
    pre = OnlinePreprocessor(PreprocessConfig(), SFREQ, NAMES)
    w = np.arange(len(NAMES) * 20, dtype=np.float64).reshape(len(NAMES), 20)
    assert np.array_equal(pre.apply_window(w), w.astype(np.float32))
    with pytest.raises(ValueError, match="n_channels=16"):
        pre.apply_window(w[:3])


# --------------------------------------------------------------------------- scaler
def test_scaler_fit_transform_and_round_trip() -> None:
    rng = np.random.default_rng(10)
    means = rng.uniform(-3, 3, 8)
    stds = rng.uniform(0.5, 4, 8)
    windows = (means[None, :, None] + stds[None, :, None] * rng.standard_normal((60, 8, 200))).astype(np.float32)
    scaler = ChannelScaler.fit(windows)
    assert scaler.mean.dtype == np.float32 and scaler.std.shape == (8,)
    z = scaler.transform(windows)
    assert z.dtype == np.float32
    assert np.allclose(z.mean(axis=(0, 2)), 0, atol=1e-5) and np.allclose(z.std(axis=(0, 2)), 1, atol=1e-4)
    assert np.allclose(scaler.transform(windows[0]), z[0])
    assert np.allclose(ChannelScaler.fit(windows, batch=7).std, scaler.std, rtol=1e-6)
    back = ChannelScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert np.array_equal(back.mean, scaler.mean) and np.array_equal(back.std, scaler.std)
    assert back == scaler and back != ChannelScaler(mean=scaler.mean + 1, std=scaler.std)


def test_scaler_flat_channel_and_errors() -> None:
    rng = np.random.default_rng(11)
    windows = rng.standard_normal((10, 3, 50)).astype(np.float32)
    windows[:, 1] = 7.0
    scaler = ChannelScaler.fit(windows)
    assert scaler.std[1] == 1.0 and np.all(np.isfinite(scaler.transform(windows)))
    with pytest.raises(ValueError, match="n_channels=3"):
        scaler.transform(windows[:, :2])
    bad = windows.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ChannelScaler.fit(bad)
    with pytest.raises(ValueError, match="n_windows, n_channels, n_times"):
        ChannelScaler.fit(windows[0])
    with pytest.raises(ValueError, match="keys"):
        ChannelScaler.from_dict({"mean": [0.0], "std": [1.0], "extra": 1})
    with pytest.raises(ValueError, match="equal length"):
        ChannelScaler.from_dict({"mean": [0.0, 1.0], "std": [1.0]})
    with pytest.raises(ValueError, match="> 0"):
        ChannelScaler.from_dict({"mean": [0.0], "std": [0.0]})


# --------------------------------------------------------------------------- config and validation
def test_config_dict_round_trip_through_json() -> None:
    config = PreprocessConfig(
        l_freq=1, h_freq=30.0, notch=(60.0, 50.0), reference=["E01", "E02"], resample_to=250, baseline=[0.0, 0.1]
    )
    assert config.reference == ("E01", "E02") and config.notch == (50.0, 60.0) and config.baseline == (0.0, 0.1)
    back = PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()
    assert PreprocessConfig(reference="Cz").reference == ("Cz",)


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"l_freq": 40.0, "h_freq": 10.0}, ValueError, "l_freq=40.0"),
        ({"h_freq": -1.0}, ValueError, "h_freq=-1.0"),
        ({"filter_order": 0}, ValueError, "filter_order=0"),
        ({"filter_order": True}, TypeError, "filter_order=True"),
        ({"notch": "50"}, TypeError, "notch='50'"),
        ({"baseline": (0.2, 0.1)}, ValueError, r"baseline=\(0.2, 0.1\)"),
        ({"reference": ""}, ValueError, "reference=''"),
        ({"resample_to": float("nan")}, ValueError, "resample_to=nan"),
        ({"notch_harmonics": "yes"}, TypeError, "notch_harmonics='yes'"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        PreprocessConfig(**kwargs)


def test_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['hfreq'\]"):
        PreprocessConfig.from_dict({"hfreq": 30.0})
    with pytest.raises(TypeError, match="expected a dict"):
        PreprocessConfig.from_dict([("l_freq", 1.0)])  # type: ignore[arg-type]


def test_h_freq_above_nyquist_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"h_freq=600.0 Hz is not below the Nyquist frequency 500 Hz"):
        OnlinePreprocessor(PreprocessConfig(h_freq=600.0), SFREQ, NAMES)
    with pytest.raises(ValueError, match=r"h_freq=150.0 .* resample_to=250.0"):
        OnlinePreprocessor(PreprocessConfig(h_freq=150.0, resample_to=250.0), SFREQ, NAMES)
    with pytest.raises(ValueError, match=r"notch=\(50.0, 600.0\)"):
        OnlinePreprocessor(PreprocessConfig(notch=(50.0, 600.0)), SFREQ, NAMES)


def test_unknown_reference_channel_is_named() -> None:
    with pytest.raises(ValueError, match=r"\['Cz'\] not in the stream; available channels include \['E00'"):
        OnlinePreprocessor(PreprocessConfig(reference=("E01", "Cz")), SFREQ, NAMES)


def test_non_integer_resample_factor_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"resample_to=300.0: the input rate sfreq=1000.0 must be an integer"):
        OnlinePreprocessor(PreprocessConfig(resample_to=300.0), SFREQ, NAMES)
    with pytest.raises(ValueError, match="resample_to=2000.0"):
        OnlinePreprocessor(PreprocessConfig(resample_to=2000.0, h_freq=None), SFREQ, NAMES)


def test_stream_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="sfreq=0"):
        OnlinePreprocessor(PreprocessConfig(), 0, NAMES)
    with pytest.raises(ValueError, match="duplicate"):
        OnlinePreprocessor(PreprocessConfig(), SFREQ, ["A", "B", "A"])
    with pytest.raises(TypeError, match="PreprocessConfig"):
        OnlinePreprocessor({"l_freq": 1.0}, SFREQ, NAMES)  # type: ignore[arg-type]
    pre = OnlinePreprocessor(PreprocessConfig(), SFREQ, NAMES)
    with pytest.raises(ValueError, match=r"chunk of shape \(10, 3\)"):
        pre.process(np.zeros((10, 3), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        pre.process(np.zeros((10, 16), complex))
    empty = pre.process(np.zeros((0, 16), np.float32))
    assert empty.shape == (0, 16) and empty.dtype == np.float32
    out = pre.process(np.ones((5, 16)))
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_notch_harmonics_below_output_nyquist() -> None:
    base = pp.design_sos(PreprocessConfig(notch=(50.0,)), SFREQ)
    harm = pp.design_sos(PreprocessConfig(notch=(50.0,), notch_harmonics=True), SFREQ)
    assert harm.shape[0] - base.shape[0] == 8  # 100 .. 450 Hz
    decim = pp.design_sos(PreprocessConfig(notch=(50.0,), notch_harmonics=True, resample_to=250.0), SFREQ)
    assert decim.shape[0] - base.shape[0] == 1 + 4  # 100 Hz only, plus the order-8 anti-alias (4 sections)


# --------------------------------------------------------------------------- non-finite input
def test_nan_gap_gives_nan_and_restarts_that_channel_only() -> None:
    data = eeg_like(3000, seed=12).astype(np.float64)
    dirty = data.copy()
    dirty[1000:1010, 2] = np.nan
    dirty[1500, 5] = np.inf
    pre = OnlinePreprocessor(NO_REF, SFREQ, NAMES)
    out = pre.process(dirty)
    clean = OnlinePreprocessor(NO_REF, SFREQ, NAMES).process(data)
    assert np.isnan(out[1000:1010, 2]).all() and np.isnan(out[1500, 5])
    assert np.isfinite(np.delete(out, [2, 5], axis=1)).all()
    others = [c for c in range(len(NAMES)) if c not in (2, 5)]
    assert np.array_equal(out[:, others], clean[:, others])
    restarted = OnlinePreprocessor(NO_REF, SFREQ, NAMES[:1]).process(data[1010:, 2:3])
    assert np.array_equal(out[1010:, 2:3], restarted)
    assert np.array_equal(out[:1000], clean[:1000])


def test_nan_handling_is_chunking_invariant_and_recovers() -> None:
    data = eeg_like(2500, seed=13)
    data[700:703, 4] = np.nan
    data[1200, :] = np.nan  # a whole sample lost: CAR reference undefined there
    data[1999, 0] = np.inf  # last sample of a 1000-chunk
    whole = preprocess_recording(data, SFREQ, NAMES, PreprocessConfig(), chunk_size=len(data))
    for size in (1, 7, 333, 1000):
        got = preprocess_recording(data, SFREQ, NAMES, PreprocessConfig(), chunk_size=size)
        assert np.array_equal(got, whole, equal_nan=True)
    assert np.isnan(whole[1200]).all()
    assert np.isnan(whole[700:703, 4]).all() and np.isfinite(whole[700:703, 5]).all()  # CAR over finite channels
    assert np.isfinite(whole[1201:1999]).all() and np.isfinite(whole[2000:]).all()
    assert np.abs(whole[2100:]).max() < 1e-3  # no blow-up after the gaps


# --------------------------------------------------------------------------- speed helper
def test_measure_speed_reports_positive_multiples() -> None:
    result = pp.measure_speed((1, 50), n_channels=8, seconds=0.05)
    assert set(result) == {1, 50} and all(v > 0 for v in result.values())
