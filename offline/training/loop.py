"""A small, shared training loop for the offline extractors.

Every trainer (``offline/training/tasks/sample.py``, ``train_pixel.py``, ``train_gan.py``,
``train_fmri.py``) describes its problem as a :class:`TrainTask` (modules, optimizers,
batches, loss stages, validation, how to save the best model) and hands it to
:func:`run_training`, which provides what they all need:

* **determinism on CPU**: ``torch.use_deterministic_algorithms(True)`` during training,
  every random draw derived from one seed: the batch order of epoch ``e`` from
  ``numpy.random.default_rng([seed, e])``, torch's global RNG (dropout) and the task's
  ``torch.Generator`` re-seeded from ``(seed, e)`` at the start of each epoch. Two runs with
  the same seed and settings give bit-identical weights;
* **validation each epoch** and **early stopping** on the task's metric (larger is better);
* **checkpoints**: the best model in ``OUT`` (the task's format, e.g. ``config.json`` +
  ``model.safetensors``) and the state after the last finished epoch in ``OUT/last/``
  (module weights and optimizer state as safetensors + JSON, ``state.json`` written last).
  Nothing is pickled;
* **resume** (``resume=True``): continue from ``OUT/last`` at the next epoch; because the
  random streams are derived per epoch, a resumed run equals an uninterrupted one;
* **non-finite losses or gradients** stop training with :class:`NonFiniteLossError`,
  naming the epoch, the step and the batch's dataset indices; no update is applied and
  the checkpoints of the last good epoch are kept.

Data helpers: :func:`prepare_split` (refuses splits that leak; from :mod:`offline.data.splits`), :func:`fit_scaler`
(per-channel statistics on training windows only), :class:`WindowSource` (standardised
windows, cached in memory when they fit), :func:`shuffled_batches` and
:func:`class_balanced_batches`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import numbers
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bci.preprocessing import ChannelScaler, flat_channels
from bci.preprocessing.mvnn import NoiseWhitener
from bci.safe_io import atomic_write
from streams._checks import check_bool, check_float, check_int, check_type
from offline.data.epochs import EpochDataset
from streams._store import jsonable as _jsonable
from offline.data.splits import SplitInfo, prepare_split

__all__ = [
    "LAST_DIR",
    "augment_windows",
    "NonFiniteLossError",
    "SplitInfo",
    "Stage",
    "TrainResult",
    "TrainSettings",
    "TrainTask",
    "WindowSource",
    "class_balanced_batches",
    "derive_seed",
    "deterministic_mode",
    "fit_scaler",
    "load_config_file",
    "make_adamw",
    "prepare_split",
    "random_search",
    "resolve_device",
    "sample_params",
    "run_training",
    "shuffled_batches",
]

LAST_DIR = "last"
#: Folders of a checkpoint that hold further checkpoints (fMRI: stimulus CNN, one encoder per subject).
CHECKPOINT_FOLDERS = ("stimulus", "subjects")
STATE_FILE = "state.json"
HISTORY_FILE = "history.json"
STATE_FORMAT = "bci-runtime.train-state"
STATE_VERSION = 1
_CACHE_BYTES = 2 * 1024**3  # windows of a split are kept in memory up to this size


# ============================================================================ settings
@dataclass
class TrainSettings:
    """Optimisation settings shared by every trainer.

    Parameters
    ----------
    epochs : int
        Maximum number of epochs (passes over the training part).
    batch_size : int
        Windows per batch (for class-balanced batches: P classes x K windows, see the task).
    lr : float
        AdamW learning rate.
    weight_decay : float
        AdamW decoupled weight decay.
    patience : int
        Stop after this many epochs without an improvement of the validation metric
        larger than ``min_delta``; 0 disables early stopping.
    min_delta : float
        Smallest change of the validation metric that counts as an improvement.
    grad_clip : float or None
        Clip the global gradient norm to this value (None: no clipping).
    seed : int
        Seed of every random draw (initialisation, batch order, dropout, augmentation).
    device : str
        ``"cpu"`` (deterministic), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    deterministic : bool
        Use ``torch.use_deterministic_algorithms(True)`` during training.
    progress : bool
        Show tqdm progress bars (on stderr).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 8
    min_delta: float = 0.0
    grad_clip: float | None = 5.0
    seed: int = 0
    device: str = "cpu"
    deterministic: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for key, low in (("epochs", 1), ("batch_size", 2), ("patience", 0), ("seed", 0)):
            check_int(key, getattr(self, key), low=low)
        check_float("lr", self.lr, positive=True)
        check_float("weight_decay", self.weight_decay, low=0)
        check_float("min_delta", self.min_delta, low=0)
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip, positive=True)
        check_type("device", self.device, str, "a string such as 'cpu' or 'cuda'")
        for key in ("deterministic", "progress"):
            check_bool(key, getattr(self, key))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        """Names of the settings (keys accepted from config files)."""
        return {f.name for f in dataclasses.fields(cls)}


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read hyper-parameters from a ``.toml`` or ``.json`` file (a flat table of keys).

    Parameters
    ----------
    path : path
        File ending in ``.toml`` or ``.json``.

    Returns
    -------
    dict
        The keys as written; the caller checks them against what it accepts.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {p} is not valid TOML: {exc}") from None
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {p} is not valid JSON: {exc}") from None
    else:
        raise ValueError(f"config file {p} must end in .toml or .json, got {p.suffix!r}")
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a table of keys, got {type(data).__name__}")
    return data


