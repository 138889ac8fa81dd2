"""Oracle decoders from the simulators' known forward models (SPEC §4 "Oracle").

The synthetic world knows what every stimulus evokes. An oracle uses that
knowledge: it scores each window by its Gaussian log-likelihood under every
candidate's *true* expected response, with the noise covariance estimated from
data. No learned decoder can know more about the signal, so the oracle's accuracy
is the reference ceiling our decoders are compared against at a given SNR.

* :class:`EEGOracle`: matched filter / template matching on event-locked EEG
  windows. Templates are the forward model's noise-free evoked responses, cut and
  preprocessed exactly as the data windows were (same offset, length, filters,
  reference, decimation phase, baseline, optional scaler).
* :class:`FMRIOracle`: voxel responses predicted from the known receptive fields
  (``receptive_fields @ pattern``), baselines and signal change; the HRF-dependent
  gain of the trial summary, the voxel intercepts and the noise variances are
  estimated from training trials.

Assumptions (also in ``docs/metrics.md``): noise is Gaussian with a covariance that
is separable in space and time (EEG) or diagonal over voxels (fMRI), estimated from
training residuals; the per-trial latency and amplitude jitter of the simulator is
treated as noise (not marginalised), so the oracle is a strong, honest reference
rather than a proven Bayes bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from scipy.special import logsumexp

from bci.preprocessing import OnlinePreprocessor, PreprocessConfig
from offline.scoring.ridge import _mm
from streams._checks import check_float, check_int, check_value
from streams.synthetic.eeg import EEGForwardModel, EEGSimulator
from streams.synthetic.fmri import FMRISimulator

__all__ = ["EEGOracle", "FMRIOracle", "eeg_templates"]

Whitening = Literal["none", "spatial", "spatiotemporal"]


# ============================================================================ helpers
def _check_windows(name: str, x: object, n_channels: int | None = None, n_times: int | None = None) -> np.ndarray:
    """Type and shape checks only (no copy)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} has dtype {x.dtype}; expected float windows")
    if x.ndim != 3:
        raise ValueError(f"{name} has shape {x.shape}; expected (n_windows, n_channels, n_times)")
    if n_channels is not None and x.shape[1:] != (n_channels, n_times):
        raise ValueError(f"{name} has windows of shape {x.shape[1:]} but the templates are ({n_channels}, {n_times}); "
                         "cut the windows with the same offset, length and preprocessing as the templates")
    return x


def _as_float64(name: str, x: np.ndarray) -> np.ndarray:
    out = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or inf; drop those windows first")
    return out


def _windows(name: str, x: object, n_channels: int | None = None, n_times: int | None = None) -> np.ndarray:
    """Checked float64 copy of a window stack."""
    return _as_float64(name, _check_windows(name, x, n_channels, n_times))


def _index(name: str, x: object, n: int, high: int) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} has dtype {a.dtype}; expected integer indices")
    if a.shape != (n,):
        raise ValueError(f"{name} has shape {a.shape}; expected ({n},), one index per window")
    if n and (a.min() < 0 or a.max() >= high):
        raise ValueError(f"{name} has values in [{a.min()}, {a.max()}]; they must be in [0, {high})")
    return a.astype(np.int64)


def _inv_sqrt(cov: np.ndarray, shrinkage: float) -> np.ndarray:
    """``(shrunk cov)^(-1/2)``; shrinkage towards ``mean variance · I``."""
    mu = float(np.trace(cov)) / len(cov)
    if mu <= 0:
        raise ValueError("the estimated noise covariance is zero; are the windows constant?")
    c = (1 - shrinkage) * cov + shrinkage * mu * np.eye(len(cov))
    lam, v = np.linalg.eigh(c)
    lam = np.maximum(lam, 1e-12 * lam.max())
    return (v / np.sqrt(lam)) @ v.T


def _demean(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=-1, keepdims=True)


# ============================================================================ templates
def _forward_model(source: object) -> tuple[EEGForwardModel, list[str] | None]:
    if isinstance(source, EEGSimulator):
        return source.forward_model, list(source.channel_names)
    if isinstance(source, EEGForwardModel):
        return source, None
    raise TypeError(f"simulator must be an EEGSimulator or EEGForwardModel, got {type(source).__name__}")


