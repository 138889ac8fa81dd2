"""Argument checks for every layer (``streams``, ``bci``, ``offline``), in the style of mne-lsl's ``_checks``.

One rule for error types: a value of the wrong **type** raises :class:`TypeError`; a value of the
right type that is out of range or not allowed raises :class:`ValueError`. Every message names the
argument, shows the value received and says what is expected, e.g.
``"n_times=0 must be an integer >= 1"``.

``bool`` is never accepted where a number is expected (``True`` is an ``int`` to Python, not to a
user), and numpy scalars (``np.int64``, ``np.float32``) are accepted wherever Python numbers are.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "check_bool",
    "check_finite",
    "check_float",
    "check_int",
    "check_type",
    "check_value",
    "ensure_int",
    "ensure_path",
]


def _bound(low: float | None, high: float | None, *, low_open: bool = False) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"<= {high}")
    return " and ".join(parts)


def ensure_int(value: Any, name: str = "value") -> int:
    """Return ``value`` as a Python ``int``; :class:`TypeError` unless it is an integer (not a bool).

    Parameters
    ----------
    value : object
        The value to check; Python and numpy integers are accepted.
    name : str
        Name of the argument, for the message.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r} must be an integer, not {type(value).__name__}")
    return int(value)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking its type and range.

    Parameters
    ----------
    name : str
        Name of the argument, for the message.
    value : object
        An integer (Python or numpy; not a bool).
    low, high : int or None
        Inclusive bounds (``None``: unbounded).

    Raises
    ------
    TypeError
        ``value`` is not an integer (or is a bool).
    ValueError
        ``value`` is outside ``[low, high]``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r} must be an integer {_bound(low, high)}".rstrip()
                        + f", not {type(value).__name__}")
    out = int(value)
    if (low is not None and out < low) or (high is not None and out > high):
        raise ValueError(f"{name}={value!r} must be an integer {_bound(low, high)}")
    return out


def check_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                positive: bool = False, finite: bool = True) -> float:
    """Return ``value`` as a ``float`` after checking its type, finiteness and range.

    Parameters
    ----------
    name : str
        Name of the argument, for the message.
    value : object
        A real number (Python or numpy; not a bool).
    low, high : float or None
        Inclusive bounds (``None``: unbounded).
    positive : bool
        Require ``value > 0`` (in addition to the bounds).
    finite : bool
        Refuse NaN and infinities (the default).

    Raises
    ------
    TypeError
        ``value`` is not a real number (or is a bool).
    ValueError
        ``value`` is not finite, not positive, or outside ``[low, high]``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} must be a number, not {type(value).__name__}")
    out = float(value)
    if finite and not math.isfinite(out):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if positive and not out > 0:
        raise ValueError(f"{name}={value!r} must be > 0")
    if (low is not None and out < low) or (high is not None and out > high):
        raise ValueError(f"{name}={value!r} must be {_bound(low, high)}")
    return out


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (Python or numpy), else :class:`TypeError`."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r} must be True or False, not {type(value).__name__}")
    return bool(value)


def check_type(name: str, value: Any, types: type | tuple[type, ...], what: str | None = None) -> Any:
    """Return ``value`` if it is an instance of ``types``, else :class:`TypeError`.

    ``types`` is a type or a tuple of types; ``what`` describes them in the message (default: their
    names, joined by "or"); ``name`` is the argument's name.
    """
    if not isinstance(value, types):
        if what is None:
            names = types if isinstance(types, tuple) else (types,)
            what = " or ".join(t.__name__ for t in names)
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} ({value!r})")
    return value


def check_value(name: str, value: Any, allowed: Collection[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else :class:`ValueError` listing the choices."""
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not one of {choices}")
    return value


def check_finite(name: str, array: Any) -> np.ndarray:
    """Return ``array`` as a numpy array if it holds only finite numbers, else :class:`ValueError`.

    The message counts the NaN and infinite entries and gives the index of the first one.
    """
    arr = np.asarray(array)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric, got an array of dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.inexact):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), the first at "
                             f"index {first}; clean or drop them first")
    return arr


def ensure_path(name: str, value: Any, *, must_exist: bool = False, kind: str | None = None) -> Path:
    """Return ``value`` as a :class:`~pathlib.Path`.

    Parameters
    ----------
    name : str
        Name of the argument, for the message.
    value : str or os.PathLike
        The path.
    must_exist : bool
        Raise :class:`FileNotFoundError` if the path does not exist.
    kind : {"file", "dir"} or None
        With ``must_exist``, also require a file or a directory.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__} ({value!r})")
    path = Path(value).expanduser()
    if must_exist:
        if not path.exists():
            raise FileNotFoundError(f"{name}: {str(path)!r} does not exist; check the path")
        if kind == "file" and path.is_dir():
            raise FileNotFoundError(f"{name}: {str(path)!r} is a directory; pass a file")
        if kind == "dir" and not path.is_dir():
            raise FileNotFoundError(f"{name}: {str(path)!r} is a file, not a directory; pass a directory")
    return path
