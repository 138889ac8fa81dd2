"""What checkpoints and reports record: JSON-able values and the fingerprint of an encoder checkpoint.

``jsonable`` is the copy :mod:`offline.training.loop` held; it is used by training and
evaluation alike. (A project-wide JSON helper in :mod:`streams` is to replace it.)
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["encoder_fingerprint", "jsonable"]


def encoder_fingerprint(checkpoint: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of an encoder checkpoint's config and weights files."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        h.update((Path(checkpoint) / name).read_bytes())
    return h.hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy scalars/arrays converted; non-finite floats to None)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)
