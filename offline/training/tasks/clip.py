"""Train the tiny CLIP on the synthetic world's image-caption pairs; zero-shot evaluation.

Training pairs come from :func:`streams.synthetic.stimuli.make_stimuli` (several
seeds, every layout of every class): each image is paired, at random per step,
with its detailed caption ("a large red triangle in the upper left") or its class
template ("an image of a red triangle"). Images get light augmentation (a random
shift of up to 1/16 of the side with background fill, brightness jitter, pixel
noise) so the model generalises to new images.

The loss is CLIP's symmetric contrastive loss (``open_clip.ClipLoss``). A class
template repeated within a batch gives identical text embeddings, so its images
share that positive: the loss then has a floor above zero but no wrong gradient.

The zero-shot evaluation embeds **held-out** images (another seed, so other
positions and sizes than any training image) and classifies each as the nearest of
the 40 class-template captions; chance is 1/40 (top-1) and 5/40 (top-5).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from bci.clip import (
    CONFIG_FILE,
    TINY_NAME,
    WEIGHTS_FILE,
    ClipEmbedder,
    ClipError,
    build_clip_model,
    default_preprocess,
    load_clip,
    read_clip_dir_config,
    save_clip,
    tiny_config,
)
from bci.clip.configs import config_hash
from streams._checks import check_bool, check_float, check_int
from streams.synthetic.stimuli import BACKGROUND, N_LAYOUTS, StimulusSet, make_stimuli

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_STEPS",
    "EVAL_SEED",
    "TinyClipSettings",
    "train_tiny_clip",
    "zero_shot_accuracy",
]

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 200
DEFAULT_BATCH_SIZE = 128
#: Seed of the held-out evaluation images (never a training seed).
EVAL_SEED = 900_001
#: Bump when the training procedure changes, so cached models are not reused.
TRAINING_VERSION = 1


@dataclass(frozen=True)
class TinyClipSettings:
    """Everything that determines a tiny-CLIP training run (hashed for reuse).

    Attributes
    ----------
    steps, batch_size, seed, image_size : int
        Optimisation steps, pairs per step, seed of initialisation / sampling /
        augmentation and of the training images, input side in pixels.
    lr, weight_decay : float
        AdamW peak learning rate (linear warm-up, then cosine decay to 0) and weight
        decay (on weight matrices only).
    warmup_fraction : float
        Fraction of the steps spent warming up.
    template_prob : float
        Probability that an image is paired with its class template rather than
        its detailed caption.
    n_train_sets : int
        Number of training stimulus sets (27 images per class each, every layout
        once; seeds ``seed * 100 + 1, seed * 100 + 2, ...``).
    shift, brightness, noise : float
        Augmentation: shift in units of the image side, relative brightness jitter,
        pixel noise standard deviation (images in [0, 1]).
    eval_per_class : int
        Held-out images per class (seed :data:`EVAL_SEED`).
    """

    steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0
    image_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    template_prob: float = 0.5
    n_train_sets: int = 2
    shift: float = 1.0 / 16.0
    brightness: float = 0.1
    noise: float = 0.02
    eval_per_class: int = 10

    def __post_init__(self) -> None:
        for name, minimum in (("steps", 1), ("batch_size", 2), ("seed", 0), ("n_train_sets", 1), ("eval_per_class", 1)):
            check_int(name, getattr(self, name), low=minimum)
        check_int("image_size", self.image_size, low=32)
        if self.image_size % 32:
            raise ValueError(f"image_size={self.image_size!r} must be a multiple of 32 (e.g. 32, 64, 96)")
        for name, low, high in (
            ("lr", 0.0, 1.0),
            ("weight_decay", 0.0, 10.0),
            ("warmup_fraction", 0.0, 1.0),
            ("template_prob", 0.0, 1.0),
            ("shift", 0.0, 0.25),
            ("brightness", 0.0, 0.5),
            ("noise", 0.0, 0.5),
        ):
            check_float(name, getattr(self, name), low=low, high=high)
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr!r} must be > 0")
        if EVAL_SEED in self.train_seeds:
            raise ValueError(f"seed={self.seed!r} would train on the held-out evaluation images; choose another seed")

    @property
    def train_seeds(self) -> list[int]:
        """Seeds of the training stimulus sets."""
        return [self.seed * 100 + 1 + k for k in range(self.n_train_sets)]


# ---------------------------------------------------------------------- public API
def train_tiny_clip(
    out_dir: str | os.PathLike,
    *,
    steps: int = TinyClipSettings.steps,
    batch_size: int = TinyClipSettings.batch_size,
    seed: int = TinyClipSettings.seed,
    image_size: int = TinyClipSettings.image_size,
    lr: float = TinyClipSettings.lr,
    n_train_sets: int = TinyClipSettings.n_train_sets,
    threads: int = 1,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the tiny CLIP on synthetic image-caption pairs and save it to ``out_dir``.

    Deterministic on the CPU for a given seed and thread count. If ``out_dir``
    already holds a model trained with the same settings it is reused (a message
    says so) unless ``force``.

    Parameters
    ----------
    out_dir : path
        Folder for ``config.json`` + ``model.safetensors`` (+ ``open_clip_config.json``);
        load it with ``bci.clip.load_clip("tiny", weights=out_dir)``.
    steps : int
        Optimisation steps (the default 200 take about 1.5 minutes on 2 idle CPU cores, 3 on a
        busy machine).
    batch_size : int
        Image-caption pairs per step.
    seed : int
        Seed of initialisation, sampling, augmentation and training images.
    image_size : int
        Input side in pixels (multiple of 32).
    lr : float
        Peak AdamW learning rate.
    n_train_sets : int
        Training stimulus sets of 1080 images each.
    threads : int
        torch CPU threads during training and evaluation (restored afterwards). One
        thread is the fastest on a busy 2-core machine (small kernels, no contention);
        2 can be faster on an idle one. Results can differ in the last bits between
        thread counts.
    force : bool
        Retrain even if ``out_dir`` holds a finished model (replacing it).
    progress : bool
        Show a tqdm progress bar and status lines on stderr.

    Returns
    -------
    dict
        Metrics: ``zero_shot_top1``, ``zero_shot_top5``, ``chance_top1``,
        ``chance_top5``, ``n_eval_images``, ``n_classes``, ``loss_start``, ``loss_end``,
        ``train_seconds``, ``n_params``, ``steps``, ``fingerprint``, ``out_dir``,
        ``reused``.

    Raises
    ------
    FileExistsError
        ``out_dir`` holds a model trained with other settings (pass ``force``).
    """
    settings = TinyClipSettings(
        steps=steps, batch_size=batch_size, seed=seed, image_size=image_size, lr=lr, n_train_sets=n_train_sets
    )
    check_bool("force", force)
    check_int("threads", threads, low=1)
    with _threads(threads):
        return _train_and_save(Path(out_dir), settings, force, progress)


