"""Checks of tensor arguments shared by the scores (SSIM) and the training losses: type, dtype, shape."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["check_same_shape", "check_tensor"]


def check_tensor(name: str, x: object, *, ndim: int | Sequence[int] | None = None,
                 floating: bool = True) -> torch.Tensor:
    """``x`` itself after checking it is a (floating-point) tensor with one of the allowed ``ndim``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor(...)")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; expected a floating-point tensor (call .float())")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected a {want} tensor")
    return x


def check_same_shape(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    """Refuse (``ValueError``) two tensors of different shapes, naming both."""
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; they must match"
        )
