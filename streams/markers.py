"""The marker grammar: stimulus-onset and block marker strings, and a tolerant parser for any marker stream.

The one owner of the grammar, used by the simulator (:mod:`streams.synthetic`), the
runtime's windowing, the viewer, the importers and :class:`bci.markers.MarkerSender`.
This module imports only numpy and the checks, so stimulus scripts can use it without
the simulators (``streams.synthetic.markers`` re-exports it for older imports).

Stimulus onsets are marked with ``stim/<image_id>/<label>`` (for example
``stim/img0012/red triangle``), or ``stim/<image_id>`` when the label is unknown.
Blocks are bracketed by ``block_start/<block>`` and ``block_end/<block>``.

:func:`parse_marker` also reads markers from other sources: a plain image id
(``img0012``) or a numeric code (``12``, or the number ``12.0`` from a numeric
LSL marker stream) is taken as the image id with no label.

A marker with onset ``t`` (seconds from session start) refers to the EEG sample
``round(t * sfreq)`` (see :func:`streams.synthetic.schedule.onset_sample`).
"""

from __future__ import annotations

import math
import unicodedata
from numbers import Real

from streams._checks import check_int, check_type
from streams.description import IRREGULAR_RATE, StreamDescription

#: Prefix of stimulus-onset markers.
STIM_PREFIX = "stim"
#: Marker kind that opens a block (``block_start/<block>``).
BLOCK_START = "block_start"
#: Marker kind that closes a block (``block_end/<block>``).
BLOCK_END = "block_end"
#: Marker kinds that carry no stimulus.
NON_STIMULUS_KINDS = (BLOCK_START, BLOCK_END)

#: Separator between the parts of a marker (``stim/<image_id>/<label>``).
SEP = "/"
#: LSL stream type of marker streams.
MARKER_STREAM_TYPE = "Markers"


def marker_stream_description(name: str, source_id: str) -> StreamDescription:
    """The string marker stream (one channel, irregular rate, type ``Markers``).

    Parameters
    ----------
    name : str
        LSL stream name.
    source_id : str
        LSL source_id (what a recorder or the runtime reconnects to).
    """
    return StreamDescription(
        name=name,
        type=MARKER_STREAM_TYPE,
        source_id=source_id,
        channel_names=("marker",),
        channel_types=("marker",),
        channel_units=("",),
        nominal_rate=IRREGULAR_RATE,
        dtype="string",
    )


def format_marker(image_id: str, label: str | None = None) -> str:
    """Marker string for a stimulus onset.

    Parameters
    ----------
    image_id : str
        Stimulus id, e.g. ``"img0012"``; must not be empty, contain ``"/"`` or control
        characters (newline, tab, ...), or start or end with white space.
    label : str or None
        Class label, e.g. ``"red triangle"`` (same rules); ``None`` leaves it out.

    Returns
    -------
    str
        ``"stim/<image_id>/<label>"`` or ``"stim/<image_id>"``.

    Raises
    ------
    TypeError
        ``image_id`` or ``label`` is not a str.
    ValueError
        ``image_id`` or ``label`` breaks the rules above (the message names it).

    Examples
    --------
    >>> format_marker("img0012", "red triangle")
    'stim/img0012/red triangle'
    """
    check_marker_part("image_id", image_id)
    if label is None:
        return f"{STIM_PREFIX}{SEP}{image_id}"
    check_marker_part("label", label)
    return f"{STIM_PREFIX}{SEP}{image_id}{SEP}{label}"


def format_block_marker(kind: str, block: int) -> str:
    """``"block_start/<block>"`` or ``"block_end/<block>"``.

    Parameters
    ----------
    kind : {BLOCK_START, BLOCK_END}
    block : int
        Block number (>= 0).
    """
    if kind not in NON_STIMULUS_KINDS:
        raise ValueError(f"kind={kind!r} is not a block marker kind; use {BLOCK_START!r} or {BLOCK_END!r}")
    block = check_int("block", block, low=0)
    return f"{kind}{SEP}{block}"


