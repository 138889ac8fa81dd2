"""Model configs and the registry of encoders.

A :class:`ModelConfig` says everything needed to rebuild a model and to feed it:
registry name, input shape (``n_chans`` x ``n_times`` at ``sfreq``), embedding size,
optional classification head, architecture hyper-parameters, and the data-side
state stored with a checkpoint (channel names, preprocessing, scaler, labels).

Every registered model subclasses :class:`EncoderModel`: it is built from a config,
takes ``(batch, n_chans, n_times)`` float32 and returns a dict with ``"embedding"``
``(batch, embed_dim)`` and, with a head, ``"logits"`` ``(batch, n_classes)``.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "MODELS",
    "EncoderModel",
    "ModelConfig",
    "build_model",
    "default_config",
    "list_models",
    "register_model",
]

_REQUIRED_KEYS = ("name", "n_chans", "n_times", "sfreq", "embed_dim")


@dataclass
class ModelConfig:
    """Everything that defines a model and the data it expects.

    Parameters
    ----------
    name : str
        Registry key of the architecture (see :func:`list_models`).
    n_chans, n_times : int
        Input shape of one window: channels (voxels for fMRI) x samples.
    sfreq : float
        Sampling rate in Hz of the windows the model expects (after preprocessing).
    embed_dim : int
        Size of the ``"embedding"`` output.
    n_classes : int or None
        Size of the optional classification head (``"logits"`` output); None: no head.
    ch_names : list of str or None
        Channel names in model input order; checked against the stream when both exist.
    params : dict
        Architecture hyper-parameters (missing ones take the model's defaults).
    preprocessing : dict or None
        Preprocessing config the model was trained with, stored as-is.
    scaler : dict or None
        Per-channel standardisation applied by :class:`bci.runtime.inference.Encoder`:
        ``{"mean": [n_chans floats], "std": [n_chans floats], ...}`` (scalars allowed;
        other keys are kept as-is).
    labels : list of str or None
        Class names, one per head output.
    extra : dict
        Anything else worth keeping (training data hash, metrics, seed, ...).
    """

    name: str
    n_chans: int
    n_times: int
    sfreq: float
    embed_dim: int
    n_classes: int | None = None
    ch_names: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    labels: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ModelConfig name={self.name!r} must be a non-empty registry key")
        for key in ("n_chans", "n_times", "embed_dim"):
            setattr(self, key, _positive_int(key, getattr(self, key)))
        if self.n_classes is not None:
            self.n_classes = _positive_int("n_classes", self.n_classes)
        self.sfreq = _positive_float("sfreq", self.sfreq)
        self._check_ch_names()
        for key in ("params", "extra"):
            if not isinstance(getattr(self, key), dict):
                raise TypeError(f"ModelConfig {key}={getattr(self, key)!r} must be a dict")
        if self.preprocessing is not None and not isinstance(self.preprocessing, dict):
            raise TypeError(f"ModelConfig preprocessing={self.preprocessing!r} must be a dict or None")
        self._check_scaler()
        self._check_labels()

    def _check_ch_names(self) -> None:
        if self.ch_names is None:
            return
        if isinstance(self.ch_names, str) or not all(isinstance(c, str) for c in self.ch_names):
            raise TypeError(f"ModelConfig ch_names must be a list of str, got {self.ch_names!r:.80}")
        self.ch_names = list(self.ch_names)
        if len(self.ch_names) != self.n_chans:
            raise ValueError(
                f"ModelConfig ch_names has {len(self.ch_names)} names but n_chans={self.n_chans}"
            )
        if len(set(self.ch_names)) != len(self.ch_names):
            dup = sorted({c for c in self.ch_names if self.ch_names.count(c) > 1})[:5]
            raise ValueError(f"ModelConfig ch_names has duplicated names {dup}")

    def _check_scaler(self) -> None:
        if self.scaler is None:
            return
        if not isinstance(self.scaler, dict):
            raise TypeError(f"ModelConfig scaler={self.scaler!r:.80} must be a dict or None")
        missing = [k for k in ("mean", "std") if k not in self.scaler]
        if missing:
            raise ValueError(
                f"ModelConfig scaler is missing {missing}; expected {{'mean': [...], 'std': [...]}} "
                f"with one value per channel, got keys {sorted(self.scaler)}"
            )
        scaler = dict(self.scaler)
        for key in ("mean", "std"):
            value = scaler[key]
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                arr = None
            if arr is None or arr.ndim > 1 or (arr.ndim == 1 and len(arr) not in (1, self.n_chans)):
                raise ValueError(
                    f"ModelConfig scaler[{key!r}] must be a number or a list of n_chans={self.n_chans} "
                    f"numbers, got {type(value).__name__} of length {_len_or_none(value)}"
                )
            if not np.isfinite(arr).all():
                raise ValueError(f"ModelConfig scaler[{key!r}] must hold finite numbers")
            if key == "std" and (arr <= 0).any():
                raise ValueError("ModelConfig scaler['std'] must be > 0 for every channel")
            scaler[key] = float(arr) if arr.ndim == 0 else arr.tolist()  # plain JSON numbers
        self.scaler = scaler

    def _check_labels(self) -> None:
        if self.labels is None:
            return
        if isinstance(self.labels, str) or not all(isinstance(c, str) for c in self.labels):
            raise TypeError(f"ModelConfig labels must be a list of str, got {self.labels!r:.80}")
        self.labels = list(self.labels)
        if self.n_classes is not None and len(self.labels) != self.n_classes:
            raise ValueError(
                f"ModelConfig has {len(self.labels)} labels but n_classes={self.n_classes}"
            )

    # ------------------------------------------------------------------ dicts
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (a deep copy)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys are named in the error."""
        if not isinstance(d, dict):
            raise TypeError(f"model config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config has unknown keys {unknown}; known keys are {sorted(known)}")
        missing = [k for k in _REQUIRED_KEYS if k not in d]
        if missing:
            raise ValueError(f"model config is missing {missing}; got keys {sorted(d)}")
        return cls(**copy.deepcopy(d))

    def replace(self, **changes: Any) -> ModelConfig:
        """Validated copy with some fields changed."""
        d = self.to_dict()
        d.update(copy.deepcopy(changes))
        return ModelConfig.from_dict(d)


def _len_or_none(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"ModelConfig {key}={value!r} must be a positive int")
    return int(value)


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"ModelConfig {key}={value!r} must be a positive number (Hz)")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"ModelConfig {key}={value!r} must be a positive, finite number (Hz)")
    return value


