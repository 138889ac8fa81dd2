"""The viewer's data model: the latest state, written by worker threads, read by the GUI.

Acquisition and decoding run on their own threads and only *publish* here: samples
stay in the ring buffers they already fill (:class:`TraceSource` just points at one),
result records are appended under a lock (:meth:`ViewerModel.add_record`). The GUI
polls the model at its frame rate and copies what it draws. Nothing here imports Qt,
and nothing the GUI does can block a writer for longer than one short critical section.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams._checks import check_int
from streams.ringbuffer import RingBuffer

#: Image kinds a record may carry under ``record["images"]`` (see docs/viewer.md).
IMAGE_KINDS = ("saliency", "diffusion", "reconstruction")


@dataclass(frozen=True)
class TraceSource:
    """A ring buffer of samples the viewer draws (raw or preprocessed).

    Parameters
    ----------
    buffer : RingBuffer
        Filled by another thread; read with :meth:`latest`.
    sfreq : float
        Sampling rate of the samples in ``buffer``.
    ch_names : tuple of str
        One name per column.
    label : str
        Shown in the GUI (``"raw"``, ``"preprocessed 0.5-40 Hz"``).
    """

    buffer: RingBuffer
    sfreq: float
    ch_names: tuple[str, ...]
    label: str = "raw"

    def latest(self, seconds: float) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the newest ``seconds`` of samples ``(n, n_channels)`` and their times ``(n,)``."""
        n = max(0, int(math.ceil(seconds * self.sfreq)))
        data, times = self.buffer.latest(n)
        return np.array(data, dtype=np.float32), np.array(times, dtype=np.float64)


@dataclass
class ResultEntry:
    """One decoded window as the viewer shows it (times on this computer's LSL clock)."""

    serial: int
    window_index: int | None
    kind: str
    marker: str | None
    image_id: str | None
    true_label: str | None
    marker_time: float | None
    start_time: float | None
    end_time: float | None
    latency_ms: float | None
    topk: list[dict[str, Any]]
    class_scores: list[dict[str, Any]]
    images: dict[str, str]
    device: str | None = None


@dataclass
class HitCounter:
    """Running top-1 / top-5 hit counts."""

    n: int = 0
    top1: int = 0
    top5: int = 0

    def add(self, rank: int | None) -> None:
        """Count one scored window whose true item came at ``rank`` (1-based; None: not in the list)."""
        self.n += 1
        self.top1 += int(rank == 1)
        self.top5 += int(rank is not None and rank <= 5)

    def text(self) -> str:
        """``"top-1 3/10 (30%)  top-5 7/10 (70%)"`` or ``"-"`` before the first window."""
        if self.n == 0:
            return "-"
        return (f"top-1 {self.top1}/{self.n} ({100 * self.top1 / self.n:.0f}%)  "
                f"top-5 {self.top5}/{self.n} ({100 * self.top5 / self.n:.0f}%)")


@dataclass
class ResultsSnapshot:
    """What the results panel draws: newest window first, plus counters."""

    version: int
    entries: list[ResultEntry]
    image_hits: HitCounter
    class_hits: HitCounter
    n_windows: int
    n_malformed: int
    last_malformed: str | None
    dropped: dict[str, int]
    record_markers: list[tuple[float, str]] = field(default_factory=list)


class MalformedRecord(ValueError):
    """A result record that is not valid JSON or lacks the fields the viewer reads."""


