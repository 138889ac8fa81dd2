"""``bci train {sample,pixel,saliency-gan,fmri}``, ``bci evaluate`` and ``bci export-embeddings``.

Wiring (the lead, in ``bci/cli/offline.py``)::

    from offline.cli.train import register_evaluate, register_train
    register_train(train_sub, add_parser)   # train_sub: the subparsers of ``bci train``
    register_evaluate(sub, add_parser)      # sub: the top-level ``bci`` subparsers

Hyper-parameters come from, in increasing priority: the subcommand's defaults (those of its
trainer's settings and options dataclasses, e.g. :class:`~offline.training.tasks.sample.SampleSettings`
and :class:`~offline.training.tasks.sample.SampleOptions`: ``train_sample(ds, out)`` from Python
trains what ``bci train sample`` trains), a
``--config FILE.toml|.json`` (a flat table whose keys are the long option names with
``_`` or ``-``, e.g. ``lr = 3e-4``, ``batch_size = 32``; ``[model_params]`` sets architecture
parameters such as ``n_spatial``), and the flags given. ``--search N``
runs a random search over the subcommand's space (:data:`SEARCH_SPACES`) and keeps the
best trial by validation. Handlers convert the namespace to plain arguments and call
library code.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bci.cli.defaults import Default, field_defaults, given, load
from bci.cli.progress import add_progress_flag, show_progress
from bci.cli import types as cli_types

if TYPE_CHECKING:  # the trainers import torch: only inside the handlers, so `bci --help` stays quick
    from offline.training.loop import TrainResult, TrainSettings

__all__ = ["SEARCH_SPACES", "command_defaults", "register_evaluate", "register_fmri_dataset", "register_train",
           "resolve_params"]

AddParser = Callable[[Any, str, str, str], argparse.ArgumentParser]

_SETTINGS = ("epochs", "batch_size", "lr", "weight_decay", "patience", "min_delta", "grad_clip", "seed", "device")
_TASKS = "offline.training.tasks."
_FMRI_DESIGN = "offline.data.fmri:FMRIDesign"
_FMRI_SUBJECT = "offline.data.fmri:FMRISubject"


@dataclass(frozen=True)
class _Trainer:
    """Where a subcommand's defaults live (``"module:Class"``, imported only when they are needed).

    Attributes
    ----------
    settings : str
        Its :class:`~offline.training.loop.TrainSettings` class (the keys of ``_SETTINGS`` are flags).
    options : tuple of str
        Its options dataclasses; where two share a field, the first one's default is used.
    no_flag : tuple of str
        Option fields that have neither a flag nor a config key.
    unset : tuple of str
        Keys the handler resolves itself (None: not given).
    """

    settings: str
    options: tuple[str, ...]
    no_flag: tuple[str, ...] = ()
    unset: tuple[str, ...] = ()


_TRAINERS: dict[str, _Trainer] = {
    "sample": _Trainer(_TASKS + "sample:SampleSettings", (_TASKS + "sample:SampleOptions",)),
    "pixel": _Trainer(_TASKS + "pixel:PixelSettings", (_TASKS + "pixel:PixelOptions",), no_flag=("squared",)),
    "saliency-gan": _Trainer(_TASKS + "saliency_gan:GanSettings", (_TASKS + "saliency_gan:GanOptions",),
                             no_flag=("d_lr_ratio",)),
    # one subcommand, two trainers: train_fmri (objective clip, FMRIOptions) and train_fmri_joint
    "fmri": _Trainer(_TASKS + "fmri:FMRISettings", (_TASKS + "fmri:FMRIOptions", _TASKS + "fmri_joint:FMRIJointOptions"),
                     no_flag=("backbone", "head_hidden", "mvnn", "learn_temperature", "text_weight"),
                     unset=("objective", "top_voxels")),
}


def command_defaults(command: str) -> dict[str, Any]:
    """Every key of ``bci train COMMAND`` with its default, read from the trainer's settings and options classes.

    Parameters
    ----------
    command : str
        ``sample``, ``pixel``, ``saliency-gan`` or ``fmri``.
    """
    spec = _TRAINERS[command]
    settings = field_defaults(load(spec.settings))
    out = {k: settings[k] for k in _SETTINGS}
    for ref in reversed(spec.options):
        out.update({k: v for k, v in field_defaults(load(ref)).items() if k not in spec.no_flag})
    out.update(dict.fromkeys(spec.unset))
    return out


def _default(command: str, key: str, none: str | None = None) -> Default:
    return Default(lambda: command_defaults(command)[key], none)


#: Random-search spaces: a list is a choice, ``("loguniform", lo, hi)`` a log-uniform draw.
SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "sample": {"lr": ("loguniform", 1e-4, 3e-3), "weight_decay": [0.0, 1e-3, 1e-2, 1e-1],
               "dropout": [0.1, 0.25, 0.5], "batch_size": [32, 64, 128], "loss": ["mse", "infonce", "mse+infonce"],
               "temperature": [0.03, 0.07, 0.1]},
    "pixel": {"lr": ("loguniform", 1e-4, 3e-3), "weight_decay": [0.0, 1e-3, 1e-2, 1e-1],
              "dropout": [0.1, 0.25, 0.5], "margin": [0.1, 0.2, 0.3, 0.5], "per_class": [2, 4, 8]},
    "saliency-gan": {"lr": ("loguniform", 5e-5, 5e-4), "ssim_weight": [0.5, 1.0, 3.0, 10.0],
                     "gan_loss": ["hinge", "non-saturating"]},
    "fmri": {"lr": ("loguniform", 1e-4, 3e-3), "weight_decay": [0.0, 1e-2, 1e-1], "dropout": [0.1, 0.3, 0.5],
             "temperature": [0.03, 0.07, 0.1], "top_voxels": [None, 200, 500]},
}

# ============================================================================ parameters
def resolve_params(command: str, config_file: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """Defaults ← config file ← flags (``None`` flags are not given).

    Parameters
    ----------
    command : str
        ``sample``, ``pixel``, ``saliency-gan`` or ``fmri``.
    config_file : str or None
        ``.toml`` or ``.json`` with a flat table of keys.
    flags : dict
        Values of the command-line flags (None or a :class:`~bci.cli.defaults.Default` when not given).

    Returns
    -------
    dict
        Every key of the command (settings and options).
    """
    from offline.training.loop import load_config_file

    params = command_defaults(command)
    valid = set(params)
    if config_file is not None:
        data = {str(k).replace("-", "_"): v for k, v in load_config_file(config_file).items()}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"config file {config_file}: unknown keys {unknown} for 'bci train {command}'; "
                             f"valid keys are {sorted(valid)}")
        params.update(data)
    params.update({k: v for k, v in given(flags).items() if k in valid})
    return params


def _settings(command: str, params: dict[str, Any], progress: bool) -> TrainSettings:
    return load(_TRAINERS[command].settings)(progress=progress, **{k: params[k] for k in _SETTINGS})


def _options(command: str, params: dict[str, Any]) -> Any:
    cls = load(_TRAINERS[command].options[0])
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names})


def _train_once(command: str, args: argparse.Namespace, params: dict[str, Any], out: Path,
                resume: bool) -> TrainResult:
    settings = _settings(command, params, progress=not args.quiet)
    options = _options(command, params)
    common = {"split": args.split, "settings": settings, "resume": resume, "overwrite": args.overwrite}
    if command == "sample":
        from offline.training.tasks.sample import train_sample

        return train_sample(args.data, out, clip_weights=args.clip_weights, clip_model=args.clip, options=options,
                            **common)
    if command == "fmri":
        return _train_fmri(args, params, options, out, common)
    if command == "pixel":
        from offline.training.tasks.pixel import train_pixel

        return train_pixel(args.data, out, options=options, **common)
    from offline.training.tasks.saliency_gan import train_saliency_gan

    return train_saliency_gan(args.data, args.encoder, out, options=options, **common)


def fmri_objective(params: dict[str, Any], clip_weights: str | None) -> str:
    """The fMRI objective: as given, else ``clip`` when CLIP weights are given, else ``dual``."""
    objective = params.get("objective") or ("clip" if clip_weights else "dual")
    if objective not in ("clip", "dual", "pattern"):
        raise ValueError(f"--objective {objective!r} must be clip, dual or pattern")
    return str(objective)


def _train_fmri(args: argparse.Namespace, params: dict[str, Any], options: Any, out: Path,
                common: dict[str, Any]) -> TrainResult:
    data = list(args.data) if isinstance(args.data, (list, tuple)) else [args.data]
    objective = fmri_objective(params, args.clip_weights)
    if objective == "clip" and not args.clip_weights:
        raise ValueError("--objective clip needs --clip-weights DIR (the frozen CLIP model to align to); "
                         "or use --objective dual / pattern, which need no CLIP")
    if objective == "clip" and len(data) == 1:
        from offline.training.tasks.fmri import train_fmri

        return train_fmri(data[0], out, clip_weights=args.clip_weights, clip_model=args.clip, options=options,
                          top_voxels=params.get("top_voxels"), **common)
    if params.get("top_voxels") is not None:
        raise ValueError("--top-voxels (encoding-model voxel selection) works with --objective clip on one "
                         f"dataset; here the objective is {objective!r} with {len(data)} dataset(s)")
    from offline.training.tasks.fmri_joint import FMRIJointOptions, train_fmri_joint

    chosen = {f.name: params[f.name] for f in dataclasses.fields(FMRIJointOptions) if params.get(f.name) is not None}
    joint = FMRIJointOptions(**{**chosen, "objective": objective})  # dropout None: the options' default
    print(f"bci train fmri: objective {objective!r}, {len(data)} subject(s)", file=sys.stderr)
    return train_fmri_joint(data, out, options=joint, clip_weights=args.clip_weights, clip_model=args.clip,
                            **common)


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        flags = given(vars(args))
        params = resolve_params(command, args.config, flags)
        out = Path(args.out)
        if args.search:
            from offline.training.loop import random_search

            space = {k: v for k, v in SEARCH_SPACES[command].items() if k not in flags}
            if command == "fmri" and (fmri_objective(params, args.clip_weights) != "clip" or len(args.data) > 1):
                space.pop("top_voxels", None)

            def trial(sampled: dict[str, Any], directory: Path, resume: bool) -> TrainResult:
                return _train_once(command, args, {**params, **sampled}, directory, resume)

            summary = random_search(trial, space, args.search, out, seed=int(params["seed"]), resume=args.resume,
                                    overwrite=args.overwrite)
            print(f"random search over {args.search} trials: best trial {summary['best']} "
                  f"(val {summary['best_metric']:.4g}) with {summary['best_params']}")
            print(f"checkpoint: {out} (copied from {out / 'search'}); all trials: {out / 'search.json'}")
            return 0
        result = _train_once(command, args, params, out, args.resume)
        _print_result(command, args, result)
        return 0

    return run


def _print_result(command: str, args: argparse.Namespace, result: TrainResult) -> None:
    last = result.history[-1] if result.history else {}
    metric = next((k for k in last if k.startswith("val_") and k not in ("val_n_way", "val_mse")), "val")
    print(f"bci train {command}: best {metric} = {result.best_metric:.4g} at epoch {result.best_epoch + 1} "
          f"({result.epochs_run} epochs run, stopped: {result.stopped})")
    print(f"checkpoint: {result.checkpoint}  (resume state: {result.checkpoint / 'last'})")
    data = list(args.data) if isinstance(args.data, (list, tuple)) else [args.data]
    clip = f" --clip-weights {args.clip_weights}" if getattr(args, "clip_weights", None) else ""
    if len(data) == 1:
        print(f"evaluate:   bci evaluate {result.checkpoint} --data {data[0]}{clip}")
        return
    for k, ds in enumerate(data):
        print(f"evaluate:   bci evaluate {result.checkpoint / 'subjects' / f'sub-{k}'} --data {ds}{clip}")


# ============================================================================ parsers
def _flags(p: argparse.ArgumentParser, command: str, flags: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Add ``(flag, help, argparse keywords)``; each default is the trainer's, shown as ``[default]`` in the help."""
    for flag, text, kw in flags:
        key = flag.lstrip("-").replace("-", "_")
        none = kw.pop("none", None)
        p.add_argument(flag, default=_default(command, key, none), help=f"{text} [%(default)s]", **kw)


