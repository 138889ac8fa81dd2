"""Losses: semi-hard triplet mining, SSIM, DiffAugment, GAN losses, CLIP alignment (offline/training/losses.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from offline.training.losses import (
    clip_alignment_loss,
    diff_augment,
    discriminator_loss,
    generator_loss,
    info_nce,
    mse_alignment,
    pairwise_distances,
    ssim,
    ssim_loss,
    triplet_semihard_loss,
)
from streams.synthetic import make_stimuli

torch.set_num_threads(1)


# ============================================================================ triplet
def _line_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """1-D points: anchor 0 and positive 1 (label 0); negatives at 1.5, 1.2 (semi-hard for a=0), 0.5 (hard)."""
    x = torch.tensor([[0.0], [1.0], [1.5], [1.2], [0.5]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 2, 3])
    return x, y


def test_semihard_mining_picks_the_closest_semihard_negative_and_falls_back_to_the_hardest() -> None:
    x, y = _line_batch()
    loss, stats = triplet_semihard_loss(x, y, margin=1.0)
    # (a=0, p=1): d_ap = 1; semi-hard negatives 1.5 and 1.2 -> the closer, 1.2: loss 1 - 1.2 + 1 = 0.8
    # (a=1, p=0): d_ap = 1; every negative is closer (0.5, 0.2, 0.5): none semi-hard -> hardest, 0.2: 1.8
    assert loss.item() == pytest.approx((0.8 + 1.8) / 2)
    assert stats.n_triplets == 2
    assert stats.fraction_semihard == 0.5 and stats.fraction_fallback == 0.5 and stats.fraction_active == 1.0
    assert stats.mean_positive_distance == pytest.approx(1.0)
    assert stats.mean_negative_distance == pytest.approx((1.2 + 0.2) / 2)
    loss.backward()
    grad = x.grad[:, 0]
    assert grad[3] != 0  # the chosen negative (1.2) gets gradient ...
    assert grad[2] == 0 and grad[4] == 0  # ... the others none


def test_easiest_fallback_takes_the_farthest_negative() -> None:
    x, y = _line_batch()
    loss, stats = triplet_semihard_loss(x, y, margin=1.0, fallback="easiest")
    # (a=1, p=0): farthest negative at distance 0.5 -> 1 - 0.5 + 1 = 1.5
    assert loss.item() == pytest.approx((0.8 + 1.5) / 2)
    assert stats.fraction_fallback == 0.5


def test_squared_distances() -> None:
    x, y = _line_batch()
    loss, _ = triplet_semihard_loss(x, y, margin=1.0, squared=True)
    # (a=0, p=1): d_ap = 1; negatives 2.25, 1.44, 0.25: semi-hard (1, 2) -> 1.44: 0.56
    # (a=1, p=0): negatives 0.25, 0.04, 0.25 all < 1 -> hardest 0.04: 1.96
    assert loss.item() == pytest.approx((0.56 + 1.96) / 2)


def test_triplet_loss_is_zero_when_classes_are_separated_beyond_the_margin() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = torch.arange(3).repeat_interleave(4)
    x = (centres[y] + 0.1 * torch.randn(12, 2, generator=g)).requires_grad_(True)
    loss, stats = triplet_semihard_loss(x, y, margin=0.5)
    assert loss.item() == 0.0
    assert stats.fraction_active == 0.0 and stats.n_triplets == 12 * 3
    loss.backward()
    assert torch.all(x.grad == 0)


def test_triplet_batch_without_triplets_gives_a_zero_loss_attached_to_the_graph() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    for labels in (torch.zeros(4, dtype=torch.long), torch.arange(4)):
        loss, stats = triplet_semihard_loss(x, labels)
        assert loss.item() == 0.0 and stats.n_triplets == 0 and math.isnan(stats.mean_positive_distance)
        loss.backward()


def _descend(param: torch.Tensor, loss_fn, steps: int, lr: float) -> None:
    """Plain gradient descent (torch.optim's first step imports torch._dynamo: seconds on a busy machine)."""
    for _ in range(steps):
        loss = loss_fn()
        param.grad = None
        loss.backward()
        with torch.no_grad():
            param -= lr * param.grad


def test_triplet_training_separates_classes() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 8, generator=g, requires_grad=True)
    y = torch.arange(4).repeat(6)
    first, _ = triplet_semihard_loss(F.normalize(x, dim=1), y, margin=0.2)
    _descend(x, lambda: triplet_semihard_loss(F.normalize(x, dim=1), y, margin=0.2)[0], 150, 3.0)
    final, stats = triplet_semihard_loss(F.normalize(x, dim=1), y, margin=0.2)
    assert first.item() > 0.1 and final.item() < 0.02 * first.item()
    assert stats.fraction_active < 0.1 and stats.mean_negative_distance > stats.mean_positive_distance + 0.2


