"""What encoders are trained towards and scored against: CLIP targets of an epoch dataset.

Used by the trainers (:mod:`offline.training.tasks`) and by evaluation
(:mod:`offline.evaluation.evaluate`) alike: opening a dataset, the image row of every
epoch, the class template captions, the CLIP target table (template / caption / image)
and the class gallery, and what a checkpoint records about the data.

The image and caption embeddings of a dataset are computed once per (CLIP model, image
table, captions) and cached next to the dataset (:func:`clip_embeddings`,
:func:`target_cache_dir`): ``<dataset>.targets/<fingerprint>.safetensors`` + ``.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bci.clip.cache import EmbeddingTableCache
from bci.clip.resolve import clip_record
from bci.models.stimulus import images_to_grey
from offline.data.epochs import EpochDataset
from offline.data.table import sha256_arrays
from offline.scoring.vectors import unit_rows
from streams.synthetic.stimuli import template_caption

__all__ = [
    "TARGETS",
    "class_gallery",
    "class_template_texts",
    "clip_embeddings",
    "dataset_preprocessing",
    "dataset_record",
    "epoch_image_rows",
    "is_synthetic",
    "open_dataset",
    "pattern_targets",
    "stimulus_tensor",
    "target_cache_dir",
    "target_table",
]

logger = logging.getLogger(__name__)

#: What an encoder's embedding can be aligned to (see :func:`target_table`).
TARGETS = ("template", "caption", "image")


def open_dataset(data: str | os.PathLike | EpochDataset) -> EpochDataset:
    """An :class:`offline.data.epochs.EpochDataset` from a path (or the dataset itself)."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"epoch dataset {path} does not exist; build one with 'bci epochs' first")
        return EpochDataset.open(path)
    return data


def epoch_image_rows(dataset: EpochDataset) -> np.ndarray:
    """Row of the dataset's image table for every epoch (``-1`` where the image is not stored)."""
    table = [str(i) for i in (dataset.image_table_ids or [])]
    where = {image_id: row for row, image_id in enumerate(table)}
    return np.asarray([where.get(str(i), -1) for i in dataset.image_ids], dtype=np.int64)


def class_template_texts(dataset: EpochDataset) -> list[str]:
    """One template caption per class, in class order.

    Taken from the dataset's template captions (the caption of any image of the class);
    classes without one get ``"an image of a {class name}"``.
    """
    names = [str(c) for c in dataset.class_names]
    texts: list[str | None] = [None] * len(names)
    templates = dataset.template_captions
    if templates is not None and len(templates):
        rows = epoch_image_rows(dataset)
        labels = np.asarray(dataset.labels)
        for label, row in zip(labels.tolist(), rows.tolist()):
            if row >= 0 and 0 <= label < len(texts) and texts[label] is None:
                texts[label] = str(templates[row])
    return [t if t is not None else template_caption(names[c], article="a") for c, t in enumerate(texts)]


