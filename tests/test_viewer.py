"""The live viewer: widgets fed by real LSL streams from other processes, screenshots checked by pixels.

Qt runs offscreen (QT_QPA_PLATFORM=offscreen, set in conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from bci.retrieval.gallery import Gallery
from bci.viewer import (
    ImageCache,
    LslProvider,
    ViewerModel,
    ViewerOptions,
    decode_image_ref,
    display_available,
    encode_png_data_uri,
    placeholder_tile,
)
from bci.viewer.widgets import TRACE_COLORS, ViewerWindow, minmax_decimate
from streams.errors import StreamLostError

REPO = Path(__file__).resolve().parents[1]
IDS = ["img0000", "img0001", "img0002", "img0003"]
#: One saturated colour per gallery image: the thumbnails are easy to find in a screenshot.
COLORS = [(255, 0, 255), (0, 255, 0), (255, 255, 0), (0, 255, 255)]


# --------------------------------------------------------------------------- helpers
def _thumb(color: tuple[int, int, int]) -> np.ndarray:
    img = np.full((32, 32, 3), 20, np.uint8)
    img[6:26, 6:26] = color
    return img


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(IDS), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    g = Gallery(embeddings=emb, ids=IDS, labels=[f"label {i}" for i in IDS], captions=[""] * len(IDS),
                thumbnails=np.stack([_thumb(c) for c in COLORS]), meta={"name": "viewer-test"})
    return g.save(tmp_path_factory.mktemp("gallery") / "g")


def _start(module: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-u", "-m", module, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"{module} did not start: {line!r} {proc.stderr.read()}")
    return proc


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []

    def start(module: str, *args: str) -> subprocess.Popen:
        p = _start(module, *args)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def _image(widget: QtWidgets.QWidget) -> np.ndarray:
    """What ``widget`` shows, as an (h, w, 3) uint8 array."""
    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    return _qimage_array(img)


def _pixmap(tile: QtWidgets.QWidget) -> np.ndarray:
    """The picture a results tile shows."""
    return _qimage_array(tile.picture.pixmap().toImage())


def _qimage_array(img: QtGui.QImage) -> np.ndarray:
    img = img.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    h, w, bpl = img.height(), img.width(), img.bytesPerLine()
    return np.frombuffer(img.constBits(), np.uint8, count=h * bpl).reshape(h, bpl)[:, : 3 * w].reshape(h, w, 3)


def _count_color(pixels: np.ndarray, color: tuple[int, int, int], tol: int = 10) -> int:
    return int(np.all(np.abs(pixels.astype(int) - np.array(color)) <= tol, axis=-1).sum())


def _trace_pixels(pixels: np.ndarray) -> int:
    return sum(_count_color(pixels, c) for c in TRACE_COLORS)


# --------------------------------------------------------------------------- model (no Qt, no LSL)
def test_model_counts_malformed_results_and_never_raises() -> None:
    model = ViewerModel()
    good = {"type": "window", "window_index": 0, "image_id": "a", "true_label": "cat",
            "topk": [{"id": "b", "label": "dog", "score": 0.5}, {"id": "a", "label": "cat", "score": 0.4}]}
    assert model.add_result_text(json.dumps(good), stamp=None)
    for bad in ("{oops", "[1, 2]", "null", json.dumps({"type": "window", "topk": "x"}),
                json.dumps({"type": "window", "window_start_time": "soon"}), json.dumps({"type": "mystery"})):
        assert not model.add_result_text(bad)
    snap = model.results()
    assert snap.n_windows == 1 and snap.n_malformed == 6
    assert (snap.image_hits.n, snap.image_hits.top1, snap.image_hits.top5) == (1, 0, 1)
    assert (snap.class_hits.top1, snap.class_hits.top5) == (0, 1)


def test_model_maps_remote_times_and_merges_follow_up_images() -> None:
    model = ViewerModel()
    record = {"type": "window", "window_index": 7, "window_start_time": 10.0, "window_end_time": 10.44,
              "emitted_time": 11.0, "marker": "m", "marker_time": 9.98, "images": {"saliency": "/x.png"}}
    model.add_result_text(json.dumps(record), stamp=111.0)  # the runtime's clock is 100 s behind ours
    model.add_record({"type": "image", "window_index": 7, "images": {"diffusion": "/y.png"}})
    entry = model.results().entries[0]
    assert entry.start_time == pytest.approx(110.0) and entry.end_time == pytest.approx(110.44)
    assert entry.images == {"saliency": "/x.png", "diffusion": "/y.png"}
    model.add_record({"type": "dropped", "marker": "late", "marker_time": 5.0, "reason": "overwritten"})
    assert model.results().dropped == {"overwritten": 1}


def test_image_encoding_lives_below_the_viewer() -> None:
    """bci.images (Qt-free) is the one owner of the encoding; the viewer re-exports the same functions."""
    import bci.images
    import bci.viewer.images

    for name in ("encode_png_data_uri", "decode_image_ref", "as_rgb"):
        assert getattr(bci.viewer.images, name) is getattr(bci.images, name)
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    uri = bci.images.encode_png_data_uri(img)
    assert uri.startswith(bci.images.DATA_URI_PREFIX + "png;base64,")
    np.testing.assert_array_equal(bci.images.decode_image_ref(uri), img)
    np.testing.assert_array_equal(bci.images.as_rgb(np.full((2, 2), 0.5)), np.full((2, 2, 3), 128, np.uint8))


def test_image_refs_placeholder_and_missing_ids(tmp_path: Path, gallery_dir: Path) -> None:
    img = _thumb((200, 10, 10))
    np.testing.assert_array_equal(decode_image_ref(encode_png_data_uri(img)), img)
    grey = np.repeat(np.kron(np.random.default_rng(0).integers(0, 256, (10, 10)), np.ones((6, 6)))[..., None],
                     3, axis=2).astype(np.uint8)  # a decoded fMRI pattern: stored as one channel, read as RGB
    uri = encode_png_data_uri(grey)
    np.testing.assert_array_equal(decode_image_ref(uri), grey)
    np.testing.assert_array_equal(decode_image_ref(encode_png_data_uri(grey[..., 0])), grey)
    assert len(uri) < 0.7 * len(encode_png_data_uri(np.ascontiguousarray(grey[..., ::-1] + [0, 0, 1])))
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "s.png")
    np.testing.assert_array_equal(decode_image_ref("s.png", base_dir=tmp_path), img)
    with pytest.raises(ValueError, match="base64"):
        decode_image_ref("data:image/png;base64,@@@")
    cache = ImageCache(Gallery.load(gallery_dir), base_dir=tmp_path)
    assert cache.image("missing.png") is None and cache.image("data:image/png;base64,AAAA") is None
    assert cache.thumbnail("img0001") is not None and cache.thumbnail("nope") is None
    tile = placeholder_tile(64)
    assert tile.shape == (64, 64, 3) and tile.std() > 0
    with pytest.raises(ValueError, match="size"):
        placeholder_tile(2)
    with pytest.raises(TypeError, match="size=64.0 must be an integer"):
        placeholder_tile(64.0)  # type: ignore[arg-type]


def test_minmax_decimation_keeps_extremes() -> None:
    x = np.arange(10_000) / 1000.0
    y = np.zeros((10_000, 2), np.float32)
    y[5003, 1] = 7.0  # a one-sample spike survives
    xd, yd = minmax_decimate(x, y, 500)
    assert len(xd) <= 500 and yd[:, 1].max() == 7.0 and xd[-1] == x[-1]


@pytest.mark.parametrize(
    ("env", "platform", "ok"),
    [({}, "linux", False), ({"DISPLAY": ":0"}, "linux", True), ({"WAYLAND_DISPLAY": "w"}, "linux", True),
     ({"QT_QPA_PLATFORM": "offscreen"}, "linux", True), ({}, "darwin", True)],
)
def test_display_detection(env: dict, platform: str, ok: bool) -> None:
    available, reason = display_available(env, platform)
    assert available is ok
    assert ("DISPLAY" in reason) is (not ok)


# --------------------------------------------------------------------------- real streams
def test_viewer_shows_real_eeg_and_results_streams(qtbot, procs, unique_name: str, gallery_dir: Path) -> None:
    """EEG (128 ch, 1 kHz) and BCIResults from two other processes: traces, tiles, counters, pixels."""
    procs("tests.lsl_producer", "--name", unique_name, "--channels", "128", "--rate", "1000", "--duration", "6")
    res = procs("tests.lsl_results_producer", "--name", unique_name + "-res", "--duration", "4", "--every", "0.1")
    provider = LslProvider(unique_name, results_stream=unique_name + "-res", resolve_timeout=15).start()
    try:
        win = ViewerWindow(provider, fps=30, gallery=Gallery.load(gallery_dir))
        qtbot.addWidget(win)
        win.resize(1280, 800)
        win.show()
        win.start()
        qtbot.waitUntil(lambda: provider.model.results().n_windows >= 8
                        and provider.model.results().n_malformed >= 2, timeout=20_000)
        win.stop()
        win.refresh()
        snap = win.last_results
        assert win.results_panel.malformed.text().startswith(f"malformed results skipped: {snap.n_malformed}")
        assert win.signal_view.n_drawn > 5 and win.frames > 5
        row = win.results_panel.rows[0]
        entry = snap.entries[0]
        assert row.entry_serial == entry.serial
        states = [t.state for t in row.topk_tiles]
        assert states == ["image"] * 4 + ["placeholder"]  # the 5th id is not in the gallery
        assert row.topk_tiles[4].image_id == "not-in-gallery"
        assert row.true_tile.state == "image" and row.image_tiles["saliency"].state == "image"
        assert snap.image_hits.top1 == snap.image_hits.n  # the producer lists the true image first
        # pixels: traces in the plot, the gallery colours in the thumbnails
        plot = _image(win.signal_view.plot)
        assert _trace_pixels(plot) > 2000
        true_color = COLORS[IDS.index(entry.image_id)]
        assert _count_color(_pixmap(row.true_tile), true_color) > 500
        assert _count_color(_pixmap(row.topk_tiles[0]), true_color) > 500
        placeholder = _pixmap(row.topk_tiles[4])
        assert all(_count_color(placeholder, c) == 0 for c in COLORS) and placeholder.std() > 1  # not blank (a flat tile has std 0; its text alone gives ~5)
        assert "p50" in win.health_panel.values["latency"].text()
        assert "1000 Hz nominal" in win.health_panel.values["rate"].text()
        assert "pushed" in res.stdout.readline()
    finally:
        provider.stop()


def test_stalled_gui_drops_no_samples(qtbot, procs, unique_name: str) -> None:
    """The GUI thread sleeps 2 s while 128 x 1000 Hz samples stream in: every sample is kept, in order."""
    prod = procs("tests.lsl_producer", "--name", unique_name, "--channels", "128", "--rate", "1000",
                 "--duration", "3.5", "--chunk", "10")
    provider = LslProvider(unique_name, resolve_timeout=15).start()
    try:
        win = ViewerWindow(provider, fps=30)
        qtbot.addWidget(win)
        win.show()
        win.start()
        qtbot.waitUntil(lambda: provider.data_arrived() > 200 and win.frames > 2, timeout=15_000)
        before_stall = provider.data_arrived()
        frames = win.frames
        time.sleep(2.0)  # the GUI thread is stuck: no frames, no events
        assert win.frames == frames
        assert provider.data_arrived() >= before_stall + 1000  # acquisition went on meanwhile
        n = int(prod.stdout.readline().split()[1])
        qtbot.waitUntil(lambda: provider.data_arrived() == n and win.frames > frames, timeout=10_000)
        snap = provider.data.snapshot()
        assert snap.gaps == [] and snap.n_samples == n
        data, _ = provider.data.buffer.get(0, n)
        np.testing.assert_array_equal(data[:, 0], np.arange(n, dtype=np.float32))
        np.testing.assert_allclose(data[:, 127] - data[:, 0], 0.127, atol=1e-3)
    finally:
        provider.stop()


def test_preprocessed_view_from_a_background_thread(qtbot, procs, unique_name: str) -> None:
    procs("tests.lsl_producer", "--name", unique_name, "--channels", "8", "--rate", "500", "--duration", "4")
    provider = LslProvider(unique_name, preprocess={}, resolve_timeout=15).start()
    try:
        win = ViewerWindow(provider, fps=30, processed=True)
        qtbot.addWidget(win)
        win.show()
        win.start()
        assert win.signal_view.view.currentText() == "preprocessed"
        qtbot.waitUntil(lambda: provider.model.processed is not None
                        and provider.model.processed.buffer.total > 500, timeout=20_000)
        qtbot.wait(100)
        data, _ = provider.model.processed.latest(1.0)
        # the producer's ramp (i + c/1000) is mostly removed by the high-pass + average reference
        assert np.abs(data).max() < 5.0
        assert not provider.pending()
    finally:
        provider.stop()


def test_fmri_stream_shows_voxel_images(qtbot, procs, unique_name: str) -> None:
    """fMRI volumes and a pattern decoder's results from other processes: voxels, carpet, decoded pattern."""
    from tests.lsl_results_producer import reconstruction

    procs("tests.lsl_producer", "--name", unique_name, "--type", "fMRI", "--channels", "100", "--rate", "20",
          "--duration", "3")
    procs("tests.lsl_results_producer", "--name", unique_name + "-res", "--duration", "3", "--every", "0.2",
          "--reconstruction", "--malformed-at", "")
    provider = LslProvider(f"name={unique_name},type=fMRI", results_stream=unique_name + "-res",
                           resolve_timeout=15).start()
    try:
        win = ViewerWindow(provider, fps=30)
        qtbot.addWidget(win)
        win.show()
        win.start()
        qtbot.waitUntil(lambda: win.signal_view.n_drawn >= 3 and provider.model.results().n_windows >= 3,
                        timeout=15_000)
        win.stop()
        win.refresh()
        assert win.signal_view.title.text().startswith("TR ")
        assert win.signal_view.voxels.image.shape == (10, 10)
        newest = win.last_results.entries[0]
        expected = reconstruction(newest.window_index)  # the decoded pattern of the newest window is shown
        np.testing.assert_array_equal(np.transpose(win.signal_view.decoded.image, (1, 0, 2)), expected)
        assert not provider.set_processed(True)  # no preprocessed view for fMRI
    finally:
        provider.stop()


