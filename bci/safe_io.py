"""Safe file I/O shared by every checkpoint format: atomic writes, pickle detection, state-dict fit.

Checkpoints (encoders, CLIP weights, GAN generators, stimulus encoders, training state) are
safetensors + JSON, never pickle. The helpers here are what their readers and writers share;
each format words its own error messages.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

__all__ = ["CONFIG_FILE", "PICKLE_SUFFIXES", "CheckpointError", "StateMismatch", "atomic_write",
           "first_state_mismatch", "has_safetensors_header", "listing", "looks_like_pickle", "pickle_message",
           "read_json_config", "read_json_object", "refuse_pickles"]

#: File suffixes of pickle-based weight files (refused by every loader).
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
#: The JSON file that describes a checkpoint directory.
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint directory cannot be read: missing file, bad format, wrong weights, pickle."""


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


# ---------------------------------------------------------------------- pickle refusal, config.json
def pickle_message(path: Path, hint: str, what: str = "file") -> str:
    """Why a pickle-based ``what`` (file, checkpoint) is refused, and ``hint`` on how to convert it."""
    return f"refusing to load pickle-based {what} {path}: pickle can execute code; {hint}"


def refuse_pickles(directory: Path, hint: str, what: str = "file") -> None:
    """Raise :class:`CheckpointError` if ``directory`` holds pickle-suffixed files."""
    pickles = sorted(p.name for p in Path(directory).iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(pickle_message(Path(directory) / pickles[0], hint, what))


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; :class:`CheckpointError` for invalid JSON or another JSON type."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_json_config(directory: Path, fmt: str, version: int, hint: str, *, what: str | None = None,
                     fix: str = "") -> dict[str, Any]:
    """Read ``directory/config.json`` and check its ``format`` and ``format_version``.

    Parameters
    ----------
    directory : Path
        The checkpoint directory (checked to exist by the caller).
    fmt : str
        Expected ``format`` tag.
    version : int
        Newest ``format_version`` this runtime reads.
    hint : str
        How to convert a pickle found instead of ``config.json``.
    what : str, optional
        What the directory is, in messages ("checkpoint"); None: a plain file.
    fix : str
        Appended to the wrong-format message (e.g. how to write such checkpoints).
    """
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        refuse_pickles(directory, hint, what or "file")
        prefix = f"{what} " if what else ""
        raise CheckpointError(f"{prefix}{directory} has no {CONFIG_FILE}; files there: {listing(directory)}")
    data = read_json_object(path)
    if data.get("format") != fmt:
        raise CheckpointError(f"{path} has format {data.get('format')!r}, expected {fmt!r}" + (f"; {fix}" if fix else ""))
    found = data.get("format_version")
    if isinstance(found, bool) or not isinstance(found, int):
        raise CheckpointError(f"{path} has format_version {found!r}; expected an integer")
    if found > version:
        raise CheckpointError(
            f"{path} has format_version {found}, newer than this runtime reads ({version}); upgrade bci-runtime"
        )
    return data
