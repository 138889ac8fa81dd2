"""The registry of encoders: finds the models, builds them from configs.

The built-in models are found, not listed: every module of :mod:`bci.models` is imported
once, on first use, and each :class:`~bci.models.base.EncoderModel` subclass defined there
that declares a ``registry_name`` is registered under it (braindecode's layout: model
files import :mod:`bci.models.base` only, never this module). Models defined elsewhere
(plugins, tests) are added with the :func:`register_model` decorator.

:class:`ModelConfig` and :class:`EncoderModel` live in :mod:`bci.models.base`; they are
re-exported here.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields
from types import ModuleType
from typing import Any, Callable, TypeVar

from bci.models.base import SHAPE_KEYS, EncoderModel, ModelConfig
from streams._checks import check_type

__all__ = [
    "MODELS",
    "EncoderModel",
    "ModelConfig",
    "build_model",
    "default_config",
    "discover_models",
    "get_model_class",
    "list_models",
    "models_in",
    "register_model",
]

#: Registered model classes by name.
MODELS: dict[str, type[EncoderModel]] = {}

#: Modules of :mod:`bci.models` that define no models (not imported by the discovery).
_NOT_MODEL_MODULES = frozenset({"base", "registry"})

_M = TypeVar("_M", bound=type[EncoderModel])
_discovered = False


def _register(name: str, cls: type[EncoderModel]) -> None:
    """Add ``cls`` to :data:`MODELS` under ``name`` after checking it declares its shape."""
    if not (isinstance(cls, type) and issubclass(cls, EncoderModel)):
        raise TypeError(f"register_model({name!r}) decorates EncoderModel subclasses, got {cls!r}")
    if name in MODELS and MODELS[name] is not cls:
        raise ValueError(f"model name {name!r} is already registered to {MODELS[name].__qualname__}")
    missing = [k for k in SHAPE_KEYS if k not in cls.default_shape]
    if missing:
        raise TypeError(f"{cls.__qualname__}.default_shape is missing {missing}")
    cls.registry_name = name
    MODELS[name] = cls


def register_model(name: str) -> Callable[[_M], _M]:
    """Class decorator adding an :class:`EncoderModel` subclass to :data:`MODELS`.

    For models defined outside :mod:`bci.models` (the built-in ones are found by
    :func:`discover_models`).

    Parameters
    ----------
    name : str
        Registry key (stored as ``config.name`` in checkpoints).
    """
    check_type("register_model name", name, str)
    if not name:
        raise ValueError(f"register_model name={name!r} must be a non-empty string")
    _ensure_builtin_models()  # a plugin cannot take the name of a built-in model

    def decorate(cls: _M) -> _M:
        _register(name, cls)
        return cls

    return decorate


def models_in(module: ModuleType) -> list[type[EncoderModel]]:
    """The :class:`EncoderModel` subclasses ``module`` defines that declare a ``registry_name``."""
    return [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, EncoderModel) and obj.__module__ == module.__name__
        and obj.__dict__.get("registry_name")
    ]


def discover_models(package: str = "bci.models") -> list[str]:
    """Import every module of ``package`` and register the models they define.

    Parameters
    ----------
    package : str
        A package whose modules define :class:`EncoderModel` subclasses with a ``registry_name``.

    Returns
    -------
    list of str
        The registry names found, sorted.
    """
    pkg = importlib.import_module(package)
    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in _NOT_MODEL_MODULES:
            continue
        for cls in models_in(importlib.import_module(f"{package}.{info.name}")):
            _register(cls.registry_name, cls)
            found.append(cls.registry_name)
    return sorted(found)


def _ensure_builtin_models() -> None:
    """Run :func:`discover_models` on :mod:`bci.models` once."""
    global _discovered
    if not _discovered:
        _discovered = True
        discover_models()


def list_models() -> list[str]:
    """Sorted names of the registered models."""
    _ensure_builtin_models()
    return sorted(MODELS)


def get_model_class(name: str) -> type[EncoderModel]:
    """The class registered under ``name``; an unknown name lists the registered ones."""
    _ensure_builtin_models()
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models are {sorted(MODELS)}") from None


def build_model(config: ModelConfig) -> EncoderModel:
    """Instantiate the registered model named by ``config.name``."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build_model expects a ModelConfig, got {type(config).__name__}")
    return get_model_class(config.name).from_config(config)


def default_config(name: str, **overrides: Any) -> ModelConfig:
    """Config of a registered model with its default shape and params.

    Parameters
    ----------
    name : str
        Registry key.
    **overrides
        ``ModelConfig`` fields (``n_chans=64``, ``embed_dim=256``, ``labels=[...]``) and/or
        architecture params of the model (``dropout=0.5``); ``params={...}`` is merged too.
        Unknown keys are an error that lists the valid ones.
    """
    cls = get_model_class(name)
    field_names = {f.name for f in fields(ModelConfig)} - {"name"}
    params = dict(cls.default_params)
    params.update(overrides.pop("params", None) or {})
    top: dict[str, Any] = dict(cls.default_shape)
    unknown = []
    for key, value in overrides.items():
        if key in field_names:
            top[key] = value
        elif key in cls.default_params:
            params[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"default_config({name!r}): unknown overrides {sorted(unknown)}; valid are config fields "
            f"{sorted(field_names)} and params of {name!r} {sorted(cls.default_params)}"
        )
    return ModelConfig(name=name, params=params, **top)