class ViewerModel:
    """Thread-safe latest state for the viewer.

    Parameters
    ----------
    history : int
        Decoded windows kept for display (newest first).
    latency_history : int
        Latencies kept for the p50/p99 statistics.
    clock : callable
        Monotonic seconds (for the latency history's time axis).
    """

    def __init__(self, *, history: int = 32, latency_history: int = 2000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        history = check_int("history", history, low=1)  # decoded windows kept for display
        self.raw: TraceSource | None = None
        self.processed: TraceSource | None = None
        self.markers: RingBuffer | None = None
        self.modality = "eeg"
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: deque[ResultEntry] = deque(maxlen=history)
        self._latencies: deque[tuple[float, float]] = deque(maxlen=latency_history)
        self._record_markers: deque[tuple[float, str]] = deque(maxlen=200)
        self._image_hits = HitCounter()
        self._class_hits = HitCounter()
        self._dropped: dict[str, int] = {}
        self._n_windows = 0
        self._n_malformed = 0
        self._last_malformed: str | None = None
        self._version = 0
        self._device: str | None = None

    # ------------------------------------------------------------------ writers (any thread)
    def add_result_text(self, text: str, stamp: float | None = None) -> bool:
        """Parse one JSON sample of a ``BCIResults`` stream and add it.

        Parameters
        ----------
        text : str
            The JSON string.
        stamp : float, optional
            Its LSL timestamp on this computer's clock; with the record's
            ``emitted_time`` it gives the offset between the runtime's clock and ours.

        Returns
        -------
        bool
            False when the text was malformed (skipped and counted, never raised).
        """
        try:
            record = json.loads(text)
        except (TypeError, ValueError) as exc:
            self._count_malformed(f"not JSON: {exc}")
            return False
        if not isinstance(record, dict):
            self._count_malformed(f"a JSON {type(record).__name__}, not an object")
            return False
        offset = 0.0
        emitted = record.get("emitted_time")
        if stamp is not None and _is_number(emitted) and emitted:
            offset = float(stamp) - float(emitted)
        return self.add_record(record, time_offset=offset)

    def add_record(self, record: Mapping[str, Any], *, time_offset: float = 0.0) -> bool:
        """Add one result record (a dict as the runtime's sinks receive it).

        ``time_offset`` is added to its times (the runtime's clock minus ours). Returns
        False when the record is malformed (skipped and counted).
        """
        try:
            kind = record.get("type") if isinstance(record, Mapping) else None
            if kind == "window":
                entry = _entry_from_record(record, time_offset)
                self._add_window(entry)
            elif kind == "dropped":
                self._add_dropped(record, time_offset)
            elif kind == "image":
                self._add_image(record)
            elif kind == "gap":  # a gap in the data (the traces show it); no result to list
                pass
            else:
                raise MalformedRecord(f"unknown record type {kind!r} (expected window, dropped, image or gap)")
        except (MalformedRecord, TypeError, ValueError) as exc:
            self._count_malformed(str(exc))
            return False
        return True

    def _count_malformed(self, why: str) -> None:
        with self._lock:
            self._n_malformed += 1
            self._last_malformed = why[:200]
            self._version += 1

    def _add_window(self, entry: ResultEntry) -> None:
        image_rank, class_rank = _ranks(entry)
        with self._lock:
            self._n_windows += 1
            entry.serial = self._n_windows
            self._entries.appendleft(entry)
            if entry.latency_ms is not None:
                self._latencies.append((self._clock(), entry.latency_ms))
            if entry.marker is not None and entry.marker_time is not None:
                self._record_markers.append((entry.marker_time, entry.marker))
            if image_rank is not False:
                self._image_hits.add(image_rank)
            if class_rank is not False:
                self._class_hits.add(class_rank)
            if entry.device:
                self._device = entry.device
            self._version += 1

    def _add_dropped(self, record: Mapping[str, Any], offset: float) -> None:
        reason = str(record.get("reason") or "unknown")
        marker, t = record.get("marker"), record.get("marker_time")
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1
            if isinstance(marker, str) and _is_number(t):
                self._record_markers.append((float(t) + offset, marker))
            self._version += 1

    def _add_image(self, record: Mapping[str, Any]) -> None:
        """A follow-up record (e.g. the diffusion image, made seconds later) for an earlier window."""
        index = record.get("window_index")
        images = _images_of(record)
        with self._lock:
            for entry in self._entries:
                if entry.window_index == index:
                    entry.images.update(images)
                    self._version += 1
                    return

    # ------------------------------------------------------------------ readers (GUI thread)
    @property
    def version(self) -> int:
        """Increases whenever the results change (the GUI redraws the panel only then)."""
        return self._version

    @property
    def device(self) -> str | None:
        """The decoding device reported by the records (None when they do not say)."""
        return self._device

    def results(self, limit: int | None = None) -> ResultsSnapshot:
        """A consistent copy of the results state (``limit`` newest windows)."""
        with self._lock:
            entries = list(self._entries)[:limit] if limit is not None else list(self._entries)
            return ResultsSnapshot(
                version=self._version,
                entries=[_copy_entry(e) for e in entries],
                image_hits=HitCounter(**vars(self._image_hits)),
                class_hits=HitCounter(**vars(self._class_hits)),
                n_windows=self._n_windows,
                n_malformed=self._n_malformed,
                last_malformed=self._last_malformed,
                dropped=dict(self._dropped),
                record_markers=list(self._record_markers),
            )

    def latency_percentiles(self, last: int = 100) -> tuple[float, float]:
        """p50 and p99 (ms) of the ``last`` latencies; NaN before the first window."""
        with self._lock:
            values = [v for _, v in list(self._latencies)[-last:]]
        if not values:
            return math.nan, math.nan
        arr = np.asarray(values)
        return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


# --------------------------------------------------------------------------- record parsing
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _opt_time(record: Mapping[str, Any], key: str, offset: float) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise MalformedRecord(f"{key}={value!r} is not a number")
    return float(value) + offset


def _opt_str(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise MalformedRecord(f"{key}={value!r} is not a string")
    return str(value)


def _scored_items(record: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """``topk`` / ``class_scores``: a list of ``{"id", "label", "score"}``."""
    items = record.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise MalformedRecord(f"{key} must be a list of {{id, label, score}}, got {type(items).__name__}")
    out = []
    for item in items:
        if not isinstance(item, Mapping) or "id" not in item:
            raise MalformedRecord(f"{key} item {item!r} must be an object with an id")
        score = item.get("score")
        out.append({
            "id": str(item["id"]),
            "label": str(item.get("label")) if item.get("label") is not None else "",
            "score": float(score) if _is_number(score) else None,
        })
    return out


def _images_of(record: Mapping[str, Any]) -> dict[str, str]:
    images = record.get("images")
    if images is None:
        return {}
    if not isinstance(images, Mapping):
        raise MalformedRecord(f"images must be an object {{kind: path or data URI}}, got {type(images).__name__}")
    return {str(k): v for k, v in images.items() if isinstance(v, str) and v}


def _entry_from_record(record: Mapping[str, Any], offset: float) -> ResultEntry:
    index = record.get("window_index")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        raise MalformedRecord(f"window_index={index!r} is not an integer")
    latency = record.get("latency_ms")
    return ResultEntry(
        serial=0,
        window_index=index,
        kind=str(record.get("window_kind") or "event"),
        marker=_opt_str(record, "marker"),
        image_id=_opt_str(record, "image_id"),
        true_label=_opt_str(record, "true_label"),
        marker_time=_opt_time(record, "marker_time", offset),
        start_time=_opt_time(record, "window_start_time", offset),
        end_time=_opt_time(record, "window_end_time", offset),
        latency_ms=float(latency) if _is_number(latency) else None,
        topk=_scored_items(record, "topk"),
        class_scores=_scored_items(record, "class_scores"),
        images=_images_of(record),
        device=_opt_str(record, "device"),
    )


def _rank_of(target: str | None, keys: list[str]) -> int | None | bool:
    """1-based rank of ``target`` in ``keys``; None if absent; False when there is nothing to score."""
    if not target or not keys:
        return False
    return keys.index(target) + 1 if target in keys else None


def _ranks(entry: ResultEntry) -> tuple[int | None | bool, int | None | bool]:
    """(image-level rank, class-level rank) of the true stimulus; False where unknown."""
    image_rank = _rank_of(entry.image_id, [t["id"] for t in entry.topk])
    items = entry.topk or entry.class_scores
    class_rank = _rank_of(entry.true_label, _dedupe([t["label"] for t in items]))
    return image_rank, class_rank


def _dedupe(labels: list[str]) -> list[str]:
    """Labels in order of first appearance (several retrieved images may share a class)."""
    seen: dict[str, None] = {}
    for label in labels:
        seen.setdefault(label, None)
    return list(seen)


def _copy_entry(entry: ResultEntry) -> ResultEntry:
    return ResultEntry(**{**vars(entry), "images": dict(entry.images)})
