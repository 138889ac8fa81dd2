"""Decode a recorded Zarr session (``bci replay --decode``): straight from Zarr, or replayed over LSL.

At ``speed=max``, :func:`decode_session` feeds the pipeline straight from the Zarr arrays
in the order a live run saw them (markers up to each chunk's last timestamp, then the
chunk), without LSL. At any other speed, :func:`replay_decode` plays the session back as
LSL streams and decodes them with a :class:`~bci.runtime.live.LiveRuntime`, as a live run would.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bci.runtime.assemble import DecodeOptions, warn_stderr, assemble
from bci.runtime.live import LiveRuntime
from bci.runtime.pipeline import Pipeline
from streams._checks import check_bool, check_float, check_type, ensure_path
from streams.integrity import skipped_summary
from streams.lsl import local_clock
from streams.session import SessionReader


@dataclass
class ReplayOptions:
    """A ``bci replay --decode`` run; checked when made.

    Parameters
    ----------
    session : path
        The Zarr session directory.
    decode : DecodeOptions
        Model, sinks and result steps.
    data_stream : str, optional
        The EEG/fMRI stream to decode (None: the first regular EEG/fMRI stream).
    speed : float
        Playback speed factor (> 0); ``inf`` (``--speed max``) decodes straight from Zarr, without LSL.
    suffix : str
        Appended to the replayed streams' names (default ``-replay``).
    skip_damaged : bool
        Decode around damaged chunks (each a gap: no window across it, its markers dropped with the
        reason) instead of stopping with :class:`~streams.errors.DamagedChunkError`.
    """

    session: str | os.PathLike
    decode: DecodeOptions
    data_stream: str | None = None
    speed: float = 1.0
    suffix: str = ""
    skip_damaged: bool = False

    def __post_init__(self) -> None:
        self.session = ensure_path("session", self.session)
        check_type("decode", self.decode, DecodeOptions)
        if self.data_stream is not None:
            check_type("data_stream", self.data_stream, str)
        self.speed = check_float("speed", self.speed, positive=True, finite=False)
        check_type("suffix", self.suffix, str)
        self.skip_damaged = check_bool("skip_damaged", self.skip_damaged)


def replay_decode(options: ReplayOptions, *, say: Callable[[str], None] = print,
                  warn: Callable[[str], None] = warn_stderr) -> Pipeline:
    """Decode a recording as ``options`` say; returns the (closed) pipeline, whose ``stats`` sum the run.

    Parameters
    ----------
    options : ReplayOptions
        The run.
    say : callable
        Progress lines (default: print).
    warn : callable
        What is skipped, e.g. a missing extra (default: stderr).
    """
    check_type("options", options, ReplayOptions)
    reader = SessionReader(options.session, skip_damaged=options.skip_damaged)
    data_key = reader.find(options.data_stream) if options.data_stream else data_key_of(reader)
    marker_keys = reader.marker_keys()
    marker_key = marker_keys[0] if marker_keys else None
    decoder = assemble(options.decode, warn=warn)
    if math.isinf(options.speed):
        pipeline = decoder.make_pipeline(reader.description(data_key))
        decode_session(reader, pipeline, data_key=data_key, marker_key=marker_key)
        pipeline.close()
        say(f"decoded {options.session} at --speed max (no LSL)")
        say(pipeline.stats.summary())
        skipped_summary(reader, [data_key] + ([marker_key] if marker_key else []), say)
        return pipeline
    from streams.replay import SessionReplayer

    keys = [data_key] + ([marker_key] if marker_key else [])
    replayer = SessionReplayer(reader, speed=options.speed, streams=keys, name_suffix=options.suffix or "-replay")
    replayer.open()
    names = [d.name for d in replayer.descs]
    runtime = LiveRuntime(f"name={names[0]}", f"name={names[1]}" if len(names) > 1 else None,
                          decoder.make_pipeline, dejitter=options.speed == 1.0)
    runtime.start()
    thread = threading.Thread(target=replayer.play, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
        runtime.run(0.5)  # let the last windows complete
    except KeyboardInterrupt:
        replayer.stop()
        runtime.stop()
    finally:
        replayer.close()
    say(runtime.pipeline.stats.summary())
    skipped_summary(reader, keys, say)
    return runtime.pipeline


def data_key_of(reader: SessionReader) -> str:
    """The key of the first regular EEG/fMRI stream of a session (:class:`ValueError` if none)."""
    for key in reader.streams:
        d = reader.description(key)
        if d.is_regular and d.type.lower() in ("eeg", "fmri"):
            return key
    raise ValueError(f"session {reader.path} has no regular EEG/fMRI stream; pass --data-stream NAME")


def decode_session(
    session: SessionReader,
    pipeline: Pipeline,
    *,
    data_key: str,
    marker_key: str | None,
    chunk_size: int | None = None,
    clock: Callable[[], float] = local_clock,
    leave_out: Sequence[tuple[float, float, str]] = (),
) -> None:
    """Feed a recorded session through ``pipeline`` as fast as possible (``--speed max``).

    Data are fed in ``chunk_size`` chunks (default: one second of samples; the
    results do not depend on it); before each chunk, every marker with a timestamp
    up to that chunk's last sample is fed, as a live run would have seen it. Each
    recorded gap of the data stream is passed on with :meth:`Pipeline.gap` just before
    its first sample after, where the live run that recorded it called it too.
    ``arrival`` is the time the chunk is handed over, so ``latency_ms`` measures
    processing time.

    Memory: the samples are read from the store :data:`READ_BLOCK_S` seconds at a time
    (:meth:`~streams.session.SessionReader.data_rows`), so a night's recording replays in
    the memory of a few minutes of it; the timestamps (8 bytes a sample) are read whole. A
    reader that skips damaged chunks reads the samples whole (the rows it keeps are only known
    then).

    ``leave_out`` spans ``(first_time, last_time, reason)`` (e.g. BAD annotations of an imported
    recording, :mod:`offline.data.bad_annotations`): their samples are not fed, and each run of
    left-out samples is a gap (last sample before, first after, the reasons of its spans), so no
    window spans it and a marker in it is dropped with reason ``gap`` naming it. With spans to leave
    out, the samples are read whole.
    """
    times = session.times(data_key)
    gaps = session.gaps(data_key)
    if leave_out:  # imported recordings with BAD spans: whole arrays, the kept rows known only then
        data, times, gaps = _leave_out(session.data(data_key), times, gaps, leave_out)
    else:
        data = _BlockReader(session, data_key, len(times))
    if chunk_size is None:
        chunk_size = max(1, int(round(session.description(data_key).nominal_rate)))
    if marker_key is not None:
        m_times, m_values = session.markers(marker_key)
    else:
        m_times, m_values = np.empty(0), np.empty(0, dtype=object)
    next_marker = 0
    gaps_at = _gap_indices(times, gaps)
    bounds = sorted(set(range(0, len(times), chunk_size)) | set(gaps_at))
    for start, stop in zip(bounds, bounds[1:] + [len(times)]):
        for gap in gaps_at.get(start, ()):
            pipeline.gap(gap["start_time"], gap["end_time"], gap["reason"])
        t_last = times[stop - 1]
        end_m = int(np.searchsorted(m_times, t_last, side="right"))
        if end_m > next_marker:
            pipeline.push_markers(list(m_values[next_marker:end_m]), m_times[next_marker:end_m], arrival=clock())
            next_marker = end_m
        pipeline.push_data(data[start:stop], times[start:stop], arrival=clock())
    if next_marker < len(m_times):
        pipeline.push_markers(list(m_values[next_marker:]), m_times[next_marker:], arrival=clock())
    pipeline.finish()


#: Seconds of samples :func:`decode_session` reads from the store at a time (60 s of 128 ch at 1 kHz: 31 MB).
READ_BLOCK_S = 60.0


class _BlockReader:
    """Rows of a session's data stream by slice, read from the store one block at a time."""

    def __init__(self, session: SessionReader, key: str, n: int) -> None:
        self._session, self._key, self._n = session, key, n
        rate = session.description(key).nominal_rate
        self._rows = max(1, round(min(n, READ_BLOCK_S * rate))) if rate > 0 else max(1, n)
        self._whole = session.data(key) if session.skip_damaged else None
        self._block = np.empty(0)
        self._start = self._stop = 0

    def __getitem__(self, index: slice) -> np.ndarray:
        if self._whole is not None:
            return self._whole[index]
        start, stop = index.start, index.stop
        if start < self._start or stop > self._stop:  # walked past the block: read the next one
            self._start, self._stop = start, min(self._n, max(stop, start + self._rows))
            self._block = self._session.data_rows(self._key, self._start, self._stop)
        return self._block[start - self._start:stop - self._start]