# ============================================================================ seeds
def derive_seed(seed: int, *tags: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and tags (stable across processes and platforms)."""
    words = [int(seed)] + [t if isinstance(t, int) else int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
                           for t in tags]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True, device: torch.device | None = None) -> Iterator[None]:
    """Turn on ``torch.use_deterministic_algorithms`` for the block, then restore the previous mode.

    On CPU the mode is strict (a non-deterministic op raises). On CUDA it only warns, and
    ``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA starts for cuBLAS to be
    deterministic (set it in the environment: ``CUBLAS_WORKSPACE_CONFIG=:4096:8``).
    """
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    on_cuda = device is not None and device.type == "cuda"
    torch.use_deterministic_algorithms(True, warn_only=on_cuda)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


# ============================================================================ data
def fit_scaler(dataset: EpochDataset, indices: np.ndarray, *, channels: np.ndarray | None = None,
               chunk: int = 256) -> ChannelScaler:
    """Per-channel mean and std over the given (training) epochs, read in chunks.

    Parameters
    ----------
    dataset : EpochDataset
        Source of the windows (``get_batch``).
    indices : numpy.ndarray
        Epoch indices to fit on: the training part only (fitting on validation or test
        windows leaks their statistics).
    channels : numpy.ndarray, optional
        Channel indices to keep (voxel selection).
    chunk : int
        Epochs read per step.

    Returns
    -------
    ChannelScaler
        As :meth:`bci.preprocessing.ChannelScaler.fit` (two passes, float64; flat channels get std 1).
    """
    idx = np.sort(np.asarray(indices, dtype=np.int64))
    if idx.size == 0:
        raise ValueError("fit_scaler: no training epochs to fit the scaler on")
    total, count = None, 0
    for start in range(0, len(idx), chunk):
        x = _select(dataset.get_batch(idx[start : start + chunk]), channels).astype(np.float64)
        if not np.isfinite(x).all():
            bad = idx[start : start + chunk][~np.isfinite(x).all(axis=(1, 2))][:5].tolist()
            raise ValueError(f"dataset epochs {bad} hold NaN or infinite values; clean or drop them before training")
        total = x.sum(axis=(0, 2)) if total is None else total + x.sum(axis=(0, 2))
        count += x.shape[0] * x.shape[2]
    mean = total / count
    sq = np.zeros_like(mean)
    for start in range(0, len(idx), chunk):
        x = _select(dataset.get_batch(idx[start : start + chunk]), channels).astype(np.float64)
        sq += np.einsum("nct,nct->c", x - mean[None, :, None], x - mean[None, :, None])
    std = np.sqrt(sq / count)
    std[flat_channels(std)] = 1.0
    return ChannelScaler(mean=mean.astype(np.float32), std=std.astype(np.float32))


def _select(x: np.ndarray, channels: np.ndarray | None) -> np.ndarray:
    x = np.asarray(x)
    return x if channels is None else x[:, channels, :]


class WindowSource:
    """Standardised windows of an epoch dataset, cached in memory when they fit.

    Parameters
    ----------
    dataset : EpochDataset
        Source of the windows.
    scaler : ChannelScaler
        Fitted on the training part; applied as ``(x - mean) / std``.
    indices : numpy.ndarray
        Every epoch index that will be asked for (train + val (+ test)); cached at once
        when their windows take at most ``cache_bytes``.
    channels : numpy.ndarray, optional
        Channel indices to keep.
    cache_bytes : int
        Memory limit of the cache.
    """

    def __init__(self, dataset: EpochDataset, scaler: ChannelScaler, indices: np.ndarray, *,
                 channels: np.ndarray | None = None, cache_bytes: int = _CACHE_BYTES) -> None:
        self.dataset = dataset
        self.channels = None if channels is None else np.asarray(channels, dtype=np.int64)
        self.mean = scaler.mean.astype(np.float32)[None, :, None]
        self.std = scaler.std.astype(np.float32)[None, :, None]
        idx = np.unique(np.asarray(indices, dtype=np.int64))
        shape = tuple(dataset.data.shape)
        n_chans = shape[1] if self.channels is None else len(self.channels)
        self._cache: np.ndarray | None = None
        if idx.size * n_chans * shape[2] * 4 <= cache_bytes:
            self._cache = self._read(idx)
            self._lookup = np.full(shape[0], -1, dtype=np.int64)
            self._lookup[idx] = np.arange(len(idx))

    def _read(self, idx: np.ndarray) -> np.ndarray:
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx),) + self._window_shape(), dtype=np.float32)
        for start in range(0, len(idx), 512):
            sel = order[start : start + 512]
            x = _select(self.dataset.get_batch(idx[sel]), self.channels).astype(np.float32)
            out[sel] = (x - self.mean) / self.std
        return out

    def _window_shape(self) -> tuple[int, int]:
        shape = tuple(self.dataset.data.shape)
        return (shape[1] if self.channels is None else len(self.channels), shape[2])

    def get(self, indices: np.ndarray) -> np.ndarray:
        """``(len(indices), n_chans, n_times)`` float32 standardised windows, in the given order."""
        idx = np.asarray(indices, dtype=np.int64)
        if self._cache is not None:
            pos = self._lookup[idx]
            if (pos >= 0).all():
                return self._cache[pos]
        return self._read(idx)

    def tensor(self, indices: np.ndarray, device: torch.device) -> torch.Tensor:
        """:meth:`get` as a float32 tensor on ``device``."""
        return torch.from_numpy(np.ascontiguousarray(self.get(indices))).to(device)


def fitted_source(dataset: EpochDataset, split: SplitInfo, *, channels: np.ndarray | None = None
                  ) -> tuple[ChannelScaler, WindowSource]:
    """The scaler fitted on the split's training part and the standardised train + val windows.

    Parameters
    ----------
    dataset : EpochDataset
    split : SplitInfo
        Checked split (:func:`prepare_split`).
    channels : numpy.ndarray, optional
        Channel (voxel) indices to keep.
    """
    scaler = fit_scaler(dataset, split.parts["train"], channels=channels)
    source = WindowSource(dataset, scaler, np.concatenate([split.parts["train"], split.parts["val"]]), channels=channels)
    return scaler, source


def fit_whitener(dataset: EpochDataset, source: WindowSource, train: np.ndarray) -> NoiseWhitener:
    """MVNN whitening (:class:`bci.preprocessing.mvnn.NoiseWhitener`) fitted on the training part only.

    Parameters
    ----------
    dataset : EpochDataset
        Its ``image_ids`` name the conditions: epochs of one image are its repetitions.
    source : WindowSource
        The standardised windows the model sees (the whitening follows the scaler).
    train : numpy.ndarray
        The training epoch indices (fitting on validation or test epochs leaks).
    """
    idx = np.sort(np.asarray(train, dtype=np.int64))
    if idx.size == 0:
        raise ValueError("fit_whitener: no training epochs to fit the MVNN whitening on")
    ids = np.asarray(dataset.image_ids, dtype=object)[idx]
    whitener = NoiseWhitener.fit(source.get(idx), ids.astype(str))
    whitener.record["split_part"] = "train"
    return whitener


def shuffled_batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator,
                     *, min_size: int = 2) -> list[np.ndarray]:
    """Random permutation of ``indices`` cut into batches; a last batch below ``min_size`` is dropped."""
    perm = np.asarray(indices, dtype=np.int64)[rng.permutation(len(indices))]
    batches = [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    return [b for b in batches if len(b) >= min_size]


def class_balanced_batches(indices: np.ndarray, labels: np.ndarray, n_classes: int, per_class: int,
                           rng: np.random.Generator) -> list[np.ndarray]:
    """P x K batches: ``n_classes`` classes with ``per_class`` windows each, so every anchor has positives.

    An epoch has about ``len(indices) / (P K)`` batches. The P classes of a batch are
    drawn uniformly without replacement; each class's windows are taken without
    replacement from a shuffled pool that is reshuffled when used up.

    Parameters
    ----------
    indices : numpy.ndarray
        Training epoch indices.
    labels : numpy.ndarray
        Class of each of ``indices``.
    n_classes, per_class : int
        P and K.
    rng : numpy.random.Generator
        Seeded generator.
    """
    idx = np.asarray(indices, dtype=np.int64)
    lab = np.asarray(labels)
    classes = np.unique(lab)
    if len(classes) < 2:
        raise ValueError(f"class-balanced batches need at least 2 classes in the training part, got {len(classes)}")
    p = min(int(n_classes), len(classes))
    k = max(2, int(per_class))
    pools = {c: list(idx[lab == c][rng.permutation(int((lab == c).sum()))]) for c in classes}
    n_batches = max(1, int(math.ceil(len(idx) / (p * k))))
    batches = []
    for _ in range(n_batches):
        chosen = rng.choice(classes, size=p, replace=False)
        batch: list[int] = []
        for c in chosen:
            members = idx[lab == c]
            for _j in range(k):
                if not pools[c]:
                    pools[c] = list(members[rng.permutation(len(members))])
                batch.append(int(pools[c].pop()))
        batches.append(np.asarray(batch, dtype=np.int64))
    return batches


def augment_windows(x: torch.Tensor, generator: torch.Generator, *, max_shift: int = 0, noise: float = 0.0,
                    scale: float = 0.0) -> torch.Tensor:
    """Random, label-preserving changes of standardised windows ``(batch, channels, times)`` (training only).

    Parameters
    ----------
    x : torch.Tensor
        Standardised windows.
    generator : torch.Generator
        The task's seeded generator (CPU).
    max_shift : int
        Shift each window in time by an integer in ``[-max_shift, max_shift]`` samples
        (edge samples repeated), like a small latency jitter.
    noise : float
        Add Gaussian noise of this standard deviation (standardised units).
    scale : float
        Multiply each window by ``1 + U(-scale, scale)``.

    Returns
    -------
    torch.Tensor
        ``x`` itself when every option is 0.
    """
    b, _, t = x.shape
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator)
        index = (torch.arange(t)[None, :] - shifts[:, None]).clamp(0, t - 1).to(x.device)
        x = torch.gather(x, 2, index[:, None, :].expand(-1, x.shape[1], -1))
    if scale > 0:
        x = x * (1.0 + scale * (2 * torch.rand(b, 1, 1, generator=generator) - 1)).to(x.device)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator).to(x.device)
    return x


# ============================================================================ tasks
@dataclass
class Stage:
    """One optimisation stage of a step: a loss, minimised by one optimizer.

    Attributes
    ----------
    name : str
        Shown in progress bars and error messages (``"loss"``, ``"d"``, ``"g"``).
    loss : torch.Tensor
        Scalar to minimise.
    optimizer : str
        Key in :meth:`TrainTask.optimizers`.
    logs : dict
        Extra numbers to average over the epoch (e.g. the SSIM term).
    """

    name: str
    loss: torch.Tensor
    optimizer: str
    logs: dict[str, float] = field(default_factory=dict)


class TrainTask:
    """What :func:`run_training` needs from a trainer. Subclass and fill in.

    Attributes
    ----------
    kind : str
        Trainer name (``"sample"``, ``"pixel"``, ``"saliency-gan"``, ``"fmri"``).
    metric : str
        Key of :meth:`validate`'s dict used for early stopping (larger is better).
    """

    kind: str = ""
    metric: str = ""

    def modules(self) -> dict[str, nn.Module]:
        """Trainable modules by name (saved in ``last/`` and restored on resume)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name (their state is saved in ``last/``)."""
        raise NotImplementedError

    def epoch_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Dataset indices of each batch of one epoch, drawn from ``rng``."""
        raise NotImplementedError

    def stages(self, batch: np.ndarray, generator: torch.Generator) -> Iterator[Stage]:
        """Yield the loss stages of one step; the loop steps each stage's optimizer before resuming."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics (``self.metric`` among them); modules are in eval mode."""
        raise NotImplementedError

    def save_best(self, directory: Path, record: dict[str, Any]) -> None:
        """Write the deliverable checkpoint into ``directory`` (overwriting), with ``record`` as metadata."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Task options and data description for the checkpoint (JSON)."""
        return {}

    def train_mode(self) -> None:
        """Put the modules in training mode before an epoch (override to keep frozen parts in eval mode)."""
        for module in self.modules().values():
            module.train()

    def after_epoch(self, epoch: int, directory: Path) -> None:
        """Hook after validation (e.g. sample image grids)."""

    def chance(self) -> float | None:
        """Chance level of the validation metric, when it has one."""
        return None


class NonFiniteLossError(ValueError):
    """A loss or gradient became NaN or infinite; training stopped before applying it."""


@dataclass
class TrainResult:
    """Outcome of :func:`run_training`.

    Attributes
    ----------
    checkpoint : Path
        Directory of the best model.
    best_metric : float
        Best validation value of the task's metric.
    best_epoch : int
        Epoch (0-based) of the best model.
    epochs_run : int
        Epochs completed (including earlier runs when resumed).
    stopped : str
        ``"max_epochs"``, ``"early_stopping"``.
    history : list of dict
        Per epoch: losses, validation metrics, seconds.
    """

    checkpoint: Path
    best_metric: float
    best_epoch: int
    epochs_run: int
    stopped: str
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {**dataclasses.asdict(self), "checkpoint": str(self.checkpoint)}


# ============================================================================ loop
def run_training(task: TrainTask, settings: TrainSettings, out_dir: str | os.PathLike, *,
                 resume: bool = False, overwrite: bool = False, record: dict[str, Any] | None = None) -> TrainResult:
    """Train ``task`` with validation, early stopping, checkpoints and resume.

    Parameters
    ----------
    task : TrainTask
        The problem (modules already built and seeded, on ``settings.device``).
    settings : TrainSettings
        Epochs, batch size, patience, seed, ...
    out_dir : path
        Checkpoint directory: the best model (task format) and ``last/``.
    resume : bool
        Continue from ``out_dir/last``; the settings may raise ``epochs`` (and change
        ``lr``, applied to the restored optimizers) but the task and data must match.
    overwrite : bool
        Start afresh in an ``out_dir`` that already holds a checkpoint (deleting ``last/``).
    record : dict, optional
        Extra JSON stored in the checkpoint (split, dataset fingerprint, task settings).

    Returns
    -------
    TrainResult

    Raises
    ------
    NonFiniteLossError
        A loss or gradient became NaN/inf (the message names epoch, step and batch).
    FileExistsError
        ``out_dir`` holds a checkpoint and neither ``resume`` nor ``overwrite`` was given.
    """
    out = Path(out_dir)
    record = copy.deepcopy(record or {})
    state = _start_state(task, settings, out, resume=resume, overwrite=overwrite, record=record)
    device = _module_device(task)
    with deterministic_mode(settings.deterministic, device):
        _loop(task, settings, out, state, record)
    return TrainResult(out, state["best_metric"], state["best_epoch"], state["epoch"] + 1, state["stopped"],
                       state["history"])


def _module_device(task: TrainTask) -> torch.device:
    for module in task.modules().values():
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


def _start_state(task: TrainTask, settings: TrainSettings, out: Path, *, resume: bool, overwrite: bool,
                 record: dict[str, Any]) -> dict[str, Any]:
    last = out / LAST_DIR
    if resume:
        if not (last / STATE_FILE).is_file():
            raise FileNotFoundError(
                f"cannot resume: {last / STATE_FILE} does not exist (no finished epoch in {out}); run without --resume"
            )
        state = _load_last(task, last, settings, record)
        return state
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty (a previous run?); pass --resume to continue it, --overwrite to start again, "
                "or choose another --out"
            )
        _clear_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "format": STATE_FORMAT, "format_version": STATE_VERSION, "kind": task.kind, "epoch": -1, "step": 0,
        "best_metric": -math.inf, "best_epoch": -1, "bad_epochs": 0, "stopped": "running", "history": [],
        "seed": settings.seed, "data": _data_key(record), "task": _jsonable(task.describe()),
    }


