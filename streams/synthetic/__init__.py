"""The synthetic world: stimuli, schedules, markers, and EEG/fMRI simulators with known forward models.

Everything is deterministic from a seed and needs no downloads; see
``docs/synthetic-world.md``.
"""

from streams.synthetic.eeg import BLOCK_SECONDS, EEGForwardModel, EEGSimConfig, EEGSimulator, montage_geometry
from streams.synthetic.fmri import FMRISimConfig, FMRISimulator, canonical_hrf
from streams.synthetic.markers import (
    BLOCK_END,
    BLOCK_START,
    format_block_marker,
    format_marker,
    is_stimulus_marker,
    parse_block_marker,
    parse_marker,
)
from streams.synthetic.schedule import (
    StimulusEvent,
    make_balanced_schedule,
    make_schedule,
    onset_sample,
    stimulus_events,
)
from streams.synthetic.stimuli import (
    COLOUR_NAMES,
    COLOURS,
    FEATURE_NAMES,
    SHAPES,
    StimulusSet,
    draw_shape,
    geometric_patterns,
    make_binary_patterns,
    make_stimuli,
    pattern_images,
)

__all__ = [
    "BLOCK_END",
    "BLOCK_SECONDS",
    "BLOCK_START",
    "COLOURS",
    "COLOUR_NAMES",
    "EEGForwardModel",
    "EEGSimConfig",
    "EEGSimulator",
    "FEATURE_NAMES",
    "FMRISimConfig",
    "FMRISimulator",
    "SHAPES",
    "StimulusEvent",
    "StimulusSet",
    "canonical_hrf",
    "draw_shape",
    "format_block_marker",
    "format_marker",
    "geometric_patterns",
    "is_stimulus_marker",
    "make_balanced_schedule",
    "make_binary_patterns",
    "make_schedule",
    "make_stimuli",
    "montage_geometry",
    "onset_sample",
    "parse_block_marker",
    "parse_marker",
    "pattern_images",
    "stimulus_events",
]
