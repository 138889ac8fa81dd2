"""Send stimulus markers from a stimulus script (PsychoPy, Psychtoolbox-via-Python, a Qt presenter).

A :class:`MarkerSender` is a string LSL marker outlet (type ``Markers``, irregular rate,
one channel) that speaks the project's marker grammar (:mod:`streams.markers`):
``stim/<image_id>/<label>`` for a stimulus onset, any other string through
:meth:`MarkerSender.send_raw`. ``bci live --markers NAME`` and ``bci record`` read it.

Importing this module imports neither torch nor Qt (only pylsl and numpy), so it is cheap
on a stimulus PC::

    from bci.markers import MarkerSender

    with MarkerSender("Stim-Markers") as sender:
        sender.wait_for_consumers(10)
        win.callOnFlip(sender.send, "img0012", "red triangle")   # PsychoPy: right after the flip
        win.flip()

See ``docs/lab.md`` for the grammar, timing notes and a pylsl-only snippet.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from streams._checks import check_float, check_type
from streams._context import ClosingContext
from streams.lsl import SOURCE_CLOSE_LINGER_S, Outlet, local_clock
from streams.markers import check_marker_text, format_marker, marker_stream_description

__all__ = ["DEFAULT_MARKER_STREAM", "MarkerSender", "SentMarker"]

#: Default name of the marker outlet.
DEFAULT_MARKER_STREAM = "Stim-Markers"


class SentMarker(NamedTuple):
    """What :meth:`MarkerSender.send` pushed: the string and its LSL timestamp."""

    value: str
    timestamp: float


class MarkerSender(ClosingContext):
    """A string LSL marker outlet for stimulus onsets.

    Parameters
    ----------
    name : str
        LSL stream name (what ``bci live --markers NAME`` resolves).
    source_id : str or None
        LSL source_id; ``None`` gives ``"bci-markers-<name>-<random>"`` (a fixed one lets a
        recorder reconnect to a restarted script).
    max_buffered : int
        Hundreds of markers the outlet keeps for a slow consumer (LSL's ``max_buffered``
        for irregular streams).

    Examples
    --------
    >>> with MarkerSender("Stim-Markers") as sender:        # doctest: +SKIP
    ...     sender.send("img0012", "red triangle")
    SentMarker(value='stim/img0012/red triangle', timestamp=...)
    """

    def __init__(self, name: str = DEFAULT_MARKER_STREAM, source_id: str | None = None, *,
                 max_buffered: int = 360) -> None:
        check_type("name", name, str)
        if not name.strip():
            raise ValueError(f"name={name!r} is empty; give the marker stream a name")
        if source_id is None:
            source_id = f"bci-markers-{name}-{uuid.uuid4().hex[:8]}"
        check_type("source_id", source_id, str)
        self.desc = marker_stream_description(name, source_id)
        self._outlet = Outlet(self.desc, max_buffered=max_buffered)
        self.n_sent = 0

    @property
    def name(self) -> str:
        """The LSL stream name."""
        return self.desc.name

    def send(self, image_id: str, label: str | None = None, timestamp: float | None = None) -> SentMarker:
        """Push the onset marker ``stim/<image_id>/<label>`` (or ``stim/<image_id>``).

        Parameters
        ----------
        image_id : str
            The image shown; not empty, no ``"/"``, no control characters.
        label : str or None
            Its class label (same rules), or ``None``.
        timestamp : float or None
            The onset on the LSL clock (:func:`pylsl.local_clock`); ``None``: now, read at
            the call. To stamp a flip measured on another clock, convert it first
            (``flip + (pylsl.local_clock() - other_clock())``, see ``docs/lab.md``).

        Returns
        -------
        SentMarker
            The string and the timestamp it was pushed with.

        Raises
        ------
        ValueError
            A bad ``image_id`` or ``label`` (the message names it), or a timestamp that is
            not a positive finite number.
        """
        now = local_clock()  # first: the call's moment, before any checking
        value = format_marker(image_id, label)
        return self._push(value, now if timestamp is None else timestamp)

    def send_raw(self, text: str, timestamp: float | None = None) -> SentMarker:
        """Push any other marker string (``"block_start/1"``, ``"response/left"``), unchanged.

        ``text`` must be a non-empty str without control characters; ``timestamp`` as for :meth:`send`.
        """
        now = local_clock()
        check_marker_text("text", text)
        return self._push(text, now if timestamp is None else timestamp)

    def wait_for_consumers(self, timeout: float) -> bool:
        """Block until an inlet (recorder, ``bci live``) connects or ``timeout`` seconds pass.

        Markers pushed before any inlet is connected reach nobody; call this before the first trial.
        Returns True when a consumer is connected.
        """
        timeout = check_float("timeout", timeout, low=0.0)
        return self._outlet.wait_for_consumers(timeout)

    @property
    def have_consumers(self) -> bool:
        """Whether at least one inlet is connected now."""
        return self._outlet.have_consumers

    def close(self) -> None:
        """Destroy the outlet (consumers see the stream as lost).

        While a consumer is connected it first waits ``streams.lsl.SOURCE_CLOSE_LINGER_S``
        seconds, so the last marker reaches it.
        """
        self._outlet.close(linger=SOURCE_CLOSE_LINGER_S)

    def _push(self, value: str, timestamp: float) -> SentMarker:
        stamp = check_float("timestamp", timestamp, positive=True)  # 0 would mean "now" to liblsl
        self._outlet.push_sample([value], stamp)
        self.n_sent += 1
        return SentMarker(value, stamp)
