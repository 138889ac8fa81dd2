"""Pixel-level generation: the conditional saliency GAN of NeuroImagen.

A pixel-level extractor f_θ maps an EEG window to a feature vector; the generator
``G(f_θ(x))`` turns it into a coarse RGB image (the "saliency map") that the optional
latent-diffusion stage refines. This module holds the two networks, their configs,
their safetensors checkpoint and the runtime step that turns features into uint8 images.

Checkpoint directory (see :func:`save_generator`)::

    config.json                  {"format": "bci-runtime.saliency-gan", "format_version": 1,
                                  "kind": "saliency_gan", "generator": {...},
                                  "discriminator": {...} | null, "metadata": {...}}
    generator.safetensors        generator state_dict
    discriminator.safetensors    (optional) discriminator state_dict, to resume training
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from bci.generation._io import ConfiguredModule, DictConfig, config_property, json_safe, positive_int, power_of_two
from bci.safe_io import (CheckpointError, CheckpointKind, checkpoint_dir, load_module, read_json_config,
                         write_checkpoint)
from streams._checks import check_bool, check_int

__all__ = [
    "DiscriminatorConfig",
    "GanCheckpoint",
    "GeneratorConfig",
    "PixelImageStep",
    "SaliencyDiscriminator",
    "SaliencyGenerator",
    "images_to_uint8",
    "load_discriminator",
    "load_generator",
    "load_pixel_step",
    "read_gan_checkpoint",
    "save_generator",
]

FORMAT = "bci-runtime.saliency-gan"
FORMAT_VERSION = 1
KIND = "saliency_gan"
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
_BASE_SIZE = 4  # spatial size the generator starts from and the discriminator ends at
_MIN_SIZE, _MAX_SIZE = 8, 256
_NORMS = ("batch", "group", "none")
_CONDITIONING = ("projection", "concat")
_HINT = (
    "convert it once, in an environment you trust: load the state_dict with torch.load(path, weights_only=True), "
    "put it into SaliencyGenerator(config) and write it with bci.generation.save_generator(generator, DIR)"
)
_KIND = CheckpointKind(what="saliency generator", hint=_HINT)


# ---------------------------------------------------------------------- configs
def _channels(base: int, cap: int, image_size: int, size: int) -> int:
    """Channels at spatial ``size``: ``base`` at full resolution, doubling per halving, capped."""
    return min(cap, base * (image_size // size))


def _choice(owner: str, name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{owner} {name}={value!r} must be one of {list(options)}")
    return value


def _check_sizes(config: GeneratorConfig | DiscriminatorConfig) -> str:
    """Check (and store as ints) the size fields both configs share; returns the owner name for messages."""
    owner = type(config).__name__
    object.__setattr__(config, "feature_dim", positive_int("feature_dim", config.feature_dim, owner))
    object.__setattr__(config, "image_size", power_of_two("image_size", config.image_size, owner, _MIN_SIZE,
                                                          _MAX_SIZE))
    object.__setattr__(config, "base_channels", positive_int("base_channels", config.base_channels, owner))
    object.__setattr__(config, "max_channels", positive_int("max_channels", config.max_channels, owner))
    if config.max_channels < config.base_channels:
        raise ValueError(f"{owner} max_channels={config.max_channels} must be >= base_channels={config.base_channels}")
    return owner


@dataclass(frozen=True)
class GeneratorConfig(DictConfig):
    """Architecture of :class:`SaliencyGenerator`.

    Parameters
    ----------
    feature_dim : int
        Size of the condition vector (the pixel-level extractor's embedding size).
    noise_dim : int
        Size of the noise vector concatenated to the features (0: no noise).
    image_size : int
        Output height and width: a power of two from 8 to 256 (32, 64, 128 typical).
    base_channels : int
        Channels of the last (full-resolution) block; doubled at each coarser block. The
        default 16 keeps a 64×64 image near 10-20 ms on one CPU core (the step runs inline).
    max_channels : int
        Cap on the channels of any block.
    norm : {"batch", "group", "none"}
        Normalisation after each convolution.
    """

    feature_dim: int = 128
    noise_dim: int = 0
    image_size: int = 64
    base_channels: int = 16
    max_channels: int = 256
    norm: str = "batch"

    def __post_init__(self) -> None:
        owner = _check_sizes(self)
        object.__setattr__(self, "noise_dim", check_int(f"{owner} noise_dim", self.noise_dim, low=0))
        _choice(owner, "norm", self.norm, _NORMS)


@dataclass(frozen=True)
class DiscriminatorConfig(DictConfig):
    """Architecture of :class:`SaliencyDiscriminator`.

    Parameters
    ----------
    feature_dim : int
        Size of the condition vector (same as the generator's).
    image_size : int
        Height and width of the images judged: a power of two from 8 to 256.
    base_channels : int
        Channels of the first (full-resolution) block; doubled at each downsampling.
    max_channels : int
        Cap on the channels of any block.
    conditioning : {"projection", "concat"}
        ``"projection"``: the projection discriminator of Miyato & Koyama (2018), logit
        ``= w·φ(x) + <E f, φ(x)>``. ``"concat"``: the condition is projected to
        ``cond_channels`` maps, tiled over the image and concatenated to the RGB channels.
    cond_channels : int
        Maps of the projected condition (``"concat"`` only).
    spectral_norm : bool
        Spectral normalisation on every convolution and linear layer.
    """

    feature_dim: int = 128
    image_size: int = 64
    base_channels: int = 32
    max_channels: int = 256
    conditioning: str = "projection"
    cond_channels: int = 8
    spectral_norm: bool = True

    def __post_init__(self) -> None:
        owner = _check_sizes(self)
        _choice(owner, "conditioning", self.conditioning, _CONDITIONING)
        object.__setattr__(self, "cond_channels", positive_int("cond_channels", self.cond_channels, owner))
        object.__setattr__(self, "spectral_norm", check_bool(f"{owner} spectral_norm", self.spectral_norm))


# ---------------------------------------------------------------------- networks
def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.Identity()


def _check_features(features: torch.Tensor, feature_dim: int, who: str) -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{who}: features must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2 or features.shape[1] != feature_dim:
        raise ValueError(
            f"{who} expects features of shape (batch, {feature_dim}), got {tuple(features.shape)}; the "
            "feature size must match the pixel-level extractor's embedding size"
        )


class SaliencyGenerator(ConfiguredModule):
    """Conditional generator ``G(f, z)``: feature vector (+ noise) to an RGB image in ``[-1, 1]``.

    ``[f, z]`` → linear to ``C × 4 × 4`` → norm, ReLU → ``log2(image_size / 4)`` blocks of
    (nearest 2× upsampling, 3×3 conv, norm, ReLU) → 3×3 conv to RGB → tanh.

    Parameters
    ----------
    config : GeneratorConfig
        Architecture.
    """

    config_class = GeneratorConfig

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__(config)
        size, base, cap = config.image_size, config.base_channels, config.max_channels
        c0 = _channels(base, cap, size, _BASE_SIZE)
        self.fc = nn.Linear(config.feature_dim + config.noise_dim, c0 * _BASE_SIZE * _BASE_SIZE)
        self.stem = nn.Sequential(_norm(config.norm, c0), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        res, c_in = _BASE_SIZE, c0
        while res < size:
            res *= 2
            c_out = _channels(base, cap, size, res)
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=config.norm == "none"),
                _norm(config.norm, c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(c_in, 3, 3, padding=1)

    feature_dim = config_property("feature_dim", "Size of the condition vector.")
    noise_dim = config_property("noise_dim", "Size of the noise vector (0: none).")
    image_size = config_property("image_size", "Output height and width.")

    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise ``(batch, noise_dim)`` on the generator's device."""
        device = self.fc.weight.device
        return torch.randn(batch, self.noise_dim, generator=generator, device="cpu").to(device)

    def forward(self, features: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images.

        Parameters
        ----------
        features : torch.Tensor
            ``(batch, feature_dim)`` float condition.
        noise : torch.Tensor, optional
            ``(batch, noise_dim)``; required when ``noise_dim > 0`` (see :meth:`sample_noise`).

        Returns
        -------
        torch.Tensor
            ``(batch, 3, image_size, image_size)`` in ``[-1, 1]``.
        """
        _check_features(features, self.feature_dim, "SaliencyGenerator")
        if self.noise_dim:
            if noise is None:
                raise ValueError(
                    f"SaliencyGenerator has noise_dim={self.noise_dim}: pass noise of shape "
                    f"({features.shape[0]}, {self.noise_dim}), e.g. generator.sample_noise({features.shape[0]})"
                )
            if noise.shape != (features.shape[0], self.noise_dim):
                raise ValueError(
                    f"SaliencyGenerator noise must have shape ({features.shape[0]}, {self.noise_dim}), "
                    f"got {tuple(noise.shape)}"
                )
            features = torch.cat([features, noise.to(features.dtype)], dim=1)
        elif noise is not None and noise.numel():
            raise ValueError(f"SaliencyGenerator has noise_dim=0 but got noise of shape {tuple(noise.shape)}")
        x = self.fc(features).view(features.shape[0], -1, _BASE_SIZE, _BASE_SIZE)
        return torch.tanh(self.to_rgb(self.blocks(self.stem(x))))


class SaliencyDiscriminator(ConfiguredModule):
    """Conditional discriminator ``D(image, f)`` returning one logit per image.

    ``log2(image_size / 4)`` blocks of (4×4 conv stride 2, LeakyReLU 0.2) → sum over the
    final 4×4 positions → linear; conditioned by projection or by concatenation (see
    :class:`DiscriminatorConfig`). No batch statistics, so DiffAugment and gradient
    penalties behave per sample.

    Parameters
    ----------
    config : DiscriminatorConfig
        Architecture.
    """

    config_class = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__(config)
        sn = _spectral_norm if config.spectral_norm else (lambda m: m)
        size, base, cap = config.image_size, config.base_channels, config.max_channels
        concat = config.conditioning == "concat"
        self.cond_maps = sn(nn.Linear(config.feature_dim, config.cond_channels)) if concat else None
        blocks: list[nn.Module] = []
        res, c_in = size, 3 + (config.cond_channels if concat else 0)
        while res > _BASE_SIZE:
            res //= 2
            c_out = _channels(base, cap, size // 2, res)
            blocks += [sn(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out = sn(nn.Linear(c_in, 1))
        self.embed = sn(nn.Linear(config.feature_dim, c_in, bias=False)) if not concat else None

    feature_dim = config_property("feature_dim", "Size of the condition vector.")
    image_size = config_property("image_size", "Height and width of the images judged.")

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Score images given their conditions.

        Parameters
        ----------
        images : torch.Tensor
            ``(batch, 3, image_size, image_size)`` in ``[-1, 1]``.
        features : torch.Tensor
            ``(batch, feature_dim)`` conditions.

        Returns
        -------
        torch.Tensor
            ``(batch,)`` logits (higher: judged real for this condition).
        """
        size = self.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(
                f"SaliencyDiscriminator expects images of shape (batch, 3, {size}, {size}), got {tuple(images.shape)}"
            )
        _check_features(features, self.feature_dim, "SaliencyDiscriminator")
        if features.shape[0] != images.shape[0]:
            raise ValueError(
                f"SaliencyDiscriminator got {images.shape[0]} images but {features.shape[0]} feature vectors"
            )
        x = images
        if self.cond_maps is not None:
            maps = self.cond_maps(features)[:, :, None, None].expand(-1, -1, size, size)
            x = torch.cat([images, maps.to(images.dtype)], dim=1)
        phi = self.blocks(x).sum(dim=(2, 3))
        logit = self.out(phi).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(features) * phi).sum(dim=1)
        return logit


# ---------------------------------------------------------------------- checkpoint
@dataclass(frozen=True)
class GanCheckpoint:
    """What ``config.json`` of a saliency-GAN checkpoint says (no weights loaded).

    Attributes
    ----------
    generator : GeneratorConfig
    discriminator : DiscriminatorConfig or None
        None when the checkpoint holds the generator only.
    metadata : dict
        Free-form JSON (training metrics, encoder reference, seed, ...).
    """

    generator: GeneratorConfig
    discriminator: DiscriminatorConfig | None
    metadata: dict[str, Any]


def save_generator(
    generator: SaliencyGenerator,
    directory: str | os.PathLike,
    *,
    discriminator: SaliencyDiscriminator | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a saliency-GAN checkpoint directory (``config.json`` + safetensors).

    Parameters
    ----------
    generator : SaliencyGenerator
        The generator (always saved).
    directory : path
        Created if needed; may exist if it holds no checkpoint files.
    discriminator : SaliencyDiscriminator, optional
        Also saved (``discriminator.safetensors``), to resume training.
    metadata : dict, optional
        Plain JSON stored as-is: training metrics, the pixel-level encoder's checkpoint
        path or fingerprint (``{"encoder": {...}}``), seeds, data hashes.
    overwrite : bool
        Replace a checkpoint already in ``directory``.

    Returns
    -------
    Path
        The checkpoint directory.
    """
    if not isinstance(generator, SaliencyGenerator):
        raise TypeError(f"save_generator expects a SaliencyGenerator, got {type(generator).__name__}")
    if discriminator is not None and not isinstance(discriminator, SaliencyDiscriminator):
        raise TypeError(f"discriminator must be a SaliencyDiscriminator or None, got {type(discriminator).__name__}")
    if discriminator is not None and discriminator.feature_dim != generator.feature_dim:
        raise ValueError(
            f"discriminator feature_dim={discriminator.feature_dim} differs from the generator's "
            f"feature_dim={generator.feature_dim}; they must share the condition"
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "generator": generator.get_config().to_dict(),
        "discriminator": discriminator.get_config().to_dict() if discriminator is not None else None,
        "metadata": json_safe(metadata or {}, "metadata"),
    }
    weights: dict[str, nn.Module] = {GENERATOR_FILE: generator}
    if discriminator is not None:
        weights[DISCRIMINATOR_FILE] = discriminator
    return write_checkpoint(directory, config, weights, overwrite=overwrite, known_files=(DISCRIMINATOR_FILE,))


def read_gan_checkpoint(directory: str | os.PathLike) -> GanCheckpoint:
    """Read and validate ``config.json`` of a saliency-GAN checkpoint without loading weights.

    Raises
    ------
    CheckpointError
        Missing directory or file, another format or kind, a newer format version, or an
        invalid config (the field is named).
    """
    path = checkpoint_dir(directory, _KIND)
    data = read_json_config(path, FORMAT, FORMAT_VERSION, _HINT)
    if data.get("kind") != KIND:
        raise CheckpointError(f"{path / 'config.json'} has kind {data.get('kind')!r}, expected {KIND!r}")
    try:
        gen = GeneratorConfig.from_dict(data.get("generator"))
        disc_data = data.get("discriminator")
        disc = DiscriminatorConfig.from_dict(disc_data) if disc_data is not None else None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: {exc}") from None
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path / 'config.json'} metadata must be a JSON object, got {type(metadata).__name__}")
    return GanCheckpoint(generator=gen, discriminator=disc, metadata=metadata)


def load_generator(directory: str | os.PathLike, device: str | torch.device = "cpu") -> SaliencyGenerator:
    """Rebuild the generator of a checkpoint, in eval mode, on ``device``.

    Raises
    ------
    CheckpointError
        Missing directory or file (named), wrong format, pickle-based files (refused), or
        weights that do not fit the config (the first mismatching tensor is named).
    """
    info = read_gan_checkpoint(directory)
    gen = SaliencyGenerator(info.generator)
    return load_module(gen, Path(directory) / GENERATOR_FILE, _KIND, "the saliency generator", device)


def load_discriminator(directory: str | os.PathLike, device: str | torch.device = "cpu") -> SaliencyDiscriminator:
    """Rebuild the discriminator of a checkpoint (in eval mode; call ``.train()`` to resume training)."""
    info = read_gan_checkpoint(directory)
    if info.discriminator is None:
        raise CheckpointError(
            f"checkpoint {directory} holds no discriminator (saved without discriminator=...); "
            "start a new one from a DiscriminatorConfig"
        )
    disc = SaliencyDiscriminator(info.discriminator)
    return load_module(disc, Path(directory) / DISCRIMINATOR_FILE, _KIND, "the saliency discriminator", device)


# ---------------------------------------------------------------------- runtime step
def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in ``[-1, 1]`` to ``(B, H, W, 3)`` uint8 (rounded, clipped)."""
    x = ((images.detach().float() + 1.0) * 127.5).round().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class PixelImageStep:
    """Features ``(B, F)`` → uint8 images ``(B, H, W, 3)`` with a trained generator.

    Deterministic: with ``noise_dim > 0`` one noise vector is drawn once from ``seed``
    and shared by every row, so an image depends only on its features (not on the
    batch it came in or on earlier calls); ``seed=None`` uses zero noise.

    Parameters
    ----------
    generator : SaliencyGenerator
        Put in eval mode and moved to ``device`` (the module itself, not a copy).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    seed : int or None
        Seed of the shared noise vector; None: zero noise.
    """

    def __init__(self, generator: SaliencyGenerator, *, device: str | torch.device = "cpu",
                 seed: int | None = 0) -> None:
        from bci.runtime.inference import select_device

        if not isinstance(generator, SaliencyGenerator):
            raise TypeError(f"PixelImageStep expects a SaliencyGenerator, got {type(generator).__name__}")
        if seed is not None:
            seed = check_int("seed", seed)
        self.device = select_device(device)
        self.generator = generator.to(self.device).eval()
        self.seed = seed
        self._noise = self._fixed_noise(generator.noise_dim, seed).to(self.device)

    @staticmethod
    def _fixed_noise(noise_dim: int, seed: int | None) -> torch.Tensor:
        if seed is None:
            return torch.zeros(1, noise_dim)
        return torch.randn(1, noise_dim, generator=torch.Generator("cpu").manual_seed(seed))

    @property
    def feature_dim(self) -> int:
        """Size of the feature vectors accepted."""
        return self.generator.feature_dim

    @property
    def image_size(self) -> int:
        """Height and width of the images produced."""
        return self.generator.image_size

    def __call__(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Generate one image per feature row.

        Parameters
        ----------
        features : np.ndarray or torch.Tensor
            ``(B, feature_dim)`` finite numbers.

        Returns
        -------
        np.ndarray
            ``(B, image_size, image_size, 3)`` uint8.
        """
        x = self._as_tensor(features)
        with torch.inference_mode():
            noise = self._noise.expand(x.shape[0], -1) if self.generator.noise_dim else None
            return images_to_uint8(self.generator(x, noise))

    def _as_tensor(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(features, np.ndarray):
            if features.dtype.kind not in "fiu":
                raise TypeError(f"features must hold numbers, got dtype {features.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        elif isinstance(features, torch.Tensor):
            x = features.detach().float()
        else:
            raise TypeError(f"features must be a numpy array or torch tensor, got {type(features).__name__}")
        if x.dim() != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(
                f"PixelImageStep: features have shape {tuple(x.shape)} (feature dim "
                f"{x.shape[-1] if x.dim() else 'none'}) but the generator expects (batch, {self.feature_dim}) "
                f"(feature dim {self.feature_dim}); use the pixel-level encoder the generator was trained on"
            )
        if not torch.isfinite(x).all():
            raise ValueError("PixelImageStep: features contain NaN or infinite values")
        return x.to(self.device)


def load_pixel_step(directory: str | os.PathLike, *, device: str | torch.device = "cpu", seed: int | None = 0,
                    feature_dim: int | None = None) -> PixelImageStep:
    """Load a generator checkpoint as a ready :class:`PixelImageStep`.

    Parameters
    ----------
    directory : path
        Saliency-GAN checkpoint (:func:`save_generator`).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    seed : int or None
        Seed of the shared noise vector (None: zero noise).
    feature_dim : int, optional
        Embedding size of the pixel-level encoder that will feed the step; a generator
        trained on another size is refused now rather than at the first window.

    Raises
    ------
    CheckpointError
        Unreadable checkpoint (see :func:`load_generator`).
    ValueError
        ``feature_dim`` differs from the generator's.
    """
    generator = load_generator(directory)
    if feature_dim is not None and feature_dim != generator.feature_dim:
        raise ValueError(
            f"generator {directory} takes features of dim {generator.feature_dim} but the pixel-level encoder "
            f"gives embeddings of dim {feature_dim}; use the generator trained on this encoder's embeddings"
        )
    return PixelImageStep(generator, device=device, seed=seed)
