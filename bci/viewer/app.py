"""Run the viewer: in-process next to a :class:`~bci.runtime.live.LiveRuntime`, or stand-alone over LSL.

The Qt event loop runs on the calling (main) thread; acquisition and decoding keep
running on their own threads whatever the GUI does. ``screenshot`` renders offscreen
when there is no display, saves a PNG after ``after`` seconds of live data and returns.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bci.viewer.display import NoDisplayError, display_available
from bci.viewer.sources import LslProvider, Provider, RuntimeProvider
from streams._checks import check_float, check_int
from streams.errors import StreamLostError

if TYPE_CHECKING:
    from bci.preprocessing import PreprocessConfig
    from bci.runtime.live import LiveRuntime
    from bci.viewer.images import ThumbnailGallery

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (1280, 800)
#: Seconds to wait for the first sample before a screenshot run gives up.
FIRST_DATA_TIMEOUT = 20.0


@dataclass
class ViewerOptions:
    """How the viewer looks and when it stops.

    Parameters
    ----------
    fps : float
        Redraw rate (frames per second).
    seconds : float
        Time span of the traces.
    gallery : ThumbnailGallery, optional
        Thumbnails for retrieved image ids (:func:`bci.viewer.images.load_gallery`).
    image_dir : path, optional
        Relative image paths in records are resolved against it.
    processed : bool
        Start with the preprocessed traces.
    screenshot : path, optional
        Save a PNG here after ``after`` seconds of live data, then return. When the run ends
        sooner (the stream is over, ``duration``, Ctrl-C) after data arrived, the screenshot
        is taken then, with a warning.
    after : float
        Seconds of live data before the screenshot.
    size : (int, int)
        Window size in pixels.
    duration : float, optional
        Close after this many seconds (None: until the window is closed / Ctrl-C).
    parent_pid : int, optional
        Close when this process is no longer the viewer's parent (the viewer child of
        ``bci live``: it never outlives the decoder, even one that was killed).
    """

    fps: float = 30.0
    seconds: float = 5.0
    gallery: ThumbnailGallery | None = None
    image_dir: Any = None
    processed: bool = False
    screenshot: str | os.PathLike | None = None
    after: float = 5.0
    size: tuple[int, int] = DEFAULT_SIZE
    duration: float | None = None
    parent_pid: int | None = None

    def __post_init__(self) -> None:
        for name in ("fps", "seconds", "after"):
            check_float(name, getattr(self, name), positive=True, finite=False)
        if self.parent_pid is not None:
            self.parent_pid = check_int("parent_pid", self.parent_pid, low=1)
        if self.duration is not None and not self.duration > 0:
            raise ValueError(f"duration={self.duration!r} must be a positive number of seconds or None")
        w, h = self.size
        if w < 640 or h < 400:
            raise ValueError(f"size={w}x{h} is too small; use at least 640x400 (default 1280x800)")
        if self.screenshot is not None:
            parent = Path(self.screenshot).resolve().parent
            if not parent.is_dir():
                raise FileNotFoundError(f"--screenshot {str(self.screenshot)!r}: folder {str(parent)!r} does not exist")


def ensure_qapp(offscreen: bool = False) -> Any:
    """The QApplication (created with a dark palette when none exists; offscreen if asked)."""
    if offscreen:  # asked for because there is no display: any other platform would abort
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6 import QtWidgets

    from bci.viewer.qtcompat import guard_none_refcount

    app = QtWidgets.QApplication.instance()
    if app is None:
        _quiet_qt_messages()
        app = QtWidgets.QApplication(["bci-viewer"])
        guard_none_refcount()
        _dark_palette(app)
    return app


def _quiet_qt_messages() -> None:
    """Keep Qt's harmless offscreen-plugin chatter out of the terminal (real errors still show)."""
    from PySide6 import QtCore

    def handler(mode: Any, context: Any, message: str) -> None:
        if "propagateSizeHints" in message or "QFont::" in message:
            return
        if mode in (QtCore.QtMsgType.QtWarningMsg, QtCore.QtMsgType.QtCriticalMsg, QtCore.QtMsgType.QtFatalMsg):
            logger.warning("Qt: %s", message)

    QtCore.qInstallMessageHandler(handler)


