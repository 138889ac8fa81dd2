"""Structural similarity (Wang et al. 2004) with a Gaussian window, differentiable.

The one SSIM of the project: :func:`offline.scoring.metrics.ssim_metric` reports it for
generated images, and :func:`offline.training.losses.ssim_loss` trains with ``1 - ssim``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from offline.scoring.tensors import check_same_shape, check_tensor
from streams._checks import check_float, check_int

__all__ = ["gaussian_window", "ssim"]


def gaussian_window(window: int = 11, sigma: float = 1.5, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``window`` taps (odd), standard deviation ``sigma`` taps."""
    if check_int("window", window) < 1 or window % 2 == 0:
        raise ValueError(f"window={window!r} must be an odd int >= 1 (11 is the SSIM standard)")
    s = check_float("sigma", sigma, positive=True)
    t = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-0.5 * (t / s) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of ``(B, C, H, W)`` per channel."""
    c = x.shape[1]
    k = len(g)
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    *,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window; differentiable.

    Local means, variances and covariance are Gaussian-weighted averages over a
    ``window × window`` patch (σ = ``sigma``), computed per channel and only where the
    window fits inside the image ('valid'); the SSIM map is averaged over positions
    and channels. Equal to scikit-image's
    ``structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=...)``.

    Parameters
    ----------
    x, y : torch.Tensor, (B, C, H, W) float
        Images in the same units; ``H, W >= window``.
    window : int
        Odd window size (11).
    sigma : float
        Gaussian standard deviation in pixels (1.5).
    data_range : float
        Dynamic range of the images (1 for [0, 1], 2 for [-1, 1], 255 for 8-bit).
    k1, k2 : float
        Stabilising constants: ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``.
    reduction : {"mean", "none"}
        ``"mean"``: one scalar (mean over the batch); ``"none"``: ``(B,)``.

    Returns
    -------
    torch.Tensor
        In [-1, 1]; 1 only for identical images.
    """
    x = check_tensor("x", x, ndim=4)
    y = check_tensor("y", y, ndim=4)
    check_same_shape("x", x, "y", y)
    if x.dtype != y.dtype:
        raise TypeError(f"x has dtype {x.dtype} but y has {y.dtype}; cast both to the same float dtype")
    L = check_float("data_range", data_range, positive=True)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r} must be 'mean' or 'none'")
    g = gaussian_window(window, sigma, dtype=x.dtype, device=x.device)
    if min(x.shape[-2:]) < window:
        raise ValueError(
            f"images of size {tuple(x.shape[-2:])} are smaller than the SSIM window {window}; "
            "use a smaller window or larger images"
        )
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x * mu_x
    syy = _filter(y * y, g) - mu_y * mu_y
    sxy = _filter(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    per_image = (num / den).mean(dim=(1, 2, 3))
    return per_image.mean() if reduction == "mean" else per_image