def target_table(dataset: EpochDataset, clip: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """CLIP targets and the target row of every epoch.

    Parameters
    ----------
    dataset : EpochDataset
    clip : ClipEmbedder
    kind : {"template", "caption", "image"}

    Returns
    -------
    targets : numpy.ndarray, (n_targets, D) float32, L2-normalised
        One row per class (``template``) or per stored image (``caption``, ``image``).
    rows : numpy.ndarray, (n_epochs,) int64
        Row of ``targets`` for each epoch.
    """
    if kind not in TARGETS:
        raise ValueError(f"target={kind!r} must be one of {list(TARGETS)}")
    if kind == "template":
        return unit_rows(clip.encode_text(class_template_texts(dataset))), np.asarray(dataset.labels, dtype=np.int64)
    rows = epoch_image_rows(dataset)
    if (rows < 0).any():
        missing = sorted({str(i) for i, r in zip(dataset.image_ids, rows) if r < 0})[:5]
        raise ValueError(f"target={kind!r} needs every epoch's image in the dataset's image table; missing {missing}")
    if kind == "caption":
        captions = dataset.captions
        if captions is None or len(captions) == 0:
            raise ValueError("target='caption' needs captions in the dataset; use --target template")
        return unit_rows(clip_embeddings(dataset, clip, "caption")), rows
    images = dataset.images
    if images is None or len(images) == 0:
        raise ValueError("target='image' needs the stimulus images in the dataset; use --target template")
    return unit_rows(clip_embeddings(dataset, clip, "image")), rows


def target_cache_dir(dataset: EpochDataset) -> Path:
    """Where the CLIP targets of ``dataset`` are cached: ``<dataset path>.targets/`` beside the store."""
    path = Path(dataset.path)
    return path.with_name(path.name + ".targets")


def clip_embeddings(dataset: EpochDataset, clip: Any, kind: str) -> np.ndarray:
    """CLIP embeddings of the dataset's image table (``kind="image"``) or captions (``"caption"``), cached.

    The cache key (fingerprint) hashes the CLIP model (:meth:`ClipEmbedder.fingerprint`: architecture,
    preprocessing and every weight), the kind, the image ids and the images' bytes (or the captions), so
    a table is reused exactly when all of them are the same and recomputed when one changes. The table is
    stored in :func:`target_cache_dir` (safetensors + JSON naming the model, its weights, the ids and the
    dimensions; no pickle). A cache that cannot be written (read-only folder) is logged and skipped.

    Parameters
    ----------
    dataset : EpochDataset
        With an image table (and captions for ``"caption"``).
    clip : ClipEmbedder
    kind : {"image", "caption"}

    Returns
    -------
    numpy.ndarray, (n_images, D) float32
        One row per image-table row, as ``clip.encode_images`` / ``clip.encode_text`` return them.
    """
    if kind not in ("image", "caption"):
        raise ValueError(f"kind={kind!r} must be 'image' or 'caption'")
    ids = [str(i) for i in (dataset.image_table_ids or [])]
    if kind == "image":
        images = dataset.images
        if images is None or len(images) == 0:
            raise ValueError(f"{str(dataset.path)!r} holds no stimulus images to embed")
        content: list[bytes | np.ndarray | str] = [str(images.dtype), repr(images.shape), np.asarray(images)]
    else:
        captions = dataset.captions
        if captions is None or len(captions) == 0:
            raise ValueError(f"{str(dataset.path)!r} holds no captions to embed")
        content = ["\n".join(str(c) for c in captions), repr(len(captions))]
    fingerprint = sha256_arrays("bci-runtime.clip-targets/1", str(clip.fingerprint()), kind, "\n".join(ids),
                                *content)[:16]
    cache = EmbeddingTableCache(target_cache_dir(dataset))
    where = cache.paths(fingerprint)[0]
    table = cache.load(fingerprint, ids)
    if table is not None:
        logger.info("CLIP %s targets reused from %s (fingerprint %s)", kind, where, fingerprint)
        return table
    if kind == "image":
        table = clip.encode_images(np.asarray(dataset.images))
    else:
        table = clip.encode_text([str(c) for c in dataset.captions or []])
    meta = {"kind": kind, "clip": clip_record(clip), "dataset": str(dataset.path)}
    try:
        cache.save(fingerprint, ids, table, meta)
    except OSError as exc:
        logger.warning("CLIP %s targets computed but not cached (%s: %s); they are recomputed next time",
                       kind, where, exc)
    else:
        logger.info("CLIP %s targets computed and cached in %s (fingerprint %s)", kind, where, fingerprint)
    return table


def class_gallery(dataset: EpochDataset, clip: Any, kind: str) -> np.ndarray:
    """One CLIP embedding per class to retrieve against: the template text embedding,
    or for ``kind="image"`` the normalised mean image embedding of the class's stimuli.
    """
    if kind != "image":
        return unit_rows(clip.encode_text(class_template_texts(dataset)))
    targets, rows = target_table(dataset, clip, "image")
    labels = np.asarray(dataset.labels, dtype=np.int64)
    out = np.zeros((len(dataset.class_names), targets.shape[1]), np.float32)
    for c in range(len(out)):
        used = np.unique(rows[labels == c])
        if len(used):
            out[c] = targets[used].mean(axis=0)
    return unit_rows(out)


def dataset_preprocessing(dataset: EpochDataset) -> dict[str, Any] | None:
    """The preprocessing config the epochs were made with, when the dataset records it."""
    pre = dataset.preprocessing
    if isinstance(pre, dict):
        return pre
    source = dataset.source or {}
    pre = source.get("preprocessing") if isinstance(source, dict) else None
    return pre if isinstance(pre, dict) else None


def dataset_record(dataset: EpochDataset) -> dict[str, Any]:
    """Where the data came from, for checkpoints."""
    shape = tuple(int(s) for s in dataset.data.shape)
    return {"path": str(dataset.path), "fingerprint": str(dataset.fingerprint()),
            "modality": str(dataset.modality), "shape": list(shape),
            "sfreq": float(dataset.sfreq), "n_classes": len(dataset.class_names),
            "window": (dataset.attrs or {}).get("window"),
            "synthetic": bool(is_synthetic(dataset))}


def is_synthetic(dataset: EpochDataset) -> bool:
    """True when the dataset's source says it was simulated (synthetic world)."""
    source = dataset.source or {}
    if not isinstance(source, dict):
        return False
    text = " ".join(str(source.get(k, "")) for k in ("importer", "kind", "name", "generator")).lower()
    return bool(source.get("synthetic")) or "simulat" in text or "synthetic" in text


def pattern_targets(images: np.ndarray, grid: int) -> np.ndarray:
    """Stimulus images ``(n, H, W[, 3])`` uint8 → ``(n, grid²)`` float32 grey in [0, 1] (area resize)."""
    return images_to_grey(images, grid).reshape(len(images), grid * grid).numpy()


def stimulus_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` → float ``(N, 3, size, size)`` in ``[-1, 1]`` (antialiased resize)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1.0, 1.0)
