"""What the generation configs and networks share: dict round trips, JSON metadata, size checks.

The checkpoint I/O itself (a JSON config plus safetensors files, never pickle) is
:mod:`bci.safe_io`'s, shared with the encoder checkpoints.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields, replace
from typing import Any, ClassVar, TypeVar

from torch import nn

from streams._checks import check_int, check_type

__all__ = [
    "ConfiguredModule",
    "DictConfig",
    "config_property",
    "json_safe",
    "positive_int",
    "power_of_two",
]

_C = TypeVar("_C", bound="DictConfig")
_N = TypeVar("_N", bound="ConfiguredModule")


class DictConfig:
    """dict round trip shared by the frozen dataclass configs of this package."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {unknown}; valid fields are {valid}")
        return cls(**data)

    def replace(self: _C, **changes: Any) -> _C:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)  # type: ignore[type-var]


class ConfiguredModule(nn.Module):
    """A network built from one immutable config, kept as ``self._config``.

    Subclasses name their config type in ``config_class``, call ``super().__init__(config)``
    first (it checks the type) and expose the config's fields with :func:`config_property`.

    Parameters
    ----------
    config : config_class
        The architecture.
    """

    config_class: ClassVar[type]
    _config: Any

    def __init__(self, config: Any) -> None:
        super().__init__()
        self._config = check_type("config", config, self.config_class, f"a {self.config_class.__name__}")

    def get_config(self) -> Any:
        """The (immutable) config the network was built from."""
        return self._config

    @classmethod
    def from_config(cls: type[_N], config: Any) -> _N:
        """Build the network from its config (same as ``cls(config)``)."""
        return cls(config)  # type: ignore[call-arg]


def config_property(name: str, doc: str) -> property:
    """A read-only property returning ``self._config.<name>``."""
    return property(lambda self: getattr(self._config, name), doc=doc)


def json_safe(value: Any, name: str) -> Any:
    """A JSON round trip of ``value`` (plain types only); anything else is a TypeError naming ``name``."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must hold plain JSON values (dict, list, str, finite numbers, bool, None): {exc}"
        ) from None
    return json.loads(text)


def positive_int(name: str, value: Any, owner: str) -> int:
    """``value`` as an int >= 1 (an integral float such as ``64.0`` is accepted), checked as ``owner name``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return check_int(f"{owner} {name}", value, low=1)


def power_of_two(name: str, value: Any, owner: str, low: int, high: int) -> int:
    """``value`` as a power of two in ``[low, high]``."""
    value = positive_int(name, value, owner)
    if value < low or value > high or 2 ** round(math.log2(value)) != value:
        options = ", ".join(str(2**k) for k in range(int(math.log2(low)), int(math.log2(high)) + 1))
        raise ValueError(f"{owner} {name}={value} must be a power of two from {low} to {high} ({options})")
    return value
