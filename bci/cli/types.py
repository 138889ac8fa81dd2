"""argparse ``type=`` converters shared by every ``bci`` subcommand.

Each raises :class:`argparse.ArgumentTypeError`, so argparse prints
``bci CMD: error: argument --flag: must be > 0, got '0'`` and exits 2.
"""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type, what: str) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


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
    """A number > 0 (seconds, rates, scales)."""
    value = float(_number(text, float, "a number"))
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0."""
    value = float(_number(text, float, "a number"))
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (e.g. an offset in seconds, which may be negative)."""
    value = float(_number(text, float, "a number"))
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value
