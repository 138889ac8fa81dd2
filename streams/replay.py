"""Play a recorded Zarr session back as LSL streams with its original timing.

Every stream of the session gets an outlet with its recorded description (so a
client resolves it by the same name and type). Samples are pushed in small
chunks when they are due: the recorded timestamps are shifted to "now" by one
constant offset (and divided by ``speed``), so relative timing between streams —
EEG versus markers — is preserved exactly at ``speed=1``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from streams._context import PlayingContext
from streams.description import StreamDescription
from streams.lsl import SOURCE_CLOSE_LINGER_S, Outlet, local_clock
from streams.session import SessionReader

logger = logging.getLogger(__name__)


@dataclass
class ReplayPlan:
    """When each chunk of each stream is due, in session time.

    ``due`` is sorted; row ``i`` says: push samples ``start[i]:stop[i]`` of stream
    ``stream[i]`` once the session clock reaches ``due[i]`` (the time of the chunk's
    last sample).
    """

    due: np.ndarray
    stream: np.ndarray
    start: np.ndarray
    stop: np.ndarray


def plan_chunks(times: list[np.ndarray], chunk_samples: list[int]) -> ReplayPlan:
    """Merge the chunk schedules of several streams into one time-ordered plan."""
    dues, streams, starts, stops = [], [], [], []
    for k, (t, size) in enumerate(zip(times, chunk_samples)):
        n = len(t)
        if n == 0:
            continue
        start = np.arange(0, n, size)
        stop = np.minimum(start + size, n)
        dues.append(t[stop - 1])
        streams.append(np.full(len(start), k))
        starts.append(start)
        stops.append(stop)
    if not dues:
        empty = np.empty(0, dtype=np.int64)
        return ReplayPlan(np.empty(0), empty, empty, empty)
    due = np.concatenate(dues)
    stream = np.concatenate(streams)
    order = np.lexsort((stream, due))
    return ReplayPlan(due[order], stream[order], np.concatenate(starts)[order], np.concatenate(stops)[order])


class SessionReplayer(PlayingContext):
    """Replay a session over LSL.

    Parameters
    ----------
    session : SessionReader or path
        The recorded session.
    speed : float
        Playback speed factor (1 = real time, 4 = four times faster).
    streams : list of str, optional
        Keys or names of the streams to play (default: all).
    name_suffix : str
        Appended to every stream name and source_id (e.g. ``"-replay"``) to avoid
        clashing with a live stream of the same name.
    chunk_seconds : float
        Regular streams are pushed in chunks of this many seconds (default 10 ms).
    """

    def __init__(
        self,
        session: SessionReader | str,
        *,
        speed: float = 1.0,
        streams: list[str] | None = None,
        name_suffix: str = "",
        chunk_seconds: float = 0.01,
    ) -> None:
        self.session = session if isinstance(session, SessionReader) else SessionReader(session)
        if not (isinstance(speed, (int, float)) and np.isfinite(speed) and speed > 0):
            raise ValueError(f"speed={speed!r} must be a positive number (1 = real time)")
        self.speed = float(speed)
        keys = self.session.streams if streams is None else [self.session.find(s) for s in streams]
        if not keys:
            raise ValueError(f"session {self.session.path!s} has no streams to replay")
        self.keys = keys
        self.descs: list[StreamDescription] = []
        for key in keys:
            d = self.session.description(key)
            if name_suffix:
                d = d.renamed(d.name + name_suffix, d.source_id + name_suffix)
            self.descs.append(d)
        self._data = [self.session.data(k) for k in keys]
        self._times = [self.session.times(k) for k in keys]
        sizes = [
            max(1, int(round(d.nominal_rate * chunk_seconds))) if d.is_regular else 1 for d in self.descs
        ]
        self.plan = plan_chunks(self._times, sizes)
        starts = [t[0] for t in self._times if len(t)]
        self.t_first = float(min(starts)) if starts else 0.0
        self.t_last = float(max(t[-1] for t in self._times if len(t))) if starts else 0.0
        self.outlets: list[Outlet] = []
        self.n_pushed = [0] * len(keys)
        self.offset: float | None = None
        self._stop = threading.Event()

    @property
    def duration(self) -> float:
        """Session length in seconds (at speed 1)."""
        return self.t_last - self.t_first

    def open(self) -> None:
        """Create the outlets (before :meth:`play`, so clients can connect first)."""
        if not self.outlets:
            self.outlets = [Outlet(d) for d in self.descs]

    def wait_for_consumers(self, timeout: float) -> bool:
        """Wait until every outlet has a consumer or ``timeout`` passes."""
        end = time.monotonic() + timeout
        return all(o.wait_for_consumers(max(0.0, end - time.monotonic())) for o in self.outlets)

    def play(self, lead: float = 0.2) -> None:
        """Push everything with the original timing; returns when done or stopped."""
        self.open()
        self.offset = local_clock() + lead - self.t_first / self.speed
        plan = self.plan
        for i in range(len(plan.due)):
            if self._stop.is_set():
                break
            due = self.map_time(plan.due[i])
            delay = due - local_clock()
            if delay > 0 and self._stop.wait(delay):
                break
            k, a, b = plan.stream[i], plan.start[i], plan.stop[i]
            self.outlets[k].push_chunk(self._data[k][a:b], self.map_time(self._times[k][a:b]))
            self.n_pushed[k] = int(b)

    def map_time(self, t: np.ndarray | float) -> np.ndarray | float:
        """Session time → LSL time of the replay."""
        return self.offset + np.asarray(t, dtype=np.float64) / self.speed if np.ndim(t) else (
            self.offset + float(t) / self.speed
        )

    def stop(self) -> None:
        """Ask :meth:`play` to return early."""
        self._stop.set()

    def close(self) -> None:
        """Close the outlets (clients see the streams end)."""
        for o in self.outlets:
            o.close(linger=SOURCE_CLOSE_LINGER_S)
        self.outlets = []
