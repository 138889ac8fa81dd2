"""Multivariate noise normalisation (MVNN): whitening by the noise covariance of repeated images.

Guggenmos, Sterzer & Cichy (2018), "Multivariate pattern analysis for MEG: a comparison of
dissimilarity measures", NeuroImage 173:434-447; used by THINGS-EEG2 (Gifford et al. 2022), NICE
(Song et al. 2024) and ATM (Li et al. 2024). The noise of an epoch is its deviation from the mean
of all repetitions of the same image (condition). Per condition ``c`` and time point ``t`` the
noise covariance across the repetitions is ``S_ct = E_ct^T E_ct / (r_c - 1)``; the covariance of
the fit is their mean over time points and conditions, shrunk towards a scaled identity with the
analytic Ledoit-Wolf intensity (Ledoit & Wolf 2004; scikit-learn is not a dependency, so the
formula is written here), and the whitening matrix is its inverse square root ``W = Σ^-1/2``:
``x -> W x`` at every time point.

Differences from the THINGS-EEG2 scripts, on purpose: they shrink each ``S_ct`` with
:func:`sklearn.covariance.ledoit_wolf` before averaging (1.6 M fits for one subject) and fit per
recording session; here the mean is shrunk once (the intensity from all noise samples) and the
fit uses every training epoch (the imported files merge the sessions). Fit it on the training
part only: the fit sees the data, so fitting on validation or test epochs leaks.

The matrix is stored in the model checkpoint (the buffer ``mvnn_whitening`` of
``model.safetensors``, :meth:`bci.models.base.EncoderModel.set_whitening`) with its JSON record in
``config.json`` (``scaler["mvnn"]``) and applied by the model itself after the scaler, so the
training loop, offline evaluation and the live :class:`bci.runtime.inference.Encoder` run the same
operation on every window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MIN_REPETITIONS", "RANK_RTOL", "NoiseWhitener", "ledoit_wolf_shrinkage"]

#: Repetitions an image needs to contribute noise (conditions seen fewer times are skipped).
MIN_REPETITIONS = 2
#: The averaged noise covariance is singular when an eigenvalue is at or below this fraction of the largest.
RANK_RTOL = 1e-10


def ledoit_wolf_shrinkage(samples: np.ndarray, cov: np.ndarray) -> float:
    """The Ledoit-Wolf (2004) shrinkage intensity of ``cov`` towards ``mean(diag(cov)) * I``.

    Parameters
    ----------
    samples : numpy.ndarray, shape (n, p)
        Centred noise samples whose second moment ``cov`` estimates.
    cov : numpy.ndarray, shape (p, p)
        The estimate to shrink.

    Returns
    -------
    float
        ``min(beta2, delta2) / delta2`` in ``[0, 1]`` with ``delta2 = ||cov - mu I||^2 / p`` and
        ``beta2 = sum_k ||z_k z_k^T - cov||^2 / (n^2 p)`` (0 when ``cov`` is already ``mu I``).
    """
    return _shrinkage(_lw_terms(np.asarray(samples, dtype=np.float64), cov), cov)


def _lw_terms(z: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``[sum_k |z_k|^4, sum_k z_k^T cov z_k, n]`` of a chunk of samples (summed over chunks)."""
    sq = np.einsum("kp,kp->k", z, z)
    quad = np.einsum("kp,pq,kq->k", z, cov, z)
    return np.array([(sq**2).sum(), quad.sum(), len(z)], dtype=np.float64)


def _shrinkage(terms: np.ndarray, cov: np.ndarray) -> float:
    p = cov.shape[0]
    mu = float(np.trace(cov)) / p
    delta2 = float(((cov - mu * np.eye(p)) ** 2).sum()) / p
    if delta2 <= 0:
        return 0.0
    fourth, quad, n = terms
    # sum_k ||z_k z_k^T - cov||_F^2 = sum_k (|z_k|^4 - 2 z_k^T cov z_k) + n ||cov||_F^2
    beta2 = float(fourth - 2 * quad + n * (cov**2).sum()) / (n * n * p)
    return min(max(beta2, 0.0), delta2) / delta2


