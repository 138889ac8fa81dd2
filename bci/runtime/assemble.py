"""Assemble a decoding run from options: model, preprocessing, window, sinks, result steps.

:class:`DecodeOptions` holds everything ``bci live`` and ``bci replay --decode`` share
(checked when made); :func:`assemble` turns it into a :class:`Decoder` (the encoder, the
sinks and the pipeline factory). The CLI, the demo and the tests all build their
pipelines here, so each builds the identical pipeline from the same checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bci.runtime.inference import Encoder
from bci.models.checkpoint import load_checkpoint
from bci.runtime.sinks import EventsFileSink, ListSink, ResultsOutletSink, Sink
from bci.runtime.pipeline import Pipeline
from bci.preprocessing import PreprocessConfig
from bci.preprocessing.channel_map import DEFAULT_MAX_INTERPOLATED, ChannelMap, ChannelMapOptions
from bci.runtime.windowing import WindowSpec
from streams._checks import check_float, check_int, check_type, check_value, ensure_path
from streams.description import StreamDescription


def load_encoder(model_dir: str | os.PathLike, *, device: str = "auto") -> Encoder:
    """Load a checkpoint directory and put the model on ``device`` (warmed up)."""
    model = load_checkpoint(model_dir)
    return Encoder(model, device=device)


def preprocess_of(encoder: Encoder) -> PreprocessConfig | None:
    """The preprocessing the model was trained with (stored in its checkpoint)."""
    cfg = encoder.config.preprocessing
    return PreprocessConfig.from_dict(cfg) if cfg else None


#: Seconds from marker to window start by stream type: EEG-ImageNet's 20 ms for EEG, the
#: haemodynamic delay (peak of the canonical HRF is ~5 s; 4 s starts the averaged TRs) for fMRI.
DEFAULT_OFFSETS = {"eeg": 0.020, "fmri": 4.0}


_log = logging.getLogger(__name__)


def default_offset(stream_type: str) -> float:
    """Default window offset for a stream type (EEG 0.020 s, fMRI 4.0 s)."""
    return DEFAULT_OFFSETS.get(stream_type.lower(), 0.020)


def trained_offset(encoder: Encoder) -> float | None:
    """Window offset (s) of the epochs the model was trained on, from its checkpoint; None if not recorded.

    ``bci train`` records the dataset's window (``extra.data.window``, written by ``bci epochs``),
    so the live windows start where the training windows did (offline = online).
    """
    extra: Any = encoder.config.extra or {}
    window = (extra.get("data") or {}).get("window") if isinstance(extra, dict) else None
    value = window.get("offset") if isinstance(window, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def resolve_offset(encoder: Encoder, stream_type: str, offset: float | None) -> float:
    """The window offset to decode with: ``offset`` if given, else the trained one, else the type's default.

    A given ``offset`` that differs from the trained one by more than 1 ms is used, with a warning.
    """
    trained = trained_offset(encoder)
    if offset is None:
        return default_offset(stream_type) if trained is None else trained
    if trained is not None and abs(float(offset) - trained) > 1e-3:
        _log.warning("--offset %.3f s differs from the %.3f s the model was trained with; its windows will not "
                     "match the training windows", float(offset), trained)
    return float(offset)


def make_sinks(
    *,
    events: str | os.PathLike | None = None,
    results_stream: str | None = None,
    overwrite: bool = False,
    keep: bool = False,
) -> list[Sink]:
    """Events file, results outlet and/or an in-memory list, as asked."""
    sinks: list[Sink] = []
    if events is not None:
        sinks.append(EventsFileSink(Path(events), overwrite=overwrite))
    if results_stream:
        sinks.append(ResultsOutletSink(results_stream))
    if keep:
        sinks.append(ListSink())
    return sinks


def pipeline_factory(
    encoder: Encoder,
    sinks: list[Sink],
    *,
    marker_filter: str | None = None,
    offset: float | None = None,
    hop: float | None = None,
    buffer_seconds: float = 30.0,
    steps: list | None = None,
    channels: ChannelMapOptions | None = None,
    say: Callable[[str], None] | None = None,
) -> Callable[[StreamDescription], Pipeline]:
    """A function that builds the pipeline once the data stream's description is known.

    ``offset`` defaults to the offset of the model's training windows (recorded in its
    checkpoint), else :func:`default_offset` for the stream's type (20 ms for EEG, an HRF
    delay for fMRI); ``hop`` adds sliding windows every ``hop`` seconds. ``channels`` says how
    the stream's channels map to the model's (:func:`stream_channel_map`); a map that is not the
    identity is said once via ``say``, and every map goes into the events file's header line.
    """

    def make(desc: StreamDescription) -> Pipeline:
        channel_map = stream_channel_map(encoder, desc, channels)
        if channel_map is not None and not channel_map.is_identity and say is not None:
            say(channel_map.describe())
        pipeline = Pipeline(
            encoder,
            sfreq=desc.nominal_rate,
            ch_names=list(desc.channel_names),
            preprocess=preprocess_of(encoder),
            window=WindowSpec(n_times=encoder.config.n_times, offset=resolve_offset(encoder, desc.type, offset)),
            marker_filter=marker_filter,
            hop=hop,
            sinks=sinks,
            buffer_seconds=buffer_seconds,
            stream_name=desc.name,
            steps=steps or (),
            channel_map=channel_map,
        )
        header = {"stream": desc.name, "channel_map": None if channel_map is None else channel_map.to_dict()}
        for sink in sinks:
            if isinstance(sink, EventsFileSink):
                sink.write_header(header)
        return pipeline

    return make


def stream_channel_map(encoder: Encoder, desc: StreamDescription,
                       channels: ChannelMapOptions | None = None) -> ChannelMap | None:
    """The map from the stream's channels to the model's (:meth:`ChannelMapOptions.for_model`)."""
    return (channels or ChannelMapOptions()).for_model(list(desc.channel_names), encoder.config)


def warn_stderr(text: str) -> None:
    """Print ``text`` as one line on stderr (the default ``warn`` of the run functions)."""
    print(text, file=sys.stderr)


@dataclass
class DecodeOptions:
    """What a decoding run (live or replayed) is made of; checked when made.

    Parameters
    ----------
    model : path
        Checkpoint directory (``config.json`` + ``model.safetensors``).
    events : path, optional
        Write one JSON line per result here.
    overwrite : bool
        Replace ``events`` (and a live run's recording) if they exist.
    marker_filter : str, optional
        Only markers matching this regular expression open windows (None: all).
    offset : float, optional
        Seconds from marker to window start (None: the trained offset, else the type's default).
    hop : float, optional
        Also decode sliding windows every ``hop`` seconds.
    device : str
        Torch device: ``auto`` (cuda if present), ``cpu``, ``cuda``, ``cuda:1``.
    results_stream : str, optional
        Name of the LSL results outlet (type ``BCIResults``); None or ``""``: no outlet.
    gallery : path, optional
        Gallery directory: each window gets its ``topk`` items.
    topk : int
        Items retrieved per window (>= 1).
    retrieval : str
        Search backend, one of :data:`bci.retrieval.search.BACKENDS`.
    generator, pixel_model, images, diffusion : path, optional
        Saliency-GAN checkpoint, its pixel-level encoder, where images are written, and a
        local diffusers folder (see :func:`build_result_steps`).
    strength : float
        img2img noise strength in [0, 1].
    diffusion_steps : int
        Denoising steps (>= 1).
    seed : int
        Seed of the generators' noise.
    channel_map : path, optional
        Map of stream channel names to the model's: a TSV (``stream<TAB>model`` header) or a
        JSON object file (see :mod:`bci.preprocessing.channel_map`).
    stream_montage : str, optional
        mne standard montage of the stream's electrodes: channels not matched by name are
        matched by position to the model's montage.
    max_interpolated : float
        Largest fraction of the model's channels that may be interpolated, in [0, 1].
    """

    model: str | os.PathLike
    events: str | os.PathLike | None = None
    overwrite: bool = False
    marker_filter: str | None = None
    offset: float | None = None
    hop: float | None = None
    device: str = "auto"
    results_stream: str | None = "BCIResults"
    gallery: str | os.PathLike | None = None
    topk: int = 5
    retrieval: str = "torch"
    generator: str | os.PathLike | None = None
    pixel_model: str | os.PathLike | None = None
    images: str | os.PathLike | None = None
    diffusion: str | os.PathLike | None = None
    strength: float = 0.6
    diffusion_steps: int = 20
    seed: int = 0
    channel_map: str | os.PathLike | None = None
    stream_montage: str | None = None
    max_interpolated: float = DEFAULT_MAX_INTERPOLATED

    def __post_init__(self) -> None:
        channels = self.channels()  # checked there, the one owner of these checks
        self.channel_map, self.stream_montage = channels.channel_map, channels.stream_montage
        self.max_interpolated = channels.max_interpolated
        self.model = ensure_path("model", self.model)
        for name in ("events", "gallery", "generator", "pixel_model", "images", "diffusion"):
            if getattr(self, name) is not None:
                setattr(self, name, ensure_path(name, getattr(self, name)))
        check_type("overwrite", self.overwrite, bool)
        for name in ("marker_filter", "results_stream"):
            if getattr(self, name) is not None:
                check_type(name, getattr(self, name), str)
        check_type("device", self.device, str)
        if self.offset is not None:
            self.offset = check_float("offset", self.offset)
        if self.hop is not None:
            self.hop = check_float("hop", self.hop, positive=True)
        self.topk = check_int("topk", self.topk, low=1)
        from bci.retrieval.search import BACKENDS

        check_value("retrieval", self.retrieval, BACKENDS)
        self.strength = check_float("strength", self.strength, low=0.0, high=1.0)
        self.diffusion_steps = check_int("diffusion_steps", self.diffusion_steps, low=1)
        self.seed = check_int("seed", self.seed)


    def channels(self) -> ChannelMapOptions:
        """The channel-mapping part of the options."""
        return ChannelMapOptions(self.channel_map, self.stream_montage, self.max_interpolated)


@dataclass
class Decoder:
    """An assembled decoding run: the encoder, its sinks and the factory of its pipeline."""

    encoder: Encoder
    sinks: list[Sink]
    make_pipeline: Callable[[StreamDescription], Pipeline]


def assemble(options: DecodeOptions, *, warn: Callable[[str], None] = warn_stderr) -> Decoder:
    """Load the model, open the sinks and build the result steps of ``options`` (all checked at start).

    Parameters
    ----------
    options : DecodeOptions
        The run.
    warn : callable
        Says what is skipped (e.g. a missing ``diffusion`` extra); default: a line on stderr.
    """
    check_type("options", options, DecodeOptions)
    encoder = load_encoder(options.model, device=options.device)
    sinks = make_sinks(events=options.events, results_stream=options.results_stream or None,
                       overwrite=options.overwrite)
    steps = build_result_steps(
        encoder, sinks, gallery=options.gallery, topk=options.topk, retrieval_backend=options.retrieval,
        generator=options.generator, pixel_model=options.pixel_model, images_dir=options.images,
        diffusion=options.diffusion, strength=options.strength, diffusion_steps=options.diffusion_steps,
        seed=options.seed, device=options.device, say=warn,
    )
    make = pipeline_factory(encoder, sinks, marker_filter=options.marker_filter, offset=options.offset,
                            hop=options.hop, steps=steps, channels=options.channels(), say=warn)
    return Decoder(encoder, sinks, make)


def _check_stimulus_gallery(encoder: Encoder, gal: Any, where: str | os.PathLike) -> None:
    """A dual-encoder model retrieves only from a gallery embedded by its own stimulus CNN."""
    from bci.models.stimulus import StimulusCNN

    extra = encoder.config.extra or {}
    expected = extra.get("stimulus_fingerprint") if isinstance(extra, dict) else None
    if not expected:
        if gal.meta.get("clip") == StimulusCNN.name:
            raise ValueError(f"gallery {where} was embedded by a dual encoder's stimulus CNN (bci gallery build "
                             f"--stimulus-encoder), but model {encoder.config.name!r} is not that dual encoder; "
                             "build the gallery with the embedder the model was trained against")
        return
    got = str(gal.meta.get("clip_fingerprint", ""))
    if got != expected:
        raise ValueError(
            f"gallery {where} was embedded by {gal.meta.get('clip')!r} (fingerprint {got or 'none'}), but model "
            f"{encoder.config.name!r} is a dual encoder whose stimulus CNN has fingerprint {expected}; build the "
            "gallery with that CNN: bci gallery build IMAGES OUT --stimulus-encoder CHECKPOINT/"
            f"{extra.get('stimulus_encoder', 'stimulus')}")


def build_result_steps(
    encoder: Encoder,
    sinks: list[Sink],
    *,
    gallery: str | os.PathLike | None = None,
    topk: int = 5,
    retrieval_backend: str = "torch",
    generator: str | os.PathLike | None = None,
    pixel_model: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    diffusion: str | os.PathLike | None = None,
    strength: float = 0.6,
    diffusion_steps: int = 20,
    seed: int = 0,
    device: str = "auto",
    say: Callable[[str], None] = print,
) -> list:
    """The result steps a decoding run asked for: retrieval, saliency image, diffusion.

    A pattern decoder (fMRI, ``extra.embedding_space == "pattern"``) always gets a
    :class:`bci.runtime.steps.PatternStep`: its decoded ``grid × grid`` pattern as
    ``images.reconstruction`` (a PNG in ``images_dir`` when given, else a data URI).

    Everything is checked at start: a gallery whose embedding size differs from the
    model's, a generator trained on another feature size, a missing diffusion folder
    are clear errors before any data flows. A missing ``diffusion`` extra is said once
    (via ``say``) and the run carries on with retrieval and the pixel-level image.
    """
    from bci.runtime.steps import ImageWriter, RetrievalStep

    steps: list = []
    if gallery is not None:
        from bci.retrieval.gallery import Gallery
        from bci.retrieval.search import Retriever, check_compatible

        gal = Gallery.load(gallery)
        # what embedded the gallery first: its advice is better than a size mismatch's
        query = _check_pattern_gallery(encoder, gal, gallery)
        _check_stimulus_gallery(encoder, gal, gallery)
        check_compatible(gal, encoder.config.embed_dim, where=f"model {encoder.config.name!r}")
        steps.append(RetrievalStep(Retriever(gal, device=str(encoder.device), backend=retrieval_backend, k=topk),
                                   k=topk, query=query))
    pattern = _pattern_step(encoder, images_dir)
    if pattern is not None:
        steps.append(pattern)
    if generator is None and diffusion is None:
        return steps
    if generator is None:
        raise ValueError("--diffusion refines the pixel-level image: pass --generator DIR (a saliency-GAN checkpoint)")
    writer = ImageWriter(images_dir if images_dir is not None else Path("bci-images"))
    worker = _diffusion_worker(diffusion, encoder, writer, sinks, strength=strength, steps=diffusion_steps,
                               seed=seed, device=device, say=say) if diffusion is not None else None
    steps.append(_saliency_step(generator, pixel_model, writer, worker, device=device, seed=seed))
    if worker is not None:
        steps.append(_WorkerCloser(worker))
    return steps


def _check_pattern_gallery(encoder: Encoder, gal: Any, where: str | os.PathLike) -> Callable | None:
    """A pattern decoder retrieves from a pattern gallery of its grid, by correlation; None for other models."""
    from bci.models.stimulus import PatternEmbedder, pattern_fingerprint, pattern_query

    grid = _pattern_grid(encoder)
    got = str(gal.meta.get("clip_fingerprint", ""))
    if grid is None:
        if gal.meta.get("clip") == PatternEmbedder.name:
            raise ValueError(f"gallery {where} holds stimulus patterns for an fMRI pattern decoder (bci gallery build "
                             f"--pattern-grid), but model {encoder.config.name!r} is not a pattern decoder; build the "
                             "gallery with the embedder the model was trained against")
        return None
    if got != pattern_fingerprint(grid):
        raise ValueError(
            f"gallery {where} was embedded by {gal.meta.get('clip')!r} (fingerprint {got or 'none'}), but model "
            f"{encoder.config.name!r} is a {grid}x{grid} pattern decoder: it retrieves candidate patterns by "
            f"correlation; build the gallery with: bci gallery build PATTERNS/ OUT --pattern-grid {grid}")
    return pattern_query


def _pattern_grid(encoder: Encoder) -> int | None:
    """The ``pattern_grid`` of a pattern decoder (checked against its output size); None for other models."""
    from bci.models.stimulus import pattern_grid

    return pattern_grid(encoder.config, f"model {encoder.config.name!r}")


def _pattern_step(encoder: Encoder, images_dir: str | os.PathLike | None):
    """A :class:`bci.runtime.steps.PatternStep` for a pattern decoder (None for any other model)."""
    from bci.runtime.steps import ImageWriter, PatternStep

    grid = _pattern_grid(encoder)
    if grid is None:
        return None
    return PatternStep(grid, ImageWriter(images_dir) if images_dir is not None else None)


def _saliency_step(generator: str | os.PathLike, pixel_model: str | os.PathLike | None, writer, worker, *,
                   device: str, seed: int):
    from bci.generation import load_pixel_step, read_gan_checkpoint
    from bci.runtime.steps import SaliencyStep

    meta = read_gan_checkpoint(generator).metadata or {}
    if pixel_model is None:
        pixel_model = (meta.get("encoder") or {}).get("path")
        if pixel_model is None:
            raise ValueError(f"generator {generator} does not name its pixel-level encoder; pass --pixel-model DIR")
    feature_encoder = load_encoder(pixel_model, device=device)
    image_step = load_pixel_step(generator, device=str(feature_encoder.device), seed=seed,
                                 feature_dim=feature_encoder.config.embed_dim)
    def submit(record: dict, image) -> None:
        import numpy as np

        worker.submit(record, image, np.asarray(record["embedding"], dtype=np.float32))

    return SaliencyStep(feature_encoder, image_step, writer, on_image=submit if worker is not None else None)


def _diffusion_worker(diffusion: str | os.PathLike, encoder: Encoder, writer, sinks: list[Sink], *, strength: float,
                      steps: int, seed: int, device: str, say: Callable[[str], None]):
    from bci.generation import LatentImg2Img, diffusion_status
    from bci.runtime.steps import DiffusionWorker

    reason = diffusion_status()
    if reason is not None:
        say(f"diffusion: {reason}; carrying on with retrieval and the pixel-level image")
        return None
    ldm = LatentImg2Img.from_pretrained_dir(diffusion, device=str(encoder.device))
    proj_dim = ldm.projector.embed_dim
    if proj_dim != encoder.config.embed_dim:
        raise ValueError(f"diffusion projector in {diffusion} takes {proj_dim}-d embeddings but model "
                         f"{encoder.config.name!r} outputs {encoder.config.embed_dim}-d; train a projector for it")

    def emit(record: dict) -> None:
        for sink in sinks:
            sink.write(record)

    from streams.lsl import local_clock

    return DiffusionWorker(ldm, writer, emit, strength=strength, steps=steps, seed=seed, clock=local_clock)


class _WorkerCloser:
    """A no-op step whose ``close`` waits for the diffusion worker to finish."""

    def __init__(self, worker) -> None:
        self.worker = worker

    def __call__(self, batch, outputs, records) -> None:
        """Nothing per batch."""

    def close(self) -> None:
        """Finish queued diffusion work, then report what was skipped."""
        self.worker.close()