# --------------------------------------------------------------------------- in-process (bci live)
def test_in_process_viewer_with_a_stalled_gui_decodes_every_window(qtbot, unique_name: str,
                                                                  tmp_path: Path) -> None:
    """run_live_viewer next to a LiveRuntime; the GUI stalls 2 s; every marker is still decoded."""
    import torch

    from bci.runtime.assemble import load_encoder, pipeline_factory
    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config
    from bci.runtime.sinks import ListSink
    from bci.runtime.live import LiveRuntime
    from bci.viewer import run_live_viewer

    torch.manual_seed(0)
    model = save_checkpoint(build_model(default_config("eeg_convnet", n_chans=8, n_times=440)), tmp_path / "m")
    marks = (500, 1200, 1900)
    proc = _start("tests.lsl_event_producer", "--name", unique_name, "--markers-at", ",".join(map(str, marks)),
                  "--duration", "3")
    sink = ListSink()
    try:
        runtime = LiveRuntime(unique_name, unique_name + "-Markers",
                              pipeline_factory(load_encoder(model, device="cpu"), [sink]), resolve_timeout=15)
        QtCore.QTimer.singleShot(300, lambda: time.sleep(2.0))  # stall the GUI thread mid-stream
        shot = tmp_path / "live.png"
        frames = run_live_viewer(runtime, duration=30, options=ViewerOptions(screenshot=shot, after=2.8))
    finally:
        proc.kill()
        proc.communicate()
    windows = [r for r in sink.records if r["type"] == "window"]
    assert [w["window_start_index"] for w in windows] == [k + 20 for k in marks]
    assert runtime.pipeline.stats.dropped == {} and runtime.decoder_overwritten == 0
    assert runtime.data_receiver.snapshot().gaps == []
    assert frames > 10
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 800)
        assert _trace_pixels(np.asarray(img.convert("RGB"))[:, :700]) > 1000


