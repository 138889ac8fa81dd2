"""Stimulus encoder of the fMRI dual encoder: a small CNN from stimulus images to an embedding.

The dual encoder (SPEC §5, "fMRI") learns two maps into one space, trained together with
a symmetric InfoNCE loss: the fMRI encoder (``fmri_mlp``) from voxels, and this CNN from
the stimulus image. At run time the CNN embeds the candidate stimuli (a gallery of
patterns) and each fMRI trial retrieves the nearest one; it replaces CLIP where CLIP's
image space does not separate the stimuli (binary Miyawaki patterns).

Input: images ``(n, H, W, 3)`` uint8 (or ``(n, H, W)``), turned to grey, scaled to [0, 1]
and area-resized to ``image_size`` × ``image_size``. A checkpoint is a directory with
``config.json`` (:class:`StimulusConfig` + format tag) and ``model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from bci.models.checkpoint import WEIGHTS_FILE
from bci.safe_io import CONFIG_FILE, CheckpointError, read_json_config, refuse_pickles, write_checkpoint
from streams._checks import check_int

__all__ = ["STIMULUS_FORMAT", "PatternEmbedder", "StimulusCNN", "StimulusConfig", "images_to_grey",
           "load_stimulus_encoder", "pattern_fingerprint", "pattern_grid", "pattern_probabilities", "pattern_query",
           "save_stimulus_encoder"]

STIMULUS_FORMAT = "bci-runtime.stimulus-encoder"
STIMULUS_FORMAT_VERSION = 1
_HINT = "retrain with 'bci train fmri --objective dual' (stimulus encoders are safetensors + JSON)"


@dataclass(frozen=True)
class StimulusConfig:
    """Shape of a :class:`StimulusCNN`.

    Parameters
    ----------
    image_size : int
        Side the (grey) images are resized to before the CNN.
    channels : tuple of int
        Output channels of the conv blocks (each: 3×3 conv, GroupNorm, SiLU); the first
        keeps the resolution, each later one halves it.
    embed_dim : int
        Embedding size (the fMRI encoder's ``embed_dim``).
    """

    image_size: int = 20
    channels: tuple[int, ...] = (32, 64)
    embed_dim: int = 256

    def __post_init__(self) -> None:
        for name in ("image_size", "embed_dim"):
            object.__setattr__(self, name, check_int(f"StimulusConfig: {name}", getattr(self, name), low=1))
        chans = tuple(check_int(f"StimulusConfig: channels[{i}]", c, low=1) for i, c in enumerate(self.channels))
        if not chans:
            raise ValueError(f"StimulusConfig: channels={self.channels!r} must be a non-empty list of positive ints")
        object.__setattr__(self, "channels", chans)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {**dataclasses.asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StimulusConfig:
        """Inverse of :meth:`to_dict` (unknown keys refused by name)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"stimulus encoder config has unknown keys {unknown}; known: {sorted(known)}")
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)


def images_to_grey(images: np.ndarray, size: int) -> torch.Tensor:
    """Images ``(n, H, W[, 3])`` uint8 → ``(n, 1, size, size)`` float32 grey in [0, 1] (area resize).

    Raises
    ------
    ValueError
        Images that are not ``(n, H, W)`` or ``(n, H, W, 3)``.
    """
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[3] == 3:
        x = x.astype(np.float32).mean(axis=3)
    elif x.ndim != 3:
        raise ValueError(f"images have shape {x.shape}; expected (n, H, W, 3) or (n, H, W)")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None] / 255.0
    if t.shape[2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="area") if min(t.shape[2:]) >= size else \
            F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t


