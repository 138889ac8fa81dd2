"""``bci demo``: the whole system on the built-in synthetic world, from nothing to live decoding.

Steps (everything lives under one work folder, ``./bci-demo`` by default; finished steps
are reused on the next run unless ``force``):

1. **dataset** – simulate a recording session of synthetic subject ``seed`` (session 0)
   and cut it into an epoch dataset with block-wise and zero-shot splits;
2. **clip** – train the project's tiny CLIP on the synthetic image–caption pairs;
3. **sample** – train the sample-level EEG encoder (EEG → CLIP text space of the class
   captions) on the training blocks;
4. **gallery** – embed the 200 stimulus images with the tiny CLIP;
5. **evaluate** – score the encoder on the held-out test blocks: model vs ridge vs
   oracle vs chance, with plots;
6. **live** – a simulated amplifier streams a *new* session of the same subject
   (``bci simulate --session 1``) over LSL from another process; :func:`bci.runtime.live.run_live`
   (what ``bci live`` runs) decodes it (retrieval against the gallery), records data +
   markers + results to Zarr and writes the events file; the viewer (its own process)
   shows it when a display is available;
7. **replay** – :func:`bci.runtime.replay.replay_decode` at ``--speed max`` (what
   ``bci replay --decode`` runs) of that recording gives the same windows and embeddings
   as the live run.

All numbers it prints come from the synthetic world and say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Size of the demo's recording session (session 0): 40 classes x 24 trials in 6 rounds of blocks
#: (240 blocks of 4 trials, each block one class).
DEMO_TRIALS_PER_CLASS = 24
DEMO_BLOCKS = 6
#: Its block split, in blocks: 84 train and 12 validation blocks (the sizes the demo trained on when
#: it had 120 blocks), and every other block (144, 576 windows, all 40 classes) in the test part, so
#: the test top-1's 95 % interval is about +-5 points or less (with 24 test blocks it was +-10).
DEMO_VAL_FRACTION = 0.05
DEMO_TEST_FRACTION = 0.6


def _say(text: str) -> None:
    print(text, flush=True)


def _step(i: int, n: int, text: str) -> float:
    _say(f"[{i}/{n}] {text}")
    return time.perf_counter()


def _done(t0: float, what: str = "done") -> None:
    _say(f"      {what} ({time.perf_counter() - t0:.1f} s)")


def run_full_demo(workdir: str | os.PathLike = "bci-demo", *, live_seconds: float = 60.0, seed: int = 0,
                  view: bool | None = None, force: bool = False, clip_steps: int | None = None,
                  epochs: int = 30) -> dict[str, Any]:
    """Run the demo; returns the report it also writes to ``workdir/report.json``.

    Parameters
    ----------
    workdir : path
        Everything the demo makes goes here (reused on the next run).
    live_seconds : float
        Seconds of live streaming and decoding.
    seed : int
        The simulated subject.
    view : bool or None
        Show the viewer during the live step; None: when a display is available.
    force : bool
        Redo every step instead of reusing finished ones.
    clip_steps : int or None
        Training steps of the tiny CLIP (None: its default).
    epochs : int
        Maximum training epochs of the EEG encoder (early stopping applies).
    """
    if not live_seconds >= 10:
        raise ValueError(f"live_seconds={live_seconds!r}: the live step needs at least 10 s of data")
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _say(f"bci demo: everything below runs on the built-in SYNTHETIC world (simulated subject {seed}); "
         f"outputs in {work}/")
    n = 7
    dataset = _dataset_step(work, seed, force, _step(1, n, "synthetic world -> epoch dataset (session 0)"))
    clip_dir = _clip_step(work, force, clip_steps, _step(2, n, "tiny CLIP on the synthetic image-caption pairs"))
    sample = _sample_step(work, dataset, clip_dir, force, epochs,
                          _step(3, n, "sample-level EEG encoder (EEG -> CLIP space of the captions)"))
    gallery = _gallery_step(work, clip_dir, seed, force, _step(4, n, "gallery of the 200 stimulus images"))
    evaluation = _evaluate_step(work, dataset, sample, clip_dir,
                                _step(5, n, "evaluate on the held-out test blocks (model vs ridge vs oracle)"))
    live = _live_step(work, sample, gallery, seed, live_seconds, view,
                      _step(6, n, f"live: simulated amplifier (another process) -> bci live, {live_seconds:g} s"))
    replay = _replay_step(work, sample, gallery, live,
                          _step(7, n, "replay the recording with --decode --speed max"))
    report = {"synthetic_world": True, "seed": seed, "workdir": str(work), "dataset": str(dataset),
              "clip": str(clip_dir), "model": str(sample), "gallery": str(gallery), "evaluation": evaluation,
              "live": live, "replay": replay, "seconds": time.perf_counter() - started}
    (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    _print_report(report)
    return report


# ----------------------------------------------------------------------------- steps
def _dataset_step(work: Path, seed: int, force: bool, t0: float) -> Path:
    from offline.data.epochs import EpochDataset
    from offline.data.build import SimulationOptions, epochs_from_simulation

    path = work / "dataset.zarr"
    if path.exists() and not force:
        try:
            ds = EpochDataset.open(path)
            if _is_demo_dataset(ds):
                _say(f"      reusing {path} ({len(ds.labels)} epochs)")
                return path
            _say(f"      {path} was made by an older demo (other size or split); rebuilding it")
        except (ValueError, OSError, KeyError):
            _say(f"      {path} is incomplete; rebuilding it")
    simulation = SimulationOptions(n_per_class=DEMO_TRIALS_PER_CLASS, n_blocks=DEMO_BLOCKS, seed=seed, session=0)
    report = epochs_from_simulation(path, simulation, splits=("zero_shot",), overwrite=True)
    parts = _add_demo_split(path, seed)
    _say(f"      {report.n_epochs} epochs of 128 x 440 (40 classes, {DEMO_TRIALS_PER_CLASS} trials each, "
         f"block design) -> {path}; block split: {', '.join(f'{k} {len(v)}' for k, v in parts.items())} windows")
    _done(t0)
    return path


def _is_demo_dataset(ds: Any) -> bool:
    """The dataset has the demo's current size and block split (not one an older demo version wrote)."""
    meta = ds.split_info("block").meta
    return (len(ds.labels) == 40 * DEMO_TRIALS_PER_CLASS and meta.get("test") == DEMO_TEST_FRACTION
            and meta.get("val") == DEMO_VAL_FRACTION)


