"""Metrics with chance levels (offline/scoring/metrics.py): hand-computed cases, exact vs brute force, validation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from offline.scoring.metrics import (
    Bootstrap,
    Score,
    bootstrap_interval,
    classification_accuracy,
    clip_two_way,
    format_scores,
    n_way_accuracy,
    paired_difference,
    pairwise_identification,
    pixcorr,
    similarity,
    ssim_metric,
    topk_from_scores,
    topk_retrieval,
    zero_shot_accuracy,
)
from streams.synthetic import make_stimuli

torch.set_num_threads(1)  # small tensors: extra threads only cost on a busy machine


# ============================================================================ Score
def test_score_str_and_dict() -> None:
    s = Score(0.82, 0.025, 400, "top-1")
    assert str(s) == "top-1 0.82 (chance 0.025, n=400)"
    assert json.loads(json.dumps(s.to_dict())) == {"name": "top-1", "value": 0.82, "chance": 0.025, "n": 400}
    assert str(Score(float("nan"), 0.5, 0)) == "nan (chance 0.5, n=0)"
    lines = format_scores({"a": s, "b": Score(0.5, 0.5, 3, "x")}).splitlines()
    assert lines == ["top-1 0.82 (chance 0.025, n=400)", "x 0.5 (chance 0.5, n=3)"]


# ============================================================================ top-k
def test_topk_from_scores_hand_computed() -> None:
    scores = np.array([
        [0.9, 0.1, 0.2, 0.3],  # true 0: rank 1
        [0.5, 0.4, 0.6, 0.1],  # true 1: rank 3
        [0.1, 0.2, 0.3, 0.4],  # true 3: rank 1
    ])
    out = topk_from_scores(scores, np.array([0, 1, 3]), k=(1, 2, 3))
    assert out["top-1"].value == pytest.approx(2 / 3)
    assert out["top-2"].value == pytest.approx(2 / 3)
    assert out["top-3"].value == pytest.approx(1.0)
    assert [out[f"top-{k}"].chance for k in (1, 2, 3)] == [0.25, 0.5, 0.75]
    assert out["top-1"].n == 3


def test_ties_count_as_random_tie_breaks_so_a_constant_predictor_scores_chance() -> None:
    scores = np.zeros((5, 8))
    out = topk_from_scores(scores, np.arange(5), k=(1, 5))
    assert out["top-1"].value == pytest.approx(1 / 8) and out["top-5"].value == pytest.approx(5 / 8)
    # two-way tie with one better item: top-2 hit with probability 1/2
    s = np.array([[0.9, 0.5, 0.5, 0.1]])
    assert topk_from_scores(s, np.array([1]), k=2)["top-2"].value == pytest.approx(0.5)


def test_topk_retrieval_uses_cosine_and_reports_chance() -> None:
    gallery = np.eye(4)
    pred = np.array([[2.0, 0.1, 0, 0], [0, 0, 0.2, 1.0], [0.0, 1.0, 0.9, 0]])
    out = topk_retrieval(pred, gallery, np.array([0, 3, 2]), k=(1, 2))
    assert out["top-1"].value == pytest.approx(2 / 3) and out["top-2"].value == pytest.approx(1.0)
    assert out["top-1"].chance == 0.25 and out["top-2"].chance == 0.5
    # torch input and euclidean metric
    out = topk_retrieval(torch.tensor(pred), torch.tensor(gallery), torch.tensor([0, 3, 2]), k=1, metric="euclidean")
    assert out["top-1"].value == pytest.approx(2 / 3)


def test_similarity_metrics() -> None:
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0]])
    np.testing.assert_allclose(similarity(a, b, "cosine"), [[1.0, 10 / 14]])
    np.testing.assert_allclose(similarity(a, b, "dot"), [[28.0, 10.0]])
    np.testing.assert_allclose(similarity(a, b, "correlation"), [[1.0, -1.0]])
    np.testing.assert_allclose(similarity(a, b, "euclidean"), [[-np.sqrt(14), -np.sqrt(8)]])
    with pytest.raises(ValueError, match="metric"):
        similarity(a, b, "manhattan")  # type: ignore[arg-type]


# ============================================================================ N-way
def _brute_force_n_way(scores: np.ndarray, n_way: int, k: int) -> float:
    """Mean over rows and all distractor subsets (row i's true column is i)."""
    hits = []
    for i, row in enumerate(scores):
        others = [j for j in range(scores.shape[1]) if j != i]
        for subset in itertools.combinations(others, n_way - 1):
            s = row[list(subset)]
            greater, tied = np.sum(s > row[i]), np.sum(s == row[i]) + 1
            hits.append(min(1.0, max(0.0, (k - greater) / tied)))
    return float(np.mean(hits))


def test_exact_n_way_equals_brute_force_including_ties() -> None:
    rng = np.random.default_rng(0)
    pred = np.round(rng.normal(size=(7, 3)), 0)  # coarse values: many ties in the similarities
    targets = np.round(rng.normal(size=(7, 3)), 0) + 0.5
    scores = similarity(pred, targets, "dot")
    assert np.sum(scores == scores[np.arange(7), np.arange(7)][:, None]) > 7  # ties present
    for n_way, k in ((2, 1), (3, 1), (4, 2), (7, 3)):
        got = n_way_accuracy(pred, targets, n_way, k, metric="dot")
        assert got.value == pytest.approx(_brute_force_n_way(scores, n_way, k), abs=1e-12)
        assert got.chance == pytest.approx(k / n_way) and got.n == 7 and got.name == f"{n_way}-way top-{k}"


def test_sampled_n_way_approaches_the_exact_value() -> None:
    rng = np.random.default_rng(1)
    targets = rng.normal(size=(40, 8))
    pred = targets + rng.normal(scale=1.5, size=targets.shape)
    exact = n_way_accuracy(pred, targets, 10, 2)
    sampled = n_way_accuracy(pred, targets, 10, 2, n_trials=200, seed=3)
    assert abs(sampled.value - exact.value) < 0.03
    assert n_way_accuracy(pred, targets, 10, 2, n_trials=20, seed=3).value == \
        n_way_accuracy(pred, targets, 10, 2, n_trials=20, seed=3).value
    assert 0.2 < exact.value < 1.0


def test_pairwise_identification_hand_computed_and_equal_to_two_way() -> None:
    targets = np.eye(3)
    pred = np.array([[1.0, 0.5, 0.0], [0.0, 0.2, 1.0], [0.0, 0.0, 1.0]])
    # row 0: true 1.0 beats 0.5 and 0 -> 1; row 1: true 0.2 beats 0, loses to 1.0 -> 0.5; row 2: 1
    s = pairwise_identification(pred, targets, metric="dot")
    assert s.value == pytest.approx(2.5 / 3) and s.chance == 0.5
    assert n_way_accuracy(pred, targets, 2, metric="dot").value == pytest.approx(s.value)
    rng = np.random.default_rng(2)
    p, t = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    assert pairwise_identification(p, t).value == pytest.approx(n_way_accuracy(p, t, 2).value)


def test_ids_make_windows_of_one_image_a_single_candidate() -> None:
    images = np.eye(4)
    ids = np.array([0, 0, 0, 1, 2, 3])  # three windows of image 0
    targets = images[ids]
    pred = targets + 0.01
    s = n_way_accuracy(pred, targets, 4, ids=ids)
    assert s.value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="only 4"):
        n_way_accuracy(pred, targets, 5, ids=ids)
    # without ids, the duplicates of image 0 tie with the truth and count against it
    assert n_way_accuracy(pred, targets, 6).value < 1.0
    assert pairwise_identification(pred, targets, ids=ids).value == pytest.approx(1.0)


