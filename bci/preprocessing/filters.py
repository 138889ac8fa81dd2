"""Filter design (band-pass, notches, anti-alias; :func:`design_sos`), the decimation factor, the filtering kernel.

Part of :mod:`bci.preprocessing` (see its docstring for the order of the steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import mne
import numpy as np
import scipy.signal as ss

from bci.preprocessing.config import ANTIALIAS_EDGE, ANTIALIAS_ORDER, ANTIALIAS_RIPPLE_DB, PreprocessConfig
from streams._checks import check_float

__all__ = ["design_sos", "resample_factor"]

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