def _dark_palette(app: Any) -> None:
    import pyqtgraph as pg
    from PySide6 import QtGui

    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    role = QtGui.QPalette.ColorRole
    for r, color in ((role.Window, "#1e2127"), (role.WindowText, "#dcdfe4"), (role.Base, "#15181d"),
                     (role.AlternateBase, "#262a31"), (role.Text, "#dcdfe4"), (role.Button, "#2a2e36"),
                     (role.ButtonText, "#dcdfe4"), (role.Highlight, "#3d7eff"), (role.ToolTipBase, "#2a2e36"),
                     (role.ToolTipText, "#dcdfe4")):
        pal.setColor(r, QtGui.QColor(color))
    app.setPalette(pal)
    pg.setConfigOptions(background="#15181d", foreground="#c8ccd4", antialias=False)


def run_viewer(provider: Provider, options: ViewerOptions | None = None,
               should_stop: Callable[[], bool] | None = None, title: str = "bci viewer") -> int:
    """Show the viewer for ``provider`` until closed, ``should_stop()``, ``duration`` or the screenshot.

    Parameters
    ----------
    provider : Provider
        :class:`RuntimeProvider` or a started :class:`LslProvider`.
    options : ViewerOptions
    should_stop : callable, optional
        Polled 10 times a second; True closes the viewer (e.g. the runtime ended).
    title : str
        Window title.

    Returns
    -------
    int
        Frames drawn.

    Raises
    ------
    NoDisplayError
        No display and no screenshot asked for.
    StreamLostError
        A screenshot was asked for but no data arrived within 20 s (or before the run ended).
    """
    options = options or ViewerOptions()
    ok, reason = display_available()
    if not ok and options.screenshot is None:
        raise NoDisplayError(f"cannot open the viewer: {reason}")
    ensure_qapp(offscreen=not ok)
    from PySide6 import QtCore

    from bci.viewer.widgets import ViewerWindow

    win = ViewerWindow(provider, fps=options.fps, seconds=options.seconds, gallery=options.gallery,
                       image_dir=options.image_dir, processed=options.processed, title=title)
    win.resize(*options.size)
    loop = QtCore.QEventLoop()
    state = _RunState(time.monotonic())
    control = QtCore.QTimer()
    control.setInterval(100)
    control.timeout.connect(lambda: _control_tick(win, provider, options, should_stop, state, loop))
    restore = _install_signal_handlers(lambda: state.request_close())
    try:
        win.show()
        win.start()
        control.start()
        loop.exec()
    finally:
        control.stop()
        win.stop()
        restore()
        _dispose(win)
    if state.error is not None:
        raise state.error
    if options.screenshot is not None and not state.screenshot_taken:
        raise StreamLostError(f"no data arrived before the viewer closed; the screenshot {str(options.screenshot)!r} "
                              "was not taken")
    return win.frames


def _dispose(win: Any) -> None:
    """Close and delete the window now, while Qt and Python are both alive.

    Left to the garbage collector at interpreter exit, PySide6/pyqtgraph objects are
    sometimes destroyed in an order that crashes the process after a clean run.
    """
    import gc

    from PySide6 import QtCore, QtWidgets

    win.close()
    win.deleteLater()
    QtWidgets.QApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    QtWidgets.QApplication.processEvents()
    gc.collect()


@dataclass
class _RunState:
    started: float
    first_data: float | None = None
    close_requested: bool = False
    screenshot_taken: bool = False
    error: BaseException | None = None

    def request_close(self) -> None:
        self.close_requested = True


