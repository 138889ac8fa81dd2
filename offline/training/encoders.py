"""Encoders for training: a freshly initialised registry model shaped for a dataset, and its embeddings.

Shared by the trainers of :mod:`offline.training.tasks` (sample, pixel, fMRI).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bci.models import EncoderModel, build_model, default_config
from offline.data.epochs import EpochDataset
from offline.training.loop import WindowSource, derive_seed

__all__ = ["build_encoder", "embed_windows"]


def build_encoder(dataset: EpochDataset, *, model: str | None, embed_dim: int, seed: int, dropout: float | None = None,
                  params: dict[str, Any] | None = None, channels: np.ndarray | None = None,
                  n_classes: int | None = None) -> EncoderModel:
    """A freshly initialised registry model shaped for the dataset (seeded).

    Parameters
    ----------
    dataset : EpochDataset
        Gives ``n_chans`` (or the selected ``channels``), ``n_times``, ``sfreq``, channel names.
    model : str or None
        Registry name; None picks ``eeg_convnet`` (EEG) or ``fmri_mlp`` (fMRI).
    embed_dim : int
        Embedding size.
    seed : int
        Initialisation seed.
    dropout : float, optional
    params : dict, optional
        Other architecture parameters.
    channels : numpy.ndarray, optional
        Channel (voxel) indices the model reads, in order.
    n_classes : int, optional
        Size of a classification head.
    """
    name = model or ("fmri_mlp" if str(dataset.modality).lower() == "fmri" else "eeg_convnet")
    _, n_chans, n_times = (int(s) for s in dataset.data.shape)
    ch_names = [str(c) for c in dataset.ch_names]
    if channels is not None:
        ch_names = [ch_names[i] for i in np.asarray(channels)]
        n_chans = len(ch_names)
    overrides: dict[str, Any] = dict(params or {})
    if dropout is not None:
        overrides["dropout"] = float(dropout)
    labels = [str(c) for c in dataset.class_names]
    cfg = default_config(name, n_chans=n_chans, n_times=n_times, sfreq=float(dataset.sfreq), embed_dim=int(embed_dim),
                         ch_names=ch_names, labels=labels, n_classes=n_classes, **overrides)
    torch.manual_seed(derive_seed(seed, "init"))
    return build_model(cfg)


def embed_windows(model: nn.Module, source: WindowSource, indices: np.ndarray, *, batch: int = 256,
                  device: torch.device | None = None) -> np.ndarray:
    """Embeddings ``(len(indices), embed_dim)`` float32 of standardised windows, in eval mode."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(indices), batch):
            x = source.tensor(indices[start : start + batch], device)
            out.append(model(x)["embedding"].float().cpu().numpy())
    model.train(was_training)
    dim = getattr(model, "embed_dim", 0)
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)
