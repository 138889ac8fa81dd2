"""Grouped cross-validated ridge regression, and the voxel selection built on it (BOLD5000/NSD style).

The pieces that training and evaluation both need: :func:`grouped_folds` (folds that
keep every block or run whole), :func:`cross_validated_scores` (grouped-CV score of
ridge regression for every penalty; the closed form goes through the eigendecomposition
of the smaller Gram matrix, so one decomposition per fold serves every alpha) and
:func:`voxel_selection` (encoding model from stimulus features to every voxel; keep the
top-N voxels by cross-validated correlation), used by the fMRI trainer. The ridge
baseline of evaluation (:class:`offline.evaluation.baselines.RidgeDecoder`) is built on
the same pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from streams._checks import check_int

__all__ = [
    "DEFAULT_ALPHAS",
    "VoxelSelection",
    "cross_validated_scores",
    "grouped_folds",
    "voxel_selection",
]

#: Default penalty grid (on standardised features): 1e-2 … 1e6, 3 per decade.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 25))

Scoring = Literal["neg_mse", "r2", "corr"]
# ============================================================================ validation
def _matrix(name: str, x: object, *, allow_1d: bool = False) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.dtype == np.bool_:
        raise TypeError(f"{name} has dtype {x.dtype}; expected real numbers")
    if x.ndim == 1 and allow_1d:
        x = x[:, None]
    if x.ndim != 2:
        hint = " (flatten windows with downsample_features first)" if x.ndim == 3 else ""
        raise ValueError(f"{name} has shape {x.shape}; expected a 2-D (n_samples, n_columns) array{hint}")
    out = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or inf; clean or drop those samples first")
    return out


def _groups(groups: object, n: int) -> np.ndarray:
    if groups is None:
        raise ValueError("groups is None; pass the block/run id of every sample so that cross-validation "
                         "never splits a block (or give a single alpha to skip cross-validation)")
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups has shape {g.shape}; expected ({n},), one block/run id per sample")
    return g


def _alphas(alphas: object) -> np.ndarray:
    a = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"alphas={alphas!r} must be a non-empty 1-D sequence of penalties")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"alphas={alphas!r} must all be finite and > 0")
    return a


def grouped_folds(groups: Sequence | np.ndarray, n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds that keep every group (block, run) whole.

    The sorted unique groups are cut into ``min(n_folds, n_groups)`` contiguous runs
    of (nearly) equal numbers of groups; fold f validates on the samples of run f
    and trains on all others. Contiguous runs keep neighbouring blocks (which share
    slow drifts) together.

    Parameters
    ----------
    groups : array, (n,)
        Group id per sample (ints or strings).
    n_folds : int
        Requested folds (>= 2).

    Returns
    -------
    list of (train_index, val_index)
    """
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups has shape {g.shape}; expected a 1-D array of group ids")
    k = check_int("n_folds", n_folds, low=2)
    uniq, inverse = np.unique(g, return_inverse=True)
    if len(uniq) < 2:
        raise ValueError(f"groups has {len(uniq)} distinct value(s); grouped cross-validation needs at least 2 "
                         "blocks/runs (or give a single alpha)")
    chunks = np.array_split(np.arange(len(uniq)), min(k, len(uniq)))
    folds = []
    for chunk in chunks:
        val = np.isin(inverse, chunk)
        folds.append((np.flatnonzero(~val), np.flatnonzero(val)))
    return folds


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float64 through torch.

    On a busy machine torch's thread pool is an order of magnitude faster than
    OpenBLAS's busy-waiting threads for these products (measured on 2 shared cores:
    0.13 s vs 1-3 s for a 128 x 44000 Gram matrix); the result is the same product.
    """
    ta = torch.from_numpy(np.asarray(a, dtype=np.float64))
    tb = torch.from_numpy(np.asarray(b, dtype=np.float64))
    return (ta @ tb).numpy()


@dataclass
class _Standardizer:
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, standardize: bool) -> _Standardizer:
        mean = x.mean(axis=0)
        if standardize:
            sd = x.std(axis=0)
            scale = np.where(sd > 1e-12 * max(float(sd.max(initial=0.0)), 1e-300), sd, 1.0)
        else:
            scale = np.ones(x.shape[1])
        return cls(mean, scale, y.mean(axis=0))

    def x(self, x: np.ndarray) -> np.ndarray:
        return (x - self.x_mean) / self.x_scale


def _spectral(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lam, P, B)`` with ``coef(alpha) = P @ diag(1 / (lam + alpha)) @ B`` for centred x, y.

    Primal (n >= p): ``XᵀX = V Λ Vᵀ``, ``P = V``, ``B = Vᵀ Xᵀ Y``.
    Dual (p > n): ``XXᵀ = Q Λ Qᵀ``, ``P = Xᵀ Q``, ``B = Qᵀ Y``.
    """
    n, p = x.shape
    if n >= p:
        lam, v = np.linalg.eigh(_mm(x.T, x))
        return np.maximum(lam, 0.0), v, _mm(v.T, _mm(x.T, y))
    lam, q = np.linalg.eigh(_mm(x, x.T))
    return np.maximum(lam, 0.0), _mm(x.T, q), _mm(q.T, y)


