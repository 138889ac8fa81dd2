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

from streams._checks import check_float, check_int, check_type, ensure_int
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
    timing = _Timing(stim_duration, isi, jitter, block_pause)
    events: list[StimulusEvent] = []
    t = float(start_delay)
    for block, images in enumerate(blocks):
        trials = _block_trials(images, t, duration, timing, rng)
        if not trials:
            break
        end = _append_block(events, stimuli, block, t, trials, timing)
        if len(trials) < block_size:
            break
        t = end + block_pause
    return events


def make_balanced_schedule(
    stimuli: StimulusSet,
    *,
    n_per_class: int,
    n_blocks: int,
    design: str = "block",
    seed: int = 0,
    stim_duration: float = 0.5,
    isi: float = 0.5,
    jitter: float = 0.1,
    block_pause: float = 2.0,
    start_delay: float = 1.0,
) -> list[StimulusEvent]:
    """A class-balanced schedule: each class shown ``n_per_class`` times over ``n_blocks`` blocks.

    Same timing and markers as :func:`make_schedule` (``block_start/<n>``, one ISI of
    ``isi + U(0, jitter)`` before every image, ``block_end/<n>`` at the last image's
    offset, ``block_pause`` between blocks), but with exact per-class counts and no
    session length (the schedule lasts as long as its trials):

    * ``design="block"``: ``n_blocks`` rounds; each round shows every class in its own
      block (classes in shuffled order), so there are ``n_classes * n_blocks`` blocks;
    * ``design="rapid"``: ``n_blocks`` blocks, each showing every class (shuffled).

    A class's trials cycle through its images in reshuffled passes. This is the schedule
    of ``offline.data.build.epochs_from_simulation``.

    Parameters
    ----------
    stimuli : StimulusSet
        The images to show.
    n_per_class : int
        Trials per class (>= 1).
    n_blocks : int
        Rounds (block design) or blocks (rapid design), in ``1..n_per_class``.
    design : {'block', 'rapid'}
    seed : int
        Seed of the image order and the jitter.
    stim_duration, isi, jitter, block_pause, start_delay : float
        As for :func:`make_schedule`.

    Returns
    -------
    list of StimulusEvent
        Sorted by onset; block markers have ``image_index == -1``.
    """
    n_per_class = check_int("n_per_class", n_per_class, low=1)
    n_blocks = ensure_int(n_blocks, "n_blocks")
    if not 1 <= n_blocks <= n_per_class:
        raise ValueError(f"n_blocks={n_blocks!r} must be an int in 1..n_per_class={n_per_class} "
                         "(every block needs at least one trial of its class)")
    if design not in DESIGNS:
        raise ValueError(f"design={design!r}: choose 'block' or 'rapid'")
    rng = np.random.default_rng([int(seed), 0xB10C])
    trials = {c: _fill(stimuli.class_images(c), n_per_class, rng) for c in range(stimuli.n_classes)}
    share = [n_per_class // n_blocks + (1 if r < n_per_class % n_blocks else 0) for r in range(n_blocks)]
    starts = np.concatenate([[0], np.cumsum(share)])
    blocks: list[list[int]] = []
    for r in range(n_blocks):
        rows = {c: trials[c][starts[r]:starts[r + 1]] for c in trials}
        if design == "block":
            blocks += [rows[int(c)] for c in rng.permutation(stimuli.n_classes)]
        else:
            blocks.append([int(i) for i in rng.permutation(np.concatenate(list(rows.values())))])
    timing = _Timing(stim_duration, isi, jitter, block_pause)
    events: list[StimulusEvent] = []
    t = float(start_delay)
    for block, images in enumerate(blocks):
        trials_b = _block_trials(images, t, math.inf, timing, rng)
        t = _append_block(events, stimuli, block, t, trials_b, timing) + block_pause
    return events


def stimulus_events(schedule: list[StimulusEvent]) -> list[StimulusEvent]:
    """Only the image onsets of a schedule (block markers dropped)."""
    return [ev for ev in schedule if ev.is_stimulus]


@dataclass(frozen=True)
class _Timing:
    """Seconds of a schedule's trials: image on screen, blank before it (plus jitter), pause after a block."""

    stim_duration: float
    isi: float
    jitter: float
    block_pause: float


def _block_trials(
    images: list[int], start: float, duration: float, timing: _Timing, rng: np.random.Generator
) -> list[tuple[float, int]]:
    """``(onset, image_index)`` of the trials of one block that fit before ``duration``."""
    trials = []
    t = start
    for idx in images:
        onset = t + timing.isi + rng.uniform(0.0, timing.jitter)
        if onset + timing.stim_duration + timing.isi >= duration:
            break
        trials.append((onset, idx))
        t = onset + timing.stim_duration
    return trials


def _append_block(events: list[StimulusEvent], stimuli: StimulusSet, block: int, start: float,
                  trials: list[tuple[float, int]], timing: _Timing) -> float:
    """Append a block's start marker, image onsets and end marker to ``events``; return the block's end."""
    events.append(StimulusEvent(start, -1, block, format_block_marker(BLOCK_START, block)))
    for onset, idx in trials:
        events.append(StimulusEvent(onset, idx, block, format_marker(stimuli.image_ids[idx], stimuli.label(idx))))
    end = trials[-1][0] + timing.stim_duration
    events.append(StimulusEvent(end, -1, block, format_block_marker(BLOCK_END, block)))
    return end


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
    check_type("stimuli", stimuli, StimulusSet, "a StimulusSet (from make_stimuli)")
    if stimuli.n_images == 0:
        raise ValueError("stimuli holds no images")
    _seconds("duration", duration, positive=True)
    _seconds("stim_duration", stim_duration, positive=True)
    for name, value in (("isi", isi), ("jitter", jitter), ("block_pause", block_pause), ("start_delay", start_delay)):
        _seconds(name, value, positive=False)
    check_int("block_size", block_size, low=1)
    check_int("seed", seed, low=0)
    if design not in DESIGNS:
        raise ValueError(f"design={design!r}: choose one of {', '.join(DESIGNS)}")


def _seconds(name: str, value: float, *, positive: bool) -> None:
    """A finite number of seconds, ``> 0`` (``positive``) or ``>= 0``."""
    check_float(name, value, positive=positive, low=None if positive else 0.0)
