"""Latent-diffusion img2img: refine the pixel-level image with the sample-level embedding.

The combination step of NeuroImagen: resize the saliency image G(f_θ(x)) to the VAE's
size, encode it with the latent-diffusion VAE, add noise up to ``strength``, denoise with
the UNet conditioned (cross-attention) on the sample-level embedding h projected to a
token sequence, decode. Built from diffusers components (``AutoencoderKL``,
``UNet2DConditionModel``, a scheduler); no text encoder, no tokenizer, no
``StableDiffusionImg2ImgPipeline``.

diffusers is the optional extra ``diffusion`` and is imported lazily: without it this
module still imports, :func:`diffusion_status` returns a one-line reason, and building a
:class:`LatentImg2Img` raises :class:`DiffusionUnavailable`. Weights are read from a
local directory only (``local_files_only=True``, safetensors only); nothing is
downloaded.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bci.generation._io import ConfiguredModule, DictConfig, config_property, json_safe, positive_int
from bci.safe_io import (CheckpointError, CheckpointKind, checkpoint_dir, listing, load_module, pickle_message,
                         read_json_config, write_checkpoint)
from streams._checks import check_float, check_int

__all__ = [
    "DiffusionUnavailable",
    "EmbeddingToTokens",
    "LatentImg2Img",
    "ProjectorConfig",
    "diffusion_status",
    "load_projector",
    "save_projector",
]

INSTALL_HINT = "install the extra with: pip install 'bci-runtime[diffusion]'"
PROJECTOR_FORMAT = "bci-runtime.embedding-to-tokens"
PROJECTOR_FORMAT_VERSION = 1
PROJECTOR_FILE = "projector.safetensors"
PROJECTOR_DIR = "projector"
_PROJECTOR_MODES = ("linear", "shared")
_SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
}
_LAYOUT = (
    "a diffusers-layout directory: vae/ (config.json + diffusion_pytorch_model.safetensors), "
    "unet/ (config.json + diffusion_pytorch_model.safetensors), scheduler/ (scheduler_config.json), "
    "projector/ (config.json + projector.safetensors, or pass projector=)"
)
_PROJECTOR_HINT = (
    "convert it once, in an environment you trust: load the state_dict with torch.load(path, weights_only=True) "
    "into EmbeddingToTokens(...) and write it with bci.generation.save_projector(projector, DIR)"
)
_PROJECTOR_KIND = CheckpointKind(what="projector", hint=_PROJECTOR_HINT)
_DIFFUSERS_HINT = (
    "convert it once, in an environment you trust: Model.from_pretrained(DIR, use_safetensors=False) then "
    "model.save_pretrained(DIR, safe_serialization=True) (diffusers), which writes "
    "diffusion_pytorch_model.safetensors"
)

_diffusers_module: ModuleType | None = None


class DiffusionUnavailable(ImportError, ValueError):
    """The latent-diffusion stage cannot run: the ``diffusion`` extra (diffusers) is missing."""


# ---------------------------------------------------------------------- availability
def _import_diffusers() -> ModuleType:
    """Import diffusers once; any failure becomes :class:`DiffusionUnavailable` with the reason."""
    global _diffusers_module
    if _diffusers_module is None:
        try:
            import diffusers
        except Exception as exc:  # a broken optional extra (missing, or incompatible torch) means "unavailable"
            raise DiffusionUnavailable(
                f"latent diffusion needs diffusers, which cannot be imported ({type(exc).__name__}: {exc}); "
                f"{INSTALL_HINT}"
            ) from exc
        _diffusers_module = diffusers
    return _diffusers_module


def diffusion_status(directory: str | os.PathLike | None = None) -> str | None:
    """Why latent diffusion cannot run, in one line, or None when it can.

    Parameters
    ----------
    directory : path, optional
        Also check this weights directory's layout (files only; nothing is loaded).

    Returns
    -------
    str or None
        None when diffusers imports (and ``directory``, if given, has the expected
        layout); otherwise a one-line reason with what to do, for the runtime to log once.
    """
    try:
        _import_diffusers()
    except DiffusionUnavailable as exc:
        return f"latent diffusion is off: {exc}"
    if directory is not None:
        problems = _layout_problems(Path(directory))
        if problems:
            return f"latent diffusion is off: {problems[0]}"
    return None


def _layout_problems(directory: Path, *, need_projector: bool = True) -> list[str]:
    """What is missing from a diffusers-layout weights directory (empty list: complete)."""
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        return [f"weights directory {directory} {what}; expected {_LAYOUT}"]
    wanted = {"vae": "config.json", "unet": "config.json", "scheduler": "scheduler_config.json"}
    if need_projector:
        wanted[PROJECTOR_DIR] = "config.json"
    problems = []
    for sub, config in wanted.items():
        folder = directory / sub
        if not (folder / config).is_file():
            problems.append(
                f"{directory} has no {sub}/{config} (found: {listing(directory)}); expected {_LAYOUT}"
            )
        elif sub in ("vae", "unet") and not any(folder.glob("*.safetensors")):
            pickles = sorted(p.name for p in folder.glob("*.bin"))
            problems.append(
                pickle_message(folder / pickles[0], _DIFFUSERS_HINT) if pickles
                else f"{folder} has no *.safetensors weights (found: {listing(folder)}); expected {_LAYOUT}"
            )
    return problems


# ---------------------------------------------------------------------- embedding -> tokens
@dataclass(frozen=True)
class ProjectorConfig(DictConfig):
    """Shape of :class:`EmbeddingToTokens`.

    Parameters
    ----------
    embed_dim : int
        Size of the input embedding (the sample-level encoder's CLIP-space output).
    seq_len : int
        Number of tokens (SD 1.x: 77).
    token_dim : int
        Size of each token: the UNet's ``cross_attention_dim`` (SD 1.x: 768, SD 2.x: 1024).
    mode : {"linear", "shared"}
        ``"linear"``: one linear map to ``seq_len × token_dim`` (``embed_dim × 59,136``
        weights for SD 1.x). ``"shared"``: one linear map to ``token_dim`` added to learned
        per-position tokens (``seq_len`` times fewer weights).
    """

    embed_dim: int = 768
    seq_len: int = 77
    token_dim: int = 768
    mode: str = "linear"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("embed_dim", "seq_len", "token_dim"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name), owner))
        if self.mode not in _PROJECTOR_MODES:
            raise ValueError(f"{owner} mode={self.mode!r} must be one of {list(_PROJECTOR_MODES)}")


class EmbeddingToTokens(ConfiguredModule):
    """Map a ``(B, D)`` embedding to the ``(B, seq_len, token_dim)`` sequence a UNet attends to.

    A linear map (see :class:`ProjectorConfig` ``mode``) followed by LayerNorm over each
    token, so the tokens have the scale of text-encoder hidden states.

    Parameters
    ----------
    embed_dim : int
        Input size D.
    seq_len : int
        Tokens produced (SD 1.x: 77).
    token_dim : int
        Token size, the UNet's ``cross_attention_dim`` (SD 1.x: 768).
    mode : {"linear", "shared"}
        See :class:`ProjectorConfig`.
    """

    config_class = ProjectorConfig

    def __init__(self, embed_dim: int, seq_len: int = 77, token_dim: int = 768, *, mode: str = "linear") -> None:
        super().__init__(ProjectorConfig(embed_dim=embed_dim, seq_len=seq_len, token_dim=token_dim, mode=mode))
        cfg = self._config
        if cfg.mode == "linear":
            self.proj = nn.Linear(cfg.embed_dim, cfg.seq_len * cfg.token_dim)
            self.positions = None
        else:
            self.proj = nn.Linear(cfg.embed_dim, cfg.token_dim)
            self.positions = nn.Parameter(torch.randn(cfg.seq_len, cfg.token_dim) * 0.02)
        self.norm = nn.LayerNorm(cfg.token_dim)

    embed_dim = config_property("embed_dim", "Input size D.")
    seq_len = config_property("seq_len", "Number of tokens produced.")
    token_dim = config_property("token_dim", "Size of each token.")

    @classmethod
    def from_config(cls, config: ProjectorConfig) -> EmbeddingToTokens:
        """Build a projector from its config."""
        if not isinstance(config, ProjectorConfig):
            raise TypeError(f"config must be a ProjectorConfig, got {type(config).__name__}")
        return cls(config.embed_dim, config.seq_len, config.token_dim, mode=config.mode)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim)`` → ``(B, seq_len, token_dim)``."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"EmbeddingToTokens expects embeddings of shape (batch, {self.embed_dim}), "
                f"got {tuple(embeddings.shape)}"
            )
        if self.positions is None:
            tokens = self.proj(embeddings).view(-1, self.seq_len, self.token_dim)
        else:
            tokens = self.proj(embeddings)[:, None, :] + self.positions
        return self.norm(tokens)


def save_projector(projector: EmbeddingToTokens, directory: str | os.PathLike, *,
                   metadata: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``directory/config.json`` + ``directory/projector.safetensors``.

    Parameters
    ----------
    projector : EmbeddingToTokens
        The trained projection.
    directory : path
        Usually ``<weights dir>/projector`` so :meth:`LatentImg2Img.from_pretrained_dir` finds it.
    metadata : dict, optional
        Plain JSON (the sample-level encoder it was trained with, metrics, ...).
    overwrite : bool
        Replace an existing projector checkpoint.
    """
    if not isinstance(projector, EmbeddingToTokens):
        raise TypeError(f"save_projector expects an EmbeddingToTokens, got {type(projector).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    config = {
        "format": PROJECTOR_FORMAT,
        "format_version": PROJECTOR_FORMAT_VERSION,
        "projector": projector.get_config().to_dict(),
        "metadata": json_safe(metadata or {}, "metadata"),
    }
    return write_checkpoint(directory, config, {PROJECTOR_FILE: projector}, overwrite=overwrite)


def load_projector(directory: str | os.PathLike, device: str | torch.device = "cpu") -> EmbeddingToTokens:
    """Rebuild an :class:`EmbeddingToTokens` from :func:`save_projector`'s directory (eval mode).

    Raises
    ------
    CheckpointError
        Missing directory or file, wrong format, pickle files (refused), or weights that do
        not fit the config (the first mismatching tensor is named).
    """
    path = checkpoint_dir(directory, _PROJECTOR_KIND)
    data = read_json_config(path, PROJECTOR_FORMAT, PROJECTOR_FORMAT_VERSION, _PROJECTOR_HINT)
    try:
        projector = EmbeddingToTokens.from_config(ProjectorConfig.from_dict(data.get("projector")))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: {exc}") from None
    return load_module(projector, path / PROJECTOR_FILE, _PROJECTOR_KIND, "the embedding-to-tokens projector",
                       device)


# ---------------------------------------------------------------------- img2img
class LatentImg2Img:
    """Img2img with a latent-diffusion VAE + UNet, conditioned on a projected embedding.

    Calls are serialised by a lock (the scheduler keeps per-call state), so one instance
    can be shared by threads.

    Parameters
    ----------
    vae : diffusers.AutoencoderKL
        Latent autoencoder; ``config.scaling_factor`` (and ``shift_factor`` when set) scale
        the latents.
    unet : diffusers.UNet2DConditionModel
        Denoiser; its ``cross_attention_dim`` must equal ``projector.token_dim`` and its
        ``in_channels`` the VAE's ``latent_channels``.
    scheduler : diffusers.SchedulerMixin
        Noise schedule (DDIM recommended for few steps).
    projector : EmbeddingToTokens
        ``(B, D)`` embedding → ``(B, seq_len, cross_attention_dim)``.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``; all modules are moved there.
    dtype : torch.dtype
        Compute dtype (float32; float16 on CUDA to halve memory).
    image_size : int, optional
        Side of the square images diffused; default the UNet's ``sample_size`` × the VAE's
        downsampling factor (512 for SD 1.5). Must be a multiple of that factor.
    """

    def __init__(self, vae: Any, unet: Any, scheduler: Any, projector: EmbeddingToTokens, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 image_size: int | None = None) -> None:
        from bci.runtime.inference import select_device

        diffusers = _import_diffusers()
        _check_components(diffusers, vae, unet, scheduler, projector)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype={dtype!r} must be a floating torch.dtype such as torch.float32")
        self.device = select_device(device)
        self.dtype = dtype
        self.vae = _to(vae, self.device, dtype).eval()
        self.unet = _to(unet, self.device, dtype).eval()
        self.projector = _to(projector, self.device, dtype).eval()
        self.scheduler = scheduler
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_size = self._resolve_size(image_size)
        self._step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters
        self._lock = threading.Lock()

    def _resolve_size(self, image_size: int | None) -> int:
        factor = self.vae_scale_factor
        if image_size is None:
            sample = self.unet.config.sample_size
            sample = sample[0] if isinstance(sample, (list, tuple)) else sample
            return int(sample) * factor
        image_size = positive_int("image_size", image_size, "LatentImg2Img")
        if image_size % factor:
            raise ValueError(
                f"LatentImg2Img image_size={image_size} must be a multiple of the VAE's downsampling factor "
                f"{factor} (e.g. {max(factor, image_size // factor * factor)})"
            )
        return image_size

    @property
    def embed_dim(self) -> int:
        """Size of the embeddings accepted (the projector's input)."""
        return self.projector.embed_dim

    # ------------------------------------------------------------------ building
    @classmethod
    def from_components(cls, vae: Any, unet: Any, scheduler: Any, projector: EmbeddingToTokens,
                        **kwargs: Any) -> LatentImg2Img:
        """Same as the constructor (``device``, ``dtype``, ``image_size`` as keywords)."""
        return cls(vae, unet, scheduler, projector, **kwargs)

    @classmethod
    def from_pretrained_dir(cls, directory: str | os.PathLike, *,
                            projector: EmbeddingToTokens | str | os.PathLike | None = None,
                            device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                            image_size: int | None = None, scheduler: str | None = None,
                            variant: str | None = None) -> LatentImg2Img:
        """Load from a local diffusers-layout directory (never downloads).

        Parameters
        ----------
        directory : path
            Holds ``vae/``, ``unet/``, ``scheduler/`` as written by diffusers' ``save_pretrained``
            (a Stable Diffusion 1.x/2.x folder works; ``text_encoder/``, ``tokenizer/`` and the
            rest are ignored) and, unless ``projector`` is given, ``projector/``.
        projector : EmbeddingToTokens or path, optional
            The projection to use instead of ``directory/projector``.
        device, dtype, image_size
            As in the constructor.
        scheduler : {"ddim", "ddpm", "pndm", "euler", "dpm"}, optional
            Replace the saved scheduler class (keeping its noise schedule); None keeps it.
        variant : str, optional
            Weights variant, e.g. ``"fp16"`` for ``diffusion_pytorch_model.fp16.safetensors``.

        Raises
        ------
        FileNotFoundError
            Missing directory or sub-folder (the expected layout is listed).
        CheckpointError
            Pickle-only weights (refused) or weights that do not fit their config.
        DiffusionUnavailable
            diffusers is not installed.
        """
        diffusers = _import_diffusers()
        if scheduler is not None and scheduler not in _SCHEDULERS:
            raise ValueError(
                f"scheduler={scheduler!r} must be one of {sorted(_SCHEDULERS)} or None (keep the saved one)"
            )
        path = Path(directory)
        problems = _layout_problems(path, need_projector=projector is None)
        if problems:
            if any(p.startswith("refusing") for p in problems):
                raise CheckpointError(next(p for p in problems if p.startswith("refusing")))
            raise FileNotFoundError("; ".join(problems[:1]) + (f" (and {len(problems) - 1} more)"
                                                               if len(problems) > 1 else ""))
        if projector is None or isinstance(projector, (str, os.PathLike)):
            projector = load_projector(path / PROJECTOR_DIR if projector is None else projector)
        opts = {"local_files_only": True, "use_safetensors": True, "torch_dtype": dtype, "variant": variant,
                # without accelerate, diffusers would log a warning and fall back to False anyway
                "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
        vae = _load_part(diffusers.AutoencoderKL, path / "vae", opts)
        unet = _load_part(diffusers.UNet2DConditionModel, path / "unet", opts)
        sched = _load_scheduler(diffusers, path / "scheduler", scheduler)
        return cls(vae, unet, sched, projector, device=device, dtype=dtype, image_size=image_size)

    def save_pretrained(self, directory: str | os.PathLike, *, metadata: dict[str, Any] | None = None,
                        overwrite: bool = False) -> Path:
        """Write ``vae/``, ``unet/``, ``scheduler/`` (diffusers, safetensors) and ``projector/``.

        Parameters
        ----------
        directory : path
            Target folder, created if needed.
        metadata : dict, optional
            Stored with the projector (plain JSON).
        overwrite : bool
            Write into a folder that already holds these sub-folders.
        """
        path = Path(directory)
        existing = [s for s in ("vae", "unet", "scheduler", PROJECTOR_DIR) if (path / s).exists()]
        if existing and not overwrite:
            raise FileExistsError(
                f"{path} already holds {', '.join(existing)}; pass overwrite=True or choose another directory"
            )
        path.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(str(path / "vae"), safe_serialization=True)
        self.unet.save_pretrained(str(path / "unet"), safe_serialization=True)
        self.scheduler.save_pretrained(str(path / "scheduler"))
        save_projector(self.projector, path / PROJECTOR_DIR, metadata=metadata, overwrite=overwrite)
        return path

    # ------------------------------------------------------------------ running
    def __call__(self, images: np.ndarray | torch.Tensor, embeddings: np.ndarray | torch.Tensor, *,
                 strength: float = 0.6, steps: int = 20, guidance_scale: float = 1.0,
                 seed: int = 0) -> np.ndarray:
        """Refine images, conditioned on embeddings.

        Parameters
        ----------
        images : array or tensor
            ``(B, H, W, 3)``: uint8, or float in ``[0, 1]``. Resized to ``image_size``.
        embeddings : array or tensor
            ``(B, embed_dim)`` sample-level embeddings, one per image.
        strength : float
            In ``[0, 1]``: how far the image is noised before denoising (0: the VAE round
            trip of the input; 1: pure noise, the input is ignored). ``int(steps *
            strength)`` denoising steps run.
        steps : int
            Steps of the full schedule.
        guidance_scale : float
            >= 1. Above 1, classifier-free guidance against the projection of a zero
            embedding (twice the UNet work).
        seed : int
            Seeds the noise: the same inputs and seed give the same images.

        Returns
        -------
        np.ndarray
            ``(B, image_size, image_size, 3)`` uint8.
        """
        strength, steps, guidance_scale, seed = _check_run_args(strength, steps, guidance_scale, seed)
        emb = self._embeddings(embeddings)
        x = self._images(images)
        if x.shape[0] != emb.shape[0]:
            raise ValueError(f"LatentImg2Img got {x.shape[0]} images but {emb.shape[0]} embeddings; pass one each")
        with self._lock, torch.inference_mode():
            latents = self._encode(x)
            gen = torch.Generator("cpu").manual_seed(seed)
            latents = self._denoise(latents, emb, strength, steps, guidance_scale, gen)
            return self._decode(latents)

    def _images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8/float → ``(B, 3, S, S)`` in ``[-1, 1]`` on the device."""
        x = _as_tensor(images, "images")
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"LatentImg2Img images must have shape (batch, height, width, 3), got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.is_floating_point():
            x = x.float()
            lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 1.0)
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(
                    f"LatentImg2Img float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                    "convert a tanh output with (x + 1) / 2, or pass uint8"
                )
        else:
            raise TypeError(f"LatentImg2Img images must be uint8 or float, got {x.dtype}")
        x = x.clamp(0, 1).permute(0, 3, 1, 2).to(self.device)
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x * 2.0 - 1.0).to(self.dtype)

    def _embeddings(self, embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
        e = _as_tensor(embeddings, "embeddings")
        if e.dim() != 2 or e.shape[1] != self.embed_dim:
            raise ValueError(
                f"LatentImg2Img embeddings have shape {tuple(e.shape)} (dim {e.shape[-1] if e.dim() else 'none'}) "
                f"but the projector expects (batch, {self.embed_dim}) (dim {self.embed_dim}); use the "
                "sample-level encoder the projector was trained with"
            )
        if not e.is_floating_point() or not torch.isfinite(e).all():
            raise ValueError("LatentImg2Img embeddings must be finite floats")
        return e.to(self.device, self.dtype)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        latents = self.vae.encode(x).latent_dist.mean  # the mode: deterministic, strength 0 = round trip
        shift = getattr(cfg, "shift_factor", None) or 0.0
        return (latents - shift) * cfg.scaling_factor

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        cfg = self.vae.config
        shift = getattr(cfg, "shift_factor", None) or 0.0
        out = self.vae.decode(latents / cfg.scaling_factor + shift).sample
        out = ((out.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def _timesteps(self, steps: int, strength: float) -> torch.Tensor:
        """The tail of the schedule that ``strength`` keeps (as diffusers' img2img)."""
        self.scheduler.set_timesteps(steps, device=self.device)
        init = min(int(steps * strength), steps)
        start = max(steps - init, 0)
        order = getattr(self.scheduler, "order", 1)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start * order)
        return self.scheduler.timesteps[start * order:]

    def _denoise(self, latents: torch.Tensor, emb: torch.Tensor, strength: float, steps: int,
                 guidance_scale: float, gen: torch.Generator) -> torch.Tensor:
        timesteps = self._timesteps(steps, strength)
        if len(timesteps) == 0:
            return latents
        noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32).to(self.device, self.dtype)
        latents = self.scheduler.add_noise(latents, noise, timesteps[:1].repeat(latents.shape[0]))
        tokens = self.projector(emb)
        guided = guidance_scale > 1.0
        if guided:
            tokens = torch.cat([self.projector(torch.zeros_like(emb)), tokens])
        extra = {"generator": gen} if self._step_takes_generator else {}
        for t in timesteps:
            model_in = self.scheduler.scale_model_input(latents, t)
            model_in = torch.cat([model_in, model_in]) if guided else model_in
            eps = self.unet(model_in, t, encoder_hidden_states=tokens).sample
            if guided:
                uncond, cond = eps.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(eps, t, latents, **extra).prev_sample
        return latents


# ---------------------------------------------------------------------- helpers
def _check_components(diffusers: ModuleType, vae: Any, unet: Any, scheduler: Any, projector: Any) -> None:
    checks = [("vae", vae, diffusers.AutoencoderKL), ("unet", unet, diffusers.UNet2DConditionModel),
              ("scheduler", scheduler, diffusers.SchedulerMixin), ("projector", projector, EmbeddingToTokens)]
    for name, obj, cls in checks:
        if not isinstance(obj, cls):
            raise TypeError(f"LatentImg2Img {name} must be a {cls.__name__}, got {type(obj).__name__}")
    cross = unet.config.cross_attention_dim
    if projector.token_dim != cross:
        raise ValueError(
            f"projector token_dim={projector.token_dim} does not match the UNet's cross_attention_dim={cross}; "
            f"build EmbeddingToTokens(embed_dim, seq_len, token_dim={cross})"
        )
    if vae.config.latent_channels != unet.config.in_channels:
        raise ValueError(
            f"the VAE's latent_channels={vae.config.latent_channels} differs from the UNet's "
            f"in_channels={unet.config.in_channels}; use a VAE and UNet of the same model"
        )


def _to(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move ``module``; cast only when needed (diffusers logs a warning on every ``.to(dtype)``)."""
    module = module.to(device)
    if any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype=dtype)
    return module


def _check_run_args(strength: Any, steps: Any, guidance_scale: Any, seed: Any) -> tuple[float, int, float, int]:
    if not 0.0 <= check_float("strength", strength) <= 1.0:
        raise ValueError(f"strength={strength!r} must be a number in [0, 1] (0: keep the image, 1: ignore it)")
    steps = positive_int("steps", steps, "LatentImg2Img")
    if not check_float("guidance_scale", guidance_scale) >= 1:
        raise ValueError(f"guidance_scale={guidance_scale!r} must be a number >= 1 (1: no guidance)")
    seed = check_int("seed", seed, low=0)
    return float(strength), steps, float(guidance_scale), seed


def _as_tensor(value: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiub":
            raise TypeError(f"LatentImg2Img {name} must hold numbers, got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach()
    raise TypeError(f"LatentImg2Img {name} must be a numpy array or torch tensor, got {type(value).__name__}")


def _load_part(cls: Any, folder: Path, opts: dict[str, Any]) -> Any:
    try:
        return cls.from_pretrained(str(folder), **opts)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load {cls.__name__} from {folder}: {exc}") from None


def _load_scheduler(diffusers: ModuleType, folder: Path, override: str | None) -> Any:
    config = json.loads((folder / "scheduler_config.json").read_text(encoding="utf-8"))
    name = config.get("_class_name") if isinstance(config, dict) else None
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise CheckpointError(f"{folder / 'scheduler_config.json'} names {name!r}, which is not a diffusers scheduler")
    try:
        scheduler = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load {name} from {folder}: {exc}") from None
    if override is None:
        return scheduler
    return getattr(diffusers, _SCHEDULERS[override]).from_config(scheduler.config)
