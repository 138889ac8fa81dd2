"""braindecode's models as registry entries: ``bd_eegnet``, ``bd_shallow``, ``bd_deep4``, ``bd_eegconformer``, ``bd_atcnet``.

One adapter, :class:`BraindecodeEncoder`, serves all five: the braindecode model is built with
``n_chans``, ``n_times`` and ``sfreq`` from the :class:`~bci.models.base.ModelConfig` and
``n_outputs = embed_dim``, so its final layer (whatever it is: EEGNet's linear layer, Deep4's
classifier conv, EEGConformer's fully connected head, ATCNet's per-window dense layers) gives
the ``"embedding"``; nothing is stripped. The project's optional class head
(:class:`~bci.models.base.EncoderModel`, ``n_classes``) sits on top of it, as for every model.
The braindecode module is the attribute ``net`` (weights ``net.*`` in ``model.safetensors``).

braindecode is an extra (``pip install 'bci-runtime[braindecode]'``, >= 1.8): it is imported
when one of these models is built, not when the registry is searched, so the registry lists
them without it and building one without it is a one-line :class:`BraindecodeNotInstalledError`.

A window braindecode cannot take is refused when the model is built, with a ``ValueError``
naming the model and the shape: braindecode itself only *warns* when ``n_times`` is below what
Deep4Net or ATCNet need and then silently shrinks their kernels and pools (another network than
the one named); that warning, and any error of a trial forward pass, become the error here.

Defaults are braindecode's, except two that make the project's default window (128 x 440 at
1000 Hz) fit: ``bd_deep4`` ``filter_time_length=9`` (braindecode: 10; 441 samples needed) and
``bd_atcnet`` ``conv_block_pool_size_2=5`` (braindecode: 7; 616 samples needed). ``dropout``
sets braindecode's ``drop_prob`` (ATCNet: ``conv_block_dropout`` and ``tcn_drop_prob``).

References
----------
Lawhern et al. 2018, EEGNet, J. Neural Eng. 15:056013 (braindecode ``EEGNet``, i.e. EEGNetv4).
Schirrmeister et al. 2017, Deep learning with convolutional neural networks for EEG decoding
and visualization, Hum. Brain Mapp. 38:5391 (``ShallowFBCSPNet``, ``Deep4Net``).
Song et al. 2023, EEG Conformer, IEEE TNSRE 31:710 (``EEGConformer``).
Altaheri et al. 2023, Physics-informed attention temporal convolutional network (ATCNet),
IEEE TII 19:2249 (``ATCNet``).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, ClassVar

import torch

from bci.models.base import EncoderModel, ModelConfig, check_dropout

__all__ = [
    "BRAINDECODE_EXTRA",
    "BraindecodeEncoder",
    "BraindecodeNotInstalledError",
    "BdATCNet",
    "BdDeep4",
    "BdEEGConformer",
    "BdEEGNet",
    "BdShallow",
]

#: How to install the extra these models need.
BRAINDECODE_EXTRA = "pip install 'bci-runtime[braindecode]'"

#: The project's default EEG window (eeg_convnet's), which every braindecode entry declares.
_DEFAULT_SHAPE: dict[str, Any] = {"n_chans": 128, "n_times": 440, "sfreq": 1000.0, "embed_dim": 512}

#: braindecode's warning when it shrinks a network to fit a short window.
_TOO_SHORT = "smaller than the minimum required"


class BraindecodeNotInstalledError(ImportError, ValueError):
    """A ``bd_*`` model was built but braindecode is not importable.

    Also a ``ValueError``, so that the CLI reports it as one line (exit code 2).
    """

    def __init__(self, name: str, exc: BaseException) -> None:
        super().__init__(f"model {name!r} needs braindecode>=1.8, which cannot be imported ({type(exc).__name__}: {exc}); "
                         f"install it with {BRAINDECODE_EXTRA}")


def braindecode_model_class(model: str, class_name: str) -> type[torch.nn.Module]:
    """The class ``braindecode.models.<class_name>``, imported now (for ``model``'s message).

    braindecode's import pulls in modules that emit mne deprecation warnings about montages
    (FutureWarning, not about anything here); those are silenced during the import only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Montage name .* is deprecated", category=FutureWarning)
        try:
            models = importlib.import_module("braindecode.models")
        except Exception as exc:  # missing, or broken (e.g. built for another torch): unavailable either way
            raise BraindecodeNotInstalledError(model, exc) from None
    try:
        return getattr(models, class_name)
    except AttributeError:
        import braindecode

        raise BraindecodeNotInstalledError(
            model, AttributeError(f"braindecode {braindecode.__version__} has no models.{class_name}")) from None


class BraindecodeEncoder(EncoderModel):
    """A braindecode model with ``n_outputs = embed_dim`` as the embedding (see the module docstring).

    Subclasses set ``braindecode_class`` (the name in ``braindecode.models``), ``dropout_keys``
    (the braindecode arguments the ``dropout`` param sets) and ``default_params`` (braindecode
    keyword arguments, plus ``dropout``), which are passed through as they are.
    """

    braindecode_class: ClassVar[str] = ""
    dropout_keys: ClassVar[tuple[str, ...]] = ("drop_prob",)
    fixed_kwargs: ClassVar[dict[str, Any]] = {}
    default_shape = _DEFAULT_SHAPE

    @classmethod
    def resolve_params(cls, config: ModelConfig) -> dict[str, Any]:
        """Defaults overlaid with ``config.params``; ``dropout`` checked to lie in ``[0, 1)``."""
        p = super().resolve_params(config)
        p["dropout"] = check_dropout(config, p["dropout"])
        return p

    def _build(self, params: dict[str, Any]) -> None:
        name = self.registry_name
        net_class = braindecode_model_class(name, self.braindecode_class)
        kwargs = {k: v for k, v in params.items() if k != "dropout"}
        kwargs.update({k: params["dropout"] for k in self.dropout_keys})
        kwargs.update(self.fixed_kwargs)
        shape = f"windows of {self.n_chans} channels x {self.n_times} samples at {self.sfreq:g} Hz"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                net = _construct(net_class, n_chans=self.n_chans, n_outputs=self.embed_dim, n_times=self.n_times,
                                 sfreq=self.sfreq, **kwargs)
                out = _trial_forward(net, self.n_chans, self.n_times)
            except (RuntimeError, ValueError, AssertionError, IndexError, ZeroDivisionError) as exc:
                raise ValueError(f"model {name!r} (braindecode {self.braindecode_class}) cannot take {shape} "
                                 f"with params {_shown(params)}: {exc}") from None
        for w in caught:
            text = str(w.message)
            if _TOO_SHORT in text:
                raise ValueError(
                    f"model {name!r} (braindecode {self.braindecode_class}) cannot take {shape}: "
                    f"{text.split('.')[0]}; use a longer window (n_times) or smaller kernel/pool params "
                    f"(braindecode would shrink the network to fit)")
        for w in caught:  # anything else braindecode says is passed on, from here (not torch's C++ notes)
            if "Triggered internally" in str(w.message):
                continue
            warnings.warn(f"model {name!r} (braindecode {self.braindecode_class}): {w.message}",
                          w.category if isinstance(w.category, type) else UserWarning, stacklevel=4)
        if out is not None and tuple(out.shape) != (1, self.embed_dim):
            raise ValueError(f"model {name!r} (braindecode {self.braindecode_class}) gives output of shape "
                             f"{tuple(out.shape)[1:]} for {shape}, not ({self.embed_dim},)")
        self.net = net

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_chans, n_times)`` -> ``(batch, embed_dim)``: the braindecode model's output."""
        return self.net(x)


