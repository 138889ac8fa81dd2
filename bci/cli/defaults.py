"""Flag defaults read from the library: the options dataclasses (and settings) own every default.

A flag is declared with ``default=Default.of("offline.training.tasks.clip:TinyClipSettings", "steps")``
and ``%(default)s`` in its help: the value is read from the dataclass field (or a function's
parameter) only when the help is printed or the handler asks for it, so building the ``bci``
parser imports no trainer (and no torch). A flag left at its :class:`Default` was not given.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable

__all__ = ["Default", "field_defaults", "given", "load"]


def load(ref: str) -> Any:
    """The object named by ``"package.module:Name"``."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def field_defaults(cls: type) -> dict[str, Any]:
    """Default of every field of the dataclass ``cls`` (``default_factory`` called), in field order."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


class Default:
    """The default of a flag, computed on use (when the help is printed or the handler reads it).

    Parameters
    ----------
    source : callable
        ``source()`` returns the default value (it may import the library).
    none : str or None
        What the help shows when the default is None (e.g. ``"model default"``).
    """

    def __init__(self, source: Callable[[], Any], none: str | None = None) -> None:
        self.source = source
        self.none = none

    @classmethod
    def of(cls, ref: str, name: str, none: str | None = None) -> Default:
        """The default of field ``name`` of a dataclass, or of parameter ``name`` of a function.

        Parameters
        ----------
        ref : str
            ``"package.module:Name"`` of the dataclass or function.
        name : str
            The field or parameter.
        none : str or None
            See the class.
        """
        def source() -> Any:
            owner = load(ref)
            if dataclasses.is_dataclass(owner):
                return field_defaults(owner)[name]
            return inspect.signature(owner).parameters[name].default

        return cls(source, none)

    @property
    def value(self) -> Any:
        """The default value."""
        return self.source()

    def __str__(self) -> str:
        value = self.value
        if value is None and self.none is not None:
            return self.none
        return format(value, "g") if isinstance(value, float) else str(value)


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` (e.g. ``vars(args)``) that were given: neither None nor a :class:`Default`."""
    return {k: v for k, v in values.items() if v is not None and not isinstance(v, Default)}
