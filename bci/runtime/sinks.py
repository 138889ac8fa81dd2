"""Where decoded results go: a JSON-lines events file, an LSL ``BCIResults`` outlet, a list.

Every sink takes the same plain dict (one per decoded window or dropped marker);
see docs/runtime.md for the fields.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from streams.description import RESULTS_TYPE, StreamDescription
from streams.errors import OutputWriteError, write_failure_text
from streams.lsl import SOURCE_CLOSE_LINGER_S, Outlet

logger = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives result records."""

    def write(self, record: dict[str, Any]) -> None:
        """Take one record."""

    def close(self) -> None:
        """Flush and release resources."""


def to_json(record: dict[str, Any]) -> str:
    """Compact JSON; non-finite floats become null (JSON has no NaN)."""
    return json.dumps(_finite(record), separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class EventsFileSink:
    """Append one JSON object per line to ``path`` (one ``write()`` per whole line, unbuffered).

    A crash or ``kill -9`` loses nothing written and leaves whole lines: each record goes to the
    file in one system call (repeated only for the rest of a short write).

    When the disk refuses a write (full, file size limit), the file is closed where it is, one
    error line is logged and decoding goes on (the other sinks still get every record); the
    records not written are counted and :meth:`close` raises :class:`~streams.errors.OutputWriteError`
    naming the file, the cause and how many records it holds and lacks.

    Parameters
    ----------
    path : path
        File to create; an existing file is refused unless ``overwrite``.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"--events {str(self.path)!r} already exists; choose a new file or pass --overwrite")
        if not self.path.parent.exists():
            raise FileNotFoundError(f"--events {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist")
        self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self.n_written = 0
        self._size = 0  # bytes of the whole lines written
        #: Records not written since the disk refused one (with :attr:`error`).
        self.n_unwritten = 0
        self.error: OSError | None = None

    def write(self, record: dict[str, Any]) -> None:
        line = memoryview((to_json(record) + "\n").encode("utf-8"))
        with self._lock:
            if self.error is not None:
                self.n_unwritten += 1
            elif self._file is not None:
                size = len(line)
                try:
                    while line:
                        line = line[self._file.write(line):]
                    self.n_written += 1
                    self._size += size
                except OSError as exc:  # disk full, file size limit: keep decoding, report at close()
                    self.error, self.n_unwritten = exc, 1
                    try:  # a short write may have left part of the line: cut the file back to whole lines
                        self._file.truncate(self._size)
                    except OSError:
                        pass  # then read_events skips the torn last line with a note
                    logger.error("events file %s: %s after %d records; later records are not written to it "
                                 "(decoding goes on)", self.path, write_failure_text(exc), self.n_written)

    def write_header(self, header: dict[str, Any]) -> None:
        """Write ``{"type": "header", **header}`` (the run's stream and channel map) as a line of its own.

        The pipeline factory calls it when the data stream is known, before any record.
        """
        self.write({"type": "header", **header})

    def close(self) -> None:
        """Close the file; raises :class:`~streams.errors.OutputWriteError` if a write was refused."""
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass  # the write that failed already said why
                self._file = None
            if self.error is not None:
                exc = self.error
                raise OutputWriteError(
                    f"--events {str(self.path)!r}: {write_failure_text(exc)} [{exc.__class__.__name__} {exc.errno}: "
                    f"{exc.strerror or exc}]; the file holds the first {self.n_written} records (whole lines), "
                    f"{self.n_unwritten} later records are not in it; free space or raise the limit")


@dataclass
class EventsFile:
    """The records of an events file, and what was skipped while reading it."""

    records: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def read_events(path: str | os.PathLike) -> EventsFile:
    """Read an events file (JSON lines); a torn last line (the writer was killed) is skipped with a note.

    Raises
    ------
    ValueError
        A line other than the last is not JSON: the file is damaged, not just cut short.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    out = EventsFile([])
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.records.append(json.loads(line))
        except ValueError as exc:
            if number == len(lines):  # no newline after it: the writer stopped mid-line
                out.notes.append(f"{str(path)!r}: line {number} is torn (no newline, not JSON: the writer was "
                                 f"killed mid-line); skipped {len(line)} bytes")
                break
            raise ValueError(f"events file {str(path)!r}: line {number} is not JSON ({exc}); the file is damaged") from None
    return out


def results_description(name: str, source_id: str | None = None) -> StreamDescription:
    """The LSL stream the runtime publishes results on (one JSON string per record)."""
    return StreamDescription(
        name=name,
        type=RESULTS_TYPE,
        source_id=source_id or f"bci-results-{name}",
        channel_names=("result",),
        channel_types=("json",),
        channel_units=("",),
        nominal_rate=0.0,
        dtype="string",
    )


class ResultsOutletSink:
    """Publish records on an LSL outlet of type ``BCIResults``, stamped with ``emitted_time``."""

    def __init__(self, name: str = "BCIResults", source_id: str | None = None) -> None:
        self.desc = results_description(name, source_id)
        self._outlet = Outlet(self.desc)

    def write(self, record: dict[str, Any]) -> None:
        stamp = record.get("emitted_time") or 0.0
        self._outlet.push_sample([to_json(record)], float(stamp))

    def close(self) -> None:
        self._outlet.close(linger=SOURCE_CLOSE_LINGER_S)


class ListSink:
    """Keep records in memory (tests, replay summaries)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.records.append(record)

    def close(self) -> None:
        pass
