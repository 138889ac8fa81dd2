"""fMRI without (or beside) CLIP: dual encoder, pattern decoder, multi-subject model (SPEC §5, "fMRI").

Three objectives for ``fmri_mlp`` encoders, one or several subjects:

* ``"dual"`` — a **dual encoder**: the fMRI MLP and a small CNN on the stimulus image
  (:class:`bci.models.stimulus.StimulusCNN`) are trained together with a symmetric
  InfoNCE loss, so each trial lands next to the embedding of the pattern it saw.
  Retrieval among new patterns embeds them with the CNN.
* ``"pattern"`` — a **decoder back to the stimulus**: the MLP outputs ``grid × grid``
  logits, trained with binary cross-entropy against the stimulus resized to the grid
  (grey in [0, 1]; the 10×10 Miyawaki patterns exactly, 28×28 for digit-like stimuli).
  Identification compares the reconstruction with each candidate (Pearson correlation).
* ``"clip"`` — InfoNCE to the frozen CLIP image embeddings (as ``offline.training.tasks.fmri``,
  here so that several subjects can share a model).

**Several subjects** (one epoch dataset each, any voxel counts): every subject has its
own first layer (voxels → first hidden layer) and scaler; the rest of the MLP (and the
stimulus CNN) is shared and trained on all subjects' trials at once. Each subject's
encoder is written as an ordinary ``fmri_mlp`` checkpoint under ``OUT/subjects/sub-K``
(the subject layer and the shared trunk together), so it runs anywhere a one-subject
checkpoint does. ``OUT/multisubject.json`` lists them. With one subject, ``OUT`` itself
is the checkpoint. The dual encoder's CNN goes to ``OUT/stimulus``.

Validation metric: image-level top-1 identification of each validation trial's own
stimulus among the validation stimuli, averaged over subjects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bci.models import save_checkpoint
from bci.models.registry import EncoderModel
from bci.models.stimulus import StimulusCNN, StimulusConfig, images_to_grey, save_stimulus_encoder
from bci.safe_io import atomic_write
from offline.data.epochs import EpochDataset
from offline.training.losses import info_nce
from bci.clip.resolve import clip_record, resolve_clip
from offline.data.targets import dataset_record, open_dataset, pattern_targets, target_table
from offline.training.encoders import build_encoder, embed_windows
from offline.training.tasks.fmri import FMRISettings
from streams._checks import check_float, check_int
from offline.training.loop import (SplitInfo, Stage, TrainResult, TrainSettings, TrainTask, WindowSource, fitted_source,
                              make_adamw, prepare_split, resolve_device, run_training, shuffled_batches)

__all__ = ["OBJECTIVES", "FMRIJointOptions", "MULTI_MANIFEST", "STIMULUS_DIR", "SUBJECTS_DIR",
           "train_fmri_joint"]

OBJECTIVES = ("dual", "pattern", "clip")
MULTI_MANIFEST = "multisubject.json"
STIMULUS_DIR = "stimulus"
SUBJECTS_DIR = "subjects"


@dataclass
class FMRIJointOptions:
    """Options of :func:`train_fmri_joint`.

    Parameters
    ----------
    objective : {"dual", "pattern", "clip"}
        See the module docstring.
    embed_dim : int
        Shared embedding size of the dual encoder (ignored by ``pattern``: ``grid²``; and
        ``clip``: the CLIP size).
    hidden : list of int
        Hidden layers of the fMRI MLP (the first one is subject-specific).
    dropout : float
        Dropout of the fMRI MLP.
    temperature : float
        InfoNCE temperature (``dual``, ``clip``).
    grid : int or None
        Side of the decoded pattern (``pattern``); None: the dataset's simulated grid, else 10.
    stimulus_size : int
        Side the stimulus is resized to for the CNN (``dual``).
    stimulus_channels : list of int
        Conv channels of the stimulus CNN (``dual``).
    """

    objective: str = "dual"
    embed_dim: int = 256
    hidden: list[int] = field(default_factory=lambda: [1024, 768])
    dropout: float = 0.3
    temperature: float = 0.07
    grid: int | None = None
    stimulus_size: int = 20
    stimulus_channels: list[int] = field(default_factory=lambda: [32, 64])

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} must be one of {', '.join(OBJECTIVES)}")
        for name in ("embed_dim", "stimulus_size"):
            check_int(name, getattr(self, name), low=1)
        if self.grid is not None:
            check_int("grid", self.grid, low=2)
        hidden = self.hidden
        if not isinstance(hidden, (list, tuple)) or not hidden or not all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
            raise ValueError(f"hidden={hidden!r} must be a non-empty list of positive ints (the first hidden layer "
                             "is the subject-specific one)")
        self.hidden = list(hidden)
        if not 0.0 <= check_float("dropout", self.dropout, finite=False) < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1)")
        check_float("temperature", self.temperature, positive=True, finite=False)
        StimulusConfig(self.stimulus_size, tuple(self.stimulus_channels), self.embed_dim)  # validates channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)


def _default_grid(dataset: EpochDataset) -> int:
    sim = (dataset.source or {}).get("fmri_simulation")
    if isinstance(sim, dict) and sim.get("grid"):
        return int(sim["grid"])
    return 10


# ============================================================================ subjects
@dataclass
class _Subject:
    """One subject's data and encoder inside a joint run."""

    name: str
    dataset: EpochDataset
    split: SplitInfo
    source: WindowSource
    scaler: Any
    rows: np.ndarray          # image-table row of every epoch
    offset: int               # global epoch index = offset + local index
    image_ids: torch.Tensor   # global id of every image-table row: equal pixels, equal id (across subjects)
    image_keys: list[str]     # content hash of every image-table row
    targets: torch.Tensor     # pattern: (n_images, grid²); clip: (n_images, D); dual: (n_images, 1, S, S) images
    encoder: EncoderModel


