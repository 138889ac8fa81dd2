"""Ridge baseline, grouped CV, voxel selection (offline/evaluation/baselines.py) and the oracles (offline/evaluation/oracle.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bci.preprocessing import PreprocessConfig, preprocess_recording
from offline.evaluation.baselines import (
    RidgeDecoder,
    cross_validated_scores,
    downsample_features,
    grouped_folds,
    voxel_selection,
)
from offline.scoring.metrics import classification_accuracy, similarity
from offline.evaluation.oracle import EEGOracle, FMRIOracle, eeg_templates
from streams.synthetic import (
    EEGSimConfig,
    EEGSimulator,
    FMRISimConfig,
    FMRISimulator,
    make_binary_patterns,
    make_schedule,
    make_stimuli,
    onset_sample,
)

torch.set_num_threads(1)  # small products: extra threads only cost on a busy machine


def _direct_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Textbook solve: centred data, (XᵀX + αI)⁻¹ XᵀY; returns (coef, intercept)."""
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return coef, ym - xm @ coef


# ============================================================================ ridge
@pytest.mark.parametrize(("n", "p"), [(60, 15), (15, 60)])  # primal and dual paths
def test_ridge_equals_a_direct_numpy_solve(n: int, p: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, p) + rng.normal(size=p)
    y = rng.normal(size=(n, 3))
    x_new = rng.normal(size=(7, p))
    model = RidgeDecoder(alphas=[2.5], standardize=False).fit(x, y)
    coef, b = _direct_ridge(x, y, 2.5)
    np.testing.assert_allclose(model.predict(x_new), x_new @ coef + b, rtol=1e-8, atol=1e-10)
    # standardised features: the same solve on z-scored columns
    model = RidgeDecoder(alphas=[2.5], standardize=True).fit(x, y)
    mu, sd = x.mean(0), x.std(0)
    coef, b = _direct_ridge((x - mu) / sd, y, 2.5)
    np.testing.assert_allclose(model.predict(x_new), ((x_new - mu) / sd) @ coef + b, rtol=1e-8, atol=1e-10)
    assert model.cv_scores_ is None and model.alpha_.tolist() == [2.5] * 3


def test_cross_validated_scores_equal_brute_force_per_fold_solves() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(48, 30))
    y = x[:, :3] @ rng.normal(size=(3, 2)) + rng.normal(size=(48, 2))
    groups = np.repeat(np.arange(6), 8)
    alphas = [0.1, 10.0, 1000.0]
    for scoring in ("neg_mse", "r2", "corr"):
        got = cross_validated_scores(x, y, groups, alphas, n_folds=3, scoring=scoring)
        want = np.zeros((3, 2))
        for tr, va in grouped_folds(groups, 3):
            mu, sd = x[tr].mean(0), x[tr].std(0)
            for i, a in enumerate(alphas):
                coef, b = _direct_ridge((x[tr] - mu) / sd, y[tr], a)
                pred = ((x[va] - mu) / sd) @ coef + b
                if scoring == "neg_mse":
                    want[i] += -np.mean((pred - y[va]) ** 2, axis=0)
                elif scoring == "r2":
                    want[i] += 1 - ((pred - y[va]) ** 2).sum(0) / ((y[va] - y[va].mean(0)) ** 2).sum(0)
                else:
                    want[i] += [np.corrcoef(pred[:, j], y[va][:, j])[0, 1] for j in range(2)]
        np.testing.assert_allclose(got, want / 3, rtol=1e-8, atol=1e-10)


def test_alpha_choice_follows_the_signal() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 10))
    groups = np.repeat(np.arange(6), 20)
    clean = x @ rng.normal(size=(10, 1))
    noise = rng.normal(size=(120, 1))
    alphas = np.logspace(-2, 5, 8)
    model = RidgeDecoder(alphas).fit(x, np.hstack([clean, noise]), groups)
    assert model.alpha_[0] == model.alpha_[1]  # one alpha for all targets by default
    per = RidgeDecoder(alphas, alpha_per_target=True).fit(x, np.hstack([clean, noise]), groups)
    assert per.alpha_[0] == alphas[0] and per.alpha_[1] == alphas[-1]
    report = per.cv_report()
    assert report["alpha_at_grid_edge"] in (True, False) and len(report["cv_mean_score"]) == 8
    # a 1-D target round-trips as 1-D
    assert RidgeDecoder(alphas).fit(x, clean[:, 0], groups).predict(x[:3]).shape == (3,)


