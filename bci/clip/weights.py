"""Local CLIP weights: reading state dicts safely, checking them against an architecture, saving.

Weights come only from local files:

* ``.safetensors`` (read with safetensors),
* ``.bin`` / ``.pt`` / ``.pth`` (read with ``torch.load(weights_only=True)``: plain
  tensors only, no arbitrary objects are unpickled),
* a directory written by :func:`save_clip` (``config.json`` + ``model.safetensors``),
* an open_clip folder (``open_clip_config.json`` + a weights file), as in open_clip's
  ``local-dir:`` form.

Pretrained tags (``"openai"``, ``"laion2b_s34b_b79k"``), ``hf-hub:`` ids and URLs are
refused with :class:`~bci.clip.configs.OfflineError`: nothing is downloaded at run time.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bci.clip.configs import ClipError, OfflineError
from bci.safe_io import atomic_write, first_state_mismatch

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "OPEN_CLIP_CONFIG_FILE",
    "WEIGHTS_FILE",
    "check_state_dict",
    "find_open_clip_weights",
    "looks_like_hub_reference",
    "read_clip_dir_config",
    "read_state_dict",
    "refuse_hub_reference",
    "save_clip",
]

FORMAT = "bci-runtime.clip"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"
TORCH_SUFFIXES = (".bin", ".pt", ".pth")
_OPEN_CLIP_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.pth",
)


def _local_hint(model: str) -> str:
    name = model or "ViT-B-32"
    return (
        "Download the weights once on a machine with network access (e.g. open_clip_model.safetensors or "
        "open_clip_pytorch_model.bin from the model's Hugging Face repository), copy the file here and pass "
        f"its path: load_clip({name!r}, weights='/path/to/open_clip_model.safetensors')"
    )


# ---------------------------------------------------------------------- hub references
def looks_like_hub_reference(weights: str) -> bool:
    """True when ``weights`` names something to download rather than a local path.

    That is an ``hf-hub:`` id, a URL, a known open_clip pretrained tag, or a bare word
    with no path separator and no file suffix that does not exist locally.
    """
    text = weights.strip()
    if text.startswith(("hf-hub:", "hf://", "http://", "https://", "s3://", "gs://")):
        return True
    if os.path.exists(text):
        return False
    tags = {t.lower() for _, t in open_clip.list_pretrained()}
    if text.lower() in tags:
        return True
    return "/" not in text and os.sep not in text and Path(text).suffix == ""


def refuse_hub_reference(model: str, weights: str) -> None:
    """Raise :class:`OfflineError` for a pretrained tag / hub id / URL, with the way out."""
    text = weights.strip()
    tags = open_clip.list_pretrained_tags_by_model(model.replace("/", "-")) if model else []
    if text.startswith(("hf-hub:", "hf://")):
        kind = "is a Hugging Face hub id"
    elif "://" in text:
        kind = "is a URL"
    elif text.lower() in {t.lower() for _, t in open_clip.list_pretrained()}:
        kind = "is an open_clip pretrained tag"
    else:
        kind = "is neither an existing file nor a folder (a pretrained tag?)"
    shown = ", ".join(tags[:6]) + (f", ... ({len(tags)} in all)" if len(tags) > 6 else "")
    known = f" (open_clip's tags for {model!r}: {shown})" if tags and "tag" in kind else ""
    raise OfflineError(
        f"weights={weights!r} {kind}{known}; this runtime never downloads at run time. {_local_hint(model)}"
    )


# ---------------------------------------------------------------------- reading
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` file.

    A ``{"state_dict": ...}`` wrapper and a ``module.`` prefix (DistributedDataParallel)
    are removed, as open_clip does.

    Raises
    ------
    FileNotFoundError
        No such file.
    ClipError
        Unreadable file, a TorchScript archive or a pickle holding more than tensors,
        or an unsupported suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ClipError(f"{path} is not a readable safetensors file: {exc}") from None
    elif suffix in TORCH_SUFFIXES:
        state = _torch_load(path)
    else:
        raise ClipError(
            f"CLIP weights file {path} has suffix {path.suffix!r}; expected .safetensors, .bin, .pt or .pth"
        )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClipError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _torch_load(path: Path) -> Any:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("/code/") or "/code/" in n for n in archive.namelist()):
                raise ClipError(
                    f"{path} is a TorchScript archive (e.g. OpenAI's original CLIP release), which is not "
                    "loaded here; use the open_clip checkpoint of the same model (open_clip_pytorch_model.bin "
                    "or open_clip_model.safetensors) instead"
                )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign/unsafe files
        raise ClipError(
            f"{path} cannot be read with torch.load(weights_only=True) (only plain tensors are loaded, never "
            f"arbitrary pickled objects): {_torch_reason(exc)}; re-save it as .safetensors in an environment "
            "you trust"
        ) from None


def _torch_reason(exc: BaseException) -> str:
    """The informative line of a torch.load error, without terminal colour codes."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if "Unsupported" in line or "WeightsUnpickler" in line:
            return line.split(". Please")[0][:200]
    return lines[0][:200] if lines else type(exc).__name__


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> dict:
    """Adapt harmless differences, then check every tensor name and shape against ``model``.

    ``logit_scale`` / ``logit_bias`` stored as scalar vs 1-element tensors are reshaped,
    and a stale ``position_ids`` buffer of a Hugging Face text tower is dropped.

    Returns
    -------
    dict
        The state dict to load with ``strict=True``.

    Raises
    ------
    ClipError
        Naming the first tensor that is missing, unexpected, or of another shape
        (with the expected and found shapes).
    """
    state = dict(state)
    expected = model.state_dict()
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in expected and state[key].numel() == expected[key].numel() == 1:
            state[key] = state[key].reshape(expected[key].shape)
    state.pop("text.transformer.embeddings.position_ids", None)
    bad = first_state_mismatch(expected, state)
    if bad is None:
        return state
    where = f"weights {source} do not fit CLIP architecture {name!r}"
    if bad.kind == "missing":
        raise ClipError(f"{where}: tensor {bad.key!r} (expected shape {bad.expected_shape}) is missing from the file; "
                        "check that the file belongs to this architecture")
    if bad.kind == "shape":
        raise ClipError(f"{where}: tensor {bad.key!r} has shape {bad.file_shape} in the file, expected "
                        f"{bad.expected_shape}; check that the file belongs to this architecture")
    raise ClipError(f"{where}: the file has tensor {bad.key!r} (shape {bad.file_shape}) that the architecture lacks"
                    + (f", and {bad.n_unexpected - 1} more" if bad.n_unexpected > 1 else ""))