def _leave_out(data: np.ndarray, times: np.ndarray, gaps: list[dict], spans: Sequence[tuple[float, float, str]]
               ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The samples outside ``spans``, and the gaps with one more per run of left-out samples."""
    out = np.zeros(len(times), dtype=bool)
    hits = []
    for first, last, reason in spans:
        lo, hi = int(np.searchsorted(times, first, side="left")), int(np.searchsorted(times, last, side="right"))
        if hi > lo:
            out[lo:hi] = True
            hits.append((lo, hi, reason))
    if not hits:
        return data, times, gaps
    edges = np.flatnonzero(np.diff(np.concatenate([[0], out.view(np.int8), [0]])))
    added = []
    for lo, hi in zip(edges[::2], edges[1::2]):
        reasons = "; ".join(dict.fromkeys(r for a, b, r in hits if a < hi and b > lo))
        added.append({"start_time": float(times[lo - 1]) if lo > 0 else float("nan"),
                      "end_time": float(times[hi]) if hi < len(times) else float("nan"), "reason": reasons})
    keep = ~out
    return data[keep], times[keep], sorted([*gaps, *added], key=lambda g: g["end_time"] if math.isfinite(
        g["end_time"]) else math.inf)


def _gap_indices(times: np.ndarray, gaps: list[dict]) -> dict[int, list[dict]]:
    """Recorded gaps by the index of their first sample after (gaps with an unknown end are skipped)."""
    out: dict[int, list[dict]] = {}
    for gap in gaps:
        if not math.isfinite(gap["end_time"]):
            continue
        if math.isfinite(gap["start_time"]) and gap["end_time"] < gap["start_time"]:  # a clock jump backwards:
            # the times run backwards there, so find the pair of samples the gap lies between
            pair = np.flatnonzero((times[:-1] == gap["start_time"]) & (times[1:] == gap["end_time"]))
            at = int(pair[0]) + 1 if len(pair) else 0
        else:
            at = int(np.searchsorted(times, gap["end_time"], side="left"))
        if 0 < at < len(times):
            out.setdefault(at, []).append(gap)
    return out