@settings(max_examples=40, deadline=None)
@given(
    groups=st.lists(st.integers(0, 9), min_size=4, max_size=60).filter(lambda g: len(set(g)) >= 2),
    n_folds=st.integers(2, 7),
)
def test_grouped_folds_never_split_a_group(groups: list[int], n_folds: int) -> None:
    g = np.array(groups)
    folds = grouped_folds(g, n_folds)
    assert len(folds) == min(n_folds, len(set(groups)))
    seen = np.concatenate([va for _, va in folds])
    assert sorted(seen.tolist()) == list(range(len(g)))  # every sample validated exactly once
    for tr, va in folds:
        assert len(va) > 0 and len(tr) > 0
        assert not set(g[tr]) & set(g[va])
        assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(g)))


def test_grouped_folds_accept_string_groups_and_keep_neighbours_together() -> None:
    groups = np.array(["s1-b0"] * 3 + ["s1-b1"] * 3 + ["s1-b2"] * 3 + ["s1-b3"] * 3)
    folds = grouped_folds(groups, 2)
    assert [sorted(set(groups[va])) for _, va in folds] == [["s1-b0", "s1-b1"], ["s1-b2", "s1-b3"]]


def test_ridge_save_load_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 12)).astype(np.float32)
    y = rng.normal(size=(40, 4)).astype(np.float32)
    model = RidgeDecoder([0.1, 1.0, 10.0], n_folds=4).fit(x, y, np.repeat(np.arange(8), 5))
    d = model.save(tmp_path / "ridge")
    assert sorted(p.name for p in d.iterdir()) == ["ridge.json", "ridge.npz"]
    loaded = RidgeDecoder.load(d)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.cv_scores_, model.cv_scores_)
    assert loaded.alpha_.tolist() == model.alpha_.tolist() and loaded.n_folds == 4
    meta = json.loads((d / "ridge.json").read_text())
    meta["version"] = 99
    (d / "ridge.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version"):
        RidgeDecoder.load(d)
    with pytest.raises(FileNotFoundError, match="ridge.json"):
        RidgeDecoder.load(tmp_path / "missing")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: RidgeDecoder().fit(np.zeros((10, 3)), np.zeros((10, 2))), ValueError, "groups"),
        (lambda: RidgeDecoder().fit(np.zeros((10, 3)), np.zeros((9, 2)), np.arange(10)), ValueError, "match"),
        (lambda: RidgeDecoder().fit(np.zeros((10, 3, 4)), np.zeros((10, 2)), np.arange(10)), ValueError,
         "downsample_features"),
        (lambda: RidgeDecoder().fit(np.zeros((10, 3)), np.zeros((10, 2)), np.zeros(10)), ValueError, "at least 2"),
        (lambda: RidgeDecoder().fit(np.full((10, 3), np.nan), np.zeros((10, 2)), np.arange(10)), ValueError, "NaN"),
        (lambda: RidgeDecoder().fit([[0.0]], np.zeros((1, 2)), [0]), TypeError, "numpy array"),
        (lambda: RidgeDecoder(alphas=[0.0, 1.0]), ValueError, "alphas"),
        (lambda: RidgeDecoder(scoring="mae"), ValueError, "scoring"),  # type: ignore[arg-type]
        (lambda: RidgeDecoder().predict(np.zeros((2, 3))), RuntimeError, "not fitted"),
        (lambda: RidgeDecoder([1.0]).fit(np.arange(12.0).reshape(4, 3), np.zeros(4)).predict(np.zeros((2, 5))),
         ValueError, "fitted on 3"),
    ],
)
def test_ridge_input_validation(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_downsample_features() -> None:
    w = np.arange(10, dtype=np.float32).reshape(1, 2, 5)
    np.testing.assert_allclose(downsample_features(w, 2), [[0.5, 2.5, 5.5, 7.5]])
    np.testing.assert_allclose(downsample_features(w, 1), w.reshape(1, 10))
    assert downsample_features(np.zeros((3, 128, 440)), 10).shape == (3, 128 * 44)
    with pytest.raises(ValueError, match="factor"):
        downsample_features(w, 0)
    with pytest.raises(ValueError, match="longer than the window"):
        downsample_features(w, 6)


# ============================================================================ voxel selection
def test_voxel_selection_recovers_planted_informative_voxels() -> None:
    rng = np.random.default_rng(4)
    n, f, v = 120, 16, 60
    features = rng.normal(size=(n, f))
    voxels = rng.normal(size=(n, v)) * 2.0
    planted = np.array([3, 11, 17, 25, 38, 44, 51, 59])
    voxels[:, planted] += features @ rng.normal(size=(f, len(planted)))
    groups = np.repeat(np.arange(6), 20)
    sel = voxel_selection(features, voxels, groups, top_n=len(planted), alphas=np.logspace(-1, 4, 6))
    assert set(sel.indices.tolist()) == set(planted.tolist())
    others = np.setdiff1d(np.arange(v), planted)
    assert sel.correlations[planted].min() > 0.5 > sel.correlations[others].max()
    assert sel.apply(voxels).shape == (n, len(planted))
    assert json.loads(json.dumps(sel.to_dict()))["n_voxels"] == v
    with pytest.raises(ValueError, match="top_n"):
        voxel_selection(features, voxels, groups, top_n=v + 1)


# ============================================================================ EEG oracle
def test_templates_match_the_preprocessed_response_cut_like_the_runtime() -> None:
    stim = make_stimuli(n_per_class=1, seed=0)
    sim = EEGSimulator(stim, EEGSimConfig(seed=2))
    evoked = sim.forward_model.evoked(3).astype(np.float64)
    np.testing.assert_allclose(eeg_templates(sim)[3], evoked[:, 20:460], rtol=1e-6)
    early = eeg_templates(sim, offset=-0.1, n_times=200)[3]
    assert np.all(early[:, :100] == 0) and np.allclose(early[:, 100:], evoked[:, :100])
    # a recording holding only image 3's response, preprocessed with the runtime's function
    cfg = PreprocessConfig(resample_to=250.0)
    onset = 1003  # (onset + 1) % 4 == 0: the onset is a kept output sample (index 250)
    rec = np.zeros((2000, 128), dtype=np.float32)
    rec[onset:onset + 500] = evoked.T
    out = preprocess_recording(rec, 1000.0, sim.channel_names, cfg)
    start = 250 + 5  # + round(0.020 s * 250 Hz)
    want = out[start:start + 110].T
    got = eeg_templates(sim, preprocess=cfg, n_times=110)[3]
    np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(want).max())


