"""Evaluation of trained checkpoints, with chance, a ridge baseline and the oracle beside.

:func:`evaluate` scores an encoder checkpoint (``bci train sample|pixel|fmri``) or a
saliency-GAN checkpoint (``bci train saliency-gan``) on one part (``test`` by default)
of a stored split of an epoch dataset:

* **encoders in CLIP space** (sample-level, fMRI): N-way top-1/top-5 retrieval of each
  window's class among the classes present in the part (cosine against the class
  template text embeddings, or class-mean image embeddings for image targets);
  pairwise identification; image-level retrieval when the target was per image;
  zero-shot accuracy when the split holds out whole classes (the test classes were
  never trained on);
* **metric-space encoders** (pixel-level, triplet): nearest-class-centroid
  classification (centroids from the training part) top-1/top-5 and pairwise
  identification against the centroids;
* **saliency GAN**: generated images (resized to the stimulus size) against the
  stimuli: PixCorr, SSIM, and with CLIP the CLIP 2-way identification and the N-way
  classification of generated images by CLIP;

each beside its **chance** level, a **ridge baseline** fitted on the same training
part (signals → the model's target space, or → pixels for the GAN) and, on synthetic
data, the **oracle** (matched filter with the simulator's true templates). Plots (PNG):
similarity matrix, PCA (and t-SNE) of the embeddings, a grid stimulus | retrieved |
generated. A JSON report holds every number and the split protocol.
:func:`export_embeddings` writes embeddings as ``.npz`` + ``.json`` metadata.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bci.runtime.inference import Encoder
from bci.models import ModelConfig, load_checkpoint
from bci.models.checkpoint import CheckpointError
from bci.models.stimulus import pattern_grid, pattern_probabilities
from bci.safe_io import read_json_object
from offline.data.epochs import EpochDataset
from offline.scoring.centroids import class_centroids
from offline.scoring.vectors import unit_rows
from offline.scoring.metrics import (
    Bootstrap,
    Score,
    clip_two_way,
    format_interval,
    pairwise_identification,
    paired_difference,
    pixcorr,
    similarity,
    ssim_metric,
    ssim_per_image,
    topk_from_scores,
    topk_retrieval,
)
from bci.clip.resolve import recorded_clip, resolve_clip
from offline.data.leaks import _unit_codes
from offline.data.montage import channel_selection
from offline.data.records import encoder_fingerprint
from streams._store import jsonable as _jsonable
from offline.data.splits import SplitInfo, prepare_split
from offline.data.targets import (class_gallery, dataset_record, open_dataset, pattern_targets, stimulus_tensor,
                                  target_table)

__all__ = ["MIN_BOOTSTRAP_BLOCKS", "REPORT_FILE", "checkpoint_kind", "evaluate", "export_embeddings", "format_report",
           "resampling_units"]

REPORT_FILE = "report.json"
_RIDGE_MAX_FEATURES = 4096
#: Below this many blocks in the evaluated part, intervals resample images instead of blocks.
MIN_BOOTSTRAP_BLOCKS = 10


# ============================================================================ checkpoints
def checkpoint_kind(checkpoint: str | os.PathLike) -> str:
    """``"encoder"`` or ``"saliency-gan"`` from the checkpoint's ``config.json``."""
    path = Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    cfg = path / "config.json"
    manifest = path / "multisubject.json"
    if not cfg.is_file() and manifest.is_file():
        names = sorted(p.name for p in (path / "subjects").iterdir()) if (path / "subjects").is_dir() else []
        raise CheckpointError(f"{path} is a multi-subject fMRI model; evaluate one subject's checkpoint against "
                              f"that subject's dataset: {path / 'subjects' / (names[0] if names else 'sub-0')} "
                              f"(subjects: {', '.join(names) or 'none found'})")
    if not cfg.is_file():
        raise CheckpointError(f"{path} has no config.json; is it a checkpoint written by 'bci train'?")
    fmt = read_json_object(cfg).get("format")
    if fmt == "bci-runtime.checkpoint":
        return "encoder"
    if fmt == "bci-runtime.saliency-gan":
        return "saliency-gan"
    raise CheckpointError(f"{cfg} has format {fmt!r}; expected an encoder or saliency-GAN checkpoint")