def _common(p: argparse.ArgumentParser, command: str) -> None:
    if command == "fmri":
        p.add_argument("--data", required=True, nargs="+", metavar="DS",
                       help="fMRI epoch dataset(s); several (one per subject) train the multi-subject model")
    else:
        p.add_argument("--data", required=True, metavar="DS", help="epoch dataset (bci epochs / bci dataset simulate)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--split", metavar="NAME", help="stored split (default: 'block'); leaking splits are refused")
    _flags(p, command, [
        ("--epochs", "maximum epochs", {"type": cli_types.non_negative_int, "metavar": "N"}),
        ("--batch-size", "batch size", {"type": cli_types.non_negative_int, "metavar": "N"}),
        ("--lr", "AdamW learning rate", {"type": cli_types.non_negative_float, "metavar": "X"}),
        ("--weight-decay", "AdamW weight decay", {"type": cli_types.non_negative_float, "metavar": "X"}),
        ("--patience", "early stopping: epochs without validation improvement (0 disables)",
         {"type": cli_types.non_negative_int, "metavar": "N"}),
        ("--grad-clip", "clip the gradient norm", {"type": cli_types.non_negative_float, "metavar": "X"}),
        ("--seed", "seed of every random draw", {"type": cli_types.non_negative_int, "metavar": "S"}),
        ("--device", "cpu (deterministic), auto, cuda, cuda:N", {"metavar": "DEV"}),
    ])
    p.add_argument("--config", metavar="FILE", help="hyper-parameters from a .toml or .json file (flags override)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last (same data, split and seed)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a non-empty DIR")
    p.add_argument("--search", type=cli_types.non_negative_int, metavar="N", default=0,
                   help="random hyper-parameter search over N trials; the best by validation is kept")
    add_progress_flag(p, "--quiet", dest="quiet", help="no progress bars or per-epoch lines")


