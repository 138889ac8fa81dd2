"""Zarr v3 sessions: one store per recording, one group per stream.

A session is a directory store written by :class:`SessionWriter` and read by
:class:`SessionReader`. Layout (see ``docs/zarr-session.md`` for every array and
attribute)::

    session.zarr/                 root group, attrs: schema, schema_version, streams, complete, ...
      streams/
        <key>/                    attrs: stream (StreamDescription dict), gaps, nonfinite_samples, ...
          data  (n_samples, n_channels)   stream dtype (variable-length UTF-8 for strings)
          time  (n_samples,)              float64 seconds, fill value NaN

Crash safety: the writer buffers ~1 s per stream and appends one block at a time
in this order: grow ``data``, write its chunks, grow ``time``, write its chunks.
Every file is replaced atomically by zarr's local store, so a writer killed at any
point leaves ``data`` at least as long as the valid part of ``time``. The reader
uses ``min(len(data), len(time))`` and, for a session that was not closed
cleanly, also stops at the first NaN of ``time`` (the fill value of a block whose
shape was grown but whose chunks were not written yet). At most the last buffered
second (plus the block in flight) is lost.
"""

from __future__ import annotations

import logging
import math
import os
import time as _time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import zarr
import zarr.errors
from zarr.storage import LocalStore

from streams._checks import check_bool, check_int
from streams._chunks import (DamagedChunk, checksum_codecs, has_checksums, missing_chunks, read_block, read_rows,
                             scan_rows)
from streams._context import ClosingContext
from streams._keys import sanitize_key
from streams.clock import parse_clock_jump
from streams._store import jsonable, now, remove_existing, store_header
from streams.description import StreamDescription
from streams.errors import (DamagedChunkError, OutputExistsError, SessionFormatError, SessionWriteError,
                            StreamNotFoundError, write_failure_text)

if TYPE_CHECKING:  # pragma: no cover
    import mne

logger = logging.getLogger(__name__)

#: Schema name stored in the root attribute ``schema``.
SCHEMA_NAME = "bci-runtime.session"
#: Schema version stored in the root attribute ``schema_version``; readers refuse newer ones.
SCHEMA_VERSION = 1

#: Chunk rows of irregular streams (markers, annotations).
IRREGULAR_CHUNK_ROWS = 256
#: Smallest chunk of a regular stream (slow streams such as fMRI at 0.5 Hz).
MIN_CHUNK_ROWS = 64

#: How new arrays store chunks: zstd then a crc32c checksum, and every chunk written (an all-fill-value
#: chunk too), so a missing chunk file is always damage. Older stores (no checksum) keep reading as before.
_CHUNK_ENCODING: dict[str, Any] = {"compressors": checksum_codecs(), "config": {"write_empty_chunks": True}}

_ROOT_RESERVED = frozenset(
    {"schema", "schema_version", "created", "closed", "writer", "zarr_version", "complete", "streams", "write_error"}
)
_STREAM_RESERVED = frozenset({"stream", "index", "gaps", "nonfinite_samples", "n_samples", "flush_rows"})

#: mne channel types a description's channel type may map to (others become 'misc').
_MNE_TYPES = frozenset(
    {"eeg", "eog", "ecg", "emg", "misc", "stim", "resp", "bio", "seeg", "dbs", "ecog", "gsr", "temperature"}
)
#: Montages tried for EEG channel positions, in order (the deprecated standard_* only on older mne).
_MONTAGES = ("biosemi128", "standard_1020", "colin27_1020", "standard_1005", "colin27_1005")
#: Scale factors from a channel unit to volts.
_TO_VOLTS = {"v": 1.0, "volt": 1.0, "volts": 1.0, "mv": 1e-3, "millivolts": 1e-3, "uv": 1e-6,
             "µv": 1e-6, "μv": 1e-6, "microvolts": 1e-6, "nv": 1e-9, "nanovolts": 1e-9}


def _json_attrs(attrs: dict[str, Any], reserved: frozenset[str], where: str) -> dict[str, Any]:
    bad = sorted(set(attrs) & reserved)
    if bad:
        raise ValueError(f"{where}: attribute names {bad} are reserved by the session schema; rename them")
    return {str(k): jsonable(v, f"{where} attribute {k!r}") for k, v in attrs.items()}


@dataclass
class _WriteStream:
    """Writer-side state of one stream: arrays, buffer, counters."""

    key: str
    desc: StreamDescription
    group: Any
    data: Any
    time: Any
    flush_rows: int | None  # regular streams: flush at multiples of this many rows; None: irregular
    buf_data: list[np.ndarray] = field(default_factory=list)
    buf_times: list[np.ndarray] = field(default_factory=list)
    n_buffered: int = 0
    n_written: int = 0
    buffered_since: float = 0.0  # time.monotonic() of the oldest buffered sample
    nonfinite: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    failed: bool = False  # a block could not be written: nothing more is written to this stream


