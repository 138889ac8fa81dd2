"""A simulated EEG amplifier that follows an external stimulus program's markers (``bci simulate --follow-markers``).

The simulator streams the synthetic world's continuous EEG (same subject, forward model,
noise, channels and rate as :class:`streams.simulate.LiveSimulation`) but takes its stimulus
schedule from another program's LSL marker stream: every ``stim/<image_id>/<label>`` marker
(read with :func:`streams.synthetic.markers.parse_marker`) naming an image of the world adds
that image's evoked response, starting at the sample its (clock-corrected) LSL timestamp
falls on. It publishes no marker stream of its own: the stimulus program's stream is the
marker stream.

Timing, like a real amplifier with a transmission delay: the sample stamped ``t`` is pushed
at ``t + latency``. A marker that reaches the simulator within ``latency`` of its timestamp
gets its whole response; a later one gets the part still ahead and is counted as late
(:attr:`FollowedEvent.missed` samples of its response were already out).

Determinism: with the same markers at the same sample indices, the samples equal
:meth:`EEGSimulator.generate` for that schedule (:meth:`FollowReport.schedule`) bit for bit,
as long as no marker was late.
"""

from __future__ import annotations

import bisect
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pylsl

from streams._checks import check_float, check_int, check_type
from streams._context import PlayingContext
from streams.lsl import SOURCE_CLOSE_LINGER_S, Outlet, StreamQuery, local_clock, pull_string_chunk, resolve
from streams.simulate import SimulationSpec, _World, play
from streams.synthetic.eeg import EEGSimulator
from streams.synthetic.markers import parse_marker
from streams.synthetic.schedule import StimulusEvent

__all__ = ["FollowOptions", "FollowedEvent", "FollowReport", "FollowedEEG", "FollowSimulation", "follow_markers"]