def _open_subjects(data: Sequence[Any], split: str | None, options: FMRIJointOptions, embedder: Any,
                   settings: TrainSettings, device: torch.device) -> list[_Subject]:
    subjects: list[_Subject] = []
    offset = 0
    global_ids: dict[str, int] = {}
    grid = options.grid
    for k, item in enumerate(data):
        ds = open_dataset(item)
        where = ds.path
        if str(ds.modality).lower() != "fmri":
            raise ValueError(f"dataset {where} has modality {ds.modality!r}; 'bci train fmri' needs fMRI epoch "
                             "datasets (use 'bci train sample' for EEG)")
        if ds.images is None or ds.image_table_ids is None:
            raise ValueError(f"dataset {where} has no stimulus images; the {options.objective!r} objective "
                             "needs them (image table of the epoch dataset)")
        info = prepare_split(ds, split)
        for part in ("train", "val"):
            if len(info.parts[part]) == 0:
                raise ValueError(f"split {info.name!r} of dataset {where} has an empty {part!r} part")
        scaler, source = fitted_source(ds, info)
        rows = np.asarray(ds.image_rows(), dtype=np.int64)
        images = np.asarray(ds.images)
        if options.objective == "pattern":
            grid = grid or _default_grid(ds)
            table = torch.from_numpy(pattern_targets(images, grid))
            dim = grid * grid
        elif options.objective == "clip":
            t, _ = target_table(ds, embedder, "image")
            table, dim = torch.from_numpy(np.ascontiguousarray(t, np.float32)), int(embedder.embed_dim)
        else:
            table, dim = images_to_grey(images, options.stimulus_size), options.embed_dim
        encoder = build_encoder(ds, model="fmri_mlp", embed_dim=dim, seed=settings.seed + 1000 * k,
                                dropout=options.dropout, params={"hidden": list(options.hidden)}).to(device)
        keys = [_image_key(im) for im in images]
        ids = torch.as_tensor([global_ids.setdefault(key, len(global_ids)) for key in keys], device=device)
        subjects.append(_Subject(f"sub-{k}", ds, info, source, scaler, rows, offset, ids, keys,
                                 table.to(device), encoder))
        offset += int(ds.n_epochs)
    if options.objective == "pattern":
        options.grid = grid
    _refuse_cross_subject_leaks(subjects)
    _share_trunk(subjects)
    return subjects


def _image_key(image: np.ndarray) -> str:
    """Content hash of one stimulus image (shape + pixels)."""
    a = np.ascontiguousarray(image)
    return hashlib.sha1(str(a.shape).encode() + a.tobytes()).hexdigest()


def _refuse_cross_subject_leaks(subjects: list[_Subject]) -> None:
    """A stimulus in one subject's val/test part must not be in another subject's training part.

    The shared trunk and stimulus CNN learn from every subject's training trials, so such a
    stimulus would not be new at evaluation, and the scores would be inflated.
    """
    trained = {s.name: {s.image_keys[r] for r in s.rows[s.split.parts["train"]]} for s in subjects}
    for s in subjects:
        for part in ("val", "test"):
            held = {s.image_keys[r] for r in s.rows[s.split.parts[part]]}
            for other in subjects:
                if other is s:
                    continue
                shared = held & trained[other.name]
                if shared:
                    raise ValueError(
                        f"{len(shared)} stimulus image(s) of the {part!r} part of {s.name} "
                        f"({s.dataset.path}) are in the training part of {other.name} "
                        f"({getattr(other.dataset, 'path', '')}): the shared layers would have trained on them, "
                        "which inflates the scores; hold the same stimuli out for every subject")


