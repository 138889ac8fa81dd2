"""BrainFlow boards as LSL sources (``bci stream brainflow``): the real BrainFlow synthetic and playback boards,
the real CLI in a subprocess, bare pylsl inlets on the other side; ``bci record`` and ``bci live`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest

from bci.cli.main import main
from streams.brainflow import BrainflowSourceOptions, import_brainflow, read_marker_map

REPO = Path(__file__).resolve().parents[1]
bf = import_brainflow()
SYNTH = bf.BoardIds.SYNTHETIC_BOARD.value
DESCR = bf.BoardShim.get_board_descr(SYNTH)
EEG_NAMES = DESCR["eeg_names"].split(",")
EEG_ROWS = DESCR["eeg_channels"]
RATE = DESCR["sampling_rate"]
MARKERS = {1.0: "stim/img0001/cat", 2.0: "stim/img0002/dog", 3.0: "stim/img0003/car"}


@pytest.fixture
def bridge():
    """``bridge(*ARGS)``: ``bci stream brainflow ARGS`` in a subprocess (warnings are errors there too), once it has
    printed its start line; every one still running is killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        started.append(_bridge(*args))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def _bridge(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-W", "error", "-u", "-m", "bci.cli", "stream", "brainflow", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("streaming BrainFlow board"):
        proc.kill()
        raise RuntimeError(f"bci stream brainflow did not start: {line!r} {proc.communicate()[1]}")
    return proc


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == "", err
    return out


def _inlet(name: str) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("name", name, timeout=20)
    assert len(found) == 1, f"stream {name!r} not found"
    inlet = pylsl.StreamInlet(found[0], max_buflen=60)
    inlet.open_stream(timeout=10)
    return inlet


def _drain(proc: subprocess.Popen, data: pylsl.StreamInlet, markers: pylsl.StreamInlet | None = None):
    """Everything both inlets receive until the bridge has exited and nothing more comes."""
    chunks, stamps, values, mstamps = [], [], [], []
    quiet = 0
    deadline = time.monotonic() + 60
    while quiet < 3 and time.monotonic() < deadline:
        got = 0
        d, t = data.pull_chunk(timeout=0.2, max_samples=4096)
        if t:
            # the stamps are BrainFlow's acquisition times mapped to the LSL clock: never after their arrival
            # here, and (a wrong mapping would be off by decades) not long before it
            received = pylsl.local_clock()
            assert received - 30 < t[-1] <= received + 1e-3, (t[-1], received)
            chunks.append(np.asarray(d, dtype=np.float32))
            stamps.extend(t)
            got += len(t)
        if markers is not None:
            m, mt = markers.pull_chunk(timeout=0.0)
            values.extend(v[0] for v in m)
            mstamps.extend(mt)
            got += len(mt)
        quiet = quiet + 1 if (got == 0 and proc.poll() is not None) else 0
    arr = np.concatenate(chunks) if chunks else np.zeros((0, data.info().channel_count()), np.float32)
    return arr, np.asarray(stamps), values, np.asarray(mstamps)


def _channels(info: pylsl.StreamInfo) -> list[tuple[str, str, str]]:
    ch = info.desc().child("channels").child("channel")
    out = []
    for _ in range(info.channel_count()):
        out.append((ch.child_value("label"), ch.child_value("type"), ch.child_value("unit")))
        ch = ch.next_sibling("channel")
    return out


def _pushed(out: str) -> tuple[int, int]:
    last = [line for line in out.splitlines() if line.startswith("pushed ")][-1].split()
    return int(last[1]), int(last[4])


@pytest.fixture
def marker_map(tmp_path: Path) -> Path:
    path = tmp_path / "markers.tsv"
    path.write_text("code\tmarker\n" + "".join(f"{int(k)}\t{v}\n" for k, v in MARKERS.items()), encoding="utf-8")
    return path


def test_synthetic_board_streams_eeg_in_volts_and_its_markers_at_their_samples(unique_name: str, marker_map: Path,
                                                                               bridge) -> None:
    proc = bridge("--board", "synthetic", "--name", unique_name, "--duration", "2.5", "--insert-markers-every",
                   "0.4", "--marker-map", str(marker_map), "--wait-for-consumers", "30", "--chunk-size", "5")
    data, markers = _inlet(unique_name), _inlet(f"{unique_name}-Markers")
    samples, stamps, values, mstamps = _drain(proc, data, markers)
    n_pushed, n_markers = _pushed(_finish(proc))
    info = data.info()
    assert info.type() == "EEG" and info.nominal_srate() == RATE and info.channel_format() == pylsl.cf_float32
    assert _channels(info) == [(n, "EEG", "V") for n in EEG_NAMES]
    assert markers.info().type() == "Markers" and markers.info().channel_format() == pylsl.cf_string
    # nothing lost: every pushed sample and marker arrived (the bridge waited for both inlets)
    assert samples.shape == (n_pushed, len(EEG_NAMES)) and n_pushed >= 2 * RATE
    assert np.all(np.diff(stamps) > 0)
    assert abs(np.median(np.diff(stamps)) - 1 / RATE) < 0.1 / RATE
    assert np.all(np.abs(samples) < 1e-2) and np.abs(samples).max() > 1e-6  # volts: the synthetic board's µV * 1e-6
    # markers: the map's strings in turn, each with exactly the timestamp of a data sample
    assert len(values) == n_markers >= 4
    assert values == [MARKERS[float(k % 3 + 1)] for k in range(len(values))]
    at = np.searchsorted(stamps, mstamps)
    assert np.array_equal(stamps[at], mstamps)
    assert np.all(np.diff(mstamps) > 0.3) and np.all(np.diff(mstamps) < 0.5)


def test_playback_board_streams_the_files_samples_exactly(tmp_path: Path, unique_name: str, bridge) -> None:
    bf.BoardShim.disable_board_logger()
    board = bf.BoardShim(SYNTH, bf.BrainFlowInputParams())
    board.prepare_session()
    try:
        board.start_stream()
        while board.get_board_data_count() < RATE // 2:  # the synthetic board, recorded by BrainFlow, a marker halfway
            time.sleep(0.05)
        board.insert_marker(5.0)
        while board.get_board_data_count() < RATE:
            time.sleep(0.05)
        recorded = board.get_board_data()
    finally:
        board.release_session()
    path = tmp_path / "rec.csv"
    bf.DataFilter.write_file(recorded, str(path), "w")
    expected = bf.DataFilter.read_file(str(path))
    assert np.count_nonzero(expected[DESCR["marker_channel"]]) == 1
    proc = bridge("--board", "playback_file", "--master-board", "synthetic", "--file", str(path), "--name",
                   unique_name, "--wait-for-consumers", "30")
    data, markers = _inlet(unique_name), _inlet(f"{unique_name}-Markers")
    samples, stamps, values, _ = _drain(proc, data, markers)
    out = _finish(proc)
    n_pushed, n_markers = _pushed(out)
    assert n_pushed == expected.shape[1] == len(samples)
    # BrainFlow 5.23's playback board does not replay the file's marker row; the bridge says so
    assert values == [] and n_markers == 0 and "the file holds 1 marker(s)" in out
    np.testing.assert_array_equal(samples, (expected[EEG_ROWS] * 1e-6).T.astype(np.float32))
    assert np.all(np.diff(stamps) > 0)


def _marker_map_json(tmp_path: Path) -> Path:
    path = tmp_path / "markers.json"
    path.write_text(json.dumps({str(int(k)): v for k, v in MARKERS.items()}), encoding="utf-8")
    return path


def test_bci_record_stores_the_boards_samples_and_markers(tmp_path: Path, unique_name: str, bridge) -> None:
    from streams.session import SessionReader

    out = tmp_path / "rec.zarr"
    record = subprocess.Popen([sys.executable, "-W", "error", "-m", "bci.cli", "record", "--stream", unique_name,
                               "--stream", f"{unique_name}-Markers", "--duration", "4", "--out", str(out),
                               "--resolve-timeout", "30"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        proc = bridge("--board", "synthetic", "--name", unique_name, "--duration", "2", "--insert-markers-every",
                      "0.5", "--marker-map", str(_marker_map_json(tmp_path)), "--channels", "eeg,accel",
                      "--wait-for-consumers", "30")
        n_pushed, n_markers = _pushed(_finish(proc))
        _, err = record.communicate(timeout=60)
    finally:
        if record.poll() is None:
            record.kill()
            record.communicate(timeout=10)
    assert record.returncode == 0, err
    reader = SessionReader(out)
    keys = {reader.description(k).name: k for k in reader.streams}
    eeg = reader.description(keys[unique_name])
    assert eeg.channel_names == (*EEG_NAMES, "accel_x", "accel_y", "accel_z")
    assert eeg.channel_units == ("V",) * 16 + ("",) * 3 and eeg.channel_types == ("EEG",) * 16 + ("ACC",) * 3
    assert eeg.nominal_rate == RATE
    assert len(reader.times(keys[unique_name])) == n_pushed
    marker_key = keys[f"{unique_name}-Markers"]
    assert len(reader.times(marker_key)) == n_markers >= 3
    assert set(np.asarray(reader.data(marker_key)).ravel()) <= set(MARKERS.values())


def test_bci_live_decodes_the_board_with_a_model_of_its_16_channels_at_250_hz(tmp_path: Path, unique_name: str,
                                                                             marker_map: Path, bridge) -> None:
    model, events = tmp_path / "model", tmp_path / "ev.jsonl"
    params = {"n_chans": 16, "ch_names": EEG_NAMES, "sfreq": float(RATE), "n_times": 110, "embed_dim": 16}
    assert main(["model", "init", "eeg_convnet", "--out", str(model), "--params", json.dumps(params)]) == 0
    proc = bridge("--board", "synthetic", "--name", unique_name, "--duration", "2", "--insert-markers-every",
                   "0.4", "--marker-map", str(marker_map), "--wait-for-consumers", "60")
    try:
        assert main(["live", "--eeg", unique_name, "--markers", f"{unique_name}-Markers", "--model", str(model),
                     "--events", str(events), "--no-view", "--duration", "4", "--results-stream", "",
                     "--resolve-timeout", "20"]) == 0
    finally:
        out = _finish(proc)
    _, n_markers = _pushed(out)
    records = [json.loads(line) for line in events.read_text().splitlines()]
    outcomes = [r for r in records if r.get("type") in ("window", "dropped")]
    assert len(outcomes) == n_markers >= 3  # every marker: a window or a dropped record
    windows = [r for r in outcomes if r["type"] == "window"]
    assert len(windows) >= n_markers - 1 and {r["marker"] for r in windows} <= set(MARKERS.values())
    assert all(r.get("reason") for r in outcomes if r["type"] == "dropped")


# --------------------------------------------------------------------------- bad input


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["stream", "brainflow", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bci stream: error: ") and err.count("\n") == 1, err
    return err


def test_unknown_board_lists_the_board_names(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "--board", "nosuchboard")
    assert "'nosuchboard'" in err and "SYNTHETIC_BOARD" in err and "CYTON_BOARD" in err
    assert "999999" in _error(capsys, "--board", "999999")


def test_a_board_that_cannot_be_opened_names_brainflows_error_and_the_flags(capsys: pytest.CaptureFixture[str],
                                                                            tmp_path: Path) -> None:
    port = str(tmp_path / "ttyNOPE")
    err = _error(capsys, "--board", "cyton", "--serial-port", port)
    assert "CYTON_BOARD" in err and "UNABLE_TO_OPEN_PORT" in err and f"--serial-port {port}" in err
    assert "--master-board" in _error(capsys, "--board", "playback_file", "--file", port)
    assert "ttyNOPE" in _error(capsys, "--board", "playback_file", "--master-board", "synthetic", "--file", port)
    assert "'nonsense' is not a BrainFlow channel kind" in _error(capsys, "--board", "synthetic", "--channels",
                                                                   "eeg,nonsense")
    assert "board CYTON_BOARD has no gyro channels; it has: eeg, emg, ecg, eog, accel, analog, other" in _error(
        capsys, "--board", "cyton", "--channels", "eeg,gyro")


@pytest.mark.parametrize(("name", "text", "says"), [
    ("m.tsv", "1\tstim/a\nx\tstim/b\n", "line 2: code 'x' is not a number"),
    ("m.tsv", "1 stim/a\n", "line 1: expected 2 tab-separated columns"),
    ("m.tsv", "0\tstim/a\n", "non-zero"),
    ("m.tsv", "1\tstim/a\n1\tstim/b\n", "given twice"),
    ("m.json", "[1, 2]", "one JSON object"),
    ("m.json", "{\"1\": \"\"}", "non-empty string"),
    ("m.json", "{1: ", "not valid JSON"),
])
def test_a_bad_marker_map_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str,
                                           says: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    err = _error(capsys, "--board", "synthetic", "--marker-map", str(path))
    assert says in err and str(path) in err
    assert "does not exist" in _error(capsys, "--board", "synthetic", "--marker-map", str(tmp_path / "none.tsv"))


def test_marker_map_files_and_options_checks(tmp_path: Path, marker_map: Path) -> None:
    assert read_marker_map(marker_map) == MARKERS == read_marker_map(_marker_map_json(tmp_path))
    with pytest.raises(TypeError, match="chunk_size"):
        BrainflowSourceOptions(chunk_size=2.5)
    with pytest.raises(ValueError, match="chunk_size=0"):
        BrainflowSourceOptions(chunk_size=0)
    with pytest.raises(TypeError, match="serial_port"):
        BrainflowSourceOptions(serial_port=3)
    with pytest.raises(ValueError, match="channels: 'bogus'"):
        BrainflowSourceOptions(channels=("eeg", "bogus"))


def test_without_brainflow_a_one_line_error_names_the_extra() -> None:
    code = ("import sys; sys.modules['brainflow'] = None; from bci.cli.main import main; "
            "sys.exit(main(['stream', 'brainflow', '--board', 'synthetic']))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "pip install 'bci-runtime[brainflow]'" in res.stderr, res.stderr


def test_stream_brainflow_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["stream", "--help"], ["stream", "brainflow", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "example:" in out and "bci stream brainflow --board synthetic" in out


def test_board_names_and_ids_resolve() -> None:
    from streams.brainflow import BrainflowError, resolve_board

    assert {resolve_board(b) for b in ("synthetic", "SYNTHETIC_BOARD", "Synthetic-Board", "-1", -1)} == {SYNTH}
    assert resolve_board("cyton") == bf.BoardIds.CYTON_BOARD.value == resolve_board("0")
    with pytest.raises(TypeError, match="board"):
        resolve_board(1.5)
    with pytest.raises(BrainflowError, match="CYTON_BOARD"):
        resolve_board("cyton_boardx")
    from bci.cli.main import build_parser

    assert build_parser().parse_args(["stream", "brainflow", "--board", "-1"]).board == "-1"


def test_a_task_inserting_markers_in_the_bridges_process_gets_them_at_the_next_sample(unique_name: str) -> None:
    """The library hook: a task program calls ``BrainflowSource.insert_marker`` while ``run()`` streams."""
    import threading

    from streams.brainflow import BrainflowSource

    opts = BrainflowSourceOptions(board="synthetic", name=unique_name, duration=1.5, chunk_size=1)
    with BrainflowSource(opts) as source:
        data, markers = _inlet(unique_name), _inlet(f"{unique_name}-Markers")
        runner = threading.Thread(target=source.run)
        runner.start()
        for code in (4, 2.5):
            time.sleep(0.4)
            source.insert_marker(code)
        runner.join(timeout=30)
        assert not runner.is_alive()
        with pytest.raises(ValueError, match="code=0"):
            source.insert_marker(0)
        stamps: list[float] = []
        m: list = []
        mt: list[float] = []
        deadline = time.monotonic() + 20
        while (len(stamps) < source.n_pushed or len(mt) < source.n_markers) and time.monotonic() < deadline:
            stamps += data.pull_chunk(timeout=0.2, max_samples=10_000)[1]  # while the outlets are still open
            got, got_t = markers.pull_chunk(timeout=0.0)
            m += got
            mt += got_t
    assert [v[0] for v in m] == ["4", "2.5"] and source.n_markers == 2 and len(stamps) == source.n_pushed
    inserted = np.array([t for t, _ in source.inserted])
    # each marker sits on a sample stamped at (or, within one sample period, just before) its insertion
    assert np.all(np.asarray(mt) >= inserted - 1.5 / RATE)
    assert np.all(np.isin(mt, stamps))


def test_sigterm_stops_the_bridge_cleanly_with_its_summary(unique_name: str, bridge) -> None:
    proc = bridge("--board", "synthetic", "--name", unique_name, "--wait-for-consumers", "30")
    data = _inlet(unique_name)
    _inlet(f"{unique_name}-Markers")
    while not data.pull_chunk(timeout=1.0)[1]:  # streaming has begun
        pass
    proc.terminate()
    n_pushed, n_markers = _pushed(_finish(proc))
    assert n_pushed > 0 and n_markers == 0
