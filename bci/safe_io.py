"""Safe file I/O shared by every checkpoint format: atomic writes, pickle detection, state-dict fit.

Checkpoints (encoders, CLIP weights, GAN generators, stimulus encoders, training state) are
safetensors + JSON, never pickle. The helpers here are what their readers and writers share;
each format words its own error messages.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

__all__ = ["PICKLE_SUFFIXES", "StateMismatch", "atomic_write", "first_state_mismatch", "has_safetensors_header",
           "listing", "looks_like_pickle"]

#: File suffixes of pickle-based weight files (refused by every loader).
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary name next to ``path``, then rename it to ``path``.

    A crash leaves either the old file or the new one, never half a file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def looks_like_pickle(path: Path) -> bool:
    """True for pickle streams (protocol >= 2) and zip archives (``torch.save``'s default)."""
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def has_safetensors_header(path: Path) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object.

    Test it before :func:`looks_like_pickle`: a valid header length such as 0x0280 (640)
    starts with the bytes 0x80 0x02, a pickle's magic.
    """
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] + 8 <= path.stat().st_size


def listing(directory: Path, limit: int = 10) -> str:
    """The first ``limit`` file names in ``directory`` (for "files there: ..." messages)."""
    names = sorted(p.name for p in Path(directory).iterdir())
    if not names:
        return "none (empty directory)"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass(frozen=True)
class StateMismatch:
    """The first way a state dict does not fit a module.

    Attributes
    ----------
    kind : {"missing", "shape", "unexpected"}
    key : str
        The tensor's name.
    file_shape : tuple or None
        Its shape in the file (None when missing).
    expected_shape : tuple or None
        The shape the module needs (None when unexpected).
    n_unexpected : int
        How many unexpected tensors the file has (``kind == "unexpected"``).
    """

    kind: str
    key: str
    file_shape: tuple[int, ...] | None
    expected_shape: tuple[int, ...] | None
    n_unexpected: int = 0


def first_state_mismatch(expected: Mapping[str, torch.Tensor],
                         state: Mapping[str, torch.Tensor]) -> StateMismatch | None:
    """Compare a file's tensors with a module's ``state_dict()``: None when every name and shape fits."""
    for key, tensor in expected.items():
        if key not in state:
            return StateMismatch("missing", key, None, tuple(tensor.shape))
        if tuple(state[key].shape) != tuple(tensor.shape):
            return StateMismatch("shape", key, tuple(state[key].shape), tuple(tensor.shape))
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        return StateMismatch("unexpected", unexpected[0], tuple(state[unexpected[0]].shape), None, len(unexpected))
    return None