def _on_meta() -> bool:
    """Whether tensors are being made on the meta device (the checkpoint loader's shape check)."""
    return torch.empty(0).is_meta


def _construct(net_class: type[torch.nn.Module], **kwargs: Any) -> torch.nn.Module:
    """``net_class(**kwargs)``; on the meta device, built on the CPU and moved there when it cannot be built there.

    Some braindecode models (EEGConformer) read a trial output's values in their constructor,
    which meta tensors do not have.
    """
    if not _on_meta():
        return net_class(**kwargs)
    try:
        return net_class(**kwargs)
    except NotImplementedError:
        with torch.device("cpu"):
            return net_class(**kwargs).to("meta")


def _trial_forward(net: torch.nn.Module, n_chans: int, n_times: int) -> torch.Tensor | None:
    """One eval-mode forward pass on zeros (no statistics change, no random numbers drawn); None on meta."""
    if _on_meta():
        return None
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return net(torch.zeros(1, n_chans, n_times))
    finally:
        net.train(was_training)


def _shown(params: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(params.items())) + "}"


class BdEEGNet(BraindecodeEncoder):
    """braindecode ``EEGNet`` (EEGNetv4, Lawhern et al. 2018) with a linear final layer (max-norm 0.25)."""

    registry_name = "bd_eegnet"
    braindecode_class = "EEGNet"
    # the conv final layer is deprecated in braindecode 1.8; the linear one (max-norm constrained) is its successor
    fixed_kwargs: ClassVar[dict[str, Any]] = {"final_layer_with_constraint": True}
    default_params: ClassVar[dict[str, Any]] = {
        "F1": 8, "D": 2, "kernel_length": 64, "pool1_kernel_size": 4, "pool2_kernel_size": 8, "dropout": 0.25,
    }


