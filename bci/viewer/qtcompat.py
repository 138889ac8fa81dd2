"""Work around a reference-counting bug of some PySide6 builds on CPython < 3.12.

PySide6 6.12.0 on Python 3.11 releases one reference to ``None`` more than it takes
on every call of a method that returns nothing (``label.setText(...)``,
``timer.setInterval(...)``), and one to ``True`` on every signal ``emit``. The count
then reaches zero after a few thousand calls and CPython aborts with ``Fatal Python
error: none_dealloc`` (or ``bool_dealloc``), while the viewer runs or at exit. Python
3.12 made these singletons immortal, so only older interpreters are affected; PySide6
6.11 does not have the bug.

:func:`guard_none_refcount` measures the leak once per process and, if present, gives
``None``, ``True`` and ``False`` a very large reference count (what CPython 3.12 does
for immortal objects), so the leak can never reach zero, and logs a warning
recommending ``pip install "PySide6-Essentials<6.12"``.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

_CALLS = 256
_checked = False


def none_leak_per_call() -> float:
    """References to ``None`` lost per void Qt method call (0.0 for a correct binding)."""
    from PySide6 import QtCore

    obj = QtCore.QObject()
    obj.setObjectName("probe")
    before = sys.getrefcount(None)
    for _ in range(_CALLS):
        obj.setObjectName("probe")
    return (before - sys.getrefcount(None)) / _CALLS


def guard_none_refcount() -> bool:
    """Neutralise the PySide6 ``None``/``True`` leak if this interpreter/binding has it (once per process).

    Returns
    -------
    bool
        True when the leak was found and ``None``, ``True``, ``False`` were made effectively immortal.
    """
    global _checked
    if _checked or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    _checked = True
    if none_leak_per_call() < 0.75:
        return False
    # CPython < 3.12: ob_refcnt (Py_ssize_t) is the first field of every object, and id() is
    # its address. A count of 2**40 cannot be leaked away; these singletons are never freed anyway.
    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += 1 << 40
    import PySide6

    logger.warning(
        "PySide6 %s leaks references to None/True on Python %d.%d (it would crash the viewer); worked around. "
        "Install a fixed version: pip install \"PySide6-Essentials<6.12\"",
        PySide6.__version__, *sys.version_info[:2],
    )
    return True