def _train_and_save(out: Path, settings: TinyClipSettings, force: bool, progress: bool) -> dict[str, Any]:
    model_cfg = tiny_config(image_size=settings.image_size)
    preprocess_cfg = default_preprocess(settings.image_size)
    settings_hash = config_hash(asdict(settings), model_cfg, preprocess_cfg, TRAINING_VERSION)
    say = _printer(progress)
    if not force:
        reused = _reuse(out, settings_hash, say)
        if reused is not None:
            return reused
    started = time.perf_counter()
    model, losses = _train(settings, model_cfg, preprocess_cfg, progress)
    train_seconds = time.perf_counter() - started
    embedder = ClipEmbedder(model, name=TINY_NAME, model_cfg=model_cfg, preprocess_cfg=preprocess_cfg)
    held_out = make_stimuli(n_per_class=settings.eval_per_class, size=settings.image_size, seed=EVAL_SEED)
    zero_shot = zero_shot_accuracy(embedder, held_out)
    metrics = _metrics(settings, zero_shot, losses, train_seconds, model, embedder.fingerprint())
    extra = {
        "training": {
            **asdict(settings),
            "settings_hash": settings_hash,
            "training_version": TRAINING_VERSION,
            "optimizer": "AdamW(betas=(0.9, 0.98), eps=1e-6), weight decay on weight matrices only",
            "schedule": "linear warm-up, then cosine decay to 0",
            "loss": "open_clip.ClipLoss (symmetric contrastive)",
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "threads": torch.get_num_threads(),
        },
        "data": {
            "source": "streams.synthetic.stimuli.make_stimuli",
            "synthetic": True,
            "train_seeds": settings.train_seeds,
            "train_images": N_LAYOUTS * held_out.n_classes * settings.n_train_sets,
            "captions": "detailed + class template, chosen at random per pair",
            "eval_seed": EVAL_SEED,
            "eval_images": held_out.n_images,
        },
        "metrics": metrics,
    }
    save_clip(model, out, name=TINY_NAME, model_cfg=model_cfg, preprocess_cfg=preprocess_cfg, extra=extra)
    reloaded = load_clip(TINY_NAME, weights=out)
    if reloaded.fingerprint() != embedder.fingerprint():  # pragma: no cover - would be a save/load bug
        raise RuntimeError(f"the model saved to {out} does not reload identically")
    say(f"saved tiny CLIP to {out} ({train_seconds:.0f} s of training)")
    return {**metrics, "out_dir": str(out), "reused": False}


