"""``bci present``: a minimal Qt stimulus presenter that sends markers and shows decoded results.

Each trial shows an image of a gallery folder, sends ``stim/<image_id>/<label>`` on an
LSL marker stream as the frame is shown (with a photodiode patch in a corner), and, with a
results stream, shows the top-1 image ``bci live`` decoded for that trial. See
``docs/lab.md``.

Importing this package imports nothing else; its names load their modules on first use, and
Qt (:mod:`bci.present.widget`) is loaded when :func:`run_presenter` opens the window.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> module that defines it (imported on first use, so ``bci present --help`` stays light).
_EXPORTS = {
    "ORDERS": "choices", "PHOTODIODE_CORNERS": "choices",
    "PresenterOptions": "options",
    "PresenterReport": "report", "TrialLog": "report",
    "MATCH_TOLERANCE_S": "results", "ResultsListener": "results", "TrialResult": "results",
    "run_presenter": "run",
    "Trial": "schedule", "make_trials": "schedule",
    "StimulusGallery": "stimuli", "load_stimulus_gallery": "stimuli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bci.present' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bci.present.{_EXPORTS[name]}"), name)
