"""LSL producer for the latency benchmarks: an amplifier-like stream plus two marker streams.

Run in its own process (``latency.py`` starts it). Three outlets:

* ``NAME``: type ``EEG``, ``--channels`` float32 channels at ``--rate`` Hz, pushed in
  chunks of ``--chunk`` samples in real time (``--chunks random``: 1-97 samples each,
  seeded). The data is deterministic pink-ish noise
  (first-order low-passed white noise, ~10 µV, looped every 10 s): its content does not
  matter for timing.
* ``NAME-Markers``: string markers ``stim/imgNNNN/labelKK`` (NNNN = marker number).
* ``NAME-Codes``: the same onsets as numbers (``seq % 1000 + 1``, int32), because
  mne-lsl's ``EpochsStream`` accepts numeric events only.

Timing. Sample ``i`` has timestamp ``t0 + i / rate`` (a regular grid, so LSL's
dejitter leaves it alone); a chunk is pushed as soon as the clock reaches the
timestamp of its last sample, and the time of that push is logged. A marker carries
exactly its onset sample's timestamp and is pushed right after the chunk holding
that sample. Onsets are placed so that every window (``--offset`` after the marker,
``--n-times`` samples) ends on the last sample of a chunk: a consumer can then have the
window as soon as that chunk is pushed, and latency measures the consumer rather
than the wait for the rest of a chunk.

At the end ``--log`` (JSON) gets, per marker: number, onset sample, marker time,
window-end time and the push time of the chunk holding the window's last sample,
plus the distribution of push lateness (push time minus due time).

``--replay SESSION --speed N`` instead plays a Zarr session with
:class:`streams.replay.SessionReplayer` (used by ``drift.py``).

Example::

    python -m benchmarks.producer --name BenchEEG --duration 30 --log /tmp/producer.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import percentiles
from streams.description import StreamDescription
from streams.lsl import Outlet, local_clock

#: Event codes cycle through 1..CODE_CYCLE (mne-lsl stores them as int16).
CODE_CYCLE = 1000
#: ``--chunks``: ``fixed`` (``--chunk`` samples each) or ``random`` (1..RANDOM_CHUNK_MAX, seeded).
CHUNKS = ("fixed", "random")
#: Largest chunk of ``--chunks random`` (uniform in 1..97 samples, like irregular amplifier drivers).
RANDOM_CHUNK_MAX = 97


def marker_code(seq: int) -> int:
    """Numeric event code of marker number ``seq`` (1..CODE_CYCLE)."""
    return seq % CODE_CYCLE + 1


def marker_string(seq: int) -> str:
    """String marker of marker number ``seq`` (``stim/imgNNNN/labelKK``)."""
    return f"stim/img{seq:04d}/label{seq % 40:02d}"


def seq_of_marker(value: str) -> int:
    """Inverse of :func:`marker_string`."""
    return int(value.split("/")[1][3:])


def descriptions(name: str, n_channels: int, rate: float) -> tuple[StreamDescription, ...]:
    """Data, string-marker and numeric-code stream descriptions for ``name``."""
    data = StreamDescription(
        name=name, type="EEG", source_id=f"{name}-eeg",
        channel_names=tuple(f"EEG{c + 1:03d}" for c in range(n_channels)),
        nominal_rate=rate, dtype="float32",
    )
    markers = StreamDescription(name=f"{name}-Markers", type="Markers", source_id=f"{name}-markers",
                                channel_names=("marker",), nominal_rate=0.0, dtype="string")
    codes = StreamDescription(name=f"{name}-Codes", type="Markers", source_id=f"{name}-codes",
                              channel_names=("code",), channel_types=("stim",), nominal_rate=0.0,
                              dtype="int32")
    return data, markers, codes


def noise_block(n_samples: int, n_channels: int, seed: int = 0) -> np.ndarray:
    """Deterministic pink-ish noise ``(n_samples, n_channels)`` float32, ~10 µV."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    white = rng.standard_normal((n_samples, n_channels))
    brown = lfilter([1.0], [1.0, -0.95], white, axis=0)
    return (brown / brown.std() * 1e-5).astype(np.float32)