def _augment_args(p: argparse.ArgumentParser, command: str) -> None:
    _flags(p, command, [
        ("--max-shift", "augmentation: random time shift up to N samples", {"type": cli_types.non_negative_int, "metavar": "N"}),
        ("--noise", "augmentation: Gaussian noise, standardised units", {"type": cli_types.non_negative_float, "metavar": "X"}),
        ("--scale", "augmentation: random amplitude scale 1 +- X", {"type": cli_types.non_negative_float, "metavar": "X"}),
    ])


def _alignment_args(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--clip", default="tiny", metavar="NAME",
                   help="CLIP architecture: tiny (bci train clip) or an open_clip name, e.g. ViT-B-32 [tiny]")
    p.add_argument("--clip-weights", required=command != "fmri", metavar="DIR",
                   help="weights of the frozen CLIP model (a 'bci train clip' folder or a local weights file)"
                   + ("; needed by --objective clip only" if command == "fmri" else ""))
    _flags(p, command, [
        ("--model", "registry model", {"none": "eeg_convnet / fmri_mlp by modality"}),
        ("--target", "CLIP target: class template caption, detailed caption or image",
         {"choices": ("template", "caption", "image")}),
        ("--loss", "alignment loss", {"choices": ("mse", "infonce", "mse+infonce")}),
        ("--temperature", "InfoNCE temperature", {"type": cli_types.non_negative_float}),
        ("--infonce-weight", "weight of InfoNCE in mse+infonce", {"type": cli_types.non_negative_float}),
        ("--dropout", "model dropout", {"type": cli_types.non_negative_float, "none": "model default"}),
    ])
    _augment_args(p, command)


