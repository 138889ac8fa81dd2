"""Replay throughput at ``--speed max``: a simulated session decoded straight from Zarr.

1. ``streams.simulate.simulate_to_session`` writes a session (128 ch at 1 kHz, string
   markers; default 120 s) into a temporary folder (or ``--session`` reuses one).
2. ``bci.runtime.replay.decode_session`` feeds it through the pipeline exactly as
   ``bci replay SESSION --decode --speed max`` does: default preprocessing
   (0.5-40 Hz + 50 Hz notch + average reference), event-locked windows (440 samples at
   marker + 20 ms), the untrained default ``eeg_convnet`` on CPU, results to a
   ``ListSink``. The wall time includes reading the Zarr arrays. The time spent in
   ``OnlinePreprocessor.process`` / ``apply_window`` and in the encoder is measured by
   wrapping those calls; "rest" is everything else (Zarr read, ring buffer, windowing,
   records).
3. Peer, same data, same process, same run: mne's offline path,
   ``mne.io.RawArray`` → ``set_eeg_reference('average')`` → ``raw.filter`` (IIR, the very
   same SOS cascade as ours, ``phase='forward'``) → ``mne.Epochs`` (tmin 0.020, tmax 0.459)
   → ``get_data()``. No encoder: compare it with our wall time minus encoding.

``--chunk-sizes default,10`` decodes the session once per chunk size: ``default`` is
``decode_session``'s own (one second of samples, what ``bci replay --decode --speed max``
uses), 10 is the live chunking; the windows are the same numbers for every chunking.

Example::

    python -m benchmarks.replay_speed --duration 120
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.common import format_table, session_keys
from streams._checks import check_int

OFFSET = 0.020
N_TIMES = 440


class _Timer:
    """Wrap a callable and add up the seconds spent in it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1


