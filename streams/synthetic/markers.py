"""Old import path of the marker grammar; it lives in :mod:`streams.markers` (which has no simulator imports)."""

from streams.markers import (  # noqa: F401  (re-exported)
    BLOCK_END,
    BLOCK_START,
    NON_STIMULUS_KINDS,
    STIM_PREFIX,
    format_block_marker,
    format_marker,
    is_stimulus_marker,
    parse_block_marker,
    parse_marker,
)

__all__ = [
    "BLOCK_END",
    "BLOCK_START",
    "NON_STIMULUS_KINDS",
    "STIM_PREFIX",
    "format_block_marker",
    "format_marker",
    "is_stimulus_marker",
    "parse_block_marker",
    "parse_marker",
]
