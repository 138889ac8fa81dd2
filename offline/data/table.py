"""The epoch table (per-epoch metadata without the signal) and the record of a split.

The bottom of :mod:`offline.data`: :mod:`offline.data.leaks` checks splits on an
:class:`EpochTable`, :mod:`offline.data.epochs` stores and reads them, and
:mod:`offline.data.splits` builds them and prepares them for training and evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EpochTable", "SplitInfo", "sha256_arrays", "split_hash"]


def sha256_arrays(*parts: bytes | np.ndarray | str) -> str:
    """SHA-256 (hex) of length-prefixed byte strings, arrays (their raw bytes) and UTF-8 strings."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str):
            p = p.encode("utf-8")
        elif isinstance(p, np.ndarray):
            p = np.ascontiguousarray(p).tobytes()
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def split_hash(parts: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a split's part names and (sorted) indices."""
    items: list[bytes | np.ndarray | str] = []
    for name in sorted(parts):
        items += [name, np.sort(np.asarray(parts[name], dtype="<i8"))]
    return sha256_arrays(*items)


# --------------------------------------------------------------------------- table
@dataclass(frozen=True, eq=False)
class EpochTable:
    """Per-epoch metadata without the signal: what splits and their checks look at.

    Attributes
    ----------
    labels, subject, session, block : numpy.ndarray, (n_epochs,) int64
    run : numpy.ndarray or None
    marker_time : numpy.ndarray or None
        Seconds (session clock) of each epoch's marker.
    class_names : list of str
    window_seconds : float
        Time span of one window (``n_times / sfreq``); windows of one session whose
        markers are closer than this overlap.
    """

    labels: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    block: np.ndarray
    run: np.ndarray | None
    marker_time: np.ndarray | None
    class_names: list[str]
    window_seconds: float

    @property
    def n_epochs(self) -> int:
        """Number of epochs."""
        return int(len(self.labels))


@dataclass(frozen=True)
class SplitInfo:
    """A split and its provenance: as stored in an epoch dataset and as recorded in checkpoints.

    Attributes
    ----------
    name : str
    kind : str or None
        What the split holds out (``"block"``, ``"zero_shot"``, ...); None when not recorded.
    parts : dict of str to numpy.ndarray
        Sorted epoch indices per part (e.g. ``train``, ``val``, ``test``).
    sha256 : str
        Hash of the part names and indices (:func:`split_hash`), as stored in the dataset.
    leaks : list of str
        Why the split leaks (empty for a clean split; only non-empty with ``allow_leak``).
    meta : dict
        Builder arguments (seed, fractions, held-out classes...).
    created : str
    dataset_fingerprint : str
        Fingerprint of the dataset it was prepared from (set by
        :func:`offline.data.splits.prepare_split`; empty in a stored record).
    """

    name: str
    kind: str | None
    parts: dict[str, np.ndarray]
    sha256: str
    leaks: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    dataset_fingerprint: str = ""

    @property
    def leaking(self) -> bool:
        """True when the split was stored with ``allow_leak=True`` despite leaks."""
        return bool(self.leaks)

    @property
    def checkpoint_hash(self) -> str:
        """The split's hash as checkpoints and reports record it: the first 16 hex digits of :attr:`sha256`."""
        return self.sha256[:16]

    def record(self) -> dict[str, Any]:
        """JSON summary for checkpoints and reports."""
        return {
            "name": self.name,
            "kind": self.kind,
            "hash": self.checkpoint_hash,
            "dataset_fingerprint": self.dataset_fingerprint,
            "sizes": {k: int(len(v)) for k, v in self.parts.items()},
        }
