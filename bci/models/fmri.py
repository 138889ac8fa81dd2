"""fMRI encoder ``fmri_mlp``: voxels -> MLP (967 -> 1024 -> 768 -> 512) with LayerNorm, SiLU, dropout.

The Miyawaki-style setting: one input value per voxel (``n_chans`` voxels). A window of
``n_times`` volumes (e.g. a few TRs after the HRF delay) is averaged over time first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bci.models.base import EncoderModel, ModelConfig, check_dropout
from streams._checks import check_int, check_type


class FMRIMLP(EncoderModel):
    """MLP over voxels: ``[Linear -> LayerNorm -> SiLU -> Dropout] * len(hidden) -> Linear``.

    Parameters (``config.params``)
    ------------------------------
    hidden : list of int
        Hidden layer sizes (default ``[1024, 768]``).
    dropout : float
        Dropout after each hidden layer (training only).
    """

    registry_name = "fmri_mlp"
    default_shape = {"n_chans": 967, "n_times": 1, "sfreq": 0.5, "embed_dim": 512}
    default_params: dict[str, Any] = {"hidden": [1024, 768], "dropout": 0.1}

    @classmethod
    def resolve_params(cls, config: ModelConfig) -> dict[str, Any]:
        """Validate ``hidden`` and ``dropout``."""
        p = super().resolve_params(config)
        hidden = check_type(f"model {config.name!r}: param hidden", p["hidden"], (list, tuple), "a list of positive ints")
        p["hidden"] = [check_int(f"model {config.name!r}: param hidden[{i}]", h, low=1) for i, h in enumerate(hidden)]
        check_dropout(config, p["dropout"])
        return p

    def _build(self, p: dict[str, Any]) -> None:
        layers: list[nn.Module] = []
        width = self.n_chans
        for h in p["hidden"]:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.SiLU(), nn.Dropout(p["dropout"])]
            width = h
        layers.append(nn.Linear(width, self.embed_dim))
        self.mlp = nn.Sequential(*layers)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_voxels, n_times)`` -> mean over time -> ``(batch, embed_dim)``."""
        x = x[:, :, 0] if self.n_times == 1 else x.mean(dim=2)
        return self.mlp(x)
