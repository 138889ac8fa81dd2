"""Model definitions (a registry of encoders) and safe checkpoint I/O.

>>> from bci.models import build_model, default_config, save_checkpoint, load_checkpoint
>>> model = build_model(default_config("eeg_convnet"))
"""

from __future__ import annotations

from bci.models.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
from bci.models.registry import (
    MODELS,
    EncoderModel,
    ModelConfig,
    build_model,
    default_config,
    get_model_class,
    list_models,
    register_model,
)

list_models()  # find the built-in models now, so MODELS lists them from the start

__all__ = [
    "MODELS",
    "CheckpointError",
    "EncoderModel",
    "ModelConfig",
    "build_model",
    "default_config",
    "get_model_class",
    "list_models",
    "load_checkpoint",
    "read_config",
    "register_model",
    "save_checkpoint",
]