# ---------------------------------------------------------------------- base class
class EncoderModel(nn.Module):
    """Base class of registered encoders.

    Subclasses set ``default_shape`` (``n_chans``, ``n_times``, ``sfreq``, ``embed_dim``)
    and ``default_params``, build their layers in ``_build(params)`` and compute the
    embedding in ``embed(x)``. The base class resolves and validates params, keeps the
    config, checks the input shape and adds the optional classification head.

    Parameters
    ----------
    config : ModelConfig
        Config whose ``name`` is this model's registry key.
    """

    registry_name: ClassVar[str] = ""
    default_shape: ClassVar[dict[str, Any]] = {}
    default_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        if self.registry_name and config.name != self.registry_name:
            raise ValueError(
                f"config name {config.name!r} does not match model {self.registry_name!r}; "
                "build it with build_model(config)"
            )
        self.n_chans = config.n_chans
        self.n_times = config.n_times
        self.sfreq = config.sfreq
        self.embed_dim = config.embed_dim
        self.n_classes = config.n_classes
        params = self.resolve_params(config)
        self._config = config.replace(params=params)
        self._build(params)
        self.head = nn.Linear(self.embed_dim, self.n_classes) if self.n_classes else None

    @classmethod
    def resolve_params(cls, config: ModelConfig) -> dict[str, Any]:
        """Defaults overlaid with ``config.params``; unknown keys are an error."""
        unknown = sorted(set(config.params) - set(cls.default_params))
        if unknown:
            raise ValueError(
                f"model {config.name!r} has no parameters {unknown}; "
                f"its parameters are {sorted(cls.default_params)}"
            )
        return {**copy.deepcopy(cls.default_params), **copy.deepcopy(config.params)}

    def _build(self, params: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Map ``(batch, n_chans, n_times)`` to ``(batch, embed_dim)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embed a batch of windows.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, n_chans, n_times)`` float32.

        Returns
        -------
        dict
            ``"embedding"`` ``(batch, embed_dim)``; ``"logits"`` ``(batch, n_classes)``
            when the model has a classification head.
        """
        if x.dim() != 3 or x.shape[1] != self.n_chans or x.shape[2] != self.n_times:
            raise ValueError(
                f"model {self._config.name!r} expects input (batch, {self.n_chans}, {self.n_times}), "
                f"got {tuple(x.shape)}"
            )
        embedding = self.embed(x)
        if self.head is None:
            return {"embedding": embedding}
        return {"embedding": embedding, "logits": self.head(embedding)}

    def get_config(self) -> ModelConfig:
        """A copy of the config with all architecture params resolved."""
        return self._config.replace()

    @property
    def config(self) -> ModelConfig:
        """Same as :meth:`get_config` (a copy; edit it and rebuild to change the model)."""
        return self.get_config()

    def set_metadata(self, **changes: Any) -> None:
        """Update data-side fields kept with the weights (scaler, labels, preprocessing, extra, ch_names).

        Shape and architecture fields cannot change this way; rebuild the model instead.
        """
        frozen = {"name", "n_chans", "n_times", "sfreq", "embed_dim", "n_classes", "params"}
        bad = sorted(set(changes) & frozen)
        if bad:
            raise ValueError(f"set_metadata cannot change {bad}; build a new model with the new config")
        self._config = self._config.replace(**changes)

    @classmethod
    def from_config(cls, config: ModelConfig) -> EncoderModel:
        """Build the model from a config (same as ``cls(config)``)."""
        return cls(config)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# ---------------------------------------------------------------------- registry
#: Registered model classes by name.
MODELS: dict[str, type[EncoderModel]] = {}

_M = TypeVar("_M", bound=type[EncoderModel])


def register_model(name: str) -> Callable[[_M], _M]:
    """Class decorator adding an :class:`EncoderModel` subclass to :data:`MODELS`.

    Parameters
    ----------
    name : str
        Registry key (stored as ``config.name`` in checkpoints).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_model name={name!r} must be a non-empty string")

    def decorate(cls: _M) -> _M:
        if not (isinstance(cls, type) and issubclass(cls, EncoderModel)):
            raise TypeError(f"register_model({name!r}) decorates EncoderModel subclasses, got {cls!r}")
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {MODELS[name].__qualname__}")
        missing = [k for k in ("n_chans", "n_times", "sfreq", "embed_dim") if k not in cls.default_shape]
        if missing:
            raise TypeError(f"{cls.__qualname__}.default_shape is missing {missing}")
        cls.registry_name = name
        MODELS[name] = cls
        return cls

    return decorate


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


def _ensure_builtin_models() -> None:
    """Import the built-in model modules so their decorators have run."""
    import bci.models.eeg  # noqa: F401
    import bci.models.fmri  # noqa: F401