class BdShallow(BraindecodeEncoder):
    """braindecode ``ShallowFBCSPNet`` (Schirrmeister et al. 2017)."""

    registry_name = "bd_shallow"
    braindecode_class = "ShallowFBCSPNet"
    default_params: ClassVar[dict[str, Any]] = {
        "n_filters_time": 40, "filter_time_length": 25, "n_filters_spat": 40, "pool_time_length": 75,
        "pool_time_stride": 15, "dropout": 0.5,
    }


class BdDeep4(BraindecodeEncoder):
    """braindecode ``Deep4Net`` (Schirrmeister et al. 2017); ``filter_time_length=9`` so 440 samples fit."""

    registry_name = "bd_deep4"
    braindecode_class = "Deep4Net"
    default_params: ClassVar[dict[str, Any]] = {
        "n_filters_time": 25, "n_filters_spat": 25, "filter_time_length": 9, "pool_time_length": 3,
        "pool_time_stride": 3, "n_filters_2": 50, "filter_length_2": 10, "n_filters_3": 100, "filter_length_3": 10,
        "n_filters_4": 200, "filter_length_4": 10, "dropout": 0.5,
    }


class BdEEGConformer(BraindecodeEncoder):
    """braindecode ``EEGConformer`` (Song et al. 2023): conv patches + transformer."""

    registry_name = "bd_eegconformer"
    braindecode_class = "EEGConformer"
    default_params: ClassVar[dict[str, Any]] = {
        "n_filters_time": 40, "filter_time_length": 25, "pool_time_length": 75, "pool_time_stride": 15,
        "num_layers": 6, "num_heads": 10, "att_drop_prob": 0.5, "dropout": 0.5,
    }


class BdATCNet(BraindecodeEncoder):
    """braindecode ``ATCNet`` (Altaheri et al. 2023); ``conv_block_pool_size_2=5`` so 440 samples fit."""

    registry_name = "bd_atcnet"
    braindecode_class = "ATCNet"
    dropout_keys: ClassVar[tuple[str, ...]] = ("conv_block_dropout", "tcn_drop_prob")
    default_params: ClassVar[dict[str, Any]] = {
        "conv_block_n_filters": 16, "conv_block_kernel_length_1": 64, "conv_block_kernel_length_2": 16,
        "conv_block_pool_size_1": 8, "conv_block_pool_size_2": 5, "n_windows": 5, "num_heads": 2, "head_dim": 8,
        "att_drop_prob": 0.5, "tcn_depth": 2, "tcn_kernel_size": 4, "dropout": 0.3,
    }