def _add_demo_split(path: Path, seed: int) -> dict[str, np.ndarray]:
    """Store the demo's ``block`` split (whole blocks, stratified by class; see :data:`DEMO_TEST_FRACTION`)."""
    from offline.data.epochs import EpochDataset
    from offline.data.splits import block_split

    ds = EpochDataset.open(path, cache_bytes=0)
    parts = block_split(ds, val=DEMO_VAL_FRACTION, test=DEMO_TEST_FRACTION, seed=seed)
    ds.add_split("block", parts, kind="block",
                 meta={"builder": "offline.data.splits.block_split", "seed": seed, "val": DEMO_VAL_FRACTION,
                       "test": DEMO_TEST_FRACTION})
    return parts


def _clip_step(work: Path, force: bool, steps: int | None, t0: float) -> Path:
    from offline.training.tasks.clip import train_tiny_clip

    out = work / "clip"
    kwargs: dict[str, Any] = {"force": force, "progress": sys.stderr.isatty()}
    if steps is not None:
        kwargs["steps"] = steps
    m = train_tiny_clip(out, **kwargs)
    _say(f"      {'reused' if m.get('reused') else 'trained'}: zero-shot on {m['n_eval_images']} held-out synthetic "
         f"images: top-1 {m['zero_shot_top1']:.1%} (chance {m['chance_top1']:.1%}), "
         f"top-5 {m['zero_shot_top5']:.1%} (chance {m['chance_top5']:.1%})")
    _done(t0)
    return out