def _clear_dir(out: Path) -> None:
    """Remove the files this trainer writes (never unrelated ones)."""
    for name in (LAST_DIR, "samples", "search", *CHECKPOINT_FOLDERS):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for child in out.iterdir():
        if child.is_file() and (child.suffix in (".safetensors", ".json", ".png")):
            child.unlink()


def _data_key(record: Mapping[str, Any]) -> dict[str, Any]:
    split = record.get("split", {}) if isinstance(record, Mapping) else {}
    return {"split_hash": split.get("hash"), "dataset_fingerprint": split.get("dataset_fingerprint")}


def _loop(task: TrainTask, settings: TrainSettings, out: Path, state: dict[str, Any], record: dict[str, Any]) -> None:
    if state["stopped"] == "early_stopping" and state["bad_epochs"] >= settings.patience > 0:
        return
    state["stopped"] = "running"
    for epoch in range(state["epoch"] + 1, settings.epochs):
        t0 = time.perf_counter()
        losses = _train_epoch(task, settings, out, state, epoch)
        metrics = _validate(task)
        entry = {"epoch": epoch, "step": state["step"], **losses, **{f"val_{k}": v for k, v in metrics.items()},
                 "seconds": round(time.perf_counter() - t0, 3)}
        state["history"].append(entry)
        value = metrics[task.metric]
        improved = value > state["best_metric"] + settings.min_delta or state["best_epoch"] < 0
        state["epoch"] = epoch
        if improved:
            state["best_metric"], state["best_epoch"], state["bad_epochs"] = float(value), epoch, 0
            task.save_best(out, _checkpoint_record(task, settings, state, record, metrics))
        else:
            state["bad_epochs"] += 1
        task.after_epoch(epoch, out)
        done = settings.patience > 0 and state["bad_epochs"] >= settings.patience
        state["stopped"] = "early_stopping" if done else ("max_epochs" if epoch == settings.epochs - 1 else "running")
        _save_last(task, settings, out / LAST_DIR, state)
        _progress_line(settings, task, entry, improved)
        if done:
            break
    if state["epoch"] >= settings.epochs - 1 and state["stopped"] == "running":
        state["stopped"] = "max_epochs"
    (out / HISTORY_FILE).write_text(json.dumps(_jsonable(state["history"]), indent=1) + "\n", encoding="utf-8")


