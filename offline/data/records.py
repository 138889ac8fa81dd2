"""What checkpoints and reports record about their inputs: the fingerprint of an encoder checkpoint.

JSON conversion of records is :func:`streams._store.jsonable` (with ``where=None``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["encoder_fingerprint"]


def encoder_fingerprint(checkpoint: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of an encoder checkpoint's config and weights files."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        h.update((Path(checkpoint) / name).read_bytes())
    return h.hexdigest()[:16]