class _EncoderRun:
    """An encoder checkpoint applied to dataset windows exactly as at run time (scaler included)."""

    def __init__(self, checkpoint: str | os.PathLike, ds: EpochDataset, device: str = "cpu",
                 progress: bool = False) -> None:
        self.path = Path(checkpoint)
        self.progress = bool(progress)
        self.model = load_checkpoint(checkpoint, device="cpu")
        self.config = self.model.get_config()
        self.channels = channel_selection(self.config, ds, checkpoint)
        self.encoder = Encoder(self.model, device=device, warmup=0, threads=torch.get_num_threads(), compile=False,
                               cuda_graph=False)
        self.ds = ds

    def windows(self, indices: np.ndarray) -> np.ndarray:
        x = self.ds.get_batch(np.asarray(indices, dtype=np.int64))
        return x if self.channels is None else x[:, self.channels, :]

    def scaled(self, indices: np.ndarray) -> np.ndarray:
        """Windows standardised with the checkpoint's scaler, then its MVNN whitening if any (the ridge baseline's input)."""
        x = self.windows(indices).astype(np.float32)
        sc = self.config.scaler
        if sc is None:
            return x
        mean = np.asarray(sc["mean"], np.float32).reshape(1, -1, 1)
        std = np.asarray(sc["std"], np.float32).reshape(1, -1, 1)
        x = (x - mean) / std
        if self.model.mvnn_whitening is not None:  # the ridge sees what the network sees
            x = np.matmul(self.model.mvnn_whitening.cpu().numpy(), x)
        return x

    def embed(self, indices: np.ndarray, batch: int = 256) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        from tqdm import tqdm

        starts = tqdm(range(0, len(idx), batch), desc="embedding", unit="batch", disable=not self.progress,
                      leave=False, file=sys.stderr)
        out = [self.encoder(self.windows(idx[i : i + batch]))["embedding"] for i in starts]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.config.embed_dim), np.float32)


# ============================================================================ split
def _resolve_split(ds: EpochDataset, split: str | None, recorded: dict[str, Any], ckpt: str | os.PathLike) -> SplitInfo:
    name = split or recorded.get("name")
    info = prepare_split(ds, name)
    same_data = recorded.get("dataset_fingerprint") == info.dataset_fingerprint
    if same_data and recorded.get("hash") and recorded.get("hash") != info.checkpoint_hash:
        raise ValueError(
            f"checkpoint {ckpt} was trained on split {recorded.get('name')!r} of this dataset; evaluating it on split "
            f"{info.name!r} would score windows it was trained on. Use --split {recorded.get('name')}"
        )
    return info


def _protocol(info: SplitInfo, ds: EpochDataset, part: str) -> dict[str, Any]:
    labels = np.asarray(ds.labels)
    train_classes = set(np.unique(labels[info.parts["train"]]).tolist())
    part_classes = set(np.unique(labels[info.parts[part]]).tolist())
    zero_shot = bool(part_classes) and not (part_classes & train_classes)
    text = (f"split {info.name!r} (kind {info.kind}) of dataset {info.dataset_fingerprint}: train "
            f"{len(info.parts['train'])}, val {len(info.parts['val'])}, test {len(info.parts['test'])} windows; "
            f"whole blocks are kept in one part; scaler and ridge fitted on train only; evaluated on '{part}'"
            + (" (classes never seen in training: zero-shot)" if zero_shot else ""))
    return {**info.record(), "part": part, "zero_shot": zero_shot, "n_classes_part": len(part_classes),
            "description": text}


# ============================================================================ metrics
def _scores_dict(scores: dict[str, Score]) -> dict[str, dict[str, Any]]:
    return {k: v.to_dict() for k, v in scores.items()}


def resampling_units(ds: EpochDataset, idx: np.ndarray) -> Bootstrap:
    """The independent unit of the evaluated windows, for the bootstrap intervals of every score.

    Windows of one block (subject, session, block) share slow drifts, so whole test blocks are
    resampled; a part with fewer than :data:`MIN_BOOTSTRAP_BLOCKS` blocks (e.g. a rapid design)
    resamples its stimulus images instead (all windows of one image together).
    """
    blocks = _unit_codes(ds.table)["blocks"][idx]
    if len(np.unique(blocks)) >= MIN_BOOTSTRAP_BLOCKS or ds.image_table_ids is None:
        return Bootstrap(blocks, unit="block")
    return Bootstrap(ds.image_rows()[idx], unit="image")


def _interval_record(boot: Bootstrap) -> dict[str, Any]:
    groups = np.asarray(boot.groups)
    return {"level": 0.95, "method": "percentile bootstrap of the mean over windows", "unit": boot.unit,
            "n_units": int(len(np.unique(groups))), "n_boot": boot.n_boot, "seed": boot.seed}


# ============================================================================ ridge
def _ridge_features(run: _EncoderRun, indices: np.ndarray) -> np.ndarray:
    from offline.evaluation.baselines import downsample_features

    x = run.scaled(indices)
    factor = max(1, int(math.ceil(x.shape[1] * x.shape[2] / _RIDGE_MAX_FEATURES)))
    factor = min(factor, x.shape[2])
    return downsample_features(x, factor)


