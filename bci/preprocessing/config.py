"""What the online preprocessing does: :class:`PreprocessConfig` (stored in model checkpoints) and its limits.

Part of :mod:`bci.preprocessing` (see its docstring for the order of the steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from streams._checks import check_bool, check_float, check_int

__all__ = ["ANTIALIAS_EDGE", "ANTIALIAS_ORDER", "ANTIALIAS_RIPPLE_DB", "DEFAULT_NOTCH_Q", "MAX_FILTER_ORDER",
           "PreprocessConfig"]

#: Q of the line-noise notches (bandwidth = frequency / Q, ~1.7 Hz at 50 Hz).
DEFAULT_NOTCH_Q = 30.0
#: Largest Butterworth order accepted (band-pass designs have twice as many poles).
MAX_FILTER_ORDER = 10
#: Anti-alias low-pass of the decimator: Chebyshev I, order 8, 0.05 dB ripple,
#: edge at 0.8 x the output Nyquist frequency (as :func:`scipy.signal.decimate`).
ANTIALIAS_ORDER = 8
ANTIALIAS_RIPPLE_DB = 0.05
ANTIALIAS_EDGE = 0.8

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
