"""Simulated 128-channel EEG with stimulus-evoked responses from a known forward model.

The recording is the sum of

* **background**: 1/f^beta noise, partly shared between nearby electrodes
  (smooth scalp patterns of 32 sources) and partly local to each electrode;
* **alpha**: 8-12 Hz narrow-band activity in waxing and waning bursts from three
  posterior generators;
* **line noise** at ``line_freq`` (and its 3rd harmonic);
* **drift**: a slow random walk per electrode;
* **blinks**: 100-200 uV deflections on frontal electrodes, 200-400 ms long;
* **evoked responses**: P1 (~100 ms, occipital), N1 (~170 ms, occipito-temporal),
  P2 (~240 ms, fronto-central) and P300 (~340 ms, parietal) after every image
  onset, whose amplitudes, latencies and scalp topographies depend on the image's
  generative features through a fixed, seeded linear map (:class:`EEGForwardModel`).

The whole session is generated in fixed internal blocks of one second. Block
``k``'s random numbers come from a generator seeded by ``(seed, component, k)``
and every filter carries its state from block to block, so :meth:`EEGSimulator.stream`
(any chunk size) and :meth:`EEGSimulator.generate` give bit-identical samples.

Sample ``i`` lies at ``i / sfreq`` seconds; an event with onset ``t`` starts its
evoked response at sample ``round(t * sfreq)``, which is the sample its marker
refers to.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal
from scipy.special import ndtr

from streams._checks import check_float, check_int, check_type, ensure_int
from streams.description import StreamDescription, uniform_description
from streams.synthetic.schedule import StimulusEvent, onset_sample
from streams.synthetic.stimuli import StimulusSet

# Seed-sequence tags: every component draws from its own stream, so changing one
# (e.g. blink_rate or snr) leaves the others' samples unchanged.
_TAG_FORWARD = 11
_TAG_LAYOUT = 12
_TAG_NOISE = 13
_TAG_ALPHA = 14
_TAG_DRIFT = 15
_TAG_BLINK = 16
_TAG_TRIAL = 17
_TAG_WARMUP = 18
_TAG_SESSION = 19

#: Length of one internal generation block, in seconds.
BLOCK_SECONDS = 1.0
_WARMUP_SECONDS = 4.0
_N_BACKGROUND_SOURCES = 32
_N_SPATIAL_BASIS = 12
_PINK_F_LO = 0.5
_PINK_F_HI = 250.0
_ENVELOPE_HZ = 0.5
_ENVELOPE_OFFSET = 0.3
_BLINK_DURATION = (0.2, 0.4)
_BLINK_DECAY_M = 0.045
_BLAS_SINGLE_THREAD_WORK = 200_000  # m * n * k below OpenBLAS's threading threshold (262144)

# Scalp sites as (azimuth from the nose towards the right ear, elevation above the
# Fpz-T7-Oz plane), degrees, on the spherical 10-10 system.
_SITES: dict[str, tuple[float, float]] = {
    "Fpz": (0.0, 0.0), "Fz": (0.0, 45.0), "FCz": (0.0, 67.5), "Cz": (0.0, 90.0),
    "CPz": (180.0, 67.5), "Pz": (180.0, 45.0), "POz": (180.0, 22.5), "Oz": (180.0, 0.0),
    "O1": (-162.0, 0.0), "O2": (162.0, 0.0), "PO7": (-144.0, 0.0), "PO8": (144.0, 0.0),
    "P7": (-126.0, 0.0), "P8": (126.0, 0.0), "PO3": (-158.0, 25.0), "PO4": (158.0, 25.0),
    "P3": (-140.0, 35.0), "P4": (140.0, 35.0),
}


# ============================================================================ config
@dataclass(frozen=True)
class EEGSimConfig:
    """Parameters of the EEG simulator. All amplitudes in volts.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    n_channels : int
        Must equal the montage's channel count (128 for ``biosemi128``).
    montage : str
        mne standard montage giving channel names and electrode positions.
    snr : float
        Evoked-to-background ratio (>= 0): the RMS of the noise-free evoked
        responses (over all channels, the ``evoked_duration`` window after onset,
        and all images of the stimulus set) divided by ``background_rms``.
    background_rms : float
        RMS of the spontaneous background (1/f noise plus alpha), averaged over
        channels as ``sqrt(mean_channel(variance))``; line noise, drift and blinks
        come on top.
    background_exponent : float
        beta of the 1/f^beta power spectrum from 0.5 Hz to ~400 Hz (0 < beta < 2;
        1 is pink noise). Flat below 0.5 Hz and above ~400 Hz (at 1 kHz).
    spatial_correlation : float
        Fraction of the 1/f variance shared between electrodes through smooth
        scalp patterns (the rest is independent per electrode), in [0, 1].
    alpha_amplitude : float
        RMS of the alpha rhythm at the electrode where it is strongest (posterior).
    alpha_freq : float
        Peak alpha frequency in Hz (bandwidth ~2 Hz).
    line_freq : float
        Mains frequency (50 or 60 Hz).
    line_amplitude : float
        Peak amplitude of the mains fundamental at the worst electrode (electrodes
        get 50-100% of it); the 3rd harmonic has 20% of the fundamental.
    drift : float
        RMS of the slow drift per electrode (a smoothed random walk).
    drift_tau : float
        Time constant of the drift in seconds.
    blink_rate : float
        Blinks per second (Poisson).
    blink_amplitude : float
        Mean peak blink amplitude at the frontal-most electrodes; each blink is
        uniform in [2/3, 4/3] of it (100-200 uV by default), 200-400 ms long.
    evoked_duration : float
        Length of the evoked response after each onset, in seconds.
    latency_jitter : float
        Standard deviation (s) of a per-trial latency shift of the whole response.
    amplitude_jitter : float
        Per-trial, per-component log-normal amplitude scaling (sigma; mean 1).
    feature_strength : float
        Scale of the feature-dependent topography mixing (how different the
        scalp maps of different classes are); 0 leaves only amplitude,
        latency and lateralisation effects.
    seed : int
        The simulated subject: seeds the forward model, the electrode-level structure
        and (with ``session``) all noise.
    session : int
        Recording session of the same subject: a new session draws new background
        noise, drift, blinks and trial jitter, with the same forward model (so a
        decoder trained on session 0 can be tested on session 1). Session 0 is the
        historical default stream of ``seed``.
    """

    sfreq: float = 1000.0
    n_channels: int = 128
    montage: str = "biosemi128"
    snr: float = 1.0
    background_rms: float = 15e-6
    background_exponent: float = 1.5
    spatial_correlation: float = 0.7
    alpha_amplitude: float = 8e-6
    alpha_freq: float = 10.0
    line_freq: float = 50.0
    line_amplitude: float = 3e-6
    drift: float = 10e-6
    drift_tau: float = 20.0
    blink_rate: float = 0.2
    blink_amplitude: float = 150e-6
    evoked_duration: float = 0.5
    latency_jitter: float = 0.010
    amplitude_jitter: float = 0.2
    feature_strength: float = 1.0
    seed: int = 0
    session: int = 0

    def __post_init__(self) -> None:
        _check_number("sfreq", self.sfreq, low=10.0)
        ensure_int(self.n_channels, "n_channels")
        check_type("montage", self.montage, str, "the name of an mne standard montage")
        _check_number("snr", self.snr, low=0.0)
        _check_number("background_rms", self.background_rms, low=0.0, strict=True)
        _check_number("background_exponent", self.background_exponent, low=0.0, strict=True, high=2.0)
        _check_number("spatial_correlation", self.spatial_correlation, low=0.0, high=1.0)
        for name in ("alpha_amplitude", "line_amplitude", "drift", "blink_rate", "blink_amplitude",
                     "latency_jitter", "amplitude_jitter", "feature_strength"):
            _check_number(name, getattr(self, name), low=0.0)
        nyquist = self.sfreq / 2
        _check_number("alpha_freq", self.alpha_freq, low=1.0, high=min(40.0, nyquist * 0.8))
        _check_number("line_freq", self.line_freq, low=1.0, strict=True)
        if self.line_amplitude > 0 and self.line_freq >= nyquist:
            raise ValueError(f"line_freq={self.line_freq!r} must be below the Nyquist frequency {nyquist:g} Hz")
        _check_number("drift_tau", self.drift_tau, low=2.0 * BLOCK_SECONDS)
        _check_number("evoked_duration", self.evoked_duration, low=0.0, strict=True, high=10.0)
        if int(round(self.evoked_duration * self.sfreq)) < 2:
            raise ValueError(f"evoked_duration={self.evoked_duration!r} is shorter than two samples")
        check_int("seed", self.seed, low=0)
        check_int("session", self.session, low=0)


def _check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                  strict: bool = False) -> None:
    """:func:`streams._checks.check_float`, with ``strict``: ``value > low`` rather than ``>= low``."""
    v = check_float(name, value, low=low, high=high)
    if strict and v == low:
        raise ValueError(f"{name}={value!r} must be > {low:g}")


# ============================================================================ montage
@functools.lru_cache(maxsize=8)
def _montage(name: str) -> tuple[tuple[str, ...], np.ndarray, float]:
    import mne  # lazy: importing mne costs ~0.2 s

    try:
        montage = mne.channels.make_standard_montage(name)
    except ValueError as exc:
        raise ValueError(f"montage={name!r} is not an mne standard montage ({exc})") from None
    pos = montage.get_positions()["ch_pos"]
    names = tuple(pos)
    xyz = np.array([pos[n] for n in names], dtype=float)
    centre, radius = _fit_sphere(xyz)
    dirs = xyz - centre
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dirs.setflags(write=False)
    return names, dirs, radius


def montage_geometry(name: str = "biosemi128") -> tuple[list[str], np.ndarray, float]:
    """Channel names, unit direction vectors ``(n, 3)`` and head radius (m) of a montage.

    Directions are from the centre of the sphere fitted to the electrodes; x
    points right, y to the nose, z up.
    """
    names, dirs, radius = _montage(name)
    return list(names), dirs.copy(), radius


def _fit_sphere(xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through the electrode positions."""
    a = np.column_stack([2 * xyz, np.ones(len(xyz))])
    b = (xyz**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    centre = sol[:3]
    radius = float(np.sqrt(sol[3] + centre @ centre))
    return centre, radius


def _site(name_or_angles: str | tuple[float, float]) -> np.ndarray:
    az, el = _SITES[name_or_angles] if isinstance(name_or_angles, str) else name_or_angles
    az, el = np.deg2rad(az), np.deg2rad(el)
    return np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)])


