"""EEG encoders: ``eeg_convnet`` (default, EEGNet-style, built for a < 2 ms CPU budget) and
``eeg_shallow`` (ShallowConvNet reference, braindecode-style).

``eeg_convnet`` is EEGNet (Lawhern et al. 2018) arranged for speed:

1. average-pool the 1 kHz input by ``decim`` (4 -> 250 Hz, EEGNet's own papers use 128 Hz);
2. spatial filters: ``n_spatial`` weighted sums over all electrodes (EEGNet's depthwise
   spatial conv, ``F1 * D`` filters);
3. a temporal filter per spatial filter (EEGNet's first temporal conv), BatchNorm, ELU,
   average pooling, dropout;
4. separable conv (depthwise temporal + pointwise mixing), BatchNorm, ELU, pooling, dropout;
5. linear layer to the embedding;
6. optionally (``head_hidden``) an MLP head on the L2-normalised output of step 5: the
   two-stage sample-level extractor, a frozen pixel-level (triplet) backbone whose
   features an MLP maps into CLIP space (``bci train sample --backbone``).

Steps 1-3 are linear up to the BatchNorm, so pooling, spatial and temporal filtering
commute; EEGNet applies the temporal conv first on every electrode, which costs
``n_chans`` times more than filtering the few spatial-filter outputs. Evaluating the
spatial filters first on the decimated signal gives the same family of functions at a
fraction of the cost (each spatial filter has its own temporal filter, i.e. ``D = 1``
with ``F1 = n_spatial``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bci.models.base import EncoderModel, ModelConfig, check_dropout
from streams._checks import check_int

#: Rate the default EEG encoder works at internally (the input is average-pooled to it).
INTERNAL_SFREQ = 250.0


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k if k % 2 == 1 else k + 1


def _pooled(n: int, pool: int, what: str, name: str) -> int:
    out = n // pool
    if out < 1:
        raise ValueError(f"model {name!r}: {what} leaves {n} samples, fewer than the pool size {pool}; "
                         "use a longer window (n_times) or smaller pooling params")
    return out


class EEGConvNet(EncoderModel):
    """Default EEG encoder: EEGNet-style, decimating early, ~0.2 M parameters at 128 x 440.

    Parameters (``config.params``)
    ------------------------------
    decim : int or None
        Average-pooling factor applied to the input; None: ``round(sfreq / 250)``.
    n_spatial : int
        Number of spatial filters over all electrodes (EEGNet ``F1 * D``).
    temporal_kernel : int or None
        Length of the temporal filters in decimated samples; None: odd, about 128 ms.
    pool1 : int
        Pooling after the temporal stage.
    n_separable : int
        Output channels of the separable conv (EEGNet ``F2``).
    separable_kernel : int
        Length of the separable conv's depthwise filter (decimated and pooled samples).
    pool2 : int
        Pooling after the separable conv.
    dropout : float
        Dropout after each pooling (training only).
    head_hidden : int or None
        None (default): the linear layer of step 5 gives the embedding. An int: step 5 gives
        ``feature_dim`` features, L2-normalised, and an MLP head
        ``Linear(feature_dim, head_hidden) -> GELU -> Dropout -> Linear(head_hidden, embed_dim)``
        gives the embedding (parameter names ``align_head.*``; the rest is named as without it).
    feature_dim : int or None
        Size of the features before the head (None: ``embed_dim``); used with ``head_hidden``.
    """

    registry_name = "eeg_convnet"
    default_shape = {"n_chans": 128, "n_times": 440, "sfreq": 1000.0, "embed_dim": 512}
    default_params: dict[str, Any] = {
        "decim": None,
        "n_spatial": 32,
        "temporal_kernel": None,
        "pool1": 4,
        "n_separable": 64,
        "separable_kernel": 9,
        "pool2": 4,
        "dropout": 0.25,
        "head_hidden": None,
        "feature_dim": None,
    }

    @classmethod
    def resolve_params(cls, config: ModelConfig) -> dict[str, Any]:
        """Fill the automatic ``decim`` and ``temporal_kernel`` from ``config.sfreq``."""
        p = super().resolve_params(config)
        if p["decim"] is None:
            p["decim"] = max(1, int(round(config.sfreq / INTERNAL_SFREQ)))
        if p["temporal_kernel"] is None:
            p["temporal_kernel"] = _odd(0.128 * config.sfreq / p["decim"])
        for key in ("decim", "n_spatial", "temporal_kernel", "pool1", "n_separable", "separable_kernel", "pool2"):
            p[key] = check_int(f"model {config.name!r}: param {key}", p[key], low=1)
        check_dropout(config, p["dropout"])
        for key in ("head_hidden", "feature_dim"):
            if p.get(key) is not None:
                p[key] = check_int(f"model {config.name!r}: param {key}", p[key], low=1)
        if p.get("feature_dim") is not None and p.get("head_hidden") is None:
            raise ValueError(f"model {config.name!r}: param feature_dim={p['feature_dim']!r} needs head_hidden "
                             "(the features are the head's input)")
        return p

    def _build(self, p: dict[str, Any]) -> None:
        name = self.registry_name
        t = _pooled(self.n_times, p["decim"], "decimation", name)
        t = _pooled(t, p["pool1"], "pool1", name)
        t = _pooled(t, p["pool2"], "pool2", name)
        s, f2 = p["n_spatial"], p["n_separable"]
        k1, k2 = p["temporal_kernel"], p["separable_kernel"]
        self.decimate = nn.AvgPool1d(p["decim"]) if p["decim"] > 1 else nn.Identity()
        self.spatial = nn.Conv1d(self.n_chans, s, 1, bias=False)
        self.temporal = nn.Conv1d(s, s, k1, padding=k1 // 2, groups=s, bias=False)
        self.bn1 = nn.BatchNorm1d(s)
        self.pool1 = nn.AvgPool1d(p["pool1"])
        self.depthwise = nn.Conv1d(s, s, k2, padding=k2 // 2, groups=s, bias=False)
        self.pointwise = nn.Conv1d(s, f2, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(f2)
        self.pool2 = nn.AvgPool1d(p["pool2"])
        self.drop = nn.Dropout(p["dropout"])
        self.act = nn.ELU()
        self.flat_features = f2 * t
        head_hidden = p.get("head_hidden")
        if head_hidden is None:
            self.embed_layer = nn.Linear(self.flat_features, self.embed_dim)
            self.align_head = None
        else:
            feature_dim = p.get("feature_dim") or self.embed_dim
            self.embed_layer = nn.Linear(self.flat_features, feature_dim)
            self.align_head = nn.Sequential(nn.Linear(feature_dim, head_hidden), nn.GELU(), nn.Dropout(p["dropout"]),
                                      nn.Linear(head_hidden, self.embed_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_chans, n_times)`` -> ``(batch, embed_dim)``."""
        x = self.decimate(_pointwise(x, self.spatial))  # spatial filters first: n_spatial << n_chans
        x = self.drop(self.pool1(self.act(self.bn1(_depthwise(x, self.temporal)))))
        x = _pointwise(_depthwise(x, self.depthwise), self.pointwise)
        x = self.drop(self.pool2(self.act(self.bn2(x))))
        x = self.embed_layer(x.flatten(1))
        return x if self.align_head is None else self.align_head(F.normalize(x, dim=1))


