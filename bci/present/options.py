"""What ``bci present`` does: one options object (it owns every default; the CLI reads them from here)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bci.markers import DEFAULT_MARKER_STREAM
from bci.present.choices import ORDERS, PHOTODIODE_CORNERS
from streams._checks import check_bool, check_float, check_int, check_type, check_value, ensure_path



@dataclass
class PresenterOptions:
    """Options of :func:`bci.present.run_presenter` (and of ``bci present``).

    Parameters
    ----------
    gallery : path
        Gallery folder: flat ``DIR/<id>.png`` (any image suffix) + optional ``labels.csv``
        (``id,label[,caption]``), what ``bci simulate --stimuli DIR`` writes.
    markers : str
        Name of the LSL marker outlet this presenter opens.
    results : str or None
        The ``bci live`` results stream (type ``BCIResults``) to show decoded images from; None: no feedback.
    n_trials : int or None
        Trials to run; None: one per gallery image.
    duration_ms, isi_ms, jitter_ms : float
        Stimulus on-time; blank inter-stimulus interval ``isi_ms + U(0, jitter_ms)`` before each next trial.
    feedback_ms : float
        How long the decoded image (or "no result") is shown, with ``results``.
    result_timeout_ms : float
        How long to wait, from the stimulus offset, for the trial's result before counting it missed.
    seed : int
        Seed of the trial order and the jitter.
    order : {"random", "sequential"}
        ``random``: shuffled passes through the gallery (each image once per pass);
        ``sequential``: the gallery's order, repeated.
    fullscreen : bool
        Full screen (True) or a ``window_size`` window.
    window_size : (int, int)
        Width and height of the window when not full screen.
    photodiode : str
        Corner of the photodiode patch (white while the stimulus is on, black otherwise), or ``"off"``.
    photodiode_size : int
        Side of the patch in pixels.
    image_size : int
        Images are centre-cropped to a square, resized to this many pixels and shown at that size.
    wait_for_consumers : float
        Seconds to wait before the first trial for a consumer (recorder, ``bci live``) on
        the marker stream; 0: start at once. Markers sent before a consumer connects reach nobody.
    resolve_timeout : float
        Seconds to find the results stream.
    source_id : str or None
        source_id of the marker outlet (None: a random one).
    log : path or None
        Write a JSON log of every trial here.
    """

    gallery: str | os.PathLike
    markers: str = DEFAULT_MARKER_STREAM
    results: str | None = None
    n_trials: int | None = None
    duration_ms: float = 500.0
    isi_ms: float = 1000.0
    jitter_ms: float = 200.0
    feedback_ms: float = 1000.0
    result_timeout_ms: float = 2000.0
    seed: int = 0
    order: str = "random"
    fullscreen: bool = True
    window_size: tuple[int, int] = (1024, 768)
    photodiode: str = "off"
    photodiode_size: int = 50
    image_size: int = 256
    wait_for_consumers: float = 10.0
    resolve_timeout: float = 5.0
    source_id: str | None = None
    log: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        self.gallery = ensure_path("gallery", self.gallery)
        check_type("markers", self.markers, str)
        if not self.markers.strip():
            raise ValueError(f"markers={self.markers!r} is empty; name the marker stream")
        if self.results is not None:
            check_type("results", self.results, str)
        if self.n_trials is not None:
            self.n_trials = check_int("n_trials", self.n_trials, low=1)
        self.duration_ms = check_float("duration_ms", self.duration_ms, positive=True)
        for name in ("isi_ms", "jitter_ms", "feedback_ms", "result_timeout_ms", "wait_for_consumers"):
            setattr(self, name, check_float(name, getattr(self, name), low=0.0))
        self.resolve_timeout = check_float("resolve_timeout", self.resolve_timeout, positive=True)
        self.seed = check_int("seed", self.seed, low=0)
        check_value("order", self.order, ORDERS)
        self.fullscreen = check_bool("fullscreen", self.fullscreen)
        check_type("window_size", self.window_size, (tuple, list))
        if len(self.window_size) != 2:
            raise ValueError(f"window_size={self.window_size!r} must be (width, height)")
        self.window_size = (check_int("window_size[0]", self.window_size[0], low=100),
                            check_int("window_size[1]", self.window_size[1], low=100))
        check_value("photodiode", self.photodiode, PHOTODIODE_CORNERS)
        self.photodiode_size = check_int("photodiode_size", self.photodiode_size, low=1)
        self.image_size = check_int("image_size", self.image_size, low=8)
        if self.log is not None:  # checked now, not after a session that then cannot be logged
            self.log = ensure_path("log", self.log)
            ensure_path("log's folder", self.log.parent if str(self.log.parent) else Path("."),
                        must_exist=True, kind="dir")