def _ridge_fit_predict(run: _EncoderRun, ds: EpochDataset, train: np.ndarray, part: np.ndarray,
                       y_train: np.ndarray) -> np.ndarray:
    from offline.evaluation.baselines import RidgeDecoder

    groups = np.asarray(ds.block)[train]
    n_folds = int(min(5, len(np.unique(groups))))
    if n_folds >= 2:
        ridge = RidgeDecoder(n_folds=n_folds).fit(_ridge_features(run, train), y_train, groups)
    else:
        ridge = RidgeDecoder(alphas=[1e3]).fit(_ridge_features(run, train), y_train)
    return ridge.predict(_ridge_features(run, part)).astype(np.float32)


# ============================================================================ oracle
def _oracle_metrics(ds: EpochDataset, info: SplitInfo, part: str, zero_shot: bool, level: str,
                    boot: Bootstrap | None = None) -> dict[str, Any] | None:
    """Scores of the simulator's oracle on the same candidates as the model (synthetic data only)."""
    from offline.evaluation.dataset_oracle import fmri_oracle_for_dataset, oracle_for_dataset

    train, idx = info.parts["train"], info.parts[part]
    if str(ds.modality) == "fmri":
        oracle = fmri_oracle_for_dataset(ds, train)
        if oracle is None:
            return None
        scores = oracle.score(ds.get_batch(idx).astype(np.float64).mean(axis=2))
        level = "image"
    else:
        oracle = oracle_for_dataset(ds, train)
        if oracle is None:
            return None
        x = ds.get_batch(idx).astype(np.float64)
        scores = oracle.score(x) if level == "image" else oracle.score_classes(x)
    ids = ds.image_rows(idx) if level == "image" else np.asarray(ds.labels)[idx]
    uniq, true = np.unique(ids, return_inverse=True)
    sub = scores[:, uniq]
    m = len(uniq)
    what = "image " if level == "image" else ""
    ks = tuple(k for k in (1, 5) if k <= m)
    top = topk_from_scores(sub, true, k=ks, bootstrap=boot)
    out = {f"{what}{m}-way {k}": v.renamed(f"{what}{m}-way {k}") for k, v in top.items()}
    if zero_shot and level == "class":
        out.update({f"zero-shot {m}-way {k}": v.renamed(f"zero-shot {m}-way {k}") for k, v in top.items()})
    return _scores_dict(out)


# ============================================================================ evaluate
def evaluate(checkpoint: str | os.PathLike, dataset: EpochDataset, split: str | None = None, part: str = "test", *,
             clip: Any = None, clip_weights: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
             baseline: bool = True, oracle: bool = True, plots: bool = True, device: str = "cpu",
             progress: bool = False) -> dict[str, Any]:
    """Score a checkpoint on one part of a split; write ``report.json`` and plots to ``out_dir``.

    Parameters
    ----------
    checkpoint : path
        Encoder checkpoint (``config.json`` + ``model.safetensors``) or saliency-GAN checkpoint.
    dataset : path or EpochDataset
        Epoch dataset (the one trained on, or another with the same channels and window).
    split : str, optional
        Split name; default: the split recorded in the checkpoint. Evaluating a model on
        another split of the dataset it was trained on is refused (it would score
        training windows).
    part : str
        ``"test"`` (default), ``"val"`` or ``"train"``.
    clip : ClipEmbedder or path, optional
        Needed for CLIP-space models and CLIP metrics of generated images.
    clip_weights : path, optional
        Weights directory for ``load_clip("tiny", weights=...)``.
    out_dir : path, optional
        Where ``report.json`` and the PNGs go (created); None: nothing written.
    baseline, oracle, plots : bool
        Compute the ridge baseline / oracle (synthetic data only) / plots.
    device : str
    progress : bool
        Show a progress bar (tqdm, stderr) while the model embeds the windows.

    Returns
    -------
    dict
        The report (also written as JSON): ``model``, ``ridge``, ``oracle`` score dicts
        (``{"value", "chance", "n", "name"}`` each), the split protocol, plot paths.
    """
    t0 = time.perf_counter()
    ds = open_dataset(dataset)
    kind = checkpoint_kind(checkpoint)
    if part not in ("train", "val", "test"):
        raise ValueError(f"part={part!r} must be 'train', 'val' or 'test'")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if kind == "encoder":
        report = _evaluate_encoder(checkpoint, ds, split, part, clip, clip_weights, out, baseline, oracle, plots, device,
                                   progress)
    else:
        report = _evaluate_gan(checkpoint, ds, split, part, clip, clip_weights, out, baseline, plots, device, progress)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report = _jsonable(report)
    if out is not None:
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _base_report(checkpoint: str | os.PathLike, kind: str, ds: EpochDataset, info: SplitInfo, part: str) -> dict[str, Any]:
    return {"checkpoint": str(Path(checkpoint).resolve()), "kind": kind, "dataset": dataset_record(ds),
            "protocol": _protocol(info, ds, part), "synthetic_world": dataset_record(ds)["synthetic"]}