def _train_epoch(task: TrainTask, settings: TrainSettings, out: Path, state: dict[str, Any],
                 epoch: int) -> dict[str, float]:
    rng = np.random.default_rng([settings.seed, epoch])
    torch.manual_seed(derive_seed(settings.seed, "torch", epoch))
    gen = torch.Generator().manual_seed(derive_seed(settings.seed, "task", epoch))
    batches = task.epoch_batches(rng)
    task.train_mode()
    optimizers = task.optimizers()
    sums: dict[str, float] = {}
    bar = _bar(settings, len(batches), f"epoch {epoch + 1}/{settings.epochs}")
    try:
        for i, batch in enumerate(batches):
            for stage in task.stages(batch, gen):
                _check_finite(stage.name, stage.loss.detach(), "loss", epoch, state, i, batch, out)
                opt = optimizers[stage.optimizer]
                opt.zero_grad(set_to_none=True)
                stage.loss.backward()
                norm = _grad_norm(opt, settings.grad_clip)
                _check_finite(stage.name, norm, "gradient norm", epoch, state, i, batch, out)
                opt.step()
                sums[stage.name] = sums.get(stage.name, 0.0) + float(stage.loss.detach())
                for k, v in stage.logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            state["step"] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v / (i + 1):.4g}" for k, v in list(sums.items())[:3]}, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    n = max(1, len(batches))
    return {f"train_{k}": v / n for k, v in sums.items()}


