"""``nice_tsconv``: the temporal-spatial convolution encoder of NICE.

Song, Y., Liu, B., Li, X., Shi, N., Wang, Y. & Gao, X. (2024). Decoding Natural Images from
EEG for Object Recognition. ICLR 2024 (arXiv:2308.13234). Their ``Enc_eeg`` + ``Proj_eeg``:

1. temporal conv ``1 x 25`` (40 filters) on every electrode;
2. average pooling ``1 x 51``, stride 5;
3. BatchNorm, ELU;
4. spatial conv over all electrodes (``n_chans x 1``, 40 filters), BatchNorm, ELU, dropout;
5. a ``1 x 1`` conv (40 -> 40), flattened;
6. the projection: linear to ``embed_dim``, a residual ``GELU -> Linear -> Dropout`` block,
   LayerNorm (NICE projects to CLIP's 768; ATM and the THINGS-EEG2 benchmarks to 1024).

The paper's steps 1-3 order is conv, pool, BatchNorm, ELU (as in their code), then the spatial
stage. The input is 63 channels x 250 samples at 250 Hz in the paper (0-1 s after onset);
the kernel and pool lengths are in samples, so at other rates they span other durations.
:class:`TSConv` (steps 1-5) is shared with :mod:`bci.models.atm`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from bci.models.base import EncoderModel, ModelConfig, check_dropout
from streams._checks import check_float, check_int

__all__ = ["NiceTSConv", "ProjectionHead", "TSConv", "tsconv_params"]

#: TSConv's params and NICE's values; shared by ``nice_tsconv`` and ``atm``.
TSCONV_DEFAULTS: dict[str, Any] = {
    "n_filters": 40,
    "temporal_kernel": 25,
    "pool": 51,
    "pool_stride": 5,
    "dropout": 0.5,
    "proj_dropout": 0.5,
}


def tsconv_params(config: ModelConfig, p: dict[str, Any]) -> dict[str, Any]:
    """Check the TSConv params of ``p`` in place (ints >= 1, dropouts in ``[0, 1)``) and return ``p``."""
    for key in ("n_filters", "temporal_kernel", "pool", "pool_stride"):
        p[key] = check_int(f"model {config.name!r}: param {key}", p[key], low=1)
    p["dropout"] = check_dropout(config, p["dropout"])
    p["proj_dropout"] = check_float(f"model {config.name!r}: param proj_dropout", p["proj_dropout"], low=0.0)
    if p["proj_dropout"] >= 1.0:
        raise ValueError(f"model {config.name!r}: param proj_dropout={p['proj_dropout']!r} must be in [0, 1)")
    return p


class TSConv(nn.Module):
    """NICE's temporal-spatial convolution: ``(batch, n_chans, n_times)`` -> ``(batch, n_features)``.

    Parameters
    ----------
    name : str
        The model's registry name, for the error of a window that is too short.
    n_chans, n_times : int
        Input shape.
    p : dict
        ``n_filters``, ``temporal_kernel``, ``pool``, ``pool_stride``, ``dropout`` (see the module docstring).
    """

    def __init__(self, name: str, n_chans: int, n_times: int, p: dict[str, Any]) -> None:
        super().__init__()
        after_conv = n_times - p["temporal_kernel"] + 1
        if after_conv < p["pool"]:
            raise ValueError(
                f"model {name!r}: a window of {n_chans} channels x {n_times} samples is too short for "
                f"temporal_kernel={p['temporal_kernel']} and pool={p['pool']} (needs at least "
                f"{p['temporal_kernel'] + p['pool'] - 1} samples); use a longer window or smaller params")
        n_out = (after_conv - p["pool"]) // p["pool_stride"] + 1
        f = p["n_filters"]
        self.tsconv = nn.Sequential(
            nn.Conv2d(1, f, (1, p["temporal_kernel"])),
            nn.AvgPool2d((1, p["pool"]), (1, p["pool_stride"])),
            nn.BatchNorm2d(f),
            nn.ELU(),
            nn.Conv2d(f, f, (n_chans, 1)),
            nn.BatchNorm2d(f),
            nn.ELU(),
            nn.Dropout(p["dropout"]),
        )
        self.projection = nn.Conv2d(f, f, (1, 1))
        self.n_features = f * n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_chans, n_times)`` -> ``(batch, n_features)``."""
        return self.projection(self.tsconv(x.unsqueeze(1))).flatten(1)


class ProjectionHead(nn.Module):
    """NICE's ``Proj_eeg``: ``Linear -> x + Dropout(Linear(GELU(x))) -> LayerNorm``."""

    def __init__(self, n_features: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, embed_dim)
        self.residual = nn.Sequential(nn.GELU(), nn.Linear(embed_dim, embed_dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_features)`` -> ``(batch, embed_dim)``."""
        x = self.linear(x)
        return self.norm(x + self.residual(x))


class NiceTSConv(EncoderModel):
    """NICE's TSConv encoder with its projection (Song et al. 2024, ICLR); see the module docstring.

    Parameters (``config.params``)
    ------------------------------
    n_filters : int
        Filters of the temporal and spatial convs (NICE: 40).
    temporal_kernel : int
        Temporal conv length in samples (NICE: 25).
    pool, pool_stride : int
        Average pooling after the temporal conv (NICE: 51, stride 5).
    dropout : float
        After the spatial conv (NICE: 0.5).
    proj_dropout : float
        In the projection's residual block (NICE: 0.5).
    """

    registry_name = "nice_tsconv"
    default_shape: ClassVar[dict[str, Any]] = {"n_chans": 63, "n_times": 250, "sfreq": 250.0, "embed_dim": 1024}
    default_params: ClassVar[dict[str, Any]] = dict(TSCONV_DEFAULTS)

    @classmethod
    def resolve_params(cls, config: ModelConfig) -> dict[str, Any]:
        """Defaults overlaid with ``config.params``, checked."""
        return tsconv_params(config, super().resolve_params(config))

    def _build(self, p: dict[str, Any]) -> None:
        self.encoder = TSConv(self.registry_name, self.n_chans, self.n_times, p)
        self.proj = ProjectionHead(self.encoder.n_features, self.embed_dim, p["proj_dropout"])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_chans, n_times)`` -> ``(batch, embed_dim)``."""
        return self.proj(self.encoder(x))
