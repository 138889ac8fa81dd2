"""CLIP architectures: the project's tiny one, open_clip's registered ones, and building them offline.

An architecture is an open_clip ``model_cfg`` dict (``embed_dim``, ``vision_cfg``,
``text_cfg``, ...) plus a preprocessing dict (``size``, ``mean``, ``std``,
``interpolation``, ``resize_mode``, ``fill_color``). Models are built here with
random weights and **never** download anything: pretrained tower weights (timm,
Hugging Face) are switched off, and architectures whose text tower or tokenizer
only exists on the Hugging Face hub are refused.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from typing import Any

import open_clip
import torch
from torch import nn

from streams._checks import check_int

__all__ = [
    "TINY_NAME",
    "ClipError",
    "OfflineError",
    "build_clip_model",
    "check_offline_buildable",
    "config_hash",
    "default_preprocess",
    "known_models",
    "registered_config",
    "tiny_config",
]

#: Name of the project's own tiny architecture.
TINY_NAME = "tiny"


class ClipError(ValueError):
    """A CLIP model cannot be loaded or used: unknown name, bad weights, bad input."""


class OfflineError(ClipError):
    """Loading would need a download (hub tag, ``hf-hub:``, URL, Hugging Face tower); refused."""


def tiny_config(image_size: int = 64, context_length: int = 16) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of the tiny CLIP (about 4.8 M parameters at 64 px).

    Vision tower: open_clip's ``ModifiedResNet`` (CLIP's ResNet: a 3-convolution stem,
    four bottleneck stages of one block each at width 16, attention pooling), which
    downsamples by 32 (a 2x2 grid at 64 px). Text tower: a 3-layer, 64-wide
    transformer over open_clip's bundled BPE vocabulary (49,408 tokens; the token
    table holds most of the parameters) with a 16-token context, enough for the
    synthetic captions (at most 10 tokens with start and end). Joint space: 128-d.

    Parameters
    ----------
    image_size : int
        Input side in pixels, a multiple of 32 (>= 32).
    context_length : int
        Text context in tokens (>= 8).

    Returns
    -------
    dict
        A fresh dict that ``open_clip.CLIP(**cfg)`` accepts.
    """
    check_int("image_size", image_size, low=32)
    if image_size % 32:
        raise ValueError(f"image_size={image_size!r} must be a multiple of 32 (the ResNet tower downsamples by 32)")
    check_int("context_length", context_length, low=8)
    return {
        "embed_dim": 128,
        "vision_cfg": {"image_size": int(image_size), "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
        "text_cfg": {"context_length": int(context_length), "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    }


def default_preprocess(image_size: int | tuple[int, int]) -> dict[str, Any]:
    """open_clip's default preprocessing (OpenAI mean/std, bicubic, shortest-side resize)."""
    return {
        "size": _size_pair(image_size),
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }


def known_models() -> list[str]:
    """Names :func:`bci.clip.load_clip` accepts: ``"tiny"`` and every open_clip architecture."""
    return [TINY_NAME, *open_clip.list_models()]


def registered_config(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, preprocess_cfg)`` of a registered open_clip architecture.

    The preprocessing comes from open_clip's pretrained tags of that architecture
    when they all agree on it (SigLIP models use mean = std = 0.5, for example),
    and otherwise from open_clip's defaults.

    Raises
    ------
    ClipError
        ``name`` is not a known architecture (the known ones are listed).
    """
    cleaned = name.replace("/", "-")
    model_cfg = open_clip.get_model_config(cleaned) if cleaned in open_clip.list_models() else None
    if model_cfg is None:
        raise ClipError(unknown_model_message(name))
    preprocess = default_preprocess(model_cfg["vision_cfg"].get("image_size", 224))
    tag_cfgs = [open_clip.get_pretrained_cfg(cleaned, t) for t in open_clip.list_pretrained_tags_by_model(cleaned)]
    for key in ("mean", "std", "interpolation", "resize_mode"):
        values = {json.dumps(c[key]) for c in tag_cfgs if key in c}
        if len(values) == 1:
            value = json.loads(values.pop())
            preprocess[key] = list(value) if isinstance(value, (list, tuple)) else value
    return model_cfg, preprocess


def unknown_model_message(name: str) -> str:
    """Error text for an unknown model name: close matches, then every known name."""
    names = known_models()
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return (
        f"model={name!r} is not a known CLIP architecture{hint}; use 'tiny' (the project's own, "
        f"trained with 'bci train clip'), 'local-dir:DIR' (an open_clip folder), or one of open_clip's "
        f"architectures: {', '.join(names)}"
    )


def check_offline_buildable(model_cfg: dict[str, Any], name: str) -> None:
    """Refuse architectures whose text tower or tokenizer lives on the Hugging Face hub.

    Raises
    ------
    OfflineError
        The config names ``hf_model_name`` or ``hf_tokenizer_name``.
    ClipError
        The config lacks ``embed_dim``, ``vision_cfg`` or ``text_cfg``.
    """
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ClipError(f"the architecture config of {name!r} lacks {missing}; it is not an open_clip model_cfg")
    text_cfg = model_cfg["text_cfg"]
    if "siglip" in name.lower():
        raise OfflineError(
            f"architecture {name!r} uses a SentencePiece tokenizer that open_clip downloads from the Hugging Face "
            "hub; this runtime never downloads at run time. Use an architecture with open_clip's bundled BPE "
            "tokenizer (e.g. ViT-B-32, RN50) or the tiny model"
        )
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text_cfg.get(key):
            raise OfflineError(
                f"architecture {name!r} uses the Hugging Face {key.split('_')[1]} {text_cfg[key]!r}, whose "
                "config/vocabulary would be downloaded; this runtime never downloads at run time. Use an "
                "architecture with open_clip's own text tower (e.g. ViT-B-32, RN50) or the tiny model"
            )


def build_clip_model(model_cfg: dict[str, Any], name: str = "model") -> nn.Module:
    """Build an open_clip model with random weights, without any download.

    The global torch random state is left as it was (initialisation runs under a
    forked RNG).

    Parameters
    ----------
    model_cfg : dict
        open_clip ``model_cfg``.
    name : str
        Used in error messages.

    Returns
    -------
    torch.nn.Module
        ``open_clip.CLIP``, ``CustomTextCLIP`` or ``CoCa`` in float32 on the CPU.
    """
    check_offline_buildable(model_cfg, name)
    cfg = copy.deepcopy(model_cfg)
    custom_text = bool(cfg.pop("custom_text", False))
    if "timm_model_name" in cfg["vision_cfg"]:
        cfg["vision_cfg"]["timm_model_pretrained"] = False  # never fetch ImageNet weights
    if "multimodal_cfg" in cfg:
        model_class: type[nn.Module] = open_clip.CoCa
    elif custom_text:
        model_class = open_clip.CustomTextCLIP
    else:
        model_class = open_clip.CLIP
    with torch.random.fork_rng(devices=[]):
        try:
            return model_class(**cfg)
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise ClipError(f"cannot build architecture {name!r} from its config: {exc}") from None


def config_hash(*parts: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _size_pair(size: int | tuple[int, int] | list[int]) -> int | list[int]:
    if isinstance(size, (list, tuple)):
        return [int(size[0]), int(size[1])]
    return int(size)

