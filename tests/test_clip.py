"""CLIP wrapper (bci.clip) and tiny-CLIP training (offline.training.tasks.clip), on real models and files.

One short real training run (32 px, 40 steps, one thread) is shared by the module;
the full default training is run by hand and reported in docs/clip.md.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from bci.clip import (
    ClipEmbedder,
    ClipError,
    OfflineError,
    build_clip_model,
    default_preprocess,
    load_clip,
    read_clip_dir_config,
    tiny_config,
)
from bci.clip.cache import text_key
from offline.training.tasks import clip as train_clip
from offline.training.tasks.clip import EVAL_SEED, TinyClipSettings, train_tiny_clip, zero_shot_accuracy
from streams.synthetic.stimuli import make_stimuli

SHORT = dict(steps=40, batch_size=48, image_size=32, lr=3e-3, n_train_sets=1, threads=1, progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny CLIP really trained for 40 steps on 32-px synthetic images (a few seconds)."""
    out = tmp_path_factory.mktemp("clip") / "tiny"
    return out, train_tiny_clip(out, **SHORT)


@pytest.fixture(scope="module")
def held_out() -> object:
    return make_stimuli(n_per_class=10, size=32, seed=EVAL_SEED)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _random_tiny(seed: int, image_size: int = 64) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    cfg = tiny_config(image_size=image_size)
    return build_clip_model(cfg, "tiny").eval(), cfg