# ============================================================================ zero-shot, classification
def test_zero_shot_accuracy_over_held_out_classes() -> None:
    classes = np.eye(5)
    pred = np.array([[1.0, 0.2, 0, 0, 0], [0.3, 0.0, 0.9, 0, 0], [0, 0, 0, 0.4, 0.6]])
    labels = np.array([0, 1, 3])
    out = zero_shot_accuracy(pred, classes, labels, k=(1, 2))
    assert out["zero-shot 5-way top-1"].value == pytest.approx(1 / 3)
    # row 1: classes 0 and 2 beat its class, 3 and 4 tie with it -> top-2 probability 0
    assert out["zero-shot 5-way top-2"].value == pytest.approx(2 / 3)
    assert out["zero-shot 5-way top-1"].chance == pytest.approx(0.2)
    two = zero_shot_accuracy(pred, classes, labels, k=1, n_way=2)["zero-shot 2-way top-1"]
    # row 0 wins against all 4; row 1 loses to classes 0, 2 and ties with 3, 4 -> 1/4; row 2 loses to 4 -> 3/4
    assert two.value == pytest.approx((1 + 0.25 + 0.75) / 3) and two.chance == 0.5


def test_classification_accuracy_and_majority_chance() -> None:
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 1.0, 0.5], [0.3, 0.2, 0.1], [0.0, 0.0, 3.0]])
    labels = np.array([0, 2, 0, 0])  # imbalanced: 3 of 4 are class 0
    s = classification_accuracy(logits, labels)
    assert s.value == pytest.approx(2 / 4) and s.chance == pytest.approx(0.75) and s.n == 4
    s2 = classification_accuracy(torch.tensor(logits), torch.tensor(labels), k=2)
    # last row: class 2 beats class 0, class 1 ties with it -> top-2 with probability 1/2
    assert s2.value == pytest.approx(3.5 / 4) and s2.chance == pytest.approx(1.0) and s2.name == "top-2 accuracy"
    balanced = classification_accuracy(np.zeros((4, 4)), np.arange(4))
    assert balanced.value == pytest.approx(0.25) and balanced.chance == pytest.approx(0.25)


