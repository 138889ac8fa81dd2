"""Exceptions of the streams layer; each message names what was received and what to do."""

from __future__ import annotations


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


class SessionWriteError(StreamsError, OSError):
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