def parse_block_marker(value: str) -> tuple[str, int | None] | None:
    """``(kind, block)`` for a block marker, ``None`` for anything else.

    ``"block_start/3"`` gives ``("block_start", 3)``; ``"block_end"`` gives
    ``("block_end", None)``.
    """
    if not isinstance(value, str):
        return None
    head, _, tail = value.strip().partition(SEP)
    if head not in NON_STIMULUS_KINDS:
        return None
    try:
        return head, int(tail) if tail else None
    except ValueError:
        return head, None


def parse_marker(value: str | Real) -> tuple[str | None, str | None]:
    """``(image_id, label)`` of a marker; ``(None, None)`` when it marks no stimulus.

    Tolerant of markers from other sources:

    ============================  ==========================
    value                         result
    ============================  ==========================
    ``"stim/img0012/red cat"``    ``("img0012", "red cat")``
    ``"stim/img0012"``            ``("img0012", None)``
    ``"img0012"``                 ``("img0012", None)``
    ``"12"`` or ``12`` / ``12.0``  ``("12", None)``
    ``"block_start/3"``           ``(None, None)``
    ``""``, other ``"a/b"``       ``(None, None)``
    ============================  ==========================

    Parameters
    ----------
    value : str or number
        The marker sample (numeric LSL marker streams give numbers).

    Returns
    -------
    tuple
        ``(image_id, label)``, either of which may be ``None``.
    """
    if isinstance(value, bool):
        raise TypeError(f"marker value={value!r} is a bool; pass the marker string or number")
    if isinstance(value, Real):
        return _parse_number(float(value))
    if not isinstance(value, str):
        raise TypeError(
            f"marker value={value!r} has type {type(value).__name__}; pass a str (or a number)"
        )
    text = value.strip()
    if not text:
        return None, None
    head, sep, rest = text.partition(SEP)
    if not sep:
        return (None, None) if head in NON_STIMULUS_KINDS else (head, None)
    if head != STIM_PREFIX:
        return None, None
    image_id, _, label = rest.partition(SEP)
    image_id, label = image_id.strip(), label.strip()
    if not image_id:
        return None, None
    return image_id, (label or None)


def is_stimulus_marker(value: str | Real) -> bool:
    """True when :func:`parse_marker` finds an image id in ``value``."""
    return parse_marker(value)[0] is not None


def _parse_number(x: float) -> tuple[str | None, str | None]:
    if not math.isfinite(x):
        return None, None
    return (str(int(x)) if x.is_integer() else repr(x)), None


def check_marker_text(name: str, value: object) -> str:
    """Return ``value`` if it can be sent as a marker: a non-empty str without control characters.

    Not a str: :class:`TypeError`; empty (or only white space), or holding a control character
    (newline, tab, ...): :class:`ValueError` naming ``name`` and the value.
    """
    check_type(name, value, str)
    if not value.strip():
        raise ValueError(f"{name}={value!r} is empty; a marker needs a non-empty {name}")
    bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ValueError(f"{name}={value!r} contains the control character {bad!r}; remove it")
    return value


def check_marker_part(name: str, value: object) -> str:
    """Return ``value`` if it can be one part of a stimulus marker (an image id or a label).

    As :func:`check_marker_text`, and also refused (:class:`ValueError`): the separator
    ``"/"``, and white space at either end (the parser strips it, so the part would not
    come back as sent).
    """
    check_marker_text(name, value)
    if SEP in value:
        raise ValueError(f"{name}={value!r} must not contain {SEP!r}, the marker separator "
                         f"(stim/<image_id>/<label>); rename it without {SEP!r}")
    if value != value.strip():
        raise ValueError(f"{name}={value!r} starts or ends with white space, which the marker parser strips; "
                         "strip it first")
    return value