def _bar(settings: TrainSettings, total: int, desc: str) -> Any:
    if not settings.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True, disable=None)


def _grad_norm(opt: torch.optim.Optimizer, clip: float | None) -> torch.Tensor:
    params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
    if not params:
        return torch.zeros(())
    if clip is None:
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in params]))
    return torch.nn.utils.clip_grad_norm_(params, clip, error_if_nonfinite=False)


def _check_finite(name: str, value: torch.Tensor, what: str, epoch: int, state: dict[str, Any], i: int,
                  batch: np.ndarray, out: Path) -> None:
    if bool(torch.isfinite(value).all()):
        return
    shown = ", ".join(str(int(b)) for b in np.asarray(batch)[:12])
    more = f", ... ({len(batch)} in all)" if len(batch) > 12 else ""
    if state["best_epoch"] >= 0:
        kept = (f"the last good checkpoints are kept: {out} (best, epoch {state['best_epoch'] + 1}) and "
                f"{out / LAST_DIR} (epoch {state['epoch'] + 1}; continue with --resume and a lower --lr)")
    else:
        kept = "no checkpoint was written (it failed in the first epoch)"
    raise NonFiniteLossError(
        f"training stopped: the {what} of stage {name!r} is {float(value.reshape(-1)[0])} at epoch {epoch + 1}, "
        f"step {state['step'] + 1} (batch {i + 1} of the epoch), dataset epochs [{shown}{more}]; no update was "
        f"applied; {kept}. Lower the learning rate, enable --grad-clip, or check those epochs for bad values"
    )