@dataclass(eq=False)
class NoiseWhitener:
    """MVNN whitening ``x -> W x``, fitted on training epochs (see the module docstring).

    Parameters
    ----------
    matrix : numpy.ndarray, shape (n_channels, n_channels), float32
        ``W``, symmetric.
    record : dict
        JSON fields of the fit: method, shrinkage, conditions and repetitions used.
    """

    matrix: np.ndarray = field(repr=False)
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float32)
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0 or not np.isfinite(m).all():
            raise ValueError(f"NoiseWhitener: matrix of shape {m.shape} must be a finite, non-empty square matrix")
        self.matrix = m

    @property
    def n_channels(self) -> int:
        """Channels the whitener was fitted on."""
        return int(self.matrix.shape[0])

    def __repr__(self) -> str:
        return f"NoiseWhitener(n_channels={self.n_channels}, shrinkage={self.record.get('shrinkage')})"

    @classmethod
    def fit(cls, windows: np.ndarray, conditions: Any) -> NoiseWhitener:
        """Fit on training windows and the condition (image) of each.

        Parameters
        ----------
        windows : numpy.ndarray, shape (n_windows, n_channels, n_times)
            Training windows only, as the model will see them (after the scaler).
        conditions : array-like, shape (n_windows,)
            The image (or any condition label) of each window: windows of one condition are
            repetitions of each other.

        Returns
        -------
        NoiseWhitener

        Raises
        ------
        TypeError
            Windows that are not real numbers.
        ValueError
            Wrong shapes, non-finite values, no condition repeated :data:`MIN_REPETITIONS`
            times, no noise at all, or a singular noise covariance (a flat or duplicated
            channel, average-referenced data).
        """
        w = np.asarray(windows)
        if w.dtype.kind not in "fiu":
            raise TypeError(f"MVNN: windows have dtype {w.dtype}; expected real-valued samples")
        if w.ndim != 3 or min(w.shape) == 0:
            raise ValueError(f"MVNN: windows of shape {w.shape} must be a non-empty (n_windows, n_channels, n_times)")
        cond = np.asarray(conditions).reshape(-1)
        if len(cond) != len(w):
            raise ValueError(f"MVNN: {len(cond)} conditions for {len(w)} windows; give one condition per window")
        if not np.isfinite(w).all():
            raise ValueError("MVNN: the windows hold NaN or infinite values; clean them before fitting")
        _, inverse, counts = np.unique(cond, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        used = np.flatnonzero(counts >= MIN_REPETITIONS)
        if used.size == 0:
            raise ValueError(
                f"MVNN needs repetitions of the same image to estimate the noise: at least {MIN_REPETITIONS} "
                f"windows of one condition, but the {len(counts)} condition(s) of the {len(w)} training window(s) "
                f"are seen at most {int(counts.max())} time(s); import the repetitions separately (e.g. not "
                "--average-repetitions) or train without --mvnn")
        n_ch, n_t = w.shape[1], w.shape[2]
        order = np.argsort(inverse, kind="stable")
        starts = np.r_[0, np.cumsum(counts)]

        def residuals(c: int) -> np.ndarray:                                     # (r, C, T) float64
            x = w[order[starts[c]:starts[c + 1]]].astype(np.float64)
            return x - x.mean(axis=0)

        cov = np.zeros((n_ch, n_ch))
        for c in used:
            e = residuals(c)
            cov += np.einsum("rct,rdt->cd", e, e) / ((len(e) - 1) * n_t)
        cov /= used.size
        eig = np.linalg.eigvalsh(cov)
        if eig.max() <= 0:
            raise ValueError("MVNN: the repetitions of every image are identical (no noise to normalise); "
                             "the fit needs real repeated measurements")
        if eig.min() <= RANK_RTOL * eig.max():
            rank = int((eig > RANK_RTOL * eig.max()).sum())
            raise ValueError(
                f"MVNN: the noise covariance of the {n_ch} channels is singular (rank {rank}, smallest/largest "
                f"eigenvalue {max(eig.min(), 0.0) / eig.max():.2g}): a channel is flat or a copy/combination of "
                "others (e.g. average-referenced data); drop such channels before training with --mvnn")
        terms = np.zeros(3)
        for c in used:  # second pass: the Ledoit-Wolf terms of the noise samples (unbiased scale)
            e = residuals(c)
            r = len(e)
            terms += _lw_terms((e * np.sqrt(r / (r - 1))).transpose(0, 2, 1).reshape(-1, n_ch), cov)
        shrinkage = _shrinkage(terms, cov)
        mu = float(np.trace(cov)) / n_ch
        shrunk = (1.0 - shrinkage) * cov + shrinkage * mu * np.eye(n_ch)
        val, vec = np.linalg.eigh(shrunk)
        matrix = (vec * val ** -0.5) @ vec.T
        reps = counts[used]
        record = {"method": "mvnn (Guggenmos et al. 2018)", "shrinkage": float(shrinkage),
                  "shrinkage_method": "ledoit-wolf (analytic)", "n_windows": int(counts[used].sum()),
                  "n_conditions": int(used.size), "n_conditions_skipped": int(len(counts) - used.size),
                  "repetitions": [int(reps.min()), int(reps.max())], "fitted_on": "the training part",
                  "tensor": "mvnn_whitening"}
        return cls(matrix=(matrix + matrix.T) / 2, record=record)

    def transform(self, windows: np.ndarray) -> np.ndarray:
        """``W x`` per time point, on ``(n_channels, n_times)`` or ``(n, n_channels, n_times)``; float32."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim not in (2, 3) or x.shape[-2] != self.n_channels:
            raise ValueError(f"MVNN: windows of shape {x.shape} must be (n_channels={self.n_channels}, n_times) "
                             "or (n_windows, n_channels, n_times)")
        return np.matmul(self.matrix, x)