# ============================================================================ images
def test_pixcorr_values_and_chance() -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    assert pixcorr(real, real).value == pytest.approx(1.0)
    inverted = (255 - real).astype(np.uint8)
    assert pixcorr(inverted, real).value == pytest.approx(-1.0)
    s = pixcorr(real, real)
    flat = real.reshape(4, -1).astype(float)
    c = np.corrcoef(flat)
    assert s.chance == pytest.approx((c.sum() - np.trace(c)) / 12)
    blank = np.zeros_like(real)
    assert pixcorr(blank, real).value == 0.0
    # range-free: floats outside [0, 1] are fine for a correlation
    assert pixcorr(real.astype(np.float32) * 3 - 7, real.astype(np.float32)).value == pytest.approx(1.0)


def test_ssim_metric_on_stimulus_images() -> None:
    stim = make_stimuli(n_per_class=1, seed=0)
    real = stim.images[:8]
    rng = np.random.default_rng(1)
    noisy = np.clip(real.astype(int) + rng.integers(-20, 21, real.shape), 0, 255).astype(np.uint8)
    same = ssim_metric(real, real)
    assert same.value == pytest.approx(1.0) and same.name == "SSIM" and same.n == 8
    s = ssim_metric(noisy, real)
    assert s.chance < s.value < 1.0
    assert s.value == pytest.approx(ssim_metric(noisy.astype(np.float64) / 255, real.astype(np.float64) / 255).value)
    gray = ssim_metric(noisy, real, grayscale=True)
    assert gray.chance < gray.value < 1.0
    assert ssim_metric(noisy, real, seed=5).value == s.value


def test_clip_two_way() -> None:
    real = np.eye(3)
    gen = np.array([[1.0, 0.2, 0.1], [0.9, 0.8, 0.0], [0.0, 0.0, 1.0]])
    s = clip_two_way(gen, real)
    # row 1: cos to real 1 (0.8) loses to real 0 (0.9), beats real 2 (0) -> 0.5
    assert s.value == pytest.approx((1 + 0.5 + 1) / 3) and s.chance == 0.5 and s.name == "CLIP 2-way"


# ============================================================================ validation
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: topk_retrieval(np.zeros((2, 3)), np.zeros((4, 2)), np.array([0, 1])), ValueError, "dimensions"),
        (lambda: topk_retrieval(np.zeros((2, 3)), np.zeros((4, 3)), np.array([0, 4])), ValueError, "index"),
        (lambda: topk_retrieval(np.zeros((2, 3)), np.zeros((4, 3)), np.array([0.0, 1.0])), TypeError, "integer"),
        (lambda: topk_retrieval(np.zeros((2, 3)), np.zeros((4, 3)), np.array([0])), ValueError, "one per row"),
        (lambda: topk_retrieval(np.zeros((2, 3)), np.zeros((4, 3)), np.array([0, 1]), k=5), ValueError, "k="),
        (lambda: topk_retrieval(np.full((2, 3), np.nan), np.zeros((4, 3)), np.array([0, 1])), ValueError, "NaN"),
        (lambda: topk_retrieval([[0.0]], np.zeros((4, 1)), np.array([0])), TypeError, "numpy array"),
        (lambda: n_way_accuracy(np.zeros((3, 2)), np.zeros((4, 2)), 2), ValueError, "pair"),
        (lambda: n_way_accuracy(np.zeros((3, 2)), np.zeros((3, 2)), 1), ValueError, "n_way"),
        (lambda: n_way_accuracy(np.zeros((3, 2)), np.zeros((3, 2)), 2, n_trials=0), ValueError, "n_trials"),
        (lambda: n_way_accuracy(np.zeros((3, 2)), np.zeros((3, 2)), 2.0), TypeError, "n_way=2.0"),
        (lambda: n_way_accuracy(np.zeros((3, 2)), np.zeros((3, 2)), 2, n_trials=True), TypeError, "n_trials=True"),
        (lambda: pixcorr(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 9, 3), np.uint8)), ValueError, "resize"),
        (lambda: ssim_metric(np.zeros((2, 16, 16, 3)), np.full((2, 16, 16, 3), 2.0)), ValueError, "data_range"),
        (lambda: ssim_metric(np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 16, 16, 3))), ValueError, "dtypes"),
        (lambda: ssim_metric(np.zeros((2, 16, 16, 5)), np.zeros((2, 16, 16, 5))), ValueError, "channel-last"),
        (lambda: classification_accuracy(np.zeros((2, 3)), np.array([0, 3])), ValueError, "index"),
    ],
)
def test_metric_input_validation(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_paired_difference_with_grouped_bootstrap() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(200)
    a = b + 0.05 + 0.01 * rng.standard_normal(200)
    out = paired_difference(a, b, np.repeat(np.arange(20), 10), n_boot=500)
    assert out["diff"] == pytest.approx(0.05, abs=0.003) and out["n_groups"] == 20 and out["n"] == 200
    assert out["ci95_low"] < out["diff"] < out["ci95_high"] and out["ci95_low"] > 0.04
    assert out["fraction_a_better"] > 0.99 and out["se"] == pytest.approx(0.01 / np.sqrt(200), rel=0.2)
    same = paired_difference(b, b)
    assert same["diff"] == 0.0 and same["ci95_low"] == same["ci95_high"] == 0.0
    with pytest.raises(ValueError, match="paired 1-d arrays"):
        paired_difference(a, b[:10])
    with pytest.raises(ValueError, match="groups has 3 entries"):
        paired_difference(a, b, np.arange(3))


# ============================================================================ bootstrap intervals
def _coverage(p: float, n_units: int, per_unit: int, grouped: bool, repeats: int = 200) -> float:
    """Fraction of seeded repeats whose 95 % interval holds p; each unit's windows all hit or all miss."""
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(n_units), per_unit)
    inside = 0
    for r in range(repeats):
        values = np.repeat((rng.random(n_units) < p).astype(float), per_unit)
        ci = bootstrap_interval(values, groups if grouped else None, n_boot=400, seed=r)
        inside += ci.low <= p <= ci.high
    return inside / repeats


