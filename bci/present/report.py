"""What a presenter run did: one :class:`TrialLog` per trial, counts, the printed summary and the JSON log."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any



@dataclass
class TrialLog:
    """One trial as it happened.

    Attributes
    ----------
    index : int
        Trial number, from 0.
    image_id : str
    label : str or None
        From the gallery's ``labels.csv``.
    marker : str
        The marker string sent.
    marker_time : float or None
        LSL timestamp the marker was sent with (None: the run stopped before this trial).
    offset_time : float or None
        LSL time the blank frame after the stimulus was drawn.
    result : {"window", "dropped", "missed"} or None
        The runtime's answer (None: no results stream, or not shown).
    top1_id, top1_label : str or None
        The decoded top-1 image.
    hit : bool or None
        Top-1 right: same label when the trial's label is known, else same image id; None without a top-1.
    reason : str or None
        Why the runtime dropped the marker.
    late : bool
        A missed trial whose result came after the timeout (by the end of the run).
    """

    index: int
    image_id: str
    label: str | None
    marker: str
    marker_time: float | None = None
    offset_time: float | None = None
    result: str | None = None
    top1_id: str | None = None
    top1_label: str | None = None
    hit: bool | None = None
    reason: str | None = None
    late: bool = False

    def score(self) -> None:
        """Set :attr:`hit` from the top-1 (by label when known, else by image id)."""
        if self.top1_id is None and self.top1_label is None:
            self.hit = None
        elif self.label is not None:
            self.hit = self.top1_label == self.label
        else:
            self.hit = self.top1_id == self.image_id


@dataclass
class PresenterReport:
    """Everything a run did (what :func:`bci.present.run_presenter` returns)."""

    gallery: str
    markers_stream: str
    results_stream: str | None
    trials: list[TrialLog] = field(default_factory=list)
    consumers_at_start: bool | None = None
    aborted: bool = False

    @property
    def markers_sent(self) -> int:
        """Trials whose marker was sent."""
        return sum(t.marker_time is not None for t in self.trials)

    def count(self, result: str) -> int:
        """Trials whose :attr:`TrialLog.result` is ``result``."""
        return sum(t.result == result for t in self.trials)

    @property
    def late(self) -> int:
        """Missed trials whose result came after the timeout."""
        return sum(t.late for t in self.trials)

    @property
    def top1_hits(self) -> int:
        """Trials with a right top-1."""
        return sum(t.hit is True for t in self.trials)

    @property
    def scored(self) -> int:
        """Trials with a top-1 to score."""
        return sum(t.hit is not None for t in self.trials)

    def summary(self) -> str:
        """The lines ``bci present`` prints at the end."""
        shown = self.markers_sent
        lines = [f"trials: {shown} of {len(self.trials)} shown{' (stopped early)' if self.aborted else ''}; "
                 f"markers sent on {self.markers_stream!r}: {shown}"]
        if self.consumers_at_start is False:
            lines.append("warning: no consumer was connected to the marker stream at the first trial")
        if self.results_stream is not None:
            lines.append(f"results from {self.results_stream!r}: received {self.count('window')}, "
                         f"dropped by the runtime {self.count('dropped')}, missed (timeout) {self.count('missed')}"
                         + (f", of which {self.late} came later" if self.late else ""))
            if self.scored:
                lines.append(f"top-1 hits: {self.top1_hits} of {self.scored} "
                             f"({100.0 * self.top1_hits / self.scored:.1f}%)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The JSON log: the run's streams and counts, and every trial."""
        return {
            "gallery": self.gallery, "markers_stream": self.markers_stream, "results_stream": self.results_stream,
            "aborted": self.aborted, "consumers_at_start": self.consumers_at_start,
            "n_trials": len(self.trials), "markers_sent": self.markers_sent,
            "results_received": self.count("window"), "results_dropped": self.count("dropped"),
            "results_missed": self.count("missed"), "results_late": self.late,
            "top1_hits": self.top1_hits, "scored": self.scored,
            "trials": [asdict(t) for t in self.trials],
        }

    def write_log(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``; returns the path."""
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return out