def _sample_step(work: Path, dataset: Path, clip_dir: Path, force: bool, epochs: int, t0: float) -> Path:
    from offline.training.tasks.sample import SampleOptions, train_sample
    from offline.training.loop import TrainSettings

    out = work / "sample"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and not force:
        if _trained_on(out, dataset):
            _say(f"      reusing {out}")
            return out
        _say(f"      {out} was trained on another dataset or split; retraining it")
    # MSE + InfoNCE: the loss the demo's figures in docs/results.md were measured with
    result = train_sample(dataset, out, split="block", clip_weights=clip_dir,
                          options=SampleOptions(loss="mse+infonce"), settings=TrainSettings(epochs=epochs, seed=0, progress=sys.stderr.isatty()),
                          overwrite=True)
    _say(f"      best validation 40-way top-1 {result.best_metric:.1%} (chance 2.5%) at epoch {result.best_epoch + 1} "
         f"of {result.epochs_run} ({result.stopped})")
    _done(t0)
    return out


def _trained_on(checkpoint: Path, dataset: Path) -> bool:
    """The checkpoint records the current dataset and block split (reusing it cannot score training windows)."""
    from bci.safe_io import read_json_object
    from offline.data.epochs import EpochDataset
    from offline.data.splits import prepare_split

    recorded = (read_json_object(checkpoint / "config.json").get("extra") or {}).get("split") or {}
    info = prepare_split(EpochDataset.open(dataset), "block")
    return recorded.get("dataset_fingerprint") == info.dataset_fingerprint and recorded.get("hash") == info.checkpoint_hash


def _gallery_step(work: Path, clip_dir: Path, seed: int, force: bool, t0: float) -> Path:
    from bci.clip import load_clip
    from bci.retrieval.gallery import Gallery, build_gallery, gallery_from_stimuli
    from streams.synthetic.stimuli import make_stimuli

    out = work / "gallery"
    if (out / "gallery.json").is_file() and not force:
        _say(f"      reusing {out}")
        return out
    embedder = load_clip("tiny", weights=clip_dir)
    images, ids, labels, captions = gallery_from_stimuli(make_stimuli(seed=seed))
    gallery: Gallery = build_gallery(images, ids, labels, captions, embedder=embedder, progress=False,
                                     name="synthetic-stimuli")
    gallery.save(out, overwrite=True)
    _say(f"      {len(gallery)} images, {gallery.embed_dim}-d CLIP image embeddings -> {out}")
    _done(t0)
    return out


def _evaluate_step(work: Path, dataset: Path, sample: Path, clip_dir: Path, t0: float) -> dict[str, Any]:
    from offline.evaluation.evaluate import evaluate

    out = work / "evaluation"
    report = evaluate(sample, dataset, split="block", part="test", clip_weights=clip_dir, out_dir=out)
    for line in _score_lines(report):
        _say("      " + line)
    _say(f"      report and plots in {out}/")
    _done(t0)
    return {"dir": str(out), "summary": _score_lines(report)}


def _score_lines(report: dict[str, Any]) -> list[str]:
    """The evaluation's table (model, ridge, oracle, chance side by side) as lines."""
    from offline.evaluation.evaluate import format_report

    return [line for line in format_report(report).splitlines() if not line.startswith("plots:")]


def _live_step(work: Path, sample: Path, gallery: Path, seed: int, seconds: float, view: bool | None,
               t0: float) -> dict[str, Any]:
    from bci.runtime.live import run_live

    tag = f"{os.getpid() % 1000}{int(time.time() * 1000) % 100000}"
    name = f"DemoEEG-{tag}"
    recording, events = work / "live.zarr", work / "live-events.jsonl"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "bci.cli", "simulate", "--name", name, "--seed", str(seed), "--session", "1",
         "--duration", f"{seconds + 3:g}", "--wait-for-consumers", "60", "--start-delay", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    _say(f"      simulated amplifier: pid {simulator.pid}, streams {name!r} + {name + '-Markers'!r} "
         f"(subject {seed}, NEW session 1: data the model never saw)")
    options = _live_options(name, tag, sample, gallery, events, recording, seconds)
    try:
        run_live(options, loop=_view_loop(gallery, options.decode.results_stream) if view is not False else None)
    finally:
        try:
            simulator.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            simulator.kill()
    windows = [r for r in _read_events(events) if r.get("type") == "window"]
    _done(t0)
    return {"recording": str(recording), "events": str(events), **_hit_rates(windows, recording)}