def _add_sample(sub: Any, add_parser: AddParser) -> None:
    p = add_parser(sub, "sample", "train the sample-level extractor M_s (EEG -> CLIP caption space)",
                   "bci train sample --data ds.zarr --out models/sample --clip-weights models/clip --epochs 30")
    _common(p, "sample")
    _alignment_args(p, "sample")
    p.add_argument("--backbone", metavar="CKPT",
                   help="two-stage extractor: build on this pixel-level checkpoint (bci train pixel, same dataset "
                        "and split or another dataset), frozen, and train only an MLP head into CLIP space")
    _flags(p, "sample", [("--head-hidden", "hidden units of the --backbone head", {"type": cli_types.non_negative_int, "metavar": "N"}),
                         ("--mvnn", "multivariate noise normalisation: whitening fitted on the training part's "
                          "repetitions of each image, stored in the checkpoint, applied live", {"action": "store_true"}),
                         ("--learn-temperature", "learn the InfoNCE temperature as CLIP does (logit_scale from "
                          "log(1/--temperature), at most log 100), saved in the checkpoint", {"action": "store_true"}),
                         ("--text-weight", "with --target image: (1-W) * loss(image) + W * loss(caption text); "
                          "ATM uses 0.01", {"type": cli_types.non_negative_float, "metavar": "W"})])
    p.set_defaults(func=_handler("sample"))