def _control_tick(win: Any, provider: Provider, options: ViewerOptions, should_stop: Callable[[], bool] | None,
                  state: _RunState, loop: Any) -> None:
    """Every 0.1 s: screenshot when due, stop when asked, on timeout or when the window was closed."""
    now = time.monotonic()
    if state.first_data is None and provider.data_arrived() > 0:
        state.first_data = now
    done = state.close_requested or not win.isVisible()
    if should_stop is not None and should_stop():
        done = True
    if options.duration is not None and now - state.started >= options.duration:
        done = True
    if options.parent_pid is not None and os.getppid() != options.parent_pid:
        logger.warning("the process that started the viewer (%d) has ended; closing", options.parent_pid)
        done = True
    errors = getattr(provider, "errors", lambda: [])()
    if errors:
        state.error, done = errors[0], True
    if options.screenshot is not None and not state.screenshot_taken:
        due = state.first_data is not None and now - state.first_data >= options.after and not provider.pending()
        if due or (done and state.first_data is not None):
            if not due:  # the run ends first (stream over, --duration, Ctrl-C): its last picture, said so
                logger.warning("the viewer closes after %.1f s of data, before the screenshot was due (after %g s); "
                               "taking it now", now - state.first_data, options.after)
            try:
                win.save_screenshot(options.screenshot)
                state.screenshot_taken = True
            except OSError as exc:
                state.error = state.error or exc
            done = True
        elif not done and now - state.started > FIRST_DATA_TIMEOUT + options.after:
            state.error = StreamLostError(
                f"no data arrived within {FIRST_DATA_TIMEOUT:g} s; the screenshot was not taken"
                if state.first_data is None else "the preprocessed view was not ready in time for the screenshot")
            done = True
    if done:
        loop.quit()


def _install_signal_handlers(on_signal: Callable[[], None]) -> Callable[[], None]:
    """Ctrl-C / SIGTERM close the viewer (the Qt loop keeps Python responsive via its timers)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: on_signal())

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    return restore


# --------------------------------------------------------------------------- entry points
def run_live_viewer(runtime: LiveRuntime, *, duration: float | None = None, on_tick: Callable[[], None] | None = None,
                    tick: float = 0.1, options: ViewerOptions | None = None) -> int:
    """Show the viewer while ``runtime`` decodes (``bci live``); returns when either stops.

    The runtime's :meth:`~bci.runtime.live.LiveRuntime.run` loop (``duration``, ``on_tick``)
    moves to a background thread; the Qt loop runs here. Closing the window, Ctrl-C,
    the end of ``duration`` or a screenshot stop the runtime cleanly; an error of the
    runtime is raised here.

    Returns
    -------
    int
        Frames drawn.
    """
    provider = RuntimeProvider(runtime)
    if runtime.pipeline is None:
        runtime.start()
    provider.attach()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            runtime.run(duration, on_tick=on_tick, tick=tick)
        except BaseException as exc:  # re-raised on the calling thread
            errors.append(exc)

    thread = threading.Thread(target=body, name="bci-live-run", daemon=True)
    thread.start()
    viewer_error: StreamLostError | None = None
    try:
        frames = run_viewer(provider, options, should_stop=lambda: not thread.is_alive(),
                            title=f"bci live: {provider.desc.name}")
    except StreamLostError as exc:  # e.g. no screenshot: the runtime's own error, if any, says why
        viewer_error = exc
    finally:
        runtime.request_stop()
        thread.join()
    if errors:
        raise errors[0]
    if viewer_error is not None:
        raise viewer_error
    return frames


def run_stream_viewer(eeg: str, *, results: str | None = None, markers: str | None = None,
                      preprocess: PreprocessConfig | Mapping[str, Any] | None = None, resolve_timeout: float = 5.0,
                      options: ViewerOptions | None = None) -> int:
    """Stand-alone viewer of LSL streams (``bci view``); returns the frames drawn.

    Parameters
    ----------
    eeg : str
        Data stream (name or ``key=value`` query), EEG or fMRI.
    results : str, optional
        The runtime's ``BCIResults`` stream.
    markers : str, optional
        Marker stream.
    preprocess : PreprocessConfig or mapping, optional
        For the preprocessed view (``{}``: the default filters; None: no preprocessed view).
    resolve_timeout : float
        Seconds to find each stream.
    options : ViewerOptions
    """
    options = options or ViewerOptions()
    ok, reason = display_available()
    if not ok and options.screenshot is None:
        raise NoDisplayError(f"cannot open the viewer: {reason}. Pass --screenshot FILE to render offscreen")
    provider = LslProvider(eeg, results_stream=results, marker_stream=markers, preprocess=preprocess,
                           resolve_timeout=resolve_timeout)
    try:
        provider.start()
        return run_viewer(provider, options, title=f"bci view: {provider.desc.name}")
    finally:
        provider.stop()
