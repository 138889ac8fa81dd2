"""Stimulus schedules: when each image is shown, in blocks, with jittered inter-stimulus intervals.

Timing of one block::

    block_start  ISI  stim  ISI  stim ... ISI  stim  block_end   pause   block_start ...
    |-----------|=====|----|=====|    |-----|=====|   |--------------|

* ``BLOCK_START`` is at the block's start; the first stimulus follows one ISI later.
* Each stimulus lasts ``stim_duration``; each ISI is ``isi + U(0, jitter)`` (uniform).
* ``BLOCK_END`` is at the offset of the block's last stimulus; the next block
  starts ``block_pause`` later. The first block starts at ``start_delay``.
* Only whole trials that end (offset plus ``isi``) before ``duration`` are scheduled,
  so every event, ``BLOCK_END`` included, lies inside the session.

A marker with onset ``t`` refers to the sample ``round(t * sfreq)``
(:func:`onset_sample`), the sample where the simulator starts the evoked response.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streams.synthetic.markers import BLOCK_END, BLOCK_START, format_block_marker, format_marker
from streams.synthetic.stimuli import StimulusSet

DESIGNS = ("block", "rapid")


@dataclass(frozen=True)
class StimulusEvent:
    """One scheduled event.

    Attributes
    ----------
    onset : float
        Seconds from session start.
    image_index : int
        Index into the :class:`StimulusSet`; ``-1`` for block markers.
    block : int
        Block number (from 0).
    marker : str
        Marker string sent at ``onset`` (``stim/<image_id>/<label>``,
        ``block_start/<block>`` or ``block_end/<block>``).
    """

    onset: float
    image_index: int
    block: int
    marker: str

    @property
    def is_stimulus(self) -> bool:
        """True for image onsets, false for block markers."""
        return self.image_index >= 0


def onset_sample(onset: float, sfreq: float) -> int:
    """Sample index an onset (seconds from session start) refers to: ``round(onset * sfreq)``."""
    return int(round(float(onset) * float(sfreq)))


def make_schedule(
    stimuli: StimulusSet,
    duration: float,
    *,
    stim_duration: float = 0.5,
    isi: float = 0.5,
    jitter: float = 0.1,
    block_size: int = 40,
    block_pause: float = 2.0,
    start_delay: float = 1.0,
    seed: int = 0,
    design: str = "block",
) -> list[StimulusEvent]:
    """Schedule image presentations for a session of ``duration`` seconds.

    Parameters
    ----------
    stimuli : StimulusSet
        The images to show.
    duration : float
        Session length in seconds (> 0).
    stim_duration : float
        Seconds each image is on screen (> 0).
    isi : float
        Minimum blank between two images, in seconds (>= 0).
    jitter : float
        Each ISI gets an extra ``U(0, jitter)`` seconds (>= 0).
    block_size : int
        Images per block (>= 1).
    block_pause : float
        Seconds between a block's end and the next block's start (>= 0).
    start_delay : float
        Start of the first block, in seconds (>= 0).
    seed : int
        Seed of the image order and the jitter.
    design : {'block', 'rapid'}
        ``'block'``: every block shows images of a single class (EEG-ImageNet
        style; classes in shuffled order, each class's images reshuffled to fill
        the block). ``'rapid'``: classes interleaved (shuffled passes over all
        images), cut into blocks of ``block_size``.

    Returns
    -------
    list of StimulusEvent
        Sorted by onset; block markers have ``image_index == -1``.
    """
    _validate(stimuli, duration, stim_duration, isi, jitter, block_size, block_pause, start_delay, seed, design)
    rng = np.random.default_rng([int(seed), 0x5C4E])
    blocks = _block_images(stimuli, design, block_size, rng)
    events: list[StimulusEvent] = []
    t = float(start_delay)
    for block, images in enumerate(blocks):
        trials = _block_trials(images, t, duration, stim_duration, isi, jitter, rng)
        if not trials:
            break
        events.append(StimulusEvent(t, -1, block, format_block_marker(BLOCK_START, block)))
        for onset, idx in trials:
            marker = format_marker(stimuli.image_ids[idx], stimuli.label(idx))
            events.append(StimulusEvent(onset, idx, block, marker))
        end = trials[-1][0] + stim_duration
        events.append(StimulusEvent(end, -1, block, format_block_marker(BLOCK_END, block)))
        if len(trials) < block_size:
            break
        t = end + block_pause
    return events


def stimulus_events(schedule: list[StimulusEvent]) -> list[StimulusEvent]:
    """Only the image onsets of a schedule (block markers dropped)."""
    return [ev for ev in schedule if ev.is_stimulus]


def _block_trials(
    images: list[int],
    start: float,
    duration: float,
    stim_duration: float,
    isi: float,
    jitter: float,
    rng: np.random.Generator,
) -> list[tuple[float, int]]:
    """``(onset, image_index)`` of the trials of one block that fit before ``duration``."""
    trials = []
    t = start
    for idx in images:
        onset = t + isi + rng.uniform(0.0, jitter)
        if onset + stim_duration + isi >= duration:
            break
        trials.append((onset, idx))
        t = onset + stim_duration
    return trials


def _block_images(stimuli: StimulusSet, design: str, block_size: int, rng: np.random.Generator) -> Iterator[list[int]]:
    """Endless sequence of blocks, each a list of ``block_size`` image indices."""
    if design == "block":
        while True:
            for class_id in rng.permutation(stimuli.n_classes):
                members = stimuli.class_images(int(class_id))
                yield _fill(members, block_size, rng)
    else:
        pending: list[int] = []
        while True:
            while len(pending) < block_size:
                pending.extend(int(i) for i in rng.permutation(stimuli.n_images))
            yield pending[:block_size]
            pending = pending[block_size:]


def _fill(members: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` items drawn from ``members`` in reshuffled passes."""
    out: list[int] = []
    while len(out) < n:
        out.extend(int(i) for i in rng.permutation(members))
    return out[:n]


def _validate(
    stimuli: StimulusSet,
    duration: float,
    stim_duration: float,
    isi: float,
    jitter: float,
    block_size: int,
    block_pause: float,
    start_delay: float,
    seed: int,
    design: str,
) -> None:
    if not isinstance(stimuli, StimulusSet):
        raise TypeError(f"stimuli must be a StimulusSet (from make_stimuli), got {type(stimuli).__name__}")
    if stimuli.n_images == 0:
        raise ValueError("stimuli holds no images")
    _positive("duration", duration)
    _positive("stim_duration", stim_duration)
    for name, value in (("isi", isi), ("jitter", jitter), ("block_pause", block_pause), ("start_delay", start_delay)):
        _non_negative(name, value)
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} must be an int >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int")
    if design not in DESIGNS:
        raise ValueError(f"design={design!r}: choose one of {', '.join(DESIGNS)}")


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive number of seconds")


def _non_negative(name: str, value: float) -> None:
    if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a number of seconds >= 0")
