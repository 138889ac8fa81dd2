"""Evaluation metrics, each reported with its chance level (SPEC §5 "Evaluation").

Every metric returns a :class:`Score` (or a dict of them): the value, the chance
level it must be compared against, and the number of samples, e.g.
``top-1 0.82 (chance 0.025, n=400)``.

* Retrieval: :func:`topk_retrieval` (top-k among a gallery, chance k/M),
  :func:`topk_from_scores` (the same from any score matrix, e.g. the oracle's),
  :func:`n_way_accuracy` (N-way with random distractors, chance k/N),
  :func:`pairwise_identification` (2-way, chance 0.5), :func:`zero_shot_accuracy`
  (held-out classes).
* Generated images: :func:`pixcorr`, :func:`ssim_metric`, :func:`clip_two_way`.
* Classification: :func:`classification_accuracy`.

Ties are never resolved in the decoder's favour: a tied item counts with the
probability it would win under a random tie-break, so a constant predictor scores
exactly chance. N-way accuracies are computed as the exact expectation over random
distractor draws (hypergeometric), so they need no seed; Monte Carlo sampling is
available for comparison with papers that sample. See ``docs/metrics.md``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.special import gammaln

from offline.scoring.ssim import ssim as _ssim_torch
from offline.scoring.vectors import unit_rows
from streams._checks import check_float, check_int

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "Bootstrap",
    "Interval",
    "Score",
    "bootstrap_interval",
    "classification_accuracy",
    "clip_two_way",
    "format_interval",
    "format_scores",
    "n_way_accuracy",
    "paired_difference",
    "pairwise_identification",
    "pixcorr",
    "retrieval_top",
    "similarity",
    "ssim_metric",
    "ssim_per_image",
    "topk_from_scores",
    "topk_retrieval",
    "zero_shot_accuracy",
]

Metric = Literal["cosine", "dot", "correlation", "euclidean"]

#: Bootstrap resamples of every interval the project prints (one owner of the default).
BOOTSTRAP_RESAMPLES = 2000


# ============================================================================ intervals
@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval of a mean, with how it was resampled.

    Attributes
    ----------
    low, high : float
        The percentile interval.
    level : float
        Coverage (0.95).
    n_boot : int
        Resamples.
    unit : str
        What was resampled with replacement (e.g. ``"block"``, ``"image"``, ``"window"``).
    n_units : int
        How many of those units the sample holds.
    seed : int
        Seed of the resampling.
    """

    low: float
    high: float
    level: float
    n_boot: int
    unit: str
    n_units: int
    seed: int

    def to_dict(self) -> dict[str, float | int | str]:
        """``ci95_low``, ``ci95_high`` and the resampling (``ci_unit``, ``ci_n_units``, ``ci_n_boot``, ``ci_seed``)."""
        return {"ci95_low": float(self.low), "ci95_high": float(self.high), "ci_unit": self.unit,
                "ci_n_units": int(self.n_units), "ci_n_boot": int(self.n_boot), "ci_seed": int(self.seed)}

    def describe(self) -> str:
        """E.g. ``95% bootstrap intervals over 24 test blocks (2000 resamples, seed 0)``."""
        return (f"{self.level:.0%} bootstrap intervals over {self.n_units} {self.unit}s "
                f"({self.n_boot} resamples, seed {self.seed})")