def _evaluate_encoder(checkpoint: str | os.PathLike, ds: EpochDataset, split: str | None, part: str, clip: Any,
                      clip_weights: Any, out: Path | None, baseline: bool, oracle: bool, plots: bool,
                      device: str, progress: bool = False) -> dict[str, Any]:
    run = _EncoderRun(checkpoint, ds, device, progress)
    extra = run.config.extra or {}
    info = _resolve_split(ds, split, extra.get("split") or {}, checkpoint)
    idx, train = info.parts[part], info.parts["train"]
    if len(idx) == 0:
        raise ValueError(f"part {part!r} of split {info.name!r} is empty; choose another --part")
    report = _base_report(checkpoint, "encoder", ds, info, part)
    boot = resampling_units(ds, idx)
    report["intervals"] = _interval_record(boot)
    zero_shot = report["protocol"]["zero_shot"]
    space, embedder = _embedding_space(extra, run.config, clip, clip_weights, checkpoint)
    level = str(extra.get("level") or "class")
    pred = run.embed(idx)
    report.update({"model": {"name": run.config.name, "embed_dim": run.config.embed_dim, "space": space,
                             "level": level, "task": extra.get("task"), "target": extra.get("target"),
                             "objective": extra.get("objective"), "subject": extra.get("subject")},
                   "n": int(len(idx))})
    if space == "clip":
        view = _clip_view(ds, embedder, str(extra.get("target") or "template"), level, idx, train)
    elif space == "pattern":
        view = _pattern_view(ds, pattern_grid(run.config, f"checkpoint {checkpoint}"), idx, train)
        pred = pattern_probabilities(pred).astype(np.float32)
    elif space == "stimulus":
        view = _stimulus_view(ds, _stimulus_encoder(extra, checkpoint), idx, train)
    else:
        view = _metric_view(ds, run, idx, train)
    report["scores"] = {"model": _scores_dict(view.score(pred, zero_shot, boot=boot))}
    ridge_pred = None
    if baseline:
        ridge_pred = _ridge_fit_predict(run, ds, train, idx, view.ridge_targets)
        report["scores"]["ridge"] = _scores_dict(view.score(ridge_pred, zero_shot, ridge=True, boot=boot))
    if space == "pattern":
        report["reconstruction"] = _pattern_reconstruction(ds, idx, view, pred, ridge_pred, out if plots else None)
    if oracle:
        orc = _oracle_metrics(ds, info, part, zero_shot, level, boot)
        if orc is not None:
            report["scores"]["oracle"] = orc
    report["chance"] = {k: v["chance"] for k, v in report["scores"]["model"].items()}
    if plots and out is not None:
        from offline.evaluation import plots as eval_plots

        report["plots"] = eval_plots.encoder_plots(out, ds, idx, pred, view.similarities(pred), view.true,
                                                   view.candidate_names, view.candidate_rows)
    return report


class _View:
    """How one kind of model is scored: candidates (classes or images), targets for ridge, similarities."""

    def __init__(self, candidates: np.ndarray, true: np.ndarray, ridge_targets: np.ndarray, *, names: list[str],
                 ids: np.ndarray, rows: np.ndarray | None, level: str, metric_space: bool) -> None:
        self.candidates = candidates          # (M, D) embeddings of the candidates
        self.true = true                      # (n,) column of each evaluated window's candidate
        self.ridge_targets = ridge_targets    # (n_train, D') targets of the ridge baseline
        self.candidate_names = names
        self.candidate_ids = ids              # class index (class level) or image row (image level)
        self.candidate_rows = rows            # image row shown for each candidate, or None
        self.level = level
        self.metric_space = metric_space

    #: "correlation" (Pearson) for pattern reconstructions against candidate patterns, else cosine.
    metric = "cosine"

    def similarities(self, pred: np.ndarray) -> np.ndarray:
        if self.metric == "correlation":
            return similarity(pred, self.candidates, "correlation")
        return unit_rows(pred) @ unit_rows(self.candidates).T

    def score(self, pred: np.ndarray, zero_shot: bool, ridge: bool = False,
              boot: Bootstrap | None = None) -> dict[str, Score]:
        if ridge and self.metric_space:  # ridge on one-hot classes: its outputs are class scores
            scores = pred[:, self.candidate_ids]
        else:
            scores = self.similarities(pred)
        m = scores.shape[1]
        what = "image " if self.level == "image" else ""
        ks = tuple(k for k in (1, 5) if k <= m)
        top = topk_from_scores(scores, self.true, k=ks, bootstrap=boot)
        out = {f"{what}{m}-way {k}": v.renamed(f"{what}{m}-way {k}") for k, v in top.items()}
        if m >= 2 and not (ridge and self.metric_space):
            out[f"{what}pairwise"] = pairwise_identification(pred, self.candidates[self.true], ids=self.true,
                                                            metric=self.metric,
                                                            name=f"{what}pairwise identification", bootstrap=boot)
        if zero_shot and self.level == "class":
            out.update({f"zero-shot {m}-way {k}": v.renamed(f"zero-shot {m}-way {k}") for k, v in top.items()})
        return out


