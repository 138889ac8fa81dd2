"""bci.markers (MarkerSender) and bci present: markers on real LSL, a real Qt window rendered offscreen."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pylsl
import pytest
from PIL import Image

from bci.markers import MarkerSender
from bci.present import PresenterOptions, load_stimulus_gallery, make_trials, run_presenter
from streams.markers import parse_marker

REPO = Path(__file__).resolve().parents[1]
#: Solid colours of the test gallery's images: the centre pixel tells which image is on screen.
COLOURS = {"img0000": (200, 30, 30), "img0001": (30, 200, 30), "img0002": (30, 30, 200)}


# ============================================================================ helpers
def make_gallery(folder: Path, colours: dict[str, tuple[int, int, int]] = COLOURS, labels: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, rgb in colours.items():
        Image.fromarray(np.full((16, 16, 3), rgb, np.uint8)).save(folder / f"{image_id}.png")
    if labels:
        rows = "".join(f"{i},label {i}\n" for i in colours)
        (folder / "labels.csv").write_text("id,label\n" + rows, encoding="utf-8")
    return folder


class MarkerInlet:
    """A bare pylsl inlet on a background thread: every sample and timestamp of one marker stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.samples: list[tuple[str, float]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            found = pylsl.resolve_byprop("name", self.name, 1, 30.0)
            inlet = pylsl.StreamInlet(found[0])
            inlet.open_stream(10.0)
            while not self._stop.is_set():
                sample, stamp = inlet.pull_sample(timeout=0.05)
                if sample is not None:
                    self.samples.append((sample[0], stamp + inlet.time_correction()))
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self, linger: float = 1.0) -> list[tuple[str, float]]:
        self._stop.wait(linger)  # let the last markers arrive
        self._stop.set()
        self._thread.join(10.0)
        if self.error is not None:
            raise self.error
        return self.samples


def pixel(widget, x: int, y: int) -> tuple[int, int, int]:
    c = widget.grab().toImage().pixelColor(x, y)
    return c.red(), c.green(), c.blue()


