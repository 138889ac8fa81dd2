"""Simulated fMRI of visual cortex viewing Miyawaki-style binary patterns.

Each voxel has a Gaussian receptive field on the pattern grid (10x10 by default);
a fraction of voxels respond to nothing (noise only). A pattern shown for a few
TRs drives every voxel in proportion to ``receptive_field @ pattern``; the
neural time course is convolved with the canonical double-gamma HRF (SPM:
peak ~5 s, undershoot ~15 s) and sampled once per TR. Noise is AR(1) in time,
partly shared across voxels, plus a slow drift per voxel.

Volumes are in scanner-like arbitrary units: ``baseline * (1 + signal_change * bold) + noise``
with per-voxel baselines around 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal
from scipy.stats import gamma

from streams._checks import check_float, check_int, ensure_int
from streams.description import StreamDescription, uniform_description

_TAG_RF = 21
_TAG_NOISE = 22
_OVERSAMPLE = 20  # HRF convolution on a grid of tr / 20
_HRF_LENGTH = 32.0  # seconds


@dataclass(frozen=True)
class FMRISimConfig:
    """Parameters of the fMRI simulator.

    Parameters
    ----------
    n_voxels : int
        Voxels (967 as in Miyawaki et al. 2008).
    grid : int
        Side of the stimulus grid (patterns are ``grid x grid``).
    tr : float
        Repetition time in seconds; the stream's rate is ``1 / tr``.
    snr : float
        Steady-state BOLD amplitude of an average responsive voxel to a random
        pattern (half the cells on), divided by the standard deviation of the noise.
    seed : int
        Seeds the receptive fields and the noise.
    noise_voxel_fraction : float
        Fraction of voxels without a receptive field (pure noise).
    rf_sigma : tuple of float
        Range of receptive-field widths (grid cells, Gaussian sigma).
    baseline : float
        Mean voxel intensity (each voxel gets 80-120 % of it).
    signal_change : float
        Fractional BOLD change for a unit neural response (a voxel whose whole
        receptive field is on).
    hrf_peak, hrf_undershoot, hrf_ratio : float
        Canonical double-gamma HRF: ``gamma(t; hrf_peak) - gamma(t; hrf_undershoot) / hrf_ratio``
        (shape parameters, unit scale; SPM uses 6, 16 and 6).
    ar_coefficient : float
        AR(1) coefficient of the temporal noise.
    shared_noise : float
        Fraction of noise variance shared by all voxels (global fluctuations).
    drift : float
        RMS of the slow drift per voxel, in units of the noise standard deviation.
    """

    n_voxels: int = 967
    grid: int = 10
    tr: float = 2.0
    snr: float = 1.0
    seed: int = 0
    noise_voxel_fraction: float = 0.2
    rf_sigma: tuple[float, float] = (0.6, 2.0)
    baseline: float = 1000.0
    signal_change: float = 0.02
    hrf_peak: float = 6.0
    hrf_undershoot: float = 16.0
    hrf_ratio: float = 6.0
    ar_coefficient: float = 0.3
    shared_noise: float = 0.1
    drift: float = 0.5

    def __post_init__(self) -> None:
        for name in ("n_voxels", "grid", "seed"):
            ensure_int(getattr(self, name), name)
        if self.n_voxels < 1 or self.grid < 2 or self.seed < 0:
            raise ValueError(
                f"n_voxels={self.n_voxels!r} must be >= 1, grid={self.grid!r} >= 2, seed={self.seed!r} >= 0"
            )
        for name in ("tr", "baseline", "hrf_peak", "hrf_undershoot", "hrf_ratio"):
            check_float(name, getattr(self, name), positive=True)
        for name in ("snr", "signal_change", "drift"):
            check_float(name, getattr(self, name), low=0.0)
        for name in ("noise_voxel_fraction", "shared_noise"):
            check_float(name, getattr(self, name), low=0.0, high=1.0)
        if not -1.0 < float(self.ar_coefficient) < 1.0:
            raise ValueError(f"ar_coefficient={self.ar_coefficient!r} must be in (-1, 1)")
        lo, hi = self.rf_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"rf_sigma={self.rf_sigma!r} must be (low, high) with 0 < low <= high")


def canonical_hrf(t: np.ndarray, peak: float = 6.0, undershoot: float = 16.0, ratio: float = 6.0) -> np.ndarray:
    """Double-gamma haemodynamic response at times ``t`` (s), peak value 1.

    With the SPM defaults (6, 16, 6) it peaks at ~5 s and undershoots at ~15 s.
    """
    t = np.asarray(t, dtype=float)
    h = gamma.pdf(t, peak) - gamma.pdf(t, undershoot) / ratio
    grid = np.linspace(0, _HRF_LENGTH, 3201)
    top = np.max(gamma.pdf(grid, peak) - gamma.pdf(grid, undershoot) / ratio)
    return h / top


class FMRISimulator:
    """Voxels with Gaussian receptive fields on the pattern grid, HRF, noise.

    Parameters
    ----------
    config : FMRISimConfig, optional

    Attributes
    ----------
    receptive_fields : ndarray, (n_voxels, grid * grid) float32
        The forward model: ``response(pattern) = receptive_fields @ pattern.ravel()``.
        Rows sum to the voxel's gain (log-normal around 1); noise-only voxels are 0.
    rf_centres : ndarray, (n_voxels, 2)
        (row, column) centre of each receptive field, in grid cells.
    rf_sigmas : ndarray, (n_voxels,)
    responsive : ndarray, (n_voxels,) bool
    baselines : ndarray, (n_voxels,)
    noise_sd : float
        Standard deviation of the (AR(1) + shared) noise, in volume units.
    """

    def __init__(self, config: FMRISimConfig | None = None) -> None:
        config = FMRISimConfig() if config is None else config
        if not isinstance(config, FMRISimConfig):
            raise TypeError(f"config must be an FMRISimConfig, got {type(config).__name__}")
        self.config = config
        rng = np.random.default_rng([config.seed, _TAG_RF])
        self._build_receptive_fields(rng)
        self.baselines = config.baseline * rng.uniform(0.8, 1.2, config.n_voxels)
        # snr: steady-state amplitude to a random half-on pattern, average responsive voxel
        mean_gain = float(self.receptive_fields[self.responsive].sum(axis=1).mean()) if self.responsive.any() else 0.0
        amplitude = config.baseline * config.signal_change * 0.5 * mean_gain
        self.noise_sd = amplitude / config.snr if config.snr > 0 else config.baseline * config.signal_change

    def _build_receptive_fields(self, rng: np.random.Generator) -> None:
        cfg = self.config
        g = cfg.grid
        n = cfg.n_voxels
        self.rf_centres = rng.uniform(-0.5, g - 0.5, (n, 2))
        self.rf_sigmas = rng.uniform(*cfg.rf_sigma, n)
        self.responsive = rng.random(n) >= cfg.noise_voxel_fraction
        gains = np.exp(rng.normal(0.0, 0.3, n))
        rows, cols = np.mgrid[0:g, 0:g]
        d2 = (rows.ravel()[None, :] - self.rf_centres[:, :1]) ** 2
        d2 += (cols.ravel()[None, :] - self.rf_centres[:, 1:]) ** 2
        rf = np.exp(-0.5 * d2 / self.rf_sigmas[:, None] ** 2)
        rf /= rf.sum(axis=1, keepdims=True)
        rf *= (gains * self.responsive)[:, None]
        self.receptive_fields = rf.astype(np.float32)

    # ---------------------------------------------------------------- description
    @property
    def n_voxels(self) -> int:
        """Number of voxels."""
        return self.config.n_voxels

    @property
    def channel_names(self) -> list[str]:
        """``v0000``, ``v0001``, ..."""
        return [f"v{i:04d}" for i in range(self.n_voxels)]

    def description(self, name: str = "SimFMRI", source_id: str | None = None) -> StreamDescription:
        """LSL description: type ``fMRI``, one float32 channel per voxel, rate ``1 / tr``."""
        source_id = source_id if source_id is not None else f"bci-sim-fmri-{self.config.seed}"
        return uniform_description(name, "fMRI", source_id, self.channel_names, channel_type="fmri", unit="a.u.",
                                   nominal_rate=1.0 / self.config.tr)

    # ---------------------------------------------------------------- forward model
    def response(self, pattern: np.ndarray) -> np.ndarray:
        """Noise-free neural response of every voxel to a pattern, ``(n_voxels,)`` float64.

        ``receptive_fields @ pattern.ravel()``; the steady-state volume is
        ``baselines * (1 + signal_change * response)``.
        """
        p = self._check_patterns(np.asarray(pattern)[None], "pattern")[0]
        return self.receptive_fields.astype(float) @ p.ravel()

    def responses(self, patterns: np.ndarray) -> np.ndarray:
        """:meth:`response` for a stack of patterns, ``(n, n_voxels)``."""
        p = self._check_patterns(patterns, "patterns")
        return p.reshape(len(p), -1) @ self.receptive_fields.astype(float).T

    def hrf(self, dt: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(times, hrf)`` of the HRF sampled every ``dt`` seconds (default ``tr / 20``) over 32 s."""
        dt = self.config.tr / _OVERSAMPLE if dt is None else float(dt)
        t = np.arange(0.0, _HRF_LENGTH, dt)
        cfg = self.config
        return t, canonical_hrf(t, cfg.hrf_peak, cfg.hrf_undershoot, cfg.hrf_ratio)

    # ---------------------------------------------------------------- generation
    def generate(
        self, patterns: np.ndarray, *, stim_duration_trs: int = 3, rest_trs: int = 3, lead_trs: int = 0
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[float, int]]]:
        """A block-design run: each pattern on for ``stim_duration_trs``, then ``rest_trs`` of rest.

        Parameters
        ----------
        patterns : ndarray, (n_trials, grid, grid)
            Binary (or graded, in [0, 1]) patterns in presentation order.
        stim_duration_trs, rest_trs : int
            Stimulus and rest length per trial, in TRs.
        lead_trs : int
            Rest before the first trial, in TRs.

        Returns
        -------
        volumes : ndarray, (n_trs, n_voxels) float32
            ``n_trs = lead_trs + n_trials * (stim_duration_trs + rest_trs)``.
        times : ndarray, (n_trs,) float64
            Acquisition time of each volume, ``i * tr`` seconds.
        events : list of (onset_seconds, pattern_index)
        """
        p = self._check_patterns(patterns, "patterns")
        if len(p) == 0:
            raise ValueError("patterns is empty; pass at least one (grid, grid) pattern")
        for name, value, low in (("stim_duration_trs", stim_duration_trs, 1), ("rest_trs", rest_trs, 0),
                                 ("lead_trs", lead_trs, 0)):
            check_int(name, value, low=low)
        cfg = self.config
        period = stim_duration_trs + rest_trs
        n_trs = lead_trs + len(p) * period
        onsets_tr = lead_trs + period * np.arange(len(p))
        design = self._design_matrix(onsets_tr, stim_duration_trs, n_trs)  # (n_trs, n_trials)
        bold = design @ self.responses(p)  # (n_trs, n_voxels)
        volumes = self.baselines * (1.0 + cfg.signal_change * bold) + self._noise(n_trs)
        times = np.arange(n_trs) * cfg.tr
        events = [(float(o * cfg.tr), i) for i, o in enumerate(onsets_tr)]
        return volumes.astype(np.float32), times, events

    def _design_matrix(self, onsets_tr: np.ndarray, duration_trs: int, n_trs: int) -> np.ndarray:
        """HRF-convolved boxcar of each trial, sampled at the volume times."""
        n_fine = n_trs * _OVERSAMPLE
        _, h = self.hrf()
        h = h / h.sum()  # a long boxcar plateaus at 1
        out = np.zeros((n_trs, len(onsets_tr)))
        for j, onset in enumerate(onsets_tr):
            box = np.zeros(n_fine)
            box[onset * _OVERSAMPLE:(onset + duration_trs) * _OVERSAMPLE] = 1.0
            out[:, j] = np.convolve(box, h)[:n_fine:_OVERSAMPLE]
        return out

    def _noise(self, n_trs: int) -> np.ndarray:
        """AR(1) noise (partly shared across voxels) plus slow drift, ``(n_trs, n_voxels)``."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, _TAG_NOISE, n_trs])
        n = self.n_voxels
        a = cfg.ar_coefficient
        white = (math.sqrt(1 - cfg.shared_noise) * rng.standard_normal((n_trs, n))
                 + math.sqrt(cfg.shared_noise) * rng.standard_normal((n_trs, 1)))
        # AR(1) with unit variance, started in its stationary state: e_0 = w_0
        ar, _ = signal.lfilter([math.sqrt(1 - a * a)], [1.0, -a], white[1:], axis=0, zi=a * white[:1])
        ar = np.vstack([white[:1], ar])
        # drift: random mix of the 3 slowest DCT cosines (periods 2, 1 and 2/3 run lengths)
        i = np.arange(n_trs) + 0.5
        basis = np.stack([np.cos(np.pi * k * i / n_trs) for k in (1, 2, 3)], axis=1)
        drift = basis @ rng.normal(0.0, cfg.drift / math.sqrt(1.5), (3, n))
        return self.noise_sd * (ar + drift)

    def _check_patterns(self, patterns: np.ndarray, name: str) -> np.ndarray:
        p = np.asarray(patterns, dtype=float)
        g = self.config.grid
        if p.ndim != 3 or p.shape[1:] != (g, g):
            raise ValueError(f"{name} has shape {np.shape(patterns)}; expected (n, {g}, {g}) (or ({g}, {g}) for one)")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{name} contains NaN or inf")
        return p
