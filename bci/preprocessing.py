"""Online preprocessing: causal filters with carried state, re-reference, decimation, scaling.

One code path serves training and live use. :class:`OnlinePreprocessor` consumes a
continuous ``(n_samples, n_channels)`` stream chunk by chunk and keeps all state
(filter delays, decimation phase) between calls, so the output never depends on how
the stream was cut into chunks: :func:`preprocess_recording` (the offline path) runs
the very same object over a whole recording and gives bit-identical samples.

Per chunk, in this fixed order:

1. re-reference (in float64, before filtering): subtract the mean of all channels
   (``"average"``), of the named channels, or nothing (``"none"``);
2. one causal IIR cascade (second-order sections, float64 state): Butterworth
   band-/high-/low-pass designed with :func:`mne.filter.create_filter`, line-noise
   notches (:func:`scipy.signal.iirnotch`) and, when resampling, an anti-alias
   Chebyshev type I low-pass (the design of :func:`scipy.signal.decimate`);
3. decimation by an integer factor, keeping the last sample of each group of
   ``factor`` input samples (counted from the first sample ever processed);
4. output as float32, time-major.

Per window (:meth:`OnlinePreprocessor.apply_window`): baseline correction. The
per-channel standardisation (:class:`ChannelScaler`) is fitted on training windows,
stored in the model checkpoint and applied on the inference side.

Non-finite input: a NaN/inf sample of a channel comes out as NaN at its own output
position and re-arms that channel's filter, which restarts at the next finite sample
exactly as at the start of a stream (see :meth:`OnlinePreprocessor.reset`). The other
channels are not affected: the average reference of such a sample is the mean of the
channels that are finite at that sample.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import mne
import numpy as np
import scipy.signal as ss

from streams._checks import check_bool, check_float, check_int

__all__ = [
    "ChannelScaler",
    "OnlinePreprocessor",
    "PreprocessConfig",
    "design_sos",
    "flat_channels",
    "measure_speed",
    "preprocess_recording",
    "resample_factor",
]

#: Q of the line-noise notches (bandwidth = frequency / Q, ~1.7 Hz at 50 Hz).
DEFAULT_NOTCH_Q = 30.0
#: Largest Butterworth order accepted (band-pass designs have twice as many poles).
MAX_FILTER_ORDER = 10
#: Anti-alias low-pass of the decimator: Chebyshev I, order 8, 0.05 dB ripple,
#: edge at 0.8 x the output Nyquist frequency (as :func:`scipy.signal.decimate`).
ANTIALIAS_ORDER = 8
ANTIALIAS_RIPPLE_DB = 0.05
ANTIALIAS_EDGE = 0.8
#: Channels whose training std is at or below this fraction of the largest std
#: (or exactly zero) are treated as flat: their std is stored as 1. The one threshold of
#: every scaler fit (:meth:`ChannelScaler.fit`, ``offline.training.loop.fit_scaler``).
FLAT_STD_FRACTION = 1e-6

_REFERENCE_KEYWORDS = ("average", "none")


# --------------------------------------------------------------------------- config
def _optional_float(name: str, value: Any) -> float | None:
    """None, or a finite positive float (:func:`~streams._checks.check_float` naming ``name``)."""
    return None if value is None else check_float(f"PreprocessConfig: {name}", value, positive=True)


def _check_reference(value: Any) -> str | tuple[str, ...]:
    """Normalise ``reference``: a keyword, or a tuple of distinct channel names."""
    if isinstance(value, str):
        if not value:
            raise ValueError("PreprocessConfig: reference='' is empty; use 'average', 'none' or channel name(s)")
        return value if value in _REFERENCE_KEYWORDS else (value,)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        names = tuple(value)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise TypeError(
                f"PreprocessConfig: reference={value!r} must be 'average', 'none' or non-empty channel name(s)"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"PreprocessConfig: reference={value!r} names a channel twice")
        return names
    raise TypeError(f"PreprocessConfig: reference={value!r} must be 'average', 'none' or channel name(s)")


@dataclass(frozen=True)
class PreprocessConfig:
    """What the online preprocessing does; stored in model checkpoints.

    Parameters
    ----------
    l_freq : float or None
        High-pass edge in Hz (None: no high-pass).
    h_freq : float or None
        Low-pass edge in Hz (None: no low-pass). Must exceed ``l_freq``.
    notch : tuple of float
        Line frequencies (Hz) to notch; empty for none.
    filter_order : int
        Butterworth order of the band filter (a band-pass has ``2 * order`` poles).
    reference : str or tuple of str
        ``"average"`` (common average), ``"none"``, or channel name(s) whose mean is
        subtracted from every channel. A single name is stored as a 1-tuple.
    resample_to : float or None
        Output rate; the input rate must be an integer multiple of it.
    baseline : tuple of (float, float) or None
        Per-window baseline interval in seconds from the window start, ``[start, stop)``;
        its per-channel mean is subtracted by :meth:`OnlinePreprocessor.apply_window`.
    notch_q : float
        Quality factor of each notch (bandwidth = frequency / Q).
    notch_harmonics : bool
        Also notch every harmonic of each ``notch`` frequency below the output Nyquist.
    """

    l_freq: float | None = 0.5
    h_freq: float | None = 40.0
    notch: tuple[float, ...] = (50.0,)
    filter_order: int = 4
    reference: str | tuple[str, ...] = "average"
    resample_to: float | None = None
    baseline: tuple[float, float] | None = None
    notch_q: float = DEFAULT_NOTCH_Q
    notch_harmonics: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once
        set_(self, "l_freq", _optional_float("l_freq", self.l_freq))
        set_(self, "h_freq", _optional_float("h_freq", self.h_freq))
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ValueError(
                f"PreprocessConfig: l_freq={self.l_freq!r} must be below h_freq={self.h_freq!r} "
                "(a band-stop is not supported; use notch for line noise)"
            )
        set_(self, "notch", self._checked_notch(self.notch))
        set_(self, "filter_order",
             check_int("PreprocessConfig: filter_order", self.filter_order, low=1, high=MAX_FILTER_ORDER))
        set_(self, "reference", _check_reference(self.reference))
        set_(self, "resample_to", _optional_float("resample_to", self.resample_to))
        set_(self, "baseline", self._checked_baseline(self.baseline))
        set_(self, "notch_q", check_float("PreprocessConfig: notch_q", self.notch_q, positive=True))
        set_(self, "notch_harmonics", check_bool("PreprocessConfig: notch_harmonics", self.notch_harmonics))

    @staticmethod
    def _checked_notch(value: Any) -> tuple[float, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise TypeError(f"PreprocessConfig: notch={value!r} must be a sequence of frequencies in Hz")
        freqs = {check_float("PreprocessConfig: notch", f, positive=True) for f in value}
        return tuple(sorted(freqs))

    @staticmethod
    def _checked_baseline(value: Any) -> tuple[float, float] | None:
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise TypeError(f"PreprocessConfig: baseline={value!r} must be None or (start, stop) in seconds")
        start = check_float("PreprocessConfig: baseline", value[0])
        stop = check_float("PreprocessConfig: baseline", value[1])
        if start < 0 or stop <= start:
            raise ValueError(
                f"PreprocessConfig: baseline={value!r} must satisfy 0 <= start < stop "
                "(seconds from the window start)"
            )
        return (start, stop)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict with every field (lists instead of tuples)."""
        return {
            "l_freq": self.l_freq,
            "h_freq": self.h_freq,
            "notch": list(self.notch),
            "filter_order": self.filter_order,
            "reference": self.reference if isinstance(self.reference, str) else list(self.reference),
            "resample_to": self.resample_to,
            "baseline": None if self.baseline is None else list(self.baseline),
            "notch_q": self.notch_q,
            "notch_harmonics": self.notch_harmonics,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults.

        Raises
        ------
        TypeError
            ``data`` is not a mapping, or a value has the wrong type (named).
        ValueError
            Unknown keys (listed with the known ones) or a bad value (named).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"PreprocessConfig.from_dict: expected a dict, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known), key=str)
        if unknown:
            raise ValueError(f"PreprocessConfig.from_dict: unknown key(s) {unknown}; known keys are {known}")
        kwargs = dict(data)
        for key in ("notch", "reference", "baseline"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


# --------------------------------------------------------------------------- design
def resample_factor(sfreq: float, resample_to: float | None) -> int:
    """Integer decimation factor from ``sfreq`` to ``resample_to`` (1 when None).

    Raises
    ------
    ValueError
        ``resample_to`` is above ``sfreq`` or does not divide it an integer number of times.
    """
    if resample_to is None:
        return 1
    ratio = sfreq / resample_to
    factor = int(round(ratio))
    if factor < 1 or abs(ratio - factor) > 1e-9 * ratio:
        raise ValueError(
            f"resample_to={resample_to!r}: the input rate sfreq={sfreq!r} must be an integer multiple of it "
            f"(ratio {ratio:.6g}); choose e.g. {_divisor_rates(sfreq)}"
        )
    return factor


def _divisor_rates(sfreq: float) -> str:
    """A few valid output rates for an error message."""
    rates = [sfreq / q for q in (2, 4, 5, 8, 10) if (sfreq / q) > 1]
    return ", ".join(f"{r:g}" for r in rates[:4]) or "None"


def _band_sos(l_freq: float | None, h_freq: float | None, order: int, sfreq: float) -> np.ndarray:
    """Butterworth band/high/low-pass SOS from mne's IIR design (causal use)."""
    if l_freq is None and h_freq is None:
        return np.zeros((0, 6))
    params = mne.filter.create_filter(
        None,
        sfreq,
        l_freq,
        h_freq,
        method="iir",
        iir_params=dict(order=order, ftype="butter", output="sos"),
        phase="forward",
        verbose=False,
    )
    return np.asarray(params["sos"], dtype=np.float64)


def _notch_freqs(config: PreprocessConfig, sfreq: float, limit: float) -> list[float]:
    """Notch frequencies to design: the configured ones, plus harmonics below ``limit`` if asked."""
    nyquist = sfreq / 2.0
    for f in config.notch:
        if f >= nyquist:
            raise ValueError(
                f"notch={config.notch!r}: {f:g} Hz is not below the Nyquist frequency {nyquist:g} Hz "
                f"of sfreq={sfreq!r}; remove it"
            )
    freqs = set(config.notch)
    if config.notch_harmonics:
        for f in config.notch:
            k = 2
            while k * f < limit:
                freqs.add(k * f)
                k += 1
    return sorted(freqs)


def _notch_sos(freqs: Sequence[float], q: float, sfreq: float) -> np.ndarray:
    """One second-order section per notch frequency."""
    rows = [ss.tf2sos(*ss.iirnotch(f, q, fs=sfreq)) for f in freqs]
    return np.vstack(rows) if rows else np.zeros((0, 6))


def _antialias_sos(factor: int) -> np.ndarray:
    """Anti-alias low-pass for decimation by ``factor`` (none when 1)."""
    if factor == 1:
        return np.zeros((0, 6))
    return ss.cheby1(ANTIALIAS_ORDER, ANTIALIAS_RIPPLE_DB, ANTIALIAS_EDGE / factor, output="sos")


def _check_edges(config: PreprocessConfig, sfreq: float, out_sfreq: float) -> None:
    """Band edges must lie below the output Nyquist frequency."""
    nyquist = out_sfreq / 2.0
    where = f"sfreq={sfreq!r}" if out_sfreq == sfreq else f"resample_to={config.resample_to!r}"
    for name in ("l_freq", "h_freq"):
        value = getattr(config, name)
        if value is not None and value >= nyquist:
            raise ValueError(
                f"{name}={value!r} Hz is not below the Nyquist frequency {nyquist:g} Hz of {where}; "
                f"lower {name} or raise the rate"
            )


def _check_stable(sos: np.ndarray, config: PreprocessConfig) -> None:
    """Every section's poles strictly inside the unit circle."""
    for section in sos:
        if np.any(np.abs(np.roots(section[3:])) >= 1.0):
            raise ValueError(
                f"the filter designed for {config!r} is numerically unstable; "
                "raise l_freq or lower filter_order"
            )


def design_sos(config: PreprocessConfig, sfreq: float) -> np.ndarray:
    """The single causal SOS cascade ``config`` gives at input rate ``sfreq``.

    Band filter sections first, then notches, then the anti-alias low-pass.

    Parameters
    ----------
    config : PreprocessConfig
        The preprocessing.
    sfreq : float
        Input sampling rate in Hz.

    Returns
    -------
    numpy.ndarray, shape (n_sections, 6), float64
        May have zero rows (nothing to filter).
    """
    sfreq = _check_sfreq(sfreq)
    factor = resample_factor(sfreq, config.resample_to)
    out_sfreq = sfreq / factor
    _check_edges(config, sfreq, out_sfreq)
    notches = _notch_freqs(config, sfreq, limit=out_sfreq / 2.0)
    sos = np.vstack([
        _band_sos(config.l_freq, config.h_freq, config.filter_order, sfreq),
        _notch_sos(notches, config.notch_q, sfreq),
        _antialias_sos(factor),
    ])
    _check_stable(sos, config)
    return np.ascontiguousarray(sos, dtype=np.float64)


def _check_sfreq(sfreq: Any) -> float:
    out = check_float("sfreq", sfreq, finite=False)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"sfreq={sfreq!r} must be a finite rate > 0 Hz (irregular streams cannot be filtered)")
    return out


# --------------------------------------------------------------------------- filtering kernel
def _public_sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> None:
    """In-place causal SOS filter of ``x`` (n_signals, n) with state ``zi`` (n_signals, n_sections, 2)."""
    y, zf = ss.sosfilt(sos, x, axis=-1, zi=np.moveaxis(zi, 1, 0))
    x[...] = y
    zi[...] = np.moveaxis(zf, 0, 1)


def _select_kernel() -> Any:
    """scipy's compiled SOS loop when it behaves exactly like :func:`scipy.signal.sosfilt`.

    ``scipy.signal.sosfilt`` spends ~60 us per call on validation and axis shuffling,
    which dominates for the 1- to 10-sample chunks of the acquisition path; it then
    calls ``scipy.signal._sosfilt._sosfilt`` (in place on C-contiguous float64 arrays
    of this exact layout). That private function is used when it imports and gives
    bit-identical results on a probe signal; otherwise the public function is.
    """
    try:
        from scipy.signal._sosfilt import _sosfilt
    except ImportError:  # pragma: no cover - depends on the scipy build
        return _public_sosfilt
    rng = np.random.default_rng(0)
    sos = ss.butter(2, [0.1, 0.3], "bandpass", output="sos")
    x = rng.standard_normal((3, 50))
    zi = rng.standard_normal((3, sos.shape[0], 2))
    x_pub, zi_pub = x.copy(), zi.copy()
    _public_sosfilt(sos, x_pub, zi_pub)
    try:
        _sosfilt(sos, x, zi)
    except Exception:  # pragma: no cover - private API changed
        return _public_sosfilt
    if np.array_equal(x, x_pub) and np.array_equal(zi, zi_pub):
        return _sosfilt
    return _public_sosfilt  # pragma: no cover


_KERNEL = _select_kernel()


def _finite_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of True in a 1-D boolean mask."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


# --------------------------------------------------------------------------- online preprocessor
class OnlinePreprocessor:
    """Stateful causal preprocessing of a continuous multichannel stream, chunk by chunk.

    Parameters
    ----------
    config : PreprocessConfig
        What to do.
    sfreq : float
        Input sampling rate in Hz.
    ch_names : list of str
        Input channel names (distinct), in column order.

    Attributes
    ----------
    out_sfreq : float
        Output rate (``sfreq`` unless resampling).
    decim : int
        Decimation factor (1 without resampling).
    n_samples_in : int
        Input samples consumed so far (sets the decimation phase).

    Notes
    -----
    Output is bit-identical for any chunking of the same input: the filter state
    (float64), the start-up rule and the decimation phase are carried sample-exactly.

    Raises
    ------
    ValueError
        Edges or notches not below the Nyquist frequency, non-integer resampling
        factor, unknown reference channel (named, with some available ones).
    """

    def __init__(self, config: PreprocessConfig, sfreq: float, ch_names: Sequence[str]) -> None:
        if not isinstance(config, PreprocessConfig):
            raise TypeError(f"config must be a PreprocessConfig, got {type(config).__name__}")
        self.config = config
        self.sfreq = _check_sfreq(sfreq)
        self.ch_names = self._checked_names(ch_names)
        self.n_channels = len(self.ch_names)
        self.decim = resample_factor(self.sfreq, config.resample_to)
        self.out_sfreq = self.sfreq / self.decim
        self._ref_index = self._reference_index(config.reference)
        self._sos = design_sos(config, self.sfreq)
        n_sections = self._sos.shape[0]
        # steady-state response of the cascade to a unit step, per section: (n_sections, 2)
        self._zi_unit = ss.sosfilt_zi(self._sos) if n_sections else np.zeros((0, 2))
        self._zi = np.zeros((self.n_channels, n_sections, 2))  # channel-major for the kernel
        self._needs_init = np.ones(self.n_channels, dtype=bool)
        self._any_needs_init = True
        self.n_samples_in = 0

    # ------------------------------------------------------------------ validation helpers
    @staticmethod
    def _checked_names(ch_names: Sequence[str]) -> list[str]:
        if isinstance(ch_names, str) or not isinstance(ch_names, Sequence):
            raise TypeError(f"ch_names must be a list of channel names, got {type(ch_names).__name__}")
        names = list(ch_names)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"ch_names={names[:5]!r}... must be a non-empty list of strings")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"ch_names has duplicate channel name(s) {dup[:5]}; names must be distinct")
        return names

    def _reference_index(self, reference: str | tuple[str, ...]) -> np.ndarray | None:
        """Column indices whose mean is subtracted (None: no re-reference)."""
        if reference == "none":
            return None
        if reference == "average":
            return np.arange(self.n_channels)
        missing = [name for name in reference if name not in self.ch_names]
        if missing:
            raise ValueError(
                f"reference={reference!r}: channel(s) {missing} not in the stream; "
                f"available channels include {self.ch_names[:8]} ({self.n_channels} in all)"
            )
        return np.array([self.ch_names.index(name) for name in reference])

    # ------------------------------------------------------------------ public
    @property
    def sos(self) -> np.ndarray:
        """Copy of the causal SOS cascade, shape (n_sections, 6), at the input rate."""
        return self._sos.copy()

    def frequency_response(self, freqs: np.ndarray | Sequence[float]) -> np.ndarray:
        """Complex response of the filter cascade at ``freqs`` (Hz, input rate)."""
        freqs = np.atleast_1d(np.asarray(freqs, dtype=np.float64))
        if not len(self._sos):
            return np.ones(freqs.shape, dtype=complex)
        _, h = ss.sosfreqz(self._sos, worN=freqs, fs=self.sfreq)
        return h

    def reset(self) -> None:
        """Forget the filter state (e.g. after a gap in the stream).

        The next finite sample of each channel restarts its filter in the steady
        state for a constant input equal to that sample (``sosfilt_zi * x0``) rather
        than from zero: with a high-pass and a DC offset of millivolts, a zero state
        would ring for seconds. The decimation phase is kept (it counts input samples
        since the first one, which is how the caller maps outputs to timestamps).
        """
        self._zi[...] = 0.0
        self._needs_init[:] = True
        self._any_needs_init = True

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Preprocess the next ``(n, n_channels)`` samples of the stream.

        Parameters
        ----------
        chunk : numpy.ndarray, shape (n, n_channels)
            Real-valued samples, time-major (float32 expected; any real dtype accepted).

        Returns
        -------
        numpy.ndarray, shape (m, n_channels), float32, C-contiguous
            ``m = n`` without resampling; otherwise the samples whose global input
            index ``i`` satisfies ``(i + 1) % decim == 0``.
        """
        x = self._checked_chunk(chunk)
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, self.n_channels), dtype=np.float32)
        finite = bool(np.isfinite(x).all())
        self._rereference(x, finite)
        xt = np.ascontiguousarray(x.T)  # (n_channels, n) for the kernel, filtered in place
        if finite:
            self._filter_finite(xt)
        else:
            self._filter_with_gaps(xt)
        first = (self.decim - 1 - self.n_samples_in) % self.decim
        self.n_samples_in += n
        kept = xt[:, first :: self.decim] if self.decim > 1 else xt
        return np.ascontiguousarray(kept.T, dtype=np.float32)

    def apply_window(self, window: np.ndarray) -> np.ndarray:
        """Per-window steps on ``(n_channels, n_times)`` (or a batch ``(n, n_channels, n_times)``).

        Subtracts each channel's mean over the configured baseline interval (nothing
        when ``config.baseline`` is None). Returns float32; the input is not modified.
        """
        out = _window_copy(window, self.n_channels)
        if self.config.baseline is None:
            return out
        start, stop = self._baseline_slice(out.shape[-1])
        out -= out[..., start:stop].mean(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
        return out

    # ------------------------------------------------------------------ internals
    def _checked_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Float64 copy of a valid chunk."""
        if not isinstance(chunk, np.ndarray):
            chunk = np.asarray(chunk)
        if chunk.dtype.kind not in "fiu":
            raise TypeError(f"chunk has dtype {chunk.dtype}; expected real-valued samples (float32)")
        if chunk.ndim != 2 or chunk.shape[1] != self.n_channels:
            raise ValueError(
                f"chunk of shape {chunk.shape} must be (n_samples, n_channels={self.n_channels}), time-major"
            )
        return np.array(chunk, dtype=np.float64, copy=True)

    def _rereference(self, x: np.ndarray, finite: bool) -> None:
        """Subtract the reference in place (time-major; the mean of each row of reference channels)."""
        if self._ref_index is None:
            return
        ref_data = x if len(self._ref_index) == self.n_channels else x[:, self._ref_index]
        ref = np.add.reduce(ref_data, axis=1, keepdims=True)  # = mean, without np.mean's Python overhead
        ref /= ref_data.shape[1]
        if not finite:
            self._finite_reference(ref_data, ref)
        x -= ref

    @staticmethod
    def _finite_reference(ref_data: np.ndarray, ref: np.ndarray) -> None:
        """Rows with non-finite reference values: mean of the finite ones (NaN if none)."""
        ok = np.isfinite(ref_data)
        bad_rows = np.flatnonzero(~ok.all(axis=1))
        sub, sub_ok = ref_data[bad_rows], ok[bad_rows]
        count = sub_ok.sum(axis=1)
        total = np.where(sub_ok, sub, 0.0).sum(axis=1)
        ref[bad_rows, 0] = np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def _init_state(self, channels: np.ndarray | slice, first: np.ndarray) -> None:
        """Steady state for a constant input equal to ``first`` on ``channels``."""
        self._zi[channels] = first[:, None, None] * self._zi_unit[None, :, :]

    def _filter_finite(self, xt: np.ndarray) -> None:
        """All samples finite: one vectorised kernel call over every channel."""
        if self._any_needs_init:
            idx = np.flatnonzero(self._needs_init)
            self._init_state(idx, xt[idx, 0])
            self._needs_init[:] = False
            self._any_needs_init = False
        if len(self._sos):
            _KERNEL(self._sos, xt, self._zi)

    def _filter_with_gaps(self, xt: np.ndarray) -> None:
        """Some samples non-finite: clean channels vectorised, the others run by run."""
        ok = np.isfinite(xt)
        clean = ok.all(axis=1)
        if clean.any():
            idx = np.flatnonzero(clean)
            sub, zi = np.ascontiguousarray(xt[idx]), np.ascontiguousarray(self._zi[idx])
            init = idx[self._needs_init[idx]]
            if len(init):
                pos = np.searchsorted(idx, init)
                zi[pos] = sub[pos, 0][:, None, None] * self._zi_unit[None, :, :]
                self._needs_init[init] = False
            if len(self._sos):
                _KERNEL(self._sos, sub, zi)
            xt[idx], self._zi[idx] = sub, zi
        for c in np.flatnonzero(~clean):
            self._filter_channel_runs(xt, int(c), ok[c])
        self._any_needs_init = bool(self._needs_init.any())

    def _filter_channel_runs(self, xt: np.ndarray, c: int, ok: np.ndarray) -> None:
        """Filter one channel's finite runs; its non-finite samples become NaN and re-arm the state."""
        row = xt[c]
        for start, stop in _finite_runs(ok):
            if self._needs_init[c] or start > 0:  # start > 0: a non-finite sample just before
                self._init_state(slice(c, c + 1), row[start : start + 1])
            seg = np.ascontiguousarray(row[start:stop][None, :])
            zi = np.ascontiguousarray(self._zi[c : c + 1])
            if len(self._sos):
                _KERNEL(self._sos, seg, zi)
            row[start:stop], self._zi[c : c + 1] = seg[0], zi
        row[~ok] = np.nan
        self._needs_init[c] = not ok[-1]

    def _baseline_slice(self, n_times: int) -> tuple[int, int]:
        """Sample range of the configured baseline interval in a window of ``n_times`` output samples."""
        b0, b1 = self.config.baseline or (0.0, 0.0)
        start = int(round(b0 * self.out_sfreq))
        stop = int(round(b1 * self.out_sfreq))
        if stop <= start or stop > n_times:
            raise ValueError(
                f"baseline={self.config.baseline!r} s covers samples [{start}, {stop}) at {self.out_sfreq:g} Hz, "
                f"which is empty or outside a window of {n_times} samples; shorten the baseline"
            )
        return start, stop