def centre(widget) -> tuple[int, int, int]:
    return pixel(widget, widget.width() // 2, widget.height() // 2)


def fast_options(gallery: Path, markers: str, **kw) -> PresenterOptions:
    base = dict(markers=markers, duration_ms=100.0, isi_ms=100.0, jitter_ms=50.0, feedback_ms=100.0,
                fullscreen=False, window_size=(320, 240), image_size=64, photodiode="top-left",
                photodiode_size=20, wait_for_consumers=20.0, seed=3)
    base.update(kw)
    return PresenterOptions(gallery, **base)


# ============================================================================ bci.markers
def test_markers_module_imports_neither_torch_nor_qt() -> None:
    code = ("import sys; from bci.markers import MarkerSender; "
            "print(sorted(m for m in ('torch', 'PySide6', 'pyqtgraph', 'scipy', 'mne') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_marker_sender_pushes_stamped_markers(unique_name: str) -> None:
    with MarkerSender(unique_name, source_id=f"{unique_name}-src") as sender:
        inlet = MarkerInlet(unique_name)
        assert sender.wait_for_consumers(20.0)
        assert sender.have_consumers
        before = pylsl.local_clock()
        sent = sender.send("img0012", "red triangle")
        after = pylsl.local_clock()
        given = sender.send("img0013", timestamp=after + 5.0)
        raw = sender.send_raw("block_start/1")
        samples = inlet.stop()
        assert sender.n_sent == 3
    assert sent.value == "stim/img0012/red triangle" and before <= sent.timestamp <= after
    assert given == ("stim/img0013", after + 5.0)
    assert [s for s, _ in samples] == ["stim/img0012/red triangle", "stim/img0013", "block_start/1"]
    assert [t for _, t in samples] == pytest.approx([sent.timestamp, given.timestamp, raw.timestamp], abs=1e-4)
    assert parse_marker(samples[0][0]) == ("img0012", "red triangle")
    info = pylsl.resolve_byprop("name", unique_name, 1, 0.5)
    assert info == []  # closed with the context


@pytest.mark.parametrize("args, kwargs, error, match", [
    (("a/b",), {}, ValueError, r"image_id='a/b' must not contain '/'"),
    (("img1", "cat/dog"), {}, ValueError, r"label='cat/dog' must not contain '/'"),
    (("",), {}, ValueError, r"image_id='' is empty"),
    (("img1", "  "), {}, ValueError, r"label='  ' is empty"),
    (("img\n1",), {}, ValueError, r"image_id='img\\n1' contains the control character"),
    (("img1", "c\tat"), {}, ValueError, r"label='c\\tat' contains the control character"),
    ((" img1",), {}, ValueError, r"image_id=' img1' starts or ends with white space"),
    ((12,), {}, TypeError, r"image_id must be str, got int"),
    (("img1",), {"timestamp": 0.0}, ValueError, r"timestamp=0.0 must be > 0"),
    (("img1",), {"timestamp": float("nan")}, ValueError, r"timestamp=nan must be a finite number"),
])
def test_marker_sender_refuses_bad_input(unique_name: str, args: tuple, kwargs: dict, error: type,
                                         match: str) -> None:
    with MarkerSender(unique_name) as sender:
        with pytest.raises(error, match=match):
            sender.send(*args, **kwargs)
        with pytest.raises(ValueError, match=r"text='' is empty"):
            sender.send_raw("")
        with pytest.raises(ValueError, match=r"text='a\\nb' contains the control character"):
            sender.send_raw("a\nb")
        assert sender.n_sent == 0
    with pytest.raises(ValueError, match=r"name='' is empty"):
        MarkerSender("")


# ============================================================================ schedule, gallery, options
def test_trials_are_seeded_balanced_and_within_isi_bounds() -> None:
    a = make_trials(5, 23, isi_ms=300.0, jitter_ms=200.0, seed=7)
    assert a == make_trials(5, 23, isi_ms=300.0, jitter_ms=200.0, seed=7)
    assert a != make_trials(5, 23, isi_ms=300.0, jitter_ms=200.0, seed=8)
    isis = np.array([t.isi_s for t in a])
    assert np.all((isis >= 0.3) & (isis <= 0.5)) and isis.std() > 0.02  # jittered, inside [isi, isi + jitter]
    counts = np.bincount([t.image_index for t in a], minlength=5)
    assert counts.min() >= 4 and counts.max() <= 5  # shuffled passes: every image 23 // 5 or one more times
    assert sorted(t.image_index for t in a[:5]) == list(range(5))
    seq = make_trials(3, 7, isi_ms=100.0, jitter_ms=0.0, order="sequential")
    assert [t.image_index for t in seq] == [0, 1, 2, 0, 1, 2, 0] and {t.isi_s for t in seq} == {0.1}
    assert len(make_trials(4)) == 4
    with pytest.raises(ValueError, match=r"isi_ms=-1.0 must be >= 0.0"):
        make_trials(3, isi_ms=-1.0)
    with pytest.raises(ValueError, match=r"order='shuffle' is not one of 'random', 'sequential'"):
        make_trials(3, order="shuffle")


def test_gallery_loads_and_refuses_what_cannot_be_presented(tmp_path: Path) -> None:
    g = load_stimulus_gallery(make_gallery(tmp_path / "ok"), size=32)
    assert g.ids == tuple(COLOURS) and g.labels == tuple(f"label {i}" for i in COLOURS)
    assert g.images.shape == (3, 32, 32, 3) and g.marker(1) == "stim/img0001/label img0001"
    assert load_stimulus_gallery(make_gallery(tmp_path / "nolabels", labels=False)).labels == (None,) * 3

    missing = make_gallery(tmp_path / "missing")
    (missing / "labels.csv").write_text("id,label\nimg0000,a\nimg0001,b\nimg0002,c\nimg0007,d\nimg0009,e\n")
    with pytest.raises(ValueError, match=r"name 2 id\(s\) with no image file, e.g. \['img0007', 'img0009'\]"):
        load_stimulus_gallery(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no readable images in .*empty"):
        load_stimulus_gallery(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"gallery: .*nowhere' does not exist"):
        load_stimulus_gallery(tmp_path / "nowhere")
    nested = make_gallery(tmp_path / "nested" / "dogs", labels=False).parent
    with pytest.raises(ValueError, match=r"image id='dogs/img0000' must not contain '/'.*flat folder"):
        load_stimulus_gallery(nested)
    slash = make_gallery(tmp_path / "slash")
    (slash / "labels.csv").write_text("id,label\nimg0000,cat/dog\n")
    with pytest.raises(ValueError, match=r"label of 'img0000'='cat/dog' must not contain '/'"):
        load_stimulus_gallery(slash)
    broken = make_gallery(tmp_path / "broken")
    (broken / "img0003.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"1 image file\(s\) cannot be shown \(img0003.png: cannot decode"):
        load_stimulus_gallery(broken)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"isi_ms": -5.0}, ValueError, r"isi_ms=-5.0 must be >= 0.0"),
    ({"duration_ms": 0.0}, ValueError, r"duration_ms=0.0 must be > 0"),
    ({"jitter_ms": float("inf")}, ValueError, r"jitter_ms=inf must be a finite number"),
    ({"n_trials": 0}, ValueError, r"n_trials=0 must be an integer >= 1"),
    ({"n_trials": True}, TypeError, r"n_trials=True must be an integer"),
    ({"photodiode": "top"}, ValueError, r"photodiode='top' is not one of 'off', 'top-left'"),
    ({"order": "shuffled"}, ValueError, r"order='shuffled' is not one of"),
    ({"markers": ""}, ValueError, r"markers='' is empty"),
    ({"fullscreen": "no"}, TypeError, r"fullscreen='no' must be True or False"),
    ({"log": "/nonexistent-dir/run.json"}, FileNotFoundError, r"log's folder: '/nonexistent-dir' does not exist"),
])
def test_options_refuse_bad_values(tmp_path: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PresenterOptions(tmp_path, **kwargs)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bci.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["present", str(tmp_path), "--isi-ms", "-1"])
    assert exc.value.code == 2 and "argument --isi-ms: must be >= 0, got '-1'" in capsys.readouterr().err
    missing = make_gallery(tmp_path / "g")
    (missing / "img0001.png").unlink()
    assert main(["present", str(missing), "--windowed", "--wait-for-consumers", "0"]) == 2
    err = capsys.readouterr().err
    assert "bci present: error:" in err and "['img0001']" in err and "Traceback" not in err


# ============================================================================ the presenter
def test_presenter_sends_one_marker_per_trial_at_the_frame(qapp, tmp_path: Path, unique_name: str) -> None:
    gallery = make_gallery(tmp_path / "g")
    inlet = MarkerInlet(unique_name)
    seen: list[tuple[str, int, tuple, tuple, float]] = []

    def on_event(kind: str, log, widget) -> None:
        seen.append((kind, log.index, pixel(widget, 5, 5), centre(widget), pylsl.local_clock()))

    options = fast_options(gallery, unique_name, n_trials=4, log=tmp_path / "run.json")
    report = run_presenter(options, app=qapp, on_event=on_event)
    samples = inlet.stop()

    assert report.consumers_at_start and not report.aborted and report.markers_sent == 4
    assert [s for s, _ in samples] == [t.marker for t in report.trials]  # exactly one marker per trial
    assert [parse_marker(s)[0] for s, _ in samples] == [t.image_id for t in report.trials]
    assert {t.image_id for t in report.trials[:3]} == set(COLOURS)  # a shuffled pass over the gallery
    stamps = np.array([t for _, t in samples])
    assert stamps == pytest.approx([t.marker_time for t in report.trials], abs=1e-4)
    ons = [e for e in seen if e[0] == "stimulus"]
    offs = [e for e in seen if e[0] == "blank"]
    assert [e[1] for e in ons] == [0, 1, 2, 3] and [e[1] for e in offs] == [0, 1, 2, 3]
    for log, on, off in zip(report.trials, ons, offs, strict=True):
        assert on[2] == (255, 255, 255) and off[2] == (0, 0, 0)  # photodiode: white on, black off
        assert on[3] == COLOURS[log.image_id] and off[3] == (0, 0, 0)  # the image, then blank
        assert log.marker_time <= on[4] < log.offset_time  # stamped when the frame was drawn, before the offset
        assert log.offset_time - log.marker_time >= 0.1 - 0.002  # the stimulus stayed on for duration_ms
    trials = make_trials(3, 4, isi_ms=100.0, jitter_ms=50.0, seed=3)
    for k in range(3):  # onset-to-onset >= duration + this trial's ISI (never an upper bound: the machine is shared)
        assert stamps[k + 1] - stamps[k] >= 0.1 + trials[k].isi_s - 0.002
    assert report.results_stream is None and all(t.result is None for t in report.trials)
    log = json.loads((tmp_path / "run.json").read_text())
    assert log["markers_sent"] == 4 and [t["marker_time"] for t in log["trials"]] == [t.marker_time for t in
                                                                                     report.trials]
    assert "trials: 4 of 4 shown; markers sent on" in report.summary()


def test_presenter_shows_decoded_results_and_counts_misses(qapp, tmp_path: Path, unique_name: str) -> None:
    gallery = make_gallery(tmp_path / "g")
    results = f"{unique_name}-results"
    proc = subprocess.Popen([sys.executable, "-u", "-m", "tests.lsl_echo_results", "--name", results,
                             "--markers", unique_name, "--ids", ",".join(COLOURS), "--plan", "hit,wrong,drop,late,skip",
                             "--n", "5"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        feedback: list[tuple[int, str, tuple]] = []

        def on_event(kind: str, log, widget) -> None:
            if kind == "feedback":
                feedback.append((log.index, widget.caption, centre(widget)))
                assert pixel(widget, 5, 5) == (0, 0, 0)  # photodiode off during feedback

        options = fast_options(gallery, unique_name, results=results, n_trials=5, order="sequential",
                               result_timeout_ms=1000.0, log=tmp_path / "run.json")
        report = run_presenter(options, app=qapp, on_event=on_event)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "answered 4" in out
    hit, wrong, dropped, late, missed = report.trials
    assert (hit.result, hit.top1_id, hit.hit) == ("window", "img0000", True)
    assert (wrong.result, wrong.top1_id, wrong.top1_label, wrong.hit) == ("window", "img0002", "label img0002", False)
    assert (dropped.result, dropped.reason, dropped.hit) == ("dropped", "gap", None)
    assert (late.result, late.top1_id, late.hit, late.late) == ("missed", None, None, True)
    assert (missed.result, missed.top1_id, missed.hit, missed.late) == ("missed", None, None, False)
    assert feedback == [
        (0, "decoded: label img0000", COLOURS["img0000"]),  # the decoded image from the gallery, captioned
        (1, "decoded: label img0002", COLOURS["img0002"]),
        (2, "no result (dropped by the runtime: gap)", (0, 0, 0)),
        (3, "no result", (0, 0, 0)),
        (4, "no result", (0, 0, 0)),
    ]
    assert (report.count("window"), report.count("dropped"), report.count("missed"), report.late) == (2, 1, 2, 1)
    assert (report.top1_hits, report.scored) == (1, 2)
    summary = report.summary()
    assert "received 2, dropped by the runtime 1, missed (timeout) 2, of which 1 came later" in summary
    assert "top-1 hits: 1 of 2 (50.0%)" in summary
    log = json.loads((tmp_path / "run.json").read_text())
    assert [t["hit"] for t in log["trials"]] == [True, False, None, None, None]
    assert (log["results_missed"], log["results_late"], log["top1_hits"]) == (2, 1, 1)


def test_cli_runs_the_library_presenter(qapp, tmp_path: Path, unique_name: str,
                                        capsys: pytest.CaptureFixture) -> None:
    from bci.cli.main import main

    gallery = make_gallery(tmp_path / "g")
    args = ["present", str(gallery), "--windowed", "--markers", unique_name, "--n-trials", "2", "--duration-ms", "50",
            "--isi-ms", "50", "--jitter-ms", "0", "--wait-for-consumers", "0", "--order", "sequential",
            "--log", str(tmp_path / "run.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"trials: 2 of 2 shown; markers sent on {unique_name!r}: 2" in out
    assert "warning: no consumer was connected" in out  # nobody listened: said, not hidden
    log = json.loads((tmp_path / "run.json").read_text())
    assert [t["image_id"] for t in log["trials"]] == ["img0000", "img0001"] and log["consumers_at_start"] is False


def test_escape_stops_after_the_current_frame_and_says_so(qapp, tmp_path: Path, unique_name: str) -> None:
    from PySide6 import QtCore
    from PySide6.QtTest import QTest

    def on_event(kind: str, log, widget) -> None:
        if kind == "stimulus" and log.index == 1:
            QTest.keyClick(widget, QtCore.Qt.Key.Key_Escape)

    options = fast_options(make_gallery(tmp_path / "g"), unique_name, n_trials=5, wait_for_consumers=0.0)
    report = run_presenter(options, app=qapp, on_event=on_event)
    assert report.aborted and report.markers_sent == 2
    assert [t.marker_time is None for t in report.trials] == [False, False, True, True, True]
    assert report.summary().startswith("trials: 2 of 5 shown (stopped early)")
