"""``bci train clip``: train the tiny CLIP on the synthetic world (wired under ``bci train``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from bci.cli.types import non_negative_int as _non_negative_int
from bci.cli.types import positive_int as _positive_int
from bci.cli.defaults import Default, given
from bci.cli.progress import add_progress_flag

__all__ = ["register_train_clip"]

_TRAINER = "offline.training.tasks.clip:train_tiny_clip"  # its parameters' defaults are TinyClipSettings'

AddParser = Callable[[argparse._SubParsersAction, str, str, str], argparse.ArgumentParser]


def register_train_clip(train_sub: argparse._SubParsersAction, add_parser: AddParser) -> None:
    """Add ``clip`` to the subcommands of ``bci train``.

    Parameters
    ----------
    train_sub : argparse._SubParsersAction
        The subparsers of the ``train`` command.
    add_parser : callable
        ``add_parser(sub, name, help_text, example) -> ArgumentParser`` (``bci.cli.main._add_parser``).
    """
    p = add_parser(
        train_sub,
        "clip",
        "Train the tiny CLIP on the synthetic world's image-caption pairs and report its zero-shot "
        "accuracy on held-out images (vs chance). Python: bci.clip.load_clip('tiny', weights=DIR).",
        "bci train clip --out models/clip-tiny     # 200 steps: 1.5-3 minutes on 2 CPU cores",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for config.json + model.safetensors")
    # defaults read (lazily: no torch or open_clip while building the parser) from the trainer
    for flag, text in (("--steps", "optimisation steps"), ("--batch-size", "pairs per step"),
                       ("--seed", "seed of initialisation and data"),
                       ("--image-size", "input side in pixels, multiple of 32"), ("--threads", "torch CPU threads")):
        kind = _non_negative_int if flag == "--seed" else _positive_int
        p.add_argument(flag, type=kind, default=Default.of(_TRAINER, flag[2:].replace("-", "_")),
                       help=f"{text} [%(default)s]")
    p.add_argument("--force", action="store_true", help="retrain even if --out holds a model trained the same way")
    add_progress_flag(p, "--quiet", dest="quiet", help="no progress bar or status lines")
    p.set_defaults(func=_cmd_train_clip)


def _cmd_train_clip(args: argparse.Namespace) -> int:
    from offline.training.tasks.clip import train_tiny_clip

    chosen = given({k: getattr(args, k) for k in ("steps", "batch_size", "seed", "image_size", "threads")})
    metrics = train_tiny_clip(args.out, **chosen, force=args.force, progress=not args.quiet)
    print(_summary(metrics))
    return 0


def _summary(metrics: dict) -> str:
    state = "reused" if metrics.get("reused") else f"trained in {metrics['train_seconds']:.0f} s"
    return (
        f"tiny CLIP ({state}) -> {metrics['out_dir']}\n"
        f"zero-shot on {metrics['n_eval_images']} held-out synthetic images, {metrics['n_classes']} classes: "
        f"top-1 {100 * metrics['zero_shot_top1']:.1f}% (chance {100 * metrics['chance_top1']:.1f}%), "
        f"top-5 {100 * metrics['zero_shot_top5']:.1f}% (chance {100 * metrics['chance_top5']:.1f}%)\n"
        f"use it with: load_clip('tiny', weights={str(metrics['out_dir'])!r})"
    )
