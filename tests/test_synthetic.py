"""The synthetic world: stimuli, markers, schedules, the EEG and fMRI simulators and their forward models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from streams.synthetic import (
    BLOCK_END,
    BLOCK_START,
    COLOURS,
    SHAPES,
    EEGSimConfig,
    EEGSimulator,
    FMRISimConfig,
    FMRISimulator,
    StimulusEvent,
    canonical_hrf,
    format_marker,
    geometric_patterns,
    make_balanced_schedule,
    make_binary_patterns,
    make_schedule,
    make_stimuli,
    montage_geometry,
    onset_sample,
    parse_block_marker,
    parse_marker,
    stimulus_events,
)

SFREQ = 1000.0


@pytest.fixture(scope="module")
def stim():
    return make_stimuli(n_per_class=5, seed=0)


@pytest.fixture(scope="module")
def sim(stim):
    return EEGSimulator(stim)


@pytest.fixture(scope="module")
def geometry():
    return montage_geometry("biosemi128")


def _trials(images: list[int], n_rep: int, soa: float = 0.8, start: float = 0.5, seed: int = 0) -> list[StimulusEvent]:
    """A hand-made schedule: each image ``n_rep`` times in shuffled order, fixed SOA."""
    order = np.random.default_rng(seed).permutation(np.repeat(images, n_rep))
    return [StimulusEvent(start + k * soa, int(i), 0, f"stim/img{i:04d}") for k, i in enumerate(order)]


def _epochs(data: np.ndarray, events: list[StimulusEvent], n_times: int) -> np.ndarray:
    """(n_events, n_channels, n_times) float64, each channel demeaned."""
    x = np.stack([data[onset_sample(e.onset, SFREQ):onset_sample(e.onset, SFREQ) + n_times].T for e in events])
    x = x.astype(float)
    return x - x.mean(axis=2, keepdims=True)


def _frontal_posterior(dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.flatnonzero(dirs[:, 1] > 0.8), np.flatnonzero(dirs[:, 1] < -0.85)


# ============================================================================ stimuli
def test_stimuli_have_40_classes_and_unique_captions(stim) -> None:
    assert stim.n_classes == len(SHAPES) * len(COLOURS) >= 40
    assert len(set(stim.class_names)) == stim.n_classes
    assert stim.n_images == 5 * stim.n_classes
    assert stim.images.shape == (stim.n_images, 64, 64, 3) and stim.images.dtype == np.uint8
    assert len(set(stim.captions)) == stim.n_images
    assert len(set(stim.image_ids)) == stim.n_images and stim.image_ids[12] == "img0012"
    assert stim.template_captions[0] == f"an image of a {stim.label(0)}"
    assert stim.label(12) in stim.captions[12]
    # features: one-hot shape and colour matching the class, position and size in range
    f = stim.features
    assert f.dtype == np.float32 and f.shape == (stim.n_images, len(SHAPES) + len(COLOURS) + 3)
    np.testing.assert_array_equal(f[:, : len(SHAPES)].sum(1), 1)
    np.testing.assert_array_equal(f[:, len(SHAPES): -3].sum(1), 1)
    shape_idx = f[:, : len(SHAPES)].argmax(1)
    colour_idx = f[:, len(SHAPES): -3].argmax(1)
    np.testing.assert_array_equal(stim.class_ids, shape_idx * len(COLOURS) + colour_idx)
    assert np.all(np.abs(f[:, -3:-1]) <= 1) and np.all((f[:, -1] >= 0) & (f[:, -1] <= 1))


def test_captions_name_the_layout(stim) -> None:
    for i in range(stim.n_images):
        x, y, size = stim.features[i, -3:]
        cap = stim.captions[i]
        if x < -0.4:
            assert "left" in cap, cap
        if x > 0.4:
            assert "right" in cap, cap
        if y > 0.4:
            assert "upper" in cap or "top" in cap, cap
        if size > 0.75:
            assert cap.startswith("a large "), cap


def test_stimuli_are_deterministic_and_differ_across_classes(stim) -> None:
    again = make_stimuli(n_per_class=5, seed=0)
    np.testing.assert_array_equal(again.images, stim.images)
    assert again.captions == stim.captions
    other = make_stimuli(n_per_class=5, seed=1)
    assert not np.array_equal(other.images, stim.images)
    firsts = stim.images[[stim.class_images(c)[0] for c in range(stim.n_classes)]].reshape(stim.n_classes, -1)
    diff = np.abs(firsts[:, None].astype(int) - firsts[None].astype(int)).sum(-1)
    assert np.all(diff[~np.eye(stim.n_classes, dtype=bool)] > 0)
    # the shape is drawn in its class colour
    for c in (0, 13, 39):
        i = stim.class_images(c)[0]
        rgb = np.array(COLOURS[c % len(COLOURS)][1])
        pixels = stim.images[i].reshape(-1, 3).astype(int)
        assert np.any(np.all(pixels == rgb, axis=1)), stim.class_names[c]


def test_template_caption_is_the_one_class_template() -> None:
    from streams.synthetic.stimuli import template_caption

    stim = make_stimuli(n_per_class=1, size=16)
    assert stim.template_captions == [template_caption(n) for n in stim.class_names]
    assert template_caption("red triangle") == "an image of a red triangle"
    assert template_caption("apple") == "an image of an apple"  # the synthetic world's a/an
    assert template_caption("apple", article="a") == "an image of a apple"  # what the importers write


def test_stimuli_validate_arguments() -> None:
    with pytest.raises(ValueError, match="n_per_class"):
        make_stimuli(n_per_class=0)
    with pytest.raises(TypeError, match="size"):
        make_stimuli(size=64.0)


def test_binary_patterns_mix_random_and_geometric() -> None:
    p = make_binary_patterns(20, seed=3)
    assert p.shape == (20, 10, 10) and p.dtype == np.uint8
    assert set(np.unique(p)) <= {0, 1}
    np.testing.assert_array_equal(p, make_binary_patterns(20, seed=3))
    geo = geometric_patterns(10)
    is_geo = [any(np.array_equal(x, g) for g in geo) for x in p]
    assert sum(is_geo) == 10
    random_ones = p[~np.array(is_geo)]
    assert 0.35 < random_ones.mean() < 0.65
    assert not np.array_equal(random_ones, make_binary_patterns(20, seed=4)[~np.array(is_geo)])
    assert make_binary_patterns(7, grid=12).shape == (7, 12, 12)


# ============================================================================ markers
@pytest.mark.parametrize("image_id, label", [("img0012", "red triangle"), ("img0000", None), ("x-1", "a b c")])
def test_marker_round_trip(image_id: str, label: str | None) -> None:
    assert parse_marker(format_marker(image_id, label)) == (image_id, label)


def test_marker_format_and_tolerant_parse() -> None:
    assert format_marker("img0012", "red triangle") == "stim/img0012/red triangle"
    assert parse_marker("img0012") == ("img0012", None)
    assert parse_marker("12") == ("12", None)
    assert parse_marker(12.0) == ("12", None)
    assert parse_marker("block_start/3") == (None, None)
    assert parse_marker(BLOCK_END) == (None, None)
    assert parse_marker("") == (None, None)
    assert parse_block_marker("block_start/3") == (BLOCK_START, 3)
    assert parse_block_marker("stim/img0001") is None
    with pytest.raises(ValueError, match="label"):
        format_marker("img0001", "a/b")
    with pytest.raises(TypeError):
        parse_marker(None)


# ============================================================================ schedule
@pytest.mark.parametrize("design", ["block", "rapid"])
def test_schedule_order_blocks_and_jitter(stim, design: str) -> None:
    kw = dict(stim_duration=0.5, isi=0.4, jitter=0.1, block_size=8, block_pause=2.0, start_delay=1.0)
    sched = make_schedule(stim, 60.0, design=design, seed=2, **kw)
    onsets = np.array([e.onset for e in sched])
    assert np.all(np.diff(onsets) > 0) and onsets[0] == 1.0 and onsets[-1] < 60.0
    blocks = sorted({e.block for e in sched})
    assert blocks == list(range(len(blocks))) and len(blocks) >= 4
    for b in blocks:
        evs = [e for e in sched if e.block == b]
        assert evs[0].marker == f"{BLOCK_START}/{b}" and evs[0].image_index == -1
        assert evs[-1].marker == f"{BLOCK_END}/{b}" and evs[-1].image_index == -1
        trials = evs[1:-1]
        assert all(t.is_stimulus for t in trials) and 1 <= len(trials) <= 8
        gaps = np.diff([evs[0].onset - 0.5] + [t.onset for t in trials]) - 0.5  # ISI before each trial
        assert np.all(gaps >= 0.4 - 1e-9) and np.all(gaps <= 0.5 + 1e-9)
        assert evs[-1].onset == pytest.approx(trials[-1].onset + 0.5)
        classes = {stim.class_ids[t.image_index] for t in trials}
        if design == "block":
            assert len(classes) == 1
        elif len(trials) == 8:
            assert len(classes) > 1
        for t in trials:
            assert parse_marker(t.marker) == (stim.image_ids[t.image_index], stim.label(t.image_index))
    full = [b for b in blocks if len([e for e in sched if e.block == b]) == 10]
    for b0, b1 in zip(full, full[1:]):
        end = [e for e in sched if e.block == b0][-1].onset
        start = [e for e in sched if e.block == b1][0].onset
        assert start == pytest.approx(end + 2.0)
    assert sched == make_schedule(stim, 60.0, design=design, seed=2, **kw)
    assert len(stimulus_events(sched)) == len(sched) - 2 * len(blocks)


def test_schedule_validates(stim) -> None:
    with pytest.raises(ValueError, match="design"):
        make_schedule(stim, 10.0, design="slow")
    with pytest.raises(ValueError, match="duration"):
        make_schedule(stim, -1.0)
    assert make_schedule(stim, 1.5) == []  # no whole trial fits
    with pytest.raises(TypeError, match="block_size"):
        make_schedule(stim, 10.0, block_size=2.0)
    with pytest.raises(ValueError, match="isi=-0.5"):
        make_schedule(stim, 10.0, isi=-0.5)


def test_balanced_schedule_counts_every_class_and_times_trials_like_make_schedule(stim) -> None:
    sched = make_balanced_schedule(stim, n_per_class=3, n_blocks=3, seed=4)
    shown = stimulus_events(sched)
    assert np.bincount(stim.class_ids[[e.image_index for e in shown]]).tolist() == [3] * stim.n_classes
    assert sched[0].marker == "block_start/0" and sched[0].onset == 1.0
    gaps = np.diff([e.onset for e in shown if e.block == 0])
    assert np.all((gaps >= 1.0) & (gaps <= 1.1))  # stim 0.5 s + isi 0.5 s + U(0, 0.1)
    assert sched == make_balanced_schedule(stim, n_per_class=3, n_blocks=3, seed=4)
    with pytest.raises(TypeError, match="n_per_class"):
        make_balanced_schedule(stim, n_per_class=2.0, n_blocks=1)
    with pytest.raises(ValueError, match="design"):
        make_balanced_schedule(stim, n_per_class=2, n_blocks=1, design="slow")


# ============================================================================ EEG
def test_eeg_description_uses_the_montage(sim, geometry) -> None:
    names, dirs, radius = geometry
    d = sim.description(name="SimEEG", source_id="abc")
    assert d.type == "EEG" and d.n_channels == 128 and d.nominal_rate == SFREQ and d.dtype == "float32"
    assert d.source_id == "abc" and set(d.channel_units) == {"V"}
    assert list(d.channel_names) == names == sim.channel_names and names[0] == "A1"
    assert dirs.shape == (128, 3) and 0.05 < radius < 0.15


def test_eeg_is_deterministic_from_seed(stim, sim) -> None:
    sched = make_schedule(stim, 3.0)
    a, t = sim.generate(sched, 3.0)
    assert a.shape == (3000, 128) and a.dtype == np.float32
    np.testing.assert_array_equal(t, np.arange(3000) / SFREQ)
    b, _ = EEGSimulator(make_stimuli(), EEGSimConfig(seed=0)).generate(sched, 3.0)
    np.testing.assert_array_equal(a, b)
    c, _ = EEGSimulator(stim, EEGSimConfig(seed=1)).generate(sched, 3.0)
    assert not np.array_equal(a, c)
    assert 5e-6 < float(a.std()) < 60e-6  # microvolts, in volts


@pytest.mark.parametrize("chunk_size", [1, 7, 10, 1000])
def test_stream_is_bit_identical_to_generate(stim, sim, chunk_size: int) -> None:
    # events straddle the internal 1 s blocks; blink_rate high so blinks straddle them too
    sim = EEGSimulator(stim, EEGSimConfig(blink_rate=2.0, seed=4))
    sched = [StimulusEvent(t, i, 0, "x") for t, i in ((0.0, 3), (0.8, 7), (1.7501, 11), (2.1, 12))]
    ref, _ = sim.generate(sched, 2.345)
    chunks = list(sim.stream(sched, chunk_size=chunk_size, duration=2.345))
    firsts = [first for _, first in chunks]
    assert firsts == list(range(0, 2345, chunk_size))
    assert all(len(c) == chunk_size for c, _ in chunks[:-1])
    out = np.concatenate([c for c, _ in chunks])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)


def test_stream_without_duration_is_endless(stim, sim) -> None:
    stream = sim.stream([], chunk_size=500)
    got = [next(stream)[1] for _ in range(7)]
    assert got == [0, 500, 1000, 1500, 2000, 2500, 3000]
    with pytest.raises(ValueError, match="chunk_size"):
        sim.stream([], chunk_size=0)


def test_evoked_response_starts_at_the_onset_sample(stim) -> None:
    """generate(with event) - generate(without) is exactly the evoked response, placed at round(t*sfreq)."""
    sim = EEGSimulator(stim, EEGSimConfig(latency_jitter=0.0, amplitude_jitter=0.0))
    onset = 1.2346  # -> sample 1235
    with_ev, _ = sim.generate([StimulusEvent(onset, 5, 0, "m")], 2.5)
    without, _ = sim.generate([], 2.5)
    diff = with_ev.astype(float) - without.astype(float)
    n = sim.forward_model.n_times
    start = onset_sample(onset, SFREQ)
    assert start == 1235
    assert np.all(diff[:start] == 0) and np.all(diff[start + n:] == 0)
    np.testing.assert_allclose(diff[start:start + n].T, sim.forward_model.evoked(5), atol=2e-11, rtol=0)


def test_spectrum_has_one_over_f_alpha_and_line_noise(stim, geometry) -> None:
    _, dirs, _ = geometry
    cfg = EEGSimConfig(snr=0.0, blink_rate=0.0, line_freq=60.0, seed=2)
    data, _ = EEGSimulator(stim, cfg).generate([], 30.0)
    f, psd = signal.welch(data.astype(float), fs=SFREQ, nperseg=2000, axis=0)
    frontal, posterior = _frontal_posterior(dirs)

    def band(chs: np.ndarray, lo: float, hi: float) -> float:
        return float(psd[(f >= lo) & (f <= hi)][:, chs].mean())

    # 1/f: log-log slope between 2 and 40 Hz (alpha band left out) at frontal channels
    keep = (f >= 2) & (f <= 40) & ~((f >= 6) & (f <= 15))
    slope = np.polyfit(np.log10(f[keep]), np.log10(psd[keep][:, frontal].mean(1)), 1)[0]
    assert -2.0 < slope < -1.0, slope
    # alpha: a peak over its flanks at posterior channels, and stronger there than frontally
    assert band(posterior, 9, 11) > 3 * np.sqrt(band(posterior, 5, 6) * band(posterior, 15, 17))
    assert band(posterior, 9, 11) > 3 * band(frontal, 9, 11)
    # line noise: a narrow peak at line_freq (60 Hz here), none at 50 Hz
    i60, i50 = np.argmin(np.abs(f - 60)), np.argmin(np.abs(f - 50))
    flank = np.median(psd[i60 - 8:i60 - 2].mean(1))
    assert psd[i60].mean() > 20 * flank
    assert psd[i50].mean() < 3 * flank


def test_background_rms_matches_config(stim) -> None:
    cfg = EEGSimConfig(snr=0.0, blink_rate=0.0, line_amplitude=0.0, drift=0.0, background_rms=12e-6, seed=5)
    sim = EEGSimulator(stim, cfg)
    data, _ = sim.generate([], 20.0)
    rms = float(np.sqrt(np.mean(data.astype(float).var(axis=0))))
    assert rms == pytest.approx(12e-6, rel=0.15)
    np.testing.assert_allclose(np.trace(sim.background_covariance()) / 128, 12e-6**2, rtol=1e-9)
    # neighbouring electrodes are correlated (volume conduction), distant ones much less
    corr = np.corrcoef(data[:, :64].T)
    _, dirs, _ = montage_geometry()
    near = dirs[:64] @ dirs[:64].T > 0.98
    np.fill_diagonal(near, False)
    assert corr[near].mean() > 0.5 > corr[dirs[:64] @ dirs[:64].T < 0].mean()


def test_blinks_are_largest_on_frontal_channels(stim, geometry) -> None:
    _, dirs, _ = geometry
    frontal, posterior = _frontal_posterior(dirs)
    with_blinks, _ = EEGSimulator(stim, EEGSimConfig(blink_rate=0.5, seed=3)).generate([], 20.0)
    no_blinks, _ = EEGSimulator(stim, EEGSimConfig(blink_rate=0.0, seed=3)).generate([], 20.0)
    blinks = np.abs(with_blinks.astype(float) - no_blinks.astype(float)).max(axis=0)  # per channel
    assert blinks.max() > 90e-6
    assert dirs[np.argmax(blinks), 1] > 0.8  # the largest deflection is at the front
    assert blinks[frontal].mean() > 5 * blinks[posterior].mean()


def test_forward_model_snr_definition(stim) -> None:
    for snr in (0.5, 2.0):
        sim = EEGSimulator(stim, EEGSimConfig(snr=snr))
        fm = sim.forward_model
        ev = fm.evoked_all().astype(float)
        assert ev.shape == (stim.n_images, 128, 500)
        rms = np.sqrt(np.mean(ev**2))
        assert rms == pytest.approx(snr * sim.config.background_rms, rel=1e-4)
    templates = fm.class_templates()
    assert templates.shape == (stim.n_classes, 128, 500) and templates.dtype == np.float32
    np.testing.assert_allclose(templates[0], ev[stim.class_images(0)].mean(0), rtol=1e-4, atol=1e-10)
    flat = templates.reshape(stim.n_classes, -1).astype(float)
    corr = np.corrcoef(flat)
    assert np.all(corr[~np.eye(stim.n_classes, dtype=bool)] < 0.999)  # classes differ
    np.testing.assert_allclose(fm.evoked_from_features(stim.features[7]), fm.evoked(7), rtol=1e-5, atol=1e-12)


def test_forward_model_components_where_expected(sim, geometry) -> None:
    _, dirs, _ = geometry
    fm = sim.forward_model
    grand = fm.evoked_all().astype(float).mean(0)  # (n_ch, n_times)
    occipital = np.flatnonzero((dirs[:, 1] < -0.85) & (dirs[:, 2] < 0.4))
    parietal = np.flatnonzero((dirs[:, 1] < -0.5) & (dirs[:, 2] > 0.6))
    t = fm.times
    p1 = grand[occipital][:, (t > 0.07) & (t < 0.13)].mean()
    n1 = grand[occipital][:, (t > 0.15) & (t < 0.2)].mean()
    p300 = grand[parietal][:, (t > 0.3) & (t < 0.4)].mean()
    assert p1 > 0 > n1 and p300 > 0
    assert p300 > grand[np.flatnonzero(dirs[:, 1] > 0.8)][:, (t > 0.3) & (t < 0.4)].mean()


def test_evoked_average_matches_forward_model(stim, sim) -> None:
    sched = _trials([17], 60, soa=0.7)
    data, _ = sim.generate(sched, sched[-1].onset + 1.0)
    avg = _epochs(data, sched, sim.forward_model.n_times).mean(0)
    template = sim.forward_model.evoked(17).astype(float)
    template -= template.mean(1, keepdims=True)
    assert np.corrcoef(avg.ravel(), template.ravel())[0, 1] > 0.9
    other = sim.forward_model.evoked(int(stim.class_images(30)[0])).astype(float)
    other -= other.mean(1, keepdims=True)
    assert np.corrcoef(avg.ravel(), template.ravel())[0, 1] > np.corrcoef(avg.ravel(), other.ravel())[0, 1]


def test_oracle_nearest_template_improves_with_snr(stim) -> None:
    """Single-trial nearest-template classification among 5 images of 5 classes (chance 0.2)."""
    images = [int(stim.class_images(c)[0]) for c in (0, 9, 18, 27, 36)]
    sched = _trials(images, 10, soa=0.55)
    duration = sched[-1].onset + 1.0
    truth = np.array([e.image_index for e in sched])
    acc = {}
    for snr in (0.1, 1.0, 3.0):
        sim = EEGSimulator(stim, EEGSimConfig(snr=snr, seed=1))
        data, _ = sim.generate(sched, duration)
        x = _epochs(data, sched, sim.forward_model.n_times).reshape(len(sched), -1)
        templates = np.stack([sim.forward_model.evoked(i) for i in images]).astype(float)
        templates = (templates - templates.mean(2, keepdims=True)).reshape(len(images), -1)
        dist = (templates**2).sum(1)[None] - 2 * x @ templates.T
        acc[snr] = float(np.mean(np.array(images)[dist.argmin(1)] == truth))
    assert acc[1.0] > 0.5
    assert acc[3.0] > acc[0.1] + 0.3


def test_eeg_validates_inputs(stim, sim) -> None:
    with pytest.raises(ValueError, match="n_channels"):
        EEGSimulator(stim, EEGSimConfig(n_channels=64))
    with pytest.raises(ValueError, match="snr"):
        EEGSimConfig(snr=-1.0)
    with pytest.raises(ValueError, match="image_index"):
        sim.generate([StimulusEvent(0.5, stim.n_images, 0, "x")], 1.0)
    with pytest.raises(ValueError, match="duration"):
        sim.generate([], 0.0)
    with pytest.raises(TypeError, match="StimulusSet"):
        EEGSimulator("not stimuli")


# ============================================================================ fMRI
def test_fmri_shapes_events_and_description() -> None:
    fmri = FMRISimulator()
    patterns = make_binary_patterns(4, seed=1)
    volumes, times, events = fmri.generate(patterns, stim_duration_trs=3, rest_trs=3)
    assert volumes.shape == (24, 967) and volumes.dtype == np.float32
    np.testing.assert_array_equal(times, np.arange(24) * 2.0)
    assert events == [(0.0, 0), (12.0, 1), (24.0, 2), (36.0, 3)]
    assert fmri.receptive_fields.shape == (967, 100) and fmri.receptive_fields.dtype == np.float32
    d = fmri.description()
    assert d.type == "fMRI" and d.n_channels == 967 and d.nominal_rate == pytest.approx(0.5)
    assert d.channel_names[:2] == ("v0000", "v0001")
    again, _, _ = FMRISimulator().generate(patterns)
    np.testing.assert_array_equal(again, volumes)
    assert 500 < float(volumes.mean()) < 1500


def test_hrf_peaks_near_5_s() -> None:
    t, h = FMRISimulator().hrf(dt=0.01)
    assert t[np.argmax(h)] == pytest.approx(5.0, abs=0.3)
    assert h.max() == pytest.approx(1.0) and h.min() < 0  # undershoot
    assert 12 < t[np.argmin(h)] < 18
    np.testing.assert_allclose(canonical_hrf(t), h)


def test_fmri_response_follows_receptive_fields() -> None:
    fmri = FMRISimulator(FMRISimConfig(snr=5.0, seed=2))
    rf = fmri.receptive_fields.astype(float)
    assert np.all(rf[~fmri.responsive] == 0) and 0.6 < fmri.responsive.mean() < 0.95
    # a voxel responds more to a dot at its receptive-field centre than to one far away
    v = int(np.flatnonzero(fmri.responsive & (fmri.rf_sigmas < 1.0))[0])
    r, c = np.clip(np.round(fmri.rf_centres[v]).astype(int), 0, 9)
    near = np.zeros((10, 10))
    near[r, c] = 1
    far = np.zeros((10, 10))
    far[9 - r if abs(9 - 2 * r) > 3 else (r + 5) % 10, 9 - c] = 1
    assert fmri.response(near)[v] > 5 * fmri.response(far)[v]
    patterns = make_binary_patterns(30, seed=5)
    np.testing.assert_allclose(fmri.responses(patterns), patterns.reshape(30, -1) @ rf.T)
    # the measured volumes near the HRF peak track the forward model
    volumes, _, events = fmri.generate(patterns, stim_duration_trs=3, rest_trs=3)
    peak = np.array([volumes[int(onset / 2.0) + 3] for onset, _ in events]).astype(float)
    change = peak / fmri.baselines - 1.0
    predicted = fmri.responses(patterns)
    vox = fmri.responsive
    corr = np.corrcoef((change[:, vox] - change[:, vox].mean(0)).ravel(),
                       (predicted[:, vox] - predicted[:, vox].mean(0)).ravel())[0, 1]
    assert corr > 0.5
    with pytest.raises(ValueError, match="shape"):
        fmri.response(np.zeros((5, 5)))


def test_a_new_session_keeps_the_subject_and_changes_the_noise() -> None:
    """Session N of subject ``seed``: same forward model and stimuli, new noise and schedule."""
    from streams.simulate import SimulationSpec, _World

    a, b = _World(SimulationSpec(duration=20.0, seed=4)), _World(SimulationSpec(duration=20.0, seed=4, session=1))
    assert np.array_equal(a.stimuli.images, b.stimuli.images)
    fa, fb = a.sim.forward_model, b.sim.forward_model
    assert np.array_equal(fa.spatial_basis, fb.spatial_basis) and fa.gain == fb.gain
    assert np.array_equal(fa.topographies(fa.features), fb.topographies(fb.features))
    assert [e.marker for e in a.schedule] != [e.marker for e in b.schedule]
    chunk_a = next(iter(a.sim.stream(a.schedule, chunk_size=1000, duration=1.0)))[0]
    chunk_b = next(iter(b.sim.stream(b.schedule, chunk_size=1000, duration=1.0)))[0]
    assert not np.allclose(chunk_a, chunk_b)
    with pytest.raises(ValueError, match="session=-1"):
        SimulationSpec(session=-1)


def test_simulator_checks_follow_the_type_value_rule(stim) -> None:
    """streams._checks: a wrong type is a TypeError, a wrong value a ValueError, both naming the argument."""
    from streams.synthetic import format_block_marker

    with pytest.raises(TypeError, match="session=1.5"):
        EEGSimConfig(session=1.5)
    with pytest.raises(ValueError, match="line_freq=1.0 must be > 1"):
        EEGSimConfig(line_freq=1.0, line_amplitude=0.0)
    with pytest.raises(TypeError, match="tr='2'"):
        FMRISimConfig(tr="2")
    with pytest.raises(ValueError, match="shared_noise=1.5"):
        FMRISimConfig(shared_noise=1.5)
    with pytest.raises(TypeError, match="rest_trs=1.0"):
        FMRISimulator(FMRISimConfig(n_voxels=10)).generate(make_binary_patterns(1), rest_trs=1.0)
    with pytest.raises(TypeError, match="chunk_size=2.0"):
        EEGSimulator(stim).stream([], chunk_size=2.0)
    with pytest.raises(ValueError, match="block=-1"):
        format_block_marker(BLOCK_START, -1)
    assert format_block_marker(BLOCK_END, np.int64(3)) == "block_end/3"
    with pytest.raises(TypeError, match="n=2.0"):
        make_binary_patterns(2.0)
