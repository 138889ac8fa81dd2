"""Clock jumps: how a gap says that a stream came back on another clock (one owner of the wording).

A receiver (:class:`streams.acquisition.StreamReceiver`) that reconnects to a stream whose timestamps
moved more, or less, than the time that passed on this computer's clock records a gap whose reason
starts with :func:`clock_jump_reason`; the pipeline, the session store and the replay read it back
with :func:`parse_clock_jump`, so a recorded session says what the live run saw.
"""

from __future__ import annotations

import re

__all__ = ["CLOCK_JUMP_TOLERANCE", "clock_jump_reason", "parse_clock_jump"]

#: Seconds by which a reconnected stream's timestamps may disagree with the time that passed on this
#: computer's clock before the gap is called a clock jump (arrival jitter is milliseconds; a restart
#: of the amplifier with its clock off is seconds to hours).
CLOCK_JUMP_TOLERANCE = 1.0

_CLOCK_JUMP = re.compile(r"^clock jump ([+-][0-9]+(?:\.[0-9]+)?) s")


def clock_jump_reason(seconds: float) -> str:
    """The start of a clock-jump gap's reason: ``"clock jump +3600 s"``, ``"clock jump -5.0 s"``.

    Examples
    --------
    >>> clock_jump_reason(3600.2), clock_jump_reason(-5.04)
    ('clock jump +3600 s', 'clock jump -5.0 s')
    >>> parse_clock_jump(clock_jump_reason(-5.04) + " (...); stream lost; reconnected")
    -5.0
    """
    return f"clock jump {seconds:+.0f} s" if abs(seconds) >= 10 else f"clock jump {seconds:+.1f} s"


def parse_clock_jump(reason: str) -> float | None:
    """The jump in seconds of a gap reason written by :func:`clock_jump_reason` (None for other gaps)."""
    match = _CLOCK_JUMP.match(reason) if isinstance(reason, str) else None
    return float(match.group(1)) if match else None