def eeg_templates(
    simulator: EEGSimulator | EEGForwardModel,
    *,
    offset: float = 0.020,
    n_times: int = 440,
    preprocess: PreprocessConfig | None = None,
    ch_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Expected windows ``(n_images, n_channels, n_times)`` of every image, as the data were cut.

    Without ``preprocess`` the window is the raw evoked response from
    ``round(offset * sfreq)`` samples after onset (zeros outside the response). With
    it, each evoked response is embedded in silence and run through a fresh
    :class:`~bci.preprocessing.OnlinePreprocessor` (the runtime's own filters,
    reference and decimation; the response of a linear system to signal + noise is
    its response to the signal plus its response to the noise); the onset falls on
    a kept output sample, and the window starts ``round(offset * out_sfreq)`` output
    samples after it, as the runtime's windower does. The per-window baseline of
    ``preprocess`` is applied too.

    Parameters
    ----------
    simulator : EEGSimulator or EEGForwardModel
    offset : float
        Window start after the marker, seconds (may be negative).
    n_times : int
        Window length in (output) samples.
    preprocess : PreprocessConfig, optional
        The preprocessing the data windows had.
    ch_names : sequence of str, optional
        Channel names (taken from the simulator; needed with a bare forward model
        when ``preprocess`` is given).

    Returns
    -------
    ndarray, float64
    """
    fm, names = _forward_model(simulator)
    n_times = check_int("n_times", n_times, low=1)
    check_float("offset", offset)  # seconds
    evoked = fm.evoked_all().astype(np.float64)  # (n_images, C, n_ev)
    if preprocess is None:
        return _cut(evoked, int(round(offset * fm.sfreq)), int(n_times))
    if not isinstance(preprocess, PreprocessConfig):
        raise TypeError(f"preprocess must be a PreprocessConfig or None, got {type(preprocess).__name__}")
    names = list(ch_names) if ch_names is not None else names
    if names is None:
        raise ValueError("ch_names is required with a bare EEGForwardModel and preprocess=...")
    pre = OnlinePreprocessor(preprocess, fm.sfreq, names)
    return _preprocessed_templates(evoked, pre, offset, int(n_times))


def _cut(evoked: np.ndarray, start: int, n_times: int) -> np.ndarray:
    """Samples ``[start, start + n_times)`` of each response (zeros outside it)."""
    n, c, n_ev = evoked.shape
    out = np.zeros((n, c, n_times))
    lo, hi = max(start, 0), min(start + n_times, n_ev)
    if lo < hi:
        out[:, :, lo - start:hi - start] = evoked[:, :, lo:hi]
    return out


def _preprocessed_templates(evoked: np.ndarray, pre: OnlinePreprocessor, offset: float, n_times: int) -> np.ndarray:
    """Run each response, embedded in zeros, through ``pre``; cut the window like the runtime does."""
    f = pre.decim
    start_out = int(round(offset * pre.out_sfreq))
    onset_out = max(0, -start_out)  # output index of the onset (room for a negative offset)
    onset_in = (onset_out + 1) * f - 1  # kept input samples are those with (i + 1) % f == 0
    first_out = onset_out + start_out
    n_in = (first_out + n_times) * f  # a multiple of f: every image starts at the same decimation phase
    n_img, c, n_ev = evoked.shape
    if pre.n_samples_in % f:
        raise ValueError("the preprocessor has a partial decimation phase; pass a fresh OnlinePreprocessor")
    out = np.empty((n_img, c, n_times))
    sig = np.zeros((n_in, c), dtype=np.float64)
    for i in range(n_img):
        sig[:] = 0.0
        stop = max(0, min(n_ev, n_in - onset_in))
        sig[onset_in:onset_in + stop] = evoked[i, :, :stop].T
        pre.reset()  # zero input => the steady-state start is the zero state
        y = pre.process(sig)
        out[i] = pre.apply_window(np.ascontiguousarray(y[first_out:first_out + n_times].T))
    return out


# ============================================================================ EEG oracle
class EEGOracle:
    """Template-matching (matched-filter) decoder with the simulator's true templates.

    Score of window ``x`` for image ``j`` (the Gaussian log-likelihood up to a
    term shared by all images)::

        s_j(x) = <W(x), W(mu_j)> - 0.5 ||W(mu_j)||^2

    where ``mu_j`` is image j's template (:func:`eeg_templates`) and ``W`` whitens the
    noise: ``W(x) = Ws x Wtᵀ`` with spatial and temporal covariances estimated by
    :meth:`fit` (``"spatiotemporal"``), ``Ws x`` (``"spatial"``), or ``x / σ``
    (``"none"``). With ``demean``, every channel of windows and templates has its
    mean over the window removed first (a drift/offset-invariant comparison).

    Parameters
    ----------
    templates : ndarray, (n_images, n_channels, n_times)
        Expected window of every candidate image (in the units of the data).
    class_ids : array, (n_images,) int, optional
        Class of each image (for :meth:`score_classes`).
    whiten : {"spatial", "spatiotemporal", "none"}
        ``"spatial"`` (default) was the best at the default SNR of the simulator;
        ``"spatiotemporal"`` also whitens the 1/f temporal correlation and wins at
        low SNR (≤ 0.3), where the residuals are mostly background; see
        ``docs/metrics.md`` for measured accuracies.
    shrinkage : float
        Shrinkage of each covariance towards ``mean variance · I`` (0..1).
    demean : bool

    Notes
    -----
    Knows: the noise-free evoked response of every image, and how the windows were
    cut and preprocessed. Estimates from data: the noise covariance (residuals of
    training windows from their true templates). Ignores: the per-trial latency
    and amplitude jitter (absorbed into the noise) and any non-Gaussian artefacts
    (blinks are large outliers). A ranking over *images*; :meth:`score_classes`
    marginalises over a class's images with equal priors.
    """

    def __init__(
        self,
        templates: np.ndarray,
        *,
        class_ids: Sequence[int] | np.ndarray | None = None,
        whiten: Whitening = "spatial",
        shrinkage: float = 0.05,
        demean: bool = True,
    ) -> None:
        t = _windows("templates", templates)
        check_value("whiten", whiten, ("none", "spatial", "spatiotemporal"))
        check_float("shrinkage", shrinkage, low=0.0, high=1.0)
        self.demean = bool(demean)
        self.templates = _demean(t) if self.demean else t
        self.n_images, self.n_channels, self.n_times = t.shape
        self.class_ids = None if class_ids is None else _index("class_ids", class_ids, self.n_images, 2**62)
        self.whiten = whiten
        self.shrinkage = float(shrinkage)
        self._ws: np.ndarray | None = None
        self._wt: np.ndarray | None = None
        self._scale = 1.0
        self._wtemplates: np.ndarray | None = None
        self._energy: np.ndarray | None = None

    @classmethod
    def from_simulator(
        cls,
        simulator: EEGSimulator | EEGForwardModel,
        *,
        offset: float = 0.020,
        n_times: int = 440,
        preprocess: PreprocessConfig | None = None,
        ch_names: Sequence[str] | None = None,
        window_transform: Callable[[np.ndarray], np.ndarray] | None = None,
        whiten: Whitening = "spatial",
        shrinkage: float = 0.05,
        demean: bool = True,
    ) -> EEGOracle:
        """Oracle whose templates are the simulator's, cut and preprocessed like the data.

        Parameters
        ----------
        simulator : EEGSimulator or EEGForwardModel
            The one that generated the data (same stimuli, seed and SNR).
        offset, n_times, preprocess, ch_names
            As in :func:`eeg_templates` — the data windows' settings.
        window_transform : callable, optional
            Any further per-window map the data had, applied to the template stack
            ``(n_images, n_channels, n_times)`` (e.g. a ``ChannelScaler.transform``).
        whiten, shrinkage, demean
            As in :class:`EEGOracle`.
        """
        fm, _ = _forward_model(simulator)
        t = eeg_templates(simulator, offset=offset, n_times=n_times, preprocess=preprocess, ch_names=ch_names)
        if window_transform is not None:
            t = np.asarray(window_transform(t), dtype=np.float64)
        return cls(t, class_ids=fm.class_ids, whiten=whiten, shrinkage=shrinkage, demean=demean)

    # ---------------------------------------------------------------- fit
    def fit(self, windows: np.ndarray, image_index: Sequence[int] | np.ndarray | None = None,
            batch: int = 256) -> EEGOracle:
        """Estimate the noise covariance from training windows.

        Parameters
        ----------
        windows : ndarray, (n, n_channels, n_times)
            Training windows, cut and preprocessed like the templates (float32 is
            fine: batches are converted to float64 one at a time).
        image_index : array, (n,) int, optional
            True image of each window: the noise is the residual from its template.
            Without it the covariance of the windows themselves (signal + noise,
            about their mean) is used.
        batch : int
            Windows per step (memory only).

        Returns
        -------
        self
        """
        x = _check_windows("windows", windows, self.n_channels, self.n_times)
        if len(x) < 2:
            raise ValueError(f"windows has {len(x)} window(s); the noise estimate needs at least 2")
        idx = None if image_index is None else _index("image_index", image_index, len(x), self.n_images)
        mean = None if idx is not None else self._mean_window(x, batch)
        self._ws, self._wt, self._scale = None, None, 1.0
        if self.whiten == "none":
            ss = sum(float(np.sum(r * r)) for r in self._residuals(x, idx, mean, batch))
            self._scale = float(np.sqrt(ss / x.size))
            if self._scale <= 0:
                raise ValueError("the residuals are all zero; cannot estimate the noise")
        else:
            cs = np.zeros((self.n_channels, self.n_channels))
            for r in self._residuals(x, idx, mean, batch):
                flat = r.transpose(1, 0, 2).reshape(self.n_channels, -1)  # (C, b * T)
                cs += _mm(flat, flat.T)
            self._ws = _inv_sqrt(cs / (len(x) * self.n_times), self.shrinkage)
            if self.whiten == "spatiotemporal":
                ct = np.zeros((self.n_times, self.n_times))
                for r in self._residuals(x, idx, mean, batch):
                    rs = self._spatial(r).reshape(-1, self.n_times)  # (b * C, T)
                    ct += _mm(rs.T, rs)
                self._wt = _inv_sqrt(ct / (len(x) * self.n_channels), self.shrinkage)
        w = self._transform(self.templates)
        self._wtemplates = w.reshape(self.n_images, -1)
        self._energy = 0.5 * np.einsum("ij,ij->i", self._wtemplates, self._wtemplates)
        return self

    def _batches(self, x: np.ndarray, batch: int) -> Iterator[tuple[slice, np.ndarray]]:
        """Checked float64 (demeaned) batches of a window stack."""
        batch = check_int("batch", batch, low=1)
        for i in range(0, len(x), batch):
            xb = _as_float64("windows", x[i:i + batch])
            yield slice(i, i + len(xb)), (_demean(xb) if self.demean else xb)

    def _mean_window(self, x: np.ndarray, batch: int) -> np.ndarray:
        total = np.zeros((self.n_channels, self.n_times))
        for _, xb in self._batches(x, batch):
            total += xb.sum(axis=0)
        return total / len(x)

    def _residuals(self, x: np.ndarray, idx: np.ndarray | None, mean: np.ndarray | None,
                   batch: int) -> Iterator[np.ndarray]:
        for sl, xb in self._batches(x, batch):
            yield xb - (self.templates[idx[sl]] if idx is not None else mean)

    def _transform(self, x: np.ndarray) -> np.ndarray:
        if self._ws is None:
            return x / self._scale
        y = self._spatial(x)
        if self._wt is not None:
            y = _mm(y.reshape(-1, self.n_times), self._wt.T).reshape(y.shape)
        return y

    def _spatial(self, x: np.ndarray) -> np.ndarray:
        """``Ws @ x[i]`` for every window (torch: see ``offline.scoring.ridge._mm``)."""
        return torch.matmul(torch.from_numpy(self._ws), torch.from_numpy(np.ascontiguousarray(x))).numpy()

    # ---------------------------------------------------------------- score
    def score(self, windows: np.ndarray, batch: int = 256) -> np.ndarray:
        """Log-likelihood scores ``(n, n_images)`` (higher = more likely; use with the metrics).

        Parameters
        ----------
        windows : ndarray, (n, n_channels, n_times)
        batch : int
            Windows per step (memory only).
        """
        if self._wtemplates is None:
            raise RuntimeError("EEGOracle is not fitted; call fit(train_windows, train_image_index) first")
        x = _check_windows("windows", windows, self.n_channels, self.n_times)
        out = np.empty((len(x), self.n_images))
        for sl, xb in self._batches(x, batch):
            out[sl] = _mm(self._transform(xb).reshape(len(xb), -1), self._wtemplates.T) - self._energy
        return out

    def score_classes(self, windows: np.ndarray) -> np.ndarray:
        """Class log-likelihoods ``(n, n_classes)``: log-mean-exp of the image scores within each class."""
        if self.class_ids is None:
            raise ValueError("this oracle has no class_ids; pass class_ids= (or build it with from_simulator)")
        s = self.score(windows)
        n_classes = int(self.class_ids.max()) + 1
        out = np.full((len(s), n_classes), -np.inf)
        for c in range(n_classes):
            cols = self.class_ids == c
            if cols.any():
                out[:, c] = logsumexp(s[:, cols], axis=1) - np.log(cols.sum())
        return out

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Most likely image per window, ``(n,)`` int."""
        return np.argmax(self.score(windows), axis=1)

    def predict_classes(self, windows: np.ndarray) -> np.ndarray:
        """Most likely class per window, ``(n,)`` int."""
        return np.argmax(self.score_classes(windows), axis=1)


# ============================================================================ fMRI oracle
class FMRIOracle:
    """Pattern identification from fMRI trial vectors with the known receptive fields.

    Model of a trial summary ``x`` (e.g. the mean of a few volumes after the HRF
    delay) for pattern ``p``::

        x_v = c_v + h * baseline_v * signal_change * (receptive_fields @ p)_v + noise_v

    The simulator supplies receptive fields, baselines and signal change; :meth:`fit`
    estimates the intercepts ``c_v``, the gain ``h`` (how much of the steady-state
    response the trial summary captures, set by the HRF and which volumes were
    averaged) and the noise covariance from the training residuals. The simulator's noise
    has a known structure — independent per voxel, plus a component shared by all voxels
    and a slow drift made of 3 cosines per voxel — so across trials its covariance is a
    diagonal plus a low-rank part of rank ``noise_rank`` (1 for the shared component + 3
    for the drift, by default from the simulator's config). The low-rank part is the top
    principal components of the residuals, the diagonal the rest of each voxel's variance.
    Scores are Gaussian log-likelihoods under that covariance (``noise_rank=0``: diagonal).

    Parameters
    ----------
    simulator : FMRISimulator
    patterns : ndarray, (n_candidates, grid, grid)
        Candidate stimuli (e.g. the test patterns).
    noise_rank : int, optional
        Rank of the shared part of the noise covariance; default from the simulator.
    """

    def __init__(self, simulator: FMRISimulator, patterns: np.ndarray, noise_rank: int | None = None) -> None:
        if not isinstance(simulator, FMRISimulator):
            raise TypeError(f"simulator must be an FMRISimulator, got {type(simulator).__name__}")
        cfg = simulator.config
        if noise_rank is None:
            noise_rank = (1 if cfg.shared_noise > 0 else 0) + (3 if cfg.drift > 0 else 0)
        self.noise_rank = check_int("noise_rank", noise_rank, low=0)
        self.diag_: np.ndarray | None = None      # diagonal part of the noise covariance (V,)
        self.factors_: np.ndarray | None = None   # low-rank part F (V, rank): covariance = diag + F F^T
        self.core_: np.ndarray | None = None      # (I + F^T D^-1 F)^-1, (rank, rank)
        self.simulator = simulator
        scale = simulator.baselines * simulator.config.signal_change
        self.predicted = simulator.responses(np.asarray(patterns)) * scale  # (n_candidates, V)
        self.n_candidates, self.n_voxels = self.predicted.shape
        self.intercept_: np.ndarray | None = None
        self.gain_: float | None = None
        self.noise_var_: np.ndarray | None = None

    def fit(self, samples: np.ndarray, pattern_index: Sequence[int] | np.ndarray) -> FMRIOracle:
        """Estimate intercepts, gain and noise variances from training trials.

        Parameters
        ----------
        samples : ndarray, (n, n_voxels)
            Training trial vectors.
        pattern_index : array, (n,) int
            Row of ``patterns`` shown in each trial.
        """
        x = self._samples(samples)
        if len(x) < 3:
            raise ValueError(f"samples has {len(x)} trial(s); the fit needs at least 3")
        d = self.predicted[_index("pattern_index", pattern_index, len(x), self.n_candidates)]
        xc, dc = x - x.mean(axis=0), d - d.mean(axis=0)
        den = float(np.sum(dc * dc))
        if den <= 0:
            raise ValueError("the training patterns all predict the same response; show different patterns")
        self.gain_ = float(np.sum(xc * dc) / den)
        self.intercept_ = x.mean(axis=0) - self.gain_ * d.mean(axis=0)
        resid = x - self.intercept_ - self.gain_ * d
        var = resid.var(axis=0)
        self.noise_var_ = np.maximum(var, 1e-6 * max(float(var.mean()), 1e-300))
        rank = min(self.noise_rank, len(x) - 2)
        self.diag_, self.factors_, self.core_ = self.noise_var_, None, None
        if rank <= 0:
            return self
        _, sv, vt = np.linalg.svd(resid - resid.mean(axis=0), full_matrices=False)
        factors = vt[:rank].T * (sv[:rank] / np.sqrt(len(x)))  # (V, rank)
        self.diag_ = np.maximum(self.noise_var_ - np.sum(factors**2, axis=1), 0.05 * self.noise_var_)
        self.factors_ = factors
        # Woodbury: (D + F F^T)^-1 = D^-1 - D^-1 F (I + F^T D^-1 F)^-1 F^T D^-1, never a dense V x V matrix
        self.core_ = np.linalg.inv(np.eye(rank) + factors.T @ (factors / self.diag_[:, None]))
        return self

    def _samples(self, samples: object) -> np.ndarray:
        if not isinstance(samples, np.ndarray) or not np.issubdtype(samples.dtype, np.floating):
            raise TypeError("samples must be a float numpy array (n, n_voxels)")
        if samples.ndim != 2 or samples.shape[1] != self.n_voxels:
            raise ValueError(f"samples has shape {samples.shape}; expected (n, {self.n_voxels})")
        x = np.asarray(samples, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("samples contains NaN or inf")
        return x

    def score(self, samples: np.ndarray) -> np.ndarray:
        """Log-likelihood scores ``(n, n_candidates)`` (up to a per-trial constant)."""
        if self.gain_ is None:
            raise RuntimeError("FMRIOracle is not fitted; call fit(train_samples, train_pattern_index) first")
        x = self._samples(samples)
        mu = self.intercept_ + self.gain_ * self.predicted  # (n_candidates, V)
        xd, mud = x / self.diag_, mu / self.diag_
        cross = xd @ mu.T                                    # x D^-1 mu^T
        quad = np.einsum("jv,jv->j", mud, mu)                # mu D^-1 mu^T (diagonal)
        if self.factors_ is not None:
            a, b = xd @ self.factors_, mud @ self.factors_   # (n, r), (m, r)
            cross = cross - a @ self.core_ @ b.T
            quad = quad - np.einsum("jr,rs,js->j", b, self.core_, b)
        return cross - 0.5 * quad

    def predict(self, samples: np.ndarray) -> np.ndarray:
        """Most likely candidate per trial, ``(n,)`` int."""
        return np.argmax(self.score(samples), axis=1)
