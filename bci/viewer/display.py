"""Can a window be shown here? (No Qt import: the answer is needed before choosing headless.)"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping

#: Qt platform plugins that render without a display server.
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc")


class NoDisplayError(ValueError):
    """The viewer was asked to open a window where none can be shown."""


def display_available(env: Mapping[str, str] | None = None, platform: str | None = None) -> tuple[bool, str]:
    """Whether Qt can open a window, and why not.

    Parameters
    ----------
    env : mapping, optional
        Environment variables (default ``os.environ``).
    platform : str, optional
        ``sys.platform`` (default: this one).

    Returns
    -------
    (bool, str)
        ``(True, "")``, or ``(False, reason)`` with a sentence for the user.
    """
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    missing = [m for m in ("PySide6", "pyqtgraph") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"{' and '.join(missing)} not installed (pip install pyqtgraph PySide6-Essentials)"
    qpa = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    if qpa in HEADLESS_PLATFORMS:
        return True, ""
    if platform.startswith(("win", "darwin", "cygwin")):
        return True, ""
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return True, ""
    return False, ("no display: DISPLAY and WAYLAND_DISPLAY are not set and QT_QPA_PLATFORM is not 'offscreen' "
                   "(on a remote machine use ssh -X, or --screenshot FILE to render offscreen)")
