"""Damaged session stores on a real file system: checksums, one clear error, --verify, --skip-damaged.

A 30 s simulated session (1 kHz, 128 channels, one 1000-sample chunk per second) is damaged the way a
bad disk or an interrupted copy leaves it: 100 seeded random bytes over one chunk file, a truncated
chunk file, a deleted one. Old stores (the codecs sessions had before checksums: bytes + zstd, all-fill
chunks not written) are rewritten here with zarr directly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
import zarr.errors

from bci.cli.main import main
from bci.runtime.assemble import load_encoder, pipeline_factory
from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.runtime.replay import decode_session
from bci.runtime.sinks import ListSink
from offline.data.build import WindowOptions, epochs_from_sessions
from streams.errors import DamagedChunkError
from streams.integrity import verify_session
from streams.replay import SessionReplayer
from streams.session import SessionReader
from streams.simulate import SimulationSpec, simulate_to_session

REPO = Path(__file__).resolve().parents[1]
CHUNK = 12  # the damaged data chunk: samples 12000-12999, 12.000-12.999 s
FIRST, LAST = CHUNK * 1000, CHUNK * 1000 + 999
NOISE = ("Traceback", "Task was destroyed", "never retrieved", "cannot schedule new futures")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "sim.zarr"
    return simulate_to_session(SimulationSpec(name="SimEEG", duration=30.0, seed=3), path)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(build_model(default_config("eeg_convnet", n_classes=40)),
                           tmp_path_factory.mktemp("model") / "ck")


def _copy(clean: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean, tmp_path / "session.zarr"))


def _file(session: Path, array: str = "data", chunk: int = CHUNK) -> Path:
    """The chunk file of ``chunk`` of SimEEG's ``array`` (data chunks are c/<i>/0, time chunks c/<i>)."""
    base = session / "streams" / "SimEEG" / array / "c" / str(chunk)
    return base / "0" if array == "data" else base


def _overwrite_bytes(path: Path, seed: int = 0, offset: int | None = None) -> None:
    """100 random bytes (seeded) over ``path``, at a seeded offset unless ``offset`` is given."""
    rng = np.random.default_rng(seed)
    raw = bytearray(path.read_bytes())
    at = int(rng.integers(0, len(raw) - 100)) if offset is None else offset
    raw[at:at + 100] = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rewrite_without_checksums(session: Path) -> None:
    """Rewrite every stream array with the codecs sessions had before checksums (zarr's defaults)."""
    root = zarr.open_group(session, mode="r+")
    for key in root.attrs["streams"]:
        group = root[f"streams/{key}"]
        for name in ("data", "time"):
            old = group[name]
            values, chunks, fill, dims = old[:], old.chunks, old.fill_value, old.metadata.dimension_names
            dtype = str if values.dtype.kind in "OTU" else values.dtype
            del group[name]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
                new = group.create_array(name, shape=values.shape, chunks=chunks, dtype=dtype, fill_value=fill,
                                         dimension_names=dims)
            new[:] = values


