"""``bci train clip``: train the tiny CLIP on the synthetic world (wired under ``bci train``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from bci.cli.types import non_negative_int as _non_negative_int
from bci.cli.types import positive_int as _positive_int

__all__ = ["register_train_clip"]

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
    # defaults resolved in the handler: importing the trainer (torch, open_clip) here would slow every `bci` command
    p.add_argument("--steps", type=_positive_int, default=None, help="optimisation steps [200]")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="pairs per step [128]")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of initialisation and data [0]")
    p.add_argument("--image-size", type=_positive_int, default=64, help="input side in pixels, multiple of 32 [64]")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads [1]")
    p.add_argument("--force", action="store_true", help="retrain even if --out holds a model trained the same way")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_clip)


def _cmd_train_clip(args: argparse.Namespace) -> int:
    from offline.training.tasks.clip import DEFAULT_BATCH_SIZE, DEFAULT_STEPS, train_tiny_clip

    metrics = train_tiny_clip(
        args.out,
        steps=DEFAULT_STEPS if args.steps is None else args.steps,
        batch_size=DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size,
        seed=args.seed,
        image_size=args.image_size,
        threads=args.threads,
        force=args.force,
        progress=not args.quiet,
    )
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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
