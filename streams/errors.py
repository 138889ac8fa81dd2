"""Exceptions of the streams layer; each message names what was received and what to do."""

from __future__ import annotations

import errno

#: What an OSError's errno means for an output being written (the rest: its strerror).
_WRITE_ERRNO_TEXT = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EFBIG: "file size limit reached (RLIMIT_FSIZE, ulimit -f, or the file system's largest file)",
    errno.EDQUOT: "disk quota exceeded",
}


def write_failure_text(exc: OSError) -> str:
    """Why a write failed, in words (``disk full``, ``file size limit reached``, ...), for an error message."""
    return _WRITE_ERRNO_TEXT.get(exc.errno, exc.strerror or str(exc))


class StreamsError(Exception):
    """Base class of errors raised by the streams layer."""


class StreamNotFoundError(StreamsError, LookupError):
    """No LSL stream matched the query; the message lists the visible streams."""


class StreamMismatchError(StreamsError, ValueError):
    """A (reconnected) stream differs from what was expected."""


class StreamLostError(StreamsError, ConnectionError):
    """A stream stopped delivering data and could not be recovered."""


class BufferOverflowError(StreamsError):
    """A reader asked for samples that the ring buffer has already overwritten."""


class SessionFormatError(StreamsError, ValueError):
    """A Zarr store is not a session of a supported schema (missing array/attribute, version)."""


class OutputExistsError(StreamsError, FileExistsError):
    """The output path exists and overwrite was not asked for."""


class OutputWriteError(StreamsError, OSError):
    """Writing an output (a session, an events file) failed (disk full, file size limit, I/O error).

    What was written before is kept; the message names the output, the cause and what it holds.
    """


class SessionWriteError(OutputWriteError):
    """Writing a session failed (disk full, file size limit, I/O error); what was written before is kept."""


class DamagedChunkError(StreamsError, ValueError):
    """A chunk of a stored array cannot be decoded (checksum mismatch, zstd error, truncated or missing file).

    The message names the store, the stream, the chunk, its sample range and its time range.
    ``damaged`` lists every damaged range of the stream found so far
    (:class:`streams.session.DamagedRange`).
    """

    def __init__(self, message: str, damaged: list | None = None) -> None:
        super().__init__(message)
        self.damaged = list(damaged or [])
