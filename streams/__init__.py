"""Streams layer: LSL inlets/outlets, ring buffer, Zarr sessions and the synthetic world.

This package is the bottom layer: it imports neither :mod:`bci` nor :mod:`offline`.
"""

from streams.description import StreamDescription
from streams.errors import (
    BufferOverflowError,
    OutputExistsError,
    SessionFormatError,
    StreamLostError,
    StreamMismatchError,
    StreamNotFoundError,
    StreamsError,
)

__all__ = [
    "BufferOverflowError",
    "OutputExistsError",
    "SessionFormatError",
    "StreamDescription",
    "StreamLostError",
    "StreamMismatchError",
    "StreamNotFoundError",
    "StreamsError",
]
