"""CLIP for the runtime: load open_clip models from local weights only, embed images and texts.

``load_clip("tiny", weights=DIR)`` loads the project's tiny CLIP trained by
``bci train clip --out DIR``; ``load_clip("ViT-B-32", weights="/path/file.safetensors")``
loads any open_clip architecture from a local file; ``load_clip("local-dir:DIR")`` an
open_clip folder. Nothing is downloaded at run time. See ``docs/clip.md``.
"""

from __future__ import annotations

from bci.clip.cache import TextEmbeddingCache, text_key
from bci.clip.configs import (
    TINY_NAME,
    ClipError,
    OfflineError,
    build_clip_model,
    default_preprocess,
    known_models,
    registered_config,
    tiny_config,
)
from bci.clip.embedder import ClipEmbedder, load_clip, resolve_device
from bci.clip.weights import CONFIG_FILE, WEIGHTS_FILE, read_clip_dir_config, read_state_dict, save_clip

__all__ = [
    "CONFIG_FILE",
    "TINY_NAME",
    "WEIGHTS_FILE",
    "ClipEmbedder",
    "ClipError",
    "OfflineError",
    "TextEmbeddingCache",
    "build_clip_model",
    "default_preprocess",
    "known_models",
    "load_clip",
    "read_clip_dir_config",
    "read_state_dict",
    "registered_config",
    "resolve_device",
    "save_clip",
    "text_key",
    "tiny_config",
]