def _arc(dirs: np.ndarray, point: np.ndarray, radius: float) -> np.ndarray:
    """Distance along the scalp (m) from every electrode to a direction."""
    return radius * np.arccos(np.clip(dirs @ point, -1.0, 1.0))


def _blob(dirs: np.ndarray, radius: float, site: str | tuple[float, float] | np.ndarray,
          sigma_m: float) -> np.ndarray:
    """Gaussian patch on the scalp centred on ``site`` (peak 1 at the site)."""
    point = site if isinstance(site, np.ndarray) else _site(site)
    return np.exp(-0.5 * (_arc(dirs, point, radius) / sigma_m) ** 2)


def _normalised(v: np.ndarray) -> np.ndarray:
    return v / np.max(np.abs(v))


# ============================================================================ forward model
@dataclass(frozen=True)
class _Component:
    name: str
    polarity: float
    amplitude: float
    latency: float
    width: float
    sites: tuple[tuple[str, float], ...]
    sigma_m: float
    lateral: float
    lateral_sites: tuple[str, str] | None = None  # (left, right)


_COMPONENTS = (
    _Component("P1", +1.0, 1.0, 0.100, 0.015, (("O1", 1.0), ("O2", 1.0), ("Oz", 0.8)), 0.035, 0.6, ("PO7", "PO8")),
    _Component("N1", -1.0, 1.4, 0.170, 0.022, (("PO7", 1.0), ("PO8", 1.0), ("P7", 0.5), ("P8", 0.5)), 0.035, 0.5,
               ("PO7", "PO8")),
    _Component("P2", +1.0, 0.8, 0.240, 0.030, (("FCz", 1.0), ("POz", 0.4)), 0.05, 0.0),
    _Component("P300", +1.0, 1.6, 0.340, 0.060, (("Pz", 1.0), ("CPz", 0.6)), 0.06, 0.0),
)