# --------------------------------------------------------------------------- offline path
def preprocess_recording(
    data: np.ndarray,
    sfreq: float,
    ch_names: Sequence[str],
    config: PreprocessConfig,
    chunk_size: int = 1000,
) -> np.ndarray:
    """Preprocess a whole recording with the same :class:`OnlinePreprocessor` as live use.

    Parameters
    ----------
    data : numpy.ndarray, shape (n_samples, n_channels)
        Time-major samples.
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str
        Channel names, in column order.
    config : PreprocessConfig
        The preprocessing.
    chunk_size : int
        Samples per call to :meth:`OnlinePreprocessor.process` (memory only: the
        output does not depend on it).

    Returns
    -------
    numpy.ndarray, shape (m, n_channels), float32
        Bit-identical to feeding ``data`` to a fresh preprocessor in any chunking.
    """
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    pre = OnlinePreprocessor(config, sfreq, ch_names)
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != pre.n_channels:
        raise ValueError(
            f"data of shape {data.shape} must be (n_samples, n_channels={pre.n_channels}), time-major"
        )
    parts = [pre.process(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]
    if not parts:
        return np.zeros((0, pre.n_channels), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def flat_channels(std: np.ndarray) -> np.ndarray:
    """Boolean mask of the flat channels: std at or below :data:`FLAT_STD_FRACTION` of the largest.

    Parameters
    ----------
    std : numpy.ndarray, (n_channels,)
        Per-channel standard deviations (finite, >= 0).

    Returns
    -------
    numpy.ndarray of bool, (n_channels,)
        True where the channel counts as flat (every channel when all stds are 0).
    """
    std = np.asarray(std)
    return std <= FLAT_STD_FRACTION * max(float(std.max()), 1e-300)

# --------------------------------------------------------------------------- scaler
@dataclass(eq=False)
class ChannelScaler:
    """Per-channel standardisation, fitted on training windows only.

    Parameters
    ----------
    mean, std : numpy.ndarray, shape (n_channels,), float32
        Statistics over all training windows and time points; ``std > 0``.
    """

    mean: np.ndarray = field(repr=False)
    std: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if mean.shape != std.shape or mean.size == 0:
            raise ValueError(
                f"ChannelScaler: mean ({mean.size} values) and std ({std.size} values) must be "
                "non-empty and of equal length"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all()) or np.any(std <= 0):
            raise ValueError("ChannelScaler: mean must be finite and std finite and > 0 for every channel")
        self.mean, self.std = mean, std

    @property
    def n_channels(self) -> int:
        """Number of channels the scaler was fitted on."""
        return int(self.mean.size)

    def __repr__(self) -> str:
        return f"ChannelScaler(n_channels={self.n_channels})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChannelScaler):
            return NotImplemented
        return np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)

    @classmethod
    def fit(cls, windows: np.ndarray, batch: int = 256) -> ChannelScaler:
        """Mean and std per channel over windows and time (two passes, float64).

        Parameters
        ----------
        windows : numpy.ndarray, shape (n_windows, n_channels, n_times)
            Training windows only (fitting on validation/test data leaks).
        batch : int
            Windows per pass step (bounds the temporary memory).

        Returns
        -------
        ChannelScaler
            Flat channels (std at or below ``FLAT_STD_FRACTION`` of the largest) get std 1.
        """
        w = np.asarray(windows)
        if w.ndim != 3 or min(w.shape) == 0:
            raise ValueError(f"windows of shape {w.shape} must be a non-empty (n_windows, n_channels, n_times)")
        if w.dtype.kind not in "fiu":
            raise TypeError(f"windows have dtype {w.dtype}; expected real-valued samples")
        count = w.shape[0] * w.shape[2]
        total = np.zeros(w.shape[1])
        for i in range(0, len(w), batch):
            total += w[i : i + batch].sum(axis=(0, 2), dtype=np.float64)
        mean = total / count
        if not np.isfinite(mean).all():
            raise ValueError("windows contain non-finite values; clean them before fitting the scaler")
        sq = np.zeros(w.shape[1])
        for i in range(0, len(w), batch):
            dev = w[i : i + batch].astype(np.float64) - mean[None, :, None]
            sq += np.einsum("nct,nct->c", dev, dev)
        std = np.sqrt(sq / count)
        std[flat_channels(std)] = 1.0
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def transform(self, window: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` per channel, on ``(n_channels, n_times)`` or ``(n, n_channels, n_times)``."""
        out = _window_copy(window, self.n_channels)
        out -= self.mean[:, None]
        out /= self.std[:, None]
        return out

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists (exact float32 values) for the checkpoint's ``config.json``."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelScaler:
        """Inverse of :meth:`to_dict`; validates keys and values."""
        if not isinstance(data, Mapping):
            raise TypeError(f"ChannelScaler.from_dict: expected a dict, got {type(data).__name__}")
        keys = set(data)
        if keys != {"mean", "std"}:
            raise ValueError(
                f"ChannelScaler.from_dict: keys {sorted(keys, key=str)} must be exactly ['mean', 'std']"
            )
        try:
            mean = np.asarray(data["mean"], dtype=np.float32)
            std = np.asarray(data["std"], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"ChannelScaler.from_dict: mean and std must be lists of numbers ({exc})") from exc
        if mean.ndim != 1 or std.ndim != 1:
            raise ValueError("ChannelScaler.from_dict: mean and std must be flat lists, one value per channel")
        return cls(mean=mean, std=std)


# --------------------------------------------------------------------------- speed
def measure_speed(
    chunk_sizes: Sequence[int] = (1, 10, 1000),
    *,
    n_channels: int = 128,
    sfreq: float = 1000.0,
    seconds: float = 20.0,
    config: PreprocessConfig | None = None,
    seed: int = 0,
) -> dict[int, float]:
    """Throughput of :meth:`OnlinePreprocessor.process`, in multiples of real time.

    Feeds ``seconds`` of random data per chunk size (default preprocessing: 0.5-40 Hz
    band-pass order 4, 50 Hz notch, average reference).

    Returns
    -------
    dict
        ``{chunk_size: x_real_time}``.
    """
    config = config or PreprocessConfig()
    names = [f"EEG{i:03d}" for i in range(n_channels)]
    n = int(seconds * sfreq)
    data = (np.random.default_rng(seed).standard_normal((n, n_channels)) * 1e-5).astype(np.float32)
    result = {}
    for size in chunk_sizes:
        pre = OnlinePreprocessor(config, sfreq, names)
        chunks = [data[i : i + size] for i in range(0, n, size)]
        t0 = time.perf_counter()
        for chunk in chunks:
            pre.process(chunk)
        result[int(size)] = seconds / (time.perf_counter() - t0)
    return result


def _window_copy(window: np.ndarray, n_channels: int) -> np.ndarray:
    """A float32 copy of a ``(n_channels, n_times)`` window or ``(n, n_channels, n_times)`` batch."""
    w = np.asarray(window)
    if w.ndim not in (2, 3) or w.shape[-2] != n_channels:
        raise ValueError(
            f"window of shape {w.shape} must be (n_channels={n_channels}, n_times) "
            "or (n_windows, n_channels, n_times)"
        )
    return w.astype(np.float32, copy=True)
