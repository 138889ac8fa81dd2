"""XDF recordings (LabRecorder) to a Zarr session, every stream with corrected timestamps.

pyxdf reads the file; its clock synchronisation (ClockOffset chunks, robust
linear fit, clock-reset handling) and its jitter removal for regular streams are
on, so the timestamps are in the recording machine's LSL clock, as in a session
written by ``bci record``. Each XDF stream becomes one session stream:

* description from the StreamHeader: name, type, source_id, hostname, nominal
  rate, channel format, channel labels/types/units from ``desc/channels``
  (``ch001``... when absent; duplicated labels get a ``-2`` suffix);
* data as stored (the unit is whatever ``desc/channels/channel/unit`` says;
  ``SessionReader.to_raw`` scales µV/mV to volts);
* string streams (markers) as string streams;
* breaks pyxdf finds in regular streams are recorded as gaps;
* stream attributes ``xdf`` (stream id, effective rate, clock offsets used,
  footer, the full ``desc`` tree).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from offline.importers._checks import ImportFormatError, check_output, first_few, require_file
from streams.description import StreamDescription
from streams.session import SessionWriter

logger = logging.getLogger(__name__)

_FORMATS = {"float32": "float32", "double64": "float64", "string": "string", "int8": "int8",
            "int16": "int16", "int32": "int32", "int64": "int64"}
#: Most channels a StreamHeader may declare: ``channel_count`` is read before any sample confirms it, and a
#: damaged or hostile header (e.g. 2**40) must not make the importer build that many channel names.
MAX_CHANNELS = 100_000
#: Rows copied per append (keeps memory and the progress bar smooth).
_BLOCK_ROWS = 10_000


class _Capture(logging.Handler):
    """Collect pyxdf's log records while it reads (errors mean damaged chunks)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int) -> list[str]:
        return [r.getMessage().splitlines()[0].rstrip(". ") for r in self.records if r.levelno >= level]


@contextmanager
def _captured_pyxdf_log() -> Iterator[_Capture]:
    log = logging.getLogger("pyxdf")
    handler = _Capture()
    old = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.propagate = old


def import_xdf(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    allow_damaged: bool = False,
    progress: bool = False,
) -> Path:
    """Import every stream of an XDF file into one Zarr session.

    Parameters
    ----------
    path : str or os.PathLike
        ``.xdf`` (or gzip-compressed ``.xdfz`` / ``.xdf.gz``) file.
    out : str or os.PathLike
        Session directory to create.
    overwrite : bool
        Replace ``out`` if it exists.
    allow_damaged : bool
        pyxdf skips damaged chunks (e.g. the end of a file cut off by a crash).
        By default that is an error listing what pyxdf reported; with
        ``allow_damaged=True`` the intact chunks are imported and the problems are
        stored in the root attribute ``imported_from.problems``.
    progress : bool
        Show a progress bar (tqdm) over streams.

    Returns
    -------
    Path
        The session directory.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ImportFormatError
        Not an XDF file (no ``XDF:`` magic), a header that cannot be parsed, a
        damaged file without ``allow_damaged``, or no stream at all.
    """
    src = require_file(path, "XDF file")
    out = check_output(out, overwrite)
    streams, header, problems, notes = _load(src)
    if problems and not allow_damaged:
        raise ImportFormatError(
            f"{str(src)!r} is damaged (truncated or corrupt); pyxdf skipped chunks: {first_few(problems, 3)}. "
            "Pass allow_damaged=True (--allow-damaged) to import the intact chunks"
        )
    if not streams:
        raise ImportFormatError(f"{str(src)!r} holds no stream (no StreamHeader chunk); nothing to import")
    attrs = {"imported_from": {
        "importer": "xdf", "file": src.name, "path": str(src.resolve()),
        "file_header": _header_info(header), "clock_sync": "pyxdf synchronize_clocks + dejitter_timestamps",
        "problems": problems, "notes": notes[:50],
    }}
    from tqdm import tqdm

    with SessionWriter(out, overwrite=overwrite, attrs=attrs) as writer:
        for stream in tqdm(streams, desc="streams", unit="stream", disable=not progress, leave=False):
            _write_stream(writer, stream, src)
    logger.info("imported %s -> %s: %d streams", src, out, len(streams))
    return out


def _load(src: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[str], list[str]]:
    import pyxdf

    _check_magic(src)  # pyxdf leaves the file open when it refuses the magic bytes
    with _captured_pyxdf_log() as cap:
        try:
            streams, header = pyxdf.load_xdf(str(src), synchronize_clocks=True, dejitter_timestamps=True)
        except Exception as e:  # pyxdf raises bare Exception/IOError/struct.error/ParseError
            raise ImportFormatError(
                f"{str(src)!r}: pyxdf could not read it ({type(e).__name__}: {e}); the file is truncated "
                "or corrupt in a header, footer or clock-offset chunk"
            ) from e
    return list(streams), header, cap.messages(logging.ERROR), cap.messages(logging.WARNING)


def _check_magic(src: Path) -> None:
    import gzip

    opener = gzip.open if src.suffix == ".xdfz" or src.suffixes[-2:] == [".xdf", ".gz"] else open
    try:
        with opener(src, "rb") as f:
            magic = f.read(4)
    except OSError as e:  # gzip.BadGzipFile and friends
        raise ImportFormatError(f"{str(src)!r} cannot be read as a gzip-compressed XDF file: {e}") from None
    if magic != b"XDF:":
        raise ImportFormatError(f"{str(src)!r} is not an XDF file: it starts with {magic!r}, not b'XDF:'")


