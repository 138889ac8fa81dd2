"""argparse ``type=`` converters shared by every ``bci`` subcommand.

Each raises :class:`argparse.ArgumentTypeError`, so argparse prints
``bci CMD: error: argument --flag: must be > 0, got '0'`` and exits 2. Every converter refuses
``nan``, ``inf`` and ``1e400`` and integers beyond 64 bits; every numeric flag uses one of them
(``tests/test_fuzz_streams.py`` walks the parser and checks).
"""

from __future__ import annotations

import argparse
import math


#: Largest integer a flag takes: numpy and torch hold seeds, counts and sizes in 64 bits.
MAX_INT = 2**63 - 1


def _number(text: str, kind: type, what: str) -> float | int:
    """``kind(text)``; a float must be finite, an int within +-:data:`MAX_INT` (``1e400``, ``nan`` refused)."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    if kind is int and abs(value) > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT} in size, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(_number(text, int, "a positive integer"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(_number(text, int, "an integer >= 0"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, rates, scales)."""
    value = float(_number(text, float, "a number"))
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = float(_number(text, float, "a number"))
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (e.g. an offset in seconds, which may be negative)."""
    return float(_number(text, float, "a number"))


def int_list(text: str) -> list[int]:
    """Comma-separated integers >= 0 such as ``1,2,3`` (run or subject numbers)."""
    return [non_negative_int(t) for t in text.replace(" ", "").split(",") if t]
