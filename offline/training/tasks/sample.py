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

Contrastive alignment as the EEG → image literature does it (NICE, ATM): ``target="image"``,
``learn_temperature=True`` (CLIP's learned ``logit_scale``, :class:`~offline.training.losses.LearnedTemperature`,
saved in the checkpoint as ``temperature.safetensors`` and in ``config.json``) and
``text_weight=0.01`` (ATM: ``0.99 · loss(image) + 0.01 · loss(caption text)``).

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bci.clip.resolve import clip_record, resolve_clip
from bci.models import EncoderModel, save_checkpoint
from bci.preprocessing import ChannelScaler
from bci.preprocessing.mvnn import NoiseWhitener
from bci.safe_io import atomic_write
from offline.data.targets import TARGETS, class_gallery, dataset_preprocessing, dataset_record, open_dataset, target_table
from offline.scoring.metrics import retrieval_top
from offline.training.encoders import build_encoder, embed_windows
from offline.training.losses import LearnedTemperature, clip_alignment_loss
from streams._checks import check_bool, check_float, check_int, check_type, check_value
from offline.training.loop import (
    SplitInfo,
    Stage,
    TrainResult,
    TrainSettings,
    TrainTask,
    WindowSource,
    augment_windows,
    fit_whitener,
    fitted_source,
    make_adamw,
    prepare_split,
    resolve_device,
    run_training,
    shuffled_batches,
)

__all__ = [
    "LOSSES",
    "TARGETS",
    "AlignmentTask",
    "SampleOptions",
    "SampleSettings",
    "TEMPERATURE_FILE",
    "check_dropout",
    "load_temperature",
    "train_sample",
]

