"""Saliency GAN: frozen pixel-level features → coarse image of the stimulus (SPEC §5).

``G(f_θ(x))``: the pixel-level extractor f_θ (a checkpoint from ``bci train pixel``) is
frozen; its embedding of each window conditions a :class:`~bci.generation.SaliencyGenerator`
that draws an image at ``image_size`` (64 by default). A conditional
:class:`~bci.generation.SaliencyDiscriminator` judges (image, features) pairs after
DiffAugment (the same random augmentation on real and generated images). Losses::

    D:  discriminator_loss(D(aug(x_real), f), D(aug(G(f)), f))          (hinge by default)
    G:  adv_weight * generator_loss(D(aug(G(f)), f)) + λ * (1 − SSIM(G(f), x_real))

with ``x_real`` the stimulus image of the window resized to ``image_size``. The
features are computed once (the encoder is frozen, and its scaler applied exactly
as at run time), so an epoch only runs G and D.

Validation metric (``ssim_gain``): mean SSIM between the generated image of each
validation window and its stimulus, minus the mean SSIM to the stimulus of another
validation window (a blank image scores a high SSIM on these mostly-background stimuli,
but no gain); the plain SSIM is reported too. Image grids (stimulus row above generated row) are saved every epoch
to ``OUT/samples/epoch_XXX.png``. The checkpoint is written with
:func:`bci.generation.save_generator` (generator + discriminator), its metadata naming
the encoder checkpoint, its fingerprint, the split and the metrics.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bci.generation import (
    DiscriminatorConfig,
    GeneratorConfig,
    SaliencyDiscriminator,
    SaliencyGenerator,
    images_to_uint8,
    save_generator,
)
from bci.runtime.inference import Encoder
from bci.models import load_checkpoint, read_config
from offline.data.epochs import EpochDataset
from offline.training.losses import diff_augment, discriminator_loss, generator_loss, ssim
from streams._checks import check_float, check_value
from offline.data.records import encoder_fingerprint
from offline.data.targets import dataset_record, open_dataset, stimulus_tensor
from offline.training.loop import (
    SplitInfo,
    Stage,
    TrainResult,
    TrainSettings,
    TrainTask,
    derive_seed,
    prepare_split,
    resolve_device,
    run_training,
    shuffled_batches,
)

__all__ = ["GanOptions", "GanSettings", "SaliencyGanTask", "encode_dataset", "image_grid", "save_png",
           "train_saliency_gan"]


@dataclass
class GanOptions:
    """Options of the saliency-GAN trainer.

    Parameters
    ----------
    image_size : int
        Output size (power of two, 8..256).
    ssim_weight : float
        λ of the ``λ·(1 − SSIM)`` term (3; at 10 the generator settled on the blank background
        on the 64 px synthetic stimuli, whose small shapes leave SSIM dominated by background).
    adv_weight : float
        Weight of the adversarial term of G.
    gan_loss : {"hinge", "non-saturating"}
    augment : str
        DiffAugment policy (``""`` disables).
    noise_dim : int
        Noise concatenated to the features (0: deterministic generator).
    g_channels, d_channels : int
        ``base_channels`` of the generator and discriminator.
    d_lr_ratio : float
        Discriminator learning rate = ``lr * d_lr_ratio``.
    """

    image_size: int = 64
    ssim_weight: float = 3.0
    adv_weight: float = 1.0
    gan_loss: str = "hinge"
    augment: str = "color,translation,cutout"
    noise_dim: int = 0
    g_channels: int = 16
    d_channels: int = 16
    d_lr_ratio: float = 1.0

    def __post_init__(self) -> None:
        GeneratorConfig(feature_dim=1, image_size=self.image_size, base_channels=self.g_channels,
                        max_channels=max(256, self.g_channels), noise_dim=self.noise_dim)
        for key in ("ssim_weight", "adv_weight", "d_lr_ratio"):
            check_float(key, getattr(self, key), low=0, finite=False)
        check_value("gan_loss", self.gan_loss, ("hinge", "non-saturating"))
        diff_augment(torch.zeros(1, 3, 8, 8), self.augment)  # validates the policy

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dict(self.__dict__)


@dataclass
class GanSettings(TrainSettings):
    """Optimisation settings of the saliency GAN (``bci train saliency-gan`` and :func:`train_saliency_gan`).

    The configuration of docs/results.md (SSIM above the ridge reconstruction): 100 epochs and no early
    stopping (the GAN's validation gain is noisy; the best epoch is kept anyway), batch 32, Adam lr 2e-4
    without weight decay.
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    patience: int = 0


# ============================================================================ data
def encode_dataset(checkpoint: str | os.PathLike, dataset: EpochDataset, indices: np.ndarray, *, batch: int = 256,
                   device: str = "cpu") -> np.ndarray:
    """Embeddings ``(len(indices), embed_dim)`` of dataset windows by a checkpoint, as at run time.

    The checkpoint's own scaler is applied (by :class:`bci.runtime.inference.Encoder`); the
    dataset's channels and rate are checked against the model first.
    """
    model = load_checkpoint(checkpoint, device="cpu")
    threads = torch.get_num_threads()
    enc = Encoder(model, device=device, warmup=0, threads=threads, compile=False, cuda_graph=False)
    enc.check_stream(int(dataset.data.shape[1]), float(dataset.sfreq), list(dataset.ch_names),
                     stream_name=str(dataset.path))
    if int(dataset.data.shape[2]) != enc.n_times:
        raise ValueError(f"dataset {dataset.path} has windows of {dataset.data.shape[2]} samples "
                         f"but the model expects {enc.n_times}; rebuild the epochs with the model's window")
    idx = np.asarray(indices, dtype=np.int64)
    out = [enc(dataset.get_batch(idx[i : i + batch]))["embedding"] for i in range(0, len(idx), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, enc.config.embed_dim), np.float32)


def image_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Stack rows of uint8 images ``(n, H, W, 3)`` (equal sizes) into one uint8 picture."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = img
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``(H, W, 3)`` array as PNG (Pillow)."""
    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(p)
    return p


# ============================================================================ task
class SaliencyGanTask(TrainTask):
    """Conditional GAN on frozen features (see the module docstring)."""

    kind = "saliency-gan"
    metric = "ssim_gain"

    def __init__(self, features: np.ndarray, images: torch.Tensor, rows: np.ndarray, split: SplitInfo,
                 settings: TrainSettings, options: GanOptions, device: torch.device) -> None:
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
        self.images = images.to(device)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.split = split
        self.settings = settings
        self.options = options
        self.device = device
        dim = int(features.shape[1])
        cap = max(256, options.g_channels, options.d_channels)
        torch.manual_seed(derive_seed(settings.seed, "init"))
        self.generator = SaliencyGenerator(GeneratorConfig(feature_dim=dim, noise_dim=options.noise_dim,
                                                           image_size=options.image_size,
                                                           base_channels=options.g_channels, max_channels=cap))
        self.discriminator = SaliencyDiscriminator(DiscriminatorConfig(feature_dim=dim, image_size=options.image_size,
                                                                       base_channels=options.d_channels,
                                                                       max_channels=cap))
        self.generator.to(device)
        self.discriminator.to(device)
        betas = (0.5, 0.999)
        self._opt_g = torch.optim.AdamW(self.generator.parameters(), lr=settings.lr, betas=betas,
                                        weight_decay=settings.weight_decay, foreach=False)
        self._opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=settings.lr * options.d_lr_ratio,
                                        betas=betas, weight_decay=settings.weight_decay, foreach=False)
        self.encoder: dict[str, Any] = {}

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self._opt_g, "d": self._opt_d}

    def epoch_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        return shuffled_batches(self.split.parts["train"], self.settings.batch_size, rng)

    def _noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
        if not self.options.noise_dim:
            return None
        return torch.randn(n, self.options.noise_dim, generator=generator).to(self.device)

    def stages(self, batch: np.ndarray, generator: torch.Generator) -> Iterator[Stage]:
        f = self.features[torch.from_numpy(batch).to(self.device)]
        real = self.images[torch.from_numpy(self.rows[batch]).to(self.device)]
        o = self.options
        fake = self.generator(f, self._noise(len(batch), generator))
        d_real = self.discriminator(diff_augment(real, o.augment, generator), f)
        d_fake = self.discriminator(diff_augment(fake.detach(), o.augment, generator), f)
        yield Stage("d", discriminator_loss(d_real, d_fake, o.gan_loss), "d")
        self.discriminator.requires_grad_(False)
        try:
            adv = generator_loss(self.discriminator(diff_augment(fake, o.augment, generator), f), o.gan_loss)
            s = ssim((fake + 1) / 2, (real + 1) / 2, data_range=1.0)
            loss = o.adv_weight * adv + o.ssim_weight * (1.0 - s)
            yield Stage("g", loss, "g", {"ssim": float(s.detach()), "adv": float(adv.detach())})
        finally:
            self.discriminator.requires_grad_(True)

    def generate(self, indices: np.ndarray, batch: int = 256) -> torch.Tensor:
        """Generated images ``(n, 3, S, S)`` in ``[-1, 1]`` (eval mode, fixed noise of seed 0)."""
        self.generator.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(indices), batch):
                idx = torch.from_numpy(np.asarray(indices[i : i + batch])).to(self.device)
                noise = None
                if self.options.noise_dim:
                    noise = torch.randn(1, self.options.noise_dim,
                                        generator=torch.Generator().manual_seed(0)).expand(len(idx), -1)
                    noise = noise.to(self.device)
                out.append(self.generator(self.features[idx], noise))
        return torch.cat(out)

    def validate(self) -> dict[str, float]:
        """SSIM to the own stimulus, and its gain over SSIM to another window's stimulus.

        The gain is the selection metric: a blank background-coloured image already has a
        high SSIM to every stimulus (the shapes are small), but no gain.
        """
        val = self.split.parts["val"]
        fake = (self.generate(val) + 1) / 2
        real = (self.images[torch.from_numpy(self.rows[val]).to(self.device)] + 1) / 2
        own = ssim(fake, real, data_range=1.0, reduction="none")
        other = ssim(fake, real.roll(len(val) // 2, dims=0), data_range=1.0, reduction="none")
        return {"ssim_gain": float((own - other).mean()), "ssim": float(own.mean())}

    def after_epoch(self, epoch: int, directory: Path) -> None:
        parts = self.split.parts["val"]
        val = parts[np.unique(np.linspace(0, len(parts) - 1, num=min(8, len(parts))).round().astype(np.int64))]
        if len(val) == 0:
            return
        fake = images_to_uint8(self.generate(val))
        real = images_to_uint8(self.images[torch.from_numpy(self.rows[val]).to(self.device)])
        save_png(image_grid([real, fake]), directory / "samples" / f"epoch_{epoch + 1:03d}.png")

    def describe(self) -> dict[str, Any]:
        return {"options": self.options.to_dict()}

    def save_best(self, directory: Path, record: dict[str, Any]) -> None:
        save_generator(self.generator, directory, discriminator=self.discriminator,
                       metadata={**record, "encoder": self.encoder}, overwrite=True)


# ============================================================================ entry point
def train_saliency_gan(data: Any, encoder: str | os.PathLike, out: str | os.PathLike, *, split: str | None = None,
                       options: GanOptions | None = None, settings: TrainSettings | None = None,
                       resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train the saliency GAN on the frozen features of a pixel-level encoder checkpoint.

    Parameters
    ----------
    data : path or EpochDataset
        The dataset the encoder was trained on (its image table is the stimuli).
    encoder : path
        Checkpoint of ``bci train pixel``.
    out : path
        GAN checkpoint directory (``config.json`` + generator/discriminator safetensors,
        ``last/``, ``samples/``).
    split : str, optional
        Defaults to the encoder's split; must equal it (same indices), else the test
        windows could have trained the encoder.
    options : GanOptions, optional
    settings : TrainSettings, optional
        Default: :class:`GanSettings` (the settings of ``bci train saliency-gan``: 100 epochs, no early
        stopping, batch 32, ``lr`` 2e-4, ``weight_decay`` 0).
    resume, overwrite : bool
        See :func:`offline.training.loop.run_training`.
    """
    options = options or GanOptions()
    settings = settings or GanSettings()
    dataset = open_dataset(data)
    enc_cfg = read_config(encoder)
    enc_split = (enc_cfg.extra or {}).get("split") or {}
    info = prepare_split(dataset, split or enc_split.get("name"))
    _check_same_split(encoder, enc_split, info)
    if dataset.images is None or dataset.image_table_ids is None:
        raise ValueError(f"dataset {dataset.path} has no stimulus images; the GAN needs them")
    device = resolve_device(settings.device)
    used = np.concatenate([info.parts["train"], info.parts["val"], info.parts["test"]])
    features = np.zeros((int(dataset.data.shape[0]), enc_cfg.embed_dim), np.float32)
    features[used] = encode_dataset(encoder, dataset, used, device=str(device))
    rows = dataset.image_rows()
    task = SaliencyGanTask(features, stimulus_tensor(dataset.images, options.image_size), rows, info, settings,
                           options, device)
    task.encoder = {"path": str(Path(encoder).resolve()), "fingerprint": encoder_fingerprint(encoder),
                    "name": enc_cfg.name, "embed_dim": enc_cfg.embed_dim, "normalize": False}
    record = {"data": dataset_record(dataset), "split": info.record(), "task_input": "raw encoder embedding"}
    return run_training(task, settings, out, resume=resume, overwrite=overwrite, record=record)


def _check_same_split(encoder: str | os.PathLike, enc_split: dict[str, Any], info: SplitInfo) -> None:
    if not enc_split:
        raise ValueError(f"encoder checkpoint {encoder} records no training split (extra['split']); train it with "
                         "'bci train pixel' so the GAN can use the same split")
    if enc_split.get("dataset_fingerprint") != info.dataset_fingerprint:
        raise ValueError(f"encoder {encoder} was trained on dataset {enc_split.get('dataset_fingerprint')}, "
                         f"not on this one ({info.dataset_fingerprint}); use the same --data")
    if enc_split.get("hash") != info.checkpoint_hash:
        raise ValueError(f"encoder {encoder} was trained on split {enc_split.get('name')!r} ({enc_split.get('hash')}), "
                         f"not {info.name!r} ({info.checkpoint_hash}); its training windows would leak into this split's "
                         "validation/test parts. Use --split " + str(enc_split.get("name")))
