"""CLI commands that decode: ``bci live``, ``bci replay --decode`` and ``bci model init``.

Kept apart from :mod:`bci.cli.main` so the streaming-only commands start without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_decode_options(p: argparse.ArgumentParser, *, model_required: bool) -> None:
    """Flags shared by ``live`` and ``replay --decode``."""
    p.add_argument("--model", type=Path, required=model_required, metavar="DIR",
                   help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--events", type=Path, default=None, metavar="FILE", help="write one JSON line per result here")
    p.add_argument("--overwrite", action="store_true", help="replace --events / --record if they exist")
    p.add_argument("--marker-filter", default=None, metavar="REGEX",
                   help="only markers matching this regular expression open windows [all]")
    p.add_argument("--offset", type=float, default=None,
                   help="seconds from marker to window start [the model's training windows' offset if its "
                        "checkpoint records one, else EEG 0.020, fMRI 4.0 (HRF delay)]")
    p.add_argument("--hop", type=float, default=None, metavar="S",
                   help="also decode sliding windows every S seconds (marker-less use)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if present), cpu, cuda, cuda:1 [auto]")
    p.add_argument("--results-stream", default="BCIResults", metavar="NAME",
                   help="name of the LSL results outlet (type BCIResults); '' to disable [BCIResults]")
    g = p.add_argument_group("retrieval and generation")
    g.add_argument("--gallery", type=Path, default=None, metavar="DIR",
                   help="gallery directory (bci gallery build): each window gets its top-k items")
    g.add_argument("--topk", type=int, default=5, metavar="K", help="items retrieved per window [5]")
    g.add_argument("--retrieval", default="torch", choices=("torch", "faiss-flat", "faiss-hnsw", "faiss-ivf"),
                   help="search backend: exact torch, or FAISS (extra 'faiss') for large galleries [torch]")
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
    g.add_argument("--strength", type=float, default=0.6, help="img2img noise strength in [0, 1] [0.6]")
    g.add_argument("--diffusion-steps", type=int, default=20, help="denoising steps [20]")
    g.add_argument("--seed", type=int, default=0, help="seed of the generators' noise [0]")


def _result_steps(args: argparse.Namespace, encoder, sinks) -> list:
    """Retrieval / generation steps asked for on the command line (checked at start)."""
    from bci.runtime.assemble import build_result_steps

    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    if not 0.0 <= args.strength <= 1.0:
        raise ValueError(f"--strength must be in [0, 1], got {args.strength}")
    return build_result_steps(
        encoder, sinks, gallery=args.gallery, topk=args.topk, retrieval_backend=args.retrieval,
        generator=args.generator, pixel_model=args.pixel_model, images_dir=args.images, diffusion=args.diffusion,
        strength=args.strength, diffusion_steps=args.diffusion_steps, seed=args.seed, device=args.device,
        say=lambda text: print(text, file=sys.stderr),
    )


def _summary(pipeline) -> str:
    return pipeline.stats.summary()


def cmd_live(args: argparse.Namespace) -> int:
    """``bci live``: decode a live LSL stream."""
    data_stream = args.eeg or args.fmri
    if args.markers is None and args.hop is None:
        raise ValueError("without --markers there are no events to decode; pass --markers NAME or --hop S "
                         "for sliding windows")
    options = _live_viewer_options(args)  # first: says at once when it will run headless
    from bci.runtime.assemble import load_encoder, make_sinks, pipeline_factory
    from bci.runtime.live import LiveRuntime

    encoder = load_encoder(args.model, device=args.device)
    sinks = make_sinks(events=args.events, results_stream=args.results_stream or None, overwrite=args.overwrite)
    steps = _result_steps(args, encoder, sinks)
    runtime = LiveRuntime(data_stream, args.markers,
                          pipeline_factory(encoder, sinks, marker_filter=args.marker_filter, offset=args.offset,
                                           hop=args.hop, steps=steps),
                          resolve_timeout=args.resolve_timeout)
    recorder = _start_recorder(args, data_stream) if args.record else None  # first: it must see every result
    runtime.start()
    print(f"decoding {runtime.data_receiver.desc.name!r}"
          + (f" at markers of {runtime.marker_receiver.desc.name!r}" if runtime.marker_receiver else "")
          + f" with {encoder.config.name} on {encoder.device}"
          + (f", recording to {args.record}" if recorder else "")
          + (", with the viewer" if options is not None else "")
          + (f" for {args.duration:g} s" if args.duration else
             f" until the screenshot ({args.after:g} s)" if options is not None and args.screenshot else
             "; Ctrl-C stops"), flush=True)
    try:
        on_tick = recorder.drain if recorder else None
        if options is not None:
            from bci.viewer.app import run_live_viewer

            run_live_viewer(runtime, duration=args.duration, on_tick=on_tick, tick=0.1, options=options)
        else:
            runtime.run(args.duration, on_tick=on_tick, tick=0.1)
    finally:
        if recorder is not None:
            time.sleep(0.3)  # let the last results reach the recorder's inlet
            recorder.stop()
    print(_summary(runtime.pipeline))
    if options is not None and args.screenshot is not None:
        print(f"saved screenshot {args.screenshot}")
    if recorder is not None:
        print(f"recorded {', '.join(s.name for s in recorder.status())} to {args.record}")
    return 0


def _live_viewer_options(args: argparse.Namespace):
    """The viewer's options for ``bci live``, or None to run headless (``--no-view`` or no display)."""
    if args.no_view:
        if args.screenshot is not None:
            raise ValueError("--screenshot renders the viewer; do not combine it with --no-view")
        return None
    from bci.viewer.display import display_available

    ok, reason = display_available()
    if not ok and args.screenshot is None:
        print(f"viewer: {reason}; running headless (pass --no-view to skip the viewer)", file=sys.stderr, flush=True)
        return None
    from bci.cli.view import viewer_options

    return viewer_options(args)


