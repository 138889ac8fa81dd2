"""Safe checkpoint I/O: ``config.json`` + ``model.safetensors``, never pickle.

A checkpoint is a directory::

    config.json         ModelConfig.to_dict() + {"format": "bci-runtime.checkpoint", "format_version": 1}
    model.safetensors   the state_dict (contiguous CPU tensors)

Pickle-based files (``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``, or a ``model.safetensors``
that is really a pickle or a torch zip archive) are refused, because unpickling can run
arbitrary code. Nothing here calls ``torch.load``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from bci.models.base import EncoderModel, ModelConfig
from bci.models.registry import build_model, list_models
from bci.safe_io import (CONFIG_FILE, CheckpointError, CheckpointKind, check_state, checkpoint_dir, load_module,
                         load_state, read_json_config, write_checkpoint)

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "KIND",
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
#: How encoder checkpoints word their errors.
KIND = CheckpointKind(
    what="checkpoint",
    hint=_CONVERT_HINT,
    pickle_what="checkpoint",
    layout=f"a checkpoint is a directory with {CONFIG_FILE} and {WEIGHTS_FILE}",
    resave="re-save it with save_checkpoint",
    fix="check n_chans/n_times/embed_dim/params in config.json",
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
    config = {**model.get_config().to_dict(), "format": FORMAT, "format_version": FORMAT_VERSION}
    if model.mvnn_whitening is not None and "mvnn" not in (config["scaler"] or {}):
        raise ValueError(f"model {config['name']!r} has an MVNN whitening but its config's scaler has no 'mvnn' record; "
                         "set_metadata(scaler={..., 'mvnn': whitener.record}) before saving, or it would not load back")
    return write_checkpoint(directory, config, {WEIGHTS_FILE: model}, overwrite=overwrite,
                            tensor_metadata={"format": FORMAT}, allow_nan=True)


# ---------------------------------------------------------------------- load
def read_config(directory: str | os.PathLike) -> ModelConfig:
    """Read and validate ``directory/config.json`` without loading weights."""
    directory = checkpoint_dir(directory, KIND)
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
    directory = checkpoint_dir(directory, KIND)
    config = read_config(directory)
    path, subject = directory / WEIGHTS_FILE, f"model {config.name!r}"
    state = load_state(path, KIND)
    # the shapes first, on a model without storage: a config.json asking for n_chans=2**40 is an error naming
    # the tensor that does not fit, not an allocation of terabytes
    check_state(_skeleton(config), state, path, subject, KIND.fix)
    return load_module(build_model(config), path, KIND, subject, device, state=state)


def _skeleton(config: ModelConfig) -> EncoderModel:
    """The model of ``config`` on the meta device (shapes, no storage); the RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return build_model(config)