def test_pairwise_distances_match_cdist_and_have_finite_gradients_at_zero() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    d = pairwise_distances(x)
    assert torch.allclose(d, torch.cdist(x, x), atol=1e-6)
    d.sum().backward()
    assert torch.all(torch.isfinite(x.grad))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"embeddings": np.zeros((4, 2)), "labels": torch.zeros(4, dtype=torch.long)}, TypeError, "torch.Tensor"),
        ({"embeddings": torch.zeros(4, 2, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)},
         TypeError, "floating"),
        ({"embeddings": torch.zeros(4), "labels": torch.zeros(4, dtype=torch.long)}, ValueError, "2-D"),
        ({"embeddings": torch.zeros(4, 2), "labels": torch.zeros(3, dtype=torch.long)}, ValueError, r"\(4,\)"),
        ({"embeddings": torch.zeros(4, 2), "labels": torch.zeros(4)}, TypeError, "integer"),
        ({"embeddings": torch.zeros(4, 2), "labels": torch.zeros(4, dtype=torch.long), "margin": -1.0},
         ValueError, "margin"),
        ({"embeddings": torch.zeros(4, 2), "labels": torch.zeros(4, dtype=torch.long), "fallback": "random"},
         ValueError, "fallback"),
    ],
)
def test_triplet_input_validation(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        triplet_semihard_loss(**kwargs)


# ============================================================================ SSIM
def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """scikit-image's algorithm (gaussian_weights=True, sigma=1.5, use_sample_covariance=False), per channel.

    ``x, y``: (H, W, C) float64.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = 5  # (win_size - 1) // 2 with win_size = 2 * int(3.5 * 1.5 + 0.5) + 1 = 11
    values = []
    for ch in range(x.shape[-1]):
        a, b = x[..., ch], y[..., ch]

        def filt(z: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(z, sigma=1.5, truncate=3.5)

        ux, uy = filt(a), filt(b)
        vx, vy, vxy = filt(a * a) - ux * ux, filt(b * b) - uy * uy, filt(a * b) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        values.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(values))


def _to_torch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def test_ssim_matches_a_numpy_reference_on_stimulus_images() -> None:
    stim = make_stimuli(n_per_class=1, seed=0)
    rng = np.random.default_rng(0)
    real = stim.images[:6].astype(np.float64) / 255.0
    noisy = np.clip(real + rng.normal(0, 0.1, real.shape), 0, 1)
    other = stim.images[6:12].astype(np.float64) / 255.0
    for gen in (noisy, other):
        got = ssim(_to_torch(gen), _to_torch(real), data_range=1.0, reduction="none").numpy()
        want = [_ssim_reference(g, r, 1.0) for g, r in zip(gen, real)]
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert ssim(_to_torch(noisy), _to_torch(real)).item() == pytest.approx(np.mean(
        [_ssim_reference(g, r, 1.0) for g, r in zip(noisy, real)]), abs=1e-6)


def test_ssim_invariants() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, y).item() == pytest.approx(ssim(y, x).item(), abs=1e-12)
    values = [ssim(x, (x + s * torch.randn(x.shape, generator=g, dtype=torch.float64))).item()
              for s in (0.01, 0.05, 0.2, 0.5)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert ssim(x, y).item() < 0.1  # independent noise images


def test_ssim_of_constant_images_is_the_luminance_term() -> None:
    x = torch.full((1, 1, 16, 16), 0.2, dtype=torch.float64)
    y = torch.full((1, 1, 16, 16), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    assert ssim(x, y).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))


def test_ssim_data_range_scales_consistently() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 20, 20, generator=g, dtype=torch.float64)
    y = torch.rand(2, 3, 20, 20, generator=g, dtype=torch.float64)
    assert ssim(255 * x, 255 * y, data_range=255.0).item() == pytest.approx(ssim(x, y).item(), abs=1e-12)
    assert ssim(x, x + 0.3).item() < 0.95  # a brightness change alone lowers SSIM (luminance term)


def test_ssim_loss_is_differentiable_and_descends() -> None:
    x = torch.rand(1, 1, 11, 12, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 11, 12, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: ssim_loss(a, y), (x,))
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 16, 16, generator=g, requires_grad=True)
    b = torch.rand(2, 3, 16, 16, generator=g)
    before = ssim_loss(a, b).item()
    _descend(a, lambda: ssim_loss(a, b), 30, 5.0)
    assert ssim_loss(a, b).item() < 0.5 * before


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        (torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), {}, ValueError, "smaller than the SSIM window"),
        (torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 17), {}, ValueError, "must match"),
        (torch.zeros(1, 16, 16), torch.zeros(1, 16, 16), {}, ValueError, "4-D"),
        (torch.zeros(1, 1, 16, 16, dtype=torch.uint8), torch.zeros(1, 1, 16, 16), {}, TypeError, "floating"),
        (torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16, dtype=torch.float64), {}, TypeError, "same float"),
        (torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), {"window": 10}, ValueError, "odd"),
        (torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), {"data_range": 0}, ValueError, "data_range"),
    ],
)
def test_ssim_input_validation(x: torch.Tensor, y: torch.Tensor, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ssim(x, y, **kwargs)


# ============================================================================ DiffAugment
def test_diff_augment_is_seeded() -> None:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = diff_augment(x, generator=torch.Generator().manual_seed(7))
    b = diff_augment(x, generator=torch.Generator().manual_seed(7))
    c = diff_augment(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_diff_augment_is_differentiable() -> None:
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        assert torch.autograd.gradcheck(
            lambda a, p=policy: diff_augment(a, p, torch.Generator().manual_seed(1)), (x,)
        )


def test_translation_shifts_each_image_with_zero_fill() -> None:
    x = torch.rand(6, 2, 16, 16, generator=torch.Generator().manual_seed(0)) + 1.0  # no zeros inside
    out = diff_augment(x, "translation", torch.Generator().manual_seed(3))
    shifts = set()
    for img, res in zip(x, out):
        found = None
        for dx in range(-2, 3):  # 16 * 0.125 = 2 pixels
            for dy in range(-2, 3):
                padded = F.pad(img, [2, 2, 2, 2])
                cand = padded[:, 2 - dx:2 - dx + 16, 2 - dy:2 - dy + 16]
                if torch.equal(cand, res):
                    found = (dx, dy)
        assert found is not None
        shifts.add(found)
    assert len(shifts) > 1


def test_cutout_zeroes_one_square_and_keeps_the_rest() -> None:
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) + 1.0
    out = diff_augment(x, "cutout", torch.Generator().manual_seed(4))
    zero = out == 0
    assert torch.all(zero.all(dim=1) == zero.any(dim=1))  # all channels cut together
    assert torch.equal(out[~zero], x[~zero])
    frac = zero[:, 0].float().mean(dim=(1, 2))
    assert torch.all(frac > 0) and torch.all(frac <= 0.25)


def test_diff_augment_validation_and_identity() -> None:
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(diff_augment(x, ""), x)
    with pytest.raises(ValueError, match="unknown op"):
        diff_augment(x, "color,flip")
    with pytest.raises(TypeError, match="Generator"):
        diff_augment(x, "color", generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="4-D"):
        diff_augment(x[0])


# ============================================================================ GAN
def test_gan_losses_on_hand_computed_logits() -> None:
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.0])
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(0.25 + 0.5)
    assert generator_loss(fake, "hinge").item() == pytest.approx(1.0)
    ns_d = F.binary_cross_entropy_with_logits(real, torch.ones(2)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros(2))
    assert discriminator_loss(real, fake, "non-saturating").item() == pytest.approx(ns_d.item())
    ns_g = F.binary_cross_entropy_with_logits(fake, torch.ones(2))
    assert generator_loss(fake, "non-saturating").item() == pytest.approx(ns_g.item())
    with pytest.raises(ValueError, match="hinge"):
        generator_loss(fake, "wasserstein")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.Tensor"):
        discriminator_loss([1.0], fake)  # type: ignore[arg-type]


# ============================================================================ CLIP alignment
def test_mse_alignment_is_the_mean_squared_distance() -> None:
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert mse_alignment(h, t).item() == pytest.approx((1.0 + 4.0) / 2)
    assert clip_alignment_loss(h, t, "mse").item() == pytest.approx(2.5)


def test_infonce_without_duplicates_is_the_clip_loss() -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 8, generator=g)
    t = torch.randn(6, 8, generator=g)
    logits = F.normalize(h, dim=1) @ F.normalize(t, dim=1).T / 0.1
    want = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6)))
    assert info_nce(h, t, 0.1).item() == pytest.approx(want.item(), rel=1e-6)
    both = clip_alignment_loss(h, t, "mse+infonce", 0.1, infonce_weight=0.5)
    assert both.item() == pytest.approx(mse_alignment(h, t).item() + 0.5 * want.item(), rel=1e-6)


def test_infonce_treats_duplicate_targets_as_positives() -> None:
    g = torch.Generator().manual_seed(1)
    targets = F.normalize(torch.randn(3, 16, generator=g), dim=1)
    ids = torch.tensor([0, 0, 1, 2, 2])  # two windows of image 0, two of image 2
    t = targets[ids]
    h = t.clone()  # a perfect predictor
    loss = info_nce(h, t, 0.01)
    assert loss.item() < 1e-3
    naive_logits = F.normalize(h, dim=1) @ F.normalize(t, dim=1).T / 0.01
    naive = F.cross_entropy(naive_logits, torch.arange(5))
    assert naive.item() > 0.3  # the naive loss would push the duplicates apart
    # explicit ids and ids inferred from identical rows agree
    noisy = h + 0.3 * torch.randn(h.shape, generator=g)
    assert info_nce(noisy, t, 0.1, target_ids=ids).item() == pytest.approx(info_nce(noisy, t, 0.1).item())
    # distinct ids make duplicates negatives again: the loss rises
    assert info_nce(noisy, t, 0.1, target_ids=torch.arange(5)).item() > info_nce(noisy, t, 0.1).item()


def test_infonce_learnable_temperature_gets_a_gradient() -> None:
    g = torch.Generator().manual_seed(2)
    h = torch.randn(4, 8, generator=g, requires_grad=True)
    t = torch.randn(4, 8, generator=g)
    log_tau = torch.tensor(math.log(0.07), requires_grad=True)
    loss = clip_alignment_loss(h, t, "infonce", log_tau.exp())
    loss.backward()
    assert log_tau.grad is not None and log_tau.grad != 0 and h.grad is not None


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.zeros(4, 8), torch.zeros(4, 7)), {}, ValueError, "must match"),
        ((torch.zeros(4, 8), torch.zeros(4, 8, dtype=torch.long)), {}, TypeError, "floating"),
        ((torch.zeros(4, 8), torch.zeros(4, 8)), {"kind": "cosine"}, ValueError, "kind"),
        ((torch.zeros(4, 8), torch.zeros(4, 8)), {"kind": "infonce", "temperature": 0.0}, ValueError, "temperature"),
        ((torch.zeros(1, 8), torch.zeros(1, 8)), {"kind": "infonce"}, ValueError, "at least 2"),
        ((torch.zeros(4, 8), torch.zeros(4, 8)), {"kind": "infonce", "target_ids": torch.zeros(3, dtype=torch.long)},
         ValueError, r"\(4,\)"),
        ((torch.zeros(4, 8), torch.zeros(4, 8)), {"kind": "infonce", "target_ids": torch.zeros(4)},
         TypeError, "integer"),
    ],
)
def test_clip_alignment_validation(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        clip_alignment_loss(*args, **kwargs)