def _add_fmri(sub: Any, add_parser: AddParser) -> None:
    p = add_parser(sub, "fmri", "train fMRI encoders: dual encoder with a stimulus CNN, decoder to the pattern, "
                   "or alignment to CLIP image embeddings; one subject or several",
                   "bci train fmri --data fmri.zarr --out models/fmri --objective dual")
    _common(p, "fmri")
    p.add_argument("--objective", choices=("dual", "pattern", "clip"),
                   help="dual: fMRI MLP + stimulus CNN, InfoNCE; pattern: decode the grid x grid stimulus (BCE); "
                        "clip: InfoNCE to frozen CLIP image embeddings [clip with --clip-weights, else dual]")
    _flags(p, "fmri", [
        ("--embed-dim", "dual encoder embedding size", {"type": cli_types.non_negative_int}),
        ("--grid", "pattern objective: decoded grid side", {"type": cli_types.non_negative_int, "none": "the dataset's, else 10"}),
        ("--stimulus-size", "dual: side the stimulus is resized to", {"type": cli_types.non_negative_int}),
    ])
    _alignment_args(p, "fmri")
    p.add_argument("--top-voxels", type=cli_types.non_negative_int, metavar="N",
                   help="keep the N voxels best predicted by a ridge encoding model (CLIP -> voxel) on train")
    p.set_defaults(func=_handler("fmri"))


def _add_pixel(sub: Any, add_parser: AddParser) -> None:
    p = add_parser(sub, "pixel", "train the pixel-level extractor f_theta (triplet loss, semi-hard mining)",
                   "bci train pixel --data ds.zarr --out models/pixel --margin 0.2 --epochs 30")
    _common(p, "pixel")
    _flags(p, "pixel", [
        ("--model", "registry model", {"none": "eeg_convnet"}),
        ("--embed-dim", "feature size", {"type": cli_types.non_negative_int}),
        ("--margin", "triplet margin beta on the unit sphere", {"type": cli_types.non_negative_float}),
        ("--per-class", "K windows per class in a batch (P = batch/K)", {"type": cli_types.non_negative_int}),
        ("--dropout", "model dropout", {"type": cli_types.non_negative_float, "none": "model default"}),
    ])
    _augment_args(p, "pixel")
    p.set_defaults(func=_handler("pixel"))