class EEGForwardModel:
    """The noise-free map from an image's features to its evoked response.

    For image features ``f`` (one-hot shape, one-hot colour, x, y, size), component
    ``c`` has

    * amplitude ``a_c(f) = gain * amplitude_c * max(0.1, 1 + amplitude_weights[c] @ f)``
    * latency ``l_c(f) = base_latencies[c] + latency_weights[c] @ f`` (seconds)
    * topography ``polarity_c * (base_topographies[c] - x * lateral_topographies[c]
      + spatial_basis @ (feature_weights[c] @ f))`` (``x`` is the horizontal
      position: a stimulus on the left drives the right hemisphere more)
    * waveform ``exp(-0.5 ((t - l_c(f) - shift) / widths[c])**2)`` times a cosine
      taper over the last 15% of the window.

    The evoked response is ``sum_c a_c * topography_c[:, None] * waveform_c[None, :]``,
    ``(n_channels, n_times)`` volts, ``times = arange(n_times) / sfreq`` after onset.
    A single trial adds a latency ``shift ~ N(0, latency_jitter)`` shared by all
    components and a log-normal amplitude factor (mean 1) per component.

    Attributes
    ----------
    component_names, polarities, base_amplitudes, base_latencies, widths : ndarray
        One entry per component.
    base_topographies, lateral_topographies : ndarray, (n_components, n_channels)
    spatial_basis : ndarray, (n_channels, n_basis)
        Dipole-like scalp patterns over posterior cortex.
    feature_weights : ndarray, (n_components, n_basis, n_features)
    amplitude_weights, latency_weights : ndarray, (n_components, n_features)
    gain : float
        Volts per unit; set so that the response RMS is ``snr * background_rms``.
    """

    def __init__(self, stimuli: StimulusSet, dirs: np.ndarray, radius: float, config: EEGSimConfig) -> None:
        self.config = config
        self.sfreq = float(config.sfreq)
        self.n_times = int(round(config.evoked_duration * self.sfreq))
        self.times = np.arange(self.n_times) / self.sfreq
        self.features = np.asarray(stimuli.features, dtype=float)
        self.class_ids = np.asarray(stimuli.class_ids)
        self.n_classes = stimuli.n_classes
        self._taper = _end_taper(self.n_times, 0.15)
        rng = np.random.default_rng([config.seed, _TAG_FORWARD])
        self._build_components(dirs, radius)
        self.spatial_basis = _spatial_basis(dirs, radius, _N_SPATIAL_BASIS, rng)
        self._build_feature_maps(rng)
        self.gain = 1.0
        self._unit_topos = self.topographies(self.features)
        self.gain = self._calibrated_gain()

    # ---------------------------------------------------------------- construction
    def _build_components(self, dirs: np.ndarray, radius: float) -> None:
        comps = _COMPONENTS
        self.component_names = [c.name for c in comps]
        self.polarities = np.array([c.polarity for c in comps])
        self.base_amplitudes = np.array([c.amplitude for c in comps])
        self.base_latencies = np.array([c.latency for c in comps])
        self.widths = np.array([c.width for c in comps])
        base, lateral = [], []
        for c in comps:
            base.append(_normalised(sum(w * _blob(dirs, radius, s, c.sigma_m) for s, w in c.sites)))
            lat = np.zeros(len(dirs))
            if c.lateral_sites is not None:
                left, right = c.lateral_sites
                lat = c.lateral * (_blob(dirs, radius, right, c.sigma_m) - _blob(dirs, radius, left, c.sigma_m))
            lateral.append(lat)
        self.base_topographies = np.array(base)
        self.lateral_topographies = np.array(lateral)

    def _build_feature_maps(self, rng: np.random.Generator) -> None:
        n_comp, n_feat = len(self.component_names), self.features.shape[1]
        n_cat = n_feat - 3  # one-hot shape + colour; the last three are x, y, size
        s = 0.08 * self.config.feature_strength
        fw = rng.normal(0.0, s, (n_comp, _N_SPATIAL_BASIS, n_feat))
        fw[:, :, n_cat:] *= 0.5
        self.feature_weights = fw
        aw = rng.normal(0.0, 0.2, (n_comp, n_feat))
        aw[:, n_cat:] = rng.normal(0.0, 0.1, (n_comp, 3))
        aw[0, -1] += 0.4  # bigger stimuli: larger P1 ...
        aw[1, -1] += 0.2  # ... and N1
        self.amplitude_weights = aw
        lw = rng.normal(0.0, 0.005, (n_comp, n_feat))
        lw[:, n_cat:] = 0.0
        lw[0, -1] = -0.010  # bigger stimuli: earlier P1 and N1
        lw[1, -1] = -0.008
        self.latency_weights = lw

    def _calibrated_gain(self) -> float:
        """Volts per unit so that the evoked RMS (all images) is ``snr * background_rms``."""
        if self.config.snr == 0:
            return 0.0
        ms = 0.0
        for i in range(len(self.features)):
            ms += float(np.mean(self._unit_evoked(i) ** 2))
        rms = math.sqrt(ms / len(self.features))
        return self.config.snr * self.config.background_rms / rms

    # ---------------------------------------------------------------- public API
    @property
    def n_images(self) -> int:
        """Number of images the model was built for."""
        return len(self.features)

    def latencies(self, features: np.ndarray) -> np.ndarray:
        """Component latencies (s), ``(n_components,)`` or ``(n, n_components)``."""
        return self.base_latencies + np.asarray(features, float) @ self.latency_weights.T

    def amplitudes(self, features: np.ndarray) -> np.ndarray:
        """Component amplitudes (volts at topography 1), ``(..., n_components)``."""
        f = np.asarray(features, float)
        return self.gain * self.base_amplitudes * np.maximum(0.1, 1.0 + f @ self.amplitude_weights.T)

    def topographies(self, features: np.ndarray) -> np.ndarray:
        """Scalp maps scaled by amplitude: ``(n_components, n_channels)``, or ``(n, n_components, n_channels)``."""
        f = np.asarray(features, float)
        single = f.ndim == 1
        f2 = np.atleast_2d(f)
        mix = np.einsum("cbf,nf->ncb", self.feature_weights, f2) @ self.spatial_basis.T
        x = f2[:, -3][:, None, None]
        topo = self.base_topographies[None] - x * self.lateral_topographies[None] + mix
        topo *= (self.polarities * self.amplitudes(f2))[:, :, None]
        return topo[0] if single else topo

    def waveforms(self, features: np.ndarray, latency_shift: float = 0.0) -> np.ndarray:
        """Unit component waveforms ``(n_components, n_times)`` for one image."""
        lat = self.latencies(np.asarray(features, float)) + latency_shift
        z = (self.times[None, :] - lat[:, None]) / self.widths[:, None]
        return np.exp(-0.5 * z * z) * self._taper

    def evoked_from_features(self, features: np.ndarray, *, latency_shift: float = 0.0,
                             amplitude_scales: np.ndarray | None = None) -> np.ndarray:
        """Evoked response ``(n_channels, n_times)`` float64 for any feature vector."""
        topo = self.topographies(features)
        return self._combine(topo, self.waveforms(features, latency_shift), amplitude_scales)

    def evoked(self, image_index: int) -> np.ndarray:
        """Expected (noise-free, no trial jitter) response to an image, ``(n_channels, n_times)`` float32 volts."""
        i = self._check_image(image_index)
        return self._combine(self._unit_topos[i] * self.gain, self.waveforms(self.features[i])).astype(np.float32)

    def evoked_all(self) -> np.ndarray:
        """Templates of all images, ``(n_images, n_channels, n_times)`` float32."""
        return np.stack([self.evoked(i) for i in range(self.n_images)])

    def class_templates(self) -> np.ndarray:
        """Mean template of each class's images, ``(n_classes, n_channels, n_times)`` float32."""
        out = np.zeros((self.n_classes, self._unit_topos.shape[-1], self.n_times))
        for i in range(self.n_images):
            out[self.class_ids[i]] += self.evoked(i)
        counts = np.bincount(self.class_ids, minlength=self.n_classes)
        return (out / np.maximum(counts, 1)[:, None, None]).astype(np.float32)

    def trial_response(self, image_index: int, rng: np.random.Generator) -> np.ndarray:
        """One noisy trial's response, ``(n_channels, n_times)`` float64 volts."""
        i = self._check_image(image_index)
        shift = rng.normal(0.0, self.config.latency_jitter) if self.config.latency_jitter else 0.0
        sigma = self.config.amplitude_jitter
        scales = np.exp(rng.normal(0.0, sigma, len(self.component_names)) - 0.5 * sigma**2)
        return self._combine(self._unit_topos[i] * self.gain, self.waveforms(self.features[i], shift), scales)

    # ---------------------------------------------------------------- helpers
    def _unit_evoked(self, i: int) -> np.ndarray:
        return self._combine(self._unit_topos[i], self.waveforms(self.features[i]))

    @staticmethod
    def _combine(topo: np.ndarray, waves: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
        if scales is not None:
            waves = waves * np.asarray(scales, float)[:, None]
        return topo.T @ waves

    def _check_image(self, image_index: int) -> int:
        ensure_int(image_index, "image_index")
        if not 0 <= image_index < self.n_images:
            raise IndexError(f"image_index={image_index} out of range [0, {self.n_images})")
        return int(image_index)


def _end_taper(n: int, fraction: float) -> np.ndarray:
    """1 everywhere except a half-cosine fall to 0 over the last ``fraction`` of ``n`` samples."""
    taper = np.ones(n)
    m = max(1, int(round(n * fraction)))
    taper[n - m:] = 0.5 * (1 + np.cos(np.pi * (np.arange(1, m + 1) / m)))
    return taper


def _spatial_basis(dirs: np.ndarray, radius: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Dipole-like patterns (a positive and a weaker negative lobe) over posterior/lateral cortex."""
    candidates = np.flatnonzero((dirs[:, 1] < 0.4) & (dirs[:, 2] > -0.3))
    basis = np.empty((len(dirs), n))
    for j in range(n):
        a = dirs[rng.choice(candidates)]
        dist = _arc(dirs, a, radius)
        partners = np.flatnonzero((dist > 0.05) & (dist < 0.09))
        b = dirs[rng.choice(partners)] if len(partners) else -a
        sigma = rng.uniform(0.025, 0.04)
        basis[:, j] = _normalised(_blob(dirs, radius, a, sigma) - 0.7 * _blob(dirs, radius, b, sigma))
    return basis


# ============================================================================ filters
def _pink_sos(exponent: float, sfreq: float) -> np.ndarray:
    """Cascade of first-order pole/zero pairs approximating a 1/f^exponent power spectrum.

    Poles are log-spaced (3 per decade) from 0.5 Hz up to min(250 Hz, 0.3 sfreq); each zero sits
    ``exponent / 2`` of the spacing above its pole, so the power falls on
    average by ``10 * exponent`` dB per decade between the first pole and the
    last zero, and is flat outside.
    """
    f_hi = min(_PINK_F_HI, 0.3 * sfreq)
    step = 1.0 / 3.0
    n_poles = int(np.floor(np.log10(f_hi / _PINK_F_LO) / step)) + 1
    fp = _PINK_F_LO * 10 ** (step * np.arange(n_poles))
    fz = fp * 10 ** (step * exponent / 2.0)
    fz = np.minimum(fz, 0.45 * sfreq)
    poles = np.exp(-2 * np.pi * fp / sfreq)
    zeros = np.exp(-2 * np.pi * fz / sfreq)
    if n_poles % 2:
        poles, zeros = np.append(poles, 0.0), np.append(zeros, 0.0)
    sos = []
    for k in range(0, len(poles), 2):
        b = np.convolve([1.0, -zeros[k]], [1.0, -zeros[k + 1]])
        a = np.convolve([1.0, -poles[k]], [1.0, -poles[k + 1]])
        sos.append(np.concatenate([b, a]))
    return np.array(sos)


def _lowpass_sos(freq: float, sfreq: float) -> np.ndarray:
    """Two cascaded one-pole low-pass filters at ``freq`` (a smooth envelope)."""
    p = math.exp(-2 * math.pi * freq / sfreq)
    return np.array([np.concatenate([[(1 - p) ** 2, 0.0, 0.0], np.convolve([1.0, -p], [1.0, -p])])])


def _unit_variance(sos: np.ndarray, sfreq: float, slowest_hz: float) -> np.ndarray:
    """Rescale ``sos`` so unit white noise in gives unit variance out (impulse-response energy)."""
    n = int(sfreq * 12.0 / (2 * np.pi * slowest_hz)) + 1000
    impulse = np.zeros(n)
    impulse[0] = 1.0
    h = signal.sosfilt(sos, impulse)
    out = sos.copy()
    out[0, :3] /= math.sqrt(float(h @ h))
    return out


def _matmul_single(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in row slices small enough that BLAS stays single-threaded.

    At these sizes (1000 x 32 @ 32 x 128) OpenBLAS would start threads that cost
    more than they save, several times more on a busy 2-core machine.
    """
    out = np.empty((a.shape[0], b.shape[1]))
    step = max(1, _BLAS_SINGLE_THREAD_WORK // max(1, a.shape[1] * b.shape[1]))
    for i in range(0, a.shape[0], step):
        np.matmul(a[i:i + step], b, out=out[i:i + step])
    return out


def _blink_shape(n: int) -> np.ndarray:
    """Asymmetric blink waveform (fast rise, slower fall), peak 1, ``n`` samples."""
    u = (np.arange(n) + 0.5) / n
    w = u**1.5 * (1 - u) ** 2.5
    return w / w.max()


# ============================================================================ simulator
@dataclass
class _State:
    """Filter states and drift knots carried from block to block."""

    zi_pink: np.ndarray
    zi_alpha: np.ndarray
    zi_env: np.ndarray
    knots: np.ndarray  # (4, n_channels): drift control points k-1 .. k+2
    next_block: int = 0

    def copy(self) -> _State:
        return _State(self.zi_pink.copy(), self.zi_alpha.copy(), self.zi_env.copy(), self.knots.copy(),
                      self.next_block)


class EEGSimulator:
    """Simulated EEG amplifier watching a subject view :class:`StimulusSet` images.

    Parameters
    ----------
    stimuli : StimulusSet
        The images the schedule refers to (their features drive the evoked responses).
    config : EEGSimConfig, optional
        Defaults: 128 channels (biosemi128) at 1000 Hz, SNR 1, seed 0.

    Examples
    --------
    >>> stim = make_stimuli()
    >>> sim = EEGSimulator(stim)
    >>> schedule = make_schedule(stim, 60.0)
    >>> data, times = sim.generate(schedule, 60.0)     # (60000, 128) float32 volts
    >>> for chunk, first in sim.stream(schedule, chunk_size=10, duration=60.0):
    ...     pass                                         # same samples, 10 at a time
    """

    def __init__(self, stimuli: StimulusSet, config: EEGSimConfig | None = None) -> None:
        if not isinstance(stimuli, StimulusSet):
            raise TypeError(f"stimuli must be a StimulusSet (from make_stimuli), got {type(stimuli).__name__}")
        config = EEGSimConfig() if config is None else config
        if not isinstance(config, EEGSimConfig):
            raise TypeError(f"config must be an EEGSimConfig, got {type(config).__name__}")
        names, dirs, radius = _montage(config.montage)
        if len(names) != config.n_channels:
            raise ValueError(
                f"n_channels={config.n_channels} but montage {config.montage!r} has {len(names)} channels; "
                "set n_channels to match the montage (or pick a montage with that many channels)"
            )
        self.stimuli = stimuli
        self.config = config
        self.channel_names: list[str] = list(names)
        self.sfreq = float(config.sfreq)
        self.positions = dirs * radius  # (n, 3) metres from the head centre
        self.block_size = int(round(BLOCK_SECONDS * self.sfreq))
        self.forward_model = EEGForwardModel(stimuli, dirs, radius, config)
        self._build_background(dirs, radius)
        self._initial: _State | None = None

    # ---------------------------------------------------------------- properties
    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.channel_names)

    def description(self, name: str = "SimEEG", source_id: str | None = None) -> StreamDescription:
        """LSL description: type ``EEG``, float32, volts, the montage's channel names."""
        source_id = source_id if source_id is not None else f"bci-sim-eeg-{self.config.seed}"
        return uniform_description(name, "EEG", source_id, self.channel_names, channel_type="eeg", unit="V",
                                   nominal_rate=self.sfreq)

    def background_covariance(self) -> np.ndarray:
        """Exact spatial covariance (V^2) of the spontaneous background (1/f + alpha), ``(n, n)``."""
        mix = self._src_mix / self._pink_rms  # rows of unit-norm columns times sqrt(rho)
        cov = self._pink_rms**2 * (mix.T @ mix + (1 - self.config.spatial_correlation) * np.eye(self.n_channels))
        return cov + self._alpha_topo.T @ self._alpha_topo

    # ---------------------------------------------------------------- generation
    def generate(self, schedule: Sequence[StimulusEvent], duration: float) -> tuple[np.ndarray, np.ndarray]:
        """The whole session at once.

        Parameters
        ----------
        schedule : sequence of StimulusEvent
            Events with ``image_index >= 0`` get an evoked response starting at
            sample ``round(onset * sfreq)``; block markers are ignored.
        duration : float
            Seconds; the session has ``round(duration * sfreq)`` samples.

        Returns
        -------
        data : ndarray, (n_samples, n_channels) float32, volts
        times : ndarray, (n_samples,) float64, seconds from 0 (``i / sfreq``)
        """
        n_total = self._n_samples(duration)
        run = _Run(self, schedule)
        out = np.empty((n_total, self.n_channels), dtype=np.float32)
        pos = 0
        for block in run.blocks():
            take = min(len(block), n_total - pos)
            out[pos:pos + take] = block[:take]
            pos += take
            if pos >= n_total:
                break
        return out, np.arange(n_total) / self.sfreq

    def stream(self, schedule: Sequence[StimulusEvent], chunk_size: int = 10,
               duration: float | None = None) -> Iterator[tuple[np.ndarray, int]]:
        """Generate the session chunk by chunk (constant memory, any length).

        Parameters
        ----------
        schedule : sequence of StimulusEvent
        chunk_size : int
            Samples per chunk (an amplifier sends ~10 at 1 kHz).
        duration : float, optional
            Stop after ``round(duration * sfreq)`` samples (the last chunk may be
            shorter); ``None`` streams forever.

        Yields
        ------
        chunk : ndarray, (n, n_channels) float32
        first_sample_index : int
            Index of the chunk's first sample (its time is ``index / sfreq``).

        Notes
        -----
        The concatenated chunks equal :meth:`generate`'s output bit for bit,
        whatever ``chunk_size``. Markers are the caller's job: send event ``e``'s
        marker with the timestamp of sample ``round(e.onset * sfreq)``.
        """
        check_int("chunk_size", chunk_size, low=1)
        n_total = None if duration is None else self._n_samples(duration)
        run = _Run(self, schedule)
        return _chunks(run.blocks(), int(chunk_size), n_total)

    # ---------------------------------------------------------------- background
    def _build_background(self, dirs: np.ndarray, radius: float) -> None:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, _TAG_LAYOUT])
        n_ch = self.n_channels
        # spontaneous alpha: three posterior generators
        alpha_sites = [(-150.0, 10.0), (150.0, 10.0), (180.0, 30.0)]
        topo = np.array([_blob(dirs, radius, s, 0.045) for s in alpha_sites]) * np.array([[1.0], [1.0], [0.8]])
        peak = np.sqrt((topo**2).sum(axis=0)).max()
        self._alpha_topo = topo * (cfg.alpha_amplitude / peak)  # (3, n_ch), V RMS per generator
        alpha_var = (self._alpha_topo**2).sum(axis=0)
        pink_var = cfg.background_rms**2 - float(alpha_var.mean())
        if pink_var <= 0:
            raise ValueError(
                f"alpha_amplitude={cfg.alpha_amplitude!r} is too large for background_rms={cfg.background_rms!r}: "
                "alpha alone would exceed the background RMS; lower alpha_amplitude or raise background_rms"
            )
        self._pink_rms = math.sqrt(pink_var)
        # shared 1/f sources: smooth patches, columns normalised so each channel gets variance rho
        src = dirs[rng.choice(n_ch, _N_BACKGROUND_SOURCES, replace=False)]
        patches = np.array([_blob(dirs, radius, s, 0.05) for s in src])  # (n_src, n_ch)
        patches /= np.linalg.norm(patches, axis=0, keepdims=True)
        rho = cfg.spatial_correlation
        self._src_mix = patches * (math.sqrt(rho) * self._pink_rms)
        self._local_scale = math.sqrt(1 - rho) * self._pink_rms
        self._pink_sos = _unit_variance(_pink_sos(cfg.background_exponent, self.sfreq), self.sfreq, _PINK_F_LO)
        q = cfg.alpha_freq / 2.0
        b, a = signal.iirpeak(cfg.alpha_freq, q, fs=self.sfreq)
        self._alpha_sos = _unit_variance(signal.tf2sos(b, a), self.sfreq, 1.0)
        self._env_sos = _unit_variance(_lowpass_sos(_ENVELOPE_HZ, self.sfreq), self.sfreq, _ENVELOPE_HZ)
        c = _ENVELOPE_OFFSET
        self._env_scale = 1.0 / math.sqrt((1 + c * c) * ndtr(c) + c * math.exp(-c * c / 2) / math.sqrt(2 * math.pi))
        # line noise: per-channel amplitude 50-100 %, nearly common phase; 3rd harmonic 20 %
        self._line_harmonics = [h for h in (1, 3) if h * cfg.line_freq < self.sfreq / 2]
        rows = []
        for h in self._line_harmonics:
            amp = cfg.line_amplitude * (1.0 if h == 1 else 0.2) * rng.uniform(0.5, 1.0, n_ch)
            phase = rng.uniform(0, 2 * np.pi) + rng.normal(0, 0.2, n_ch)
            rows += [amp * np.cos(phase), -amp * np.sin(phase)]
        self._line_coef = np.array(rows).reshape(-1, n_ch)
        # drift: AR(1) knots once per block, cubic B-spline in between
        self._drift_rho = math.exp(-BLOCK_SECONDS / cfg.drift_tau)
        u = np.arange(self.block_size) / self.block_size
        self._spline = np.stack([(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3],
                                axis=1) / 6.0
        # blinks: exponential fall-off from the eyes (below Fp1/Fp2)
        eyes = [_site((-25.0, -35.0)), _site((25.0, -35.0))]
        dist = np.minimum(*[np.linalg.norm(dirs - e, axis=1) * radius for e in eyes])
        self._blink_topo = np.exp(-dist / _BLINK_DECAY_M)
        self._blink_topo /= self._blink_topo.max()

    def _rng(self, tag: int, *keys: int) -> np.random.Generator:
        if self.config.session == 0:
            return np.random.default_rng([self.config.seed, tag, *keys])
        return np.random.default_rng([self.config.seed, _TAG_SESSION, self.config.session, tag, *keys])

    def _drift_knot(self, j: int, previous: np.ndarray | None) -> np.ndarray:
        eps = self._rng(_TAG_DRIFT, j).standard_normal(self.n_channels) * self.config.drift
        if previous is None:
            return eps
        return self._drift_rho * previous + math.sqrt(1 - self._drift_rho**2) * eps

    def _initial_state(self) -> _State:
        """Filter states after a warm-up, so the session starts in steady state (cached)."""
        if self._initial is None:
            n_warm = int(round(_WARMUP_SECONDS * self.sfreq))
            rng = self._rng(_TAG_WARMUP)
            n_ch = self.n_channels
            w = rng.standard_normal((n_warm, _N_BACKGROUND_SOURCES + n_ch))
            x = _matmul_single(w[:, :_N_BACKGROUND_SOURCES], self._src_mix)
            x += w[:, _N_BACKGROUND_SOURCES:] * self._local_scale
            zi = np.zeros((len(self._pink_sos), 2, n_ch))
            _, zi_pink = signal.sosfilt(self._pink_sos, x, axis=0, zi=zi)
            w = rng.standard_normal((n_warm, 6))
            _, zi_alpha = signal.sosfilt(self._alpha_sos, w[:, :3], axis=0, zi=np.zeros((len(self._alpha_sos), 2, 3)))
            _, zi_env = signal.sosfilt(self._env_sos, w[:, 3:], axis=0, zi=np.zeros((1, 2, 3)))
            knots = [self._drift_knot(0, None)]
            for j in range(1, 4):
                knots.append(self._drift_knot(j, knots[-1]))
            self._initial = _State(zi_pink, zi_alpha, zi_env, np.array(knots))
        return self._initial.copy()

    def _background_block(self, k: int, state: _State) -> np.ndarray:
        """Block ``k`` of everything but blinks and evoked responses, float64 ``(block, n_ch)``."""
        n_b, n_src = self.block_size, _N_BACKGROUND_SOURCES
        w = self._rng(_TAG_NOISE, k).standard_normal((n_b, n_src + self.n_channels))
        x = _matmul_single(w[:, :n_src], self._src_mix)
        x += w[:, n_src:] * self._local_scale
        x, state.zi_pink = signal.sosfilt(self._pink_sos, x, axis=0, zi=state.zi_pink)
        wa = self._rng(_TAG_ALPHA, k).standard_normal((n_b, 6))
        osc, state.zi_alpha = signal.sosfilt(self._alpha_sos, wa[:, :3], axis=0, zi=state.zi_alpha)
        env, state.zi_env = signal.sosfilt(self._env_sos, wa[:, 3:], axis=0, zi=state.zi_env)
        alpha = osc * (np.maximum(env + _ENVELOPE_OFFSET, 0.0) * self._env_scale)
        phase = np.mod((k * n_b + np.arange(n_b)) * (self.config.line_freq / self.sfreq), 1.0) * (2 * np.pi)
        line = [f(h * phase) for h in self._line_harmonics for f in (np.cos, np.sin)]
        basis = np.column_stack([alpha, *line, self._spline])
        coef = np.vstack([self._alpha_topo, self._line_coef, state.knots])
        x += _matmul_single(basis, coef)
        state.knots = np.vstack([state.knots[1:], self._drift_knot(k + 4, state.knots[-1])])
        return x

    def _blinks(self, k: int) -> list[tuple[int, float, int]]:
        """Blinks that start in block ``k``: ``(start_sample, amplitude, n_samples)``."""
        cfg = self.config
        if cfg.blink_rate == 0 or cfg.blink_amplitude == 0:
            return []
        rng = self._rng(_TAG_BLINK, k)
        n = rng.poisson(cfg.blink_rate * BLOCK_SECONDS)
        starts = np.sort(rng.integers(0, self.block_size, n)) + k * self.block_size
        amps = cfg.blink_amplitude * rng.uniform(2 / 3, 4 / 3, n)
        lengths = np.round(rng.uniform(*_BLINK_DURATION, n) * self.sfreq).astype(int)
        return [(int(s), float(a), max(2, int(m))) for s, a, m in zip(starts, amps, lengths)]

    def background_blocks(self) -> Iterator[np.ndarray]:
        """The session without evoked responses, in blocks of :attr:`block_size` samples.

        Yields float64 ``(block_size, n_channels)`` arrays (background and blinks). Adding
        :meth:`trial_response` of each event in onset order and casting to float32 gives
        :meth:`generate`'s samples bit for bit (used to follow markers that arrive live,
        :mod:`streams.follow`).
        """
        run = _Run(self, [])
        k = 0
        while True:
            yield run.base_block(k)
            k += 1

    def trial_response(self, start: int, image_index: int) -> np.ndarray:
        """The evoked response of the trial starting at sample ``start``, ``(n_times, n_channels)`` float64.

        Deterministic from ``(seed, session, start, image_index)``: the response
        :meth:`generate` adds for an event at that sample.
        """
        start = check_int("start", start, low=0)
        image_index = check_int("image_index", image_index, low=0, high=self.stimuli.n_images - 1)
        rng = self._rng(_TAG_TRIAL, start, image_index)
        return self.forward_model.trial_response(image_index, rng).T

    def _n_samples(self, duration: float) -> int:
        _check_number("duration", duration, low=0.0, strict=True)
        return int(round(float(duration) * self.sfreq))


class _Run:
    """One pass over a session: filter states, the sorted events and a cache of trial responses."""

    def __init__(self, sim: EEGSimulator, schedule: Sequence[StimulusEvent]) -> None:
        self.sim = sim
        samples, images = _event_table(schedule, sim.stimuli.n_images, sim.sfreq)
        order = np.argsort(samples, kind="stable")
        self.samples, self.images = samples[order], images[order]
        self.state = sim._initial_state()
        self._responses: dict[int, np.ndarray] = {}
        self._previous_blinks: list[tuple[int, float, int]] = []

    def blocks(self) -> Iterator[np.ndarray]:
        """Blocks 0, 1, 2, ... as float32 ``(block_size, n_channels)`` arrays."""
        k = 0
        while True:
            yield self._block(k)
            k += 1

    def _block(self, k: int) -> np.ndarray:
        x = self.base_block(k)
        n0 = k * self.sim.block_size
        self._add_evoked(x, n0, n0 + self.sim.block_size)
        return x.astype(np.float32)

    def base_block(self, k: int) -> np.ndarray:
        """Block ``k`` without evoked responses (background and blinks), float64; call for k = 0, 1, 2, ..."""
        sim = self.sim
        x = sim._background_block(k, self.state)
        n0 = k * sim.block_size
        self._add_blinks(x, k, n0, n0 + sim.block_size)
        return x

    def _add_blinks(self, x: np.ndarray, k: int, n0: int, n1: int) -> None:
        current = self.sim._blinks(k)
        topo = self.sim._blink_topo
        for start, amp, length in self._previous_blinks + current:
            span = _overlap(n0, n1, start, length)
            if span is not None:
                a, b = span
                x[a - n0:b - n0] += (amp * _blink_shape(length)[a - start:b - start])[:, None] * topo[None, :]
        self._previous_blinks = current

    def _add_evoked(self, x: np.ndarray, n0: int, n1: int) -> None:
        fm = self.sim.forward_model
        n_ev = fm.n_times
        lo = int(np.searchsorted(self.samples, n0 - n_ev + 1, side="left"))
        hi = int(np.searchsorted(self.samples, n1, side="left"))
        for e in range(lo, hi):
            start = int(self.samples[e])
            if e not in self._responses:
                self._responses[e] = self.sim.trial_response(start, int(self.images[e]))
            span = _overlap(n0, n1, start, n_ev)
            if span is not None:
                a, b = span
                x[a - n0:b - n0] += self._responses[e][a - start:b - start]
        for e in [e for e in self._responses if e < lo]:
            del self._responses[e]


def _overlap(n0: int, n1: int, start: int, length: int) -> tuple[int, int] | None:
    """Absolute sample range where ``[start, start + length)`` meets ``[n0, n1)``, or None."""
    a, b = max(start, n0), min(start + length, n1)
    return (a, b) if a < b else None


def _event_table(schedule: Sequence[StimulusEvent], n_images: int, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Onset samples and image indices of the stimulus events (block markers dropped)."""
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
        raise TypeError(f"schedule must be a list of StimulusEvent (from make_schedule), got {type(schedule).__name__}")
    samples, images = [], []
    for i, ev in enumerate(schedule):
        try:
            onset, img = float(ev.onset), int(ev.image_index)
        except (AttributeError, TypeError, ValueError):
            raise TypeError(f"schedule[{i}]={ev!r} is not a StimulusEvent") from None
        if img < 0:
            continue
        if not math.isfinite(onset) or onset < 0:
            raise ValueError(f"schedule[{i}].onset={onset!r} must be a finite time >= 0 s")
        if img >= n_images:
            raise ValueError(
                f"schedule[{i}].image_index={img} but the stimulus set has {n_images} images; "
                "build the schedule from the simulator's stimuli"
            )
        samples.append(onset_sample(onset, sfreq))
        images.append(img)
    return np.array(samples, dtype=np.int64), np.array(images, dtype=np.int64)


def _chunks(blocks: Iterator[np.ndarray], chunk_size: int, n_total: int | None) -> Iterator[tuple[np.ndarray, int]]:
    """Re-cut a stream of blocks into ``(chunk, first_index)`` of ``chunk_size`` rows (the last may be shorter)."""
    first = 0  # index of the next sample to yield
    pending: list[np.ndarray] = []
    n_pending = 0
    for block in blocks:
        if n_total is not None:
            block = block[: n_total - first - n_pending]
        pending.append(block)
        n_pending += len(block)
        final = n_total is not None and first + n_pending >= n_total
        if n_pending >= chunk_size or final:
            buf = pending[0] if len(pending) == 1 else np.concatenate(pending)
            pos = 0
            while n_pending - pos >= chunk_size:
                yield buf[pos:pos + chunk_size], first
                first += chunk_size
                pos += chunk_size
            if final and pos < n_pending:
                yield buf[pos:], first
                first += n_pending - pos
                pos = n_pending
            pending = [buf[pos:]]
            n_pending -= pos
        if final:
            return