def _header_info(header: dict[str, Any] | None) -> dict[str, Any]:
    info = (header or {}).get("info") or {}
    return {k: _first(v) for k, v in info.items() if isinstance(_first(v), str)}


def _first(value: Any, default: Any = None) -> Any:
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


# --------------------------------------------------------------------------- description
def stream_description(info: dict[str, Any], stream_id: int | None = None) -> StreamDescription:
    """A :class:`StreamDescription` from a pyxdf stream ``info`` dict (the XDF StreamHeader).

    Raises
    ------
    ImportFormatError
        Missing or invalid ``channel_count``, ``channel_format`` or ``nominal_srate``.
    """
    where = f"stream {stream_id}" if stream_id is not None else "stream"
    fmt = str(_first(info.get("channel_format"), ""))
    if fmt not in _FORMATS:
        raise ImportFormatError(f"XDF {where}: channel_format {fmt!r} is not one of {sorted(_FORMATS)}")
    try:
        n = int(_first(info.get("channel_count")))
        rate = float(_first(info.get("nominal_srate"), 0.0) or 0.0)
    except (TypeError, ValueError):
        raise ImportFormatError(
            f"XDF {where}: channel_count {info.get('channel_count')!r} / nominal_srate "
            f"{info.get('nominal_srate')!r} are not numbers"
        ) from None
    if n < 1 or n > MAX_CHANNELS:
        raise ImportFormatError(f"XDF {where}: channel_count is {n}; a stream has between 1 and {MAX_CHANNELS} "
                                "channels (the header is damaged)")
    labels, types, units = _channels(info, n)
    return StreamDescription(
        name=str(_first(info.get("name"), "") or f"stream{stream_id}"),
        type=str(_first(info.get("type"), "") or ""),
        source_id=str(_first(info.get("source_id"), "") or ""),
        channel_names=tuple(labels),
        channel_types=tuple(types) if any(types) else (),
        channel_units=tuple(units) if any(units) else (),
        nominal_rate=rate,
        dtype=_FORMATS[fmt],
        hostname=str(_first(info.get("hostname"), "") or ""),
    )


def _channels(info: dict[str, Any], n: int) -> tuple[list[str], list[str], list[str]]:
    desc = _first(info.get("desc"))
    chans: list[Any] = []
    if isinstance(desc, dict):
        node = _first(desc.get("channels"))
        if isinstance(node, dict):
            chans = [c for c in node.get("channel", []) if isinstance(c, dict)]
    if len(chans) != n:
        chans = [{}] * n
    labels = [str(_first(c.get("label"), "") or "") for c in chans]
    labels = _unique([lab or f"ch{i + 1:03d}" for i, lab in enumerate(labels)])
    types = [str(_first(c.get("type"), "") or "") for c in chans]
    units = [str(_first(c.get("unit"), "") or "") for c in chans]
    if any(types) and not all(types):
        types = [t or "misc" for t in types]
    return labels, types, units


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            new = f"{name}-{seen[name]}"
            while new in seen:
                seen[name] += 1
                new = f"{name}-{seen[name]}"
            seen[new] = 1
            out.append(new)
        else:
            seen[name] = 1
            out.append(name)
    return out


# --------------------------------------------------------------------------- samples
def _write_stream(writer: SessionWriter, stream: dict[str, Any], src: Path) -> None:
    info = stream["info"]
    sid = info.get("stream_id")
    desc = stream_description(info, sid)
    key = writer.add_stream(desc)
    times = np.asarray(stream["time_stamps"], dtype=np.float64)
    data = _samples(stream["time_series"], desc, src)
    if len(data) != len(times):
        raise ImportFormatError(
            f"{str(src)!r}: XDF stream {sid} ({desc.name!r}) has {len(data)} samples but {len(times)} timestamps"
        )
    for start in range(0, len(times), _BLOCK_ROWS):
        writer.append(key, data[start:start + _BLOCK_ROWS], times[start:start + _BLOCK_ROWS])
    segments = [tuple(int(i) for i in s) for s in info.get("segments") or []]
    for (_, stop), (start, _) in zip(segments[:-1], segments[1:]):
        writer.add_gap(key, float(times[stop]), float(times[start]), "break in the XDF recording (pyxdf segment)")
    footer = (stream.get("footer") or {}).get("info") or {}
    writer.set_attrs(key, xdf={
        "stream_id": sid,
        "effective_srate": float(info.get("effective_srate") or 0.0),
        "n_clock_offsets": len(stream.get("clock_times") or []),
        "segments": [list(s) for s in segments],
        "footer": {k: _first(v) for k, v in footer.items() if isinstance(_first(v), str)},
        "desc": _first(info.get("desc")),
    })


def _samples(series: Any, desc: StreamDescription, src: Path) -> np.ndarray:
    if desc.is_string:
        arr = np.empty((len(series), desc.n_channels), dtype=object)
        for i, row in enumerate(series):
            if len(row) != desc.n_channels:
                raise ImportFormatError(
                    f"{str(src)!r}: string stream {desc.name!r} sample {i} has {len(row)} values, "
                    f"expected {desc.n_channels}"
                )
            arr[i] = [str(v) for v in row]
        return arr
    arr = np.asarray(series)
    if arr.ndim != 2 or arr.shape[1] != desc.n_channels:
        raise ImportFormatError(
            f"{str(src)!r}: stream {desc.name!r} samples have shape {arr.shape}, expected (n, {desc.n_channels})"
        )
    return arr.astype(desc.numpy_dtype, copy=False)