def format_interval(value: float, low: float | None, high: float | None) -> str:
    """``0.531 [0.46, 0.60]`` (the value to 3 decimals, the interval to 2); no interval: the value alone."""
    if not math.isfinite(value):
        return "nan"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def _group_sums(values: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    g = np.arange(len(values)) if groups is None else np.asarray(groups).reshape(-1)
    if g.shape != values.shape:
        raise ValueError(f"groups has {g.size} entries for {values.size} samples; give one group per sample")
    uniq, inverse = np.unique(g, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(uniq))
    counts = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    return sums, counts


def bootstrap_interval(values: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0, level: float = 0.95, unit: str | None = None) -> Interval:
    """Percentile bootstrap interval of the mean of ``values``, resampling whole groups.

    Parameters
    ----------
    values : numpy.ndarray, (N,)
        Per-sample scores (e.g. each window's top-1 hit, 0 or 1 or a tie share).
    groups : numpy.ndarray, (N,), optional
        The independent unit of each sample (e.g. its test block: windows of one block share
        slow drifts and are not independent). Groups are drawn with replacement and the
        statistic is the mean over the samples they hold. None: every sample is its own unit.
    n_boot : int
        Resamples.
    seed : int
        Seed of the resampling (the interval is reproducible).
    level : float
        Coverage, in [0.5, 0.999].
    unit : str, optional
        Name of the unit for reports (default ``"group"``, or ``"sample"`` without groups).

    Returns
    -------
    Interval
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size < 1:
        raise ValueError("values is empty; a bootstrap interval needs at least one sample")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"values contains NaN or inf ({int(np.sum(~np.isfinite(v)))} values)")
    n_boot = check_int("n_boot", n_boot, low=1)
    seed = check_int("seed", seed, low=0)
    level = check_float("level", level, low=0.5, high=0.999)
    sums, counts = _group_sums(v, groups)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boot = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    name = unit if unit is not None else ("sample" if groups is None else "group")
    return Interval(float(low), float(high), float(level), n_boot, name, len(sums), seed)


@dataclass(frozen=True)
class Bootstrap:
    """How a metric's interval is resampled (pass to the metrics that take ``bootstrap=``).

    Attributes
    ----------
    groups : numpy.ndarray, (N,), optional
        The independent unit of each evaluated sample (test block, image); None: each sample.
    unit : str
        Its name in reports (``"block"``, ``"image"``, ``"window"``).
    n_boot : int
    seed : int
    """

    groups: np.ndarray | None = None
    unit: str = "window"
    n_boot: int = BOOTSTRAP_RESAMPLES
    seed: int = 0

    def interval(self, values: np.ndarray) -> Interval:
        """:func:`bootstrap_interval` of ``values`` with these settings."""
        return bootstrap_interval(values, self.groups, n_boot=self.n_boot, seed=self.seed, unit=self.unit)


def _scored(values: np.ndarray, chance: float, name: str, bootstrap: Bootstrap | None) -> Score:
    """A Score of the mean of per-sample ``values`` (with its interval when ``bootstrap`` is given)."""
    n = len(values)
    value = float(values.mean()) if n else float("nan")
    interval = bootstrap.interval(values) if bootstrap is not None and n else None
    return Score(value, chance, n, name, interval)


# ============================================================================ Score
@dataclass(frozen=True)
class Score:
    """A metric value beside its chance level.

    Attributes
    ----------
    value : float
        The metric.
    chance : float
        What a decoder without information scores (see each metric).
    n : int
        Number of evaluated samples (windows, images).
    name : str
        Short label, e.g. ``"top-1"``.
    interval : Interval, optional
        Its 95 % bootstrap interval (metrics compute one when given ``bootstrap=``).
    """

    value: float
    chance: float
    n: int
    name: str = ""
    interval: Interval | None = None

    def to_dict(self) -> dict[str, float | int | str]:
        """``{"name", "value", "chance", "n"}`` with plain Python types (JSON-ready), and with an interval
        ``ci95_low``, ``ci95_high``, ``ci_unit``, ``ci_n_units``, ``ci_n_boot``, ``ci_seed``."""
        out: dict[str, float | int | str] = {"name": self.name, "value": float(self.value),
                                             "chance": float(self.chance), "n": int(self.n)}
        if self.interval is not None:
            out.update(self.interval.to_dict())
        return out

    def renamed(self, name: str) -> Score:
        """The same score under another name."""
        return Score(self.value, self.chance, self.n, name, self.interval)

    def __str__(self) -> str:
        label = f"{self.name} " if self.name else ""
        if self.interval is None:
            return f"{label}{_fmt(self.value)} (chance {_fmt(self.chance)}, n={self.n})"
        return (f"{label}{format_interval(self.value, self.interval.low, self.interval.high)} "
                f"(chance {_fmt(self.chance)}, n={self.n}; {self.interval.describe()})")


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.3g}"


def format_scores(scores: dict[str, Score] | Sequence[Score]) -> str:
    """One line per score (for reports and logs)."""
    items = scores.values() if isinstance(scores, dict) else scores
    return "\n".join(str(s) for s in items)


# ============================================================================ validation
def _as_array(name: str, x: object, ndim: int | tuple[int, ...]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name} has shape {x.shape}; expected a {want} array")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.dtype == np.bool_:
        raise TypeError(f"{name} has dtype {x.dtype}; expected real numbers")
    return x


def _as_float(name: str, x: object, ndim: int | tuple[int, ...] = 2) -> np.ndarray:
    a = np.asarray(_as_array(name, x, ndim), dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf ({int(np.sum(~np.isfinite(a)))} values); "
                         "check the model output (did training diverge?)")
    return a


def _as_index(name: str, x: object, n: int, high: int) -> np.ndarray:
    a = _as_array(name, x, 1)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} has dtype {a.dtype}; expected integer indices")
    if len(a) != n:
        raise ValueError(f"{name} has {len(a)} entries but there are {n} predictions; give one per row")
    if len(a) and (a.min() < 0 or a.max() >= high):
        raise ValueError(f"{name} has values in [{a.min()}, {a.max()}]; they must index the {high} gallery rows")
    return a.astype(np.int64)


def _as_ks(k: int | Sequence[int], high: int) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, numbers.Integral) else tuple(k)
    if not ks:
        raise ValueError("k is empty; pass e.g. k=(1, 5)")
    return tuple(check_int("k", v, low=1, high=high) for v in ks)  # high: the number of candidates


def _check_rows(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray, same_rows: bool = True) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{a_name} has {a.shape[1]} dimensions but {b_name} has {b.shape[1]}; "
                         "they must live in the same embedding space")
    if same_rows and len(a) != len(b):
        raise ValueError(f"{a_name} has {len(a)} rows but {b_name} has {len(b)}; row i of each must be a pair")


# ============================================================================ similarity
def similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, metric: Metric = "cosine") -> np.ndarray:
    """Similarity matrix ``(N, M)``, float64 (higher = more similar).

    Parameters
    ----------
    a : array, (N, D)
    b : array, (M, D)
    metric : {"cosine", "dot", "correlation", "euclidean"}
        ``correlation``: Pearson correlation across dimensions; ``euclidean``: the
        negative Euclidean distance.
    """
    x = _as_float("a", a)
    y = _as_float("b", b)
    _check_rows("a", x, "b", y, same_rows=False)
    if metric == "dot":
        return x @ y.T
    if metric == "euclidean":
        d2 = (x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None, :]
        return -np.sqrt(np.maximum(d2, 0.0))
    if metric == "correlation":
        x = x - x.mean(axis=1, keepdims=True)
        y = y - y.mean(axis=1, keepdims=True)
    elif metric != "cosine":
        raise ValueError(f"metric={metric!r} must be 'cosine', 'dot', 'correlation' or 'euclidean'")
    return unit_rows(x, dtype=None) @ unit_rows(y, dtype=None).T


# ============================================================================ top-k
def _tie_aware_hits(scores: np.ndarray, true_index: np.ndarray, k: int) -> np.ndarray:
    """Per row, the probability that the true column is in the top k under a random tie-break."""
    s_true = scores[np.arange(len(scores)), true_index][:, None]
    greater = (scores > s_true).sum(axis=1)
    tied = (scores == s_true).sum(axis=1)  # includes the true column
    return np.clip((k - greater) / tied, 0.0, 1.0)


def topk_from_scores(scores: np.ndarray | torch.Tensor, true_index: np.ndarray | torch.Tensor,
                     k: int | Sequence[int] = (1, 5), *, name: str = "top",
                     bootstrap: Bootstrap | None = None) -> dict[str, Score]:
    """Top-k accuracy from a score matrix (rows: queries, columns: candidates).

    Parameters
    ----------
    scores : array, (N, M)
        Higher = more likely (similarities, log-likelihoods, logits).
    true_index : array, (N,) int
        Column of the correct candidate for each row.
    k : int or sequence of int
        Each ``1 <= k <= M``.
    name : str
        Prefix of the keys and score names (``"top"`` gives ``"top-1"``, ``"top-5"``).
    bootstrap : Bootstrap, optional
        Give each score its bootstrap interval (resampling rows, or their groups).

    Returns
    -------
    dict of str to Score
        ``value`` = fraction of rows whose true column ranks in the top k (ties
        counted as the expected outcome of a random tie-break); ``chance = k / M``.
    """
    s = _as_float("scores", scores)
    idx = _as_index("true_index", true_index, len(s), s.shape[1])
    ks = _as_ks(k, s.shape[1])
    m = s.shape[1]
    return {f"{name}-{kk}": _scored(_tie_aware_hits(s, idx, kk), kk / m, f"{name}-{kk}", bootstrap) for kk in ks}


def topk_retrieval(
    pred: np.ndarray | torch.Tensor,
    gallery: np.ndarray | torch.Tensor,
    true_index: np.ndarray | torch.Tensor,
    k: int | Sequence[int] = (1, 5),
    *,
    metric: Metric = "cosine",
    bootstrap: Bootstrap | None = None,
) -> dict[str, Score]:
    """Top-k retrieval of each prediction's true item from a gallery.

    Parameters
    ----------
    pred : array, (N, D)
        Predicted embeddings (e.g. EEG → CLIP space).
    gallery : array, (M, D)
        Candidate embeddings; items should be distinct (with duplicated rows, e.g.
        one template caption per image, retrieve over classes instead: ties are
        counted as random tie-breaks, so duplicates lower the score).
    true_index : array, (N,) int
        Row of ``gallery`` that each prediction should retrieve.
    k : int or sequence of int
    metric : {"cosine", "dot", "correlation", "euclidean"}
    bootstrap : Bootstrap, optional
        As for :func:`topk_from_scores`.

    Returns
    -------
    dict of str to Score
        ``{"top-1": Score, "top-5": Score}``, chance ``k / M``.
    """
    p = _as_float("pred", pred)
    g = _as_float("gallery", gallery)
    _check_rows("pred", p, "gallery", g, same_rows=False)
    return topk_from_scores(similarity(p, g, metric), true_index, k, bootstrap=bootstrap)


# ============================================================================ N-way
def retrieval_top(pred: np.ndarray, gallery: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k class retrieval among the classes present in ``labels`` (cosine; ties count as random)."""
    classes = np.unique(labels)
    column = np.searchsorted(classes, labels)
    ks = tuple(k for k in ks if k <= len(classes))
    scores = topk_retrieval(pred, gallery[classes], column, k=ks)
    out = {f"top{k}": scores[f"top-{k}"].value for k in ks}
    out["n_way"] = float(len(classes))
    return out


def _log_comb(n: np.ndarray, r: np.ndarray) -> np.ndarray:
    n = np.asarray(n, dtype=float)
    r = np.asarray(r, dtype=float)
    ok = (r >= 0) & (r <= n)
    with np.errstate(invalid="ignore"):
        out = gammaln(n + 1) - gammaln(r + 1) - gammaln(n - r + 1)
    return np.where(ok, out, -np.inf)


def _expected_n_way(scores: np.ndarray, true_index: np.ndarray, n_way: int, k: int,
                    candidates: np.ndarray) -> np.ndarray:
    """Exact per-row probability of a top-k hit among the true item and ``n_way - 1`` random distractors.

    ``candidates`` (N, M) bool marks the columns a row may draw distractors from
    (without replacement, uniformly). With ``g`` better and ``e`` tied distractors
    among ``D`` candidates, the numbers ``B`` better and ``T`` tied in the draw are
    multivariate hypergeometric, and a hit has probability ``min(1, (k - B) / (T + 1))``
    for ``B < k``.
    """
    rows = np.arange(len(scores))
    s_true = scores[rows, true_index][:, None]
    g = ((scores > s_true) & candidates).sum(axis=1)
    e = ((scores == s_true) & candidates).sum(axis=1)
    d = candidates.sum(axis=1)
    rest = d - g - e
    draws = n_way - 1
    log_total = _log_comb(d, np.full_like(d, draws))
    p = np.zeros(len(scores))
    for b in range(min(k, draws + 1)):
        for t in range(draws - b + 1):
            if t > 0 and not np.any(e >= t):
                break
            logp = _log_comb(g, np.full_like(g, b)) + _log_comb(e, np.full_like(e, t)) \
                + _log_comb(rest, np.full_like(rest, draws - b - t)) - log_total
            p += np.exp(logp) * min(1.0, (k - b) / (t + 1))
    return np.clip(p, 0.0, 1.0)


def _sampled_n_way(scores: np.ndarray, true_index: np.ndarray, n_way: int, k: int,
                   candidates: np.ndarray, n_trials: int, seed: int) -> np.ndarray:
    """Monte Carlo version of :func:`_expected_n_way` (``n_trials`` draws per row)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(len(scores))
    s_true = scores[rows, true_index]
    hits = np.zeros(len(scores))
    for _ in range(n_trials):
        keys = np.where(candidates, rng.random(scores.shape), np.inf)
        picks = np.argpartition(keys, n_way - 2, axis=1)[:, :n_way - 1]
        s = scores[rows[:, None], picks]
        greater = (s > s_true[:, None]).sum(axis=1)
        tied = (s == s_true[:, None]).sum(axis=1) + 1
        hits += np.clip((k - greater) / tied, 0.0, 1.0)
    return hits / n_trials


def _unique_targets(targets: np.ndarray, ids: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean target per unique id and the position of each row's id."""
    id_arr = np.asarray(ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else ids)
    if id_arr.shape != (n,):
        raise ValueError(f"ids has shape {id_arr.shape}; expected ({n},), one id per row")
    uniq, inverse = np.unique(id_arr, return_inverse=True)
    sums = np.zeros((len(uniq), targets.shape[1]))
    np.add.at(sums, inverse, targets)
    return sums / np.bincount(inverse, minlength=len(uniq))[:, None], inverse


def _paired_targets(pred: object, targets: object, ids: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked predictions and targets row by row; with ``ids``, one (mean) target per unique id.

    Returns ``(pred, candidate targets, column of each row's own target)``.
    """
    p = _as_float("pred", pred)
    t = _as_float("targets", targets)
    _check_rows("pred", p, "targets", t)
    if ids is None:
        return p, t, np.arange(len(p))
    t, true_index = _unique_targets(t, ids, len(p))
    return p, t, true_index


def _check_n_way(n_way: object, n_candidates: int) -> int:
    n_way = check_int("n_way", n_way, low=2)
    if n_way > n_candidates:
        raise ValueError(f"n_way={n_way} needs {n_way} distinct candidates but only {n_candidates} exist; "
                         f"use n_way <= {n_candidates}")
    return int(n_way)


def n_way_accuracy(
    pred: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    n_way: int,
    k: int = 1,
    n_trials: int | None = None,
    seed: int = 0,
    *,
    ids: Sequence | np.ndarray | None = None,
    metric: Metric = "cosine",
) -> Score:
    """N-way top-k identification: the true target against ``n_way − 1`` random distractors.

    For each prediction, ``n_way − 1`` distractors are drawn (without replacement)
    from the other targets; a hit is the true target ranking in the top ``k`` of the
    ``n_way`` candidates. With ``n_trials=None`` the value is the exact expectation
    over all draws (no sampling noise, no seed); with ``n_trials`` it is the mean
    over that many random draws per prediction (as in papers that sample).

    Parameters
    ----------
    pred : array, (N, D)
        Predicted embeddings.
    targets : array, (N, D)
        True embedding of each prediction (row i belongs to prediction i).
    n_way : int
        Candidates per trial (>= 2).
    k : int
        Top-k (``1 <= k <= n_way``).
    n_trials : int, optional
        Random draws per prediction; ``None`` = exact expectation.
    seed : int
        Seed of the draws when ``n_trials`` is given.
    ids : sequence, (N,), optional
        Target identity per row (e.g. image id). Rows sharing an id are one
        candidate (their targets averaged), so a distractor is never another
        window of the true image.
    metric : {"cosine", "dot", "correlation", "euclidean"}

    Returns
    -------
    Score
        Chance ``k / n_way``.
    """
    p, t, true_index = _paired_targets(pred, targets, ids)
    m = len(t)
    n_way = _check_n_way(n_way, m)
    (k,) = _as_ks(k, n_way)
    scores = similarity(p, t, metric)
    candidates = np.ones(scores.shape, dtype=bool)
    candidates[np.arange(len(p)), true_index] = False
    if n_trials is None:
        hits = _expected_n_way(scores, true_index, n_way, k, candidates)
    else:
        n_trials = check_int("n_trials", n_trials, low=1)  # or None: exact
        hits = _sampled_n_way(scores, true_index, n_way, k, candidates, n_trials, seed)
    return Score(float(hits.mean()), k / n_way, len(p), f"{n_way}-way top-{k}")


def pairwise_identification(
    pred: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    *,
    ids: Sequence | np.ndarray | None = None,
    metric: Metric = "cosine",
    name: str = "pairwise",
    bootstrap: Bootstrap | None = None,
) -> Score:
    """Pairwise (2-way) identification accuracy.

    For each prediction i, the fraction of other targets j with
    ``sim(pred_i, target_j) < sim(pred_i, target_i)`` (ties count ½), averaged over
    predictions. Equal to the exact :func:`n_way_accuracy` with ``n_way=2``.

    Parameters
    ----------
    pred, targets : array, (N, D)
        Row i of each is a pair.
    ids : sequence, (N,), optional
        As in :func:`n_way_accuracy`: rows sharing an id are one candidate.
    metric : {"cosine", "dot", "correlation", "euclidean"}
    name : str
    bootstrap : Bootstrap, optional
        Give the score its bootstrap interval (resampling predictions, or their groups).

    Returns
    -------
    Score
        Chance 0.5.
    """
    p, t, true_index = _paired_targets(pred, targets, ids)
    if len(t) < 2:
        raise ValueError(f"pairwise identification needs at least 2 distinct targets, got {len(t)}")
    s = similarity(p, t, metric)
    rows = np.arange(len(p))
    s_true = s[rows, true_index][:, None]
    below = (s < s_true).sum(axis=1)
    tied = (s == s_true).sum(axis=1) - 1  # minus the true target itself
    return _scored((below + 0.5 * tied) / (len(t) - 1), 0.5, name, bootstrap)


def zero_shot_accuracy(
    pred: np.ndarray | torch.Tensor,
    class_embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    k: int | Sequence[int] = (1, 5),
    *,
    n_way: int | None = None,
    metric: Metric = "cosine",
) -> dict[str, Score]:
    """Zero-shot classification over held-out classes (never seen in training).

    Each prediction is compared with one embedding per held-out class (e.g. the
    CLIP text embedding of "an image of a red triangle"); a hit is its class in the
    top k.

    Parameters
    ----------
    pred : array, (N, D)
        Predictions for windows of held-out classes only.
    class_embeddings : array, (C, D)
        One row per held-out class.
    labels : array, (N,) int
        Row of ``class_embeddings`` of each prediction's class.
    k : int or sequence of int
    n_way : int, optional
        ``None``: all C classes compete (C-way, chance ``k / C``). Otherwise
        ``n_way − 1`` random distractor classes (exact expectation), chance
        ``k / n_way`` (e.g. the 50-way / 200-way protocols).
    metric : {"cosine", "dot", "correlation", "euclidean"}

    Returns
    -------
    dict of str to Score
        Keys ``"zero-shot C-way top-k"``.
    """
    p = _as_float("pred", pred)
    c = _as_float("class_embeddings", class_embeddings)
    _check_rows("pred", p, "class_embeddings", c, same_rows=False)
    idx = _as_index("labels", labels, len(p), len(c))
    scores = similarity(p, c, metric)
    n = len(c) if n_way is None else _check_n_way(n_way, len(c))
    ks = _as_ks(k, n)
    candidates = np.ones(scores.shape, dtype=bool)
    candidates[np.arange(len(p)), idx] = False
    out = {}
    for kk in ks:
        key = f"zero-shot {n}-way top-{kk}"
        if n_way is None:
            hits = _tie_aware_hits(scores, idx, kk)
        else:
            hits = _expected_n_way(scores, idx, n, kk, candidates)
        out[key] = Score(float(hits.mean()) if len(p) else float("nan"), kk / n, len(p), key)
    return out


# ============================================================================ classification
def classification_accuracy(
    logits: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    k: int = 1,
) -> Score:
    """Top-k classification accuracy (ties counted as random tie-breaks).

    Parameters
    ----------
    logits : array, (N, C)
        Class scores (logits, probabilities or similarities).
    labels : array, (N,) int
        True class per row.
    k : int

    Returns
    -------
    Score
        ``chance`` = accuracy of the best constant guess: the summed frequency of
        the k most common labels (``k / C`` when classes are balanced).
    """
    s = _as_float("logits", logits)
    idx = _as_index("labels", labels, len(s), s.shape[1])
    (k,) = _as_ks(k, s.shape[1])
    if len(s) == 0:
        raise ValueError("logits is empty; nothing to score")
    freq = np.sort(np.bincount(idx, minlength=s.shape[1]))[::-1] / len(idx)
    chance = float(freq[:k].sum())
    value = float(_tie_aware_hits(s, idx, k).mean())
    return Score(value, chance, len(s), "accuracy" if k == 1 else f"top-{k} accuracy")


# ============================================================================ images
def _images(name: str, x: object, data_range: float | None, check_range: bool = True) -> tuple[np.ndarray, float]:
    """Channel-last images ``(N, H, W[, C])`` → float64 ``(N, C, H, W)`` and their data range."""
    a = _as_array(name, x, (3, 4))
    if a.ndim == 4 and a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} has shape {a.shape}; expected channel-last images (N, H, W, 3) or (N, H, W)")
    if data_range is None:
        if a.dtype == np.uint8:
            data_range = 255.0
        elif np.issubdtype(a.dtype, np.floating):
            data_range = 1.0
        else:
            raise TypeError(f"{name} has dtype {a.dtype}; give uint8 images, or floats with data_range=")
    out = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or inf")
    if check_range and a.dtype != np.uint8 and data_range == 1.0 and (out.min() < -1e-6 or out.max() > 1 + 1e-6):
        raise ValueError(f"{name} has values in [{out.min():.3g}, {out.max():.3g}], outside [0, 1]; "
                         "pass data_range= (and shift to [0, range]) or uint8 images")
    if out.ndim == 3:
        out = out[..., None]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), float(data_range)


def _image_pair(gen: object, real: object, data_range: float | None,
                check_range: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    g, rg = _images("gen", gen, data_range, check_range)
    r, rr = _images("real", real, data_range, check_range)
    if g.shape != r.shape:
        raise ValueError(f"gen has shape {g.shape} and real {r.shape} (as N, C, H, W); "
                         "resize the generated images to the stimulus size first")
    if check_range and rg != rr:
        raise ValueError(f"gen (range {rg:g}) and real (range {rr:g}) have different dtypes; "
                         "convert both to uint8 or pass data_range=")
    if len(g) == 0:
        raise ValueError("gen is empty; nothing to score")
    return g, r, rg


def _cyclic_offsets(n: int, n_shuffles: int, seed: int) -> np.ndarray:
    """Distinct offsets in [1, n) for mismatched pairs ``(i, (i + s) % n)``."""
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return 1 + rng.permutation(n - 1)[: min(n_shuffles, n - 1)]


def pixcorr(gen: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor) -> Score:
    """Pixel correlation: Pearson r between a generated image and its stimulus, averaged.

    All pixels and channels of an image are flattened. An image with no variance
    (e.g. a blank output) has correlation 0 with everything.

    Parameters
    ----------
    gen, real : array, (N, H, W, 3) or (N, H, W)
        Generated images and their stimuli (same size; uint8 or floats).

    Returns
    -------
    Score
        ``chance`` = the mean correlation of generated image i with the *other*
        stimuli j ≠ i (mismatched pairs: what the images share with any stimulus).
    """
    g, r, _ = _image_pair(gen, real, None, check_range=False)
    zg = _zscore_rows(g.reshape(len(g), -1))
    zr = _zscore_rows(r.reshape(len(r), -1))
    c = zg @ zr.T / zg.shape[1]
    n = len(c)
    value = float(np.mean(np.diag(c)))
    chance = float((c.sum() - np.trace(c)) / (n * (n - 1))) if n > 1 else float("nan")
    return Score(value, chance, n, "PixCorr")


def _zscore_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    return np.where(sd > 0, x / np.where(sd > 0, sd, 1.0), 0.0)


def _ssim_pairs(g: np.ndarray, r: np.ndarray, data_range: float, batch: int = 128) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(g), batch):
            x = torch.from_numpy(g[i:i + batch])
            y = torch.from_numpy(r[i:i + batch])
            out.append(_ssim_torch(x, y, data_range=data_range, reduction="none").numpy())
    return np.concatenate(out)


_GRAY = np.array([0.2125, 0.7154, 0.0721])  # scikit-image rgb2gray weights


def ssim_metric(
    gen: np.ndarray | torch.Tensor,
    real: np.ndarray | torch.Tensor,
    *,
    data_range: float | None = None,
    grayscale: bool = False,
    n_shuffles: int = 5,
    seed: int = 0,
) -> Score:
    """SSIM between generated images and their stimuli (Gaussian window 11, σ 1.5).

    Parameters
    ----------
    gen, real : array, (N, H, W, 3) or (N, H, W)
        uint8 (range 255) or floats in [0, 1] (or give ``data_range``); H, W >= 11.
    data_range : float, optional
        Dynamic range; default 255 for uint8 and 1 for floats.
    grayscale : bool
        Compare luminance only (scikit-image ``rgb2gray`` weights), as MindEye does;
        otherwise SSIM is averaged over the colour channels.
    n_shuffles : int
        Mismatched pairings used for the chance level.
    seed : int
        Seed of those pairings.

    Returns
    -------
    Score
        ``chance`` = mean SSIM of generated image i with another stimulus
        ``(i + s) mod N`` over ``n_shuffles`` random offsets s.
    """
    g, r, rng_ = _image_pair(gen, real, data_range)
    if grayscale:
        if g.shape[1] < 3:
            raise ValueError("grayscale=True needs RGB images (N, H, W, 3)")
        g = np.einsum("nchw,c->nhw", g[:, :3], _GRAY)[:, None]
        r = np.einsum("nchw,c->nhw", r[:, :3], _GRAY)[:, None]
    value = float(_ssim_pairs(g, r, rng_).mean())
    offsets = _cyclic_offsets(len(g), int(n_shuffles), seed)
    if len(offsets):
        idx = np.arange(len(g))
        chance = float(np.mean([_ssim_pairs(g, r[(idx + s) % len(g)], rng_).mean() for s in offsets]))
    else:
        chance = float("nan")
    return Score(value, chance, len(g), "SSIM")


def ssim_per_image(gen: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor, *,
                   data_range: float | None = None) -> np.ndarray:
    """SSIM of every generated image with its own stimulus, ``(N,)`` (as :func:`ssim_metric`, colour)."""
    g, r, rng_ = _image_pair(gen, real, data_range)
    return _ssim_pairs(g, r, rng_)


def paired_difference(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` over paired samples, its standard error and a 95 % bootstrap interval.

    Parameters
    ----------
    a, b : numpy.ndarray, (N,)
        Per-sample scores of two methods on the same samples (e.g. per-image SSIM).
    groups : numpy.ndarray, (N,), optional
        Resample whole groups (e.g. test blocks, whose samples are not independent);
        None resamples single samples.
    n_boot : int
        Bootstrap resamples.
    seed : int

    Returns
    -------
    dict
        ``diff``, ``se`` (over samples), ``ci95_low``, ``ci95_high``, ``fraction_a_better``, ``n``,
        ``n_groups``.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"a and b must be paired 1-d arrays of >= 2 samples, got {a.shape} and {b.shape}")
    d = a - b
    ci = bootstrap_interval(d, groups, n_boot=n_boot, seed=seed)
    return {"diff": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))), "ci95_low": ci.low,
            "ci95_high": ci.high, "fraction_a_better": float((d > 0).mean()), "n": int(len(d)),
            "n_groups": ci.n_units}


def clip_two_way(gen_emb: np.ndarray | torch.Tensor, real_emb: np.ndarray | torch.Tensor, *,
                 bootstrap: Bootstrap | None = None) -> Score:
    """CLIP two-way identification of generated images (MindEye's "CLIP 2-way").

    For each generated image i, the fraction of other stimuli j whose CLIP embedding
    is less similar (cosine) to ``gen_emb[i]`` than its own stimulus ``real_emb[i]``.

    Parameters
    ----------
    gen_emb, real_emb : array, (N, D)
        CLIP image embeddings of the generated images and of their stimuli.
    bootstrap : Bootstrap, optional
        Give the score its bootstrap interval.

    Returns
    -------
    Score
        Chance 0.5.
    """
    return pairwise_identification(gen_emb, real_emb, metric="cosine", name="CLIP 2-way", bootstrap=bootstrap)
