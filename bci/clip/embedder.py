"""``ClipEmbedder``: an open_clip model in eval mode that embeds images and texts; ``load_clip``.

Images go through the model's own preprocessing in torch, batched (no PIL per
image): uint8 ``(N, H, W, 3)`` -> float in [0, 1] -> resize to the model's input
size (open_clip's resize mode and interpolation, antialiased) -> normalise with the
model's mean/std. Text goes through open_clip's bundled BPE tokenizer with the
model's context length; text embeddings are cached per (model fingerprint, text).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from bci.clip.cache import TextEmbeddingCache
from bci.clip.configs import (
    TINY_NAME,
    ClipError,
    OfflineError,
    build_clip_model,
    check_offline_buildable,
    config_hash,
    default_preprocess,
    registered_config,
    tiny_config,
    unknown_model_message,
)
from bci.clip.weights import (
    CONFIG_FILE,
    OPEN_CLIP_CONFIG_FILE,
    WEIGHTS_FILE,
    check_state_dict,
    find_open_clip_weights,
    looks_like_hub_reference,
    read_clip_dir_config,
    read_state_dict,
    refuse_hub_reference,
)
from streams._checks import check_int

__all__ = ["ClipEmbedder", "load_clip"]

_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
_RESIZE_MODES = ("shortest", "longest", "squash")
_TEXT_BATCH = 256


class ClipEmbedder:
    """An open_clip model for inference: L2-normalised float32 image and text embeddings.

    Build one with :func:`load_clip`; the constructor wraps a model you already hold
    (e.g. right after training).

    Parameters
    ----------
    model : torch.nn.Module
        An open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa``; put in eval mode, gradients off.
    name : str
        Architecture name (``"tiny"``, ``"ViT-B-32"``, ...).
    model_cfg : dict
        The open_clip ``model_cfg`` it was built from.
    preprocess_cfg : dict, optional
        ``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``, ``fill_color``;
        open_clip's defaults for the vision tower's image size when omitted.
    device : str or torch.device
        Where the model runs.
    cache_dir : path, optional
        Persist text embeddings there (npz + JSON per text); memory only when ``None``.
    source : str
        Where the weights came from (for messages and metadata).

    Attributes
    ----------
    name : str
    embed_dim : int
    image_size : int
        Input side in pixels (the model's vision tower is square).
    context_length : int
        Text tokens per caption (longer captions are truncated).
    device : torch.device
    text_cache : TextEmbeddingCache
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        model_cfg: dict[str, Any],
        preprocess_cfg: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        cache_dir: str | os.PathLike | None = None,
        source: str = "",
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.name = name
        self.source = source
        self.model_cfg = dict(model_cfg)
        vision_size = model_cfg["vision_cfg"].get("image_size", 224)
        self.preprocess_cfg = {**default_preprocess(vision_size), **(preprocess_cfg or {})}
        self._size = _pair(self.preprocess_cfg["size"])
        if self._size[0] != self._size[1]:
            raise ClipError(f"{name!r} has a non-square input size {self._size}; only square inputs are supported")
        self.image_size = self._size[0]
        self._check_preprocess()
        self.embed_dim = int(model_cfg["embed_dim"])
        text_cfg = model_cfg["text_cfg"]
        self.context_length = int(text_cfg.get("context_length", 77))
        self.tokenizer = open_clip.SimpleTokenizer(
            context_length=self.context_length, **(text_cfg.get("tokenizer_kwargs") or {})
        )
        self._mean = torch.tensor(self.preprocess_cfg["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.preprocess_cfg["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._fingerprint = _fingerprint(self.model, self.model_cfg, self.preprocess_cfg)
        self.text_cache = TextEmbeddingCache(cache_dir)

    def __repr__(self) -> str:
        return (
            f"ClipEmbedder(name={self.name!r}, embed_dim={self.embed_dim}, image_size={self.image_size}, "
            f"device={str(self.device)!r}, fingerprint={self._fingerprint!r})"
        )

    # ------------------------------------------------------------------ public
    def fingerprint(self) -> str:
        """Short hash (16 hex) of the architecture config, preprocessing and every weight tensor."""
        return self._fingerprint

    def meta(self) -> dict[str, Any]:
        """JSON-ready description: name, fingerprint, embed_dim, image_size, context_length, source."""
        return {
            "name": self.name,
            "fingerprint": self._fingerprint,
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
            "context_length": self.context_length,
            "source": self.source,
        }

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> normalised float32 ``(N, 3, S, S)`` on :attr:`device`."""
        array = _check_images(images)
        x = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        x = self._resize(x)
        return (x - self._mean) / self._std

    def encode_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Embed images.

        Parameters
        ----------
        images : ndarray, shape (N, H, W, 3), uint8
            RGB images of any size; resized to :attr:`image_size` as the model expects.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        ndarray, shape (N, embed_dim), float32
            L2-normalised rows.
        """
        array = _check_images(images)
        check_int("batch_size", batch_size, low=1)
        out = np.empty((array.shape[0], self.embed_dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, array.shape[0], batch_size):
                x = self.preprocess(array[start : start + batch_size])
                features = self.model.encode_image(x, normalize=True)
                out[start : start + batch_size] = features.float().cpu().numpy()
        return out

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts (cached per model fingerprint + text).

        Parameters
        ----------
        texts : sequence of str
            Captions; each is tokenized with open_clip's BPE tokenizer and truncated to
            :attr:`context_length` tokens.

        Returns
        -------
        ndarray, shape (N, embed_dim), float32
            L2-normalised rows.
        """
        items = _check_texts(texts)
        out = np.empty((len(items), self.embed_dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(items):
            cached = self.text_cache.get(self._fingerprint, text)
            if cached is None:
                missing.setdefault(text, []).append(i)
            else:
                out[i] = cached
        todo = list(missing)
        for start in range(0, len(todo), _TEXT_BATCH):
            chunk = todo[start : start + _TEXT_BATCH]
            embedded = self._embed_texts(chunk)
            for text, vector in zip(chunk, embedded):
                self.text_cache.put(self._fingerprint, text, vector, model=self.name)
                out[missing[text]] = vector
        return out

    # ------------------------------------------------------------------ internals
    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode():
            features = self.model.encode_text(tokens, normalize=True)
        return features.float().cpu().numpy()

    def _check_preprocess(self) -> None:
        cfg = self.preprocess_cfg
        if cfg.get("interpolation") not in _INTERPOLATIONS:
            cfg["interpolation"] = "bicubic"  # e.g. 'random' is a training-time augmentation
        if cfg.get("resize_mode") not in _RESIZE_MODES:
            raise ClipError(f"{self.name!r}: resize_mode {cfg.get('resize_mode')!r} is not one of {_RESIZE_MODES}")
        for key in ("mean", "std"):
            if len(cfg[key]) != 3:
                raise ClipError(f"{self.name!r}: preprocessing {key} must have 3 values, got {cfg[key]!r}")

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        target = self.image_size
        mode = self.preprocess_cfg["resize_mode"]
        if mode == "squash":
            return self._interpolate(x, (target, target))
        if mode == "shortest":
            scale = target / min(height, width)
            new = (max(target, round(height * scale)), max(target, round(width * scale)))
            x = self._interpolate(x, new)
            top = int(round((new[0] - target) / 2.0))
            left = int(round((new[1] - target) / 2.0))
            return x[..., top : top + target, left : left + target]
        scale = target / max(height, width)  # "longest": fit inside, pad with the fill colour
        new = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = self._interpolate(x, new)
        padded = torch.full(
            (x.shape[0], 3, target, target), float(self.preprocess_cfg.get("fill_color", 0)) / 255.0, device=x.device
        )
        top, left = (target - new[0]) // 2, (target - new[1]) // 2
        padded[..., top : top + new[0], left : left + new[1]] = x
        return padded

    def _interpolate(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        mode = self.preprocess_cfg["interpolation"]
        if mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
        return x.clamp_(0.0, 1.0)


# ---------------------------------------------------------------------- load_clip
def load_clip(
    model: str = "tiny",
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | os.PathLike | None = None,
) -> ClipEmbedder:
    """Load a CLIP model from local weights only; nothing is ever downloaded.

    Parameters
    ----------
    model : str
        ``"tiny"`` (the project's own architecture, trained by ``bci train clip``), any
        open_clip architecture name (``"ViT-B-32"``, ``"RN50"``, ...; see
        ``open_clip.list_models()``), or ``"local-dir:DIR"`` for an open_clip folder
        (``open_clip_config.json`` + weights file; ``weights`` must then be ``None``).
    weights : path, optional
        A directory written by ``bci train clip`` / :func:`bci.clip.save_clip`
        (``config.json`` + ``model.safetensors``), an open_clip folder, or a weights file
        (``.safetensors``, or ``.bin`` / ``.pt`` / ``.pth`` read with
        ``torch.load(weights_only=True)``). Pretrained tags (``"openai"``), ``hf-hub:``
        ids and URLs are refused.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    cache_dir : path, optional
        Directory for the on-disk text-embedding cache (memory only when ``None``).

    Returns
    -------
    ClipEmbedder

    Raises
    ------
    ClipError
        Unknown model name (known ones listed), no weights given, weights that do not
        fit the architecture (first mismatching tensor named with both shapes).
    OfflineError
        A pretrained tag, hub id, URL, or an architecture that needs Hugging Face files.
    FileNotFoundError
        A weights path that does not exist.
    """
    name = _check_model_name(model)
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights={weights!r} must be a path (str or os.PathLike) or None")
    resolved_device = resolve_device(device)
    if name.startswith("hf-hub:"):
        raise OfflineError(
            f"model={name!r} would be downloaded from the Hugging Face hub; this runtime never downloads at run "
            "time. Download the repository once elsewhere and pass model='local-dir:/path/to/it' (or the "
            "architecture name and weights='/path/to/open_clip_model.safetensors')"
        )
    if name.startswith("local-dir:"):
        if weights is not None:
            raise ValueError(f"model={name!r} is an open_clip folder that holds its own weights; pass weights=None")
        directory = Path(name[len("local-dir:") :])
        parts = _open_clip_dir(directory, name)
    else:
        if name != TINY_NAME:
            name = name.replace("/", "-")
            if name not in open_clip.list_models():
                raise ClipError(unknown_model_message(model))
            check_offline_buildable(registered_config(name)[0], name)
        parts = _resolve_weights(name, weights)
    model_cfg, preprocess_cfg, weights_path, source, display = parts
    module = _build_and_load(model_cfg, weights_path, display)
    return ClipEmbedder(
        module,
        name=display,
        model_cfg=model_cfg,
        preprocess_cfg=preprocess_cfg,
        device=resolved_device,
        cache_dir=cache_dir,
        source=source,
    )


_Parts = tuple[dict[str, Any], dict[str, Any], Path, str, str]


def _resolve_weights(name: str, weights: str | os.PathLike | None) -> _Parts:
    """(model_cfg, preprocess_cfg, weights file, source text, model name) for a named architecture."""
    if weights is None:
        raise ClipError(_no_weights_message(name))
    text = os.fspath(weights)
    if isinstance(text, str) and looks_like_hub_reference(text):
        refuse_hub_reference("" if name == TINY_NAME else name, text)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"CLIP weights {path} do not exist; {_no_weights_message(name)}")
    if path.is_file() and path.name == WEIGHTS_FILE and (path.parent / CONFIG_FILE).is_file():
        path = path.parent  # model.safetensors inside a saved folder: use the folder's config
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return _clip_dir(path, name)
        if (path / OPEN_CLIP_CONFIG_FILE).is_file():
            return _open_clip_dir(path, name, expected=name)
        raise ClipError(
            f"CLIP weights folder {path} holds neither {CONFIG_FILE} (written by 'bci train clip') nor "
            f"{OPEN_CLIP_CONFIG_FILE} (an open_clip folder); pass the weights file itself"
        )
    if name == TINY_NAME:
        model_cfg = tiny_config()
        preprocess = default_preprocess(model_cfg["vision_cfg"]["image_size"])
    else:
        model_cfg, preprocess = registered_config(name)
    return model_cfg, preprocess, path, str(path), name


def _clip_dir(directory: Path, name: str) -> _Parts:
    config = read_clip_dir_config(directory)
    if config["name"] != name:
        raise ClipError(
            f"{directory} holds a {config['name']!r} CLIP model, not {name!r}; "
            f"call load_clip({config['name']!r}, weights={str(directory)!r})"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
    return config["model_cfg"], config["preprocess_cfg"], weights, str(directory), name


def _open_clip_dir(directory: Path, label: str, expected: str | None = None) -> _Parts:
    if not directory.is_dir():
        raise FileNotFoundError(f"open_clip folder {directory} (from {label!r}) does not exist")
    path = directory / OPEN_CLIP_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {OPEN_CLIP_CONFIG_FILE}; it is not an open_clip folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClipError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise ClipError(f"{path} lacks a 'model_cfg' object")
    model_cfg = data["model_cfg"]
    display = expected or f"local-dir:{directory}"  # the folder's own config describes its weights
    vision_size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    preprocess = {**default_preprocess(vision_size), **data.get("preprocess_cfg", {})}
    return model_cfg, preprocess, find_open_clip_weights(directory), str(directory), display


def _build_and_load(model_cfg: dict[str, Any], weights: Path, name: str) -> nn.Module:
    check_offline_buildable(model_cfg, name)
    state = read_state_dict(weights)
    module = build_clip_model(model_cfg, name)
    state = check_state_dict(module, state, str(weights), name)
    module.load_state_dict(state, strict=True)
    return module.float()


def _no_weights_message(name: str) -> str:
    if name == TINY_NAME:
        return (
            "the tiny CLIP has no bundled weights: train it once with 'bci train clip --out DIR' "
            "(or run 'bci demo', which trains it), then pass that folder: load_clip('tiny', weights=DIR)"
        )
    return (
        f"open_clip architecture {name!r} needs local weights (random weights are useless and nothing is "
        f"downloaded at run time): pass weights='/path/to/open_clip_model.safetensors' (or .bin/.pt), or a folder"
    )


# ---------------------------------------------------------------------- checks
def resolve_device(device: str | torch.device) -> torch.device:
    """Validate a device name and check that it is available."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device={device!r} must be a str such as 'cpu' or 'cuda', or a torch.device")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device={device!r} is not a torch device name; use 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={device!r}: CUDA is not available here; use device='cpu'")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device={device!r}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: MPS is not available here; use device='cpu'")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported; use 'cpu', 'cuda' or 'mps'")
    return resolved


def _check_model_name(model: object) -> str:
    if not isinstance(model, str):
        raise TypeError(f"model={model!r} must be a str such as 'tiny' or 'ViT-B-32'")
    name = model.strip()
    if not name:
        raise ValueError("model='' is empty; use 'tiny' or an open_clip architecture name such as 'ViT-B-32'")
    return name


def _check_images(images: object) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array (N, H, W, 3) uint8, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(
            f"images must be uint8 (0..255), got dtype {images.dtype}; convert float images in [0, 1] with "
            "(np.clip(x, 0, 1) * 255).round().astype(np.uint8)"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        hint = " (one image? pass images[None])" if images.ndim == 3 and images.shape[-1] == 3 else ""
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}{hint}")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise ValueError(f"images must have H, W >= 1, got shape {images.shape}")
    return images


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"texts must be a sequence of str, got one str {texts!r}; pass [text]")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of str (list or tuple), got {type(texts).__name__}")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}]={text!r} must be a str")
    return items


def _pair(size: object) -> tuple[int, int]:
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)  # type: ignore[call-overload]


def _fingerprint(model: nn.Module, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any]) -> str:
    digest = hashlib.sha256(config_hash(model_cfg, preprocess_cfg).encode("ascii"))
    for key, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{data.dtype}|{tuple(data.shape)}|".encode("utf-8"))
        digest.update(data.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]
