"""Training losses for the EEG/fMRI extractors (SPEC §5).

* :func:`triplet_semihard_loss`: triplet loss with online semi-hard mining in the
  batch (Schroff et al. 2015, FaceNet), for the pixel-level extractor f_θ.
* :func:`ssim_loss` (with :func:`ssim` from :mod:`offline.scoring.ssim`): differentiable structural similarity (Wang et
  al. 2004, Gaussian window) for the saliency GAN's ``λ·(1 − SSIM)`` term.
* :func:`diff_augment`: differentiable augmentation (Zhao et al. 2020) applied to
  real and generated images before the discriminator.
* :func:`discriminator_loss` / :func:`generator_loss`: hinge and non-saturating
  GAN losses.
* :func:`clip_alignment_loss` (:func:`mse_alignment`, :func:`info_nce`): alignment
  of a brain embedding ``h`` to a frozen CLIP embedding ``ĥ``, with duplicate
  targets in a batch treated as positives, optionally mixed with a second (text)
  target (ATM's ``0.99 · image + 0.01 · text``).
* :class:`LearnedTemperature`: CLIP's learned ``logit_scale`` (Radford et al. 2021),
  initialised at ``log(1/0.07)`` and clamped to ``[0, log 100]``.

Every function validates its tensors (type, dtype, shape) and raises ``TypeError``
or ``ValueError`` naming the argument. Definitions are collected in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from offline.scoring.ssim import gaussian_window, ssim
from offline.scoring.tensors import check_same_shape, check_tensor
from streams._checks import check_float

__all__ = [
    "MAX_LOGIT_SCALE",
    "LearnedTemperature",
    "TripletStats",
    "clip_alignment_loss",
    "diff_augment",
    "discriminator_loss",
    "gaussian_window",
    "generator_loss",
    "info_nce",
    "mse_alignment",
    "pairwise_distances",
    "ssim",
    "ssim_loss",
    "triplet_semihard_loss",
]


# ============================================================================ validation
def _check_labels(name: str, labels: object, n: int, device: torch.device) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer ids, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} has dtype {labels.dtype}; expected integer ids (torch.long)")
    if labels.shape != (n,):
        raise ValueError(f"{name} has shape {tuple(labels.shape)}; expected ({n},), one id per batch row")
    return labels.to(device)


# ============================================================================ triplet
@dataclass(frozen=True)
class TripletStats:
    """What the semi-hard miner found in one batch.

    Attributes
    ----------
    n_triplets : int
        Anchor–positive pairs that had at least one negative (one triplet each).
    fraction_active : float
        Fraction of those triplets with a positive loss (``d_ap - d_an + margin > 0``).
    fraction_semihard : float
        Fraction whose negative was semi-hard (``d_ap < d_an < d_ap + margin``).
    fraction_fallback : float
        Fraction with no semi-hard negative, which used the fallback negative.
    mean_positive_distance, mean_negative_distance : float
        Mean ``d_ap`` and mean distance to the chosen negatives (nan when no triplets).
    """

    n_triplets: int
    fraction_active: float
    fraction_semihard: float
    fraction_fallback: float
    mean_positive_distance: float
    mean_negative_distance: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict for logging."""
        return asdict(self)


