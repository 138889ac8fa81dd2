"""Assemble a decoding run from plain arguments: model, preprocessing, window, sinks.

Shared by ``bci live`` and ``bci replay --decode`` so both build the identical
pipeline from the same checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from bci.inference import Encoder
from bci.models.checkpoint import load_checkpoint
from bci.outputs import EventsFileSink, ListSink, ResultsOutletSink, Sink
from bci.pipeline import Pipeline
from bci.preprocessing import PreprocessConfig
from bci.windowing import WindowSpec
from streams.description import StreamDescription


def load_encoder(model_dir: str | os.PathLike, *, device: str = "auto") -> Encoder:
    """Load a checkpoint directory and put the model on ``device`` (warmed up)."""
    model = load_checkpoint(model_dir)
    return Encoder(model, device=device)


def preprocess_of(encoder: Encoder) -> PreprocessConfig | None:
    """The preprocessing the model was trained with (stored in its checkpoint)."""
    cfg = encoder.config.preprocessing
    return PreprocessConfig.from_dict(cfg) if cfg else None


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
    offset: float = 0.020,
    buffer_seconds: float = 30.0,
) -> Callable[[StreamDescription], Pipeline]:
    """A function that builds the pipeline once the data stream's description is known."""

    def make(desc: StreamDescription) -> Pipeline:
        return Pipeline(
            encoder,
            sfreq=desc.nominal_rate,
            ch_names=list(desc.channel_names),
            preprocess=preprocess_of(encoder),
            window=WindowSpec(n_times=encoder.config.n_times, offset=offset),
            marker_filter=marker_filter,
            sinks=sinks,
            buffer_seconds=buffer_seconds,
            stream_name=desc.name,
        )

    return make
