"""Zarr sessions: SessionWriter / SessionReader on real stores under tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

import streams.session as session_mod
from streams.description import StreamDescription
from streams.errors import OutputExistsError, SessionFormatError, StreamNotFoundError
from streams.session import SCHEMA_NAME, SCHEMA_VERSION, SessionReader, SessionWriter

REPO = Path(__file__).resolve().parents[1]


def _eeg(n_channels: int = 8, rate: float = 1000.0, name: str = "Amp EEG", **kw) -> StreamDescription:
    names = kw.pop("channel_names", tuple(f"ch{i:02d}" for i in range(n_channels)))
    return StreamDescription(name, "EEG", f"{name}-sid", names, nominal_rate=rate, **kw)


def _markers(name: str = "Task-Markers") -> StreamDescription:
    return StreamDescription(name, "Markers", f"{name}-sid", ("marker",), nominal_rate=0.0, dtype="string")


def _annotations() -> StreamDescription:
    return StreamDescription("Ann", "Annotations", "ann-sid", ("x", "y", "z"), nominal_rate=0.0, dtype="float64")


def _odd_chunks(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of random sizes 1..137 covering range(n)."""
    out, i = [], 0
    while i < n:
        step = int(rng.integers(1, 138))
        out.append((i, min(n, i + step)))
        i += step
    return out


def _stored_rows(path: Path, key: str, name: str = "data") -> int:
    """Rows on disk as the array metadata says right now (what a crash would leave)."""
    meta = json.loads((path / "streams" / key / name / "zarr.json").read_text())
    return int(meta["shape"][0])


# ---------------------------------------------------------------------- round trip


