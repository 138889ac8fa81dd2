"""CLI wiring of the offline commands: ``train``, ``evaluate``, ``epochs``, ``dataset``,
``check-splits``, ``import`` and ``export``.

The only module of :mod:`bci` besides :mod:`bci.cli.main` that may import :mod:`offline`
(import-linter enforces it); each offline module registers its own subcommands and keeps
heavy imports inside its handlers, so ``bci --help`` stays quick.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

AddParser = Callable[..., argparse.ArgumentParser]


def add_offline_commands(sub: Any, add_parser: AddParser) -> None:
    """Register every offline subcommand on the top-level ``sub`` parsers."""
    from offline.cli.clip import register_train_clip
    from offline.cli.dataset import register as register_epochs
    from offline.cli.export import register as register_export
    from offline.cli.imports import register as register_import
    from offline.cli.train import register_evaluate, register_fmri_dataset, register_train

    train = add_parser(
        sub, "train", "Train the tiny CLIP, an EEG/fMRI encoder or the saliency GAN",
        "bci train sample --data bci-demo/dataset.zarr --out bci-demo/sample --clip-weights bci-demo/clip",
    )
    train_sub = train.add_subparsers(dest="what", metavar="WHAT")
    train_sub.required = True
    register_train_clip(train_sub, add_parser)
    register_train(train_sub, add_parser)
    register_evaluate(sub, add_parser)
    register_epochs(sub, add_parser)
    dataset = sub.choices["dataset"]  # `bci dataset simulate-fmri` joins `bci dataset simulate|info`
    register_fmri_dataset(next(a for a in dataset._actions if isinstance(a, argparse._SubParsersAction)), add_parser)
    register_import(sub, add_parser)
    register_export(sub, add_parser)
