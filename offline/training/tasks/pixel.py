"""Pixel-level extractor f_θ: EEG → feature, trained with the triplet loss (SPEC §5).

The encoder (default ``eeg_convnet``, ``embed_dim`` 128) is trained with
:func:`offline.training.losses.triplet_semihard_loss` on L2-normalised embeddings: windows of
the same class are pulled together, windows of other classes pushed at least the
margin β further away, with the negative of each anchor–positive pair mined online
in the batch (semi-hard: farther than the positive but inside the margin). Batches
are class-balanced, P classes × K windows, so every anchor has positives.

Validation metric: nearest-class-centroid accuracy of the validation windows, the
centroids being the normalised mean embeddings of each class's training windows.
The features feed the saliency GAN (``offline/training/tasks/saliency_gan.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bci.models import EncoderModel, save_checkpoint
from bci.preprocessing import ChannelScaler
from offline.training.losses import triplet_semihard_loss
from streams._checks import check_float, check_int
from offline.data.targets import dataset_preprocessing, dataset_record, open_dataset
from offline.scoring.centroids import centroid_accuracy
from offline.training.encoders import build_encoder, embed_windows
from offline.training.tasks.sample import check_augmentation, check_dropout
from offline.training.loop import (
    SplitInfo,
    Stage,
    TrainResult,
    TrainSettings,
    TrainTask,
    WindowSource,
    augment_windows,
    class_balanced_batches,
    fitted_source,
    make_adamw,
    prepare_split,
    resolve_device,
    run_training,
)

__all__ = ["PixelOptions", "PixelSettings", "TripletTask", "train_pixel"]


@dataclass
class PixelOptions:
    """Options of the pixel-level trainer.

    Parameters
    ----------
    model : str or None
        Registry name (None: ``eeg_convnet``, ``fmri_mlp`` for fMRI data).
    embed_dim : int
        Feature size (the saliency generator's ``feature_dim``).
    margin : float
        Triplet margin β on the unit sphere (distances in [0, 2]).
    per_class : int
        K, windows per class in a batch; P = ``batch_size // K`` classes.
    squared : bool
        Squared Euclidean distances (FaceNet) instead of distances.
    dropout : float or None
        Model dropout (None: the model's default).
    model_params : dict
        Other architecture parameters.
    max_shift, noise, scale
        Training augmentation (see :func:`offline.training.loop.augment_windows`).
    """

    model: str | None = None
    embed_dim: int = 128
    margin: float = 0.2
    per_class: int = 4
    squared: bool = False
    dropout: float | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    max_shift: int = 0
    noise: float = 0.0
    scale: float = 0.0

    def __post_init__(self) -> None:
        check_int("embed_dim", self.embed_dim, low=2)
        if not 0 < check_float("margin", self.margin) <= 2:
            raise ValueError(f"margin={self.margin!r} must be in (0, 2] (distances of unit vectors)")
        if check_int("per_class", self.per_class) < 2:
            raise ValueError(f"per_class={self.per_class!r} must be an integer >= 2 (positives are needed)")
        check_dropout(self.dropout)
        check_augmentation(self.max_shift, self.noise, self.scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"model": self.model, "embed_dim": self.embed_dim, "margin": self.margin, "per_class": self.per_class,
                "squared": self.squared, "dropout": self.dropout, "model_params": dict(self.model_params),
                "max_shift": self.max_shift, "noise": self.noise, "scale": self.scale}


@dataclass
class PixelSettings(TrainSettings):
    """Optimisation settings of the pixel-level trainer (``bci train pixel`` and :func:`train_pixel`).

    :class:`~offline.training.loop.TrainSettings` with this trainer's defaults: 40 epochs, patience 10.
    """

    epochs: int = 40
    patience: int = 10


class TripletTask(TrainTask):
    """Triplet training of the pixel-level extractor (see the module docstring)."""

    kind = "pixel"
    metric = "accuracy"

    def __init__(self, model: EncoderModel, source: WindowSource, split: SplitInfo, labels: np.ndarray,
                 settings: TrainSettings, options: PixelOptions, scaler: ChannelScaler,
                 preprocessing: dict[str, Any] | None = None) -> None:
        self.model = model
        self.source = source
        self.split = split
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_classes = int(self.labels.max()) + 1 if len(self.labels) else 1
        self.settings = settings
        self.options = options
        self.scaler = scaler
        self.preprocessing = preprocessing
        self.device = next(model.parameters()).device
        self._optimizer = make_adamw(model.parameters(), settings)
        self.stats: dict[str, float] = {}

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self._optimizer}

    def epoch_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        train = self.split.parts["train"]
        k = self.options.per_class
        p = max(2, self.settings.batch_size // k)
        return class_balanced_batches(train, self.labels[train], p, k, rng)

    def stages(self, batch: np.ndarray, generator: torch.Generator) -> Iterator[Stage]:
        o = self.options
        x = augment_windows(self.source.tensor(batch, self.device), generator, max_shift=o.max_shift, noise=o.noise,
                            scale=o.scale)
        h = F.normalize(self.model(x)["embedding"], dim=1)
        y = torch.from_numpy(self.labels[batch]).to(self.device)
        loss, stats = triplet_semihard_loss(h, y, self.options.margin, squared=self.options.squared)
        yield Stage("loss", loss, "model", {"semihard": stats.fraction_semihard, "active": stats.fraction_active})

    def validate(self) -> dict[str, float]:
        train, val = self.split.parts["train"], self.split.parts["val"]
        e_train = embed_windows(self.model, self.source, train, device=self.device)
        e_val = embed_windows(self.model, self.source, val, device=self.device)
        acc = centroid_accuracy(e_train, self.labels[train], e_val, self.labels[val], self.n_classes)
        return {"accuracy": acc, "n_way": float(len(np.unique(self.labels[train])))}

    def chance(self) -> float | None:
        return 1.0 / len(np.unique(self.labels[self.split.parts["train"]]))

    def describe(self) -> dict[str, Any]:
        return {"options": self.options.to_dict()}

    def save_best(self, directory: Path, record: dict[str, Any]) -> None:
        self.model.set_metadata(scaler=self.scaler.to_dict(), preprocessing=self.preprocessing, extra=record)
        save_checkpoint(self.model, directory, overwrite=True)


def train_pixel(data: Any, out: str | os.PathLike, *, split: str | None = None, options: PixelOptions | None = None,
                settings: TrainSettings | None = None, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train the pixel-level extractor f_θ with the semi-hard triplet loss; checkpoint to ``out``.

    Parameters
    ----------
    data : path or EpochDataset
    out : path
        Checkpoint directory (``config.json`` + ``model.safetensors`` + ``last/``).
    split : str, optional
        Stored split (default ``"block"``); a leaking split is refused.
    options : PixelOptions, optional
    settings : TrainSettings, optional
        Default: :class:`PixelSettings` (the settings of ``bci train pixel``).
    resume, overwrite : bool
        See :func:`offline.training.loop.run_training`.

    Returns
    -------
    TrainResult
    """
    options = options or PixelOptions()
    settings = settings or PixelSettings()
    dataset = open_dataset(data)
    info = prepare_split(dataset, split)
    scaler, source = fitted_source(dataset, info)
    model = build_encoder(dataset, model=options.model, embed_dim=options.embed_dim, seed=settings.seed,
                          dropout=options.dropout, params=options.model_params).to(resolve_device(settings.device))
    task = TripletTask(model, source, info, dataset.labels, settings, options, scaler,
                       preprocessing=dataset_preprocessing(dataset))
    record = {"data": dataset_record(dataset), "split": info.record(), "embedding_space": "metric",
              "normalize_embedding": True}
    return run_training(task, settings, out, resume=resume, overwrite=overwrite, record=record)
