"""Zarr keys (folder names) made from stream names: the one rule, with no dependency beyond ``re``.

``streams.session`` names a stream's group with it; ``streams.lsl`` re-exports it for older imports.
"""

from __future__ import annotations

import re

__all__ = ["MAX_KEY_LENGTH", "sanitize_key"]

#: Longest key made from a stream name; file systems refuse names over 255 bytes.
MAX_KEY_LENGTH = 100
#: Names inside a Zarr v3 group that a child key must not take (its metadata file).
_RESERVED = frozenset({"zarr.json"})
_KEY_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def sanitize_key(name: str) -> str:
    """A Zarr group key / file name made from any stream name: one safe path component.

    Runs of characters other than ASCII letters, digits, ``_``, ``.`` and ``-`` become ``_``; leading and
    trailing ``.`` and ``_`` are stripped (so ``..`` or ``../x`` cannot leave the folder); the key is cut to
    :data:`MAX_KEY_LENGTH` characters; a name Zarr reserves (``zarr.json``) is prefixed with ``stream_``;
    nothing left gives ``"stream"``. Callers make keys unique (two names may give one key).

    Examples
    --------
    >>> sanitize_key("EEG amp/1"), sanitize_key("../../etc"), sanitize_key("zarr.json")
    ('EEG_amp_1', 'etc', 'stream_zarr.json')
    """
    key = _KEY_RE.sub("_", str(name)).strip("._")[:MAX_KEY_LENGTH].rstrip("._")
    if not key:
        return "stream"
    return f"stream_{key}" if key.lower() in _RESERVED else key