def _pointwise(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A bias-free kernel-1 ``Conv1d`` as one matmul (faster than oneDNN's conv at small sizes)."""
    return torch.matmul(conv.weight[:, :, 0], x)


def _depthwise(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A bias-free, 'same'-padded depthwise ``Conv1d``.

    On CPU it is computed as unfold + multiply + sum, which is 2-3x faster than oneDNN's
    depthwise conv1d for these sizes (same result up to float rounding); elsewhere the conv.
    """
    if x.device.type != "cpu":
        return conv(x)
    k = conv.kernel_size[0]
    windows = F.pad(x, (k // 2, k - 1 - k // 2)).unfold(2, k, 1)  # (batch, ch, time, k)
    return (windows * conv.weight[:, 0, None, :]).sum(-1)


class ShallowConvNet(EncoderModel):
    """ShallowConvNet (Schirrmeister et al. 2017), braindecode layout; the reference encoder.

    Temporal conv -> spatial conv over all electrodes -> BatchNorm -> square ->
    average pooling -> log -> dropout -> linear to the embedding. About 0.7 M parameters
    at 128 x 440 and 5-16 ms per window on 2 CPU cores: a reference, not the live default.

    Parameters (``config.params``)
    ------------------------------
    n_filters_time, filter_time_length : int
        Temporal conv filters and their length in samples.
    n_filters_spat : int
        Spatial filters.
    pool_time_length, pool_time_stride : int
        Mean pooling of the squared signal.
    dropout : float
        Dropout before the final layer.
    """

    registry_name = "eeg_shallow"
    default_shape = {"n_chans": 128, "n_times": 440, "sfreq": 1000.0, "embed_dim": 512}
    default_params: dict[str, Any] = {
        "n_filters_time": 40,
        "filter_time_length": 25,
        "n_filters_spat": 40,
        "pool_time_length": 75,
        "pool_time_stride": 15,
        "dropout": 0.5,
    }

    def _build(self, p: dict[str, Any]) -> None:
        t = self.n_times - p["filter_time_length"] + 1
        if t < p["pool_time_length"]:
            raise ValueError(
                f"model {self.registry_name!r}: n_times={self.n_times} is too short for "
                f"filter_time_length={p['filter_time_length']} and pool_time_length={p['pool_time_length']}"
            )
        n_out = (t - p["pool_time_length"]) // p["pool_time_stride"] + 1
        self.conv_time = nn.Conv2d(1, p["n_filters_time"], (1, p["filter_time_length"]))
        self.conv_spat = nn.Conv2d(p["n_filters_time"], p["n_filters_spat"], (self.n_chans, 1), bias=False)
        self.bn = nn.BatchNorm2d(p["n_filters_spat"])
        self.pool = nn.AvgPool2d((1, p["pool_time_length"]), (1, p["pool_time_stride"]))
        self.drop = nn.Dropout(p["dropout"])
        self.flat_features = p["n_filters_spat"] * n_out
        self.embed_layer = nn.Linear(self.flat_features, self.embed_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_chans, n_times)`` -> ``(batch, embed_dim)``."""
        x = self.bn(self.conv_spat(self.conv_time(x.unsqueeze(1))))
        x = torch.log(torch.clamp(self.pool(x * x), min=1e-6))
        return self.embed_layer(self.drop(x).flatten(1))
