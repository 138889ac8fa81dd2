"""The viewer in its own process: ``bci live`` starts ``bci view`` as a child and stops it when decoding stops.

The child (``sys.executable -m bci.cli view ...``) subscribes over LSL to the streams the
decoder reads and to the results outlet the decoder already publishes, so the decoder
does no extra work for it and nothing the GUI does (stall, crash, close) can delay
decoding. The child's stdout and stderr are the parent's.

No Qt import here: the parent never loads the GUI.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bci.runtime.live import LiveOptions, LiveRuntime, RunLoop
from bci.viewer.app import ViewerOptions
from streams._checks import check_float, check_type, ensure_path
from streams.description import StreamDescription
from streams.errors import StreamsError

logger = logging.getLogger(__name__)

class ViewerProcessError(StreamsError):
    """The viewer process ended before doing what the run waited for (its screenshot)."""


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class ViewerProcessOptions:
    """The viewer child of a live run; checked when made.

    Parameters
    ----------
    results : str
        Name of the decoder's LSL results outlet (``DecodeOptions.results_stream``).
    view : ViewerOptions
        Look and screenshot of the child (``gallery`` and ``image_dir`` must be None:
        the child loads the gallery itself, from ``gallery``).
    gallery : path, optional
        Gallery folder: thumbnails of the retrieved and true images.
    model : path, optional
        Checkpoint whose preprocessing the child's preprocessed view uses.
    resolve_timeout : float
        Seconds the child waits for each stream.
    stop_timeout : float
        Seconds to wait for the child to end after SIGTERM before it is killed.
    """

    results: str
    view: ViewerOptions = field(default_factory=ViewerOptions)
    gallery: str | os.PathLike | None = None
    model: str | os.PathLike | None = None
    resolve_timeout: float = LiveOptions.resolve_timeout
    stop_timeout: float = 5.0

    def __post_init__(self) -> None:
        check_type("results", self.results, str)
        if not self.results.strip() or any(c in self.results for c in ",="):
            raise ValueError(f"results={self.results!r}: the viewer process needs the name of the decoder's results "
                             "outlet (a plain name such as 'BCIResults'); with no results stream use --view inline")
        check_type("view", self.view, ViewerOptions)
        if self.view.gallery is not None or self.view.image_dir is not None:
            raise ValueError("view.gallery / view.image_dir: the viewer process loads its gallery from the folder; "
                             "pass gallery=DIR and leave view.gallery and view.image_dir None")
        if self.gallery is not None:
            self.gallery = ensure_path("gallery", self.gallery)
        if self.model is not None:
            self.model = ensure_path("model", self.model)
        self.resolve_timeout = check_float("resolve_timeout", self.resolve_timeout, positive=True)
        self.stop_timeout = check_float("stop_timeout", self.stop_timeout, positive=True)


def stream_query(desc: StreamDescription) -> str:
    """A ``bci view`` stream argument that finds exactly the stream the decoder resolved (name and source_id)."""
    parts = [("name", desc.name), ("source_id", desc.source_id)]
    if all(v and not any(c in v for c in ",=") for _, v in parts):
        return ",".join(f"{k}={v}" for k, v in parts)
    return desc.name


def viewer_command(data: StreamDescription, markers: StreamDescription | None, options: ViewerProcessOptions,
                   *, parent_pid: int | None = None) -> list[str]:
    """The child's command line: ``sys.executable -m bci.cli view ...`` for these streams and options.

    Parameters
    ----------
    data, markers : StreamDescription
        The streams the decoder resolved (the child subscribes to the same ones).
    options : ViewerProcessOptions
    parent_pid : int, optional
        The child closes when this process is no longer its parent (default: this process).
    """
    view = options.view
    modality = "--fmri" if data.type.lower() == "fmri" else "--eeg"
    cmd = [sys.executable, "-m", "bci.cli", "view", modality, stream_query(data),
           "--results", f"name={options.results},type=BCIResults",
           "--fps", repr(view.fps), "--seconds", repr(view.seconds), "--after", repr(view.after),
           "--size", f"{view.size[0]}x{view.size[1]}", "--resolve-timeout", repr(options.resolve_timeout),
           "--parent-pid", str(os.getpid() if parent_pid is None else parent_pid)]
    if markers is not None:
        cmd += ["--markers", stream_query(markers)]
    if view.processed:
        cmd.append("--preprocessed")
    if view.screenshot is not None:
        cmd += ["--screenshot", str(Path(view.screenshot).resolve())]
    if view.duration is not None:
        cmd += ["--duration", repr(view.duration)]
    if options.gallery is not None:
        cmd += ["--gallery", str(Path(options.gallery).resolve())]
    if options.model is not None and modality == "--eeg":
        cmd += ["--model", str(Path(options.model).resolve())]
    return cmd


def describe_exit(code: int) -> str:
    """``"exited with status 2"`` / ``"was killed by SIGKILL"`` for a child's return code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class ViewerProcess:
    """A started viewer child; :meth:`stop` ends it (SIGTERM, wait, SIGKILL) and is safe to call twice.

    Parameters
    ----------
    command : sequence of str
        What to run (:func:`viewer_command`).
    stop_timeout : float
        Seconds to wait after SIGTERM before SIGKILL.
    """

    def __init__(self, command: Sequence[str], *, stop_timeout: float = 5.0) -> None:
        self.command = [str(c) for c in command]
        self.stop_timeout = check_float("stop_timeout", stop_timeout, positive=True)
        # stdin closed; stdout and stderr are the parent's (the child's messages reach the user as they are)
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def poll(self) -> int | None:
        """The child's return code, or None while it runs."""
        return self.proc.poll()

    def stop(self) -> int:
        """End the child if it still runs (SIGTERM lets it close, and take a due screenshot); its return code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("viewer process %d did not end %g s after SIGTERM; killing it", self.pid,
                               self.stop_timeout)
                self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> ViewerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Watch:
    """Checks the child on every tick of the run loop (main thread, 10 times a second): says once when it ends."""

    def __init__(self, viewer: ViewerProcess, runtime: LiveRuntime, screenshot: bool,
                 say: Callable[[str], None]) -> None:
        self.viewer, self.runtime, self.screenshot, self.say = viewer, runtime, screenshot, say
        self.code: int | None = None

    def __call__(self) -> None:
        if self.code is not None:
            return
        code = self.viewer.poll()
        if code is None:
            return
        self.code = code
        if self.screenshot:  # the screenshot is what this run waits for: its end ends the run
            self.runtime.request_stop()
        elif code == 0:
            self.say("viewer: the viewer window was closed; decoding goes on (Ctrl-C stops)")
        else:
            self.say(f"viewer: the viewer process {describe_exit(code)}; decoding goes on without it (Ctrl-C stops)")


def viewer_process_loop(options: ViewerProcessOptions, *, say: Callable[[str], None] = _stderr) -> RunLoop:
    """A :class:`~bci.runtime.live.RunLoop` that decodes headless while ``bci view`` runs in a child process.

    The child starts once the runtime has resolved its streams and opened its results outlet,
    and is stopped (SIGTERM, then SIGKILL after ``options.stop_timeout``) when decoding
    stops, also on Ctrl-C or an error. When the child ends early (crash, window closed,
    killed), one line says so and decoding goes on. With ``view.screenshot`` the run ends
    when the child has saved it; a child that ends without saving it raises
    :class:`ViewerProcessError` after decoding stopped cleanly.
    """
    check_type("options", options, ViewerProcessOptions)
    screenshot = options.view.screenshot

    def run(runtime: LiveRuntime, duration: float | None, on_tick: Callable[[], None] | None) -> None:
        if runtime.pipeline is None:
            runtime.start()
        marker = runtime.marker_receiver.desc if runtime.marker_receiver is not None else None
        command = viewer_command(runtime.data_receiver.desc, marker, options)
        with ViewerProcess(command, stop_timeout=options.stop_timeout) as viewer:
            say(f"viewer: started in process {viewer.pid} (subscribes to the results stream {options.results!r})")
            watch = _Watch(viewer, runtime, screenshot is not None, say)

            def tick() -> None:
                if on_tick is not None:
                    on_tick()
                watch()

            runtime.run(duration, on_tick=tick, tick=0.1)
        code = viewer.poll()
        if screenshot is not None and (code != 0 or not Path(screenshot).is_file()):
            raise ViewerProcessError(f"the viewer process {describe_exit(code)} without saving the screenshot "
                                     f"{str(screenshot)!r} (its message, if any, is above)")

    return RunLoop(run, note=", with the viewer in its own process",
                   until=(f" until the viewer's screenshot ({options.view.after:g} s of data)"
                          if screenshot is not None else None))