def _embedding_space(extra: dict[str, Any], cfg: ModelConfig, clip: Any, clip_weights: Any,
                     checkpoint: str | os.PathLike) -> tuple[str, Any]:
    space = extra.get("embedding_space")
    if space in ("metric", "pattern", "stimulus") or (space is None and clip is None and clip_weights is None):
        return space or "metric", None
    embedder = recorded_clip(extra.get("clip") if space == "clip" else None, clip, clip_weights)
    if int(embedder.embed_dim) != cfg.embed_dim:
        if space is None:
            return "metric", None
        raise ValueError(f"checkpoint {checkpoint} embeds into {cfg.embed_dim} dimensions but the CLIP model has "
                         f"{embedder.embed_dim}; pass the CLIP weights it was trained with (--clip-weights)")
    return "clip", embedder


def _clip_view(ds: EpochDataset, embedder: Any, target_kind: str, level: str, idx: np.ndarray, train: np.ndarray) -> _View:
    labels = np.asarray(ds.labels)
    targets, rows = target_table(ds, embedder, target_kind)
    ridge_targets = targets[rows[train]]
    if level == "image":
        uniq, true = np.unique(rows[idx], return_inverse=True)
        names = [str(ds.image_table_ids[r]) for r in uniq]
        return _View(targets[uniq], true, ridge_targets, names=names, ids=uniq, rows=uniq, level="image",
                     metric_space=False)
    gallery = class_gallery(ds, embedder, target_kind)
    classes, true = np.unique(labels[idx], return_inverse=True)
    return _View(gallery[classes], true, ridge_targets, names=[str(ds.class_names[c]) for c in classes], ids=classes,
                 rows=_class_image_rows(ds, classes), level="class", metric_space=False)


def _metric_view(ds: EpochDataset, run: _EncoderRun, idx: np.ndarray, train: np.ndarray) -> _View:

    labels = np.asarray(ds.labels)
    centroids, present = class_centroids(run.embed(train), labels[train], len(ds.class_names))
    classes = np.flatnonzero(present)
    if not np.isin(labels[idx], classes).all():
        raise ValueError("the evaluated part holds classes absent from the training part; a centroid classifier "
                         "cannot score them (use a split with the same classes, or a CLIP-space model for zero-shot)")
    true = np.searchsorted(classes, labels[idx])
    onehot = np.eye(len(ds.class_names), dtype=np.float32)[labels[train]]
    return _View(centroids[classes], true, onehot, names=[str(ds.class_names[c]) for c in classes], ids=classes,
                 rows=_class_image_rows(ds, classes), level="class", metric_space=True)


def _image_level(ds: EpochDataset, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if ds.images is None or ds.image_table_ids is None:
        raise ValueError(f"dataset {ds.path} has no stimulus images; a pattern decoder or dual "
                         "encoder is scored against them")
    rows = ds.image_rows()
    uniq, true = np.unique(rows[idx], return_inverse=True)
    return uniq, true, [str(ds.image_table_ids[r]) for r in uniq]


def _pattern_view(ds: EpochDataset, grid: int, idx: np.ndarray, train: np.ndarray) -> _View:

    uniq, true, names = _image_level(ds, idx)
    table = pattern_targets(np.asarray(ds.images), grid)
    view = _View(table[uniq], true, table[ds.image_rows()[train]], names=names, ids=uniq, rows=uniq, level="image",
                 metric_space=False)
    view.metric = "correlation"
    return view


def _stimulus_encoder(extra: dict[str, Any], checkpoint: str | os.PathLike) -> Any:
    from bci.models.stimulus import load_stimulus_encoder

    rel = extra.get("stimulus_encoder")
    if not isinstance(rel, str):
        raise CheckpointError(f"checkpoint {checkpoint} is a dual-encoder model but names no stimulus encoder")
    path = (Path(checkpoint) / rel).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {checkpoint} needs its stimulus encoder at {path}, which does not "
                                "exist; keep the folder written by 'bci train fmri --objective dual' together")
    stimulus = load_stimulus_encoder(path)
    expected = extra.get("stimulus_fingerprint")
    if expected and stimulus.fingerprint() != expected:
        raise CheckpointError(f"the stimulus encoder at {path} (fingerprint {stimulus.fingerprint()}) is not the one "
                              f"checkpoint {checkpoint} was trained with ({expected}); keep the folder written by "
                              "'bci train fmri --objective dual' together")
    return stimulus


