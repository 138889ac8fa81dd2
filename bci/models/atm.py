"""``atm``: the ATM-style encoder, channel-as-token transformer + TSConv + projection.

Li, D., Wei, C., Li, S., Zou, J. & Liu, Q. (2024). Visual Decoding and Reconstruction via EEG
Embeddings with Guided Diffusion. NeurIPS 2024 (arXiv:2403.07721). Their ATM ("adaptive
thinking mapper") encoder:

1. channel-as-token embedding (iTransformer's inverted embedding): each channel's whole time
   series ``(n_times,)`` is one token, mapped by a shared ``Linear(n_times, d_model)``;
2. optionally a subject token (a learned embedding per subject) appended to the channel tokens;
3. a transformer encoder over the tokens (ATM: 1 layer, 4 heads, feed-forward 256, dropout
   0.25, GELU); the subject token is dropped again after it;
4. NICE's temporal-spatial convolution (:class:`bci.models.nice.TSConv`) over the
   ``n_chans x d_model`` map, as over channels x samples;
5. NICE's projection to ``embed_dim`` (ATM: 1024, CLIP ViT-H-14's size).

ATM uses ``d_model = 250`` with its own attention layer; here torch's
:class:`~torch.nn.TransformerEncoderLayer`, which needs ``d_model`` divisible by ``n_heads``,
so the default is 256 with 4 heads. No positional embedding (as ATM): the channel identity
reaches the network through the spatial conv of step 4.

The subject token (``n_subjects > 0``): ``model(x, subject_ids)`` picks each window's subject;
``model(x)`` (the live pipeline, which knows no subject ids) uses one more learned token, the
"any subject" row ``n_subjects`` of the embedding table.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from bci.models.base import EncoderModel, ModelConfig
from bci.models.nice import TSCONV_DEFAULTS, ProjectionHead, TSConv, tsconv_params
from streams._checks import check_float, check_int

__all__ = ["ATMEncoder"]


class ATMEncoder(EncoderModel):
    """ATM-style encoder (Li et al. 2024, NeurIPS); see the module docstring.

    Parameters (``config.params``)
    ------------------------------
    d_model : int
        Size of a channel token (ATM: 250).
    n_heads, n_layers, d_ff : int
        Transformer encoder: heads, layers, feed-forward size (ATM: 4, 1, 256).
    attn_dropout : float
        Dropout in the transformer (ATM: 0.25).
    n_subjects : int
        Number of subjects with a token; 0 (default): no subject token.
    n_filters, temporal_kernel, pool, pool_stride, dropout, proj_dropout
        The TSConv and projection (:class:`bci.models.nice.NiceTSConv`).
    """

    registry_name = "atm"
    default_shape: ClassVar[dict[str, Any]] = {"n_chans": 63, "n_times": 250, "sfreq": 250.0, "embed_dim": 1024}
    default_params: ClassVar[dict[str, Any]] = {
        "d_model": 256,
        "n_heads": 4,
        "n_layers": 1,
        "d_ff": 256,
        "attn_dropout": 0.25,
        "n_subjects": 0,
        **TSCONV_DEFAULTS,
    }

    @classmethod
    def resolve_params(cls, config: ModelConfig) -> dict[str, Any]:
        """Defaults overlaid with ``config.params``, checked (``d_model`` divisible by ``n_heads``)."""
        p = tsconv_params(config, super().resolve_params(config))
        for key in ("d_model", "n_heads", "n_layers", "d_ff"):
            p[key] = check_int(f"model {config.name!r}: param {key}", p[key], low=1)
        p["n_subjects"] = check_int(f"model {config.name!r}: param n_subjects", p["n_subjects"], low=0)
        p["attn_dropout"] = check_float(f"model {config.name!r}: param attn_dropout", p["attn_dropout"], low=0.0)
        if p["attn_dropout"] >= 1.0:
            raise ValueError(f"model {config.name!r}: param attn_dropout={p['attn_dropout']!r} must be in [0, 1)")
        if p["d_model"] % p["n_heads"]:
            raise ValueError(f"model {config.name!r}: param d_model={p['d_model']} must be divisible by "
                             f"n_heads={p['n_heads']}")
        return p

    def _build(self, p: dict[str, Any]) -> None:
        self.n_subjects = p["n_subjects"]
        self.token_embedding = nn.Linear(self.n_times, p["d_model"])
        self.subject_embedding = nn.Embedding(self.n_subjects + 1, p["d_model"]) if self.n_subjects else None
        self.transformer = nn.ModuleList(
            nn.TransformerEncoderLayer(p["d_model"], p["n_heads"], p["d_ff"], p["attn_dropout"],
                                       activation="gelu", batch_first=True)
            for _ in range(p["n_layers"])
        )
        self.dropout = nn.Dropout(p["attn_dropout"])
        self.encoder = TSConv(self.registry_name, self.n_chans, p["d_model"], p)
        self.proj = ProjectionHead(self.encoder.n_features, self.embed_dim, p["proj_dropout"])
        self._subject_ids: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, subject_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Embed a batch of windows, each with its subject's token when ``subject_ids`` is given.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, n_chans, n_times)`` float32.
        subject_ids : torch.Tensor, optional
            ``(batch,)`` integers in ``[0, n_subjects)``; None: the "any subject" token (or none
            when the model has no subject tokens).
        """
        if subject_ids is not None:
            if self.subject_embedding is None:
                raise ValueError(f"model {self.registry_name!r} has no subject tokens (param n_subjects=0); "
                                 "build it with n_subjects > 0 or call it without subject_ids")
            ids = torch.as_tensor(subject_ids)
            if ids.shape != (x.shape[0],) or ids.is_floating_point() or ids.is_complex():
                raise ValueError(f"subject_ids must be {x.shape[0]} integers, one per window, "
                                 f"got {ids.dtype} of shape {tuple(ids.shape)}")
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.n_subjects):
                raise ValueError(f"subject_ids must lie in [0, {self.n_subjects}) (param n_subjects), "
                                 f"got {int(ids.min())}..{int(ids.max())}")
            self._subject_ids = ids.to(x.device, torch.long)
        try:
            return super().forward(x)
        finally:
            self._subject_ids = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_chans, n_times)`` -> ``(batch, embed_dim)``."""
        tokens = self.token_embedding(x)  # (batch, n_chans, d_model): one token per channel
        if self.subject_embedding is not None:
            ids = self._subject_ids
            if ids is None:
                ids = torch.full((x.shape[0],), self.n_subjects, dtype=torch.long, device=x.device)
            tokens = torch.cat([tokens, self.subject_embedding(ids)[:, None, :]], dim=1)
        tokens = self.dropout(tokens)
        for layer in self.transformer:
            tokens = layer(tokens)
        return self.proj(self.encoder(tokens[:, : self.n_chans]))
