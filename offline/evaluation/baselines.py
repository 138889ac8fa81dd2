"""Ridge-regression baselines and BOLD5000/NSD-style voxel selection (SPEC §5).

* :class:`RidgeDecoder`: ridge regression from (preprocessed, flattened,
  downsampled) signals to a target space such as CLIP embeddings. The penalty is
  chosen by cross-validation over a grid with **grouped** folds (groups = blocks or
  runs: windows of one block never sit on both sides of a fold). The closed form
  goes through the eigendecomposition of the smaller Gram matrix — ``XᵀX`` when
  samples outnumber features, ``XXᵀ`` (the dual) when features outnumber samples —
  so one decomposition per fold serves every alpha.
* :func:`downsample_features`: windows ``(n, channels, times)`` → flat features,
  averaging non-overlapping bins of ``factor`` samples.
* :func:`voxel_selection`: encoding model (ridge from stimulus features, e.g. CLIP,
  to every voxel); keep the top-N voxels by cross-validated correlation.

Models are saved as ``ridge.npz`` (arrays) + ``ridge.json`` (settings); nothing is
pickled. See ``docs/metrics.md``.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

__all__ = [
    "DEFAULT_ALPHAS",
    "RidgeDecoder",
    "VoxelSelection",
    "cross_validated_scores",
    "downsample_features",
    "grouped_folds",
    "voxel_selection",
]

#: Default penalty grid (on standardised features): 1e-2 … 1e6, 3 per decade.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 25))

Scoring = Literal["neg_mse", "r2", "corr"]
_FORMAT = "bci-ridge"
_VERSION = 1


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


def _int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r} must be an int >= {low}")
    return int(value)


# ============================================================================ helpers
def downsample_features(windows: np.ndarray, factor: int = 1) -> np.ndarray:
    """Flatten windows into feature vectors, averaging bins of ``factor`` time samples.

    Parameters
    ----------
    windows : ndarray, (n, n_channels, n_times)
        Preprocessed windows (a 2-D ``(n, n_features)`` input is returned as float32
        when ``factor == 1``).
    factor : int
        Bin width in samples; trailing samples that do not fill a bin are dropped
        (440 samples with factor 10 → 44 bins).

    Returns
    -------
    ndarray, (n, n_channels * (n_times // factor)) float32
        Channel-major: all bins of channel 0, then channel 1, ...
    """
    if not isinstance(windows, np.ndarray):
        raise TypeError(f"windows must be a numpy array, got {type(windows).__name__}")
    f = _int("factor", factor, 1)
    if windows.ndim == 2 and f == 1:
        return np.asarray(windows, dtype=np.float32)
    if windows.ndim != 3:
        raise ValueError(f"windows has shape {windows.shape}; expected (n, n_channels, n_times)")
    n, c, t = windows.shape
    if t < f:
        raise ValueError(f"factor={f} is longer than the window ({t} samples)")
    m = t // f
    binned = np.asarray(windows[:, :, :m * f], dtype=np.float64).reshape(n, c, m, f).mean(axis=3)
    return binned.reshape(n, c * m).astype(np.float32)


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
    k = _int("n_folds", n_folds, 2)
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


# ============================================================================ decoder
class RidgeDecoder:
    """Ridge regression ``Y ≈ X W + b`` with the penalty chosen by grouped cross-validation.

    Parameters
    ----------
    alphas : sequence of float
        Penalty grid (on standardised features when ``standardize``). A single
        value skips cross-validation.
    n_folds : int
        Grouped folds (at most one per group).
    standardize : bool
        Z-score every feature with training statistics (stored with the model).
    alpha_per_target : bool
        Choose the best alpha for each target column separately (else one alpha
        maximising the mean score over targets).
    scoring : {"neg_mse", "r2", "corr"}
        Cross-validation criterion.

    Attributes
    ----------
    (set by :meth:`fit` or :meth:`load`)

    alpha_ : ndarray, (k,)
        Chosen penalty per target (all equal unless ``alpha_per_target``).
    coef_ : ndarray, (p, k)
        Weights on the *standardised* features.
    intercept_ : ndarray, (k,)
    x_mean_, x_scale_ : ndarray, (p,)
    cv_scores_ : ndarray, (n_alphas, k) or None
        Grouped-CV score per alpha and target (None when one alpha was given).
    """

    def __init__(
        self,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        *,
        n_folds: int = 5,
        standardize: bool = True,
        alpha_per_target: bool = False,
        scoring: Scoring = "neg_mse",
    ) -> None:
        self.alphas = _alphas(alphas)
        self.n_folds = _int("n_folds", n_folds, 2)
        self.standardize = bool(standardize)
        self.alpha_per_target = bool(alpha_per_target)
        if scoring not in ("neg_mse", "r2", "corr"):
            raise ValueError(f"scoring={scoring!r} must be 'neg_mse', 'r2' or 'corr'")
        self.scoring = scoring
        self.alpha_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None
        self.x_mean_: np.ndarray | None = None
        self.x_scale_: np.ndarray | None = None
        self.cv_scores_: np.ndarray | None = None
        self._y_1d = False

    # ---------------------------------------------------------------- fit / predict
    def fit(self, X: np.ndarray, Y: np.ndarray, groups: Sequence | np.ndarray | None = None) -> RidgeDecoder:
        """Choose alpha by grouped CV on ``(X, Y)``, then refit on all of it.

        Parameters
        ----------
        X : ndarray, (n, p)
            Training features only (see :func:`downsample_features`).
        Y : ndarray, (n, k) or (n,)
            Targets (e.g. CLIP embeddings of the stimuli).
        groups : array, (n,)
            Block/run id per sample; required unless a single alpha was given.

        Returns
        -------
        self
        """
        x = _matrix("X", X)
        y = _matrix("Y", Y, allow_1d=True)
        if len(x) != len(y):
            raise ValueError(f"X has {len(x)} samples but Y has {len(y)}; they must match")
        if len(x) < 2:
            raise ValueError(f"X has {len(x)} sample(s); ridge needs at least 2")
        self._y_1d = np.ndim(Y) == 1
        k = y.shape[1]
        if len(self.alphas) == 1:
            self.cv_scores_ = None
            alpha = np.full(k, self.alphas[0])
        else:
            self.cv_scores_ = cross_validated_scores(x, y, _groups(groups, len(x)), self.alphas, n_folds=self.n_folds,
                                                     standardize=self.standardize, scoring=self.scoring)
            if self.alpha_per_target:
                alpha = self.alphas[np.argmax(self.cv_scores_, axis=0)]
            else:
                alpha = np.full(k, self.alphas[int(np.argmax(self.cv_scores_.mean(axis=1)))])
        st = _Standardizer.fit(x, y, self.standardize)
        lam, p, b = _spectral(st.x(x), y - st.y_mean)
        coef = np.empty((x.shape[1], k))
        for a in np.unique(alpha):
            cols = alpha == a
            coef[:, cols] = _mm(p / (lam + a), b[:, cols])
        self.alpha_, self.coef_, self.intercept_ = alpha, coef, st.y_mean
        self.x_mean_, self.x_scale_ = st.x_mean, st.x_scale
        return self

    def _check_fitted(self) -> None:
        if self.coef_ is None:
            raise RuntimeError("this RidgeDecoder is not fitted; call fit(X, Y, groups) or RidgeDecoder.load(dir)")

    @property
    def n_features(self) -> int:
        """Number of input features."""
        self._check_fitted()
        return int(self.coef_.shape[0])

    @property
    def n_targets(self) -> int:
        """Number of output columns."""
        self._check_fitted()
        return int(self.coef_.shape[1])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets ``(n, k)`` (``(n,)`` if fitted on a 1-D ``Y``), float64."""
        self._check_fitted()
        x = _matrix("X", X)
        if x.shape[1] != self.n_features:
            raise ValueError(f"X has {x.shape[1]} features but the model was fitted on {self.n_features}; "
                             "use the same preprocessing and downsample_features factor as in training")
        out = _mm((x - self.x_mean_) / self.x_scale_, self.coef_) + self.intercept_
        return out[:, 0] if self._y_1d else out

    def cv_report(self) -> dict:
        """Chosen alpha(s), the grid, the CV curve (mean over targets), and whether the best is on the edge."""
        self._check_fitted()
        report: dict = {"alphas": self.alphas.tolist(), "alpha": self.alpha_.tolist(), "scoring": self.scoring,
                        "n_folds": self.n_folds}
        if self.cv_scores_ is not None:
            curve = self.cv_scores_.mean(axis=1)
            report["cv_mean_score"] = curve.tolist()
            best = int(np.argmax(curve))
            report["alpha_at_grid_edge"] = best in (0, len(self.alphas) - 1)
        return report

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``ridge.npz`` + ``ridge.json`` into ``directory`` (created if needed); returns it."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"coef": self.coef_, "intercept": self.intercept_, "x_mean": self.x_mean_,
                  "x_scale": self.x_scale_, "alpha": self.alpha_, "alphas": self.alphas}
        if self.cv_scores_ is not None:
            arrays["cv_scores"] = self.cv_scores_
        np.savez(d / "ridge.npz", **arrays)
        meta = {"format": _FORMAT, "version": _VERSION, "n_features": self.n_features, "n_targets": self.n_targets,
                "standardize": self.standardize, "alpha_per_target": self.alpha_per_target,
                "scoring": self.scoring, "n_folds": self.n_folds, "y_1d": self._y_1d}
        (d / "ridge.json").write_text(json.dumps(meta, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> RidgeDecoder:
        """Read a model written by :meth:`save` (no pickle)."""
        d = Path(directory)
        meta_path, arr_path = d / "ridge.json", d / "ridge.npz"
        for path in (meta_path, arr_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found; is {d} a directory written by RidgeDecoder.save?")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(f"{meta_path} has format={meta.get('format')!r} version={meta.get('version')!r}; "
                             f"expected {_FORMAT!r} version {_VERSION}")
        with np.load(arr_path, allow_pickle=False) as z:
            arrays = {name: np.array(z[name]) for name in z.files}
        model = cls(arrays["alphas"], n_folds=meta["n_folds"], standardize=meta["standardize"],
                    alpha_per_target=meta["alpha_per_target"], scoring=meta["scoring"])
        p, k = int(meta["n_features"]), int(meta["n_targets"])
        expected = {"coef": (p, k), "intercept": (k,), "x_mean": (p,), "x_scale": (p,), "alpha": (k,)}
        for name, shape in expected.items():
            if name not in arrays or arrays[name].shape != shape:
                got = arrays[name].shape if name in arrays else "missing"
                raise ValueError(f"{arr_path}: array {name!r} has shape {got}, expected {shape}; the file is corrupt")
        model.coef_, model.intercept_ = arrays["coef"], arrays["intercept"]
        model.x_mean_, model.x_scale_, model.alpha_ = arrays["x_mean"], arrays["x_scale"], arrays["alpha"]
        model.cv_scores_ = arrays.get("cv_scores")
        model._y_1d = bool(meta["y_1d"])
        return model


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
    n = _int("top_n", top_n, 1)
    if n > v.shape[1]:
        raise ValueError(f"top_n={n} exceeds the {v.shape[1]} voxels")
    a = _alphas(alphas)
    scores = cross_validated_scores(features, v, groups, a, n_folds=n_folds, scoring="corr")
    best = int(np.argmax(scores.mean(axis=1)))
    corr = scores[best]
    order = np.argsort(-corr, kind="stable")[:n]
    return VoxelSelection(indices=order.astype(np.int64), correlations=corr, alpha=float(a[best]))
