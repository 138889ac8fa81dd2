"""Sample-level extractor M_s: brain signals → CLIP space (SPEC §5).

An encoder from the registry (default ``eeg_convnet`` for EEG, ``fmri_mlp`` for fMRI,
``embed_dim`` = the CLIP embedding size) is trained so that its embedding ``h`` of a
window matches the frozen CLIP embedding ``ĥ`` of what was shown:

* ``target="template"``: the CLIP text embedding of the class template caption
  ("an image of a red triangle");
* ``target="caption"``: the text embedding of the image's detailed caption
  ("a large red triangle in the upper left");
* ``target="image"``: the CLIP image embedding of the stimulus.

Loss ``"mse"`` (``‖h − ĥ‖²``), ``"infonce"`` (symmetric InfoNCE over the batch, windows of
the same target are positives of each other; the default: on the synthetic world it
retrieved better than the other two, see docs/results.md) or ``"mse+infonce"``.

Validation metric: N-way top-1 retrieval of each validation window's class among the
classes present in the validation part (N = 40 on the synthetic world), by cosine
similarity against the class template text embeddings (class-mean image embeddings for
``target="image"``). The checkpoint is a normal ``config.json`` + ``model.safetensors``
that ``bci live --model`` loads; its config carries the scaler (fitted on the training
part only), the class names and, in ``extra``, the split, dataset fingerprint, CLIP
model and fingerprint, settings and metrics.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bci.models import EncoderModel, build_model, default_config, save_checkpoint
from bci.preprocessing import ChannelScaler
from offline.training.losses import clip_alignment_loss
from streams._checks import check_float, check_int, check_type, check_value
from offline.training.loop import (
    SplitInfo,
    Stage,
    TrainResult,
    TrainSettings,
    TrainTask,
    WindowSource,
    augment_windows,
    derive_seed,
    fitted_source,
    make_adamw,
    prepare_split,
    resolve_device,
    run_training,
    shuffled_batches,
)
from streams.synthetic.stimuli import template_caption

__all__ = [
    "LOSSES",
    "TARGETS",
    "AlignmentTask",
    "SampleOptions",
    "SampleSettings",
    "build_encoder",
    "class_gallery",
    "class_template_texts",
    "embed_windows",
    "epoch_image_rows",
    "open_dataset",
    "recorded_clip",
    "resolve_clip",
    "target_table",
    "train_sample",
]

TARGETS = ("template", "caption", "image")
LOSSES = ("mse", "infonce", "mse+infonce")


@dataclass
class SampleOptions:
    """Options of the sample-level trainer (besides :class:`~offline.training.loop.TrainSettings`).

    Parameters
    ----------
    model : str or None
        Registry name; None: ``eeg_convnet`` for EEG datasets, ``fmri_mlp`` for fMRI.
    target : {"template", "caption", "image"}
        What the embedding is aligned to (see the module docstring).
    loss : {"mse", "infonce", "mse+infonce"}
        Alignment loss.
    temperature : float
        InfoNCE temperature.
    infonce_weight : float
        Weight of InfoNCE in ``"mse+infonce"``.
    dropout : float or None
        Model dropout (None: the model's default).
    model_params : dict
        Other architecture parameters of the model.
    max_shift : int
        Training augmentation: random time shift of each window by up to this many samples.
    noise : float
        Training augmentation: Gaussian noise (standardised units).
    scale : float
        Training augmentation: random amplitude scaling ``1 ± scale``.
    backbone : str or None
        Pixel-level checkpoint to build on (two-stage extractor, :mod:`offline.training.tasks.sample_backbone`):
        its layers frozen, only an MLP head trained. None: train the whole encoder.
    head_hidden : int
        Hidden units of that head.
    """

    model: str | None = None
    target: str = "template"
    loss: str = "infonce"
    temperature: float = 0.07
    infonce_weight: float = 1.0
    dropout: float | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    max_shift: int = 0
    noise: float = 0.0
    scale: float = 0.0
    backbone: str | None = None
    head_hidden: int = 256

    def __post_init__(self) -> None:
        check_value("target", self.target, TARGETS)
        check_value("loss", self.loss, LOSSES)
        for key in ("temperature", "infonce_weight"):
            check_float(key, getattr(self, key), positive=True, finite=False)
        check_dropout(self.dropout)
        check_type("model_params", self.model_params, dict)
        check_augmentation(self.max_shift, self.noise, self.scale)
        if self.backbone is not None:
            self.backbone = str(self.backbone)
        check_int("head_hidden", self.head_hidden, low=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"model": self.model, "target": self.target, "loss": self.loss, "temperature": self.temperature,
                "infonce_weight": self.infonce_weight, "dropout": self.dropout, "model_params": dict(self.model_params),
                "max_shift": self.max_shift, "noise": self.noise, "scale": self.scale, "backbone": self.backbone,
                "head_hidden": self.head_hidden}


@dataclass
class SampleSettings(TrainSettings):
    """Optimisation settings of the sample-level trainer (``bci train sample`` and :func:`train_sample`).

    :class:`~offline.training.loop.TrainSettings` with this trainer's defaults: 40 epochs, patience 10.
    """

    epochs: int = 40
    patience: int = 10


def check_dropout(dropout: Any) -> None:
    """Validate a model dropout: None (the model's default) or a number in [0, 1)."""
    if dropout is not None and check_float("dropout", dropout, low=0) >= 1:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")


def check_augmentation(max_shift: Any, noise: Any, scale: Any) -> None:
    """Validate the augmentation options (see :func:`offline.training.loop.augment_windows`)."""
    check_int("max_shift", max_shift, low=0)
    for key, value in (("noise", noise), ("scale", scale)):
        if check_float(key, value, low=0) >= 10:
            raise ValueError(f"{key}={value!r} must be a number in [0, 10)")


# ============================================================================ dataset helpers
def open_dataset(data: Any) -> Any:
    """An :class:`offline.data.epochs.EpochDataset` from a path (or the dataset itself)."""
    if isinstance(data, (str, os.PathLike)):
        from offline.data.epochs import EpochDataset

        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"epoch dataset {path} does not exist; build one with 'bci epochs' first")
        return EpochDataset.open(path)
    return data


def epoch_image_rows(dataset: Any) -> np.ndarray:
    """Row of the dataset's image table for every epoch (``-1`` where the image is not stored)."""
    table = [str(i) for i in (getattr(dataset, "image_table_ids", None) or [])]
    where = {image_id: row for row, image_id in enumerate(table)}
    return np.asarray([where.get(str(i), -1) for i in dataset.image_ids], dtype=np.int64)


def class_template_texts(dataset: Any) -> list[str]:
    """One template caption per class, in class order.

    Taken from the dataset's template captions (the caption of any image of the class);
    classes without one get ``"an image of a {class name}"``.
    """
    names = [str(c) for c in dataset.class_names]
    texts: list[str | None] = [None] * len(names)
    templates = getattr(dataset, "template_captions", None)
    if templates is not None and len(templates):
        rows = epoch_image_rows(dataset)
        labels = np.asarray(dataset.labels)
        for label, row in zip(labels.tolist(), rows.tolist()):
            if row >= 0 and 0 <= label < len(texts) and texts[label] is None:
                texts[label] = str(templates[row])
    return [t if t is not None else template_caption(names[c], article="a") for c, t in enumerate(texts)]


def resolve_clip(clip: Any = None, weights: str | os.PathLike | None = None, model: str = "tiny") -> Any:
    """A :class:`bci.clip.ClipEmbedder`: ``clip`` itself, or ``load_clip(model, weights=...)``."""
    if clip is not None and not isinstance(clip, (str, os.PathLike)):
        for attr in ("encode_text", "encode_images", "embed_dim"):
            if not hasattr(clip, attr):
                raise TypeError(f"clip={clip!r} must be a ClipEmbedder (bci.clip.load_clip) or a weights directory")
        return clip
    if isinstance(clip, (str, os.PathLike)):
        weights = clip
    from bci.clip import load_clip

    return load_clip(model, weights=weights)


def clip_record(clip: Any, weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """CLIP name, embedding size, fingerprint and weights location for checkpoints."""
    fingerprint = clip.fingerprint() if callable(getattr(clip, "fingerprint", None)) else None
    source = weights if weights is not None else getattr(clip, "source", None)
    where = str(Path(source).resolve()) if source and Path(str(source)).exists() else None
    return {"name": getattr(clip, "name", None), "embed_dim": int(clip.embed_dim), "fingerprint": fingerprint,
            "weights": where}


def recorded_clip(record: dict[str, Any] | None, clip: Any = None, clip_weights: str | os.PathLike | None = None) -> Any:
    """The CLIP model a checkpoint was trained with: ``clip``/``clip_weights`` when given, else the
    weights recorded in the checkpoint; a different model (fingerprint) is an error.
    """
    record = record or {}
    if clip is None and clip_weights is None:
        clip_weights = record.get("weights")
        if not clip_weights:
            raise ValueError("this checkpoint records no CLIP weights location; pass --clip-weights DIR "
                             "(the CLIP model it was trained with)")
        if not Path(clip_weights).exists():
            raise FileNotFoundError(f"the CLIP weights this checkpoint was trained with ({clip_weights}) are gone; "
                                    "pass --clip-weights DIR")
    embedder = resolve_clip(clip, clip_weights, model=str(record.get("name") or "tiny"))
    expected = record.get("fingerprint")
    got = embedder.fingerprint() if callable(getattr(embedder, "fingerprint", None)) else None
    if expected and got and expected != got:
        raise ValueError(f"the CLIP model given (fingerprint {got}) is not the one this checkpoint was trained with "
                         f"({expected}); pass the same --clip-weights as in training")
    return embedder


def target_table(dataset: Any, clip: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
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
        return _unit(clip.encode_text(class_template_texts(dataset))), np.asarray(dataset.labels, dtype=np.int64)
    rows = epoch_image_rows(dataset)
    if (rows < 0).any():
        missing = sorted({str(i) for i, r in zip(dataset.image_ids, rows) if r < 0})[:5]
        raise ValueError(f"target={kind!r} needs every epoch's image in the dataset's image table; missing {missing}")
    if kind == "caption":
        captions = getattr(dataset, "captions", None)
        if captions is None or len(captions) == 0:
            raise ValueError("target='caption' needs captions in the dataset; use --target template")
        return _unit(clip.encode_text([str(c) for c in captions])), rows
    images = getattr(dataset, "images", None)
    if images is None or len(images) == 0:
        raise ValueError("target='image' needs the stimulus images in the dataset; use --target template")
    return _unit(clip.encode_images(np.asarray(images))), rows


def class_gallery(dataset: Any, clip: Any, kind: str) -> np.ndarray:
    """One CLIP embedding per class to retrieve against: the template text embedding,
    or for ``kind="image"`` the normalised mean image embedding of the class's stimuli.
    """
    if kind != "image":
        return _unit(clip.encode_text(class_template_texts(dataset)))
    targets, rows = target_table(dataset, clip, "image")
    labels = np.asarray(dataset.labels, dtype=np.int64)
    out = np.zeros((len(dataset.class_names), targets.shape[1]), np.float32)
    for c in range(len(out)):
        used = np.unique(rows[labels == c])
        if len(used):
            out[c] = targets[used].mean(axis=0)
    return _unit(out)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def dataset_preprocessing(dataset: Any) -> dict[str, Any] | None:
    """The preprocessing config the epochs were made with, when the dataset records it."""
    pre = getattr(dataset, "preprocessing", None)
    if isinstance(pre, dict):
        return pre
    source = getattr(dataset, "source", None) or {}
    pre = source.get("preprocessing") if isinstance(source, dict) else None
    return pre if isinstance(pre, dict) else None


def dataset_record(dataset: Any) -> dict[str, Any]:
    """Where the data came from, for checkpoints."""
    shape = tuple(int(s) for s in dataset.data.shape)
    return {"path": str(getattr(dataset, "path", "")), "fingerprint": str(dataset.fingerprint()),
            "modality": str(getattr(dataset, "modality", "eeg")), "shape": list(shape),
            "sfreq": float(dataset.sfreq), "n_classes": len(dataset.class_names),
            "window": (getattr(dataset, "attrs", None) or {}).get("window"),
            "synthetic": bool(_is_synthetic(dataset))}


def _is_synthetic(dataset: Any) -> bool:
    source = getattr(dataset, "source", None) or {}
    if not isinstance(source, dict):
        return False
    text = " ".join(str(source.get(k, "")) for k in ("importer", "kind", "name", "generator")).lower()
    return bool(source.get("synthetic")) or "simulat" in text or "synthetic" in text


def build_encoder(dataset: Any, *, model: str | None, embed_dim: int, seed: int, dropout: float | None = None,
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
    name = model or ("fmri_mlp" if str(getattr(dataset, "modality", "eeg")).lower() == "fmri" else "eeg_convnet")
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


def retrieval_top(pred: np.ndarray, gallery: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k class retrieval among the classes present in ``labels`` (cosine; ties count as random)."""
    from offline.scoring.metrics import topk_retrieval

    classes = np.unique(labels)
    column = np.searchsorted(classes, labels)
    ks = tuple(k for k in ks if k <= len(classes))
    scores = topk_retrieval(pred, gallery[classes], column, k=ks)
    out = {f"top{k}": scores[f"top-{k}"].value for k in ks}
    out["n_way"] = float(len(classes))
    return out


# ============================================================================ task
class AlignmentTask(TrainTask):
    """Align an encoder's embedding to CLIP targets (sample-level extractor, also fMRI).

    Parameters
    ----------
    model : EncoderModel
        Freshly built (see :func:`build_encoder`), on the training device.
    source : WindowSource
        Standardised windows.
    split : SplitInfo
        Checked split.
    targets : numpy.ndarray, (n_targets, D)
        CLIP targets; ``rows[i]`` is epoch ``i``'s row.
    rows : numpy.ndarray, (n_epochs,)
    labels : numpy.ndarray, (n_epochs,)
        Class per epoch.
    gallery : numpy.ndarray, (n_classes, D)
        Class embeddings for validation retrieval.
    settings : TrainSettings
    options : SampleOptions
    scaler : ChannelScaler
        Stored in the checkpoint.
    kind : str
        ``"sample"`` or ``"fmri"``.
    preprocessing : dict, optional
        Stored in the checkpoint config.
    """

    metric = "top1"

    def __init__(self, model: EncoderModel, source: WindowSource, split: SplitInfo, targets: np.ndarray,
                 rows: np.ndarray, labels: np.ndarray, gallery: np.ndarray, settings: TrainSettings,
                 options: SampleOptions, scaler: ChannelScaler, *, kind: str = "sample",
                 preprocessing: dict[str, Any] | None = None, val_level: str = "class") -> None:
        if val_level not in ("class", "image"):
            raise ValueError(f"val_level={val_level!r} must be 'class' or 'image'")
        self.kind = kind
        self.val_level = val_level
        self.model = model
        self.source = source
        self.split = split
        self.device = next(model.parameters()).device
        self.targets = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)).to(self.device)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.gallery = np.asarray(gallery, dtype=np.float32)
        self.settings = settings
        self.options = options
        self.scaler = scaler
        self.preprocessing = preprocessing
        self._optimizer = make_adamw([q for q in model.parameters() if q.requires_grad], settings)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self._optimizer}

    def epoch_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        return shuffled_batches(self.split.parts["train"], self.settings.batch_size, rng)

    def stages(self, batch: np.ndarray, generator: torch.Generator) -> Iterator[Stage]:
        o = self.options
        x = augment_windows(self.source.tensor(batch, self.device), generator, max_shift=o.max_shift, noise=o.noise,
                            scale=o.scale)
        h = self.model(x)["embedding"]
        rows = torch.from_numpy(self.rows[batch]).to(self.device)
        loss = clip_alignment_loss(h, self.targets[rows], self.options.loss, self.options.temperature,
                                   target_ids=rows, infonce_weight=self.options.infonce_weight)
        yield Stage("loss", loss, "model")

    def train_mode(self) -> None:
        super().train_mode()
        if self.options.backbone is not None:  # the frozen backbone: BatchNorm statistics fixed, no dropout
            from offline.training.tasks.sample_backbone import freeze_backbone_modes

            freeze_backbone_modes(self.model)

    def validate(self) -> dict[str, float]:
        val = self.split.parts["val"]
        pred = embed_windows(self.model, self.source, val, device=self.device)
        target = self.targets[torch.from_numpy(self.rows[val]).to(self.device)].cpu().numpy()
        if self.val_level == "image":
            out = retrieval_top(pred, self.targets.cpu().numpy(), self.rows[val])
        else:
            out = retrieval_top(pred, self.gallery, self.labels[val])
        out["mse"] = float(((pred - target) ** 2).sum(axis=1).mean())
        return out

    def chance(self) -> float | None:
        ids = self.rows if self.val_level == "image" else self.labels
        return 1.0 / len(np.unique(ids[self.split.parts["val"]]))

    def describe(self) -> dict[str, Any]:
        return {"options": self.options.to_dict(), "val_level": self.val_level}

    def save_best(self, directory: Path, record: dict[str, Any]) -> None:
        self.model.set_metadata(scaler=self.scaler.to_dict(), preprocessing=self.preprocessing, extra=record)
        save_checkpoint(self.model, directory, overwrite=True)


# ============================================================================ entry point
def train_sample(data: Any, out: str | os.PathLike, *, split: str | None = None, clip: Any = None,
                 clip_weights: str | os.PathLike | None = None, clip_model: str = "tiny",
                 options: SampleOptions | None = None,
                 settings: TrainSettings | None = None, resume: bool = False, overwrite: bool = False,
                 kind: str = "sample", channels: np.ndarray | None = None,
                 extra_record: dict[str, Any] | None = None, val_level: str = "class") -> TrainResult:
    """Train the sample-level extractor M_s (brain → CLIP) and write its checkpoint to ``out``.

    Parameters
    ----------
    data : path or EpochDataset
        Epoch dataset with labels, class names and (for ``caption``/``image`` targets)
        captions/images.
    out : path
        Checkpoint directory (``config.json`` + ``model.safetensors`` + ``last/``).
    split : str, optional
        Stored split name (default ``"block"``); a leaking split is refused.
    clip : ClipEmbedder or path, optional
        The frozen CLIP model, or its weights directory.
    clip_weights : path, optional
        Weights for ``load_clip(clip_model, weights=...)`` when ``clip`` is None.
    clip_model : str
        CLIP architecture (``"tiny"``, or an open_clip name such as ``"ViT-B-32"``).
    options : SampleOptions, optional
    settings : TrainSettings, optional
        Default: :class:`SampleSettings` (the settings of ``bci train sample``).
    resume, overwrite : bool
        See :func:`offline.training.loop.run_training`.
    kind : str
        Trainer name stored in the checkpoint (``"sample"``; ``"fmri"`` from train_fmri).
    channels : numpy.ndarray, optional
        Channel/voxel indices the model reads (voxel selection).
    extra_record : dict, optional
        More JSON for the checkpoint's ``extra``.
    val_level : {"class", "image"}
        Validation retrieval of each window's class among the classes of the val part
        (default), or of its own image among the val images (fMRI, new images at test).

    Returns
    -------
    TrainResult
    """
    options = options or SampleOptions()
    settings = settings or SampleSettings()
    dataset = open_dataset(data)
    info = prepare_split(dataset, split)
    embedder = resolve_clip(clip, clip_weights, model=clip_model)
    targets, rows = target_table(dataset, embedder, options.target)
    gallery = class_gallery(dataset, embedder, options.target)
    backbone_record = None
    if options.backbone is not None:
        from offline.training.tasks.sample_backbone import build_backbone_encoder

        if channels is not None or options.model not in (None, "eeg_convnet") or options.model_params:
            raise ValueError("--backbone builds the model from the pixel-level checkpoint; do not combine it with "
                             "--model, model params or a channel selection")
        model, channels, backbone_record = build_backbone_encoder(
            options.backbone, dataset, info, embed_dim=int(embedder.embed_dim), head_hidden=options.head_hidden,
            dropout=options.dropout, seed=settings.seed)
    else:
        model = build_encoder(dataset, model=options.model, embed_dim=int(embedder.embed_dim), seed=settings.seed,
                              dropout=options.dropout, params=options.model_params, channels=channels)
    scaler, source = fitted_source(dataset, info, channels=channels)
    model = model.to(resolve_device(settings.device))
    task = AlignmentTask(model, source, info, targets, rows, dataset.labels, gallery, settings, options, scaler,
                         kind=kind, preprocessing=dataset_preprocessing(dataset), val_level=val_level)
    record = {"data": dataset_record(dataset), "split": info.record(), "clip": clip_record(embedder, clip_weights),
              "target": options.target, "embedding_space": "clip", "level": val_level, **(extra_record or {})}
    if backbone_record is not None:
        record["backbone"] = backbone_record
    return run_training(task, settings, out, resume=resume, overwrite=overwrite, record=record)
