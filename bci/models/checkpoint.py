"""Safe checkpoint I/O: ``config.json`` + ``model.safetensors``, never pickle.

A checkpoint is a directory::

    config.json         ModelConfig.to_dict() + {"format": "bci-runtime.checkpoint", "format_version": 1}
    model.safetensors   the state_dict (contiguous CPU tensors)

Pickle-based files (``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``, or a ``model.safetensors``
that is really a pickle or a torch zip archive) are refused, because unpickling can run
arbitrary code. Nothing here calls ``torch.load``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bci.models.registry import EncoderModel, ModelConfig, build_model, list_models
from bci.safe_io import (CONFIG_FILE, PICKLE_SUFFIXES, CheckpointError, atomic_write, first_state_mismatch,
                         has_safetensors_header, listing, looks_like_pickle, pickle_message, read_json_config,
                         refuse_pickles)

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "CheckpointError",
    "load_checkpoint",
    "read_config",
    "save_checkpoint",
]

FORMAT = "bci-runtime.checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"

_CONVERT_HINT = (
    "convert it once, in an environment you trust, with "
    "torch.load(path, weights_only=True) -> model.load_state_dict(...) -> "
    "bci.models.checkpoint.save_checkpoint(model, DIR) (or re-save it with save_checkpoint from the "
    "training run)"
)


# ---------------------------------------------------------------------- save
def save_checkpoint(model: nn.Module, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` as ``directory/config.json`` + ``directory/model.safetensors``.

    Parameters
    ----------
    model : EncoderModel
        A registered model (its :meth:`get_config` is stored).
    directory : path
        Created if needed; may already exist if it holds no checkpoint files.
    overwrite : bool
        Replace an existing checkpoint in ``directory``.

    Returns
    -------
    Path
        The checkpoint directory.
    """
    if not isinstance(model, EncoderModel):
        raise TypeError(
            f"save_checkpoint expects a registered model (EncoderModel), got {type(model).__name__}; "
            "build it with bci.models.build_model"
        )
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"checkpoint path {directory} exists and is not a directory")
    existing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if (directory / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{directory} already holds a checkpoint ({', '.join(existing)}); pass overwrite=True "
            "(--overwrite) or choose another directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    if existing:  # config last: a crash mid-save leaves no config.json, never a stale one
        (directory / CONFIG_FILE).unlink(missing_ok=True)
    config = {**model.get_config().to_dict(), "format": FORMAT, "format_version": FORMAT_VERSION}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    return directory


# ---------------------------------------------------------------------- load
def read_config(directory: str | os.PathLike) -> ModelConfig:
    """Read and validate ``directory/config.json`` without loading weights."""
    directory = _checkpoint_dir(directory)
    path = directory / CONFIG_FILE
    data = read_json_config(directory, FORMAT, FORMAT_VERSION, _CONVERT_HINT, what="checkpoint",
                            fix="write checkpoints with save_checkpoint")
    body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    if body.get("name") not in list_models():
        raise CheckpointError(
            f"{path} names model {body.get('name')!r}, which is not registered; "
            f"registered models are {list_models()}"
        )
    try:
        return ModelConfig.from_dict(body)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def load_checkpoint(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> EncoderModel:
    """Rebuild a model from a checkpoint directory, in eval mode, on ``device``.

    Raises
    ------
    CheckpointError
        Missing directory or file (named), newer ``format_version``, unknown model name
        (registered ones listed), weights that do not fit the architecture (first
        mismatching tensor named with both shapes), or a pickle-based checkpoint (refused).
    """
    directory = _checkpoint_dir(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        refuse_pickles(directory, _CONVERT_HINT, "checkpoint")
        raise CheckpointError(f"checkpoint {directory} has no {WEIGHTS_FILE}; files there: {listing(directory)}")
    _refuse_if_pickle(weights)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    model = build_model(config)
    _check_state(model, state, weights)
    model.load_state_dict(state, strict=True)
    return model.to(torch.device(device)).eval()


def _checkpoint_dir(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not directory.is_dir():
        if directory.suffix.lower() in PICKLE_SUFFIXES or looks_like_pickle(directory):
            raise CheckpointError(_pickle_message(directory))
        raise CheckpointError(
            f"checkpoint {directory} is a file; a checkpoint is a directory with {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    return directory


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    bad = first_state_mismatch(model.state_dict(), state)
    if bad is None:
        return
    where = f"{path} does not fit model {model.get_config().name!r}"
    if bad.kind == "missing":
        raise CheckpointError(f"{where}: tensor {bad.key!r} (shape {bad.expected_shape}) is missing from the file")
    if bad.kind == "shape":
        raise CheckpointError(
            f"{where}: tensor {bad.key!r} has shape {bad.file_shape} in the file but the architecture needs "
            f"{bad.expected_shape}; check n_chans/n_times/embed_dim/params in config.json"
        )
    raise CheckpointError(f"{where}: unexpected tensor {bad.key!r} (shape {bad.file_shape}) is not in the architecture")


# ---------------------------------------------------------------------- pickle refusal
def _pickle_message(path: Path) -> str:
    return pickle_message(path, _CONVERT_HINT, "checkpoint")


def _refuse_if_pickle(weights: Path) -> None:
    # safetensors first: a header length such as 0x0280 (640) starts with b"\x80\x02", a pickle's magic
    if has_safetensors_header(weights):
        return
    if looks_like_pickle(weights):
        raise CheckpointError(_pickle_message(weights))
    raise CheckpointError(f"{weights} is not a safetensors file (bad header); re-save it with save_checkpoint")