def pairwise_distances(embeddings: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Euclidean distance matrix ``(B, B)`` with gradients that stay finite at zero distance.

    Parameters
    ----------
    embeddings : torch.Tensor, (B, D) float
    squared : bool
        Return squared distances.
    """
    x = check_tensor("embeddings", embeddings, ndim=2)
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] - 2.0 * (x @ x.T) + sq[None, :]).clamp_min(0.0)
    d2 = d2 * (1.0 - torch.eye(len(x), dtype=x.dtype, device=x.device))  # exact zeros on the diagonal
    if squared:
        return d2
    return d2.clamp_min(1e-12).sqrt() * (d2 > 0)


def triplet_semihard_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    *,
    squared: bool = False,
    fallback: Literal["hardest", "easiest"] = "hardest",
) -> tuple[torch.Tensor, TripletStats]:
    """Triplet loss with online semi-hard negative mining in the batch (FaceNet).

    Every ordered anchor–positive pair ``(a, p)`` (same label, ``a != p``) forms one
    triplet. Its negative (another label) is the *semi-hard* one closest to the
    anchor: ``d_ap < d_an < d_ap + margin`` (farther than the positive, but inside the
    margin). When the batch holds no semi-hard negative for the pair, ``fallback``
    decides: ``"hardest"`` takes the closest negative (then the loss is zero when all
    negatives lie beyond the margin, and positive when one is closer than the
    positive); ``"easiest"`` takes the farthest negative (TensorFlow Addons' choice,
    gentler early in training). The loss is the mean over all triplets of
    ``max(0, d_ap - d_an + margin)``.

    Parameters
    ----------
    embeddings : torch.Tensor, (B, D) float
        Batch of embeddings (normalise them first if the margin is meant on the sphere).
    labels : torch.Tensor, (B,) int
        Class of each row.
    margin : float
        β, the margin (> 0).
    squared : bool
        Use squared Euclidean distances (as FaceNet) instead of distances.
    fallback : {"hardest", "easiest"}
        Negative used when a pair has no semi-hard negative.

    Returns
    -------
    loss : torch.Tensor
        Scalar; ``0`` (still attached to the graph) when the batch has no triplet.
    stats : TripletStats
    """
    x = check_tensor("embeddings", embeddings, ndim=2)
    if len(x) < 2:
        raise ValueError(f"embeddings has {len(x)} row(s); a triplet batch needs at least 2")
    y = _check_labels("labels", labels, len(x), x.device)
    m = check_float("margin", margin, positive=True)
    if fallback not in ("hardest", "easiest"):
        raise ValueError(f"fallback={fallback!r} must be 'hardest' or 'easiest'")
    d = pairwise_distances(x, squared=squared)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    pos_mask = same & ~eye  # (a, p)
    neg_mask = ~same  # (a, n)
    a_idx, p_idx = pos_mask.nonzero(as_tuple=True)
    keep = neg_mask[a_idx].any(dim=1)
    a_idx, p_idx = a_idx[keep], p_idx[keep]
    if len(a_idx) == 0:
        nan = float("nan")
        return x.sum() * 0.0, TripletStats(0, 0.0, 0.0, 0.0, nan, nan)
    d_ap = d[a_idx, p_idx]  # (T,)
    d_an_all = d[a_idx]  # (T, B)
    negs = neg_mask[a_idx]
    with torch.no_grad():
        dd = d_an_all.detach()
        ap = d_ap.detach()[:, None]
        semi = negs & (dd > ap) & (dd < ap + m)
        inf = torch.tensor(float("inf"), dtype=dd.dtype, device=dd.device)
        semi_choice = torch.where(semi, dd, inf).argmin(dim=1)
        if fallback == "hardest":
            fb_choice = torch.where(negs, dd, inf).argmin(dim=1)
        else:
            fb_choice = torch.where(negs, dd, -inf).argmax(dim=1)
        has_semi = semi.any(dim=1)
        choice = torch.where(has_semi, semi_choice, fb_choice)
    d_an = d_an_all.gather(1, choice[:, None])[:, 0]
    per = F.relu(d_ap - d_an + m)
    loss = per.mean()
    n = len(per)
    stats = TripletStats(
        n_triplets=int(n),
        fraction_active=float((per.detach() > 0).float().mean()),
        fraction_semihard=float(has_semi.float().mean()),
        fraction_fallback=float((~has_semi).float().mean()),
        mean_positive_distance=float(d_ap.detach().mean()),
        mean_negative_distance=float(d_an.detach().mean()),
    )
    return loss, stats


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
              data_range: float = 1.0) -> torch.Tensor:
    """``1 − ssim(x, y)`` (batch mean), in [0, 2]; see :func:`ssim`."""
    return 1.0 - ssim(x, y, window, sigma, data_range)


# ============================================================================ DiffAugment
def _rand(shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.rand(shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


def _randint(low: int, high: int, shape: tuple[int, ...], x: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randint(low, high, shape, generator=generator, device=dev).to(x.device)


def _brightness(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return x + (_rand((x.shape[0], 1, 1, 1), x, gen) - 0.5)


def _saturation(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand((x.shape[0], 1, 1, 1), x, gen) * 2) + mean


def _contrast(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((x.shape[0], 1, 1, 1), x, gen) + 0.5) + mean


def _translation(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = _randint(-sh, sh + 1, (b, 1, 1), x, gen)
    ty = _randint(-sw, sw + 1, (b, 1, 1), x, gen)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = _randint(0, h + (1 - ch % 2), (b, 1, 1), x, gen)
    oy = _randint(0, w + (1 - cw % 2), (b, 1, 1), x, gen)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


_AUGMENTS = {
    "color": (_brightness, _saturation, _contrast),
    "translation": (_translation,),
    "cutout": (_cutout,),
}


def diff_augment(
    x: torch.Tensor,
    policy: str = "color,translation,cutout",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020): differentiable random augmentation of a batch.

    Apply the same policy to real and generated images, each time with fresh random
    draws, before the discriminator; gradients flow through every operation to the
    generator. Ops follow the authors' reference code, per image:

    * ``color``: brightness ``+U(-0.5, 0.5)``, saturation ×``U(0, 2)`` about the
      per-pixel channel mean, contrast ×``U(0.5, 1.5)`` about the image mean;
    * ``translation``: integer shift up to 1/8 of the size in each axis, zero fill;
    * ``cutout``: a zeroed square of half the size at a random centre.

    Parameters
    ----------
    x : torch.Tensor, (B, C, H, W) float
        Images, typically in [-1, 1] (zero fill = mid-grey).
    policy : str
        Comma-separated subset of ``color``, ``translation``, ``cutout`` (``""``: identity).
    generator : torch.Generator, optional
        Seeded generator for reproducible draws (the global RNG when ``None``).

    Returns
    -------
    torch.Tensor, same shape and dtype as ``x``.
    """
    x = check_tensor("x", x, ndim=4)
    if not isinstance(policy, str):
        raise TypeError(f"policy={policy!r} must be a comma-separated string such as 'color,translation,cutout'")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in _AUGMENTS]
    if unknown:
        raise ValueError(f"policy={policy!r} has unknown op(s) {unknown}; choose from {sorted(_AUGMENTS)}")
    for name in names:
        for fn in _AUGMENTS[name]:
            x = fn(x, generator)
    return x