def find_open_clip_weights(directory: Path) -> Path:
    """The weights file of an open_clip folder (open_clip's order of preference)."""
    for candidate in _OPEN_CLIP_WEIGHT_NAMES:
        if (directory / candidate).is_file():
            return directory / candidate
    found = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".safetensors", *TORCH_SUFFIXES))
    if not found:
        raise FileNotFoundError(
            f"{directory} holds no CLIP weights file (.safetensors, .bin, .pt, .pth); files there: "
            f"{_listing(directory)}"
        )
    found.sort(key=lambda p: p.suffix.lower() != ".safetensors")
    return found[0]


def read_clip_dir_config(directory: Path) -> dict[str, Any]:
    """Read and validate ``directory/config.json`` written by :func:`save_clip`."""
    path = directory / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}; files there: {_listing(directory)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClipError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ClipError(f"{path} has format {found!r}, expected {FORMAT!r} (a CLIP folder written by save_clip)")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise ClipError(f"{path} has format_version {version!r}; this runtime reads up to {FORMAT_VERSION}")
    for key in ("name", "model_cfg", "preprocess_cfg"):
        if key not in data:
            raise ClipError(f"{path} lacks {key!r}")
    return data


# ---------------------------------------------------------------------- saving
def save_clip(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    name: str,
    model_cfg: dict[str, Any],
    preprocess_cfg: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a CLIP model as ``config.json`` + ``model.safetensors`` (+ ``open_clip_config.json``).

    ``open_clip_config.json`` makes the folder loadable by open_clip itself
    (``open_clip.create_model("local-dir:DIR")``) as well as by
    ``load_clip(name, weights=DIR)``.

    Parameters
    ----------
    model : torch.nn.Module
        The open_clip model.
    directory : path
        Created if needed; existing model files there are replaced.
    name : str
        Architecture name (``"tiny"``).
    model_cfg, preprocess_cfg : dict
        Architecture and preprocessing (JSON-serialisable).
    extra : dict, optional
        More JSON-serialisable entries for ``config.json`` (training settings, metrics).

    Returns
    -------
    Path
        ``directory``.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).unlink(missing_ok=True)  # config last: a crash never leaves a stale one
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    open_clip_cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    atomic_write(directory / OPEN_CLIP_CONFIG_FILE, lambda p: p.write_text(_json(open_clip_cfg), encoding="utf-8"))
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "model_cfg": model_cfg,
        "preprocess_cfg": preprocess_cfg,
        **(extra or {}),
    }
    atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(_json(config), encoding="utf-8"))
    return directory


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def _listing(directory: Path) -> str:
    names = sorted(p.name for p in directory.iterdir())
    return ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "(empty)"