def _live_options(name: str, tag: str, sample: Path, gallery: Path, events: Path, recording: Path, seconds: float):
    """What ``bci live --eeg NAME --markers NAME-Markers --model SAMPLE --gallery GALLERY --marker-filter ^stim/
    --events EVENTS --record RECORDING --duration S --results-stream BCIResults-TAG --overwrite --resolve-timeout 30``
    runs."""
    from bci.runtime.assemble import DecodeOptions
    from bci.runtime.live import LiveOptions

    decode = DecodeOptions(sample, gallery=gallery, marker_filter="^stim/", events=events,
                           results_stream=f"BCIResults-{tag}", overwrite=True)
    return LiveOptions(name, f"{name}-Markers", decode, duration=seconds, record=recording, resolve_timeout=30.0)


def _replay_options(recording: str | os.PathLike, sample: Path, gallery: Path, events: Path):
    """What ``bci replay RECORDING --decode --model SAMPLE --gallery GALLERY --marker-filter ^stim/ --speed max
    --events EVENTS --results-stream '' --overwrite`` runs."""
    from bci.runtime.assemble import DecodeOptions
    from bci.runtime.replay import ReplayOptions

    decode = DecodeOptions(sample, gallery=gallery, marker_filter="^stim/", events=events, results_stream="",
                           overwrite=True)
    return ReplayOptions(recording, decode, speed=float("inf"))


def _view_loop(gallery: Path, results_stream: str):
    """The viewer (with the gallery's thumbnails) in its own process, as ``bci live`` runs it; None without a display."""
    from bci.viewer.live_loop import show_viewer

    if not show_viewer():
        return None
    from bci.viewer.app import ViewerOptions
    from bci.viewer.process import ViewerProcessOptions, viewer_process_loop

    return viewer_process_loop(ViewerProcessOptions(results_stream, ViewerOptions(), gallery=gallery))


def _replay_step(work: Path, sample: Path, gallery: Path, live: dict[str, Any], t0: float) -> dict[str, Any]:
    from bci.runtime.replay import replay_decode

    events = work / "replay-events.jsonl"
    replay_decode(_replay_options(live["recording"], sample, gallery, events))
    live_windows = [r for r in _read_events(Path(live["events"])) if r.get("type") == "window"]
    replay_windows = [r for r in _read_events(events) if r.get("type") == "window"]
    same = _same_windows(live_windows, replay_windows)
    _say(f"      {len(replay_windows)} windows; every live window found with the same samples and embedding: {same}")
    _done(t0)
    return {"events": str(events), "windows": len(replay_windows), "same_as_live": same}


# ----------------------------------------------------------------------------- numbers
def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _window_blocks(recording: Path, windows: list[dict[str, Any]]) -> np.ndarray | None:
    """The block of each window, from the ``block_start/<n>`` markers the live run recorded (None without)."""
    from offline.data.build import _blocks_from_markers
    from streams.session import SessionReader

    if not windows or not Path(recording).exists():
        return None
    times, values = SessionReader(recording).markers()
    return _blocks_from_markers(times, values, np.array([w["marker_time"] for w in windows], dtype=np.float64))