def _validate(task: TrainTask) -> dict[str, float]:
    for module in task.modules().values():
        module.eval()
    with torch.no_grad():
        metrics = task.validate()
    if task.metric not in metrics:
        raise RuntimeError(f"task {task.kind!r} validation did not report its metric {task.metric!r}")
    return {k: float(v) for k, v in metrics.items()}


def _checkpoint_record(task: TrainTask, settings: TrainSettings, state: dict[str, Any],
                       record: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    return _jsonable({
        **record,
        "trained": True,
        "task": task.kind,
        "seed": settings.seed,
        "training": {**settings.to_dict(), **task.describe()},
        "metrics": {"epoch": state["epoch"] + 1, "best_epoch": state["best_epoch"] + 1, **{
            f"val_{k}": v for k, v in metrics.items()}, "val_chance": task.chance(), "metric": f"val_{task.metric}"},
        "history": state["history"],
    })


def _progress_line(settings: TrainSettings, task: TrainTask, entry: dict[str, Any], improved: bool) -> None:
    if not settings.progress:
        return
    parts = [f"{k}={v:.4g}" for k, v in entry.items() if k.startswith(("train_", "val_")) and isinstance(v, float)]
    print(f"epoch {entry['epoch'] + 1}: {' '.join(parts)}{'  *' if improved else ''}", file=sys.stderr)


# ============================================================================ last/ state
def _save_last(task: TrainTask, settings: TrainSettings, last: Path, state: dict[str, Any]) -> None:
    last.mkdir(parents=True, exist_ok=True)
    (last / STATE_FILE).unlink(missing_ok=True)  # written last: a crash mid-save leaves no stale state
    for name, module in task.modules().items():
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        atomic_write(last / f"{name}.safetensors", lambda p, t=tensors: save_file(t, str(p)))
    for name, opt in task.optimizers().items():
        tensors, meta = _optimizer_to_safe(opt)
        atomic_write(last / f"optim-{name}.safetensors", lambda p, t=tensors: save_file(t, str(p)))
        atomic_write(last / f"optim-{name}.json", lambda p, m=meta: p.write_text(json.dumps(m, indent=1), encoding="utf-8"))
    body = {**state, "settings": settings.to_dict()}
    text = json.dumps(_jsonable(body), indent=1) + "\n"
    atomic_write(last / STATE_FILE, lambda p: p.write_text(text, encoding="utf-8"))


def _load_last(task: TrainTask, last: Path, settings: TrainSettings, record: dict[str, Any]) -> dict[str, Any]:
    try:
        state = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot resume: {last / STATE_FILE} is not valid JSON ({exc})") from None
    if state.get("format") != STATE_FORMAT or state.get("format_version") != STATE_VERSION:
        raise ValueError(f"cannot resume: {last / STATE_FILE} is not a training state this version reads")
    if state.get("kind") != task.kind:
        raise ValueError(f"cannot resume: {last} holds a {state.get('kind')!r} run, not {task.kind!r}")
    if state.get("seed") != settings.seed:
        raise ValueError(f"cannot resume: the run used --seed {state.get('seed')}, now {settings.seed}; use the same seed")
    data = _data_key(record)
    if state.get("data") != data:
        raise ValueError(
            f"cannot resume: {last} was trained on dataset/split {state.get('data')}, now {data}; "
            "use the same dataset and split, or start a new run"
        )
    _check_same_task(state, task, last)
    for name, module in task.modules().items():
        try:
            module.load_state_dict(_read_tensors(last / f"{name}.safetensors"), strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"cannot resume: the saved {name!r} weights in {last} do not fit this model ({first}); "
                             "use the options of the first run, or start a new run") from None
    for name, opt in task.optimizers().items():
        _optimizer_from_safe(opt, last / f"optim-{name}.safetensors", last / f"optim-{name}.json")
        for group in opt.param_groups:
            group["lr"] = settings.lr
    state["best_metric"] = float(state["best_metric"]) if state["best_metric"] is not None else -math.inf
    return state


def _check_same_task(state: dict[str, Any], task: TrainTask, last: Path) -> None:
    """Refuse to resume with other task options (architecture, loss, objective, backbone ...)."""
    saved = state.get("task")
    if saved is None:  # a state written before options were recorded
        return
    now = _jsonable(task.describe())
    if saved == now:
        return
    flat_saved, flat_now = _flatten(saved), _flatten(now)
    changed = sorted(k for k in set(flat_saved) | set(flat_now) if flat_saved.get(k) != flat_now.get(k))
    shown = ", ".join(f"{k}: {flat_saved.get(k)!r} -> {flat_now.get(k)!r}" for k in changed[:5])
    raise ValueError(f"cannot resume: {last} was trained with other options ({shown}); resume with the options of "
                     "the first run, or start a new run with --overwrite or another --out")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot resume: {path} is not a readable safetensors file ({exc})") from None


def _optimizer_to_safe(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as tensors (safetensors) + JSON (param groups, scalar entries)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    tuples = sorted({k for g in sd["param_groups"] for k, v in g.items() if isinstance(v, tuple)})
    return tensors, {"param_groups": groups, "scalars": scalars, "tuple_keys": tuples}


def _optimizer_from_safe(opt: torch.optim.Optimizer, tensor_path: Path, meta_path: Path) -> None:
    tensors = _read_tensors(tensor_path)
    if not meta_path.is_file():
        raise FileNotFoundError(f"cannot resume: {meta_path} is missing")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [{k: (tuple(v) if k in meta.get("tuple_keys", []) else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise ValueError(f"cannot resume: the optimizer state in {tensor_path.parent} does not fit this model ({exc})") from None


# ============================================================================ search
SearchSpace = Mapping[str, Any]
"""``{key: [choices...]}`` or ``{key: ("loguniform", low, high)}`` / ``("uniform", low, high)``."""


def sample_params(space: SearchSpace, rng: np.random.Generator) -> dict[str, Any]:
    """One draw from a search space (keys in sorted order, so a seed gives the same draws)."""
    out: dict[str, Any] = {}
    for key in sorted(space):
        spec = space[key]
        if isinstance(spec, tuple) and len(spec) == 3 and spec[0] in ("loguniform", "uniform"):
            lo, hi = float(spec[1]), float(spec[2])
            value = math.exp(rng.uniform(math.log(lo), math.log(hi))) if spec[0] == "loguniform" else rng.uniform(lo, hi)
            out[key] = float(f"{value:.3g}")
        elif isinstance(spec, (list, tuple)) and len(spec) > 0:
            out[key] = spec[int(rng.integers(len(spec)))]
        else:
            raise ValueError(f"search space entry {key}={spec!r} must be a non-empty list of choices or "
                             "('loguniform'|'uniform', low, high)")
    return out


def random_search(train_trial: Any, space: SearchSpace, n_trials: int, out_dir: str | os.PathLike, *, seed: int = 0,
                  resume: bool = False, overwrite: bool = False, copy_files: Sequence[str] = ()) -> dict[str, Any]:
    """Random hyper-parameter search: train ``n_trials`` configurations, keep the best by validation.

    Parameters
    ----------
    train_trial : callable
        ``train_trial(params: dict, directory: Path, resume: bool) -> TrainResult``.
    space : dict
        The search space (see :data:`SearchSpace`).
    n_trials : int
        Configurations to try.
    out_dir : path
        Trials go to ``OUT/search/trial-NN``; the best trial's checkpoint files are copied to
        ``OUT`` and every trial is listed in ``OUT/search.json``.
    seed : int
        Seed of the draws (each trial also trains with the run's seed).
    resume : bool
        Resume unfinished trials and reuse finished ones.
    overwrite : bool
        Start afresh in a non-empty ``OUT``.
    copy_files : sequence of str
        Extra file names to copy from the best trial besides ``config.json``, ``*.safetensors``
        and ``history.json``.

    Returns
    -------
    dict
        ``{"best": index, "best_metric": value, "trials": [...]}`` (also in ``search.json``).
    """
    check_int("n_trials", n_trials, low=1)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --resume to continue the search, --overwrite to start "
                                  "again, or choose another --out")
        _clear_dir(out)
    rng = np.random.default_rng([int(seed), 0x5EA7C4])
    trials = []
    for i in range(n_trials):
        params = sample_params(space, rng)
        directory = out / "search" / f"trial-{i:02d}"
        again = resume and (directory / LAST_DIR / STATE_FILE).is_file()
        result = train_trial(dict(params), directory, again)
        trials.append({"trial": i, "params": params, "best_metric": result.best_metric,
                       "best_epoch": result.best_epoch + 1, "epochs_run": result.epochs_run,
                       "stopped": result.stopped, "directory": str(directory)})
    best = max(range(len(trials)), key=lambda k: (trials[k]["best_metric"], -k))
    src = Path(trials[best]["directory"])
    names = {p.name for p in src.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name in (
        "config.json", HISTORY_FILE, "multisubject.json", *copy_files))}
    for folder in CHECKPOINT_FOLDERS:  # sub-checkpoints (fMRI stimulus CNN, per-subject encoders)
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)
        if (src / folder).is_dir():
            shutil.copytree(src / folder, out / folder)
    for name in sorted(names - {"config.json"}) + sorted(names & {"config.json"}):  # config last, as when written
        shutil.copyfile(src / name, out / name)
    summary = {"best": best, "best_metric": trials[best]["best_metric"], "best_params": trials[best]["params"],
               "space": {k: list(v) for k, v in space.items()}, "seed": seed, "trials": trials}
    (out / "search.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n", encoding="utf-8")
    return summary


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``bci.runtime.inference.select_device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``)."""
    from bci.runtime.inference import select_device

    return select_device(device)


def make_adamw(params: Sequence[nn.Parameter] | Any, settings: TrainSettings, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW with the settings' learning rate and weight decay (``foreach=False``: same result everywhere)."""
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, foreach=False, **kwargs)