def _stimulus_view(ds: EpochDataset, stimulus: Any, idx: np.ndarray, train: np.ndarray) -> _View:
    uniq, true, names = _image_level(ds, idx)
    table = stimulus.embed_images(np.asarray(ds.images))
    return _View(table[uniq], true, table[ds.image_rows()[train]], names=names, ids=uniq, rows=uniq, level="image",
                 metric_space=False)


def _pattern_reconstruction(ds: EpochDataset, idx: np.ndarray, view: _View, prob: np.ndarray, ridge: np.ndarray | None,
                            out: Path | None) -> dict[str, Any]:
    """Pixel accuracy (binary stimuli), PixCorr and SSIM of the decoded patterns, model and ridge, + grid PNG."""
    stim = np.asarray(ds.images)[ds.image_rows()[idx]]
    truth = view.candidates[view.true]
    grid = int(round(np.sqrt(truth.shape[1])))
    size = stim.shape[1]
    binary = bool(np.isin(np.unique(truth), (0.0, 1.0)).all())
    result: dict[str, Any] = {"grid": grid, "binary_stimuli": binary}
    images: dict[str, np.ndarray] = {}
    for who, p in (("model", prob), ("ridge", ridge)):
        if p is None:
            continue
        p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
        images[who] = _grid_images(p, grid, size)
        scores = {"PixCorr": pixcorr(images[who], stim), "SSIM": ssim_metric(images[who], stim)}
        if binary:
            acc = float(((p > 0.5) == (truth > 0.5)).mean())
            scores["pixel accuracy"] = Score(acc, 0.5, int(truth.size), "pixel accuracy")
        result[who] = _scores_dict(scores)
    if out is not None:
        from offline.evaluation import plots as eval_plots

        result["plots"] = eval_plots.gan_plots(out, stim, images["model"], images.get("ridge"), label="decoded",
                                                file="reconstruction_grid.png")
    return result


