"""Decoded results for the presenter: a ``BCIResults`` stream read on a background thread, matched to trials.

``bci live`` publishes one JSON record per marker (``docs/runtime.md``, *Outputs*): a
``window`` record with ``marker``, ``marker_time`` and ``topk``, or a ``dropped`` record
with a ``reason``. A record belongs to a trial when its ``marker`` is the trial's marker
string and its ``marker_time``, moved to this computer's clock, is within
:data:`MATCH_TOLERANCE_S` of the time the marker was sent with. The clock offset is the
record's LSL timestamp (clock-corrected by the inlet) minus its ``emitted_time``, as in
the viewer, so a runtime on another computer works too.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams._checks import check_float
from streams._context import ClosingContext
from streams.acquisition import StreamReceiver
from streams.description import StreamDescription

#: Largest difference (s) between a record's ``marker_time`` and the sent marker's timestamp.
MATCH_TOLERANCE_S = 0.05
#: Unmatched records kept (older ones are forgotten and counted).
_KEEP = 1000


@dataclass(frozen=True)
class TrialResult:
    """The runtime's answer to one trial.

    Attributes
    ----------
    kind : {"window", "dropped"}
        A decoded window, or a marker the runtime could not serve.
    top1_id, top1_label : str or None
        The best gallery match (None without ``topk``, e.g. ``bci live`` run without ``--gallery``).
    reason : str or None
        Why a ``dropped`` marker was dropped (``gap``, ``stale``, ...).
    record : dict
        The record as received.
    """

    kind: str
    top1_id: str | None
    top1_label: str | None
    reason: str | None
    record: dict[str, Any] = field(repr=False)


class ResultsListener(ClosingContext):
    """Receive a ``BCIResults`` stream and hand out each trial's record (:meth:`find`, :meth:`wait_for`).

    Parameters
    ----------
    query : str
        The results stream (name, or ``type=BCIResults``).
    resolve_timeout : float
        Seconds to find it (:meth:`start` raises :class:`~streams.errors.StreamNotFoundError` after that).
    tolerance : float
        See :data:`MATCH_TOLERANCE_S`.
    """

    def __init__(self, query: str, *, resolve_timeout: float = 5.0, tolerance: float = MATCH_TOLERANCE_S) -> None:
        self.tolerance = check_float("tolerance", tolerance, positive=True)
        self.receiver = StreamReceiver(query, resolve_timeout=resolve_timeout, buffer_seconds=30.0)
        self._pending: deque[tuple[dict[str, Any], float]] = deque()
        self._cond = threading.Condition()
        self.n_records = 0
        self.n_malformed = 0
        self.n_forgotten = 0

    def start(self) -> StreamDescription:
        """Resolve the stream, check it carries strings, and start receiving."""
        desc = self.receiver.open()
        if not desc.is_string:
            self.receiver.stop()
            raise ValueError(f"results stream {desc.name!r} has type {desc.type!r} and format {desc.dtype}; "
                             "pass the string stream of type BCIResults that bci live publishes")
        self.receiver.add_chunk_listener(self._on_chunk)
        self.receiver.start()
        return desc

    def find(self, marker: str, marker_time: float) -> TrialResult | None:
        """The record of the trial whose marker ``marker`` was sent at ``marker_time`` (LSL clock), if it came.

        A record handed out is removed; records of other markers stay for later calls.
        """
        with self._cond:
            return self._take(marker, marker_time)

    def wait_for(self, marker: str, marker_time: float, timeout: float) -> TrialResult | None:
        """As :meth:`find`, waiting up to ``timeout`` seconds; None when nothing came."""
        timeout = check_float("timeout", timeout, low=0.0)
        with self._cond:
            found: list[TrialResult | None] = [None]

            def ready() -> bool:
                found[0] = self._take(marker, marker_time)
                return found[0] is not None

            self._cond.wait_for(ready, timeout)
            return found[0]

    @property
    def error(self) -> BaseException | None:
        """The receiver's error, if it stopped with one (e.g. the stream was lost for good)."""
        return self.receiver.error

    def close(self) -> None:
        """Stop receiving."""
        self.receiver.stop()

    # ------------------------------------------------------------------ internals
    def _on_chunk(self, data: np.ndarray, times: np.ndarray) -> None:
        with self._cond:
            for row, stamp in zip(data, times, strict=True):
                self._add(str(row[0]), float(stamp))
            self._cond.notify_all()

    def _add(self, text: str, stamp: float) -> None:
        try:
            record = json.loads(text)
        except ValueError:
            self.n_malformed += 1
            return
        if not isinstance(record, dict):
            self.n_malformed += 1
            return
        self.n_records += 1
        if record.get("type") not in ("window", "dropped"):
            return  # header / follow-up image records: not a trial's answer
        emitted = record.get("emitted_time")
        offset = stamp - float(emitted) if _is_number(emitted) and emitted else 0.0
        if len(self._pending) == _KEEP:
            self._pending.popleft()
            self.n_forgotten += 1
        self._pending.append((record, offset))

    def _take(self, marker: str, marker_time: float) -> TrialResult | None:
        for k, (record, offset) in enumerate(self._pending):
            t = record.get("marker_time")
            if record.get("marker") == marker and _is_number(t) and abs(t + offset - marker_time) <= self.tolerance:
                del self._pending[k]
                return _result(record)
        return None


def _result(record: dict[str, Any]) -> TrialResult:
    top1_id = top1_label = None
    topk = record.get("topk")
    if isinstance(topk, list) and topk and isinstance(topk[0], dict):
        top1_id = _str_or_none(topk[0].get("id"))
        top1_label = _str_or_none(topk[0].get("label"))
    reason = _str_or_none(record.get("reason")) if record.get("type") == "dropped" else None
    return TrialResult(str(record["type"]), top1_id, top1_label, reason, record)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