def zero_shot_accuracy(embedder: ClipEmbedder, stimuli: StimulusSet, batch_size: int = 256) -> dict[str, Any]:
    """Zero-shot classification of ``stimuli`` against their class-template captions.

    Each image is assigned the class whose template caption ("an image of a red
    triangle") is nearest in CLIP space. Candidates are the classes present in
    ``stimuli``.

    Parameters
    ----------
    embedder : ClipEmbedder
        The CLIP model.
    stimuli : StimulusSet
        Images with ``class_ids`` and ``template_captions``.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    dict
        ``top1``, ``top5`` (fractions), ``chance_top1`` = 1/K, ``chance_top5`` =
        min(5, K)/K, ``n`` images, ``n_classes`` K.
    """
    if not isinstance(embedder, ClipEmbedder):
        raise TypeError(f"embedder must be a ClipEmbedder (bci.clip.load_clip), got {type(embedder).__name__}")
    if not isinstance(stimuli, StimulusSet):
        raise TypeError(f"stimuli must be a StimulusSet (make_stimuli), got {type(stimuli).__name__}")
    if stimuli.n_images == 0:
        raise ValueError("stimuli holds no images")
    classes = np.unique(stimuli.class_ids)
    first = {int(c): int(np.flatnonzero(stimuli.class_ids == c)[0]) for c in classes}
    texts = [stimuli.template_captions[first[int(c)]] for c in classes]
    text_emb = embedder.encode_text(texts)
    image_emb = embedder.encode_images(stimuli.images, batch_size=batch_size)
    scores = image_emb @ text_emb.T
    target = np.searchsorted(classes, stimuli.class_ids)
    order = np.argsort(-scores, axis=1, kind="stable")
    k = min(5, len(classes))
    top1 = float(np.mean(order[:, 0] == target))
    top5 = float(np.mean(np.any(order[:, :k] == target[:, None], axis=1)))
    return {
        "top1": top1,
        "top5": top5,
        "chance_top1": 1.0 / len(classes),
        "chance_top5": k / len(classes),
        "n": int(stimuli.n_images),
        "n_classes": int(len(classes)),
    }


# ---------------------------------------------------------------------- training
@dataclass
class _Data:
    images: torch.Tensor  # (N, 3, S, S) float in [0, 1]
    caption_ids: torch.Tensor  # (N,) index into tokens
    template_ids: torch.Tensor  # (N,)
    tokens: torch.Tensor  # (n_texts, context_length)


def _training_data(settings: TinyClipSettings, context_length: int) -> _Data:
    sets = [make_stimuli(n_per_class=N_LAYOUTS, size=settings.image_size, seed=s) for s in settings.train_seeds]
    images = np.concatenate([s.images for s in sets])
    captions = [c for s in sets for c in s.captions]
    templates = [t for s in sets for t in s.template_captions]
    texts = sorted(set(captions) | set(templates))
    index = {t: i for i, t in enumerate(texts)}
    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    return _Data(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous(),
        caption_ids=torch.tensor([index[c] for c in captions]),
        template_ids=torch.tensor([index[t] for t in templates]),
        tokens=tokenizer(texts),
    )


