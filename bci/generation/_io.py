"""Safe I/O shared by the generation checkpoints: a JSON config plus safetensors files.

Never pickle: files named ``*.pt``/``*.pth``/``*.bin``/... and weight files that are
really pickle streams or torch zip archives are refused with a message saying how to
convert them. Nothing here calls ``torch.load``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from dataclasses import asdict, fields, replace
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

# Private helpers of the encoder checkpoint module, reused so both formats refuse the same files.
from bci.safe_io import (CONFIG_FILE, PICKLE_SUFFIXES, CheckpointError, atomic_write, first_state_mismatch,
                         has_safetensors_header, listing, looks_like_pickle, pickle_message, read_json_config,
                         refuse_pickles)

__all__ = [
    "CONFIG_FILE",
    "CheckpointError",
    "DictConfig",
    "check_state",
    "checkpoint_dir",
    "json_safe",
    "listing",
    "load_state",
    "pickle_message",
    "positive_int",
    "power_of_two",
    "read_json_config",
    "refuse_pickles",
    "write_checkpoint",
]

_C = TypeVar("_C", bound="DictConfig")


class DictConfig:
    """dict round trip shared by the frozen dataclass configs of this package."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {unknown}; valid fields are {valid}")
        return cls(**data)

    def replace(self: _C, **changes: Any) -> _C:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)  # type: ignore[type-var]


def checkpoint_dir(directory: str | os.PathLike, what: str, hint: str) -> Path:
    """``directory`` as a Path; a missing path, a plain file or a pickle file is a clear error."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{what} directory must be a path, got {type(directory).__name__}")
    path = Path(directory)
    if not path.exists():
        raise CheckpointError(f"{what} directory {path} does not exist")
    if not path.is_dir():
        if path.suffix.lower() in PICKLE_SUFFIXES or looks_like_pickle(path):
            raise CheckpointError(pickle_message(path, hint))
        raise CheckpointError(f"{what} path {path} is a file; a {what} checkpoint is a directory with {CONFIG_FILE}")
    return path


def json_safe(value: Any, name: str) -> Any:
    """A JSON round trip of ``value`` (plain types only); anything else is a TypeError naming ``name``."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must hold plain JSON values (dict, list, str, finite numbers, bool, None): {exc}"
        ) from None
    return json.loads(text)


def write_checkpoint(
    directory: str | os.PathLike,
    config: dict[str, Any],
    weights: dict[str, nn.Module],
    *,
    overwrite: bool,
    known_files: tuple[str, ...] = (),
) -> Path:
    """Write ``weights`` (file name -> module) as safetensors, then ``config.json`` last.

    ``known_files`` are other names this format may hold (removed on overwrite so a
    checkpoint never mixes old and new files).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"checkpoint path {directory} exists and is not a directory")
    names = (CONFIG_FILE, *weights, *known_files)
    existing = [n for n in dict.fromkeys(names) if (directory / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{directory} already holds a checkpoint ({', '.join(existing)}); pass overwrite=True "
            "(--overwrite) or choose another directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    for name in existing:  # config first: a crash mid-save leaves no config.json, never a stale one
        (directory / name).unlink()
    for name, module in weights.items():
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
        atomic_write(directory / name, lambda p, t=tensors: save_file(t, str(p), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    return directory


def load_state(path: Path, hint: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file on CPU; missing files, pickles and bad headers are clear errors."""
    if not path.is_file():
        refuse_pickles(path.parent, hint)
        raise CheckpointError(f"{path.parent} has no {path.name}; files there: {listing(path.parent)}")
    if not has_safetensors_header(path):
        # checked only after the header test: a valid header length such as 0x0280 starts with
        # the bytes 0x80 0x02, which look like the start of a pickle stream
        if looks_like_pickle(path):
            raise CheckpointError(pickle_message(path, hint))
        raise CheckpointError(f"{path} is not a safetensors file (bad header); {hint}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None


def check_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensor that is missing, extra or of another shape."""
    bad = first_state_mismatch(module.state_dict(), state)
    if bad is None:
        return
    where = f"{path} does not fit the {what}"
    if bad.kind == "missing":
        raise CheckpointError(f"{where}: tensor {bad.key!r} (shape {bad.expected_shape}) is missing from the file; "
                              "check the config in config.json")
    if bad.kind == "shape":
        raise CheckpointError(f"{where}: tensor {bad.key!r} has shape {bad.file_shape} in the file but the "
                              f"architecture needs {bad.expected_shape}; check the config in config.json")
    raise CheckpointError(f"{where}: unexpected tensor {bad.key!r} (shape {bad.file_shape}) is not in the architecture")


def positive_int(name: str, value: Any, owner: str) -> int:
    """``value`` as an int >= 1, or a ValueError/TypeError naming ``owner.name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{owner} {name}={value!r} must be a positive integer")
    if value < 1:
        raise ValueError(f"{owner} {name}={value!r} must be a positive integer")
    return int(value)


def power_of_two(name: str, value: Any, owner: str, low: int, high: int) -> int:
    """``value`` as a power of two in ``[low, high]``."""
    value = positive_int(name, value, owner)
    if value < low or value > high or 2 ** round(math.log2(value)) != value:
        options = ", ".join(str(2**k) for k in range(int(math.log2(low)), int(math.log2(high)) + 1))
        raise ValueError(f"{owner} {name}={value} must be a power of two from {low} to {high} ({options})")
    return value