def _warn_stderr(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


@dataclass
class FollowOptions:
    """How to follow an external marker stream; checked when made.

    Parameters
    ----------
    markers : str
        The stimulus program's LSL marker stream: a name, or ``key=value`` pairs
        (:meth:`streams.lsl.StreamQuery.parse`).
    timeout : float
        Seconds to wait for that stream to appear.
    latency_ms : float
        Transmission delay: the sample stamped ``t`` is pushed at ``t + latency_ms``; markers
        arriving later than that after their timestamp are late.
    """

    markers: str
    timeout: float = 10.0
    latency_ms: float = 200.0

    def __post_init__(self) -> None:
        check_type("markers", self.markers, str, "the name of an LSL marker stream")
        try:
            StreamQuery.parse(self.markers)
        except ValueError as exc:
            raise ValueError(f"markers={self.markers!r} (--follow-markers) is not a stream query: {exc}") from None
        self.timeout = check_float("timeout", self.timeout, positive=True)
        self.latency_ms = check_float("latency_ms", self.latency_ms, low=0.0, high=10_000.0)


@dataclass(frozen=True)
class FollowedEvent:
    """A stimulus marker the simulator followed.

    Attributes
    ----------
    marker : str
        The marker as received.
    image_id : str
    image_index : int
        Index of the image in the world's stimulus set.
    sample : int
        Sample of the simulated stream where its response starts (from the marker's timestamp).
    missed : int
        Samples of its response already pushed when it arrived (0: on time).
    """

    marker: str
    image_id: str
    image_index: int
    sample: int
    missed: int = 0


@dataclass
class FollowReport:
    """What a follow run received: the events it followed and every marker it could not use.

    Attributes
    ----------
    sfreq : float
        Rate of the simulated stream.
    events : list of FollowedEvent
        Stimulus markers followed, in arrival order.
    unknown : Counter
        Markers naming images the world does not have, per image id.
    n_other : int
        Markers that mark no stimulus (e.g. ``block_start/0``).
    n_outside : int
        Stimulus markers stamped before the first sample or after the last one.
    """

    sfreq: float
    events: list[FollowedEvent] = field(default_factory=list)
    unknown: Counter = field(default_factory=Counter)
    n_other: int = 0
    n_outside: int = 0

    @property
    def late(self) -> list[FollowedEvent]:
        """The followed events that arrived after some of their response was pushed."""
        return [e for e in self.events if e.missed]

    @property
    def n_markers(self) -> int:
        """All markers received."""
        return len(self.events) + sum(self.unknown.values()) + self.n_other + self.n_outside

    def schedule(self) -> list[StimulusEvent]:
        """The followed events as a schedule for :meth:`EEGSimulator.generate` (onset ``sample / sfreq``)."""
        return [StimulusEvent(e.sample / self.sfreq, e.image_index, 0, e.marker) for e in self.events]

    def summary(self) -> str:
        """One line: markers received, followed, late, unknown, other, outside."""
        unknown = sum(self.unknown.values())
        ids = f" ({', '.join(sorted(self.unknown))})" if self.unknown else ""
        return (f"markers received: {self.n_markers}; followed: {len(self.events)} "
                f"(late: {len(self.late)}); unknown image ids: {unknown}{ids}; not a stimulus: {self.n_other}; "
                f"outside the stream: {self.n_outside}")


class FollowedEEG:
    """The simulated EEG of a session whose stimulus events arrive while it is generated (no LSL).

    Chunks must be asked for in order (``first`` = the previous chunk's end). An event added
    before the chunk holding its onset gets its whole response; one added later gets the
    rows of its response from the next chunk on.

    Parameters
    ----------
    sim : EEGSimulator
    """

    def __init__(self, sim: EEGSimulator) -> None:
        self.sim = check_type("sim", sim, EEGSimulator)
        self.n_times = sim.forward_model.n_times
        self._blocks: Iterator[np.ndarray] = sim.background_blocks()
        self._pending = np.empty((0, sim.n_channels))
        self._next = 0  # first sample of the next chunk
        self._events: list[tuple[int, int, int]] = []  # (sample, arrival, image), sorted
        self._responses: dict[tuple[int, int], np.ndarray] = {}
        self._arrivals = 0

    @property
    def next_sample(self) -> int:
        """Index of the first sample not generated yet."""
        return self._next

    def add(self, sample: int, image_index: int) -> None:
        """Add the response of image ``image_index`` starting at ``sample`` (>= 0)."""
        sample = check_int("sample", sample, low=0)
        image_index = check_int("image_index", image_index, low=0, high=self.sim.stimuli.n_images - 1)
        if sample + self.n_times <= self._next:
            return  # all of it is already out
        bisect.insort(self._events, (sample, self._arrivals, image_index))
        self._arrivals += 1

    def prepare(self) -> None:
        """Generate the first block now (the filters' warm-up takes a while), so the first chunk is not late."""
        if not len(self._pending):
            self._pending = np.concatenate([self._pending, next(self._blocks)])

    def chunk(self, n: int) -> np.ndarray:
        """The next ``n`` samples, ``(n, n_channels)`` float32 volts."""
        n = check_int("n", n, low=1)
        while len(self._pending) < n:
            self._pending = np.concatenate([self._pending, next(self._blocks)])
        rows, self._pending = self._pending[:n], self._pending[n:]
        first, end = self._next, self._next + n
        # in onset order, as EEGSimulator.generate adds them: the same float64 sums, so the same float32 samples
        for sample, _, image in self._events:
            if sample >= end:
                break
            a, b = max(sample, first), min(sample + self.n_times, end)
            if a < b:
                rows[a - first:b - first] += self._response(sample, image)[a - sample:b - sample]
        self._next = end
        self._events = [e for e in self._events if e[0] + self.n_times > end]
        self._responses = {k: v for k, v in self._responses.items() if k[0] + self.n_times > end}
        return rows.astype(np.float32)

    def _response(self, sample: int, image: int) -> np.ndarray:
        key = (sample, image)
        if key not in self._responses:
            self._responses[key] = self.sim.trial_response(sample, image)
        return self._responses[key]


class FollowSimulation(PlayingContext):
    """Stream the synthetic world's EEG over LSL, with the stimuli an external marker stream announces.

    Use :meth:`run` in a thread or process; :meth:`stop` ends it early. After the run,
    :attr:`report` says what was followed, late, unknown or unusable.

    Parameters
    ----------
    spec : SimulationSpec
        The world (EEG only; its own schedule and ``design`` are not used).
    options : FollowOptions
        The marker stream and the latency.
    warn : callable
        Gets one line per late marker, per unknown image id (once) and for the first marker
        outside the stream (default: stderr).
    """

    def __init__(self, spec: SimulationSpec, options: FollowOptions,
                 warn: Callable[[str], None] = _warn_stderr) -> None:
        check_type("spec", spec, SimulationSpec)
        self.options = check_type("options", options, FollowOptions)
        if spec.modality != "eeg":
            raise ValueError(f"modality={spec.modality!r}: following a marker stream is supported for EEG only; "
                             "use --modality eeg (or drop --follow-markers)")
        self.spec = spec
        self.warn = warn
        self.world = _World(spec)
        self.eeg = FollowedEEG(self.world.sim)
        self.report = FollowReport(self.world.sfreq)
        self.data_outlet: Outlet | None = None
        self.marker_inlet: pylsl.StreamInlet | None = None
        self.marker_name: str | None = None
        self.n_pushed = 0
        self.t0: float | None = None
        self._ids = {str(i): k for k, i in enumerate(self.world.stimuli.image_ids)}
        self._warned_outside = False
        self._stop = threading.Event()

    def open(self) -> None:
        """Find the marker stream (a :class:`StreamNotFoundError` after ``timeout``), open its inlet and the data outlet."""
        if self.marker_inlet is None:
            info = resolve(self.options.markers, timeout=self.options.timeout)
            inlet = pylsl.StreamInlet(info, max_buflen=360, recover=True, processing_flags=pylsl.proc_clocksync)
            inlet.open_stream(timeout=self.options.timeout)
            inlet.time_correction(timeout=self.options.timeout)  # the first estimate, before any marker counts
            self.marker_inlet, self.marker_name = inlet, info.name()
        if self.data_outlet is None:
            self.eeg.prepare()
            self.data_outlet = Outlet(self.world.desc, chunk_size=self.spec.chunk_size)

    def wait_for_consumers(self, timeout: float) -> bool:
        """Block until the data outlet has an inlet (or ``timeout`` seconds pass)."""
        self.open()
        return self.data_outlet.wait_for_consumers(timeout)

    def run(self, lead: float = 0.1) -> None:
        """Push chunks ``latency`` after their timestamps, with the responses of the markers received so far."""
        self.open()
        sfreq = self.world.sfreq
        latency = self.options.latency_ms / 1000.0
        self.t0 = local_clock() + lead
        size = self.spec.chunk_size
        for first in range(0, self.world.n_samples, size):
            n = min(size, self.world.n_samples - first)
            stamp = self.t0 + (first + n - 1) / sfreq
            delay = stamp + latency - local_clock()
            if delay > 0 and self._stop.wait(delay):
                break
            self._receive(self.world.n_samples)
            self.data_outlet.push_chunk(self.eeg.chunk(n), stamp)
            self.n_pushed = first + n
        self._receive(self.n_pushed)  # markers still in flight: counted, too late for any sample

    def _receive(self, n_samples: int) -> None:
        """Take every marker waiting in the inlet (samples from ``n_samples`` on lie outside the stream)."""
        if self.marker_inlet.channel_format == pylsl.cf_string:  # any bytes: kept as escapes, never an error
            values, stamps, _ = pull_string_chunk(self.marker_inlet, 0.0)
        else:
            values, stamps = self.marker_inlet.pull_chunk(timeout=0.0)
        for value, stamp in zip(values, stamps):
            self._take(value[0], float(stamp), n_samples)

    def _take(self, value: str | float, stamp: float, n_samples: int) -> None:
        report = self.report
        image_id, _ = parse_marker(value)
        if image_id is None:
            report.n_other += 1
            return
        if image_id not in self._ids:
            if not report.unknown[image_id]:
                self.warn(f"marker {value!r} of {self.marker_name!r} names image {image_id!r}, which the simulated "
                          f"world (seed {self.spec.seed}) does not have; such markers add no response (counted)")
            report.unknown[image_id] += 1
            return
        sample = int(round((stamp - self.t0) * self.world.sfreq))
        if not 0 <= sample < n_samples:
            if not self._warned_outside:
                self.warn(f"marker {value!r} is stamped {stamp - self.t0:+.3f} s from the first sample, outside the "
                          f"simulated stream (0 to {n_samples / self.world.sfreq:g} s); such markers are counted only")
                self._warned_outside = True
            report.n_outside += 1
            return
        missed = max(0, min(self.eeg.n_times, self.eeg.next_sample - sample))
        if missed:
            self.warn(f"marker {value!r} arrived more than {self.options.latency_ms:g} ms (the latency) after its "
                      f"timestamp: {missed} of the {self.eeg.n_times} samples of its response were already pushed; "
                      "only the rest is added (counted as late)")
        report.events.append(FollowedEvent(str(value), image_id, self._ids[image_id], sample, missed))
        self.eeg.add(sample, self._ids[image_id])

    def stop(self) -> None:
        """Ask :meth:`run` to return early."""
        self._stop.set()

    def close(self) -> None:
        """Close the outlet and the marker inlet."""
        if self.data_outlet is not None:
            self.data_outlet.close(linger=SOURCE_CLOSE_LINGER_S)
        if self.marker_inlet is not None:
            try:
                self.marker_inlet.close_stream()
            except Exception:  # the stimulus program may already be gone
                pass
        self.data_outlet = self.marker_inlet = None


def follow_markers(spec: SimulationSpec, options: FollowOptions, *, wait_for_consumers: float = 0.0,
                   start_delay: float = 0.0, say: Callable[[str], None] | None = None,
                   warn: Callable[[str], None] = _warn_stderr) -> FollowReport:
    """The whole ``bci simulate --follow-markers`` run: open, wait, stream until ``spec.duration`` or Ctrl-C, report.

    Parameters
    ----------
    spec : SimulationSpec
        The world (EEG).
    options : FollowOptions
        The stimulus program's marker stream and the latency.
    wait_for_consumers : float
        Seconds to wait for an inlet on the data stream before streaming (0: none).
    start_delay : float
        Then wait this many more seconds.
    say : callable, optional
        Progress lines (default: print, flushed): the start line, ``following markers of …``
        just before the first sample, and the summary (:meth:`FollowReport.summary`).
    warn : callable
        Late markers, unknown image ids (default: stderr).

    Returns
    -------
    FollowReport
    """
    say = say or (lambda text: print(text, flush=True))
    sim = FollowSimulation(spec, options, warn=warn)
    try:
        sim.open()
    except BaseException:
        sim.close()
        raise
    say(f"streaming EEG {spec.name!r} ({sim.world.desc.n_channels} ch, {sim.world.sfreq:g} Hz) for "
        f"{spec.duration:g} s with the stimuli of marker stream {sim.marker_name!r} (no marker stream of its own); "
        f"samples are pushed {options.latency_ms:g} ms after their timestamps; Ctrl-C stops")
    play(sim, wait_for_consumers=wait_for_consumers, start_delay=start_delay, say=say,
         start_line=f"following markers of {sim.marker_name!r} from now on")
    say(f"pushed {sim.n_pushed} samples; {sim.report.summary()}")
    return sim.report