def _share_trunk(subjects: list[_Subject]) -> None:
    """Make every subject's MLP use subject 0's layers after the first Linear (shared parameters)."""
    trunk = list(subjects[0].encoder.mlp)[1:]
    for s in subjects[1:]:
        s.encoder.mlp = nn.Sequential(s.encoder.mlp[0], *trunk)


class _JointModel(nn.Module):
    """Holds every subject encoder (shared trunk) and the stimulus CNN, for optimisation and ``last/``."""

    def __init__(self, encoders: list[EncoderModel], stimulus: StimulusCNN | None) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.stimulus = stimulus


# ============================================================================ task
class JointFMRITask(TrainTask):
    """Training task of :func:`train_fmri_joint` (see the module docstring)."""

    kind = "fmri-joint"
    metric = "top1"

    def __init__(self, subjects: list[_Subject], stimulus: StimulusCNN | None, options: FMRIJointOptions,
                 settings: TrainSettings) -> None:
        self.subjects = subjects
        self.stimulus = stimulus
        self.options = options
        self.settings = settings
        self.model = _JointModel([s.encoder for s in subjects], stimulus)
        params = list({id(p): p for p in self.model.parameters()}.values())
        self._optimizer = make_adamw(params, settings)
        self.device = next(self.model.parameters()).device
        self._starts = np.asarray([s.offset for s in subjects], dtype=np.int64)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self._optimizer}

    def epoch_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        train = np.concatenate([s.offset + s.split.parts["train"] for s in self.subjects])
        return shuffled_batches(train, self.settings.batch_size, rng)

    def _locate(self, batch: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._starts, batch, side="right") - 1

    def stages(self, batch: np.ndarray, generator: torch.Generator) -> Iterator[Stage]:
        which = self._locate(batch)
        outputs, targets, ids = [], [], []
        for k in np.unique(which):
            s = self.subjects[int(k)]
            local = batch[which == k] - s.offset
            outputs.append(s.encoder(s.source.tensor(local, self.device))["embedding"])
            rows = torch.from_numpy(s.rows[local]).to(self.device)
            targets.append(s.targets[rows])
            ids.append(s.image_ids[rows])
        h, t, image_ids = torch.cat(outputs), torch.cat(targets), torch.cat(ids)
        yield Stage("loss", self._loss(h, t, image_ids), "model")

    def _loss(self, h: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        o = self.options
        if o.objective == "pattern":
            return F.binary_cross_entropy_with_logits(h, t)
        if o.objective == "dual":
            t = self.stimulus(t)
        return info_nce(h, t, o.temperature, target_ids=ids)

    def _candidates(self, s: _Subject, rows: np.ndarray) -> np.ndarray:
        t = s.targets[torch.from_numpy(rows).to(self.device)]
        if self.options.objective == "dual":
            t = self.stimulus(t)
        return t.float().cpu().numpy()

    def validate(self) -> dict[str, float]:
        from offline.scoring.metrics import similarity, topk_from_scores

        top1, extra = [], {}
        for s in self.subjects:
            val = s.split.parts["val"]
            pred = embed_windows(s.encoder, s.source, val, device=self.device)
            uniq, true = np.unique(s.rows[val], return_inverse=True)
            cand = self._candidates(s, uniq)
            if self.options.objective == "pattern":
                prob = 1.0 / (1.0 + np.exp(-pred))
                sims = similarity(prob, cand, "correlation")
                extra.setdefault("pixel_acc", []).append(float(((prob > 0.5) == (cand[true] > 0.5)).mean()))
            else:
                sims = similarity(pred, cand)
            top1.append(topk_from_scores(sims, true, k=1)["top-1"].value)
        out = {"top1": float(np.mean(top1)), **{k: float(np.mean(v)) for k, v in extra.items()}}
        if len(self.subjects) > 1:
            out.update({f"top1_{s.name}": float(v) for s, v in zip(self.subjects, top1)})
        return out

    def chance(self) -> float | None:
        return float(np.mean([1.0 / len(np.unique(s.rows[s.split.parts["val"]])) for s in self.subjects]))

    def describe(self) -> dict[str, Any]:
        return {"options": self.options.to_dict(), "subjects": [s.name for s in self.subjects]}

    def save_best(self, directory: Path, record: dict[str, Any]) -> None:
        multi = len(self.subjects) > 1
        stim_rel = None
        if self.stimulus is not None:
            save_stimulus_encoder(self.stimulus, directory / STIMULUS_DIR)
        for s in self.subjects:
            target = directory / SUBJECTS_DIR / s.name if multi else directory
            if self.stimulus is not None:
                stim_rel = os.path.relpath(directory / STIMULUS_DIR, target)
            rec = {**record, "data": dataset_record(s.dataset), "split": s.split.record(), "subject": s.name,
                   "level": "image", "objective": self.options.objective,
                   "embedding_space": {"dual": "stimulus", "pattern": "pattern", "clip": "clip"}[
                       self.options.objective]}
            if self.options.objective == "pattern":
                rec["pattern_grid"] = int(self.options.grid)
            if stim_rel is not None:
                rec["stimulus_encoder"] = stim_rel
                rec["stimulus_fingerprint"] = self.stimulus.fingerprint()
            if multi:
                rec["multisubject"] = {"manifest": os.path.relpath(directory / MULTI_MANIFEST, target),
                                       "n_subjects": len(self.subjects)}
            s.encoder.set_metadata(scaler=s.scaler.to_dict(), preprocessing=None, extra=rec)
            save_checkpoint(s.encoder, target, overwrite=True)
        if multi:
            manifest = {"format": "bci-runtime.fmri-multisubject", "format_version": 1,
                        "objective": self.options.objective, "metrics": record.get("metrics"),
                        "subjects": [{"name": s.name, "checkpoint": f"{SUBJECTS_DIR}/{s.name}",
                                      "dataset": str(s.dataset.path),
                                      "fingerprint": str(s.dataset.fingerprint()),
                                      "n_voxels": int(s.dataset.data.shape[1])} for s in self.subjects],
                        "stimulus_encoder": STIMULUS_DIR if self.stimulus is not None else None}
            text = json.dumps(manifest, indent=2) + "\n"
            atomic_write(directory / MULTI_MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))


