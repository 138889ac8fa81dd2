"""Generation: saliency GAN modules, their checkpoints, PixelImageStep, latent-diffusion img2img.

The diffusion tests build a tiny randomly initialised AutoencoderKL + UNet2DConditionModel
+ DDIMScheduler from configs (no weights, no download).
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.generation import (
    DiffusionUnavailable,
    DiscriminatorConfig,
    EmbeddingToTokens,
    GeneratorConfig,
    LatentImg2Img,
    PixelImageStep,
    ProjectorConfig,
    SaliencyDiscriminator,
    SaliencyGenerator,
    diffusion_status,
    load_discriminator,
    load_generator,
    load_pixel_step,
    load_projector,
    read_gan_checkpoint,
    save_generator,
    save_projector,
)
from bci.generation import diffusion as diffusion_module
from bci.models import CheckpointError

FEAT = 16


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one thread is several times faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(size: int = 16, noise_dim: int = 0, norm: str = "batch", seed: int = 0) -> SaliencyGenerator:
    torch.manual_seed(seed)
    return SaliencyGenerator(GeneratorConfig(feature_dim=FEAT, noise_dim=noise_dim, image_size=size,
                                             base_channels=8, max_channels=32, norm=norm))


def _disc(size: int = 16, conditioning: str = "projection", sn: bool = True, seed: int = 1) -> SaliencyDiscriminator:
    torch.manual_seed(seed)
    return SaliencyDiscriminator(DiscriminatorConfig(feature_dim=FEAT, image_size=size, base_channels=8,
                                                     max_channels=32, conditioning=conditioning, spectral_norm=sn))


# ---------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [8, 32, 64, 128])
def test_generator_and_discriminator_shapes(size: int) -> None:
    gen = _gen(size, noise_dim=4)
    f = torch.randn(3, FEAT)
    with torch.no_grad():
        x = gen(f, gen.sample_noise(3, torch.Generator().manual_seed(0)))
    assert x.shape == (3, 3, size, size)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    for conditioning in ("projection", "concat"):
        with torch.no_grad():
            logits = _disc(size, conditioning)(x, f)
        assert logits.shape == (3,) and torch.isfinite(logits).all()


def test_group_norm_and_no_norm_generators_run() -> None:
    for norm in ("group", "none"):
        assert _gen(16, norm=norm)(torch.randn(2, FEAT)).shape == (2, 3, 16, 16)


def test_config_validation_and_dict_round_trip() -> None:
    cfg = GeneratorConfig(feature_dim=64, noise_dim=8, image_size=32, norm="group")
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    dcfg = DiscriminatorConfig(feature_dim=64, image_size=32, conditioning="concat", spectral_norm=False)
    assert DiscriminatorConfig.from_dict(json.loads(json.dumps(dcfg.to_dict()))) == dcfg
    assert _gen(16).get_config().image_size == 16
    assert SaliencyGenerator.from_config(cfg).get_config() == cfg
    with pytest.raises(ValueError, match="image_size=48 must be a power of two"):
        GeneratorConfig(image_size=48)
    with pytest.raises(ValueError, match="norm='layer' must be one of"):
        GeneratorConfig(norm="layer")
    with pytest.raises(ValueError, match="noise_dim=-1"):
        GeneratorConfig(noise_dim=-1)
    with pytest.raises(ValueError, match="has no fields \\['colour'\\]"):
        GeneratorConfig.from_dict({"feature_dim": 8, "colour": 1})
    with pytest.raises(ValueError, match="conditioning='add' must be one of"):
        DiscriminatorConfig(conditioning="add")


def test_generator_input_checks_name_the_shapes() -> None:
    gen = _gen(16, noise_dim=4)
    with pytest.raises(ValueError, match=f"\\(batch, {FEAT}\\), got \\(2, 7\\)"):
        gen(torch.randn(2, 7), gen.sample_noise(2))
    with pytest.raises(ValueError, match="noise_dim=4: pass noise"):
        gen(torch.randn(2, FEAT))
    with pytest.raises(ValueError, match="images of shape \\(batch, 3, 16, 16\\)"):
        _disc(16)(torch.randn(2, 3, 8, 8), torch.randn(2, FEAT))


def test_generator_learns_a_fixed_target() -> None:
    """A few gradient steps on an MSE to fixed images reduce the loss: gradients reach every layer.

    Plain SGD written out: torch.optim's first step imports torch._dynamo (seconds on a busy CPU).
    """
    gen = _gen(16, noise_dim=2).train()
    g = torch.Generator().manual_seed(3)
    f = torch.randn(8, FEAT, generator=g)
    z = torch.randn(8, 2, generator=g)
    target = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1
    losses = []
    for _ in range(30):
        gen.zero_grad()
        loss = torch.nn.functional.mse_loss(gen(f, z), target)
        loss.backward()
        losses.append(float(loss.detach()))
        if len(losses) == 1:
            assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in gen.parameters())
        with torch.no_grad():
            for p in gen.parameters():
                p -= 0.3 * p.grad
    assert losses[-1] < 0.8 * losses[0], losses[::5]


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_discriminator_depends_on_condition_and_trains(conditioning: str) -> None:
    disc = _disc(16, conditioning).train()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    f = torch.randn(4, FEAT)
    assert not torch.allclose(disc(x, f), disc(x, -f))
    loss = torch.nn.functional.softplus(-disc(x, f)).mean()
    loss.backward()
    assert all(p.grad is not None for p in disc.parameters())


# ---------------------------------------------------------------------- checkpoints
def _trained_pair() -> tuple[SaliencyGenerator, SaliencyDiscriminator]:
    gen, disc = _gen(16, noise_dim=2), _disc(16)
    gen.train()
    gen(torch.randn(4, FEAT), gen.sample_noise(4))  # moves the BatchNorm running statistics off their defaults
    disc(torch.rand(4, 3, 16, 16), torch.randn(4, FEAT))  # one spectral-norm power iteration
    return gen.eval(), disc.eval()


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    gen, disc = _trained_pair()
    meta = {"encoder": {"checkpoint": "runs/eeg", "embed_dim": FEAT}, "metrics": {"ssim": 0.41}}
    out = save_generator(gen, tmp_path / "gan", discriminator=disc, metadata=meta)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "discriminator.safetensors",
                                                      "generator.safetensors"]
    info = read_gan_checkpoint(out)
    assert info.generator == gen.get_config() and info.discriminator == disc.get_config()
    assert info.metadata == meta
    f, z = torch.randn(3, FEAT), torch.randn(3, 2)
    gen2, disc2 = load_generator(out), load_discriminator(out)
    assert not gen2.training
    with torch.no_grad():
        assert torch.equal(gen(f, z), gen2(f, z))
        x = gen(f, z)
        assert torch.equal(disc(x, f), disc2(x, f))


def test_checkpoint_overwrite_rules(tmp_path: Path) -> None:
    gen, disc = _trained_pair()
    save_generator(gen, tmp_path, discriminator=disc)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_generator(gen, tmp_path)
    save_generator(gen, tmp_path, overwrite=True)  # generator only: the old discriminator must go
    assert not (tmp_path / "discriminator.safetensors").exists()
    with pytest.raises(CheckpointError, match="holds no discriminator"):
        load_discriminator(tmp_path)
    with pytest.raises(TypeError, match="metadata must hold plain JSON"):
        save_generator(gen, tmp_path / "x", metadata={"bad": object()})


def test_pickles_are_refused(tmp_path: Path) -> None:
    gen, _ = _trained_pair()
    ckpt = save_generator(gen, tmp_path / "gan")
    torch.save(gen.state_dict(), ckpt / "generator.safetensors")  # a torch zip archive under the right name
    with pytest.raises(CheckpointError, match="refusing to load pickle-based file .*generator.safetensors"):
        load_generator(ckpt)
    pt_only = tmp_path / "pt"
    pt_only.mkdir()
    torch.save(gen.state_dict(), pt_only / "generator.pt")
    with pytest.raises(CheckpointError, match="refusing to load pickle-based file .*generator.pt"):
        load_generator(pt_only)
    with pytest.raises(CheckpointError, match="refusing"):
        load_generator(pt_only / "generator.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "nowhere")


def test_safetensors_header_that_starts_like_a_pickle_is_accepted(tmp_path: Path) -> None:
    """A header length of 640 (0x0280) begins with the bytes 0x80 0x02, a pickle protocol-2 opcode."""
    from safetensors.torch import save_file

    from bci.safe_io import CheckpointKind, load_state

    kind = CheckpointKind(what="file", hint="hint")

    path = tmp_path / "w.safetensors"
    for pad in range(600):
        save_file({"w": torch.arange(3.0)}, str(path), metadata={"format": "pt", "pad": "a" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert torch.equal(load_state(path, kind)["w"], torch.arange(3.0))
    path.write_bytes(b"not a weights file at all")
    with pytest.raises(CheckpointError, match="not a safetensors file \\(bad header\\)"):
        load_state(path, kind)


def test_mismatching_weights_name_the_tensor(tmp_path: Path) -> None:
    ckpt = save_generator(_gen(16), tmp_path / "gan")
    config = json.loads((ckpt / "config.json").read_text())
    config["generator"]["feature_dim"] = FEAT + 4
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"tensor 'fc.weight' has shape \(512, 16\) in the file but the "
                                              r"architecture needs \(512, 20\)"):
        load_generator(ckpt)
    config["generator"]["feature_dim"] = FEAT
    config["kind"] = "encoder"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="kind 'encoder', expected 'saliency_gan'"):
        load_generator(ckpt)


# ---------------------------------------------------------------------- runtime step
def test_pixel_image_step_output_and_determinism() -> None:
    gen, _ = _trained_pair()
    step = PixelImageStep(gen, seed=7)
    rng = np.random.default_rng(0)
    f = rng.standard_normal((5, FEAT)).astype(np.float32)
    out = step(f)
    assert out.dtype == np.uint8 and out.shape == (5, 16, 16, 3)
    assert out.max() > out.min()
    np.testing.assert_array_equal(out, step(f))  # same call, same images
    np.testing.assert_array_equal(out, step(torch.from_numpy(f)))
    # an image depends only on its features, not on its batch
    assert np.abs(out[3:4].astype(int) - step(f[3:4]).astype(int)).max() <= 1
    other_seed = PixelImageStep(gen, seed=8)(f)
    zero_noise = PixelImageStep(gen, seed=None)(f)
    assert not np.array_equal(out, other_seed) and not np.array_equal(out, zero_noise)
    with torch.no_grad():
        expected = gen(torch.from_numpy(f), torch.zeros(5, 2))
    ref = ((expected + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(zero_noise, ref)


def test_load_pixel_step_checks_the_encoder_dim(tmp_path: Path) -> None:
    gen, _ = _trained_pair()
    ckpt = save_generator(gen, tmp_path / "gan")
    f = np.random.default_rng(2).standard_normal((2, FEAT)).astype(np.float32)
    np.testing.assert_array_equal(load_pixel_step(ckpt, seed=5, feature_dim=FEAT)(f), PixelImageStep(gen, seed=5)(f))
    with pytest.raises(ValueError, match="takes features of dim 16 but the pixel-level encoder gives embeddings of "
                                         "dim 512"):
        load_pixel_step(ckpt, feature_dim=512)


def test_pixel_image_step_checks_features() -> None:
    step = PixelImageStep(_gen(16))
    with pytest.raises(ValueError, match=r"feature dim 12\).*expects \(batch, 16\) \(feature dim 16\)"):
        step(np.zeros((2, 12), np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        step(np.full((1, FEAT), np.nan, np.float32))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        step([[0.0] * FEAT])


# ---------------------------------------------------------------------- diffusion
def _tiny_parts(seed: int = 0) -> tuple:
    diffusers = pytest.importorskip("diffusers")  # the optional extra; in the dev extra, so present in CI
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=4,
        layers_per_block=1, norm_num_groups=32, sample_size=16,
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
    projector = EmbeddingToTokens(FEAT, seq_len=4, token_dim=32)
    return vae, unet, scheduler, projector


@pytest.fixture(scope="module")
def img2img() -> LatentImg2Img:
    return LatentImg2Img.from_components(*_tiny_parts())


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)  # resized to the VAE's 16 x 16
    return images, rng.standard_normal((2, FEAT)).astype(np.float32)


def test_projector_shapes_and_round_trip(tmp_path: Path) -> None:
    for mode in ("linear", "shared"):
        proj = EmbeddingToTokens(FEAT, seq_len=5, token_dim=32, mode=mode)
        e = torch.randn(3, FEAT)
        tokens = proj(e)
        assert tokens.shape == (3, 5, 32)
        save_projector(proj, tmp_path / mode, metadata={"encoder": "sample-level"})
        again = load_projector(tmp_path / mode)
        assert again.get_config() == ProjectorConfig(embed_dim=FEAT, seq_len=5, token_dim=32, mode=mode)
        with torch.no_grad():
            assert torch.equal(proj.eval()(e), again(e))
    with pytest.raises(ValueError, match=f"\\(batch, {FEAT}\\), got \\(3, 8\\)"):
        proj(torch.randn(3, 8))


def test_img2img_output_and_determinism(img2img: LatentImg2Img, inputs: tuple) -> None:
    images, emb = inputs
    out = img2img(images, emb, strength=0.6, steps=5, seed=0)
    assert out.dtype == np.uint8 and out.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(out, img2img(images, emb, strength=0.6, steps=5, seed=0))
    assert not np.array_equal(out, img2img(images, emb, strength=0.6, steps=5, seed=1))
    assert not np.array_equal(out, img2img(images, emb, strength=0.9, steps=5, seed=0))
    floats = img2img(images.astype(np.float32) / 255.0, emb, strength=0.6, steps=5, seed=0)
    assert np.abs(floats.astype(int) - out.astype(int)).max() <= 1


def test_embedding_conditions_the_output(img2img: LatentImg2Img, inputs: tuple) -> None:
    images, emb = inputs
    a = img2img(images, emb, strength=0.8, steps=5, seed=0)
    b = img2img(images, -emb, strength=0.8, steps=5, seed=0)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5
    guided = img2img(images, emb, strength=0.8, steps=5, seed=0, guidance_scale=3.0)
    assert guided.shape == a.shape and not np.array_equal(guided, a)


def test_strength_zero_is_the_vae_round_trip(img2img: LatentImg2Img, inputs: tuple) -> None:
    images, emb = inputs
    out = img2img(images, emb, strength=0.0, steps=5, seed=0)
    x = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255.0
    x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        vae = img2img.vae
        z = vae.encode(x * 2 - 1).latent_dist.mean
        rec = vae.decode(z).sample.clamp(-1, 1)
    ref = ((rec + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_img2img_input_checks(img2img: LatentImg2Img, inputs: tuple) -> None:
    images, emb = inputs
    with pytest.raises(ValueError, match=r"dim 9\) but the projector expects \(batch, 16\) \(dim 16\)"):
        img2img(images, np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match="2 images but 1 embeddings"):
        img2img(images, emb[:1])
    with pytest.raises(ValueError, match="float images must be in \\[0, 1\\]"):
        img2img(images.astype(np.float32), emb)
    with pytest.raises(ValueError, match="strength=1.5"):
        img2img(images, emb, strength=1.5)
    with pytest.raises(ValueError, match="guidance_scale=0.5"):
        img2img(images, emb, guidance_scale=0.5)
    vae, unet, scheduler, _ = _tiny_parts()
    with pytest.raises(ValueError, match="token_dim=48 does not match the UNet's cross_attention_dim=32"):
        LatentImg2Img(vae, unet, scheduler, EmbeddingToTokens(FEAT, 4, 48))
    with pytest.raises(ValueError, match="multiple of the VAE's downsampling factor 2"):
        LatentImg2Img(vae, unet, scheduler, EmbeddingToTokens(FEAT, 4, 32), image_size=15)


def test_save_and_load_a_diffusers_layout_directory(img2img: LatentImg2Img, inputs: tuple, tmp_path: Path) -> None:
    images, emb = inputs
    path = img2img.save_pretrained(tmp_path / "ldm", metadata={"encoder": "clip-space"})
    for sub, name in [("vae", "diffusion_pytorch_model.safetensors"), ("unet", "diffusion_pytorch_model.safetensors"),
                      ("scheduler", "scheduler_config.json"), ("projector", "projector.safetensors")]:
        assert (path / sub / name).is_file()
    assert diffusion_status(path) is None
    loaded = LatentImg2Img.from_pretrained_dir(path)
    assert loaded.image_size == 16 and loaded.embed_dim == FEAT
    np.testing.assert_array_equal(loaded(images, emb, steps=5, seed=3), img2img(images, emb, steps=5, seed=3))
    pndm = LatentImg2Img.from_pretrained_dir(path, scheduler="pndm")  # SD 1.x's own scheduler
    assert type(pndm.scheduler).__name__ == "PNDMScheduler"
    out = pndm(images, emb, steps=4, seed=0)
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(out, pndm(images, emb, steps=4, seed=0))
    with pytest.raises(FileExistsError, match="already holds vae, unet, scheduler, projector"):
        img2img.save_pretrained(path)


def test_sigma_scheduler_with_begin_index(img2img: LatentImg2Img, inputs: tuple, tmp_path: Path) -> None:
    """Euler: scale_model_input and set_begin_index matter; the same seed gives the same images."""
    images, emb = inputs
    path = img2img.save_pretrained(tmp_path / "ldm")
    euler = LatentImg2Img.from_pretrained_dir(path, scheduler="euler")
    with warnings.catch_warnings():
        # diffusers' EulerDiscreteScheduler.set_timesteps calls np.array on a torch tensor, which
        # numpy 2 flags as deprecated; third-party, harmless here
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        out = euler(images, emb, strength=0.5, steps=4, seed=0)
        again = euler(images, emb, strength=0.5, steps=4, seed=0)
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(out, again)
    assert np.abs(out.astype(int) - 128).mean() < 127  # not saturated: the sigma scaling was applied


def test_missing_or_unsafe_weights_are_clear_errors(img2img: LatentImg2Img, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; expected a diffusers-layout directory: vae/"):
        LatentImg2Img.from_pretrained_dir(tmp_path / "nowhere")
    assert "does not exist" in diffusion_status(tmp_path / "nowhere")
    path = img2img.save_pretrained(tmp_path / "ldm")
    (path / "unet" / "config.json").rename(path / "unet" / "config.old")
    with pytest.raises(FileNotFoundError, match="has no unet/config.json"):
        LatentImg2Img.from_pretrained_dir(path)
    (path / "unet" / "config.old").rename(path / "unet" / "config.json")
    weights = path / "vae" / "diffusion_pytorch_model.safetensors"
    torch.save(img2img.vae.state_dict(), path / "vae" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(CheckpointError, match="refusing to load pickle-based file .*diffusion_pytorch_model.bin"):
        LatentImg2Img.from_pretrained_dir(path)
    with pytest.raises(ValueError, match="scheduler='fast' must be one of"):
        LatentImg2Img.from_pretrained_dir(path, scheduler="fast")


def test_missing_diffusers_is_reported_once_not_crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # what `import diffusers` sees when it is not installed
    monkeypatch.setattr(diffusion_module, "_diffusers_module", None)
    reason = diffusion_status()
    assert reason is not None and "\n" not in reason and "pip install 'bci-runtime[diffusion]'" in reason
    with pytest.raises(DiffusionUnavailable, match="needs diffusers") as err:
        LatentImg2Img(None, None, None, EmbeddingToTokens(FEAT, 4, 32))
    assert isinstance(err.value, ValueError) and isinstance(err.value, ImportError)


def test_importing_generation_does_not_import_diffusers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime imports bci.generation for the GAN; diffusers (seconds to import) waits until it is used.

    A fresh import in this process (the previous modules are put back afterwards).
    """
    import bci

    for name in [n for n in sys.modules if n.split(".")[0] == "diffusers" or n.startswith("bci.generation")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(bci, "generation")
    fresh = importlib.import_module("bci.generation")
    assert fresh.SaliencyGenerator is not SaliencyGenerator  # really imported again
    assert "diffusers" not in sys.modules, "bci.generation imported diffusers eagerly"