def _augment(x: torch.Tensor, settings: TinyClipSettings, generator: torch.Generator) -> torch.Tensor:
    """Random shift with background fill, brightness jitter and pixel noise (images in [0, 1])."""
    n, _, size, _ = x.shape
    pad = int(round(settings.shift * size))
    if pad:
        background = torch.tensor(BACKGROUND, dtype=x.dtype).view(1, 3, 1, 1) / 255.0
        padded = background.repeat(n, 1, size + 2 * pad, size + 2 * pad)
        padded[:, :, pad : pad + size, pad : pad + size] = x
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(size))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(size))[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    scale = 1.0 + settings.brightness * (2.0 * torch.rand((n, 1, 1, 1), generator=generator) - 1.0)
    x = x * scale + settings.noise * torch.randn(x.shape, generator=generator)
    return x.clamp_(0.0, 1.0)


def _train(
    settings: TinyClipSettings, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any], progress: bool
) -> tuple[torch.nn.Module, list[float]]:
    data = _training_data(settings, model_cfg["text_cfg"]["context_length"])
    mean = torch.tensor(preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocess_cfg["std"]).view(1, 3, 1, 1)
    n_images = data.images.shape[0]
    losses: list[float] = []
    with _deterministic(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_clip_model(model_cfg, TINY_NAME)
        model.train()
        optimizer, scheduler = _optimizer(model, settings)
        generator = torch.Generator().manual_seed(settings.seed)
        loss_fn = open_clip.ClipLoss()
        bar = tqdm(range(settings.steps), desc="train tiny CLIP", unit="step",
                   disable=None if progress else True, file=sys.stderr)  # None: drawn on a terminal only
        for step in bar:
            batch = torch.randperm(n_images, generator=generator)[: settings.batch_size]
            use_template = torch.rand(len(batch), generator=generator) < settings.template_prob
            text_ids = torch.where(use_template, data.template_ids[batch], data.caption_ids[batch])
            images = (_augment(data.images[batch], settings, generator) - mean) / std
            image_features = model.encode_image(images, normalize=True)
            text_features = model.encode_text(data.tokens[text_ids], normalize=True)
            loss = loss_fn(image_features, text_features, model.logit_scale.exp().clamp(max=100.0))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if step % 10 == 0 or step == settings.steps - 1:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
    return model.eval(), losses


def _optimizer(
    model: torch.nn.Module, settings: TinyClipSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    warmup = max(1, int(round(settings.warmup_fraction * settings.steps)))
    total = settings.steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Use ``n`` torch CPU threads for the duration (the previous count is restored)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic torch kernels for the duration (the previous mode is restored)."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


# ---------------------------------------------------------------------- bookkeeping
def _metrics(
    settings: TinyClipSettings,
    zero_shot: dict[str, Any],
    losses: list[float],
    train_seconds: float,
    model: torch.nn.Module,
    fingerprint: str,
) -> dict[str, Any]:
    window = max(1, len(losses) // 10)
    return {
        "zero_shot_top1": zero_shot["top1"],
        "zero_shot_top5": zero_shot["top5"],
        "chance_top1": zero_shot["chance_top1"],
        "chance_top5": zero_shot["chance_top5"],
        "n_eval_images": zero_shot["n"],
        "n_classes": zero_shot["n_classes"],
        "evaluation": f"zero-shot, held-out synthetic images (seed {EVAL_SEED}) vs the class-template captions",
        "loss_start": float(np.mean(losses[:window])),
        "loss_end": float(np.mean(losses[-window:])),
        "loss_curve": [float(np.mean(losses[i : i + window])) for i in range(0, len(losses), window)],
        "train_seconds": round(train_seconds, 2),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "steps": settings.steps,
        "fingerprint": fingerprint,
    }


def _reuse(out: Path, settings_hash: str, say: Any) -> dict[str, Any] | None:
    """Metrics of a finished model in ``out`` trained with the same settings; None if there is none."""
    if not (out / CONFIG_FILE).is_file():
        return None
    try:
        config = read_clip_dir_config(out)
    except (ClipError, OSError) as exc:
        raise FileExistsError(
            f"{out} holds a {CONFIG_FILE} that is not a tiny CLIP ({exc}); choose another --out or pass "
            "force=True (--force) to overwrite"
        ) from None
    training = config.get("training", {})
    if config.get("name") != TINY_NAME or training.get("settings_hash") != settings_hash:
        raise FileExistsError(
            f"{out} already holds a {config.get('name')!r} CLIP trained with other settings "
            f"(steps={training.get('steps')}, batch_size={training.get('batch_size')}, seed={training.get('seed')}, "
            f"image_size={training.get('image_size')}); pass force=True (--force) to replace it, or choose another "
            "--out"
        )
    if not (out / WEIGHTS_FILE).is_file():
        return None
    embedder = load_clip(TINY_NAME, weights=out)
    metrics = dict(config.get("metrics", {}))
    if metrics.get("fingerprint") != embedder.fingerprint():
        return None  # weights changed since training: retrain
    say(f"reusing the tiny CLIP in {out}: it was trained with the same settings (pass --force to retrain)")
    return {**metrics, "out_dir": str(out), "reused": True}


def _printer(enabled: bool) -> Any:
    def say(text: str) -> None:
        logger.info(text)
        if enabled:
            print(text, file=sys.stderr, flush=True)

    return say