def onset_schedule(rate: float, chunk: int, duration: float, interval: float, lead_in: float,
                   offset: float, n_times: int) -> np.ndarray:
    """Onset samples of the markers: every window ends on a chunk's last sample."""
    off = int(round(offset * rate))
    step = max(chunk, int(round(interval * rate / chunk)) * chunk)
    first = int(math.ceil(lead_in * rate))
    first += (-(first + off + n_times)) % chunk
    n_markers = max(1, int(duration / interval))
    return first + step * np.arange(n_markers)


def chunk_ends(n_total: int, chunk: int, chunks: str, window_ends: np.ndarray, seed: int) -> np.ndarray:
    """Index of the last sample of every chunk to push, in order.

    ``fixed``: every ``chunk`` samples. ``random``: sizes drawn uniformly from
    1..:data:`RANDOM_CHUNK_MAX` (seeded), and every window's last sample (``window_ends``)
    also ends a chunk, so a window can be had as soon as that chunk is pushed.
    """
    if chunks == "fixed":
        return np.minimum(np.arange(chunk, n_total + chunk, chunk), n_total) - 1
    rng = np.random.default_rng(seed + 1)
    sizes = rng.integers(1, RANDOM_CHUNK_MAX + 1, size=n_total)
    ends = np.cumsum(sizes) - 1
    ends = ends[ends < n_total - 1]
    return np.union1d(np.union1d(ends, window_ends[window_ends < n_total]), [n_total - 1]).astype(np.int64)


def wait_for_consumers(data: Outlet, markers: tuple[Outlet, ...], timeout: float) -> bool:
    """Block until the data outlet and at least one marker outlet have an inlet."""
    end = time.monotonic() + timeout
    if not data.wait_for_consumers(timeout):
        return False
    while time.monotonic() < end:
        if any(m.have_consumers for m in markers):
            return True
        time.sleep(0.05)
    return False