def _add_gan(sub: Any, add_parser: AddParser) -> None:
    p = add_parser(sub, "saliency-gan", "train the saliency GAN G(f_theta(x)) on a frozen pixel-level encoder",
                   "bci train saliency-gan --data ds.zarr --encoder models/pixel --out models/gan --image-size 64")
    _common(p, "saliency-gan")
    p.add_argument("--encoder", required=True, metavar="CKPT", help="pixel-level checkpoint (bci train pixel)")
    _flags(p, "saliency-gan", [
        ("--image-size", "generated image size, a power of two", {"type": cli_types.non_negative_int}),
        ("--ssim-weight", "lambda of lambda*(1 - SSIM)", {"type": cli_types.non_negative_float}),
        ("--adv-weight", "weight of the adversarial term", {"type": cli_types.non_negative_float}),
        ("--gan-loss", "adversarial loss", {"choices": ("hinge", "non-saturating")}),
        ("--augment", "DiffAugment policy ('' disables)", {}),
        ("--noise-dim", "noise size concatenated to the features", {"type": cli_types.non_negative_int}),
        ("--g-channels", "generator base channels", {"type": cli_types.non_negative_int}),
        ("--d-channels", "discriminator base channels", {"type": cli_types.non_negative_int}),
    ])
    p.set_defaults(func=_handler("saliency-gan"))


def register_train(train_sub: Any, add_parser: AddParser) -> None:
    """Add ``sample``, ``pixel``, ``saliency-gan`` and ``fmri`` under ``bci train``.

    Parameters
    ----------
    train_sub : argparse._SubParsersAction
        The subparsers of the ``bci train`` parser.
    add_parser : callable
        ``add_parser(sub, name, help_text, example) -> ArgumentParser`` (``bci.cli.main._add_parser``).
    """
    for add in (_add_sample, _add_pixel, _add_gan, _add_fmri):
        add(train_sub, add_parser)


# ============================================================================ evaluate / export
def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from offline.evaluation.evaluate import evaluate, format_report

    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval-{args.part}"
    report = evaluate(args.checkpoint, args.data, args.split, args.part, clip_weights=args.clip_weights,
                      out_dir=out, baseline=not args.no_baseline, oracle=not args.no_oracle,
                      plots=not args.no_plots, device=args.device, progress=show_progress(args.no_progress))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(format_report(report))
        print(f"report: {out / 'report.json'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from offline.evaluation.evaluate import export_embeddings

    path = export_embeddings(args.checkpoint, args.data, args.out, split=args.split, part=args.part,
                             device=args.device, progress=show_progress(args.no_progress))
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def register_evaluate(sub: Any, add_parser: AddParser) -> None:
    """Add ``evaluate`` and ``export-embeddings`` to the top-level ``bci`` subcommands.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``bci`` subparsers.
    add_parser : callable
        ``add_parser(sub, name, help_text, example) -> ArgumentParser``.
    """
    p = add_parser(sub, "evaluate", "score a checkpoint on a split: model vs ridge vs oracle vs chance, plots, JSON",
                   "bci evaluate models/sample --data ds.zarr --clip-weights models/clip --out eval/")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="encoder or saliency-GAN checkpoint directory")
    p.add_argument("--data", required=True, metavar="DS", help="epoch dataset")
    p.add_argument("--split", metavar="NAME", help="split (default: the one the checkpoint was trained on)")
    p.add_argument("--part", default="test", choices=("test", "val", "train"), help="part to score [test]")
    p.add_argument("--out", metavar="DIR", help="report.json and PNGs [CHECKPOINT/eval-PART]")
    p.add_argument("--clip-weights", metavar="DIR", help="CLIP weights (default: those recorded in the checkpoint)")
    p.add_argument("--no-baseline", action="store_true", help="skip the ridge baseline")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle (synthetic data only anyway)")
    p.add_argument("--no-plots", action="store_true", help="no PNGs")
    p.add_argument("--device", default="cpu", help="cpu, auto, cuda [cpu]")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    add_progress_flag(p)
    p.set_defaults(func=_cmd_evaluate)

    e = add_parser(sub, "export-embeddings", "write a checkpoint's embeddings of a dataset as .npz + .json",
                   "bci export-embeddings models/sample --data ds.zarr --out emb.npz --split block --part test")
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="encoder checkpoint directory")
    e.add_argument("--data", required=True, metavar="DS", help="epoch dataset")
    e.add_argument("--out", required=True, metavar="FILE", help="output .npz (a .json with metadata beside it)")
    e.add_argument("--split", metavar="NAME", help="only one part of this split (default: every epoch)")
    e.add_argument("--part", choices=("test", "val", "train"), help="the part (with --split) [test]")
    e.add_argument("--device", default="cpu", help="cpu, auto, cuda [cpu]")
    add_progress_flag(e)
    e.set_defaults(func=_cmd_export)


