"""The viewer as the loop of a live run (:func:`bci.runtime.live.run_live`), for ``bci live`` and the demo.

No Qt import here: :func:`show_viewer` answers before anything graphical loads, and
:func:`viewer_loop` imports the viewer only when the run starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from bci.runtime.live import RunLoop
from bci.viewer.display import display_available

if TYPE_CHECKING:
    from bci.viewer.app import ViewerOptions


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def show_viewer(screenshot: str | os.PathLike | None = None, *, say: Callable[[str], None] = _stderr) -> bool:
    """Whether a live run can show the viewer: a display is available, or ``screenshot`` renders offscreen.

    When it cannot, says why (the run then goes on headless) and returns False.
    """
    ok, reason = display_available()
    if not ok and screenshot is None:
        say(f"viewer: {reason}; running headless (pass --no-view to skip the viewer)")
        return False
    return True


def viewer_loop(options: ViewerOptions) -> RunLoop:
    """A :class:`~bci.runtime.live.RunLoop` that shows the viewer while the runtime decodes."""

    def run(runtime, duration, on_tick) -> None:
        from bci.viewer.app import run_live_viewer

        run_live_viewer(runtime, duration=duration, on_tick=on_tick, tick=0.1, options=options)

    screenshot = options.screenshot
    return RunLoop(run, note=", with the viewer",
                   until=f" until the screenshot ({options.after:g} s)" if screenshot is not None else None,
                   done=f"saved screenshot {screenshot}" if screenshot is not None else None)