def stream(args: argparse.Namespace) -> dict:
    """Push the synthetic session in real time; return the log."""
    d_data, d_markers, d_codes = descriptions(args.name, args.channels, args.rate)
    align = args.chunk if args.chunks == "fixed" else 1  # random chunks are split at window ends instead
    onsets = onset_schedule(args.rate, align, args.duration, args.interval, args.lead_in,
                            args.offset, args.n_times)
    n_total = int(onsets[-1] + round((args.offset + args.n_times / args.rate + args.tail) * args.rate))
    block = noise_block(10 * int(args.rate) // args.chunk * args.chunk, args.channels, args.seed)
    end_index = onsets + int(round(args.offset * args.rate)) + args.n_times - 1
    ends = chunk_ends(n_total, args.chunk, args.chunks, end_index, args.seed)
    n_chunks = len(ends)
    needed = {int(np.searchsorted(ends, i)): k for k, i in enumerate(end_index)}
    with Outlet(d_data) as data, Outlet(d_markers) as markers, Outlet(d_codes) as codes:
        print("ready", flush=True)
        connected = wait_for_consumers(data, (markers, codes), args.wait_consumers)
        time.sleep(args.settle)
        print("streaming" if connected else "streaming (no consumer connected)", flush=True)
        t0 = local_clock() + 0.05
        lateness = np.empty(n_chunks)
        push_times = np.full(len(onsets), np.nan)
        next_marker = 0
        first = 0
        for j, last in enumerate(ends.tolist()):
            due = t0 + last / args.rate
            delay = due - local_clock()
            if delay > 0:
                time.sleep(delay)
            now = local_clock()
            data.push_chunk(_block_rows(block, first, last - first + 1), due)
            lateness[j] = now - due
            if j in needed:
                push_times[needed[j]] = now
            while next_marker < len(onsets) and onsets[next_marker] <= last:
                t_m = t0 + onsets[next_marker] / args.rate
                markers.push_sample([marker_string(next_marker)], t_m)
                codes.push_sample([marker_code(next_marker)], t_m)
                next_marker += 1
            first = last + 1
        time.sleep(args.linger)
    rows = [
        {"seq": k, "onset_sample": int(s), "marker_time": t0 + s / args.rate,
         "window_end_time": t0 + e / args.rate, "window_end_push_time": float(p)}
        for k, (s, e, p) in enumerate(zip(onsets, end_index, push_times))
    ]
    return {
        "name": args.name, "t0": t0, "rate": args.rate, "chunk": args.chunk, "chunks": args.chunks,
        "channels": args.channels, "n_chunks": n_chunks, "chunk_sizes": percentiles(np.diff(ends, prepend=-1)),
        "consumer_connected": connected, "markers": rows,
        "push_lateness_ms": percentiles(lateness * 1000.0),
    }


def _block_rows(block: np.ndarray, first: int, n: int) -> np.ndarray:
    """``n`` consecutive rows of the looped noise ``block`` from sample ``first`` (wrapping)."""
    b = first % len(block)
    if b + n <= len(block):
        return block[b : b + n]
    return np.concatenate((block[b:], block[: n - (len(block) - b)]))


def replay(args: argparse.Namespace) -> dict:
    """Play a Zarr session over LSL at ``--speed``; return a short log."""
    from streams.replay import SessionReplayer

    rep = SessionReplayer(args.replay, speed=args.speed, name_suffix=args.suffix)
    rep.open()
    print("ready", flush=True)
    connected = rep.wait_for_consumers(args.wait_consumers)
    time.sleep(args.settle)
    print("streaming" if connected else "streaming (no consumer connected)", flush=True)
    t_start = local_clock()
    rep.play()
    t_end = local_clock()
    time.sleep(args.linger)
    rep.close()
    return {"replay": str(args.replay), "speed": args.speed, "offset": rep.offset, "t_first": rep.t_first,
            "duration_session_s": rep.duration, "wall_s": t_end - t_start, "names": [d.name for d in rep.descs],
            "consumer_connected": connected}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.make_parser(__doc__, "python -m benchmarks.producer --name BenchEEG --duration 30", raw=True)
    p.add_argument("--name", default="BenchEEG", help="data stream name (markers: NAME-Markers, NAME-Codes)")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--rate", type=float, default=1000.0, help="Hz")
    p.add_argument("--chunk", type=int, default=10, help="samples per pushed chunk (--chunks fixed)")
    p.add_argument("--chunks", choices=CHUNKS, default="fixed",
                   help=f"fixed: --chunk samples each; random: 1..{RANDOM_CHUNK_MAX} samples, seeded by --seed")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of markers (one every --interval)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between markers")
    p.add_argument("--lead-in", type=float, default=1.0, help="seconds of data before the first marker")
    p.add_argument("--tail", type=float, default=0.5, help="seconds of data after the last window")
    p.add_argument("--offset", type=float, default=0.020, help="window start after the marker (s)")
    p.add_argument("--n-times", type=int, default=440, help="window length (samples)")
    common.add_seed(p)
    p.add_argument("--wait-consumers", type=float, default=60.0, help="seconds to wait for inlets")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between 'consumers connected' and t0")
    p.add_argument("--linger", type=float, default=1.0, help="seconds to keep the outlets open at the end")
    p.add_argument("--log", type=Path, default=None, help="write the JSON log here")
    p.add_argument("--replay", type=Path, default=None, metavar="SESSION", help="play this Zarr session instead")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (with --replay)")
    p.add_argument("--suffix", default="-bench", help="stream-name suffix (with --replay)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = replay(args) if args.replay is not None else stream(args)
    if args.log is not None:
        common.write_json(args.log, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
