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
  to every voxel); keep the top-N voxels by cross-validated correlation. It and the
  grouped cross-validation live in :mod:`offline.scoring.ridge` (the fMRI trainer uses
  them too) and are re-exported here.

Models are saved as ``ridge.npz`` (arrays) + ``ridge.json`` (settings); nothing is
pickled. See ``docs/metrics.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from offline.scoring.ridge import (
    DEFAULT_ALPHAS,
    Scoring,
    VoxelSelection,
    _alphas,
    _groups,
    _matrix,
    _mm,
    _spectral,
    _Standardizer,
    cross_validated_scores,
    grouped_folds,
    voxel_selection,
)
from streams._checks import check_int

__all__ = [
    "DEFAULT_ALPHAS",
    "RidgeDecoder",
    "VoxelSelection",
    "cross_validated_scores",
    "downsample_features",
    "grouped_folds",
    "voxel_selection",
]

_FORMAT = "bci-ridge"
_VERSION = 1


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
    f = check_int("factor", factor, low=1)
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
        self.n_folds = check_int("n_folds", n_folds, low=2)
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
