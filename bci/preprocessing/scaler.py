"""Per-channel standardisation fitted on training windows (:class:`ChannelScaler`) and the one flat-channel rule.

Part of :mod:`bci.preprocessing` (see its docstring for the order of the steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


__all__ = ["ChannelScaler", "FLAT_STD_FRACTION", "flat_channels"]

#: Channels whose training std is at or below this fraction of the largest std
#: (or exactly zero) are treated as flat: their std is stored as 1. The one threshold of
#: every scaler fit (:meth:`ChannelScaler.fit`, ``offline.training.loop.fit_scaler``).
FLAT_STD_FRACTION = 1e-6


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


def _window_copy(window: np.ndarray, n_channels: int) -> np.ndarray:
    """A float32 copy of a ``(n_channels, n_times)`` window or ``(n, n_channels, n_times)`` batch."""
    w = np.asarray(window)
    if w.ndim not in (2, 3) or w.shape[-2] != n_channels:
        raise ValueError(
            f"window of shape {w.shape} must be (n_channels={n_channels}, n_times) "
            "or (n_windows, n_channels, n_times)"
        )
    return w.astype(np.float32, copy=True)