class _TimedEncoder:
    """Stands in for the pipeline's :class:`~bci.runtime.inference.Encoder`, timing each call."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self.timer = _Timer(encoder)

    def __call__(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        return self.timer(windows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


def decode_ours(session: Path, checkpoint: Path, chunk_size: int | None) -> dict[str, Any]:
    """``decode_session`` on the whole session, with the time split."""
    from bci.runtime.assemble import load_encoder, pipeline_factory
    from bci.runtime.sinks import ListSink
    from bci.runtime.replay import decode_session
    from streams.session import SessionReader

    reader = SessionReader(session)
    data_key, marker_key = session_keys(reader)
    encoder = load_encoder(checkpoint, device="cpu")
    sink = ListSink()
    pipeline = pipeline_factory(encoder, [sink])(reader.description(data_key))
    process, window = _Timer(pipeline.pre.process), _Timer(pipeline.pre.apply_window)
    pipeline.pre.process, pipeline.pre.apply_window = process, window
    timed = _TimedEncoder(pipeline.encoder)
    pipeline.encoder = timed
    cpu0, t0 = time.process_time(), time.perf_counter()
    decode_session(reader, pipeline, data_key=data_key, marker_key=marker_key, chunk_size=chunk_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    pipeline.close()
    session_s = reader.n_samples(data_key) / reader.description(data_key).nominal_rate
    windows = [r for r in sink.records if r["type"] == "window"]
    pre = process.seconds + window.seconds
    enc = timed.timer.seconds
    return {
        "chunk_size": chunk_size or "default", "session_s": session_s, "wall_s": wall, "cpu_s": cpu,
        "x_real_time": session_s / wall, "windows": len(windows),
        "dropped": len(sink.records) - len(windows),
        "preprocess_s": pre, "encode_s": enc, "rest_s": wall - pre - enc,
        "encoder_calls": timed.timer.calls, "process_calls": process.calls,
        "x_real_time_without_encoder": session_s / (wall - enc),
        "checksum": float(np.sum([w["embedding"][0] for w in windows])),
    }


def time_zarr_read(session: Path) -> float:
    """Seconds to read the EEG data and times of the session from Zarr (once)."""
    from streams.session import SessionReader

    t = time.perf_counter()
    reader = SessionReader(session)
    data_key, _ = session_keys(reader)
    reader.data(data_key)
    reader.times(data_key)
    return time.perf_counter() - t


def mne_offline(session: Path) -> dict[str, Any]:
    """mne's offline path on the same data (data already read from Zarr)."""
    mne = common.require("mne")

    from bci.preprocessing import OnlinePreprocessor, PreprocessConfig
    from streams.session import SessionReader

    reader = SessionReader(session)
    data_key, marker_key = session_keys(reader)
    desc = reader.description(data_key)
    data, times = reader.data(data_key), reader.times(data_key)
    m_times, _ = reader.markers(marker_key)  # every marker opens a window, as in ours
    onsets = np.searchsorted(times, m_times - 0.5 / desc.nominal_rate)  # our timing rule: nearest sample
    sos = OnlinePreprocessor(PreprocessConfig(), desc.nominal_rate, list(desc.channel_names)).sos
    steps: dict[str, float] = {}
    t = time.perf_counter()
    info = mne.create_info(list(desc.channel_names), desc.nominal_rate, "eeg", verbose=False)
    raw = mne.io.RawArray(data.T.astype(np.float64), info, verbose=False)
    steps["RawArray_s"] = time.perf_counter() - t
    t1 = time.perf_counter()
    raw.set_eeg_reference("average", projection=False, verbose=False)
    steps["reference_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    raw.filter(0.5, 40.0, method="iir", iir_params={"sos": sos}, phase="forward", verbose=False)
    steps["filter_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    events = np.column_stack([onsets, np.zeros_like(onsets), np.ones_like(onsets)]).astype(int)
    epochs = mne.Epochs(raw, events, tmin=OFFSET, tmax=OFFSET + (N_TIMES - 1) / desc.nominal_rate,
                        baseline=None, preload=True, reject=None, flat=None, proj=False, verbose=False)
    out = epochs.get_data(copy=False)
    steps["epochs_s"] = time.perf_counter() - t1
    wall = time.perf_counter() - t
    session_s = len(times) / desc.nominal_rate
    return {"session_s": session_s, "wall_s": wall, "x_real_time": session_s / wall, "epochs": int(out.shape[0]),
            "epoch_shape": list(out.shape[1:]), **steps}


def print_report(ours: list[dict], mne_r: dict, read_s: float) -> None:
    rows = [
        [f"ours, chunk {r['chunk_size']}", r["windows"], r["wall_s"], r["x_real_time"], r["preprocess_s"],
         r["encode_s"], r["rest_s"], r["x_real_time_without_encoder"]]
        for r in ours
    ]
    if mne_r:
        rows.append(["mne offline (no encoder)", mne_r["epochs"], mne_r["wall_s"], mne_r["x_real_time"],
                     mne_r["reference_s"] + mne_r["filter_s"], float("nan"),
                     mne_r["RawArray_s"] + mne_r["epochs_s"], mne_r["x_real_time"]])
    print(format_table(["path", "windows", "wall s", "x real time", "preprocess s", "encode s", "rest s",
                        "x real time w/o encoder"], rows))
    print(f"\nZarr read of the EEG data alone (timed separately, inside 'rest' for ours): {read_s:.2f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.make_parser(__doc__, "python -m benchmarks.replay_speed --duration 120")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of simulated session [120]")
    common.add_seed(p)
    p.add_argument("--session", type=Path, default=None, help="use this Zarr session instead of simulating one")
    p.add_argument("--chunk-sizes", default="default,10",
                   help="comma-separated chunk sizes fed to decode_session; 'default' = its own [default,10]")
    p.add_argument("--no-mne", action="store_true", help="skip the mne peer")
    common.add_out(p, "replay_speed")
    args = p.parse_args(argv)
    try:
        args.chunks = [None if c.strip() == "default" else int(c) for c in args.chunk_sizes.split(",") if c.strip()]
    except ValueError:
        p.error(f"--chunk-sizes {args.chunk_sizes!r} must be 'default' or integers, e.g. default,10,100")
    if not args.chunks:
        p.error(f"--chunk-sizes {args.chunk_sizes!r}: give at least one size >= 1")
    for chunk in args.chunks:
        if chunk is not None:
            common.checked(p, check_int, "--chunk-sizes", chunk, low=1)
    if args.duration <= 1:
        p.error(f"--duration {args.duration!r} must be more than 1 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = common.machine_info()
    with common.scratch_dir() as tmp_path:
        session, sim_s = common.session_or_simulate(args.session, tmp_path, args.duration, args.seed)
        if sim_s is not None:
            print(f"simulated {args.duration:g} s in {sim_s:.1f} s", flush=True)
        checkpoint = common.make_default_checkpoint(tmp_path / "eeg_convnet")
        read_s = time_zarr_read(session)
        ours = []
        for chunk in args.chunks:
            ours.append(decode_ours(session, checkpoint, chunk))
            print(f"ours, chunk {chunk or 'default'}: {ours[-1]['x_real_time']:.0f}x real time", flush=True)
        mne_r = {} if args.no_mne else common.run_optional("the mne offline peer", mne_offline, session) or {}
    print()
    print_report(ours, mne_r, read_s)
    sections = {"config": {"duration_s": args.duration, "seed": args.seed, "chunk_sizes": args.chunks,
                           "simulate_s": sim_s, "session": None if args.session is None else str(args.session)},
                "zarr_read_s": read_s, "ours": ours, "mne_offline": mne_r}
    print(f"\nwrote {common.write_report(args.out, machine, sections, benchmark='replay_speed')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