@pytest.fixture(scope="module")
def eeg_windows() -> dict:
    """A small rapid-design session at SNR 1, preprocessed (250 Hz) and cut like the runtime."""
    stim = make_stimuli(n_per_class=1, seed=0)  # 40 images, one per class
    sim = EEGSimulator(stim, EEGSimConfig(snr=1.0, seed=3))
    duration = 130.0
    schedule = make_schedule(stim, duration, design="rapid", block_size=20, seed=3)
    data, _ = sim.generate(schedule, duration)
    cfg = PreprocessConfig(resample_to=250.0)
    pp = preprocess_recording(data, sim.sfreq, sim.channel_names, cfg)
    windows, images, blocks = [], [], []
    for ev in schedule:
        if ev.image_index < 0:
            continue
        m = int(round((onset_sample(ev.onset, sim.sfreq) + 1) / 4 - 1))  # nearest output sample
        a = m + 5
        if a + 110 <= len(pp):
            windows.append(pp[a:a + 110].T)
            images.append(ev.image_index)
            blocks.append(ev.block)
    blocks_arr = np.array(blocks)
    return {"sim": sim, "stim": stim, "cfg": cfg, "windows": np.stack(windows), "images": np.array(images),
            "blocks": blocks_arr, "train": blocks_arr < np.median(np.unique(blocks_arr))}


def test_eeg_oracle_beats_chance_and_ridge(eeg_windows: dict) -> None:
    d = eeg_windows
    w, img, tr = d["windows"], d["images"], d["train"]
    te = ~tr
    assert tr.sum() >= 40 and te.sum() >= 40
    oracle = EEGOracle.from_simulator(d["sim"], preprocess=d["cfg"], n_times=110).fit(w[tr], img[tr])
    scores = oracle.score(w[te])
    assert scores.shape == (te.sum(), 40)
    oracle_acc = classification_accuracy(oracle.score_classes(w[te]), d["stim"].class_ids[img[te]])
    assert oracle_acc.chance < 0.1 and oracle_acc.value > 0.5
    # ridge: windows -> generative features, nearest image by correlation
    x = downsample_features(w, 2)
    ridge = RidgeDecoder(np.logspace(0, 6, 7), n_folds=3).fit(x[tr], d["stim"].features[img[tr]], d["blocks"][tr])
    ridge_scores = similarity(ridge.predict(x[te]), d["stim"].features, "correlation")
    ridge_acc = classification_accuracy(ridge_scores, img[te])
    assert oracle_acc.value >= ridge_acc.value
    # knowing the noise helps: the whitened oracle beats plain template matching
    plain = EEGOracle.from_simulator(d["sim"], preprocess=d["cfg"], n_times=110, whiten="none").fit(w[tr], img[tr])
    assert np.mean(plain.predict(w[te]) == img[te]) < np.mean(oracle.predict(w[te]) == img[te])