def test_bootstrap_interval_covers_a_known_binomial_95_percent_of_the_time() -> None:
    assert 0.9 <= _coverage(0.3, 120, 1, grouped=False) <= 0.99
    # windows of one block are not independent: resampling blocks keeps the coverage, resampling windows loses it
    assert 0.9 <= _coverage(0.3, 40, 4, grouped=True) <= 0.99
    assert _coverage(0.3, 40, 4, grouped=False) < 0.8


def test_bootstrap_interval_is_seeded_and_states_its_resampling() -> None:
    values = np.random.default_rng(0).random(96) < 0.5
    groups = np.repeat(np.arange(24), 4)
    ci = bootstrap_interval(values, groups, n_boot=300, seed=3, unit="block")
    assert ci == bootstrap_interval(values, groups, n_boot=300, seed=3, unit="block")
    assert ci != bootstrap_interval(values, groups, n_boot=300, seed=4, unit="block")
    assert ci.low < values.mean() < ci.high and (ci.unit, ci.n_units, ci.n_boot, ci.seed) == ("block", 24, 300, 3)
    assert ci.describe() == "95% bootstrap intervals over 24 blocks (300 resamples, seed 3)"
    assert bootstrap_interval(np.ones(5)).low == 1.0 == bootstrap_interval(np.ones(5)).high


def test_scores_carry_their_interval() -> None:
    rng = np.random.default_rng(1)
    scores, true = rng.random((60, 12)), rng.integers(0, 12, 60)
    scores[np.arange(40), true[:40]] = 2.0  # 40 of 60 rows right
    boot = Bootstrap(np.repeat(np.arange(15), 4), unit="block", n_boot=500)
    top1 = topk_from_scores(scores, true, k=1, bootstrap=boot)["top-1"]
    plain = topk_from_scores(scores, true, k=1)["top-1"]
    assert top1.value == plain.value and plain.interval is None and "ci95_low" not in plain.to_dict()
    d = top1.to_dict()
    assert d["ci95_low"] < d["value"] < d["ci95_high"] and d["ci_unit"] == "block" and d["ci_n_units"] == 15
    assert str(top1).startswith(f"top-1 {top1.value:.3f} [{d['ci95_low']:.2f}, {d['ci95_high']:.2f}] (chance")
    pair = pairwise_identification(scores[:, :8], scores[:, :8] + 0.1, bootstrap=boot)
    assert pair.interval is not None and pair.interval.low <= pair.value <= pair.interval.high
    assert pair.value == pairwise_identification(scores[:, :8], scores[:, :8] + 0.1).value


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"values": np.zeros(0)}, ValueError, "values is empty"),
        ({"values": np.array([0.5, np.nan])}, ValueError, "NaN or inf"),
        ({"values": np.zeros(4), "groups": np.arange(3)}, ValueError, "groups has 3 entries for 4 samples"),
        ({"values": np.zeros(4), "n_boot": 0}, ValueError, "n_boot"),
        ({"values": np.zeros(4), "n_boot": 2.5}, TypeError, "n_boot"),
        ({"values": np.zeros(4), "level": 1.0}, ValueError, "level"),
    ],
)
def test_bootstrap_interval_input_validation(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        bootstrap_interval(**kwargs)
