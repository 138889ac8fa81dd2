"""Run the synthetic world: stream it over LSL in real time, or write it straight to Zarr.

The same generator (:meth:`EEGSimulator.stream` / :meth:`FMRISimulator.generate`)
feeds both paths, so a session written with ``--out`` holds the same samples a
recording of the live stream would.

Timing rule: the sample with index ``i`` has timestamp ``t0 + i / sfreq``; a
stimulus with onset ``t`` (seconds from session start) refers to sample
``round(t * sfreq)`` and its marker carries exactly that sample's timestamp.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streams._checks import check_float, check_int, check_type
from streams._context import PlayingContext
from streams.description import StreamDescription
from streams.lsl import SOURCE_CLOSE_LINGER_S, Outlet, local_clock
from streams.markers import marker_stream_description
from streams.session import SessionWriter
from streams.synthetic import (
    EEGSimConfig,
    EEGSimulator,
    FMRISimConfig,
    FMRISimulator,
    make_binary_patterns,
    make_schedule,
    make_stimuli,
    pattern_images,
)

logger = logging.getLogger(__name__)

MODALITIES = ("eeg", "fmri")


@dataclass
class SimulationSpec:
    """Everything that defines a simulated session (deterministic from ``seed``).

    Parameters
    ----------
    name : str
        Base stream name; the marker stream is ``f"{name}-Markers"``.
    modality : {'eeg', 'fmri'}
    duration : float
        Seconds of data.
    snr : float
        Signal-to-noise ratio of the evoked responses (see docs/synthetic-world.md).
    seed : int
    chunk_size : int
        Samples per LSL chunk (an amplifier sends ~10 at 1 kHz).
    design : {'block', 'rapid'}
        Stimulus schedule design.
    session : int
        Recording session of the simulated subject ``seed`` (EEG): new noise and
        schedule, same forward model and stimuli. 0 is the default session.
    sfreq : float, optional
        EEG: the amplifier's rate in Hz (default: the simulator's, 1000 Hz).
    montage : str, optional
        EEG: an mne standard montage naming the channels (default ``biosemi128``; e.g.
        ``biosemi32`` for a 32-channel amplifier).
    """

    name: str = "SimEEG"
    modality: str = "eeg"
    duration: float = 60.0
    snr: float = 1.0
    seed: int = 0
    chunk_size: int = 10
    design: str = "block"
    extra: dict = field(default_factory=dict)
    session: int = 0
    sfreq: float | None = None
    montage: str | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality={self.modality!r}: choose one of {', '.join(MODALITIES)}")
        if not (np.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration={self.duration!r} must be a positive number of seconds")
        if not (np.isfinite(self.snr) and self.snr >= 0):
            raise ValueError(f"snr={self.snr!r} must be >= 0")
        if int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size={self.chunk_size!r} must be >= 1 sample")
        if self.design not in ("block", "rapid"):
            raise ValueError(f"design={self.design!r}: choose 'block' or 'rapid'")
        check_int("session", self.session, low=0)
        if self.session and self.modality != "eeg":
            raise ValueError("session is supported for the EEG simulator only; vary seed for fMRI")
        if self.sfreq is not None:
            self.sfreq = check_float("sfreq", self.sfreq, positive=True)
        if self.montage is not None:
            check_type("montage", self.montage, str)
        if (self.sfreq is not None or self.montage is not None) and self.modality != "eeg":
            raise ValueError("sfreq and montage choose the EEG amplifier; the fMRI simulator has its own TR")

    def eeg_config(self) -> EEGSimConfig:
        """The EEG simulator's configuration (the amplifier: ``sfreq``, ``montage``, when given)."""
        amplifier: dict[str, Any] = {}
        if self.sfreq is not None:
            amplifier["sfreq"] = self.sfreq
        if self.montage is not None:
            import mne

            names = mne.channels.get_builtin_montages()
            if self.montage not in names:
                raise ValueError(f"montage={self.montage!r} is not an mne standard montage; choose one of "
                                 f"{', '.join(names)}")
            n = len(mne.channels.make_standard_montage(self.montage).ch_names)
            amplifier.update(montage=self.montage, n_channels=n)
        return EEGSimConfig(snr=self.snr, seed=self.seed, session=self.session, **amplifier)

    @property
    def schedule_seed(self) -> int:
        """Seed of the stimulus schedule: ``seed`` for session 0, a different one per session."""
        return self.seed if self.session == 0 else self.seed * 1_000_003 + self.session

    @property
    def marker_name(self) -> str:
        """Name of the marker stream."""
        return f"{self.name}-Markers"

    @property
    def source_id(self) -> str:
        """source_id of the data stream (stable across runs with the same name and seed)."""
        return f"bci-sim-{self.modality}-{self.name}-{self.seed}"