def test_run_ending_before_the_screenshot_is_due_still_takes_it(qtbot, unique_name: str, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """--duration shorter than --after (or a stream that ends): the last picture is saved, with a warning."""
    import torch

    from bci.runtime.assemble import load_encoder, pipeline_factory
    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config
    from bci.runtime.live import LiveRuntime
    from bci.viewer import run_live_viewer

    torch.manual_seed(0)
    model = save_checkpoint(build_model(default_config("eeg_convnet", n_chans=8, n_times=440)), tmp_path / "m")
    proc = _start("tests.lsl_event_producer", "--name", unique_name, "--duration", "10")
    try:
        runtime = LiveRuntime(unique_name, unique_name + "-Markers",
                              pipeline_factory(load_encoder(model, device="cpu"), []), resolve_timeout=15)
        shot = tmp_path / "early.png"
        with caplog.at_level("WARNING", logger="bci.viewer.app"):
            run_live_viewer(runtime, duration=2.0, options=ViewerOptions(screenshot=shot, after=60))
    finally:
        proc.kill()
        proc.communicate()
    assert any("before the screenshot was due (after 60 s); taking it now" in r.getMessage() for r in caplog.records)
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 800)
        assert _trace_pixels(np.asarray(img.convert("RGB"))[:, :700]) > 1000