def _grid_images(p: np.ndarray, grid: int, size: int) -> np.ndarray:
    """``(n, grid²)`` values in [0, 1] → ``(n, size, size, 3)`` uint8 (nearest-neighbour blocks)."""
    cells = (p.reshape(len(p), grid, grid) * 255).round().astype(np.uint8)
    rep = -(-size // grid)
    big = np.kron(cells, np.ones((1, rep, rep), np.uint8))[:, :size, :size]
    return np.repeat(big[..., None], 3, axis=3)


def _class_image_rows(ds: EpochDataset, classes: np.ndarray) -> np.ndarray | None:
    """One image-table row per class (the first image of the class), or None without images."""
    if ds.images is None or ds.image_table_ids is None:
        return None
    rows = ds.image_rows()
    labels = np.asarray(ds.labels)
    out = []
    for c in classes:
        members = rows[labels == c]
        out.append(int(members.min()) if len(members) else -1)
    return np.asarray(out, dtype=np.int64)


def _evaluate_gan(checkpoint: str | os.PathLike, ds: EpochDataset, split: str | None, part: str, clip: Any, clip_weights: Any,
                  out: Path | None, baseline: bool, plots: bool, device: str, progress: bool = False) -> dict[str, Any]:
    from bci.generation import PixelImageStep, load_generator, read_gan_checkpoint

    meta = read_gan_checkpoint(checkpoint).metadata
    enc = meta.get("encoder") or {}
    enc_path = enc.get("path")
    if not enc_path or not Path(enc_path).is_dir():
        raise FileNotFoundError(f"GAN checkpoint {checkpoint} names encoder {enc_path!r}, which does not exist; "
                                "keep the pixel-level checkpoint where it was trained")
    if enc.get("fingerprint") and encoder_fingerprint(enc_path) != enc.get("fingerprint"):
        raise ValueError(f"encoder {enc_path} changed since GAN {checkpoint} was trained (fingerprint mismatch); "
                         "retrain the GAN")
    info = _resolve_split(ds, split, meta.get("split") or {}, checkpoint)
    idx, train = info.parts[part], info.parts["train"]
    if len(idx) == 0:
        raise ValueError(f"part {part!r} of split {info.name!r} is empty; choose another --part")
    if ds.images is None:
        raise ValueError(f"dataset {ds.path} has no stimulus images to compare with")
    run = _EncoderRun(enc_path, ds, device, progress)
    step = PixelImageStep(load_generator(checkpoint), device=device)
    generated = np.concatenate([step(run.embed(idx[i : i + 256])) for i in range(0, len(idx), 256)])
    rows = ds.image_rows()
    stim = np.asarray(ds.images)[rows[idx]]
    size = stim.shape[1]
    gen_full = _resize_uint8(generated, size)
    report = _base_report(checkpoint, "saliency-gan", ds, info, part)
    report.update({"model": {"generator_image_size": int(generated.shape[1]), "encoder": enc}, "n": int(len(idx))})
    boot = resampling_units(ds, idx)
    report["intervals"] = _interval_record(boot)
    scores = {"PixCorr": pixcorr(gen_full, stim), "SSIM": ssim_metric(gen_full, stim)}
    embedder = resolve_clip(clip, clip_weights) if (clip is not None or clip_weights is not None) else None
    if embedder is not None:
        g_emb, r_emb = embedder.encode_images(gen_full), embedder.encode_images(stim)
        scores["CLIP 2-way"] = clip_two_way(g_emb, r_emb, bootstrap=boot)
        scores.update(_generated_classification(embedder, ds, g_emb, np.asarray(ds.labels)[idx], boot))
    report["scores"] = {"model": _scores_dict(scores)}
    ridge_images = None
    if baseline:
        ridge_images = _ridge_reconstruction(run, ds, train, idx, rows, generated.shape[1], size)
        r_scores = {"PixCorr": pixcorr(ridge_images, stim), "SSIM": ssim_metric(ridge_images, stim)}
        if embedder is not None:
            r_emb_ridge = embedder.encode_images(ridge_images)
            r_scores["CLIP 2-way"] = clip_two_way(r_emb_ridge, embedder.encode_images(stim), bootstrap=boot)
            r_scores.update(_generated_classification(embedder, ds, r_emb_ridge, np.asarray(ds.labels)[idx], boot))
        report["scores"]["ridge"] = _scores_dict(r_scores)
        report["ssim_model_minus_ridge"] = paired_difference(ssim_per_image(gen_full, stim),
                                                             ssim_per_image(ridge_images, stim),
                                                             boot.groups)
    report["chance"] = {k: v["chance"] for k, v in report["scores"]["model"].items()}
    if plots and out is not None:
        from offline.evaluation import plots as eval_plots

        report["plots"] = eval_plots.gan_plots(out, stim, gen_full, ridge_images)
    return report


def _generated_classification(embedder: Any, ds: EpochDataset, emb: np.ndarray, labels: np.ndarray,
                              boot: Bootstrap | None = None) -> dict[str, Score]:
    """N-way classification of generated images by CLIP (image embedding vs class template texts)."""
    gallery = class_gallery(ds, embedder, "template")
    classes = np.unique(labels)
    if len(classes) < 2:
        return {}
    column = np.searchsorted(classes, labels)
    key = f"generated {len(classes)}-way top-1"
    return {key: topk_retrieval(emb, gallery[classes], column, k=1, bootstrap=boot)["top-1"].renamed(key)}


def _resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                        antialias=size < images.shape[1])
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _ridge_reconstruction(run: _EncoderRun, ds: EpochDataset, train: np.ndarray, idx: np.ndarray, rows: np.ndarray,
                          gen_size: int, size: int) -> np.ndarray:
    """Ridge from the (scaled, downsampled) windows to the stimulus pixels at ≤ 32 px, upsampled to ``size``."""

    small = min(gen_size, 32)
    imgs = stimulus_tensor(np.asarray(ds.images), small).numpy()  # (n_images, 3, s, s) in [-1, 1]
    y = imgs[rows[train]].reshape(len(train), -1)
    pred = _ridge_fit_predict(run, ds, train, idx, y).reshape(len(idx), 3, small, small)
    u8 = ((np.clip(pred, -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(0, 2, 3, 1)
    return _resize_uint8(np.ascontiguousarray(u8), size)


# ============================================================================ report text
def _cell(score: dict[str, Any] | None) -> str:
    """``0.531 [0.46, 0.60]`` (or ``0.531`` without an interval, ``-`` when missing), 20 wide."""
    if not score or score.get("value") is None:
        return f"{'-':>20}"
    return f"{format_interval(score['value'], score.get('ci95_low'), score.get('ci95_high')):>20}"


def format_report(report: dict[str, Any]) -> str:
    """Plain-text table: one line per metric with model, ridge, oracle (each with its 95 % interval) and chance."""
    scores = report.get("scores", {})
    model = scores.get("model", {})
    cols = [c for c in ("model", "ridge", "oracle") if c in scores]
    lines = [report.get("protocol", {}).get("description", ""),
             ("SYNTHETIC-WORLD RESULTS" if report.get("synthetic_world") else "") ,
             f"{'metric':<28}" + "".join(f"{c:>20}" for c in cols) + f"{'chance':>10}{'n':>7}"]
    for key, s in model.items():
        chance = s.get("chance")
        lines.append(f"{key:<28}" + "".join(_cell(scores[c].get(key)) for c in cols)
                     + (f"{chance:>10.3f}" if chance is not None else f"{'-':>10}") + f"{s.get('n', 0):>7}")
    for key in sorted(set().union(*(scores[c].keys() for c in cols)) - set(model)):
        lines.append(f"{key:<28}" + "".join(_cell(scores[c].get(key)) for c in cols))
    iv = report.get("intervals")
    if iv and any("ci95_low" in v for c in cols for v in scores[c].values()):
        lines.append(f"[low, high]: {iv['level']:.0%} bootstrap interval over {iv['n_units']} {iv['unit']}s "
                     f"({iv['n_boot']} resamples, seed {iv['seed']}); chance is exact")
    rec = report.get("reconstruction")
    if rec and rec.get("model"):
        lines.append(f"decoded {rec['grid']}x{rec['grid']} patterns" + f"{'model':>10}{'ridge':>10}{'chance':>10}")
        for key, s in rec["model"].items():
            r = (rec.get("ridge") or {}).get(key)
            lines.append(f"{key:<28}{s['value']:>10.3f}" + (f"{r['value']:>10.3f}" if r else f"{'-':>10}")
                         + (f"{s['chance']:>10.3f}" if s.get("chance") is not None else f"{'-':>10}"))
    paired = report.get("ssim_model_minus_ridge")
    if paired:
        unit = (iv or {}).get("unit", "block")
        lines.append(f"SSIM model - ridge, paired: {paired['diff']:+.4f} (95% CI {paired['ci95_low']:+.4f} to "
                     f"{paired['ci95_high']:+.4f}, bootstrap over {paired['n_groups']} {unit}s; model better on "
                     f"{100 * paired['fraction_a_better']:.0f}% of {paired['n']} images)")
    plots = list(report.get("plots") or []) + list((rec or {}).get("plots") or [])
    if plots:
        lines.append("plots: " + ", ".join(Path(p).name for p in plots))
    return "\n".join(line for line in lines if line)


# ============================================================================ export
def export_embeddings(checkpoint: str | os.PathLike, dataset: EpochDataset, out: str | os.PathLike, *,
                      split: str | None = None, part: str | None = None, device: str = "cpu",
                      progress: bool = False) -> Path:
    """Write the embeddings of a checkpoint over a dataset as ``OUT.npz`` + ``OUT.json``.

    Parameters
    ----------
    checkpoint : path
        Encoder checkpoint.
    dataset : path or EpochDataset
    out : path
        Output stem (``.npz`` added when missing).
    split, part : str, optional
        Only this part of this split (default: every epoch).
    device : str
    progress : bool
        Show a progress bar (tqdm, stderr) over the batches embedded.

    Returns
    -------
    Path
        The ``.npz`` file: ``embeddings (n, D) float32``, ``index``, ``label``, ``subject``,
        ``session``, ``block`` (int64), ``image_id`` (unicode); no pickled objects.
    """
    if checkpoint_kind(checkpoint) != "encoder":
        raise ValueError(f"{checkpoint} is not an encoder checkpoint; embeddings come from encoders")
    ds = open_dataset(dataset)
    run = _EncoderRun(checkpoint, ds, device, progress)
    if part is not None or split is not None:
        info = prepare_split(ds, split or (run.config.extra.get("split") or {}).get("name"))
        p = part or "test"
        if p not in info.parts:
            raise ValueError(f"part={p!r} is not in split {info.name!r} (parts {sorted(info.parts)})")
        idx = info.parts[p]
        split_meta: dict[str, Any] | None = {**info.record(), "part": p}
    else:
        idx, split_meta = np.arange(int(ds.data.shape[0]), dtype=np.int64), None
    emb = run.embed(idx)
    path = Path(out)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    image_ids = np.asarray([str(ds.image_ids[i]) for i in idx], dtype=np.str_)
    np.savez(path, embeddings=emb, index=idx, label=np.asarray(ds.labels)[idx], subject=np.asarray(ds.subject)[idx],
             session=np.asarray(ds.session)[idx], block=np.asarray(ds.block)[idx], image_id=image_ids)
    meta = {"format": "bci-runtime.embeddings", "format_version": 1, "checkpoint": str(Path(checkpoint).resolve()),
            "model": run.config.name, "embed_dim": run.config.embed_dim,
            "embedding_space": run.config.extra.get("embedding_space"), "dataset": str(ds.path),
            "dataset_fingerprint": str(ds.fingerprint()), "class_names": list(ds.class_names), "split": split_meta,
            "n": int(len(idx)), "arrays": ["embeddings", "index", "label", "subject", "session", "block", "image_id"],
            "load": "numpy.load(path, allow_pickle=False)"}
    path.with_suffix(".json").write_text(json.dumps(_jsonable(meta), indent=2) + "\n", encoding="utf-8")
    return path