# ---------------------------------------------------------------------- architecture
def test_tiny_architecture_is_small_and_validated() -> None:
    model, cfg = _random_tiny(0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 2_000_000 <= n_params <= 6_000_000
    assert cfg["embed_dim"] == 128 and cfg["text_cfg"]["context_length"] == 16
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_config(image_size=48)
    with pytest.raises(TypeError, match="image_size"):
        tiny_config(image_size=64.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- training
def test_short_training_learns_well_above_chance(trained: tuple[Path, dict], held_out: object) -> None:
    out, metrics = trained
    assert metrics["reused"] is False
    assert metrics["loss_end"] < metrics["loss_start"] - 1.0
    assert metrics["chance_top1"] == pytest.approx(1 / 40) and metrics["chance_top5"] == pytest.approx(5 / 40)
    assert metrics["n_eval_images"] == 400 and metrics["n_classes"] == 40
    # an untrained model of the same architecture sits at chance on the same held-out images
    untrained_model, cfg = _random_tiny(1, image_size=32)
    untrained = zero_shot_accuracy(ClipEmbedder(untrained_model, name="tiny", model_cfg=cfg), held_out)
    assert untrained["top1"] < 0.06
    assert metrics["zero_shot_top1"] >= 0.06 and metrics["zero_shot_top1"] > untrained["top1"] + 0.03
    assert metrics["zero_shot_top5"] >= 0.30
    # the saved config records architecture, settings, data provenance and metrics with chance
    config = read_clip_dir_config(out)
    assert config["name"] == "tiny" and config["model_cfg"] == tiny_config(image_size=32)
    assert config["training"]["steps"] == 40 and config["data"]["synthetic"] is True
    assert EVAL_SEED not in config["data"]["train_seeds"]
    assert config["metrics"]["zero_shot_top1"] == metrics["zero_shot_top1"]
    assert config["metrics"]["chance_top1"] == pytest.approx(1 / 40)
    # the reported accuracy is what a fresh load of the saved model gives
    again = zero_shot_accuracy(load_clip("tiny", weights=out), held_out)
    assert again["top1"] == pytest.approx(metrics["zero_shot_top1"])


def test_same_settings_reuse_the_model_and_other_settings_are_refused(
    trained: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    out, metrics = trained
    before = (out / "model.safetensors").stat().st_mtime_ns
    reused = train_tiny_clip(out, **{**SHORT, "progress": True})
    assert reused["reused"] is True and reused["fingerprint"] == metrics["fingerprint"]
    assert "reusing" in capsys.readouterr().err
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="--force"):
        train_tiny_clip(out, **{**SHORT, "steps": 41})


def test_training_is_deterministic() -> None:
    settings = TinyClipSettings(steps=3, batch_size=16, image_size=32, n_train_sets=1)
    cfg, pre = tiny_config(image_size=32), default_preprocess(32)
    rng_before = torch.random.get_rng_state()
    with train_clip._threads(1):
        first, first_losses = train_clip._train(settings, cfg, pre, progress=False)
        second, second_losses = train_clip._train(settings, cfg, pre, progress=False)
    assert first_losses == second_losses
    second_state = second.state_dict()
    assert all(torch.equal(v, second_state[k]) for k, v in first.state_dict().items())
    # the caller's global torch state is left as it was
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert not torch.are_deterministic_algorithms_enabled()


# ---------------------------------------------------------------------- loading and embedding
def test_save_load_round_trip_gives_identical_embeddings(trained: tuple[Path, dict], held_out: object) -> None:
    out, metrics = trained
    first = load_clip("tiny", weights=out)
    second = load_clip("tiny", weights=str(out / "model.safetensors"))  # the file inside the folder
    via_open_clip_dir = load_clip(f"local-dir:{out}")
    images = held_out.images[:20]
    texts = ["an image of a red star", "a small blue ring on the left"]
    assert first.fingerprint() == second.fingerprint() == via_open_clip_dir.fingerprint() == metrics["fingerprint"]
    for other in (second, via_open_clip_dir):
        np.testing.assert_array_equal(first.encode_images(images), other.encode_images(images))
        np.testing.assert_array_equal(first.encode_text(texts), other.encode_text(texts))
    assert first.name == "tiny" and first.embed_dim == 128 and first.image_size == 32
    assert first.meta()["fingerprint"] == metrics["fingerprint"]
    # the folder is also an open_clip folder: open_clip itself loads the same weights
    model = open_clip.create_model(f"local-dir:{out}")
    state = first.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_architecture_plus_local_file_safetensors_and_pt(tmp_path: Path, no_network: None) -> None:
    model, cfg = _random_tiny(3)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    reference = ClipEmbedder(model, name="tiny", model_cfg=cfg)
    images = make_stimuli(n_per_class=1, size=64, seed=5).images[:8]
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        loaded = load_clip("tiny", weights=path)
        assert loaded.fingerprint() == reference.fingerprint()
        np.testing.assert_array_equal(loaded.encode_images(images), reference.encode_images(images))


def test_registered_open_clip_architecture_from_a_local_file(tmp_path: Path, no_network: None) -> None:
    """A real open_clip architecture name (registered from a JSON, as open_clip's own are) + a local file."""
    name = "bci-test-tiny-vit"
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    try:
        model = open_clip.create_model(name, pretrained=None)  # open_clip's own builder, no download
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
        loaded = load_clip(name, weights=tmp_path / "w.safetensors")
        assert loaded.name == name and loaded.embed_dim == 32 and loaded.context_length == 12
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.model.state_dict().items())
        emb = loaded.encode_images(np.zeros((2, 50, 50, 3), np.uint8))
        assert emb.shape == (2, 32)
        # the same file under a bigger registered architecture: the first mismatching tensor is named
        mismatch = r"tensor 'positional_embedding' has shape \(12, 16\).*expected \(77, 256\)"
        with pytest.raises(ClipError, match=mismatch):
            load_clip("ViT-S-32-alt", weights=tmp_path / "w.safetensors")
    finally:  # open_clip has no unregister; drop the test architecture from its registry
        open_clip.factory._MODEL_CONFIGS.pop(name, None)
        open_clip.factory._MODEL_CONFIG_PATHS.remove(tmp_path / f"{name}.json")


def test_mismatching_weights_name_the_tensor(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    raw = tmp_path / "tiny32.safetensors"
    raw.write_bytes((out / "model.safetensors").read_bytes())
    # a bare file under "tiny" means the default 64-px architecture: the 32-px pooling grid does not fit
    with pytest.raises(ClipError, match=r"'visual\.attnpool\.positional_embedding' has shape \(2, 512\).*\(5, 512\)"):
        load_clip("tiny", weights=raw)
    model, _ = _random_tiny(0)
    partial = {k: v.contiguous() for k, v in model.state_dict().items() if k != "text_projection"}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ClipError, match="'text_projection'.*missing"):
        load_clip("tiny", weights=tmp_path / "partial.safetensors")
    extra = {**partial, "text_projection": model.state_dict()["text_projection"], "surplus": torch.zeros(2)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ClipError, match="'surplus'"):
        load_clip("tiny", weights=tmp_path / "extra.safetensors")


def test_embeddings_normalised_float32_for_any_image_size(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    clip = load_clip("tiny", weights=out)
    rng = np.random.default_rng(0)
    for shape in [(3, 17, 45, 3), (2, 100, 37, 3), (1, 32, 32, 3), (5, 1, 1, 3)]:
        emb = clip.encode_images(rng.integers(0, 256, shape, dtype=np.uint8), batch_size=2)
        assert emb.shape == (shape[0], 128) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert clip.encode_images(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 128)
    text = clip.encode_text(("a large green bar at the top", "an image of a purple cross", ""))
    assert text.shape == (3, 128) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert clip.encode_text([]).shape == (0, 128)
    # captions longer than the 16-token context are truncated, not refused
    long = clip.encode_text(["a large red triangle in the upper left " * 4])
    assert long.shape == (1, 128) and clip.context_length == 16


def test_resizing_keeps_images_recognisable(trained: tuple[Path, dict]) -> None:
    """64-px images resized by the embedder embed like the model's native 32-px drawings of the same layouts."""
    out, _ = trained
    clip = load_clip("tiny", weights=out)
    native = clip.encode_images(make_stimuli(n_per_class=3, size=32, seed=EVAL_SEED).images)
    # the same shapes, colours and layouts drawn at 64 px, and (control) other layouts at 64 px
    resized = clip.encode_images(make_stimuli(n_per_class=3, size=64, seed=EVAL_SEED).images)
    other = clip.encode_images(make_stimuli(n_per_class=3, size=64, seed=EVAL_SEED + 1).images)
    truth = np.arange(len(native))
    identified = np.mean((resized @ native.T).argmax(axis=1) == truth)  # chance 1/120
    control = np.mean((other @ native.T).argmax(axis=1) == truth)
    assert identified >= 0.8 and control < 0.5


def test_text_cache_memory_and_disk_keyed_by_text_and_model(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    cache = tmp_path / "text-cache"
    clip = load_clip("tiny", weights=out, cache_dir=cache)
    texts = ["an image of a red star", "a small blue ring on the left"]
    first = clip.encode_text(texts)
    assert clip.text_cache.misses == 2 and clip.text_cache.hits == 0
    first[:] = 0.0  # callers get copies: mutating one never changes the cache
    second = clip.encode_text(texts)
    assert clip.text_cache.hits == 2
    np.testing.assert_array_equal(second, clip.encode_text(texts))
    assert np.linalg.norm(second, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    # on disk: one npz + json per text under a sha256 of fingerprint + text, no pickle
    key = text_key(clip.fingerprint(), texts[0])
    meta_files = list(cache.rglob(f"{key}.json"))
    assert len(meta_files) == 1 and meta_files[0].with_suffix(".npz").is_file()
    meta = json.loads(meta_files[0].read_text())
    assert meta["text"] == texts[0] and meta["fingerprint"] == clip.fingerprint()
    with np.load(meta_files[0].with_suffix(".npz"), allow_pickle=False) as data:
        np.testing.assert_array_equal(data["embedding"], second[0])
    # a fresh embedder (empty memory) is served from disk with identical arrays
    fresh = load_clip("tiny", weights=out, cache_dir=cache)
    np.testing.assert_array_equal(fresh.encode_text(texts), second)
    assert fresh.text_cache.hits == 2 and fresh.text_cache.misses == 0
    # another model sharing the cache folder gets its own embeddings, not the first model's
    model, cfg = _random_tiny(7, image_size=32)
    other = ClipEmbedder(model, name="tiny", model_cfg=cfg, cache_dir=cache)
    assert other.fingerprint() != clip.fingerprint()
    other_emb = other.encode_text(texts)
    assert other.text_cache.misses == 2
    assert not np.allclose(other_emb, second)
    # a tampered entry (text does not match) is a miss and is recomputed
    meta["text"] = "something else"
    meta_files[0].write_text(json.dumps(meta))
    third = load_clip("tiny", weights=out, cache_dir=cache)
    np.testing.assert_allclose(third.encode_text(texts[:1]), second[:1], rtol=1e-5, atol=1e-6)
    assert third.text_cache.misses == 1


# ---------------------------------------------------------------------- bad input
def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ClipError, match="ViT-B-33.*did you mean 'ViT-B-32'.*tiny.*RN50"):
        load_clip("ViT-B-33", weights="whatever.safetensors")
    with pytest.raises(TypeError, match="model"):
        load_clip(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "weights"),
    [
        ("ViT-B-32", "openai"),
        ("ViT-B-32", "laion2b_s34b_b79k"),
        ("ViT-B-32", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
        ("RN50", "https://example.org/rn50.pt"),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None),
        ("ViT-B-16-SigLIP", "/some/local/file.safetensors"),
        ("roberta-ViT-B-32", "/some/local/file.safetensors"),
    ],
)
def test_downloads_are_refused_without_touching_the_network(model: str, weights: str | None, no_network: None) -> None:
    with pytest.raises(OfflineError, match="never downloads"):
        load_clip(model, weights=weights)


def test_missing_weights_messages(tmp_path: Path) -> None:
    with pytest.raises(ClipError, match=r"bci train clip --out DIR.*bci demo"):
        load_clip("tiny")
    with pytest.raises(ClipError, match="needs local weights"):
        load_clip("ViT-B-32")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_clip("ViT-B-32", weights=tmp_path / "nope.safetensors")
    with pytest.raises(ClipError, match="neither config.json"):
        load_clip("tiny", weights=tmp_path)


def test_pickled_objects_are_not_loaded(tmp_path: Path) -> None:
    model, _ = _random_tiny(0)
    torch.save({"state_dict": model.state_dict(), "callback": argparse.Namespace(x=1)}, tmp_path / "evil.pt")
    with pytest.raises(ClipError, match=r"weights_only=True"):
        load_clip("tiny", weights=tmp_path / "evil.pt")
    (tmp_path / "w.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ClipError, match="suffix"):
        load_clip("tiny", weights=tmp_path / "w.ckpt")


def test_bad_images_texts_and_device(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    clip = load_clip("tiny", weights=out)
    with pytest.raises(TypeError, match="uint8"):
        clip.encode_images(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"images\[None\]"):
        clip.encode_images(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        clip.encode_images(np.zeros((2, 32, 32, 4), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        clip.encode_images([[0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        clip.encode_images(np.zeros((1, 32, 32, 3), np.uint8), batch_size=0)
    with pytest.raises(TypeError, match=r"pass \[text\]"):
        clip.encode_text("a red star")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        clip.encode_text(["a red star", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not a torch device"):
        load_clip("tiny", weights=out, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_clip("tiny", weights=out, device="cuda")


# ---------------------------------------------------------------------- CLI
def test_cli_train_clip_prints_accuracy_vs_chance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bci.cli.main import _add_parser
    from offline.cli.clip import register_train_clip

    parser = argparse.ArgumentParser(prog="bci")
    sub = parser.add_subparsers(dest="command", required=True)
    train = _add_parser(sub, "train", "Train models.", "bci train clip --out DIR")
    register_train_clip(train.add_subparsers(dest="what", required=True), _add_parser)
    out = tmp_path / "clip"
    args = parser.parse_args(
        ["train", "clip", "--out", str(out), "--steps", "3", "--batch-size", "16", "--image-size", "32", "--quiet"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "zero-shot on 400 held-out synthetic images" in printed and "(chance 2.5%)" in printed
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "clip", "--out", str(out), "--steps", "0"])
    assert "must be >= 1" in capsys.readouterr().err
    assert default_preprocess(32)["size"] == 32