def _hit_rates(windows: list[dict[str, Any]], recording: Path | None = None) -> dict[str, Any]:
    """Class-level top-1/top-5 of the retrieved images with 95 % bootstrap intervals, and latency percentiles.

    The intervals resample whole blocks of the live session (from its recorded block markers;
    single windows when it has none).
    """
    from offline.scoring.metrics import Bootstrap

    scored = [w for w in windows if w.get("topk") and w.get("true_label")]
    top1 = np.array([w["topk"][0]["label"] == w["true_label"] for w in scored], dtype=np.float64)
    top5 = np.array([any(t["label"] == w["true_label"] for t in w["topk"][:5]) for w in scored], dtype=np.float64)
    exact = [w.get("true_rank") == 1 for w in scored]
    lat = np.array([w["latency_ms"] for w in windows if w.get("latency_ms") is not None], dtype=float)
    blocks = _window_blocks(recording, scored) if recording is not None else None
    boot = Bootstrap(blocks, unit="block") if blocks is not None else Bootstrap(None, unit="window")
    out: dict[str, Any] = {
        "windows": len(windows),
        "scored": len(scored),
        "class_top1": float(np.mean(top1)) if scored else float("nan"),
        "class_top5": float(np.mean(top5)) if scored else float("nan"),
        # 200 gallery images, 5 per class: a random ranking puts a same-class image first with p = 5/200
        "class_top1_chance": 5 / 200,
        "class_top5_chance": 1 - float(np.prod([(195 - i) / (200 - i) for i in range(5)])),
        "image_top1": float(np.mean(exact)) if scored else float("nan"),
        "image_top1_chance": 1 / 200,
        "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }
    if scored:
        for key, hits in (("class_top1", top1), ("class_top5", top5)):
            ci = boot.interval(hits)
            out[f"{key}_ci95_low"], out[f"{key}_ci95_high"] = ci.low, ci.high
        out["intervals"] = {"level": 0.95, "unit": ci.unit, "n_units": ci.n_units, "n_boot": ci.n_boot,
                            "seed": ci.seed}
    return out


def _same_windows(live: list[dict[str, Any]], replay: list[dict[str, Any]]) -> bool:
    """The replay holds exactly the live windows: same markers, start samples and times, embeddings.

    ``bci live --record`` records what the decoder consumed (one acquisition per stream), so
    the replay sees the same samples with the same times; embeddings agree to float32
    rounding (live encodes windows as they complete, replay in batches).
    """
    key = lambda r: (r["marker"], r["window_start_index"])  # noqa: E731
    by_start = {key(r): r for r in replay}
    if not live or len(by_start) != len(replay) or {key(r) for r in live} != set(by_start):
        return False
    for r in live:
        other = by_start[key(r)]
        if other["window_start_time"] != r["window_start_time"]:
            return False
        if not np.allclose(r["embedding"], other["embedding"], rtol=0, atol=1e-5):
            return False
    return True


def _pct(live: dict[str, Any], key: str) -> str:
    """``34.6 % [22.1, 47.0]`` (the interval when the live summary has one)."""
    low, high = live.get(f"{key}_ci95_low"), live.get(f"{key}_ci95_high")
    text = f"{live[key]:.1%}"
    return text if low is None or high is None else f"{text} [{100 * low:.1f}, {100 * high:.1f}]"


def _print_report(report: dict[str, Any]) -> None:
    live, replay = report["live"], report["replay"]
    _say("")
    _say("report (SYNTHETIC world; live data = a new session the model never saw)")
    _say(f"  windows decoded live: {live['windows']}; replay --speed max gave the same windows and embeddings: "
         f"{replay['same_as_live']}")
    _say(f"  retrieval, class of the top image: top-1 {_pct(live, 'class_top1')} "
         f"(chance {live['class_top1_chance']:.1%}), top-5 {_pct(live, 'class_top5')} "
         f"(chance {live['class_top5_chance']:.1%}); exact image top-1 "
         f"{live['image_top1']:.1%} (chance {live['image_top1_chance']:.1%}; the encoder learns class captions, "
         "not single images)")
    iv = live.get("intervals")
    if iv:
        few = (f"; only {iv['n_units']} blocks of one class each: the live number depends on the classes shown, "
               "the offline table below is the measurement" if iv["unit"] == "block" and iv["n_units"] < 10 else "")
        _say(f"  [low, high]: {iv['level']:.0%} bootstrap interval over the {iv['n_units']} {iv['unit']}s of the "
             f"live session ({iv['n_boot']} resamples, seed {iv['seed']}){few}")
    _say(f"  latency (last sample in -> result out): p50 {live['latency_p50_ms']:.2f} ms, "
         f"p99 {live['latency_p99_ms']:.2f} ms")
    _say("  offline, held-out test blocks of session 0:")
    for line in report["evaluation"]["summary"]:
        _say(f"    {line}")
    _say(f"  recording: {live['recording']}   events: {live['events']}")
    _say(f"  evaluation plots: {report['evaluation']['dir']}   report: {report['workdir']}/report.json")
    _say(f"  reuse: bci live --eeg NAME --markers NAME-Markers --model {report['model']} --gallery {report['gallery']}")
    _say(f"done in {report['seconds']:.0f} s")