def test_new_sessions_store_crc32c_checksums_and_read_the_same_values(clean: Path, tmp_path: Path) -> None:
    reader = SessionReader(clean)
    meta = json.loads((clean / "streams" / "SimEEG" / "data" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "zstd", "crc32c"]
    assert all(reader.has_checksums(k) for k in reader.streams)
    old = _copy(clean, tmp_path)
    _rewrite_without_checksums(old)
    legacy = SessionReader(old)
    assert not legacy.has_checksums("SimEEG")
    for key in reader.streams:  # only the chunk encoding differs, never a value
        np.testing.assert_array_equal(reader.data(key), legacy.data(key))
        np.testing.assert_array_equal(reader.times(key), legacy.times(key))


def test_replay_decode_of_a_damaged_chunk_is_one_line_naming_stream_and_time(clean: Path, tmp_path: Path,
                                                                             model: Path) -> None:
    session = _copy(clean, tmp_path)
    _overwrite_bytes(_file(session))
    res = subprocess.run([sys.executable, "-m", "bci.cli", "replay", str(session), "--decode", "--model", str(model),
                          "--speed", "max", "--device", "cpu", "--results-stream", ""],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert not any(n in res.stderr for n in NOISE), res.stderr
    line = lines[0]
    assert line.startswith("bci replay: error: ")
    assert f"stream 'SimEEG' 'data' chunk {CHUNK} (samples {FIRST}-{LAST}, 12.000-12.999 s)" in line
    assert "checksum mismatch" in line and "--verify" in line and "--skip-damaged" in line


def test_verify_lists_exactly_the_damaged_chunk(clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(clean), "--verify", "--no-progress"]) == 0
    assert "0 damaged" in capsys.readouterr().out
    session = _copy(clean, tmp_path)
    _overwrite_bytes(_file(session))
    assert main(["info", str(session), "--verify", "--no-progress"]) == 1
    out = capsys.readouterr().out
    damaged = [line.strip() for line in out.splitlines() if "DAMAGED" in line]
    assert damaged == [f"DAMAGED stream 'SimEEG' 'data' chunk {CHUNK} (samples {FIRST}-{LAST}, 12.000-12.999 s): "
                       "checksum mismatch (crc32c)"]
    report = verify_session(session)
    assert [(d.stream, d.array, d.chunk, d.start, d.stop) for d in report.damaged] == [
        ("SimEEG", "data", CHUNK, FIRST, LAST + 1)]
    assert report.exit_code == 1


def test_skip_damaged_decodes_the_rest_and_drops_the_markers_of_the_damaged_range(
        clean: Path, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--decode", "--model", str(model), "--speed", "max", "--device", "cpu", "--results-stream", ""]
    assert main(["replay", str(clean), *args, "--events", str(tmp_path / "clean.jsonl")]) == 0
    session = _copy(clean, tmp_path)
    _overwrite_bytes(_file(session))
    capsys.readouterr()
    assert main(["replay", str(session), *args, "--skip-damaged", "--events", str(tmp_path / "skip.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "skipped damaged chunks of 'SimEEG': 1000 samples, 1.000 s in 1 chunk(s)" in out
    ref = [e for e in _events(tmp_path / "clean.jsonl") if e["type"] == "window"]
    assert len(ref) == 29 and not [e for e in _events(tmp_path / "clean.jsonl") if e["type"] == "dropped"]
    events = _events(tmp_path / "skip.jsonl")
    got = {(e["marker"], e["marker_time"]): e for e in events if e["type"] in ("window", "dropped")}
    gaps = [e for e in events if e["type"] == "gap"]  # the damaged range is a gap record too
    assert len(gaps) == 1 and f"damaged chunk: stream 'SimEEG' 'data' chunk {CHUNK}" in gaps[0]["reason"], gaps
    assert len(got) == len(ref)  # every marker: a window or a dropped record
    hit = 0
    for e in ref:
        rec = got[(e["marker"], e["marker_time"])]
        touches = e["window_start_time"] <= 12.9995 and e["window_end_time"] >= 11.9995
        touches |= 11.9995 <= e["marker_time"] <= 12.9995
        if touches:
            hit += 1
            assert rec["type"] == "dropped" and rec["reason"] == "gap", rec
            assert f"damaged chunk: stream 'SimEEG' 'data' chunk {CHUNK}" in rec["detail"], rec
        else:
            assert rec["type"] == "window", rec
            assert not (11.9995 < rec["window_start_time"] < 12.9995 or 11.9995 < rec["window_end_time"] < 12.9995)
    assert hit >= 1


def test_epochs_skip_damaged_cuts_the_rest(clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref = epochs_from_sessions([clean], tmp_path / "ref.zarr")
    session = _copy(clean, tmp_path)
    _overwrite_bytes(_file(session))
    assert main(["epochs", str(session), str(tmp_path / "no.zarr"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'data' chunk {CHUNK} (samples {FIRST}-{LAST}, 12.000-12.999 s)" in err
    assert not (tmp_path / "no.zarr").exists()
    assert main(["epochs", str(session), str(tmp_path / "skip.zarr"), "--no-progress", "--skip-damaged"]) == 0
    assert f"skipped damaged chunks: 1, 1000 samples: session.zarr: stream 'SimEEG' 'data' chunk {CHUNK}" in \
        capsys.readouterr().out
    report = epochs_from_sessions([session], tmp_path / "lib.zarr", WindowOptions(skip_damaged=True))
    n_dropped = report.dropped.get("gap", 0)
    assert n_dropped >= 1 and report.n_epochs + n_dropped == ref.n_epochs
    assert report.sessions[0]["damaged"][0]["start"] == FIRST


def test_truncated_chunk_file_is_damaged(clean: Path, tmp_path: Path) -> None:
    session = _copy(clean, tmp_path)
    f = _file(session)
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # an interrupted copy
    with pytest.raises(DamagedChunkError, match=rf"chunk {CHUNK} \(samples {FIRST}-{LAST}, 12.000-12.999 s\)"):
        SessionReader(session).data("SimEEG")
    assert [(d.chunk, d.start) for d in verify_session(session).damaged] == [(CHUNK, FIRST)]


def test_deleted_chunk_files_are_reported_missing_not_read_as_zeros(clean: Path, tmp_path: Path) -> None:
    session = _copy(clean, tmp_path)
    _file(session).unlink()
    _file(session, "time", 20).unlink()
    with pytest.raises(DamagedChunkError, match=r"'data' chunk 12 .*chunk file missing"):
        SessionReader(session).data("SimEEG")
    with pytest.raises(DamagedChunkError, match=r"'time' chunk 20 \(samples 20000-20999, time unknown \(between "
                                                r"19.999 and 21.000 s\)\): chunk file missing"):
        SessionReader(session).times("SimEEG")
    report = verify_session(session)
    assert [(d.array, d.chunk) for d in report.damaged] == [("data", 12), ("time", 20)]
    reader = SessionReader(session, skip_damaged=True)
    assert len(reader.data("SimEEG")) == len(reader.times("SimEEG")) == 28000
    assert not (reader.data("SimEEG") == 0).all(axis=1).any()  # no zero rows from a missing chunk


def test_skip_damaged_replay_over_lsl_leaves_the_damaged_samples_out(clean: Path, tmp_path: Path) -> None:
    session = _copy(clean, tmp_path)
    _overwrite_bytes(_file(session))
    with pytest.raises(DamagedChunkError):
        SessionReplayer(session)
    replayer = SessionReplayer(SessionReader(session, skip_damaged=True))  # what `bci replay --skip-damaged` plays
    times = replayer._times[replayer.keys.index("SimEEG")]
    assert len(times) == 29000 and np.isclose(times[FIRST] - times[FIRST - 1], 1.001)
    assert len(replayer._data[replayer.keys.index("SimEEG")]) == 29000
    assert replayer.plan.stop.max() <= 29000


def test_sliding_windows_never_span_a_damaged_range(clean: Path, tmp_path: Path, model: Path) -> None:
    session = _copy(clean, tmp_path)
    _overwrite_bytes(_file(session))
    reader = SessionReader(session, skip_damaged=True)
    sink = ListSink()
    # hop 0.3 s: windows at 11.7 s (and 12.0, 12.3, 12.6 s) would reach across the damaged 12.000-12.999 s
    pipeline = pipeline_factory(load_encoder(model, device="cpu"), [sink], hop=0.3)(reader.description("SimEEG"))
    decode_session(reader, pipeline, data_key="SimEEG", marker_key=None)
    windows = [r for r in sink.records if r["type"] == "window"]
    assert len(windows) > 40
    assert all(r["window_end_time"] < 12.0 or r["window_start_time"] > 12.9995 for r in windows)


def test_old_store_without_checksums_opens_verifies_and_detects_what_zstd_can(clean: Path, tmp_path: Path) -> None:
    session = _copy(clean, tmp_path)
    _rewrite_without_checksums(session)
    report = verify_session(session)
    assert report.ok and "no checksums (older writer): decoded every chunk" in str(report)
    # a damaged zstd frame header: detected, as with checksums
    _overwrite_bytes(_file(session), offset=0)
    assert [(d.chunk, d.start) for d in verify_session(session).damaged] == [(CHUNK, FIRST)]
    with pytest.raises(DamagedChunkError, match=r"Zstd decompression error"):
        SessionReader(session).data("SimEEG")
    # without checksums, bytes changed inside a stored zstd block decode silently: what --verify cannot see
    other = _file(session, chunk=3)
    _overwrite_bytes(other, seed=1, offset=len(other.read_bytes()) // 2)
    assert [d.chunk for d in verify_session(session).damaged] == [CHUNK]
    # a missing data chunk of an old store may be genuine (its writer left out all-zero chunks): a note, no error
    _file(session, chunk=5).unlink()
    report = verify_session(session)
    assert [d.chunk for d in report.damaged] == [CHUNK]
    assert any("chunk 5" in n and "may be genuine" in n for n in report.notes)


def test_a_failed_read_leaves_no_zarr_task_pending(clean: Path, tmp_path: Path) -> None:
    """zarr does not cancel a read's other chunk tasks when one fails; they must end before the error is shown."""
    import asyncio

    from zarr.core.sync import _get_loop

    from streams._chunks import drain_zarr_tasks

    session = _copy(clean, tmp_path)
    _overwrite_bytes(_file(session, chunk=0), offset=0)
    array = zarr.open_group(session, mode="r")["streams/SimEEG/data"]
    with pytest.raises(ValueError, match="checksum"):
        array[:]
    drain_zarr_tasks()

    async def pending() -> int:
        return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])

    assert asyncio.run_coroutine_threadsafe(pending(), _get_loop()).result(10) == 0
