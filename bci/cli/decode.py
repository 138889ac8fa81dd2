"""CLI commands that decode: ``bci live``, ``bci replay --decode`` and ``bci model init``.

Kept apart from :mod:`bci.cli.main` so the streaming-only commands start without torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bci.cli.defaults import Default
from bci.cli import types as cli_types


def _decode_default(name: str) -> Default:
    """The default of a decoding flag: the field ``name`` of :class:`bci.runtime.assemble.DecodeOptions`."""
    return Default.of("bci.runtime.assemble:DecodeOptions", name)


def add_channel_map_options(p: argparse.ArgumentParser) -> None:
    """``--channel-map``, ``--stream-montage``, ``--max-interpolated``: shared by ``live``, ``replay --decode``
    and ``epochs`` (fields of :class:`bci.preprocessing.channel_map.ChannelMapOptions`)."""
    g = p.add_argument_group("channel mapping (stream -> model; see docs/runtime.md)")
    g.add_argument("--channel-map", type=Path, default=None, metavar="FILE",
                   help="map of stream channel names to the model's: TSV with header 'stream<TAB>model', or a JSON "
                        "object {\"stream name\": \"model name\"} [match by name only]")
    g.add_argument("--stream-montage", default=None, metavar="NAME",
                   help="mne standard montage of the stream's electrodes (e.g. GSN-HydroCel-128): channels not "
                        "matched by name are matched by position to the model's montage")
    g.add_argument("--max-interpolated", type=cli_types.non_negative_float,
                   default=Default.of("bci.preprocessing.channel_map:ChannelMapOptions", "max_interpolated"),
                   metavar="FRACTION",
                   help="largest fraction of the model's channels that may be interpolated (spherical splines) "
                        "when the stream lacks them [%(default)s]")


#: The :class:`~bci.preprocessing.channel_map.ChannelMapOptions` fields that :func:`add_channel_map_options` sets.
CHANNEL_MAP_FLAGS = ("channel_map", "stream_montage", "max_interpolated")


def add_decode_options(p: argparse.ArgumentParser, *, model_required: bool) -> None:
    """Flags shared by ``live`` and ``replay --decode``."""
    p.add_argument("--model", type=Path, required=model_required, metavar="DIR",
                   help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--events", type=Path, default=None, metavar="FILE", help="write one JSON line per result here")
    p.add_argument("--overwrite", action="store_true", help="replace --events / --record if they exist")
    p.add_argument("--marker-filter", default=None, metavar="REGEX",
                   help="only markers matching this regular expression open windows [all]")
    p.add_argument("--offset", type=cli_types.finite_float, default=None,
                   help="seconds from marker to window start [the model's training windows' offset if its "
                        "checkpoint records one, else EEG 0.020, fMRI 4.0 (HRF delay)]")
    p.add_argument("--hop", type=cli_types.positive_float, default=None, metavar="S",
                   help="also decode sliding windows every S seconds (marker-less use)")
    p.add_argument("--device", default=_decode_default("device"),
                   help="torch device: auto (cuda if present), cpu, cuda, cuda:1 [%(default)s]")
    p.add_argument("--results-stream", default=_decode_default("results_stream"), metavar="NAME",
                   help="name of the LSL results outlet (type BCIResults); '' to disable [%(default)s]")
    g = p.add_argument_group("retrieval and generation")
    g.add_argument("--gallery", type=Path, default=None, metavar="DIR",
                   help="gallery directory (bci gallery build): each window gets its top-k items")
    g.add_argument("--topk", type=cli_types.non_negative_int, default=_decode_default("topk"), metavar="K",
                   help="items retrieved per window [%(default)s]")
    g.add_argument("--retrieval", default=_decode_default("retrieval"),
                   choices=("torch", "faiss-flat", "faiss-hnsw", "faiss-ivf"),
                   help="search backend: exact torch, or FAISS (extra 'faiss') for large galleries [%(default)s]")
    g.add_argument("--generator", type=Path, default=None, metavar="DIR",
                   help="saliency-GAN checkpoint (bci train saliency-gan): a pixel-level image per window")
    g.add_argument("--pixel-model", type=Path, default=None, metavar="DIR",
                   help="pixel-level encoder for --generator [the one named in the generator's checkpoint]")
    g.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="where generated images are written [./bci-images]; a pattern decoder's decoded patterns too "
                        "[else inside the records, as small data URIs]")
    g.add_argument("--diffusion", type=Path, default=None, metavar="DIR",
                   help="local diffusers folder (vae/, unet/, scheduler/, projector/) to refine the pixel-level "
                        "image with latent-diffusion img2img (extra 'diffusion'); never downloads")
    g.add_argument("--strength", type=cli_types.non_negative_float, default=_decode_default("strength"),
                   help="img2img noise strength in [0, 1] [%(default)s]")
    g.add_argument("--diffusion-steps", type=cli_types.non_negative_int, default=_decode_default("diffusion_steps"),
                   help="denoising steps [%(default)s]")
    g.add_argument("--seed", type=cli_types.non_negative_int, default=_decode_default("seed"), help="seed of the generators' noise [%(default)s]")
    add_channel_map_options(p)


def decode_options(args: argparse.Namespace):
    """The :class:`~bci.runtime.assemble.DecodeOptions` of the flags of :func:`add_decode_options`."""
    from bci.runtime.assemble import DecodeOptions

    names = ("model", "events", "overwrite", "marker_filter", "offset", "hop", "device", "results_stream", "gallery",
             "topk", "retrieval", "generator", "pixel_model", "images", "diffusion", "strength", "diffusion_steps",
             "seed", *CHANNEL_MAP_FLAGS)
    # a flag left at its Default takes the dataclass's default (the one owner of every default)
    return DecodeOptions(**{n: getattr(args, n) for n in names if not isinstance(getattr(args, n), Default)})


def cmd_live(args: argparse.Namespace) -> int:
    """``bci live``: flags -> :class:`~bci.runtime.live.LiveOptions` -> :func:`~bci.runtime.live.run_live`."""
    from bci.runtime.live import LiveOptions, run_live

    timeout = {} if isinstance(args.resolve_timeout, Default) else {"resolve_timeout": args.resolve_timeout}
    options = LiveOptions(args.eeg or args.fmri, args.markers, decode_options(args), duration=args.duration,
                          record=args.record, dejitter=not args.no_dejitter, **timeout)
    from bci.cli.view import live_view_loop

    run_live(options, loop=live_view_loop(args, options))  # the loop first: it says at once when it will run headless
    return 0


def add_live(sub: argparse._SubParsersAction, add_parser) -> None:
    """Register ``bci live``."""
    p = add_parser(
        sub,
        "live",
        "Decode a live EEG/fMRI LSL stream at its markers and publish the results.",
        "bci live --eeg SimEEG --markers SimEEG-Markers --model models/eeg --events events.jsonl --no-view\n"
        "  bci live --eeg SimEEG --markers SimEEG-Markers --model models/eeg --gallery galleries/sim   # with the viewer",
    )
    from bci.cli.view import add_live_view_options, add_source_options

    add_source_options(p)
    add_decode_options(p, model_required=True)
    p.add_argument("--duration", type=cli_types.positive_float, default=None, help="seconds to run [until Ctrl-C]")
    p.add_argument("--record", type=Path, default=None, metavar="DIR",
                   help="also record the data, markers and results streams into this Zarr session")
    add_live_view_options(p)
    p.add_argument("--resolve-timeout", type=cli_types.positive_float, default=Default.of("bci.runtime.live:LiveOptions", "resolve_timeout"),
                   help="seconds to find each stream [%(default)s]")
    p.add_argument("--no-dejitter", action="store_true",
                   help="keep LSL timestamps un-smoothed (for a stream faster than real time: bci simulate --speed)")
    p.set_defaults(func=cmd_live)


def cmd_replay_decode(args: argparse.Namespace) -> int:
    """``bci replay SESSION --decode``: flags -> :class:`~bci.runtime.replay.ReplayOptions` -> a library call."""
    from bci.runtime.replay import ReplayOptions, replay_decode

    if args.model is None:
        raise ValueError("--decode needs --model DIR (a checkpoint directory)")
    replay_decode(ReplayOptions(args.session, decode_options(args), data_stream=args.data_stream, speed=args.speed,
                                suffix=args.suffix, skip_damaged=args.skip_damaged))
    return 0


def cmd_model_init(args: argparse.Namespace) -> int:
    """``bci model init``: write an untrained, seeded checkpoint of a registered model."""
    import torch

    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config

    torch.manual_seed(args.seed)
    overrides = json.loads(args.params) if args.params else {}
    if not isinstance(overrides, dict):
        raise ValueError(f"--params {args.params!r} must be a JSON object, e.g. '{{\"embed_dim\": 256}}'")
    config = default_config(args.name, **overrides)
    config.extra = {**config.extra, "trained": False, "seed": args.seed}
    model = build_model(config)
    path = save_checkpoint(model, args.out, overwrite=args.overwrite)
    print(f"wrote UNTRAINED {args.name} ({sum(p.numel() for p in model.parameters())} parameters, "
          f"input {config.n_chans}x{config.n_times} at {config.sfreq:g} Hz) to {path}")
    return 0


def add_model(sub: argparse._SubParsersAction, add_parser) -> None:
    """Register ``bci model init``."""
    p = add_parser(
        sub,
        "model",
        "Create model checkpoints (training is 'bci train').",
        "bci model init eeg_convnet --out models/untrained",
    )
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    q = msub.add_parser("init", help="write an untrained, seeded checkpoint of a registered model",
                        epilog="example:\n  bci model init eeg_convnet --out models/untrained",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("name", help="registered model name (e.g. eeg_convnet, fmri_mlp)")
    q.add_argument("--out", type=Path, required=True, metavar="DIR")
    q.add_argument("--seed", type=cli_types.non_negative_int, default=0)
    q.add_argument("--params", default=None, help="JSON object of config overrides")
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_model_init)