def _score(pred: np.ndarray, y: np.ndarray, scoring: str) -> np.ndarray:
    """Per-target score of predictions (higher is better)."""
    err = pred - y
    if scoring == "neg_mse":
        return -np.mean(err * err, axis=0)
    yc = y - y.mean(axis=0)
    sst = np.sum(yc * yc, axis=0)
    if scoring == "r2":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sst > 0, 1.0 - np.sum(err * err, axis=0) / np.where(sst > 0, sst, 1.0), np.nan)
    pc = pred - pred.mean(axis=0)
    den = np.sqrt(np.sum(pc * pc, axis=0) * sst)
    return np.where(den > 0, np.sum(pc * yc, axis=0) / np.where(den > 0, den, 1.0), 0.0)


def cross_validated_scores(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence | np.ndarray,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    n_folds: int = 5,
    standardize: bool = True,
    scoring: Scoring = "neg_mse",
) -> np.ndarray:
    """Grouped-CV score of ridge regression for every alpha and target.

    Within each fold the scaling (feature mean/std, target mean) is fitted on the
    training part only.

    Parameters
    ----------
    x : ndarray, (n, p)
    y : ndarray, (n, k) or (n,)
    groups : array, (n,)
        Block/run id per sample; see :func:`grouped_folds`.
    alphas : sequence of float
    n_folds : int
    standardize : bool
        Z-score the features (else only centre them).
    scoring : {"neg_mse", "r2", "corr"}
        Per fold and target: negative mean squared error, R² (about the validation
        mean), or Pearson correlation of predictions with the truth.

    Returns
    -------
    ndarray, (n_alphas, k)
        Mean over folds (folds where a score is undefined are skipped).
    """
    xm = _matrix("x", x)
    ym = _matrix("y", y, allow_1d=True)
    if len(xm) != len(ym):
        raise ValueError(f"x has {len(xm)} samples but y has {len(ym)}; they must match")
    if scoring not in ("neg_mse", "r2", "corr"):
        raise ValueError(f"scoring={scoring!r} must be 'neg_mse', 'r2' or 'corr'")
    a = _alphas(alphas)
    folds = grouped_folds(_groups(groups, len(xm)), n_folds)
    per_fold = np.empty((len(folds), len(a), ym.shape[1]))
    for f, (tr, va) in enumerate(folds):
        st = _Standardizer.fit(xm[tr], ym[tr], standardize)
        lam, p, b = _spectral(st.x(xm[tr]), ym[tr] - st.y_mean)
        proj = _mm(st.x(xm[va]), p)
        for i, alpha in enumerate(a):
            pred = _mm(proj / (lam + alpha), b) + st.y_mean
            per_fold[f, i] = _score(pred, ym[va], scoring)
    if np.all(np.isnan(per_fold), axis=0).any():
        raise ValueError(f"scoring={scoring!r} is undefined in every fold for some target (constant within "
                         "each validation fold?); use scoring='neg_mse'")
    return np.nanmean(per_fold, axis=0)


# ============================================================================ voxel selection
@dataclass(frozen=True)
class VoxelSelection:
    """Voxels kept by an encoding model.

    Attributes
    ----------
    indices : ndarray, (top_n,) int
        Kept voxel columns, best first.
    correlations : ndarray, (n_voxels,)
        Cross-validated correlation of every voxel's prediction at ``alpha``.
    alpha : float
        Penalty chosen by the mean correlation over voxels.
    """

    indices: np.ndarray
    correlations: np.ndarray
    alpha: float

    def apply(self, voxels: np.ndarray) -> np.ndarray:
        """The kept columns of ``voxels (n, n_voxels)``, in :attr:`indices` order."""
        v = np.asarray(voxels)
        if v.ndim != 2 or v.shape[1] != len(self.correlations):
            raise ValueError(f"voxels has shape {v.shape}; expected (n, {len(self.correlations)})")
        return v[:, self.indices]

    def to_dict(self) -> dict:
        """JSON-ready: indices, alpha, and the kept voxels' correlations."""
        return {"indices": self.indices.tolist(), "alpha": self.alpha,
                "correlations": self.correlations[self.indices].tolist(), "n_voxels": len(self.correlations)}


def voxel_selection(
    features: np.ndarray,
    voxels: np.ndarray,
    groups: Sequence | np.ndarray,
    top_n: int,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_folds: int = 5,
) -> VoxelSelection:
    """Keep the voxels best predicted by an encoding model (BOLD5000 / NSD style).

    Ridge regression from stimulus features (e.g. CLIP image embeddings) to every
    voxel, evaluated by grouped cross-validation: each voxel's score is the mean
    over folds of the Pearson correlation between its held-out predictions and its
    responses. One alpha (the best mean correlation over voxels) is used for all.
    Pass **training trials only**; apply the returned indices to validation and test.

    Parameters
    ----------
    features : ndarray, (n_trials, F)
    voxels : ndarray, (n_trials, V)
    groups : array, (n_trials,)
        Run/block id per trial.
    top_n : int
        Voxels to keep (1..V).
    alphas : sequence of float
    n_folds : int

    Returns
    -------
    VoxelSelection
    """
    v = _matrix("voxels", voxels)
    n = check_int("top_n", top_n, low=1)
    if n > v.shape[1]:
        raise ValueError(f"top_n={n} exceeds the {v.shape[1]} voxels")
    a = _alphas(alphas)
    scores = cross_validated_scores(features, v, groups, a, n_folds=n_folds, scoring="corr")
    best = int(np.argmax(scores.mean(axis=1)))
    corr = scores[best]
    order = np.argsort(-corr, kind="stable")[:n]
    return VoxelSelection(indices=order.astype(np.int64), correlations=corr, alpha=float(a[best]))
