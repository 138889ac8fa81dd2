"""Marker strings of the synthetic world, and a tolerant parser for any marker stream.

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
from numbers import Real

from streams._checks import check_int

#: Prefix of stimulus-onset markers.
STIM_PREFIX = "stim"
#: Marker kind that opens a block (``block_start/<block>``).
BLOCK_START = "block_start"
#: Marker kind that closes a block (``block_end/<block>``).
BLOCK_END = "block_end"
#: Marker kinds that carry no stimulus.
NON_STIMULUS_KINDS = (BLOCK_START, BLOCK_END)

_SEP = "/"


def format_marker(image_id: str, label: str | None = None) -> str:
    """Marker string for a stimulus onset.

    Parameters
    ----------
    image_id : str
        Stimulus id, e.g. ``"img0012"``; must not be empty or contain ``"/"``.
    label : str or None
        Class label, e.g. ``"red triangle"``; ``None`` leaves it out.

    Returns
    -------
    str
        ``"stim/<image_id>/<label>"`` or ``"stim/<image_id>"``.

    Examples
    --------
    >>> format_marker("img0012", "red triangle")
    'stim/img0012/red triangle'
    """
    _check_part("image_id", image_id)
    if label is None:
        return f"{STIM_PREFIX}{_SEP}{image_id}"
    _check_part("label", label)
    return f"{STIM_PREFIX}{_SEP}{image_id}{_SEP}{label}"


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
    return f"{kind}{_SEP}{block}"


def parse_block_marker(value: str) -> tuple[str, int | None] | None:
    """``(kind, block)`` for a block marker, ``None`` for anything else.

    ``"block_start/3"`` gives ``("block_start", 3)``; ``"block_end"`` gives
    ``("block_end", None)``.
    """
    if not isinstance(value, str):
        return None
    head, _, tail = value.strip().partition(_SEP)
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
    head, sep, rest = text.partition(_SEP)
    if not sep:
        return (None, None) if head in NON_STIMULUS_KINDS else (head, None)
    if head != STIM_PREFIX:
        return None, None
    image_id, _, label = rest.partition(_SEP)
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


def _check_part(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name}={value!r} must be a str, got {type(value).__name__}")
    if not value.strip() or _SEP in value:
        raise ValueError(f"{name}={value!r} must be non-empty and must not contain {_SEP!r}")