LOSSES = ("mse", "infonce", "mse+infonce")
#: The learned temperature in a checkpoint directory (``{"logit_scale": 0-d tensor}``).
TEMPERATURE_FILE = "temperature.safetensors"


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
        InfoNCE temperature; with ``learn_temperature`` its initial value (0.07: ``logit_scale = log(1/0.07)``).
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
    mvnn : bool
        Multivariate noise normalisation (:mod:`bci.preprocessing.mvnn`): a whitening fitted on the
        training part's repetitions of each image (after the scaler), stored in the checkpoint and
        applied by the model offline and live. Off by default.
    learn_temperature : bool
        Learn the InfoNCE temperature as CLIP does (a ``logit_scale`` parameter trained with the encoder,
        clamped to at most ``log 100``); needs an InfoNCE loss. Off by default (fixed ``temperature``).
    text_weight : float
        ``w`` in ``[0, 1]``: mix the loss against the image targets with the loss against the CLIP text
        embeddings of the images' captions, ``(1 - w) · loss(image) + w · loss(text)`` (ATM uses 0.01);
        needs ``target="image"`` and captions in the dataset. 0 (default): image targets only.
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
    mvnn: bool = False
    learn_temperature: bool = False
    text_weight: float = 0.0

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
        check_bool("mvnn", self.mvnn)
        check_bool("learn_temperature", self.learn_temperature)
        if self.learn_temperature:
            if self.loss == "mse":
                raise ValueError("learn_temperature=True learns the InfoNCE temperature, but loss='mse' has none; "
                                 "use loss='infonce' or 'mse+infonce'")
            LearnedTemperature(self.temperature)  # the initial value must lie inside CLIP's clamp
        check_float("text_weight", self.text_weight, low=0.0, high=1.0)
        if self.text_weight > 0 and self.target != "image":
            raise ValueError(f"text_weight={self.text_weight!r} mixes caption text targets into image targets; it "
                             f"needs target='image', not {self.target!r} (or text_weight=0)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"model": self.model, "target": self.target, "loss": self.loss, "temperature": self.temperature,
                "infonce_weight": self.infonce_weight, "dropout": self.dropout, "model_params": dict(self.model_params),
                "max_shift": self.max_shift, "noise": self.noise, "scale": self.scale, "backbone": self.backbone,
                "head_hidden": self.head_hidden, "mvnn": self.mvnn, "learn_temperature": self.learn_temperature,
                "text_weight": self.text_weight}


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
    text_targets : numpy.ndarray, (n_targets, D), optional
        Caption text embeddings in the rows of ``targets`` (``options.text_weight > 0``).
    text_ids : numpy.ndarray, (n_targets,), optional
        Same caption -> same id (positives of each other in the text term).
    """

    metric = "top1"

    def __init__(self, model: EncoderModel, source: WindowSource, split: SplitInfo, targets: np.ndarray,
                 rows: np.ndarray, labels: np.ndarray, gallery: np.ndarray, settings: TrainSettings,
                 options: SampleOptions, scaler: ChannelScaler, *, kind: str = "sample",
                 preprocessing: dict[str, Any] | None = None, val_level: str = "class",
                 whitener: NoiseWhitener | None = None, text_targets: np.ndarray | None = None,
                 text_ids: np.ndarray | None = None) -> None:
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
        self.whitener = whitener
        self.preprocessing = preprocessing
        if options.text_weight > 0 and (text_targets is None or text_ids is None):
            raise ValueError(f"text_weight={options.text_weight!r} needs the caption text targets")
        self.text_targets = None if text_targets is None else torch.from_numpy(
            np.ascontiguousarray(text_targets, dtype=np.float32)).to(self.device)
        self.text_ids = None if text_ids is None else torch.from_numpy(np.asarray(text_ids, dtype=np.int64)).to(self.device)
        params: list[Any] = [q for q in model.parameters() if q.requires_grad]
        self.temperature: LearnedTemperature | None = None
        if options.learn_temperature:  # no weight decay on the temperature (as open_clip)
            self.temperature = LearnedTemperature(options.temperature).to(self.device)
            params = [{"params": params}, {"params": list(self.temperature.parameters()), "weight_decay": 0.0}]
        self._optimizer = make_adamw(params, settings)

    def modules(self) -> dict[str, nn.Module]:
        if self.temperature is not None:
            return {"model": self.model, "temperature": self.temperature}
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
        temperature: float | torch.Tensor = o.temperature if self.temperature is None else self.temperature()
        text: dict[str, Any] = {}
        if o.text_weight > 0 and self.text_targets is not None and self.text_ids is not None:
            text = {"text_hat": self.text_targets[rows], "text_ids": self.text_ids[rows], "text_weight": o.text_weight}
        loss = clip_alignment_loss(h, self.targets[rows], o.loss, temperature, target_ids=rows,
                                   infonce_weight=o.infonce_weight, **text)
        if self.temperature is None:
            yield Stage("loss", loss, "model")
            return
        yield Stage("loss", loss, "model", logs={"logit_scale": self.temperature.value})
        self.temperature.clamp_()  # after the optimiser step, as open_clip does

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
        scaler: dict[str, Any] = self.scaler.to_dict()
        if self.whitener is not None:
            scaler["mvnn"] = self.whitener.record
        if self.temperature is not None:
            record = {**record, "temperature": {"learned": True, **self.temperature.record(),
                                                "file": TEMPERATURE_FILE}}
        self.model.set_metadata(scaler=scaler, preprocessing=self.preprocessing, extra=record)
        save_checkpoint(self.model, directory, overwrite=True)
        if self.temperature is not None:
            scale = self.temperature.logit_scale.detach().cpu().clone().contiguous()
            atomic_write(directory / TEMPERATURE_FILE,
                         lambda p: save_file({"logit_scale": scale}, str(p), metadata={"format": "bci-runtime.temperature"}))


def load_temperature(directory: str | os.PathLike) -> LearnedTemperature | None:
    """The learned temperature of a sample-level checkpoint (``temperature.safetensors``), or None when it has none."""
    path = Path(directory) / TEMPERATURE_FILE
    if not path.is_file():
        return None
    state = load_file(str(path))
    if set(state) != {"logit_scale"} or state["logit_scale"].shape != ():
        raise ValueError(f"{path} must hold one 0-d tensor 'logit_scale', got {sorted(state)}; re-save the checkpoint")
    out = LearnedTemperature()
    out.load_state_dict(state)
    return out


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
    text_targets, text_ids = _text_targets(dataset, embedder, options)
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
    whitener = fit_whitener(dataset, source, info.parts["train"]) if options.mvnn else None
    if whitener is not None:
        model.set_whitening(whitener.matrix)
    model = model.to(resolve_device(settings.device))
    task = AlignmentTask(model, source, info, targets, rows, dataset.labels, gallery, settings, options, scaler,
                         kind=kind, preprocessing=dataset_preprocessing(dataset), val_level=val_level,
                         whitener=whitener, text_targets=text_targets, text_ids=text_ids)
    record = {"data": dataset_record(dataset), "split": info.record(), "clip": clip_record(embedder, clip_weights),
              "target": options.target, "embedding_space": "clip", "level": val_level, **(extra_record or {})}
    if backbone_record is not None:
        record["backbone"] = backbone_record
    return run_training(task, settings, out, resume=resume, overwrite=overwrite, record=record)


def _text_targets(dataset: Any, embedder: Any, options: SampleOptions) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Caption text embeddings in the image-target rows, and one id per distinct caption (``text_weight > 0``)."""
    if options.text_weight == 0:
        return None, None
    captions = dataset.captions
    if captions is None or len(captions) == 0:
        raise ValueError(f"text_weight={options.text_weight!r} needs the captions of the dataset's images, and "
                         f"{str(dataset.path)!r} has none; pass text_weight=0 (--text-weight 0)")
    text, _ = target_table(dataset, embedder, "caption")
    _, ids = np.unique(np.asarray([str(c) for c in captions]), return_inverse=True)
    return text, ids.astype(np.int64)