def test_round_trip_regular_string_and_irregular_streams(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 5321
    eeg = _eeg()
    data = rng.standard_normal((n, 8)).astype(np.float32) * np.float32(1e-5)
    times = 1234.5 + np.arange(n) / 1000.0 + rng.normal(0, 1e-5, n)  # jittered: bit-exact check matters
    marker_values = ["stim/img0001/cat", "", "ünïcødé ✓", "stim/img0002/dog", "end"]
    marker_times = np.sort(rng.uniform(1234.5, 1240.0, len(marker_values)))
    ann = rng.standard_normal((7, 3))
    ann_times = np.sort(rng.uniform(1234.5, 1240.0, 7))
    out = tmp_path / "rt.zarr"
    with SessionWriter(out, attrs={"subject": "S01", "run": 3}) as w:
        k_eeg, k_mk, k_ann = w.add_stream(eeg), w.add_stream(_markers()), w.add_stream(_annotations())
        mi = ai = 0
        for a, b in _odd_chunks(rng, n):
            w.append(k_eeg, data[a:b], times[a:b])
            if mi < len(marker_values) and marker_times[mi] <= times[b - 1]:
                w.append(k_mk, [[marker_values[mi]]], marker_times[mi : mi + 1])
                mi += 1
            if ai < len(ann) and ann_times[ai] <= times[b - 1]:
                w.append(k_ann, ann[ai : ai + 2], ann_times[ai : ai + 2])
                ai += 2
        w.append(k_mk, np.array([[v] for v in marker_values[mi:]], dtype=object), marker_times[mi:])
        w.append(k_ann, ann[ai:], ann_times[ai:])
        assert w.keys == [k_eeg, k_mk, k_ann]

    r = SessionReader(out)
    assert r.complete and r.notes == []
    assert r.attrs["schema"] == SCHEMA_NAME and r.attrs["schema_version"] == SCHEMA_VERSION
    assert r.attrs["subject"] == "S01" and r.attrs["run"] == 3
    assert r.streams == [k_eeg, k_mk, k_ann]
    got = r.data(k_eeg)
    assert got.dtype == np.float32 and got.shape == (n, 8)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(r.times(k_eeg), times)
    assert r.times(k_eeg).dtype == np.float64
    assert r.description(k_eeg) == eeg and r.description(k_mk) == _markers()
    assert r.description(k_ann) == _annotations()
    mt, mv = r.markers()
    np.testing.assert_array_equal(mt, marker_times)
    assert list(mv) == marker_values
    assert r.data(k_mk).shape == (len(marker_values), 1)
    np.testing.assert_array_equal(r.data(k_ann), ann)
    np.testing.assert_array_equal(r.times(k_ann), ann_times)
    assert r.stream_attrs(k_eeg)["n_samples"] == n


def test_stream_keys_are_sanitized_and_unique(tmp_path: Path) -> None:
    with SessionWriter(tmp_path / "k.zarr") as w:
        a = w.add_stream(_eeg(name="my/amp: 1"))
        b = w.add_stream(_eeg(name="my/amp: 1"))
        c = w.add_stream(_eeg(name="x"), key="custom")
    assert (a, b, c) == ("my_amp_1", "my_amp_1-2", "custom")
    r = SessionReader(tmp_path / "k.zarr")
    assert r.streams == [a, b, c]
    assert r.find("custom") == "custom" and r.find("x") == "custom"
    with pytest.raises(StreamNotFoundError, match="2 streams match 'my/amp: 1'"):
        r.find("my/amp: 1")


def test_find_by_key_name_and_query(tmp_path: Path) -> None:
    with SessionWriter(tmp_path / "f.zarr") as w:
        k = w.add_stream(_eeg(name="Amp"))
        m = w.add_stream(_markers("Mk"))
        w.add_stream(_annotations())
    r = SessionReader(tmp_path / "f.zarr")
    assert r.find(k) == k and r.find("Amp") == k
    assert r.find("type=EEG") == k and r.find("type=eeg") == k and r.find("type=Markers") == m
    assert r.find("name=Mk,source_id=Mk-sid") == m
    assert r.marker_keys() == [m]
    with pytest.raises(StreamNotFoundError, match=r"(?s)no stream matches 'nope'.*Amp.*Mk.*Ann"):
        r.find("nope")
    with pytest.raises(ValueError, match="key=value"):
        r.find("colour=red")


# ---------------------------------------------------------------------- flushing


def test_regular_stream_reaches_disk_in_one_second_blocks(tmp_path: Path, rng: np.random.Generator) -> None:
    out = tmp_path / "blocks.zarr"
    n = 4567
    w = SessionWriter(out, flush_seconds=1.0)
    key = w.add_stream(_eeg())
    lengths = set()
    for a, b in _odd_chunks(rng, n):
        w.append(key, np.full((b - a, 8), a, np.float32), np.arange(a, b) / 1000.0)
        rows = _stored_rows(out, key)
        assert rows == (b // 1000) * 1000  # only whole 1 s blocks, appended as soon as complete
        assert _stored_rows(out, key, "time") == rows
        lengths.add(rows)
    assert lengths == {0, 1000, 2000, 3000, 4000}
    w.close()
    assert _stored_rows(out, key) == n
    chunk_files = sorted(p for p in (out / "streams" / key / "data" / "c").rglob("*") if p.is_file())
    assert len(chunk_files) == 5  # one 1000-row chunk per second, all channels in one chunk
    assert SessionReader(out).stream_attrs(key)["flush_rows"] == 1000


def test_irregular_stream_flushes_by_count_data_time_and_wall_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FakeClock:
        now = 100.0

        def monotonic(self) -> float:
            return self.now

    clock = FakeClock()
    monkeypatch.setattr(session_mod, "_time", clock)
    out = tmp_path / "irr.zarr"
    w = SessionWriter(out, flush_seconds=1.0)
    eeg, mk = w.add_stream(_eeg(rate=100.0)), w.add_stream(_markers())
    w.append(mk, [["a"]], [10.0])
    w.append(mk, [["b"]], [10.5])
    assert _stored_rows(out, mk) == 0  # 0.5 s of marker time, no wall time passed
    w.append(mk, [["c"]], [11.2])  # buffered markers span > 1 s of data time
    assert _stored_rows(out, mk) == 3
    w.append(mk, [["d"]], [11.3])
    clock.now += 1.5  # nothing more arrives on the marker stream, but wall time passes ...
    w.append(eeg, np.zeros((5, 8), np.float32), np.arange(5) / 100.0)  # ... checked on any append
    assert _stored_rows(out, mk) == 4
    values = np.array([[f"m{i}"] for i in range(300)], dtype=object)
    w.append(mk, values, 20.0 + np.arange(300) * 1e-3)  # many markers in 0.3 s: count triggers
    assert _stored_rows(out, mk) == 304
    w.close()


def test_flush_writes_partial_buffers_and_close_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "fl.zarr"
    w = SessionWriter(out)
    key = w.add_stream(_eeg())
    w.append(key, np.ones((10, 8), np.float32), np.arange(10) / 1000)
    assert _stored_rows(out, key) == 0
    w.flush()
    assert _stored_rows(out, key) == 10 and w.n_samples(key) == 10
    assert SessionReader(out).complete is False
    w.close()
    w.close()
    assert SessionReader(out).complete is True
    with pytest.raises(RuntimeError, match="closed"):
        w.append(key, np.ones((1, 8), np.float32), [1.0])


# ---------------------------------------------------------------------- crash safety

_CHILD = """
import sys, time
import numpy as np
from streams.description import StreamDescription
from streams.session import SessionWriter

desc = StreamDescription("K", "EEG", "k-sid", tuple(f"c{i}" for i in range(8)), nominal_rate=1000.0)
w = SessionWriter(sys.argv[1], flush_seconds=1.0)
key = w.add_stream(desc)
print("ready", key, flush=True)
start = time.monotonic()
i = 0
while i < 60000:
    idx = np.arange(i, i + 10)
    w.append(key, (idx[:, None] * 8 + np.arange(8)).astype(np.float32), idx / 1000.0)
    i += 10
    print(i, flush=True)
    time.sleep(max(0.0, start + i / 1000.0 - time.monotonic()))
"""


def test_kill_9_leaves_a_readable_session_missing_at_most_the_last_second(tmp_path: Path) -> None:
    out = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-u", "-c", _CHILD, str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pushed = 0
    try:
        first = proc.stdout.readline()
        assert first.startswith("ready"), first + proc.stderr.read()
        key = first.split()[1]
        for line in proc.stdout:  # wait until the store itself holds >= 2 s of data
            pushed = int(line)
            if _stored_rows(out, key, "time") >= 2000:
                break
        assert pushed >= 2000, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        rest = proc.stdout.read().split()  # progress printed before the kill landed
        pushed = int(rest[-1]) if rest else pushed
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    r = SessionReader(out)
    assert not r.complete
    data, times = r.data(key), r.times(key)
    n = len(times)
    assert data.shape == (n, 8)
    assert n >= pushed - 1000 - 10  # at most the buffered second (+ the chunk in flight) is lost
    idx = np.arange(n)
    np.testing.assert_array_equal(data, (idx[:, None] * 8 + np.arange(8)).astype(np.float32))
    np.testing.assert_array_equal(times, idx / 1000.0)


def _crashed_session(out: Path) -> str:
    """A session whose writer 'died' after two flushed seconds (never closed)."""
    w = SessionWriter(out)
    key = w.add_stream(_eeg())
    idx = np.arange(2500)
    w.append(key, np.repeat(idx[:, None], 8, axis=1).astype(np.float32), idx / 1000.0)
    return key  # 2000 rows on disk, 500 only in memory


def test_reader_truncates_a_block_whose_time_was_not_grown(tmp_path: Path) -> None:
    out = tmp_path / "c1.zarr"
    key = _crashed_session(out)
    data = zarr.open_array(out / "streams" / key / "data", mode="r+")
    data.resize((3000, 8))  # killed after the data block, before the time array grew
    data[2000:3000] = 7.0
    r = SessionReader(out)
    assert r.n_samples(key) == 2000 and len(r.data(key)) == 2000
    assert any("common 2000" in note for note in r.notes)


def test_reader_truncates_at_unwritten_nan_times(tmp_path: Path) -> None:
    out = tmp_path / "c2.zarr"
    key = _crashed_session(out)
    zarr.open_array(out / "streams" / key / "data", mode="r+").resize((3000, 8))
    time_arr = zarr.open_array(out / "streams" / key / "time", mode="r+")
    time_arr.resize((3000,))  # killed after growing time, before its chunks were written
    r = SessionReader(out)
    assert r.n_samples(key) == 2000
    assert not np.isnan(r.times(key)).any()
    np.testing.assert_array_equal(r.data(key)[:, 0], np.arange(2000, dtype=np.float32))
    assert any("NaN" in note for note in r.notes)


# ---------------------------------------------------------------------- errors


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    with SessionWriter(out) as w:
        w.add_stream(_eeg(name="old"))
    with pytest.raises(OutputExistsError, match=r"s\.zarr.*overwrite=True \(--overwrite on the CLI\)"):
        SessionWriter(out)
    with SessionWriter(out, overwrite=True) as w:
        w.add_stream(_eeg(name="new"))
    assert SessionReader(out).streams == ["new"]


def test_overwrite_refuses_a_directory_that_is_not_zarr(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    with pytest.raises(OutputExistsError, match="not a Zarr store"):
        SessionWriter(out, overwrite=True)
    assert (out / "thesis.txt").exists()


def test_foreign_zarr_store_names_the_missing_attribute(tmp_path: Path) -> None:
    g = zarr.open_group(tmp_path / "foreign.zarr", mode="w")
    g.attrs["foo"] = 1
    g.create_array("x", shape=(3,), dtype="float32")
    with pytest.raises(SessionFormatError, match=r"foreign\.zarr.*'schema' is missing.*bci-runtime\.session.*1"):
        SessionReader(tmp_path / "foreign.zarr")


def test_wrong_schema_and_newer_version_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "v.zarr"
    with SessionWriter(out) as w:
        w.add_stream(_eeg())
    root = zarr.open_group(out, mode="r+")
    root.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SessionFormatError, match=rf"schema_version {SCHEMA_VERSION + 1}.*upgrade"):
        SessionReader(out)
    root.attrs.update({"schema_version": SCHEMA_VERSION, "schema": "someone.else"})
    with pytest.raises(SessionFormatError, match="someone.else"):
        SessionReader(out)


def test_missing_time_array_is_named(tmp_path: Path) -> None:
    out = tmp_path / "t.zarr"
    with SessionWriter(out) as w:
        key = w.add_stream(_eeg())
        w.append(key, np.zeros((5, 8), np.float32), np.arange(5.0))
    shutil.rmtree(out / "streams" / key / "time")
    with pytest.raises(SessionFormatError, match=rf"t\.zarr.*streams/{key}.*no 'time' array.*version <= 1"):
        SessionReader(out)


def test_missing_stream_attribute_is_named(tmp_path: Path) -> None:
    out = tmp_path / "a.zarr"
    with SessionWriter(out) as w:
        key = w.add_stream(_eeg())
    group = zarr.open_group(out / "streams" / key, mode="r+")
    attrs = dict(group.attrs)
    del attrs["stream"]
    group.attrs.put(attrs)
    with pytest.raises(SessionFormatError, match="no 'stream' attribute"):
        SessionReader(out)


def test_missing_path_and_plain_directory(tmp_path: Path) -> None:
    with pytest.raises(SessionFormatError, match=r"nothere\.zarr' does not exist.*bci-runtime\.session"):
        SessionReader(tmp_path / "nothere.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("x")
    with pytest.raises(SessionFormatError, match=r"plain' is not a Zarr group"):
        SessionReader(tmp_path / "plain")


def test_append_validates_shapes_dtypes_and_times(tmp_path: Path) -> None:
    with SessionWriter(tmp_path / "val.zarr") as w:
        key = w.add_stream(_eeg())
        ikey = w.add_stream(_eeg(name="ints", dtype="int16"))
        mk = w.add_stream(_markers())
        with pytest.raises(ValueError, match=rf"{key}.*shape \(3, 4\), expected \(n_samples, 8\)"):
            w.append(key, np.zeros((3, 4), np.float32), np.arange(3.0))
        with pytest.raises(ValueError, match=r"times has shape \(2,\) but data has 3 samples"):
            w.append(key, np.zeros((3, 8), np.float32), np.arange(2.0))
        with pytest.raises(ValueError, match="NaN/inf"):
            w.append(key, np.zeros((2, 8), np.float32), [0.0, np.nan])
        with pytest.raises(TypeError, match="cannot be cast"):
            w.append(ikey, np.zeros((1, 8), np.float64), [0.0])
        with pytest.raises(ValueError, match="do not fit int16"):
            w.append(ikey, np.full((1, 8), 70000, np.int64), [0.0])
        with pytest.raises(TypeError, match="string stream"):
            w.append(mk, [[3]], [0.0])
        with pytest.raises(KeyError, match="no stream 'nope'"):
            w.append("nope", np.zeros((1, 8)), [0.0])
        with pytest.raises(ValueError, match="reserved"):
            w.set_attrs(key, gaps=[])
        with pytest.raises(TypeError, match="cannot be stored"):
            w.set_attrs(when=object())
        w.append(ikey, np.full((2, 8), 3, np.int8), [0.0, 1.0])  # safe casts are fine
        w.set_attrs(note="ok")
        w.set_attrs(key, electrode_gel=np.float32(1.5))
    r = SessionReader(tmp_path / "val.zarr")
    assert r.data(ikey).dtype == np.int16 and r.attrs["note"] == "ok"
    assert r.stream_attrs(key)["electrode_gel"] == 1.5


def test_nonfinite_samples_are_written_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "nan.zarr"
    data = np.ones((1500, 8), np.float32)
    data[10, 3] = np.nan
    data[11, :] = np.inf
    data[12, 0] = -np.inf
    data[1200, 7] = np.nan  # in the second (buffered) second
    w = SessionWriter(out)
    key = w.add_stream(_eeg())
    w.append(key, data, np.arange(1500) / 1000.0)
    on_disk = zarr.open_group(out / "streams" / key, mode="r").attrs["nonfinite_samples"]
    assert on_disk == 3  # kept up to date when the first block was flushed
    w.close()
    r = SessionReader(out)
    assert r.stream_attrs(key)["nonfinite_samples"] == 4
    np.testing.assert_array_equal(r.data(key), data)  # NaN/inf written as they are


def test_gaps_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "g.zarr"
    with SessionWriter(out) as w:
        key = w.add_stream(_eeg())
        w.add_gap(key, 10.0, 12.5, "stream lost; reconnected")
        w.add_gap(key, float("nan"), 20.0, "recorder fell behind: 300 samples overwritten")
        with pytest.raises(ValueError, match="before start_time"):
            w.add_gap(key, 5.0, 4.0, "backwards")
    gaps = SessionReader(out).gaps(key)
    assert gaps[0] == {"start_time": 10.0, "end_time": 12.5, "reason": "stream lost; reconnected"}
    assert np.isnan(gaps[1]["start_time"]) and gaps[1]["end_time"] == 20.0
    assert gaps[1]["reason"].startswith("recorder fell behind")
    assert len(gaps) == 2


# ---------------------------------------------------------------------- mne


def test_to_raw_biosemi128_with_montage_and_marker_annotations(tmp_path: Path, rng: np.random.Generator) -> None:
    import mne

    names = tuple(mne.channels.make_standard_montage("biosemi128").ch_names) + ("Status",)
    desc = _eeg(129, rate=512.0, channel_names=names, channel_types=("eeg",) * 128 + ("trigger",),
                channel_units=("V",) * 129)
    n, t0 = 1024, 500.0
    data = (rng.standard_normal((n, 129)) * 1e-5).astype(np.float32)
    out = tmp_path / "raw.zarr"
    with SessionWriter(out) as w:
        key = w.add_stream(desc)
        mk = w.add_stream(_markers())
        w.append(key, data, t0 + np.arange(n) / 512.0)
        w.append(mk, [["before"], ["stim/a"], ["stim/b"], ["after"]], [t0 - 1.0, t0 + 0.25, t0 + 1.5, t0 + 9.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = SessionReader(out).to_raw()
    assert raw.info["sfreq"] == 512.0 and raw.ch_names == list(names)
    assert raw.get_channel_types()[:2] == ["eeg", "eeg"] and raw.get_channel_types()[-1] == "misc"
    assert raw.info["meas_date"] is None
    montage = raw.get_montage()
    assert montage is not None and len(montage.ch_names) == 128
    np.testing.assert_allclose(raw.get_data(), data.T.astype(np.float64))
    assert list(raw.annotations.description) == ["stim/a", "stim/b"]
    np.testing.assert_allclose(raw.annotations.onset, [0.25, 1.5])


def test_to_raw_scales_microvolts_and_finds_1020_names(tmp_path: Path) -> None:
    desc = _eeg(3, rate=100.0, channel_names=("Fz", "Cz", "Pz"), channel_units=("uV",) * 3)
    out = tmp_path / "uv.zarr"
    with SessionWriter(out) as w:
        key = w.add_stream(desc)
        w.append(key, np.full((200, 3), 20.0, np.float32), np.arange(200) / 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = SessionReader(out).to_raw(markers=None)
    np.testing.assert_allclose(raw.get_data(), 20e-6)
    assert raw.get_montage() is not None and len(raw.annotations) == 0


def test_to_raw_refuses_irregular_empty_and_missing_eeg_streams(tmp_path: Path) -> None:
    out = tmp_path / "noeeg.zarr"
    with SessionWriter(out) as w:
        w.add_stream(_markers())
        w.add_stream(StreamDescription("empty", "Physio", "p-sid", ("a", "b"), nominal_rate=100.0))
    r = SessionReader(out)
    with pytest.raises(ValueError, match="'empty'.*has no samples"):
        r.to_raw("empty")
    with pytest.raises(StreamNotFoundError, match="no stream of type EEG"):
        r.to_raw()
    with pytest.raises(ValueError, match="regular numeric stream"):
        r.to_raw("Task-Markers")


def test_uniform_description_gives_every_channel_one_type_and_unit() -> None:
    from streams.description import uniform_description

    d = uniform_description("S", "fMRI", "src", ["v0", "v1"], channel_type="fmri", unit="a.u.", nominal_rate=0.5)
    assert d.channel_types == ("fmri", "fmri") and d.channel_units == ("a.u.", "a.u.")
    assert (d.name, d.type, d.source_id, d.nominal_rate, d.dtype) == ("S", "fMRI", "src", 0.5, "float32")