class SessionWriter(ClosingContext):
    """Write streams into a new Zarr v3 session, appending ~1 s blocks.

    Parameters
    ----------
    path : str or os.PathLike
        Directory store to create.
    overwrite : bool
        Replace ``path`` if it exists (a non-empty directory that is not a Zarr
        store is never deleted). Without it an existing path raises
        :class:`~streams.errors.OutputExistsError`.
    flush_seconds : float
        Buffered duration after which a block is appended (and the most a
        ``kill -9`` loses).
    attrs : dict, optional
        User attributes stored at the root (JSON types).

    Notes
    -----
    Not thread-safe: call it from one thread (the recorder drains its ring
    buffers into it from its main loop).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        flush_seconds: float = 1.0,
        attrs: dict | None = None,
    ) -> None:
        flush_seconds = float(flush_seconds)
        if not (math.isfinite(flush_seconds) and flush_seconds > 0):
            raise ValueError(f"flush_seconds={flush_seconds!r} must be a positive number of seconds")
        user = _json_attrs(dict(attrs or {}), _ROOT_RESERVED, "SessionWriter(attrs=...)")
        self._path = Path(path)
        if self._path.exists() or self._path.is_symlink():
            if not overwrite:
                raise OutputExistsError(
                    f"{str(self._path)!r} already exists; choose a new path or pass overwrite=True "
                    "(--overwrite on the CLI)"
                )
            remove_existing(self._path)
        self.flush_seconds = flush_seconds
        self._streams: dict[str, _WriteStream] = {}
        self._closed = False
        #: The first write failure (disk full, file size limit...); the session is then closed incomplete.
        self.error: SessionWriteError | None = None
        root_attrs = {
            **store_header(SCHEMA_NAME, SCHEMA_VERSION),
            "streams": [],
            **user,
        }
        self._root = zarr.create_group(store=LocalStore(self._path), zarr_format=3, attributes=root_attrs)
        self._streams_group = self._root.create_group("streams")

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> Path:
        """The session directory."""
        return self._path

    @property
    def keys(self) -> list[str]:
        """Stream keys in the order they were added."""
        return list(self._streams)

    def n_samples(self, key: str) -> int:
        """Samples appended to stream ``key`` so far (written plus buffered)."""
        s = self._stream(key)
        return s.n_written + s.n_buffered

    # ------------------------------------------------------------------ streams
    def add_stream(self, desc: StreamDescription, *, key: str | None = None) -> str:
        """Create the group, ``data`` and ``time`` arrays of a new stream.

        Parameters
        ----------
        desc : StreamDescription
            What the stream is; stored as the ``stream`` attribute.
        key : str, optional
            Group name; default the sanitized ``desc.name``. Made unique with a
            ``-2``, ``-3``... suffix if taken.

        Returns
        -------
        str
            The key to pass to :meth:`append`.
        """
        self._check_open()
        if not isinstance(desc, StreamDescription):
            raise TypeError(f"desc must be a StreamDescription, got {type(desc).__name__}")
        key = self._unique_key(sanitize_key(desc.name if key is None else str(key)))
        if desc.is_regular:
            flush_rows = max(1, math.ceil(desc.nominal_rate * self.flush_seconds - 1e-9))
            chunk_rows = max(MIN_CHUNK_ROWS, flush_rows)
        else:
            flush_rows, chunk_rows = None, IRREGULAR_CHUNK_ROWS
        group = self._streams_group.create_group(
            key,
            attributes={
                "stream": desc.to_dict(),
                "index": len(self._streams),
                "gaps": [],
                "nonfinite_samples": 0,
                "flush_rows": flush_rows,
            },
        )
        data = _create_array(group, "data", (0, desc.n_channels), (chunk_rows, desc.n_channels), desc)
        times = group.create_array(
            "time", shape=(0,), chunks=(chunk_rows,), dtype="float64", fill_value=np.nan,
            dimension_names=("time",), **_CHUNK_ENCODING,
        )
        self._streams[key] = _WriteStream(key, desc, group, data, times, flush_rows)
        self._root.attrs.update({"streams": list(self._streams)})
        return key

    def append(self, key: str, data: np.ndarray, times: np.ndarray) -> None:
        """Buffer samples; append a block to disk once ~``flush_seconds`` are buffered.

        Parameters
        ----------
        key : str
            Stream key from :meth:`add_stream`.
        data : array, shape (n, n_channels)
            Samples (``(n,)`` is accepted for single-channel streams). Numeric
            data is cast to the stream dtype if that is a same-kind cast; string
            streams take str values. NaN/inf are written as they are and counted.
        times : array, shape (n,)
            Finite timestamps in seconds.
        """
        self._check_open()
        s = self._stream(key)
        if s.failed:
            raise self.error
        block, t = _validate_block(s, data, times)
        if len(t):
            if s.n_buffered == 0:
                s.buffered_since = _time.monotonic()
            s.buf_data.append(block)
            s.buf_times.append(t)
            s.n_buffered += len(t)
        now = _time.monotonic()
        for other in self._streams.values():
            if other.n_buffered and not other.failed and self._due(other, now):
                self._flush_stream(other, aligned=other.flush_rows is not None)

    def add_gap(self, key: str, start_time: float, end_time: float, reason: str) -> None:
        """Record an interruption of stream ``key`` (written at once).

        Parameters
        ----------
        start_time, end_time : float
            Last sample before and first sample after the gap (seconds); a
            non-finite value (unknown) is stored as null and read back as NaN. Only a
            clock jump (:func:`streams.clock.parse_clock_jump`) may end before it starts.
        reason : str
            Why the data is missing.
        """
        self._check_open()
        s = self._stream(key)
        start, end = float(start_time), float(end_time)
        if math.isfinite(start) and math.isfinite(end) and end < start and parse_clock_jump(reason) is None:
            raise ValueError(f"stream {key!r}: gap end_time={end} is before start_time={start}")
        if not isinstance(reason, str):
            raise TypeError(f"stream {key!r}: gap reason must be a str, got {type(reason).__name__}")
        s.gaps.append(jsonable({"start_time": start, "end_time": end, "reason": reason}, "gap"))
        s.group.attrs.update({"gaps": s.gaps})

    def set_attrs(self, key: str | None = None, **attrs: Any) -> None:
        """Set user attributes at the root (``key=None``) or on stream ``key``."""
        self._check_open()
        if key is None:
            self._root.attrs.update(_json_attrs(attrs, _ROOT_RESERVED, "session root"))
        else:
            self._stream(key).group.attrs.update(_json_attrs(attrs, _STREAM_RESERVED, f"stream {key!r}"))

    # ------------------------------------------------------------------ life cycle
    def flush(self) -> None:
        """Write every buffered sample now (of the streams whose writes have not failed)."""
        self._check_open()
        for s in self._streams.values():
            if s.n_buffered and not s.failed:
                self._flush_stream(s, aligned=False)

    def close(self) -> None:
        """Flush, write ``n_samples`` per stream and mark the session complete (idempotent).

        After a write failure (:attr:`error`) the other streams are still flushed where the disk
        allows, and the session is marked ``complete: false`` with the failure in ``write_error``.
        """
        if self._closed:
            return
        try:
            if self.error is None:
                self.flush()
            else:
                self._close_failed()
                return
            for s in self._streams.values():
                s.group.attrs.update({"n_samples": s.n_written, "nonfinite_samples": s.nonfinite})
            self._root.attrs.update({"complete": True, "closed": now()})
        finally:
            self._closed = True

    def _close_failed(self) -> None:
        """Best effort after a write failure: flush the streams that still can, mark the session incomplete."""
        for s in self._streams.values():
            if s.n_buffered and not s.failed:
                try:
                    self._flush_stream(s, aligned=False)
                except SessionWriteError:
                    logger.error("%s: buffered samples of stream %r could not be written", self._path, s.key)
        try:
            for s in self._streams.values():
                s.group.attrs.update({"n_samples": s.n_written, "nonfinite_samples": s.nonfinite})
            self._root.attrs.update({"complete": False, "closed": now(), "write_error": str(self.error)})
        except OSError as exc:
            logger.error("%s: could not mark the session incomplete (%s); readers see it unclosed", self._path, exc)

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"session writer for {str(self._path)!r} is closed")

    def _stream(self, key: str) -> _WriteStream:
        try:
            return self._streams[key]
        except KeyError:
            raise KeyError(
                f"no stream {key!r} in session {str(self._path)!r}; keys: {list(self._streams)}"
            ) from None

    def _unique_key(self, base: str) -> str:
        key, i = base, 2
        while key in self._streams:
            key, i = f"{base}-{i}", i + 1
        return key

    def _due(self, s: _WriteStream, now: float) -> bool:
        if s.flush_rows is not None:
            return (s.n_written + s.n_buffered) // s.flush_rows > s.n_written // s.flush_rows
        if s.n_buffered >= IRREGULAR_CHUNK_ROWS or now - s.buffered_since >= self.flush_seconds:
            return True
        span = float(s.buf_times[-1][-1] - s.buf_times[0][0])
        return span >= self.flush_seconds

    def _flush_stream(self, s: _WriteStream, *, aligned: bool) -> None:
        """Append the buffer (regular + aligned: up to the last multiple of flush_rows)."""
        data = np.concatenate(s.buf_data) if len(s.buf_data) > 1 else s.buf_data[0]
        times = np.concatenate(s.buf_times) if len(s.buf_times) > 1 else s.buf_times[0]
        n = len(times)
        if aligned:
            total = s.n_written + n
            n = total - total % s.flush_rows - s.n_written
        self._write_block(s, data[:n], times[:n])
        rest_d, rest_t = data[n:], times[n:]
        s.buf_data, s.buf_times = ([rest_d], [rest_t]) if len(rest_t) else ([], [])
        s.n_buffered = len(rest_t)
        s.buffered_since = _time.monotonic()

    def _write_block(self, s: _WriteStream, data: np.ndarray, times: np.ndarray) -> None:
        """Append one block in the crash-safe order: data shape, data, time shape, time."""
        n0, n1 = s.n_written, s.n_written + len(times)
        if n1 == n0:
            return
        try:
            s.data.resize((n1, s.desc.n_channels))
            s.data[n0:n1] = data
            s.time.resize((n1,))
            s.time[n0:n1] = times
        except OSError as exc:
            raise self._write_failed(s, n0, n1, exc) from None
        s.n_written = n1
        bad = _count_nonfinite(data)
        if bad:
            if s.nonfinite == 0:
                logger.warning("stream %r: samples with NaN/inf values (written as they are, counted)", s.key)
            s.nonfinite += bad
            s.group.attrs.update({"nonfinite_samples": s.nonfinite})


    def _write_failed(self, s: _WriteStream, n0: int, n1: int, exc: OSError) -> SessionWriteError:
        """Mark stream ``s`` failed; the error names the stream, the cause and what the session keeps."""
        why = write_failure_text(exc)
        kept = f"{n0} samples" + (f" ({n0 / s.desc.nominal_rate:.1f} s)" if s.desc.is_regular else "")
        error = SessionWriteError(
            f"stream {s.desc.name!r}: {why} while writing samples {n0}-{n1} to {str(self._path)!r} "
            f"[{exc.__class__.__name__} {exc.errno}: {exc.strerror or exc}]; the session keeps the {kept} written "
            "before and is marked incomplete (complete: false, write_error); free space or raise the limit, then "
            "record to a new path"
        )
        s.failed = True
        if self.error is None:
            self.error = error
        return error


def _create_array(group: Any, name: str, shape: tuple[int, int], chunks: tuple[int, int],
                  desc: StreamDescription) -> Any:
    """Create the ``data`` array; strings use zarr's variable-length UTF-8 type."""
    if not desc.is_string:
        return group.create_array(name, shape=shape, chunks=chunks, dtype=desc.numpy_dtype,
                                  dimension_names=("time", "channel"), **_CHUNK_ENCODING)
    with warnings.catch_warnings():
        # Some zarr 3.x releases flag variable-length strings as having no stable v3
        # spec yet (UnstableSpecificationWarning); the format is what zarr-python reads back.
        warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
        return group.create_array(name, shape=shape, chunks=chunks, dtype=str,
                                  dimension_names=("time", "channel"), **_CHUNK_ENCODING)


