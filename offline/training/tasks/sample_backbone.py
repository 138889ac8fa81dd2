"""Two-stage sample-level extractor: a frozen pixel-level backbone + an MLP head into CLIP space.

``bci train sample --backbone PIXEL_CKPT`` builds the sample-level encoder M_s from a
pixel-level extractor f_θ (``bci train pixel``: triplet loss with semi-hard mining): the
backbone's layers and weights are copied and frozen, and an MLP head on its L2-normalised
features (``eeg_convnet`` param ``head_hidden``) is trained to align with CLIP. The triplet
features separate the classes well (nearest-centroid accuracy close to the oracle's), and a
non-linear head maps them into CLIP space far better than training the whole network on the
alignment loss alone (docs/results.md). The result is one ordinary checkpoint.

Leakage: a backbone trained on *another split of the same dataset* may have trained on this
split's test windows; it is refused, and so is a backbone whose checkpoint records no training
split. A backbone from another dataset (other sessions or subjects) is allowed and recorded;
a re-epoched copy of the same recordings counts as another dataset, so keep the same dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bci.models import load_checkpoint
from bci.models.registry import EncoderModel, build_model
from offline.data.epochs import EpochDataset
from offline.training.loop import SplitInfo, derive_seed

__all__ = ["HEADED_MODELS", "build_backbone_encoder", "freeze_backbone_modes"]

#: Registry models that take an MLP head (``head_hidden``).
HEADED_MODELS = ("eeg_convnet",)


def _load(backbone: str | os.PathLike) -> EncoderModel:
    path = Path(backbone)
    if not path.is_dir():
        raise FileNotFoundError(f"--backbone {path} does not exist; give a pixel-level checkpoint directory "
                                "(bci train pixel --out DIR)")
    model = load_checkpoint(path)
    cfg = model.get_config()
    if cfg.name not in HEADED_MODELS:
        raise ValueError(f"--backbone {path} is a {cfg.name!r} model; a backbone must be one of {list(HEADED_MODELS)}")
    if cfg.params.get("head_hidden") is not None:
        raise ValueError(f"--backbone {path} already has an MLP head (a sample-level model?); give the pixel-level "
                         "checkpoint it was built from")
    return model


def _check_leak(backbone: str | os.PathLike, cfg_extra: dict[str, Any], dataset: EpochDataset, split: SplitInfo) -> dict:
    rec = cfg_extra.get("split") or {}
    if not rec.get("hash") or not rec.get("dataset_fingerprint"):
        raise ValueError(f"--backbone {backbone} records no training split and dataset; it cannot be checked for "
                         "having trained on this split's test windows. Use a checkpoint written by 'bci train pixel'")
    same_data = rec.get("dataset_fingerprint") == split.dataset_fingerprint
    if same_data and rec.get("hash") != split.record().get("hash"):
        raise ValueError(
            f"--backbone {backbone} was trained on split {rec.get('name')!r} (hash {str(rec.get('hash'))[:12]}) of "
            f"this dataset, not on split {split.name!r}: its training windows may be this split's test windows, "
            "which would inflate the scores. Train the backbone on the same split (bci train pixel --split "
            f"{split.name}) or on another dataset")
    return {"path": str(Path(backbone).resolve()), "split": rec.get("name"), "split_hash": rec.get("hash"),
            "dataset_fingerprint": rec.get("dataset_fingerprint"), "same_dataset_and_split": bool(same_data)}


def build_backbone_encoder(backbone: str | os.PathLike, dataset: EpochDataset, split: SplitInfo, *, embed_dim: int,
                           head_hidden: int, dropout: float | None,
                           seed: int) -> tuple[EncoderModel, np.ndarray | None, dict[str, Any]]:
    """The backbone's architecture and weights + a fresh MLP head of ``embed_dim`` outputs; backbone frozen.

    Parameters
    ----------
    backbone : path
        Pixel-level checkpoint (``eeg_convnet`` without head).
    dataset : EpochDataset
        Training data (the backbone must fit its channels, rate and window).
    split : SplitInfo
        The split trained on (leak check, see the module docstring).
    embed_dim : int
        CLIP embedding size.
    head_hidden : int
        Hidden units of the head.
    dropout : float or None
        Dropout of the head (None: the backbone's).
    seed : int
        Initialisation seed of the head.

    Returns
    -------
    model : EncoderModel
        Trainable parameters: ``align_head.*`` only.
    channels : numpy.ndarray or None
        Dataset channel indices feeding the backbone, in its order (None: all, in order).
    record : dict
        What to store in the checkpoint under ``extra["backbone"]``.
    """
    from offline.data.montage import channel_selection

    base = _load(backbone)
    cfg = base.get_config()
    channels = channel_selection(cfg, dataset, backbone)  # a clear error when the dataset does not fit
    record = _check_leak(backbone, cfg.extra or {}, dataset, split)
    params = {**cfg.params, "head_hidden": int(head_hidden), "feature_dim": int(cfg.embed_dim)}
    if dropout is not None:
        params["dropout"] = float(dropout)
    labels = [str(c) for c in dataset.class_names]
    new_cfg = cfg.replace(embed_dim=int(embed_dim), params=params, labels=labels, extra={}, scaler=None,
                          n_classes=None)
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(new_cfg)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("head.")}  # no classification head
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("align_head.") for k in missing):
        raise ValueError(f"--backbone {backbone}: its weights do not fit the headed model (missing "
                         f"{[k for k in missing if not k.startswith('align_head.')][:5]}, unexpected "
                         f"{unexpected[:5]})")
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("align_head."))
    record.update({"head_hidden": int(head_hidden), "feature_dim": int(cfg.embed_dim), "frozen": True})
    return model, channels, record


def freeze_backbone_modes(model: nn.Module) -> None:
    """Put every module outside ``align_head`` in eval mode (frozen BatchNorm statistics, no dropout)."""
    for name, child in model.named_children():
        if name != "align_head":
            child.eval()