def test_eeg_oracle_validation(eeg_windows: dict) -> None:
    d = eeg_windows
    oracle = EEGOracle.from_simulator(d["sim"], preprocess=d["cfg"], n_times=110)
    with pytest.raises(RuntimeError, match="not fitted"):
        oracle.score(d["windows"][:2])
    with pytest.raises(ValueError, match="same offset"):
        oracle.fit(d["windows"][:, :, :100], d["images"])
    with pytest.raises(ValueError, match=r"one index per window"):
        oracle.fit(d["windows"], d["images"][:-1])
    with pytest.raises(TypeError, match="EEGSimulator"):
        EEGOracle.from_simulator(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whiten"):
        EEGOracle(np.zeros((2, 3, 4)), whiten="pca")  # type: ignore[arg-type]
    unsupervised = EEGOracle(oracle.templates).fit(d["windows"])
    assert unsupervised.score(d["windows"][:3]).shape == (3, 40)
    # batching and float32 input change nothing but rounding
    w, img = d["windows"][:30], d["images"][:30]
    for whiten in ("spatiotemporal", "none"):
        a = EEGOracle(oracle.templates, whiten=whiten).fit(w, img)
        b = EEGOracle(oracle.templates, whiten=whiten).fit(w.astype(np.float32), img, batch=7)
        np.testing.assert_allclose(b.score(w[:5], batch=2), a.score(w[:5]), rtol=1e-4, atol=1e-6)
    bad = d["windows"][:4].copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        oracle.fit(bad, d["images"][:4])


# ============================================================================ fMRI oracle
def _trial_vectors(volumes: np.ndarray, events: list, tr: float) -> np.ndarray:
    """Mean of volumes 2-4 TRs after each onset (the HRF peak of a 3-TR stimulus)."""
    starts = [int(round(onset / tr)) for onset, _ in events]
    return np.stack([volumes[s + 2:s + 5].mean(axis=0) for s in starts])


def test_fmri_oracle_identifies_patterns() -> None:
    sim = FMRISimulator(FMRISimConfig(n_voxels=300, snr=1.0, seed=1))
    patterns = make_binary_patterns(40, seed=1)
    order_train = np.random.default_rng(0).permutation(40)
    order_test = np.random.default_rng(1).permutation(40)
    vol_tr, _, ev_tr = sim.generate(patterns[order_train])
    vol_te, _, ev_te = sim.generate(patterns[order_test], lead_trs=1)  # another run length: other noise
    x_tr = _trial_vectors(vol_tr, ev_tr, sim.config.tr)
    x_te = _trial_vectors(vol_te, ev_te, sim.config.tr)
    oracle = FMRIOracle(sim, patterns).fit(x_tr, order_train)
    assert oracle.gain_ > 0 and oracle.noise_rank == 4  # shared component + 3 drift cosines
    acc = classification_accuracy(oracle.score(x_te), order_test)
    assert acc.value > 0.3 > 0.025 == acc.chance
    diagonal = FMRIOracle(sim, patterns, noise_rank=0).fit(x_tr, order_train)
    assert diagonal.factors_ is None and oracle.factors_.shape == (300, 4)
    # the Woodbury scores equal a dense Gaussian log-likelihood under diag + F F^T
    cov = np.diag(oracle.diag_) + oracle.factors_ @ oracle.factors_.T
    mu = oracle.intercept_ + oracle.gain_ * oracle.predicted
    prec = np.linalg.inv(cov)
    dense = x_te @ prec @ mu.T - 0.5 * np.einsum("jv,vw,jw->j", mu, prec, mu)
    np.testing.assert_allclose(oracle.score(x_te), dense, rtol=1e-6, atol=1e-6 * np.abs(dense).max())
    acc_diag = classification_accuracy(diagonal.score(x_te), order_test)
    assert acc.value >= acc_diag.value  # modelling the shared noise does not lose
    with pytest.raises(ValueError, match="noise_rank=-1"):
        FMRIOracle(sim, patterns, noise_rank=-1)
    with pytest.raises(ValueError, match="300"):
        oracle.score(x_te[:, :10])
    with pytest.raises(RuntimeError, match="not fitted"):
        FMRIOracle(sim, patterns).score(x_te)
