"""BAD annotations of an imported recording: the spans ``bci epochs`` leaves out, as gaps.

A recording imported from a BIDS dataset or an MNE-readable file (``bci import bids|raw``) carries
its annotations as markers, with their durations in the marker stream's ``durations`` attribute.
Those whose description starts with ``BAD`` (any case: mne's ``reject_by_annotation`` rule, e.g.
``BAD_muscle``, ``bad_blink``, the ``BAD_gap`` rows of ``bci export bids``; unmapped ones carry the
importer's ``event/`` prefix) mark bad data. :func:`bad_spans` turns each into the samples it
covers: from the sample at its onset (within half a sample) for its duration, at least that one
sample (mne rejects an epoch that contains a zero-length BAD annotation too). The epoch builder
leaves them out (:func:`bci.runtime.replay.decode_session`, ``leave_out``), so each is a gap: no
window spans it and every marker whose window touches it is a ``dropped`` record (reason ``gap``,
the detail naming the annotation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offline.importers.raw import UNMAPPED_PREFIX
from streams.session import SessionReader

__all__ = ["BAD_PREFIX", "BadSpan", "bad_spans", "is_bad_annotation"]

#: Annotations starting with this (case-insensitive) mark bad data, as in mne's ``reject_by_annotation``.
BAD_PREFIX = "BAD"


@dataclass(frozen=True)
class BadSpan:
    """The samples one BAD annotation covers (times of the first and last; ``n_samples`` of them)."""

    marker: str
    onset: float
    duration: float
    start_time: float
    end_time: float
    n_samples: int

    @property
    def reason(self) -> str:
        """The gap's reason: the annotation, its onset and duration."""
        return (f"annotation {self.marker!r} at {self.onset:.3f} s for {self.duration:.3f} s "
                f"({self.n_samples} samples left out: BAD_* marks bad data)")

    def to_dict(self) -> dict[str, float | int | str]:
        """For the dataset's provenance (``source["sessions"][i]["bad_annotations"]``)."""
        return {"marker": self.marker, "onset": self.onset, "duration": self.duration,
                "start_time": self.start_time, "end_time": self.end_time, "n_samples": self.n_samples}


def is_bad_annotation(marker: str) -> bool:
    """True for ``BAD_muscle``, ``bad blink``, ``event/BAD_gap`` (an unmapped import)."""
    text = marker[len(UNMAPPED_PREFIX):] if marker.startswith(UNMAPPED_PREFIX) else marker
    return text.upper().startswith(BAD_PREFIX)


def bad_spans(reader: SessionReader, marker_key: str, times: np.ndarray, sfreq: float) -> list[BadSpan]:
    """The BAD annotations of marker stream ``marker_key`` as spans of the data's samples ``times``.

    Parameters
    ----------
    reader : SessionReader
        The session.
    marker_key : str
        Its marker stream (durations from its ``durations`` attribute; 0 when there is none).
    times : numpy.ndarray
        The data stream's sample times (seconds, sorted).
    sfreq : float
        The data stream's rate (> 0).

    Returns
    -------
    list of BadSpan
        In marker order; annotations that cover no sample of the data are left out.
    """
    m_times, values = reader.markers(marker_key)
    durations = reader.stream_attrs(marker_key).get("durations")
    if not isinstance(durations, list) or len(durations) != len(m_times):
        durations = [0.0] * len(m_times)
    half = 0.5 / sfreq
    out = []
    for onset, value, duration in zip(m_times, values, durations):
        if not is_bad_annotation(str(value)):
            continue
        duration = max(float(duration or 0.0), 0.0)
        lo = int(np.searchsorted(times, onset - half, side="left"))
        hi = int(np.searchsorted(times, onset + duration - half, side="left"))
        if hi <= lo and lo < len(times) and times[lo] - onset <= half:
            hi = lo + 1  # zero or less than a sample long: the sample at its onset
        if hi <= lo:
            continue
        out.append(BadSpan(str(value), float(onset), duration, float(times[lo]), float(times[hi - 1]), hi - lo))
    return out