# ============================================================================ GAN
_GanKind = Literal["hinge", "non-saturating"]


def _check_kind(kind: str) -> None:
    if kind not in ("hinge", "non-saturating"):
        raise ValueError(f"kind={kind!r} must be 'hinge' or 'non-saturating'")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: _GanKind = "hinge") -> torch.Tensor:
    """Discriminator loss on raw logits (no sigmoid).

    ``hinge``: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``;
    ``non-saturating``: ``mean(softplus(-D(x))) + mean(softplus(D(G(z))))`` (binary
    cross-entropy with real = 1, fake = 0).
    """
    real = check_tensor("real_logits", real_logits)
    fake = check_tensor("fake_logits", fake_logits)
    _check_kind(kind)
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(fake_logits: torch.Tensor, kind: _GanKind = "hinge") -> torch.Tensor:
    """Generator loss on the discriminator's logits for generated images.

    ``hinge``: ``-mean(D(G(z)))``; ``non-saturating``: ``mean(softplus(-D(G(z))))``
    (``-log sigmoid``, Goodfellow et al. 2014).
    """
    fake = check_tensor("fake_logits", fake_logits)
    _check_kind(kind)
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()


# ============================================================================ CLIP alignment
def _check_pair(h: torch.Tensor, h_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = check_tensor("h", h, ndim=2)
    h_hat = check_tensor("h_hat", h_hat, ndim=2)
    check_same_shape("h", h, "h_hat", h_hat)
    return h, h_hat


def mse_alignment(h: torch.Tensor, h_hat: torch.Tensor) -> torch.Tensor:
    """``mean_i ‖h_i − ĥ_i‖²``: squared Euclidean distance per row, averaged over the batch.

    Parameters
    ----------
    h : torch.Tensor, (B, D) float
        Brain embeddings.
    h_hat : torch.Tensor, (B, D) float
        Target CLIP embeddings (treated as constants: detach them upstream if needed).
    """
    h, h_hat = _check_pair(h, h_hat)
    return ((h - h_hat.to(h.dtype)) ** 2).sum(dim=1).mean()


def _target_groups(h_hat: torch.Tensor, target_ids: torch.Tensor | None) -> torch.Tensor:
    """``(B, B)`` bool: rows i, j share a target (by id, or by identical target rows)."""
    if target_ids is not None:
        ids = _check_labels("target_ids", target_ids, len(h_hat), h_hat.device)
    else:
        _, ids = torch.unique(h_hat.detach(), dim=0, return_inverse=True)
    return ids[:, None] == ids[None, :]


def info_nce(
    h: torch.Tensor,
    h_hat: torch.Tensor,
    temperature: float | torch.Tensor = 0.07,
    target_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss) between brain and target embeddings in a batch.

    Logits are ``cos(h_i, ĥ_j) / temperature``. Row i's positives are every j with the
    same target as i (several windows of one image or caption in a batch), so a
    duplicate is never pushed away as a negative::

        loss_i = -log( sum_{j in P(i)} exp(s_ij) / sum_j exp(s_ij) )

    averaged over rows for brain→target and over columns for target→brain, then the
    two directions are averaged. Without duplicates this is the usual CLIP loss.

    Parameters
    ----------
    h, h_hat : torch.Tensor, (B, D) float
        Brain and target embeddings (normalised inside).
    temperature : float or 0-d torch.Tensor
        τ > 0 (a tensor may be learnable, e.g. ``logit_scale.exp().reciprocal()``).
    target_ids : torch.Tensor, (B,) int, optional
        Target identity per row (e.g. image index). When ``None``, rows whose
        ``h_hat`` are exactly equal are taken as the same target.
    """
    h, h_hat = _check_pair(h, h_hat)
    if len(h) < 2:
        raise ValueError(f"h has {len(h)} row(s); InfoNCE needs a batch of at least 2")
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature has shape {tuple(temperature.shape)}; expected a scalar")
        if float(temperature.detach()) <= 0:
            raise ValueError(f"temperature={float(temperature.detach())!r} must be > 0")
        tau: float | torch.Tensor = temperature.reshape(())
    else:
        tau = check_float("temperature", temperature, positive=True)
    positives = _target_groups(h_hat, target_ids)
    logits = F.normalize(h, dim=1) @ F.normalize(h_hat.to(h.dtype), dim=1).T / tau
    return 0.5 * (_multi_positive_ce(logits, positives) + _multi_positive_ce(logits.T, positives.T))


def _multi_positive_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)
    return (log_all - log_pos).mean()


def clip_alignment_loss(
    h: torch.Tensor,
    h_hat: torch.Tensor,
    kind: Literal["mse", "infonce", "mse+infonce"] = "mse",
    temperature: float | torch.Tensor = 0.07,
    *,
    target_ids: torch.Tensor | None = None,
    infonce_weight: float = 1.0,
    text_hat: torch.Tensor | None = None,
    text_ids: torch.Tensor | None = None,
    text_weight: float = 0.0,
) -> torch.Tensor:
    """Loss aligning brain embeddings ``h`` to CLIP embeddings ``ĥ`` (sample-level extractor).

    ``"mse"``: :func:`mse_alignment`; ``"infonce"``: :func:`info_nce`;
    ``"mse+infonce"``: ``mse_alignment + infonce_weight * info_nce``.

    With ``text_weight`` ``w > 0`` the loss is mixed with the same loss against a second
    target, the CLIP text embedding of each row's caption (ATM, Li et al. 2024: image
    targets with ``w = 0.01``)::

        loss = (1 - w) * loss(h, h_hat) + w * loss(h, text_hat)

    ``w = 0`` (the default) computes exactly the loss against ``h_hat`` alone (the text
    term is not evaluated).

    Parameters
    ----------
    h, h_hat : torch.Tensor, (B, D) float
    kind : {"mse", "infonce", "mse+infonce"}
    temperature : float or torch.Tensor
        InfoNCE temperature (a 0-d tensor for a learned one, see :class:`LearnedTemperature`).
    target_ids : torch.Tensor, (B,) int, optional
        Same-target rows are positives of each other in InfoNCE (see :func:`info_nce`).
    infonce_weight : float
        Weight of the InfoNCE term in ``"mse+infonce"``.
    text_hat : torch.Tensor, (B, D) float, optional
        The second (text) target of every row; needed when ``text_weight > 0``.
    text_ids : torch.Tensor, (B,) int, optional
        Same-text rows (``target_ids`` of the text term); by identical rows when ``None``.
    text_weight : float
        ``w`` in ``[0, 1]``.
    """
    w = check_float("text_weight", text_weight, low=0.0, high=1.0)
    loss = _alignment(h, h_hat, kind, temperature, target_ids, infonce_weight)
    if w == 0.0:
        return loss
    if text_hat is None:
        raise ValueError(f"text_weight={text_weight!r} mixes in a text target, but text_hat is None; pass the "
                         "text embeddings of the rows' captions, or text_weight=0")
    return (1.0 - w) * loss + w * _alignment(h, text_hat, kind, temperature, text_ids, infonce_weight)


def _alignment(h: torch.Tensor, h_hat: torch.Tensor, kind: str, temperature: float | torch.Tensor,
               target_ids: torch.Tensor | None, infonce_weight: float) -> torch.Tensor:
    if kind == "mse":
        return mse_alignment(h, h_hat)
    if kind == "infonce":
        return info_nce(h, h_hat, temperature, target_ids)
    if kind == "mse+infonce":
        w = check_float("infonce_weight", infonce_weight, positive=True)
        return mse_alignment(h, h_hat) + w * info_nce(h, h_hat, temperature, target_ids)
    raise ValueError(f"kind={kind!r} must be 'mse', 'infonce' or 'mse+infonce'")


#: CLIP's cap on the learned logit scale: logits are never scaled by more than 100 (temperature >= 0.01).
MAX_LOGIT_SCALE = math.log(100.0)


class LearnedTemperature(nn.Module):
    """CLIP's learned temperature: a parameter ``logit_scale`` with ``τ = exp(-logit_scale)``.

    As in CLIP (Radford et al. 2021) and open_clip, ``logit_scale`` starts at ``log(1/τ₀)``
    (``τ₀ = 0.07``: ``log(1/0.07) ≈ 2.659``), is trained with the encoder, and is clamped to
    ``[0, log 100]`` (``τ`` in ``[0.01, 1]``): in the forward pass and, by :meth:`clamp_`,
    in place after every optimiser step.

    Parameters
    ----------
    initial : float
        ``τ₀`` in ``[0.01, 1]``.
    """

    def __init__(self, initial: float = 0.07) -> None:
        super().__init__()
        tau = check_float("temperature", initial, positive=True)
        if not 1.0 / math.exp(MAX_LOGIT_SCALE) - 1e-12 <= tau <= 1.0:
            raise ValueError(f"temperature={initial!r}: a learned temperature starts in [0.01, 1] (CLIP clamps "
                             "logit_scale = log(1/temperature) to [0, log 100]); pass e.g. 0.07")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / tau), dtype=torch.float32))

    def forward(self) -> torch.Tensor:
        """The temperature ``exp(-clamp(logit_scale, 0, log 100))``, a 0-d tensor with gradient."""
        return torch.exp(-self.logit_scale.clamp(0.0, MAX_LOGIT_SCALE))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp ``logit_scale`` to ``[0, log 100]`` in place (after an optimiser step, as open_clip does)."""
        self.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    @property
    def value(self) -> float:
        """The current ``logit_scale`` as a float."""
        return float(self.logit_scale.detach())

    def record(self) -> dict[str, float]:
        """JSON for checkpoints and logs: ``logit_scale``, ``temperature`` and the clamp."""
        scale = min(max(self.value, 0.0), MAX_LOGIT_SCALE)
        return {"logit_scale": scale, "temperature": math.exp(-scale), "max_logit_scale": MAX_LOGIT_SCALE}