def marker_description(spec: SimulationSpec) -> StreamDescription:
    """The string marker stream that goes with a simulated session."""
    return marker_stream_description(spec.marker_name, spec.source_id + "-markers")


class _World:
    """The simulator, its stimuli and its schedule, built from a spec."""

    def __init__(self, spec: SimulationSpec) -> None:
        self.spec = spec
        if spec.modality == "eeg":
            self.stimuli = make_stimuli(seed=spec.seed)
            self.sim = EEGSimulator(self.stimuli, spec.eeg_config())
            self.sfreq = self.sim.sfreq
            self.schedule = make_schedule(self.stimuli, spec.duration, seed=spec.schedule_seed, design=spec.design)
            self.desc = self.sim.description(name=spec.name, source_id=spec.source_id)
            self.n_samples = int(round(spec.duration * self.sfreq))
            self.events = [(int(round(ev.onset * self.sfreq)), ev.marker) for ev in self.schedule]
        else:
            self.sim = FMRISimulator(FMRISimConfig(snr=spec.snr, seed=spec.seed))
            tr = self.sim.config.tr
            self.sfreq = 1.0 / tr
            self.desc = self.sim.description(name=spec.name, source_id=spec.source_id)
            n_trials = max(1, int(spec.duration // (6 * tr)))
            patterns = make_binary_patterns(n_trials, seed=spec.seed)
            self.patterns = patterns
            volumes, _, events = self.sim.generate(patterns)
            self.volumes = volumes[: max(1, int(spec.duration / tr))]
            self.n_samples = len(self.volumes)
            self.events = [
                (int(round(onset / tr)), f"stim/pattern{idx:04d}/pattern") for onset, idx in events
                if onset < self.n_samples * tr
            ]

    def chunks(self, chunk_size: int):
        """Yield ``(data, first_index)`` for the whole session."""
        if self.spec.modality == "eeg":
            for data, first in self.sim.stream(self.schedule, chunk_size=chunk_size):
                if first >= self.n_samples:
                    return
                yield data[: self.n_samples - first], first
        else:
            for first in range(0, self.n_samples, chunk_size):
                yield self.volumes[first : first + chunk_size], first


def shown_stimuli(spec: SimulationSpec, scale: int = 6) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """The images a simulated session's markers name (``stim/<id>/<label>``), for a gallery or a display.

    Parameters
    ----------
    spec : SimulationSpec
        The session (modality, seed, duration).
    scale : int
        fMRI: pixels per pattern cell.

    Returns
    -------
    images : ndarray, shape (n, S, S, 3), uint8
        EEG: the subject's stimulus set; fMRI: the binary patterns in the order shown,
        white cells on black.
    ids, labels, captions : list of str
        EEG: ``imgNNNN``, class names, detailed captions; fMRI: ``patternNNNN``, ``"pattern"``,
        ``"a binary pattern"``.
    """
    world = _World(spec)
    if spec.modality == "eeg":
        st = world.stimuli
        labels = [str(st.class_names[int(c)]) for c in st.class_ids]
        return np.asarray(st.images), [str(i) for i in st.image_ids], labels, [str(c) for c in st.captions]
    n = len(world.patterns)
    return (pattern_images(world.patterns, int(scale)), [f"pattern{i:04d}" for i in range(n)], ["pattern"] * n,
            ["a binary pattern"] * n)


def simulate_to_session(
    spec: SimulationSpec, out: str | os.PathLike, *, overwrite: bool = False, t0: float = 0.0
) -> Path:
    """Write a simulated session straight to Zarr, faster than real time, without LSL.

    Timestamps are ``t0 + i / sfreq`` (``t0=0`` by default).
    """
    world = _World(spec)
    with SessionWriter(out, overwrite=overwrite, attrs=_session_attrs(spec)) as writer:
        data_key = writer.add_stream(world.desc)
        marker_key = writer.add_stream(marker_description(spec))
        for data, first in world.chunks(max(1, int(round(world.sfreq)))):
            times = t0 + (first + np.arange(len(data))) / world.sfreq
            writer.append(data_key, data, times)
        if world.events:
            idx = np.array([i for i, _ in world.events])
            values = np.array([[m] for _, m in world.events], dtype=object)
            writer.append(marker_key, values, t0 + idx / world.sfreq)
    return Path(out)


class LiveSimulation(PlayingContext):
    """Stream a simulated session over LSL in real time (data + markers), like an amplifier.

    Use :meth:`run` in a thread or process; :meth:`stop` ends it early.

    Parameters
    ----------
    spec : SimulationSpec
        The session.
    speed : float
        Playback speed (soak tests: e.g. 20). Sample ``i`` is pushed, and stamped, at
        ``t0 + i / (sfreq * speed)`` of the LSL clock, as ``bci replay --speed`` does: the
        timestamps follow the clock the consumer reads, so its latencies stay real
        milliseconds, and a recording of the stream is ``speed`` times shorter than the
        session (its nominal rate stays ``sfreq``; consumers should not dejitter it).
    """

    def __init__(self, spec: SimulationSpec, *, speed: float = 1.0) -> None:
        self.spec = spec
        self.speed = check_float("speed", speed, positive=True)
        self.world = _World(spec)
        self.data_outlet: Outlet | None = None
        self.marker_outlet: Outlet | None = None
        self.n_pushed = 0
        self.n_markers = 0
        self.t0: float | None = None
        self._stop = threading.Event()

    def open(self) -> None:
        """Create both outlets."""
        if self.data_outlet is None:
            self.data_outlet = Outlet(self.world.desc, chunk_size=self.spec.chunk_size)
            self.marker_outlet = Outlet(marker_description(self.spec))

    def wait_for_consumers(self, timeout: float) -> bool:
        """Block until both outlets have an inlet (or ``timeout`` seconds pass)."""
        self.open()
        end = local_clock() + timeout
        return all(o.wait_for_consumers(max(0.0, end - local_clock())) for o in (self.data_outlet, self.marker_outlet))

    def run(self, lead: float = 0.1) -> None:
        """Push chunks at their real time; markers as soon as their sample is out."""
        self.open()
        sfreq = self.world.sfreq * self.speed  # exact for speed 1: the stamps of a real-time run are unchanged
        self.t0 = local_clock() + lead
        events = self.world.events
        next_event = 0
        for data, first in self.world.chunks(self.spec.chunk_size):
            last = first + len(data) - 1
            due = self.t0 + last / sfreq
            delay = due - local_clock()
            if delay > 0 and self._stop.wait(delay):
                break
            if self.speed == 1.0:
                self.data_outlet.push_chunk(data, due)  # liblsl back-dates the others by 1 / nominal rate
            else:  # one stamp per sample: the nominal rate no longer spaces them
                self.data_outlet.push_chunk(data, self.t0 + np.arange(first, last + 1) / sfreq)
            self.n_pushed = last + 1
            while next_event < len(events) and events[next_event][0] <= last:
                idx, marker = events[next_event]
                self.marker_outlet.push_sample([marker], self.t0 + idx / sfreq)
                next_event += 1
                self.n_markers += 1

    def stop(self) -> None:
        """Ask :meth:`run` to return early."""
        self._stop.set()

    def close(self) -> None:
        """Close the outlets."""
        for outlet in (self.data_outlet, self.marker_outlet):
            if outlet is not None:
                outlet.close(linger=SOURCE_CLOSE_LINGER_S)
        self.data_outlet = self.marker_outlet = None


def play(sim: LiveSimulation | Any, *, wait_for_consumers: float = 0.0, start_delay: float = 0.0,
         say: Callable[[str], None] | None = None, start_line: str | None = None) -> None:
    """Play a live simulation to its end or Ctrl-C: wait for consumers, then ``start_delay``, run, close.

    Parameters
    ----------
    sim : LiveSimulation or FollowSimulation
        Opened or not; closed on return.
    wait_for_consumers : float
        Seconds to wait for inlets before streaming (0: none).
    start_delay : float
        Then wait this many more seconds, so several consumers all see the first sample.
    say : callable, optional
        Progress lines (default: print, flushed).
    start_line : str, optional
        Said just before the first sample.
    """
    say = say or (lambda text: print(text, flush=True))
    wait_for_consumers = check_float("wait_for_consumers", wait_for_consumers, low=0.0)
    start_delay = check_float("start_delay", start_delay, low=0.0)
    try:
        if wait_for_consumers and not sim.wait_for_consumers(wait_for_consumers):
            say(f"no consumer connected within {wait_for_consumers:g} s; streaming anyway")
        if start_delay:
            time.sleep(start_delay)  # let every consumer (e.g. bci live and its recorder) connect first
        if start_line is not None:
            say(start_line)
        sim.run()
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()


def _session_attrs(spec: SimulationSpec) -> dict:
    return {
        "source": "synthetic world (bci simulate)",
        "synthetic": True,
        "simulation": {
            "modality": spec.modality,
            "duration": spec.duration,
            "snr": spec.snr,
            "seed": spec.seed,
            "session": spec.session,
            "design": spec.design,
            **{k: v for k, v in (("sfreq", spec.sfreq), ("montage", spec.montage)) if v is not None},
        },
    }