class StimulusCNN(nn.Module):
    """Conv blocks → global average pool → linear: ``(n, 1, S, S)`` → ``(n, embed_dim)``.

    Parameters
    ----------
    config : StimulusConfig
    """

    def __init__(self, config: StimulusConfig) -> None:
        super().__init__()
        if not isinstance(config, StimulusConfig):
            raise TypeError(f"config must be a StimulusConfig, got {type(config).__name__}")
        self.config = config
        layers: list[nn.Module] = []
        width = 1
        for i, c in enumerate(config.channels):
            layers += [nn.Conv2d(width, c, 3, stride=1 if i == 0 else 2, padding=1),
                       nn.GroupNorm(min(8, c), c), nn.SiLU()]
            width = c
        self.features = nn.Sequential(*layers)
        # position matters for retinotopic stimuli: keep a coarse spatial map, not only a global pool
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(width * 16, config.embed_dim)

    @property
    def embed_dim(self) -> int:
        """Embedding size."""
        return self.config.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 1, S, S)`` grey images in [0, 1] → ``(n, embed_dim)``."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"StimulusCNN input has shape {tuple(x.shape)}; expected (n, 1, S, S)")
        return self.head(self.pool(self.features(x - 0.5)).flatten(1))

    #: Shown in gallery metadata (galleries call their embedder's ``name``).
    name = "stimulus-cnn"

    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the config and the weights (galleries record it; the runtime compares)."""
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for key, value in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Gallery embedder interface: :meth:`embed_images`."""
        return self.embed_images(images)

    def encode_text(self, texts: Any) -> np.ndarray:
        """Not available: a stimulus encoder embeds images only."""
        raise ValueError("a stimulus encoder embeds images, not text; build the gallery with --source image")

    @torch.no_grad()
    def embed_images(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """Embeddings ``(n, embed_dim)`` float32 of uint8 images, in eval mode, on the model's device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        x = images_to_grey(images, self.config.image_size)
        out = [self(x[i : i + batch].to(device)).float().cpu().numpy() for i in range(0, len(x), batch)]
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)


def pattern_fingerprint(grid: int) -> str:
    """What a pattern gallery records as its embedder fingerprint (the runtime compares it with the model's grid)."""
    return f"pattern-grid-{int(grid)}"


def _centre_rows(x: np.ndarray) -> np.ndarray:
    """Rows minus their mean, unit norm (constant rows stay zero): cosine of two such rows = Pearson r."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 1e-12, norms, 1.0)).astype(np.float32)


def pattern_grid(config: Any, where: str) -> int | None:
    """The ``pattern_grid`` of a pattern decoder's :class:`~bci.models.ModelConfig`; None for any other model.

    Raises
    ------
    CheckpointError
        ``extra.embedding_space`` is ``"pattern"`` but ``extra.pattern_grid`` is missing or
        does not square to the output size (``where`` names the model in the message).
    """
    extra: Any = config.extra or {}
    if not isinstance(extra, dict) or extra.get("embedding_space") != "pattern":
        return None
    grid = extra.get("pattern_grid")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1 or grid * grid != config.embed_dim:
        raise CheckpointError(f"{where} is a pattern decoder but records pattern_grid={grid!r} for "
                              f"{config.embed_dim} outputs; retrain it with 'bci train fmri --objective pattern'")
    return grid


def pattern_probabilities(logits: np.ndarray) -> np.ndarray:
    """A pattern decoder's logits → the probability that each cell is on (sigmoid, float64)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, dtype=np.float64), -60.0, 60.0)))


def pattern_query(logits: np.ndarray) -> np.ndarray:
    """A pattern decoder's logits ``(B, grid²)`` → the vectors it retrieves with from a pattern gallery.

    Probabilities (sigmoid), centred and unit-norm per row: their cosine with a
    :class:`PatternEmbedder` gallery row is the Pearson correlation between the decoded
    pattern and the candidate, the identification rule of ``bci evaluate``.
    """
    return _centre_rows(pattern_probabilities(logits))


class PatternEmbedder:
    """Gallery embedder for fMRI **pattern decoders**: each candidate image as its ``grid × grid`` pattern.

    The image is turned grey and area-resized to ``grid × grid`` (as the decoder's training
    targets), then centred and scaled to unit norm, so a gallery built with it
    (``bci gallery build PATTERNS/ OUT --pattern-grid 10``) ranks candidates by Pearson
    correlation with the decoded pattern (:func:`pattern_query`).

    Parameters
    ----------
    grid : int
        Pattern side; must equal the decoder's ``pattern_grid``.
    """

    name = "pattern"

    def __init__(self, grid: int) -> None:
        self.grid = check_int("grid", grid, low=2)

    @property
    def embed_dim(self) -> int:
        """``grid²``."""
        return self.grid * self.grid

    def fingerprint(self) -> str:
        """:func:`pattern_fingerprint` of the grid."""
        return pattern_fingerprint(self.grid)

    def _grey(self, images: np.ndarray) -> np.ndarray:
        return images_to_grey(images, self.grid).reshape(len(images), -1).numpy()

    def flat_images(self, images: np.ndarray) -> np.ndarray:
        """Rows of ``images`` that are one flat grey at this grid (no pattern: correlation undefined)."""
        return self._flat_rows(self._grey(images))

    @staticmethod
    def _flat_rows(grey: np.ndarray) -> np.ndarray:
        return np.flatnonzero(grey.std(axis=1) < 1e-6)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Centred unit-norm ``(n, grid²)`` float32 patterns of uint8 images.

        Raises
        ------
        ValueError
            An image that is one flat grey at this grid (its correlation with anything is undefined).
        """
        grey = self._grey(images)
        flat = self._flat_rows(grey)
        if len(flat):
            raise ValueError(f"image row {int(flat[0])} is one flat grey at {self.grid}x{self.grid} "
                             f"({len(flat)} such image(s)): a pattern decoder identifies candidates by correlation, "
                             "which is undefined for it; leave it out of the gallery")
        return _centre_rows(grey)

    def encode_text(self, texts: Any) -> np.ndarray:
        """Not available: patterns are images."""
        raise ValueError("a pattern gallery embeds images, not text; build it with --source image")


def save_stimulus_encoder(model: StimulusCNN, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created; replaced if present)."""
    if not isinstance(model, StimulusCNN):
        raise TypeError(f"model must be a StimulusCNN, got {type(model).__name__}")
    header = {"format": STIMULUS_FORMAT, "format_version": STIMULUS_FORMAT_VERSION}
    return write_checkpoint(directory, {**header, **model.config.to_dict()}, {WEIGHTS_FILE: model}, overwrite=True,
                            tensor_metadata={"format": STIMULUS_FORMAT}, allow_nan=True)


def load_stimulus_encoder(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> StimulusCNN:
    """Load a stimulus encoder written by :func:`save_stimulus_encoder` (eval mode).

    Raises
    ------
    CheckpointError
        Missing files, another format, weights that do not fit the config, or a pickle.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"stimulus encoder directory {directory} does not exist; it is written by "
                              "'bci train fmri --objective dual' as OUT/stimulus")
    cfg_path = directory / CONFIG_FILE
    refuse_pickles(directory, _HINT, "stimulus encoder")  # even beside a valid config: never load one by mistake
    data = read_json_config(directory, STIMULUS_FORMAT, STIMULUS_FORMAT_VERSION, _HINT, what="stimulus encoder",
                            fix="it is written by 'bci train fmri --objective dual' as OUT/stimulus")
    body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    try:
        model = StimulusCNN(StimulusConfig.from_dict(body))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: {exc}") from None
    weights = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{weights} does not fit the config in {cfg_path}: {first}") from None
    return model.to(device).eval()
