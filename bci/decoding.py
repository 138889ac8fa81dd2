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


#: Seconds from marker to window start by stream type: EEG-ImageNet's 20 ms for EEG, the
#: haemodynamic delay (peak of the canonical HRF is ~5 s; 4 s starts the averaged TRs) for fMRI.
DEFAULT_OFFSETS = {"eeg": 0.020, "fmri": 4.0}


def default_offset(stream_type: str) -> float:
    """Default window offset for a stream type (EEG 0.020 s, fMRI 4.0 s)."""
    return DEFAULT_OFFSETS.get(stream_type.lower(), 0.020)


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
) -> Callable[[StreamDescription], Pipeline]:
    """A function that builds the pipeline once the data stream's description is known.

    ``offset`` defaults to :func:`default_offset` for the stream's type (20 ms for EEG,
    an HRF delay for fMRI); ``hop`` adds sliding windows every ``hop`` seconds.
    """

    def make(desc: StreamDescription) -> Pipeline:
        return Pipeline(
            encoder,
            sfreq=desc.nominal_rate,
            ch_names=list(desc.channel_names),
            preprocess=preprocess_of(encoder),
            window=WindowSpec(n_times=encoder.config.n_times,
                              offset=default_offset(desc.type) if offset is None else offset),
            marker_filter=marker_filter,
            hop=hop,
            sinks=sinks,
            buffer_seconds=buffer_seconds,
            stream_name=desc.name,
        )

    return make