# ============================================================================ fMRI dataset
def _cmd_fmri_dataset(args: argparse.Namespace) -> int:
    from offline.data.epochs import EpochDataset
    from offline.data.fmri import FMRIDesign, FMRISubject, fmri_dataset_from_simulation

    flags = given(vars(args))
    design = FMRIDesign(**{k: flags[k] for k in ("n_train", "block_size", "val_blocks", "test_repeats", "grid")
                           if k in flags})
    subject = FMRISubject(**{k: flags[k] for k in ("snr", "seed", "n_voxels") if k in flags})
    path = fmri_dataset_from_simulation(args.out, design, subject, overwrite=args.overwrite)
    ds = EpochDataset.open(path)
    sizes = {k: len(v) for k, v in ds.split("block").items()}
    print(f"{path}: {len(ds)} fMRI epochs ({ds.data.shape[1]} voxels x {ds.data.shape[2]} volumes), "
          f"{len(ds.images)} patterns; split 'block': {sizes}")
    return 0


def register_fmri_dataset(sub: Any, add_parser: AddParser, name: str = "simulate-fmri") -> None:
    """Add the Miyawaki-style fMRI dataset builder (e.g. under ``bci dataset`` as ``simulate-fmri``).

    Parameters
    ----------
    sub : argparse._SubParsersAction
        Where to add it.
    add_parser : callable
        ``add_parser(sub, name, help_text, example) -> ArgumentParser``.
    name : str
        Subcommand name.
    """
    p = add_parser(sub, name, "simulate a Miyawaki-style fMRI session (10x10 patterns) and build its epoch dataset; "
                   "another --seed is another simulated subject",
                   f"bci dataset {name} fmri.zarr --n-train 400 --snr 1.0")
    p.add_argument("out", metavar="OUT", help="dataset to create")
    p.add_argument("--n-train", type=cli_types.non_negative_int, default=Default.of(_FMRI_DESIGN, "n_train"),
                   help="random training patterns, one trial each [%(default)s]")
    p.add_argument("--block-size", type=cli_types.non_negative_int, default=Default.of(_FMRI_DESIGN, "block_size"),
                   help="training trials per block [%(default)s]")
    p.add_argument("--val-blocks", type=cli_types.non_negative_int, default=Default.of(_FMRI_DESIGN, "val_blocks"),
                   help="training blocks held out for validation [%(default)s]")
    p.add_argument("--test-repeats", type=cli_types.non_negative_int, default=Default.of(_FMRI_DESIGN, "test_repeats"),
                   help="presentations of each of the 12 test patterns [%(default)s]")
    p.add_argument("--snr", type=cli_types.non_negative_float, default=Default.of(_FMRI_SUBJECT, "snr"),
                   help="simulator SNR [%(default)s]")
    p.add_argument("--seed", type=cli_types.non_negative_int, default=Default.of(_FMRI_SUBJECT, "seed"),
                   help="seed of everything: receptive fields (the subject), noise, patterns [%(default)s]")
    p.add_argument("--n-voxels", type=cli_types.non_negative_int, default=Default.of(_FMRI_SUBJECT, "n_voxels"),
                   help="voxels [%(default)s]")
    p.add_argument("--grid", type=cli_types.non_negative_int, default=Default.of(_FMRI_DESIGN, "grid"),
                   help="pattern side, e.g. 28 for 28x28 stimuli [%(default)s]")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_fmri_dataset)
