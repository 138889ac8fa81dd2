"""fMRI: the Miyawaki-style pipeline (SPEC §5, "fMRI").

``fmri_mlp`` (967 → 1024 → 768 → embed_dim, LayerNorm, SiLU, dropout) maps the volumes
of a trial (averaged over the epoch's ``n_times`` TRs) into CLIP space and is trained
with a contrastive (InfoNCE) alignment to the CLIP **image** embeddings of the
patterns, with the per-voxel scaler fitted on the training part only. Optionally the
voxels are first selected BOLD5000/NSD-style by an **encoding model**: ridge
regression from the CLIP image embedding of the pattern to every voxel, evaluated by
grouped (block-wise) cross-validation on the training part, keeping the ``top_voxels``
best-predicted voxels (:func:`offline.scoring.ridge.voxel_selection`); the checkpoint's
``ch_names`` are then the kept voxels in model order.

Validation metric: image-level top-1 retrieval of each validation trial's own pattern
among the validation patterns (new patterns at test time: the 12 Miyawaki-style
test images of ``offline.data.fmri``).

The dual encoder with a stimulus CNN, the decoder back to the pattern and the multi-subject
model are in :mod:`offline.training.tasks.fmri_joint` (``bci train fmri --objective dual|pattern``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from bci.clip.resolve import resolve_clip
from offline.data.epochs import EpochDataset
from offline.data.targets import open_dataset, target_table
from offline.training.tasks.sample import SampleOptions, train_sample
from offline.training.loop import TrainResult, TrainSettings, fit_scaler, prepare_split
from streams._checks import check_int

__all__ = ["FMRIOptions", "FMRISettings", "select_voxels", "train_fmri"]


@dataclass
class FMRISettings(TrainSettings):
    """Optimisation settings of the fMRI trainers (``bci train fmri``, :func:`train_fmri` and
    :func:`offline.training.tasks.fmri_joint.train_fmri_joint`): 80 epochs, batch 32, lr 3e-4, patience 20.
    """

    epochs: int = 80
    batch_size: int = 32
    lr: float = 3e-4
    patience: int = 20


@dataclass
class FMRIOptions(SampleOptions):
    """:class:`~offline.training.tasks.sample.SampleOptions` with the fMRI defaults: model ``fmri_mlp``,
    aligned to the CLIP **image** embeddings (InfoNCE).
    """

    model: str | None = "fmri_mlp"
    target: str = "image"


def select_voxels(dataset: EpochDataset, train: np.ndarray, clip_targets: np.ndarray, rows: np.ndarray,
                  top_n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Encoding-model voxel selection on the training part only.

    Parameters
    ----------
    dataset : EpochDataset
        fMRI epochs ``(n, n_voxels, n_times)`` (averaged over time here).
    train : numpy.ndarray
        Training epoch indices.
    clip_targets : numpy.ndarray, (n_images, D)
        CLIP image embeddings of the image table.
    rows : numpy.ndarray, (n_epochs,)
        Image row of every epoch.
    top_n : int
        Voxels to keep.

    Returns
    -------
    indices : numpy.ndarray
        Kept voxel indices, best first.
    record : dict
        ``alpha``, ``top_n``, the kept voxels' cross-validated correlations (summary).
    """
    from offline.scoring.ridge import voxel_selection

    scaler = fit_scaler(dataset, train)
    x = (dataset.get_batch(train).astype(np.float32) - scaler.mean[None, :, None]) / scaler.std[None, :, None]
    voxels = x.mean(axis=2)
    groups = np.asarray(dataset.block)[train]
    n_folds = int(min(5, len(np.unique(groups))))
    if n_folds < 2:
        raise ValueError("voxel selection needs training trials from at least 2 blocks (grouped cross-validation)")
    sel = voxel_selection(clip_targets[rows[train]], voxels, groups, top_n, n_folds=n_folds)
    kept = sel.correlations[sel.indices]
    record = {"method": "ridge encoding model CLIP image -> voxel, grouped CV correlation", "top_n": int(top_n),
              "alpha": sel.alpha, "corr_kept_mean": float(kept.mean()), "corr_kept_min": float(kept.min()),
              "corr_all_mean": float(sel.correlations.mean())}
    return sel.indices.astype(np.int64), record


def train_fmri(data: Any, out: str | os.PathLike, *, split: str | None = None, clip: Any = None,
               clip_weights: str | os.PathLike | None = None, clip_model: str = "tiny",
               options: SampleOptions | None = None,
               settings: TrainSettings | None = None, top_voxels: int | None = None, resume: bool = False,
               overwrite: bool = False) -> TrainResult:
    """Train the fMRI encoder (contrastive alignment to CLIP image embeddings).

    Parameters
    ----------
    data : path or EpochDataset
        An fMRI epoch dataset (``modality == "fmri"``), e.g. from
        :func:`offline.data.fmri.fmri_dataset_from_simulation`.
    out : path
        Checkpoint directory.
    split : str, optional
        Stored split (default ``"block"``).
    clip, clip_weights, clip_model
        The frozen CLIP model (see :func:`offline.training.tasks.sample.train_sample`).
    options : SampleOptions, optional
        Default: :class:`FMRIOptions` (model ``fmri_mlp``, target ``image``, loss ``infonce``).
    settings : TrainSettings, optional
        Default: :class:`FMRISettings` (the settings of ``bci train fmri``).
    top_voxels : int, optional
        Keep only this many voxels, chosen by the encoding model on the training part.
    resume, overwrite : bool
    """
    options = options or FMRIOptions()
    settings = settings or FMRISettings()
    dataset = open_dataset(data)
    if str(dataset.modality).lower() != "fmri":
        raise ValueError(f"dataset {dataset.path} has modality {dataset.modality!r}; "
                         "'bci train fmri' needs an fMRI epoch dataset (use 'bci train sample' for EEG)")
    embedder = resolve_clip(clip, clip_weights, model=clip_model)
    channels, extra = None, {}
    if top_voxels is not None:
        n_vox = int(dataset.data.shape[1])
        check_int("top_voxels", top_voxels, low=1, high=n_vox)
        info = prepare_split(dataset, split)
        targets, rows = target_table(dataset, embedder, "image")
        channels, extra["voxel_selection"] = select_voxels(dataset, info.parts["train"], targets, rows, top_voxels)
    return train_sample(dataset, out, split=split, clip=embedder, options=options, settings=settings, resume=resume,
                        overwrite=overwrite, kind="fmri", channels=channels, extra_record=extra, val_level="image")