def _start_recorder(args: argparse.Namespace, data_stream: str):
    """Record the data, marker and results streams into one Zarr session (``--record``)."""
    from streams.recorder import Recorder

    if not args.results_stream:
        raise ValueError("--record stores the results from the LSL results outlet; do not disable --results-stream")
    streams = [data_stream] + ([args.markers] if args.markers else [])
    streams.append(f"name={args.results_stream},type=BCIResults")
    return Recorder(streams, args.record, overwrite=args.overwrite, resolve_timeout=args.resolve_timeout).start()


def add_live(sub: argparse._SubParsersAction, add_parser) -> None:
    """Register ``bci live``."""
    p = add_parser(
        sub,
        "live",
        "Decode a live EEG/fMRI LSL stream at its markers and publish the results.",
        "bci live --eeg SimEEG --markers SimEEG-Markers --model models/eeg --events events.jsonl --no-view\n"
        "  bci live --eeg SimEEG --markers SimEEG-Markers --model models/eeg --gallery galleries/sim   # with the viewer",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--eeg", metavar="NAME", help="EEG stream (name or type=EEG)")
    src.add_argument("--fmri", metavar="NAME", help="fMRI stream (name or type=fMRI)")
    p.add_argument("--markers", metavar="NAME", default=None, help="marker stream (name or type=Markers)")
    add_decode_options(p, model_required=True)
    p.add_argument("--duration", type=float, default=None, help="seconds to run [until Ctrl-C]")
    p.add_argument("--record", type=Path, default=None, metavar="DIR",
                   help="also record the data, markers and results streams into this Zarr session")
    p.add_argument("--no-view", action="store_true", help="run without the viewer")
    from bci.cli.view import add_viewer_options

    add_viewer_options(p)
    p.add_argument("--resolve-timeout", type=float, default=5.0, help="seconds to find each stream [5]")
    p.set_defaults(func=cmd_live)


def cmd_replay_decode(args: argparse.Namespace) -> int:
    """``bci replay SESSION --decode``: decode a recording, as fast as possible or over LSL."""
    from bci.runtime.assemble import load_encoder, make_sinks, pipeline_factory
    from bci.runtime.live import LiveRuntime, decode_session
    from streams.session import SessionReader

    if args.model is None:
        raise ValueError("--decode needs --model DIR (a checkpoint directory)")
    reader = SessionReader(args.session)
    data_key = reader.find(args.data_stream) if args.data_stream else _data_key(reader)
    marker_keys = reader.marker_keys()
    marker_key = marker_keys[0] if marker_keys else None
    encoder = load_encoder(args.model, device=args.device)
    sinks = make_sinks(events=args.events, results_stream=args.results_stream or None, overwrite=args.overwrite)
    steps = _result_steps(args, encoder, sinks)
    make = pipeline_factory(encoder, sinks, marker_filter=args.marker_filter, offset=args.offset, hop=args.hop,
                            steps=steps)
    if args.speed == float("inf"):
        pipeline = make(reader.description(data_key))
        decode_session(reader, pipeline, data_key=data_key, marker_key=marker_key)
        pipeline.close()
        print(f"decoded {args.session} at --speed max (no LSL)")
        print(_summary(pipeline))
        return 0
    import threading

    from streams.replay import SessionReplayer

    keys = [data_key] + ([marker_key] if marker_key else [])
    replayer = SessionReplayer(reader, speed=args.speed, streams=keys, name_suffix=args.suffix or "-replay")
    replayer.open()
    names = [d.name for d in replayer.descs]
    runtime = LiveRuntime(f"name={names[0]}", f"name={names[1]}" if len(names) > 1 else None, make,
                          dejitter=args.speed == 1.0)
    runtime.start()
    thread = threading.Thread(target=replayer.play, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
        runtime.run(0.5)  # let the last windows complete
    except KeyboardInterrupt:
        replayer.stop()
        runtime.stop()
    finally:
        replayer.close()
    print(_summary(runtime.pipeline))
    return 0


def _data_key(reader) -> str:
    for key in reader.streams:
        d = reader.description(key)
        if d.is_regular and d.type.lower() in ("eeg", "fmri"):
            return key
    raise ValueError(f"session {reader.path} has no regular EEG/fMRI stream; pass --data-stream NAME")


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
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--params", default=None, help="JSON object of config overrides")
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_model_init)