def test_runtime_error_is_raised_rather_than_the_missing_screenshot(qtbot, unique_name: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoding thread fails before any data: its error reaches the caller, not 'the screenshot was not taken';
    a run that ends cleanly with no data says no screenshot was taken (the CLI must not print 'saved')."""
    import torch

    from bci.runtime.assemble import load_encoder, pipeline_factory
    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config
    from bci.runtime.live import LiveRuntime
    from bci.viewer import run_live_viewer

    torch.manual_seed(0)
    model = save_checkpoint(build_model(default_config("eeg_convnet", n_chans=8, n_times=440)), tmp_path / "m")
    proc = _start("tests.lsl_event_producer", "--name", unique_name, "--duration", "10")
    runtime = LiveRuntime(unique_name, unique_name + "-Markers",
                          pipeline_factory(load_encoder(model, device="cpu"), []), resolve_timeout=15)

    def failing_run(*args, **kwargs):
        raise RuntimeError("decoder failed: boom")

    # the run ends before the viewer saw any data (made certain here: the stream itself is real and flowing)
    from bci.viewer.sources import RuntimeProvider

    monkeypatch.setattr(RuntimeProvider, "data_arrived", lambda self: 0)
    try:
        monkeypatch.setattr(runtime, "run", failing_run)
        with pytest.raises(RuntimeError, match="decoder failed: boom"):
            run_live_viewer(runtime, options=ViewerOptions(screenshot=tmp_path / "never.png", after=60))
        monkeypatch.setattr(runtime, "run", lambda *args, **kwargs: None)  # ends cleanly, still no data
        with pytest.raises(StreamLostError, match="no data arrived before the viewer closed; the screenshot"):
            run_live_viewer(runtime, options=ViewerOptions(screenshot=tmp_path / "never.png", after=60))
        assert not (tmp_path / "never.png").exists()
    finally:
        runtime.stop()
        proc.kill()
        proc.communicate()


# --------------------------------------------------------------------------- command line
NO_DISPLAY = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")


def test_bci_view_screenshot_end_to_end(procs, unique_name: str, gallery_dir: Path, tmp_path: Path) -> None:
    """``bci view --screenshot`` as a subprocess without a display: a 1280x800 PNG with traces and thumbnails."""
    procs("tests.lsl_producer", "--name", unique_name, "--channels", "128", "--rate", "1000", "--duration", "12",
          "--wait-consumer", "90")
    procs("tests.lsl_results_producer", "--name", unique_name + "-res", "--duration", "10", "--every", "0.2")
    out = tmp_path / "view.png"
    env = {k: v for k, v in os.environ.items() if k not in NO_DISPLAY}
    res = subprocess.run([sys.executable, "-m", "bci.cli", "view", "--eeg", unique_name,
                          "--results", unique_name + "-res", "--gallery", str(gallery_dir),
                          "--screenshot", str(out), "--after", "2", "--resolve-timeout", "30"],
                         cwd=REPO, capture_output=True, text=True, timeout=110, env=env)
    assert res.returncode == 0, res.stderr
    assert "saved screenshot" in res.stdout
    from PIL import Image

    with Image.open(out) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape == (800, 1280, 3)
    assert _trace_pixels(pixels[:, :700]) > 3000  # traces on the left
    right = pixels[:, 760:]
    assert sum(_count_color(right, c) > 300 for c in COLORS) >= 3  # gallery thumbnails on the right
    assert _trace_pixels(right) < _trace_pixels(pixels[:, :700]) / 10


def test_bci_view_without_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from bci.cli.main import main

    for key in NO_DISPLAY:
        monkeypatch.delenv(key, raising=False)
    assert main(["view", "--eeg", "NoSuchStream-viewer-test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bci view: error: no display") and "--screenshot" in err


def test_bci_live_without_display_says_so_and_runs_headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from bci.cli.main import main

    for key in NO_DISPLAY:
        monkeypatch.delenv(key, raising=False)
    code = main(["live", "--eeg", "NoSuchStream-viewer-test", "--markers", "NoSuchMarkers",
                 "--model", str(tmp_path / "no-model"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert err.startswith("viewer: no display") and "running headless" in err and err.count("viewer:") == 1
    assert code == 2 and "no-model" in err  # it went on, headless, to load the model
