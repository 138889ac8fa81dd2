"""The base of every encoder: :class:`ModelConfig` and :class:`EncoderModel`.

A :class:`ModelConfig` says everything needed to rebuild a model and to feed it:
registry name, input shape (``n_chans`` x ``n_times`` at ``sfreq``), embedding size,
optional classification head, architecture hyper-parameters, and the data-side
state stored with a checkpoint (channel names, preprocessing, scaler, labels).

Every model subclasses :class:`EncoderModel`: it is built from a config, takes
``(batch, n_chans, n_times)`` float32 and returns a dict with ``"embedding"``
``(batch, embed_dim)`` and, with a head, ``"logits"`` ``(batch, n_classes)``.

Model files import this module only, never :mod:`bci.models.registry`: a model declares
its registry key as the class attribute ``registry_name`` and its default input shape
(``n_chans``, ``n_times``, ``sfreq``, ``embed_dim``) as ``default_shape``, and the
registry finds it (braindecode's layout).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from streams._checks import check_float, check_type, ensure_int

__all__ = ["SHAPE_KEYS", "EncoderModel", "ModelConfig", "check_dropout"]

#: Keys every model's ``default_shape`` declares.
SHAPE_KEYS = ("n_chans", "n_times", "sfreq", "embed_dim")
_REQUIRED_KEYS = ("name", *SHAPE_KEYS)


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
        other keys are kept as-is). ``"mvnn"``: the record of an MVNN whitening fitted after
        the scaler (:mod:`bci.preprocessing.mvnn`); the model then holds the matrix (buffer
        ``mvnn_whitening``) and applies it first in :meth:`EncoderModel.forward`.
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
        check_type("ModelConfig name", self.name, str)
        if not self.name:
            raise ValueError(f"ModelConfig name={self.name!r} must be a non-empty registry key")
        for key in ("n_chans", "n_times", "embed_dim"):
            setattr(self, key, _positive_int(key, getattr(self, key)))
        if self.n_classes is not None:
            self.n_classes = _positive_int("n_classes", self.n_classes)
        self.sfreq = _positive_hz("sfreq", self.sfreq)
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
        self.ch_names = _str_list("ch_names", self.ch_names)
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
        if "mvnn" in scaler and not isinstance(scaler["mvnn"], dict):
            raise TypeError(f"ModelConfig scaler['mvnn'] must be the dict of an MVNN fit, got {scaler['mvnn']!r:.80}")
        self.scaler = scaler

    def _check_labels(self) -> None:
        if self.labels is None:
            return
        self.labels = _str_list("labels", self.labels)
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
    """``value`` as an int >= 1: TypeError for a non-integer, ValueError below 1."""
    value = ensure_int(value, f"ModelConfig {key}")
    if value < 1:
        raise ValueError(f"ModelConfig {key}={value!r} must be a positive int")
    return value


def _positive_hz(key: str, value: Any) -> float:
    """``value`` as a finite float > 0: TypeError for a non-number, ValueError otherwise."""
    value = check_float(f"ModelConfig {key}", value, finite=False)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"ModelConfig {key}={value!r} must be a positive, finite number (Hz)")
    return value


def _str_list(key: str, value: Any) -> list[str]:
    """``value`` as a list of str (a lone str is refused: it is not a list of names)."""
    if isinstance(value, str) or not all(isinstance(c, str) for c in value):
        raise TypeError(f"ModelConfig {key} must be a list of str, got {value!r:.80}")
    return list(value)


def check_dropout(config: ModelConfig, value: Any) -> float:
    """A model's ``dropout`` param as a float in ``[0, 1)``, checked as ``model 'name': param dropout``."""
    value = check_float(f"model {config.name!r}: param dropout", value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"model {config.name!r}: param dropout={value!r} must be in [0, 1)")
    return value


# ---------------------------------------------------------------------- base class
class EncoderModel(nn.Module):
    """Base class of registered encoders.

    Subclasses set ``registry_name`` (their registry key: the registry finds every subclass
    of a module in :mod:`bci.models` that sets it), ``default_shape`` (``n_chans``,
    ``n_times``, ``sfreq``, ``embed_dim``) and ``default_params``, build their layers in ``_build(params)`` and compute the
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
        # MVNN whitening (bci.preprocessing.mvnn), applied first in forward; None (no entry in the state dict)
        # unless the config's scaler records one, so that loading a checkpoint fills it
        mvnn = (config.scaler or {}).get("mvnn")
        self.register_buffer("mvnn_whitening", None if mvnn is None else torch.zeros(self.n_chans, self.n_chans))
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
        if self.mvnn_whitening is not None:
            x = torch.matmul(self.mvnn_whitening, x)
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

    def set_whitening(self, matrix: np.ndarray | None) -> None:
        """Set (or with None remove) the MVNN whitening ``x -> W x`` applied before :meth:`embed`.

        The matrix is stored in ``model.safetensors`` as the buffer ``mvnn_whitening``; the
        config's ``scaler["mvnn"]`` must carry the fit's record when saving (see
        :class:`bci.preprocessing.mvnn.NoiseWhitener`), so that loading rebuilds the buffer.

        Parameters
        ----------
        matrix : numpy.ndarray, shape (n_chans, n_chans), or None
        """
        if matrix is None:
            self.mvnn_whitening = None
            return
        m = np.asarray(matrix, dtype=np.float32)
        if m.shape != (self.n_chans, self.n_chans) or not np.isfinite(m).all():
            raise ValueError(f"model {self._config.name!r}: whitening matrix of shape {m.shape} must be finite and "
                             f"({self.n_chans}, {self.n_chans})")
        device = next((t.device for t in self.parameters()), torch.device("cpu"))
        self.mvnn_whitening = torch.from_numpy(m.copy()).to(device)

    @classmethod
    def from_config(cls, config: ModelConfig) -> EncoderModel:
        """Build the model from a config (same as ``cls(config)``)."""
        return cls(config)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


