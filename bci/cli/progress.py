"""Progress bars of the ``bci`` commands: the one place that decides whether a bar is shown.

Every command that can run longer than a few seconds takes ``--no-progress``
(:func:`add_progress_flag`) and passes ``progress=show_progress(args.no_progress)`` to the
library function it calls. A bar (tqdm) is drawn on stderr only when stderr is a terminal and
``--no-progress`` is not given, so logs, pipes and CI output never fill with bar redraws.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

__all__ = ["NO_PROGRESS_HELP", "add_progress_flag", "show_progress"]

NO_PROGRESS_HELP = "no progress bar (bars go to stderr, and only when it is a terminal)"


def add_progress_flag(parser: argparse.ArgumentParser, *aliases: str, dest: str = "no_progress",
                      help: str = NO_PROGRESS_HELP) -> None:
    """Add ``--no-progress`` (plus ``aliases``, e.g. ``--quiet``) as a store-true flag to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    *aliases : str
        More option strings for the same flag.
    dest : str
        Attribute name of the flag's value (``args.no_progress`` by default).
    help : str
        Help text.
    """
    parser.add_argument(*aliases, "--no-progress", dest=dest, action="store_true", help=help)


def show_progress(no_progress: bool = False, stream: TextIO | None = None) -> bool:
    """Whether to draw a progress bar: not ``no_progress``, and ``stream`` (default stderr) is a terminal.

    Parameters
    ----------
    no_progress : bool
        The command's ``--no-progress`` flag.
    stream : file-like, optional
        Where the bar would go (default ``sys.stderr`` at call time).

    Returns
    -------
    bool
        Pass it as ``progress=`` to the library call (tqdm: ``disable=not progress``).
    """
    if no_progress:
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed or detached stream
        return False