# ============================================================================ entry point
def train_fmri_joint(data: Any | Sequence[Any], out: str | os.PathLike, *, options: FMRIJointOptions | None = None,
                     split: str | None = None, settings: TrainSettings | None = None, clip: Any = None,
                     clip_weights: str | os.PathLike | None = None, clip_model: str = "tiny", resume: bool = False,
                     overwrite: bool = False) -> TrainResult:
    """Train fMRI encoders with the dual, pattern or CLIP objective, for one or several subjects.

    Parameters
    ----------
    data : path or EpochDataset, or a list of them
        One fMRI epoch dataset per subject (each with its own split and image table).
    out : path
        Checkpoint directory (see the module docstring for its layout).
    options : FMRIJointOptions, optional
    split : str, optional
        Stored split of every dataset (default ``"block"``); leaking splits are refused.
    settings : TrainSettings, optional
        Default: :class:`offline.training.tasks.fmri.FMRISettings` (the settings of ``bci train fmri``).
    clip, clip_weights, clip_model
        The frozen CLIP model, for ``objective="clip"`` only.
    resume, overwrite : bool

    Returns
    -------
    TrainResult
    """
    options = dataclasses.replace(options) if options is not None else FMRIJointOptions()  # grid is filled in
    settings = settings or FMRISettings()
    items = list(data) if isinstance(data, (list, tuple)) else [data]
    if not items:
        raise ValueError("data: give at least one fMRI epoch dataset")
    embedder = resolve_clip(clip, clip_weights, model=clip_model) if options.objective == "clip" else None
    device = resolve_device(settings.device)
    subjects = _open_subjects(items, split, options, embedder, settings, device)
    stimulus = None
    if options.objective == "dual":
        torch.manual_seed(settings.seed + 7)
        stimulus = StimulusCNN(StimulusConfig(options.stimulus_size, tuple(options.stimulus_channels),
                                              options.embed_dim)).to(device)
    task = JointFMRITask(subjects, stimulus, options, settings)
    fingerprints = [str(s.dataset.fingerprint()) for s in subjects]
    hashes = [s.split.record().get("hash") for s in subjects]
    record = {"split": {"hash": hashlib.sha256("|".join(map(str, hashes)).encode()).hexdigest()[:16],
                        "dataset_fingerprint": ",".join(fingerprints)},
              "subjects": [{"name": s.name, "data": dataset_record(s.dataset)} for s in subjects]}
    if embedder is not None:
        record["clip"] = clip_record(embedder, clip_weights)
    return run_training(task, settings, out, resume=resume, overwrite=overwrite, record=record)