def _validate_block(s: _WriteStream, data: Any, times: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check and copy one appended block; clear errors name the stream and the shapes."""
    desc = s.desc
    arr = np.asarray(data, dtype=object if desc.is_string else None)
    if arr.size == 0 and np.size(times) == 0:
        arr = arr.reshape(0, desc.n_channels)
    if arr.ndim == 1 and desc.n_channels == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != desc.n_channels:
        raise ValueError(
            f"stream {s.key!r}: data has shape {arr.shape}, expected (n_samples, {desc.n_channels})"
        )
    t = np.asarray(times)
    if t.dtype.kind not in "iuf":
        raise TypeError(f"stream {s.key!r}: times must be numbers (seconds), got dtype {t.dtype}")
    t = np.array(t, dtype=np.float64)
    if t.ndim != 1 or len(t) != len(arr):
        raise ValueError(
            f"stream {s.key!r}: times has shape {t.shape} but data has {arr.shape[0]} samples; "
            "pass one timestamp per sample"
        )
    if not np.isfinite(t).all():
        raise ValueError(f"stream {s.key!r}: times contain NaN/inf; every sample needs a finite timestamp")
    return (_as_strings(s.key, arr) if desc.is_string else _as_numeric(s.key, arr, desc.numpy_dtype)), t


def _as_strings(key: str, arr: np.ndarray) -> np.ndarray:
    out = np.empty(arr.shape, dtype=object)
    for idx, v in np.ndenumerate(arr):
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if not isinstance(v, str):
            raise TypeError(
                f"stream {key!r} is a string stream; got a value {v!r} of type {type(v).__name__}"
            )
        out[idx] = str(v)
    return out


def _as_numeric(key: str, arr: np.ndarray, target: np.dtype) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"stream {key!r} holds {target}; got data of dtype {arr.dtype}")
    if not np.can_cast(arr.dtype, target, casting="same_kind"):
        raise TypeError(
            f"stream {key!r} holds {target}; data of dtype {arr.dtype} cannot be cast to it without "
            "changing its kind (e.g. float to int); convert explicitly"
        )
    if target.kind in "iu" and arr.size and arr.dtype != target:
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise ValueError(f"stream {key!r}: values in [{lo}, {hi}] do not fit {target}")
    return np.ascontiguousarray(arr.astype(target, copy=True))


def _count_nonfinite(data: np.ndarray) -> int:
    """Samples (rows) with at least one NaN/inf value."""
    if data.dtype.kind not in "fc" or data.size == 0:
        return 0
    return int(np.count_nonzero(~np.isfinite(data).all(axis=1)))


# ====================================================================== reading


@dataclass(frozen=True)
class DamagedRange:
    """Samples of one stream that cannot be read: one damaged chunk of its ``data`` or ``time`` array.

    Attributes
    ----------
    stream : str
        The stream's key.
    array : str
        ``"data"`` or ``"time"``.
    chunk : int
        The chunk's index along the samples.
    start, stop : int
        Its samples, ``start`` included, ``stop`` excluded.
    start_time, end_time : float
        The recorded times of its first and last sample; NaN where the ``time`` array is
        damaged there too (then :attr:`before` and :attr:`after` bound it).
    before, after : float
        Time of the last readable sample before and the first after (NaN at either end of the stream).
    problem : str
        What went wrong (checksum mismatch, zstd error, missing file).
    """

    stream: str
    array: str
    chunk: int
    start: int
    stop: int
    start_time: float
    end_time: float
    before: float
    after: float
    problem: str

    @property
    def n_samples(self) -> int:
        """Samples in the range."""
        return self.stop - self.start

    def time_text(self) -> str:
        """``"7.000-7.999 s"``, or ``"time unknown (between 6.999 and 8.000 s)"`` when the times are damaged too."""
        if math.isfinite(self.start_time) and math.isfinite(self.end_time):
            return f"{self.start_time:.3f}-{self.end_time:.3f} s"
        bounds = [f"{t:.3f}" for t in (self.before, self.after) if math.isfinite(t)]
        return "time unknown" + (f" (between {' and '.join(bounds)} s)" if len(bounds) == 2 else
                                 f" (after {bounds[0]} s)" if bounds and math.isfinite(self.before) else
                                 f" (before {bounds[0]} s)" if bounds else "")

    def describe(self) -> str:
        """One line: stream, array, chunk, samples, time range and problem."""
        return (f"stream {self.stream!r} {self.array!r} chunk {self.chunk} (samples {self.start}-{self.stop - 1}, "
                f"{self.time_text()}): {self.problem}")


@dataclass
class _ReadStream:
    key: str
    desc: StreamDescription
    group: Any
    data: Any
    time: Any
    n: int
    times: np.ndarray | None = None  # all n rows; NaN where the time array is damaged
    time_damage: list[DamagedChunk] | None = None  # None: not read yet
    data_damage: list[DamagedChunk] | None = None


def _expected() -> str:
    return f"expected a Zarr session of schema {SCHEMA_NAME!r} version <= {SCHEMA_VERSION}"


class SessionReader:
    """Open a session read-only, validate it and read its streams.

    Parameters
    ----------
    path : str or os.PathLike
        Session directory written by :class:`SessionWriter`.
    skip_damaged : bool
        What a damaged chunk (checksum mismatch, zstd error, truncated or missing file) does.
        False (default): :meth:`data` and :meth:`times` raise :class:`~streams.errors.DamagedChunkError`
        naming the stream, chunk, samples and times. True: they leave the damaged samples out (of
        both, so they stay aligned) and :meth:`gaps` lists each damaged range as a gap whose reason
        starts with ``"damaged chunk"``; :meth:`damaged` lists the ranges.

    Raises
    ------
    SessionFormatError
        Not a Zarr store, not a session, a newer schema, or a stream without its
        ``data``/``time`` array or ``stream`` attribute. The message names the
        path, what is missing and the schema version expected.

    Notes
    -----
    A session that was not closed cleanly (``complete`` is False) may have
    ``data`` and ``time`` of different lengths or a NaN tail in ``time``: the
    reader truncates to the valid common length and lists what it dropped in
    :attr:`notes`. That is expected after a crash and not an error.
    """

    def __init__(self, path: str | os.PathLike, *, skip_damaged: bool = False) -> None:
        self.skip_damaged = check_bool("skip_damaged", skip_damaged)
        self._path = Path(path)
        self._root = _open_root(self._path)
        self._attrs = dict(self._root.attrs)
        _check_schema(self._attrs, self._path)
        #: What was truncated while opening (after a crash); empty for a clean session.
        self.notes: list[str] = []
        self._streams = {key: self._open_stream(key) for key in self._stream_keys()}

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> Path:
        """The session directory."""
        return self._path

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes (schema, schema_version, created, writer, user attributes...)."""
        return dict(self._attrs)

    @property
    def complete(self) -> bool:
        """True when the writer was closed cleanly."""
        return self._attrs.get("complete") is True

    @property
    def write_error(self) -> str | None:
        """Why the writer stopped early (disk full, file size limit...), or None."""
        error = self._attrs.get("write_error")
        return None if error is None else str(error)

    @property
    def streams(self) -> list[str]:
        """Stream keys in the order they were added."""
        return list(self._streams)

    # ------------------------------------------------------------------ per stream
    def description(self, key: str) -> StreamDescription:
        """The :class:`StreamDescription` of stream ``key``."""
        return self._stream(key).desc

    def n_samples(self, key: str) -> int:
        """Number of valid samples of stream ``key``."""
        return self._stream(key).n

    def stream_attrs(self, key: str) -> dict[str, Any]:
        """All attributes of stream ``key``'s group (user attributes included)."""
        return dict(self._stream(key).group.attrs)

    def data(self, key: str) -> np.ndarray:
        """Samples of stream ``key``, shape ``(n, n_channels)`` (object dtype for strings).

        Raises
        ------
        DamagedChunkError
            A chunk of the stream cannot be read (without ``skip_damaged``; with it, its samples are left out).
        """
        s = self._stream(key)
        out = self._read_data(s)
        if s.data_damage or self.skip_damaged and self._time_damage(s):
            out = out[self._keep(s)]
        return out.astype(object) if s.desc.is_string else out

    def data_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of stream ``key``'s samples, read from the store (only those chunks).

        For consumers that walk a long session block by block in constant memory
        (:func:`bci.runtime.replay.decode_session`). Indices are those of :meth:`data` in a
        session read without ``skip_damaged`` (this reader must not skip damaged chunks: their
        rows would not line up).

        Raises
        ------
        DamagedChunkError
            A chunk among those rows cannot be read (or its file is missing where every chunk was written).
        ValueError
            ``0 <= start <= stop <= n_samples(key)`` does not hold, or the reader skips damaged chunks.
        """
        s = self._stream(key)
        start, stop = check_int("start", start, low=0), check_int("stop", stop, low=0)
        if not start <= stop <= s.n:
            raise ValueError(f"rows [{start}, {stop}) of stream {key!r}: need 0 <= start <= stop <= {s.n}")
        if self.skip_damaged:
            raise ValueError("data_rows() reads rows as stored; open the session without skip_damaged, or use data()")
        values, damage = read_block(s.data, start, stop, s.n, missing_is_damage=has_checksums(s.data))
        if damage:
            raise self._error(s, damage)
        return values.astype(object) if s.desc.is_string else values

    def times(self, key: str) -> np.ndarray:
        """Timestamps of stream ``key`` in seconds, shape ``(n,)`` float64.

        Raises
        ------
        DamagedChunkError
            As :meth:`data`.
        """
        s = self._stream(key)
        times = self._all_times(s)
        if self.skip_damaged:
            if s.data_damage is None:  # the data's damage leaves samples out of the times too
                s.data_damage = scan_rows(s.data, s.n, missing_is_damage=has_checksums(s.data))
            if s.data_damage or s.time_damage:
                return times[self._keep(s)]
        return times.copy()

    def gaps(self, key: str) -> list[dict[str, Any]]:
        """Gaps of stream ``key``: dicts with start_time, end_time (NaN if unknown), reason.

        The recorded gaps, and with ``skip_damaged`` one per damaged range (start_time: the last
        readable sample before it, end_time: the first after; reason ``"damaged chunk: ..."``),
        in time order.
        """
        out = []
        gaps = self._stream(key).group.attrs.get("gaps", [])
        where = f"{str(self._path)!r}: stream {key!r}: attribute 'gaps'"
        if not isinstance(gaps, list):
            raise SessionFormatError(f"{where} must be a list of gap records, got {gaps!r:.80}; {_expected()}")
        for i, g in enumerate(gaps):
            try:
                out.append({
                    "start_time": float("nan") if g.get("start_time") is None else float(g["start_time"]),
                    "end_time": float("nan") if g.get("end_time") is None else float(g["end_time"]),
                    "reason": str(g.get("reason", "")),
                })
            except (AttributeError, TypeError, ValueError):
                raise SessionFormatError(f"{where}[{i}] = {g!r:.80} is not a record {{start_time, end_time, "
                                         f"reason}} with numbers or null for the times; {_expected()}") from None
        if self.skip_damaged:
            out += [{"start_time": r.before, "end_time": r.after, "reason": f"damaged chunk: {r.describe()}"}
                    for r in self.damaged(key)]
            out.sort(key=lambda g: g["end_time"] if math.isfinite(g["end_time"]) else math.inf)
        return out

    def damaged(self, key: str, progress: Callable[[int], None] | None = None) -> list[DamagedRange]:
        """Every damaged chunk of stream ``key``, in sample order (reads each chunk once, then remembers).

        Parameters
        ----------
        key : str
            The stream.
        progress : callable, optional
            Called with the number of values (rows x channels) read after each block of chunks.
        """
        s = self._stream(key)
        times = self._all_times(s, strict=False)
        if progress is not None:
            progress(s.n)
        if s.data_damage is None:
            width = max(1, s.desc.n_channels)
            checked = has_checksums(s.data)
            s.data_damage = scan_rows(s.data, s.n, missing_is_damage=checked,
                                      progress=None if progress is None else lambda rows: progress(rows * width))
            if not checked:  # an older writer left out chunks holding only the fill value: maybe genuine
                self.notes += [f"stream {key!r} 'data' chunk {m.chunk} (samples {m.start}-{m.stop - 1}): chunk file "
                               f"missing, reads as {s.data.fill_value!r}; this store has no checksums and its writer "
                               "left out chunks holding only that value, so it may be genuine"
                               for m in missing_chunks(s.data, s.n)]
        elif progress is not None:
            progress(s.n * max(1, s.desc.n_channels))
        chunks = sorted((s.data_damage or []) + (s.time_damage or []), key=lambda d: (d.start, d.array))
        return [self._range(s, d, times) for d in chunks]

    def n_chunks(self, key: str) -> int:
        """Chunks holding the valid samples of stream ``key`` (its ``data`` and ``time`` arrays together)."""
        s = self._stream(key)
        return sum(-(-s.n // a.chunks[0]) for a in (s.data, s.time))

    def has_checksums(self, key: str) -> bool:
        """True if both arrays of stream ``key`` store a crc32c checksum with every chunk (newer writers)."""
        s = self._stream(key)
        return has_checksums(s.data) and has_checksums(s.time)

    def find(self, name_or_type: str) -> str:
        """Key of one stream, by key, by name, or by ``"type=EEG"`` / ``"name=X,source_id=Y"``.

        Raises
        ------
        StreamNotFoundError
            No stream or several streams match; the message lists the available streams.
        """
        q = str(name_or_type)
        if q in self._streams:
            return q
        if "=" in q:
            matches = self._match_pairs(q)
        else:
            matches = [k for k, s in self._streams.items() if s.desc.name == q]
        if len(matches) == 1:
            return matches[0]
        what = "no stream matches" if not matches else f"{len(matches)} streams match"
        raise StreamNotFoundError(
            f"{what} {q!r} in session {str(self._path)!r}. Available streams:\n{self._listing()}\n"
            "Select one by key, by name, or with key=value pairs (key, name, type, source_id)."
        )

    def marker_keys(self) -> list[str]:
        """Keys of marker streams (string streams or type ``Markers``)."""
        return [k for k, s in self._streams.items() if s.desc.is_string or s.desc.type.lower() == "markers"]

    def markers(self, key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Marker times (float64) and values (str, first channel).

        Parameters
        ----------
        key : str, optional
            Marker stream (anything :meth:`find` accepts); default the first marker stream.
        """
        if key is None:
            keys = self.marker_keys()
            if not keys:
                raise StreamNotFoundError(
                    f"session {str(self._path)!r} has no marker stream. Available streams:\n{self._listing()}"
                )
            key = keys[0]
        else:
            key = self.find(key)
        values = self.data(key)[:, 0]
        if not self._streams[key].desc.is_string:
            values = np.array([_number_text(v) for v in values], dtype=object)
        return self.times(key), values.astype(object)

    def to_raw(self, key: str | None = None, markers: str | None = "auto") -> mne.io.RawArray:
        """A regular stream as an :class:`mne.io.RawArray` (data in volts), markers as annotations.

        Parameters
        ----------
        key : str, optional
            Stream (anything :meth:`find` accepts); default the first stream of type EEG.
        markers : str or None
            ``"auto"``: every marker stream; ``None``: no annotations; otherwise
            one marker stream (by key/name/query). Annotation onsets are marker
            time minus the first sample's time; markers outside the data are left out.

        Returns
        -------
        mne.io.RawArray
            Channel names and types from the description (unknown types become
            ``misc``), ``sfreq`` the nominal rate, a montage when every EEG channel
            name is in ``biosemi128`` or a 10-20/10-05 montage; ``meas_date`` None.
        """
        import mne

        key = self._eeg_key() if key is None else self.find(key)
        desc = self.description(key)
        if not desc.is_regular or desc.is_string:
            raise ValueError(
                f"stream {key!r} is {'a string' if desc.is_string else 'an irregular'} stream; "
                "to_raw needs a regular numeric stream (nominal_rate > 0)"
            )
        if self.n_samples(key) == 0:
            raise ValueError(f"stream {key!r} of session {str(self._path)!r} has no samples; nothing to convert")
        scale = np.array([_TO_VOLTS.get(u.strip().lower(), 1.0) for u in desc.channel_units])
        data = self.data(key).T.astype(np.float64) * scale[:, None]
        ch_types = [t.lower() if t.lower() in _MNE_TYPES else "misc" for t in desc.channel_types]
        info = mne.create_info(list(desc.channel_names), desc.nominal_rate, ch_types, verbose=False)
        raw = mne.io.RawArray(data, info, verbose=False)
        _set_montage(raw, desc, ch_types)
        if markers is not None:
            marker_keys = self.marker_keys() if markers == "auto" else [self.find(markers)]
            self._annotate(raw, key, [k for k in marker_keys if k != key])
        return raw

    # ------------------------------------------------------------------ internals
    def _stream(self, key: str) -> _ReadStream:
        try:
            return self._streams[key]
        except KeyError:
            raise StreamNotFoundError(
                f"no stream with key {key!r} in session {str(self._path)!r}. Available streams:\n"
                f"{self._listing()}"
            ) from None

    def _listing(self) -> str:
        lines = []
        for k, s in self._streams.items():
            d = s.desc
            rate = f"{d.nominal_rate:g} Hz" if d.is_regular else "irregular"
            lines.append(f"  {k}: name={d.name!r} type={d.type!r} source_id={d.source_id!r} "
                         f"{d.n_channels} ch {rate} {d.dtype}")
        return "\n".join(lines) or "  (none)"

    def _match_pairs(self, q: str) -> list[str]:
        fields = {}
        for part in q.split(","):
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            if not sep or name not in ("key", "name", "type", "source_id"):
                raise ValueError(
                    f"stream selector {q!r}: {part!r} is not key=value with key one of key, name, type, source_id"
                )
            fields[name] = value.strip()
        out = []
        for k, s in self._streams.items():
            got = {"key": k, "name": s.desc.name, "type": s.desc.type, "source_id": s.desc.source_id}
            if all(got[f] == v or (f == "type" and got[f].lower() == v.lower()) for f, v in fields.items()):
                out.append(k)
        return out

    def _eeg_key(self) -> str:
        for k, s in self._streams.items():
            if s.desc.type.lower() == "eeg":
                return k
        raise StreamNotFoundError(
            f"session {str(self._path)!r} has no stream of type EEG; pass key=. Available streams:\n"
            f"{self._listing()}"
        )

    def _annotate(self, raw: Any, key: str, marker_keys: list[str]) -> None:
        import mne

        t0 = float(self.times(key)[0]) if self.n_samples(key) else 0.0
        last = (raw.n_times - 1) / raw.info["sfreq"]
        onsets: list[np.ndarray] = []
        texts: list[np.ndarray] = []
        for mk in marker_keys:
            t, values = self.markers(mk)
            onset = t - t0
            keep = (onset >= 0) & (onset <= last)
            if not keep.all():
                logger.info("%s: %d marker(s) outside the data of %r left out of the annotations",
                            mk, int((~keep).sum()), key)
            onsets.append(onset[keep])
            texts.append(values[keep])
        if onsets and sum(len(o) for o in onsets):
            onset = np.concatenate(onsets)
            order = np.argsort(onset, kind="stable")
            desc = np.concatenate(texts)[order].astype(str)
            raw.set_annotations(mne.Annotations(onset[order], np.zeros(len(onset)), desc, orig_time=None))

    def _stream_keys(self) -> list[str]:
        keys = self._attrs.get("streams")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise SessionFormatError(
                f"{str(self._path)!r}: root attribute 'streams' (list of stream keys) is missing or invalid "
                f"(got {keys!r}); {_expected()}"
            )
        return keys

    def _open_stream(self, key: str) -> _ReadStream:
        where = f"{str(self._path)!r}: stream group 'streams/{key}'"
        try:
            group = self._root[f"streams/{key}"]
        except (KeyError, FileNotFoundError, zarr.errors.BaseZarrError):
            raise SessionFormatError(
                f"{where} is missing (listed in root attribute 'streams'); {_expected()}"
            ) from None
        if not isinstance(group, zarr.Group):
            raise SessionFormatError(f"{where} is not a group; {_expected()}")
        arrays = {}
        for name in ("data", "time"):
            try:
                arrays[name] = group[name]
            except (KeyError, FileNotFoundError, zarr.errors.BaseZarrError):
                raise SessionFormatError(f"{where} has no {name!r} array; {_expected()}") from None
            if not isinstance(arrays[name], zarr.Array):
                raise SessionFormatError(f"{where}: {name!r} is not an array; {_expected()}")
        attrs = dict(group.attrs)
        if "stream" not in attrs:
            raise SessionFormatError(f"{where} has no 'stream' attribute (the stream description); {_expected()}")
        try:
            desc = StreamDescription.from_dict(attrs["stream"])
        except (ValueError, TypeError, AttributeError) as e:
            raise SessionFormatError(f"{where}: invalid 'stream' attribute: {e}; {_expected()}") from None
        data, time = arrays["data"], arrays["time"]
        if data.ndim != 2 or data.shape[1] != desc.n_channels or time.ndim != 1:
            raise SessionFormatError(
                f"{where}: 'data' has shape {data.shape} and 'time' {time.shape}; expected (n, "
                f"{desc.n_channels}) and (n,); {_expected()}"
            )
        s = _ReadStream(key, desc, group, data, time, min(data.shape[0], time.shape[0]))
        self._check_length(s)
        return s

    def _check_length(self, s: _ReadStream) -> None:
        """Truncate a crashed writer's stream to the length where data and time are both valid."""
        n_data, n_time = s.data.shape[0], s.time.shape[0]
        if n_data != n_time:
            self._note(f"stream {s.key!r}: 'data' has {n_data} rows and 'time' {n_time}; "
                       f"using the common {s.n}")
        if self.complete:
            return
        t, damage = read_rows(s.time, s.n, missing_is_damage=False)
        t = np.asarray(t, dtype=np.float64)
        unwritten = np.isnan(t)
        for d in damage:  # a chunk that cannot be decoded is damage, not the end of the writing
            unwritten[d.start:d.stop] = False
        bad = np.flatnonzero(unwritten)
        if len(bad):
            self._note(f"stream {s.key!r}: 'time' is unwritten (NaN) from row {bad[0]} of {s.n}; "
                       f"keeping {bad[0]} samples")
            s.n = int(bad[0])
            t = t[: s.n]
        s.times = t
        s.time_damage = [d for d in damage if d.start < s.n]

    # ------------------------------------------------------------------ damaged chunks
    def _read_data(self, s: _ReadStream) -> np.ndarray:
        """All ``s.n`` rows of ``data`` (fill value in damaged chunks); raises on damage unless skipping."""
        out, damage = read_rows(s.data, s.n, missing_is_damage=has_checksums(s.data))
        s.data_damage = damage
        if damage and not self.skip_damaged:
            raise self._error(s, damage)
        return out

    def _time_damage(self, s: _ReadStream) -> list[DamagedChunk]:
        self._all_times(s)
        return s.time_damage or []

    def _all_times(self, s: _ReadStream, *, strict: bool = True) -> np.ndarray:
        """All ``s.n`` timestamps, NaN in damaged chunks; raises on damage unless skipping (or not ``strict``)."""
        if s.time_damage is None:
            t, damage = read_rows(s.time, s.n, missing_is_damage=False)
            s.times = np.asarray(t, dtype=np.float64)
            # time is never NaN when written: NaN inside the valid rows is a chunk that is gone
            rows = s.time.chunks[0]
            lost = {int(i) // rows for i in np.flatnonzero(np.isnan(s.times))} - {d.chunk for d in damage}
            damage += [DamagedChunk("time", c, c * rows, min(s.n, (c + 1) * rows),
                                    "chunk file missing (its times read as NaN)") for c in sorted(lost)]
            s.time_damage = sorted(damage, key=lambda d: d.chunk)
        if strict and s.time_damage and not self.skip_damaged:
            raise self._error(s, s.time_damage)
        return s.times  # type: ignore[return-value]  # set above or by _check_length

    def _keep(self, s: _ReadStream) -> np.ndarray:
        """Rows outside every damaged chunk of ``data`` and ``time``."""
        keep = np.ones(s.n, dtype=bool)
        for d in (s.data_damage or []) + self._time_damage(s):
            keep[d.start:d.stop] = False
        return keep

    def _range(self, s: _ReadStream, d: DamagedChunk, times: np.ndarray) -> DamagedRange:
        good = np.isfinite(times)
        for other in (s.data_damage or []) + (s.time_damage or []):
            good[other.start:other.stop] = False
        before = times[: d.start][good[: d.start]]
        after = times[d.stop:][good[d.stop:]]
        block = times[d.start:d.stop]
        known = len(block) > 0 and bool(np.isfinite(block).all())
        return DamagedRange(s.key, d.array, d.chunk, d.start, d.stop,
                            float(block[0]) if known else math.nan, float(block[-1]) if known else math.nan,
                            float(before[-1]) if len(before) else math.nan,
                            float(after[0]) if len(after) else math.nan, d.problem)

    def _error(self, s: _ReadStream, damage: list[DamagedChunk]) -> DamagedChunkError:
        times = s.times if s.times is not None else self._all_times(s, strict=False)
        ranges = [self._range(s, d, times) for d in damage]
        more = f" (and {len(ranges) - 1} more damaged chunk(s))" if len(ranges) > 1 else ""
        return DamagedChunkError(
            f"session {str(self._path)!r}: {ranges[0].describe()}{more}. Run 'bci info --verify "
            f"{self._path}' to list every damaged chunk; 'bci replay', 'bci epochs' and 'bci export bids' read "
            "the rest with --skip-damaged (SessionReader(..., skip_damaged=True)), the damaged samples becoming gaps",
            ranges)

    def _note(self, text: str) -> None:
        self.notes.append(text)
        logger.warning("%s: %s (writer not closed cleanly?)", self._path, text)


def _number_text(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def _open_root(path: Path) -> Any:
    if not path.exists():
        raise SessionFormatError(f"{str(path)!r} does not exist; {_expected()}")
    try:
        root = zarr.open_group(store=LocalStore(path, read_only=True), mode="r")
    except (FileNotFoundError, ValueError, TypeError, zarr.errors.BaseZarrError) as e:
        raise SessionFormatError(
            f"{str(path)!r} is not a Zarr group ({e}); {_expected()}"
        ) from None
    return root


def _check_schema(attrs: dict[str, Any], path: Path) -> None:
    where = str(path)
    schema = attrs.get("schema")
    if schema is None:
        raise SessionFormatError(
            f"{where!r} is a Zarr store but not a session: root attribute 'schema' is missing; {_expected()}"
        )
    if schema != SCHEMA_NAME:
        raise SessionFormatError(f"{where!r} has schema {schema!r}; {_expected()}")
    version = attrs.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SessionFormatError(
            f"{where!r}: root attribute 'schema_version' is missing or not an integer (got {version!r}); "
            f"{_expected()}"
        )
    if version > SCHEMA_VERSION:
        raise SessionFormatError(
            f"{where!r} was written with schema_version {version}, newer than this reader supports "
            f"({SCHEMA_VERSION}); upgrade bci-runtime to read it"
        )


def _set_montage(raw: Any, desc: StreamDescription, ch_types: list[str]) -> None:
    """Set the first built-in montage that has every EEG channel name (exact case first)."""
    import mne

    eeg = [n for n, t in zip(desc.channel_names, ch_types) if t == "eeg"]
    if not eeg:
        return
    available = set(mne.channels.get_builtin_montages())
    for name in _MONTAGES:
        if name not in available:
            continue
        montage = mne.channels.make_standard_montage(name)
        if set(eeg) <= set(montage.ch_names):
            raw.set_montage(montage, verbose=False)
            return
        lower = [c.lower() for c in montage.ch_names]
        if len(set(lower)) == len(lower) and {c.lower() for c in eeg} <= set(lower):
            raw.set_montage(montage, match_case=False, verbose=False)
            return
