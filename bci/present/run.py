"""Run a presenter session: the library function behind ``bci present`` (and the tests).

The trials run on Qt timers in the calling (GUI) thread; results arrive on a background
thread (:class:`~bci.present.results.ResultsListener`) and are polled every
:data:`POLL_MS` while a trial waits for its result.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from bci.markers import MarkerSender
from bci.present.options import PresenterOptions
from bci.present.report import PresenterReport, TrialLog
from bci.present.results import ResultsListener, TrialResult
from bci.present.schedule import Trial, make_trials
from bci.present.stimuli import StimulusGallery, load_stimulus_gallery
from streams.lsl import local_clock

logger = logging.getLogger(__name__)

#: Milliseconds between two looks for a trial's result.
POLL_MS = 5
#: Seconds to wait for the window to be on screen before the first trial.
EXPOSE_TIMEOUT_S = 5.0
#: Caption of a trial whose result did not come in time.
NO_RESULT = "no result"


def run_presenter(options: PresenterOptions, app: Any = None,
                  on_event: Callable[[str, TrialLog, Any], None] | None = None) -> PresenterReport:
    """Show the trials of ``options``, send a marker per stimulus, show decoded results; return the report.

    Parameters
    ----------
    options : PresenterOptions
        What to show and where to send and read.
    app : QApplication, optional
        An existing application (tests: pytest-qt's ``qapp``); None creates one.
    on_event : callable, optional
        ``on_event(kind, trial_log, widget)`` right after each frame is drawn, with ``kind``
        ``"stimulus"`` (after the marker was sent), ``"blank"`` or ``"feedback"``, in the
        GUI thread (tests grab the widget here).

    Returns
    -------
    PresenterReport
        Written to ``options.log`` as JSON too, when given.

    Raises
    ------
    ValueError, FileNotFoundError
        A bad gallery (see :func:`~bci.present.stimuli.load_stimulus_gallery`), no display.
    StreamNotFoundError
        The results stream cannot be found.
    """
    gallery = load_stimulus_gallery(options.gallery, size=options.image_size)
    trials = make_trials(len(gallery), options.n_trials, isi_ms=options.isi_ms, jitter_ms=options.jitter_ms,
                         order=options.order, seed=options.seed)
    report = PresenterReport(str(gallery.folder), options.markers, options.results,
                             [TrialLog(t.index, gallery.ids[t.image_index], gallery.labels[t.image_index],
                                       gallery.marker(t.image_index)) for t in trials])
    if app is None:
        app = _application()
    listener = ResultsListener(options.results, resolve_timeout=options.resolve_timeout) if options.results else None
    # the marker outlet first: bci live resolves it at its start while we look for its results stream
    with MarkerSender(options.markers, options.source_id) as sender:
        try:
            if listener is not None:
                listener.start()
            if options.wait_for_consumers > 0:
                report.consumers_at_start = sender.wait_for_consumers(options.wait_for_consumers)
            else:
                report.consumers_at_start = sender.have_consumers
            _Session(options, gallery, trials, report, sender, listener, on_event).run()
            if listener is not None:
                _mark_late(report, listener)
        finally:
            if listener is not None:
                listener.close()
    if options.log is not None:
        report.write_log(options.log)
    return report


def _mark_late(report: PresenterReport, listener: ResultsListener) -> None:
    """Missed trials whose result has come by now: counted as late (still missed)."""
    for log in report.trials:
        if log.result == "missed" and listener.find(log.marker, log.marker_time) is not None:
            log.late = True


def _application() -> Any:
    from bci.viewer.app import ensure_qapp
    from bci.viewer.display import NoDisplayError, display_available

    ok, why = display_available()
    if not ok:
        why = why.split(" (on a remote")[0]  # the viewer's hint about --screenshot does not apply here
        raise NoDisplayError(f"bci present needs a screen: {why}; run it on the stimulus computer's display")
    return ensure_qapp()


class _Session:
    """The trial state machine: stimulus -> blank (wait for the result) -> feedback -> blank ISI -> next."""

    def __init__(self, options: PresenterOptions, gallery: StimulusGallery, trials: list[Trial],
                 report: PresenterReport, sender: MarkerSender, listener: ResultsListener | None,
                 on_event: Callable[[str, TrialLog, Any], None] | None) -> None:
        from PySide6 import QtCore

        from bci.present.widget import PresenterWidget, to_qimage

        self.options, self.gallery, self.trials, self.report = options, gallery, trials, report
        self.sender, self.listener, self.on_event = sender, listener, on_event
        self.images = [to_qimage(im) for im in gallery.images]
        self.widget = PresenterWidget(options.photodiode, options.photodiode_size, on_abort=self.abort)
        self.loop = QtCore.QEventLoop()
        self.timer = QtCore.QTimer()
        self.timer.setSingleShot(True)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._fire)
        self._next: Callable[[], None] | None = None
        self._error: BaseException | None = None
        self._trial = 0
        self._deadline = 0.0

    def run(self) -> None:
        if self.options.fullscreen:
            self.widget.showFullScreen()
        else:
            self.widget.resize(*self.options.window_size)
            self.widget.show()
        self._wait_exposed()
        self.widget.show_blank()
        previous = _on_sigint(self.abort)
        try:
            self._after(self.options.isi_ms, self._stimulus)  # a blank ISI before the first trial too
            self.loop.exec()
        finally:
            _restore_sigint(previous)
            self.timer.stop()
            self.widget.close_quietly()
            self.widget.deleteLater()
        if self._error is not None:
            raise self._error

    def _wait_exposed(self) -> None:
        """Let the window reach the screen before the first trial (a marker for an unseen frame would lie)."""
        from PySide6 import QtCore

        from bci.viewer.display import NoDisplayError

        end = local_clock() + EXPOSE_TIMEOUT_S
        while not (self.widget.windowHandle() is not None and self.widget.windowHandle().isExposed()):
            if local_clock() > end:
                raise NoDisplayError(f"the presenter window was not shown on screen within {EXPOSE_TIMEOUT_S:g} s; "
                                   "is the display available and not locked?")
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)

    def abort(self) -> None:
        """Stop after the current frame (Escape, closing the window, Ctrl-C)."""
        self.report.aborted = True
        self._finish()

    # ------------------------------------------------------------------ steps
    def _stimulus(self) -> None:
        if self._trial >= len(self.trials):
            self._finish()
            return
        trial = self.trials[self._trial]
        log = self.report.trials[self._trial]
        self.widget.show_stimulus(self.images[trial.image_index])
        log.marker_time = self.sender.send(log.image_id, log.label).timestamp  # right after the frame was drawn
        self._event("stimulus", log)
        self._after(self.options.duration_ms, self._stimulus_off)

    def _stimulus_off(self) -> None:
        log = self.report.trials[self._trial]
        self.widget.show_blank()
        log.offset_time = local_clock()
        self._event("blank", log)
        if self.listener is None:
            self._isi()
            return
        self._deadline = local_clock() + self.options.result_timeout_ms / 1000.0
        self._poll()

    def _poll(self) -> None:
        log = self.report.trials[self._trial]
        found = self.listener.find(log.marker, log.marker_time)
        if found is not None:
            self._feedback(log, found)
        elif local_clock() >= self._deadline:
            log.result = "missed"
            self.widget.show_feedback(None, NO_RESULT)
            self._event("feedback", log)
            self._after(self.options.feedback_ms, self._isi)
        else:
            self._after(POLL_MS, self._poll)

    def _feedback(self, log: TrialLog, found: TrialResult) -> None:
        log.result, log.top1_id, log.top1_label, log.reason = found.kind, found.top1_id, found.top1_label, found.reason
        log.score()
        index = None if found.top1_id is None else self.gallery.index_of(found.top1_id)
        self.widget.show_feedback(None if index is None else self.images[index], _caption(found, index))
        self._event("feedback", log)
        self._after(self.options.feedback_ms, self._isi)

    def _isi(self) -> None:
        log = self.report.trials[self._trial]
        if self.widget.mode != "blank":
            self.widget.show_blank()
            self._event("blank", log)
        isi = self.trials[self._trial].isi_s
        self._trial += 1
        self._after(isi * 1000.0 if self._trial < len(self.trials) else 0.0, self._stimulus)

    # ------------------------------------------------------------------ plumbing
    def _event(self, kind: str, log: TrialLog) -> None:
        if self.on_event is not None:
            self.on_event(kind, log, self.widget)

    def _after(self, ms: float, step: Callable[[], None]) -> None:
        if self.report.aborted:
            return
        self._next = step
        self.timer.start(max(0, int(round(ms))))

    def _fire(self) -> None:
        step, self._next = self._next, None
        if step is None:
            return
        try:
            step()
        except BaseException as exc:  # a slot must not raise into Qt: stop and re-raise after the loop
            self._error = exc
            self._finish()

    def _finish(self) -> None:
        self._next = None
        self.timer.stop()
        self.loop.quit()


def _caption(found: TrialResult, index: int | None) -> str:
    if found.kind == "dropped":
        return f"{NO_RESULT} (dropped by the runtime: {found.reason})"
    if found.top1_id is None:
        return "decoded: no top-k in the result (run bci live with --gallery)"
    name = found.top1_label or found.top1_id
    return f"decoded: {name}" + ("" if index is not None else f" ({found.top1_id} is not in this gallery)")


def _on_sigint(handler: Callable[[], None]) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda *_: handler())


def _restore_sigint(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
