"""Contrastive alignment as the EEG -> image literature does it (issue 15): CLIP's learned temperature,
ATM's image + text target mix, and the CLIP targets cached once per (CLIP model, images, captions).

Real torch training of a small encoder on the small synthetic dataset of :mod:`tests.test_training`
(16 channels x 100 samples, a second per run), a real (untrained, seeded) tiny CLIP, real files.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from bci.cli.main import main
from bci.models import load_checkpoint
from offline.data.epochs import EpochDataset
from offline.data.targets import clip_embeddings, target_cache_dir, target_table
from offline.training.losses import MAX_LOGIT_SCALE, LearnedTemperature, clip_alignment_loss, info_nce
from offline.training.loop import TrainSettings
from offline.training.tasks.sample import TEMPERATURE_FILE, SampleOptions, load_temperature, train_sample
from tests.test_training import make_small_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_NET = {"n_spatial": 8, "n_separable": 16}
FAST = {"batch_size": 24, "lr": 3e-3, "patience": 0, "progress": False}
ATM = SampleOptions(target="image", learn_temperature=True, text_weight=0.01, model_params=SMALL_NET)


def _tiny_clip(directory: Path, seed: int) -> Path:
    from bci.clip import build_clip_model, default_preprocess, save_clip, tiny_config

    torch.manual_seed(seed)
    cfg = tiny_config()
    save_clip(build_clip_model(cfg, "tiny"), directory, name="tiny", model_cfg=cfg, preprocess_cfg=default_preprocess(64))
    return directory


class CountingClip:
    """A real :class:`~bci.clip.ClipEmbedder` that counts the calls of its encoders."""

    def __init__(self, weights: Path) -> None:
        from bci.clip import load_clip

        self.inner = load_clip("tiny", weights=weights)
        self.embed_dim = self.inner.embed_dim
        self.name = self.inner.name
        self.source = self.inner.source
        self.image_calls = 0
        self.text_calls = 0

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        self.image_calls += 1
        return self.inner.encode_images(images)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.text_calls += 1
        return self.inner.encode_text(texts)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contrastive")


@pytest.fixture(scope="module")
def dataset_path(root: Path) -> Path:
    path = root / "small.zarr"
    make_small_dataset(path)
    return path


@pytest.fixture(scope="module")
def clip_a(root: Path) -> Path:
    return _tiny_clip(root / "clip-a", seed=0)


@pytest.fixture(scope="module")
def atm_run(root: Path, dataset_path: Path, clip_a: Path) -> tuple[Path, Any]:
    out = root / "atm"
    result = train_sample(dataset_path, out, clip_weights=clip_a, options=ATM, settings=TrainSettings(epochs=3, **FAST))
    return out, result


def _fresh_copy(dataset_path: Path, tmp_path: Path) -> Path:
    path = tmp_path / "copy.zarr"
    shutil.copytree(dataset_path, path)
    return path


# ----------------------------------------------------------------------------- learned temperature
def test_learned_temperature_moves_is_logged_and_round_trips_through_the_checkpoint(atm_run: tuple[Path, Any]) -> None:
    out, result = atm_run
    start = math.log(1 / 0.07)
    logged = [h["train_logit_scale"] for h in result.history]
    assert len(logged) == 3 and all(0 <= v <= MAX_LOGIT_SCALE + 1e-6 for v in logged)
    assert abs(logged[-1] - start) > 1e-4, logged  # trained with the encoder
    loaded = load_temperature(out)
    assert loaded is not None and 0 <= loaded.value <= MAX_LOGIT_SCALE + 1e-6
    extra = json.loads((out / "config.json").read_text(encoding="utf-8"))["extra"]
    record = extra["temperature"]
    assert record["learned"] is True and record["file"] == TEMPERATURE_FILE
    assert record["logit_scale"] == loaded.value and record["temperature"] == pytest.approx(math.exp(-loaded.value))
    assert abs(loaded.value - start) > 1e-4
    assert extra["training"]["options"]["learn_temperature"] is True
    assert extra["training"]["options"]["text_weight"] == 0.01
    load_checkpoint(out)  # the encoder's model.safetensors still loads strictly: the temperature is its own file
    assert (out / "last" / "temperature.safetensors").is_file()  # and resume restores it with the optimiser


def test_resume_restores_the_learned_temperature(atm_run: tuple[Path, Any], dataset_path: Path, clip_a: Path,
                                                 tmp_path: Path) -> None:
    out, straight = atm_run
    train_sample(dataset_path, tmp_path / "r", clip_weights=clip_a, options=ATM, settings=TrainSettings(epochs=2, **FAST))
    resumed = train_sample(dataset_path, tmp_path / "r", clip_weights=clip_a, options=ATM,
                           settings=TrainSettings(epochs=3, **FAST), resume=True)
    assert [h["train_logit_scale"] for h in resumed.history] == [h["train_logit_scale"] for h in straight.history]
    assert load_temperature(tmp_path / "r").value == load_temperature(out).value


def _task(dataset_path: Path, clip_a: Path, options: SampleOptions) -> tuple[Any, Any]:
    """An :class:`AlignmentTask` on the small dataset as :func:`train_sample` builds it, and its split."""
    from bci.clip import load_clip
    from offline.training.encoders import build_encoder
    from offline.training.loop import fitted_source, prepare_split
    from offline.training.tasks.sample import AlignmentTask, SampleSettings, _text_targets

    ds = EpochDataset.open(dataset_path)
    clip = load_clip("tiny", weights=clip_a)
    info = prepare_split(ds, "block")
    targets, rows = target_table(ds, clip, options.target)
    text, text_ids = _text_targets(ds, clip, options)
    scaler, source = fitted_source(ds, info)
    model = build_encoder(ds, model=None, embed_dim=clip.embed_dim, seed=0, params=SMALL_NET)
    task = AlignmentTask(model, source, info, targets, rows, ds.labels, targets, SampleSettings(**FAST), options,
                         scaler, text_targets=text, text_ids=text_ids)
    return task, info


def test_learned_temperature_is_clamped_after_every_step(dataset_path: Path, clip_a: Path) -> None:
    task, info = _task(dataset_path, clip_a, SampleOptions(target="image", learn_temperature=True,
                                                           model_params=SMALL_NET))
    assert task.temperature is not None and task.temperature.value == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        task.temperature.logit_scale.fill_(7.0)  # beyond log 100, as a large step could leave it
    assert float(task.temperature().detach()) == pytest.approx(0.01)  # the forward pass never goes past the clamp
    opt = task.optimizers()["model"]
    gen = torch.Generator().manual_seed(0)
    for stage in task.stages(info.parts["train"][:24], gen):  # the loop's order: step, then resume the task
        opt.zero_grad(set_to_none=True)
        stage.loss.backward()
        opt.step()
    assert task.temperature.value == pytest.approx(MAX_LOGIT_SCALE)
    assert task.temperature.record()["temperature"] == pytest.approx(0.01)


def test_learned_temperature_descends_to_the_clamp_on_aligned_embeddings() -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(64, 4, generator=g)  # crowded: near neighbours keep the loss well above 0 up to the clamp
    ids = torch.arange(64)
    temp = LearnedTemperature(0.07)
    values = []
    for _ in range(20):  # perfectly aligned pairs: a sharper softmax always lowers the loss
        temp.zero_grad()
        info_nce(h, h, temp(), ids).backward()
        with torch.no_grad():  # signed steps of 0.3 (Adam-like; torch.optim's first step is slow to import)
            temp.logit_scale -= 0.3 * temp.logit_scale.grad.sign()
        temp.clamp_()
        values.append(temp.value)
    assert values[0] > math.log(1 / 0.07) and max(values) <= MAX_LOGIT_SCALE + 1e-6 and values[-1] == pytest.approx(MAX_LOGIT_SCALE)


def test_default_options_keep_the_fixed_temperature(root: Path, dataset_path: Path, clip_a: Path) -> None:
    out = root / "default"
    result = train_sample(dataset_path, out, clip_weights=clip_a, options=SampleOptions(model_params=SMALL_NET),
                          settings=TrainSettings(epochs=1, **FAST))
    assert "train_logit_scale" not in result.history[0]
    assert not (out / TEMPERATURE_FILE).exists() and load_temperature(out) is None
    assert not (out / "last" / "temperature.safetensors").exists()
    assert "temperature" not in json.loads((out / "config.json").read_text(encoding="utf-8"))["extra"]


# ----------------------------------------------------------------------------- loss and text mix
def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(12, 16, generator=g, requires_grad=True)
    image = torch.randn(12, 16, generator=g)
    text = torch.randn(12, 16, generator=g)
    ids = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 4, 5])
    return h, image, text, ids


@pytest.mark.parametrize("kind", ["infonce", "mse+infonce", "mse"])
def test_text_weight_zero_is_exactly_the_old_loss(kind: str) -> None:
    h, image, _, ids = _batch()
    old = clip_alignment_loss(h, image, kind, 0.07, target_ids=ids)
    nan_text = torch.full_like(image, float("nan"))  # the text term is not evaluated at all, not multiplied by 0
    new = clip_alignment_loss(h, image, kind, 0.07, target_ids=ids, text_hat=nan_text, text_ids=ids, text_weight=0.0)
    assert torch.equal(old, new)
    if kind == "infonce":
        assert torch.equal(old, info_nce(h, image, 0.07, ids))


def test_info_nce_is_symmetric_both_directions() -> None:
    h, image, _, ids = _batch()
    assert torch.allclose(info_nce(h, image, 0.07, ids), info_nce(image, h, 0.07, ids), atol=1e-6)


def test_text_weight_changes_the_gradient_as_the_atm_mix() -> None:
    h, image, text, ids = _batch()
    text_ids = torch.arange(12)

    def grad(**kw: Any) -> torch.Tensor:
        h.grad = None
        clip_alignment_loss(h, image, "infonce", 0.07, target_ids=ids, text_hat=text, text_ids=text_ids, **kw).backward()
        return h.grad.clone()

    g_image, g_mix, g_text = grad(text_weight=0.0), grad(text_weight=0.01), grad(text_weight=1.0)
    assert not torch.allclose(g_image, g_mix)
    assert torch.allclose(g_mix, 0.99 * g_image + 0.01 * g_text, atol=1e-6)


def test_text_mix_needs_a_weight_in_0_1_and_a_text_target() -> None:
    h, image, text, ids = _batch()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="text_weight"):
            clip_alignment_loss(h, image, "infonce", text_hat=text, text_weight=bad)
    with pytest.raises(TypeError, match="text_weight"):
        clip_alignment_loss(h, image, "infonce", text_hat=text, text_weight="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text_hat is None"):
        clip_alignment_loss(h, image, "infonce", text_weight=0.5)


def test_the_trainer_mixes_the_caption_text_loss_in(dataset_path: Path, clip_a: Path) -> None:
    def batch_loss(weight: float) -> tuple[float, Any]:
        task, info = _task(dataset_path, clip_a, SampleOptions(target="image", text_weight=weight, model_params=SMALL_NET))
        task.model.eval()  # no dropout: the same embedding for every weight
        stage = next(iter(task.stages(info.parts["train"][:24], torch.Generator().manual_seed(0))))
        return float(stage.loss.detach()), task

    image_only, task = batch_loss(0.0)
    mixed, _ = batch_loss(0.5)
    text_only, _ = batch_loss(1.0)
    assert task.text_targets is None  # weight 0: the captions are not even embedded
    assert mixed != image_only and mixed == pytest.approx(0.5 * image_only + 0.5 * text_only, rel=1e-5)


def test_text_mix_in_training_reads_the_caption_targets(atm_run: tuple[Path, Any], dataset_path: Path) -> None:
    out, result = atm_run
    assert result.history[-1]["train_loss"] > 0
    cached = sorted(p.name for p in target_cache_dir(EpochDataset.open(dataset_path)).glob("*.json"))
    kinds = sorted(json.loads((target_cache_dir(EpochDataset.open(dataset_path)) / n).read_text())["kind"] for n in cached)
    assert "caption" in kinds and "image" in kinds


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"target": "image", "text_weight": -0.1}, ValueError, "text_weight=-0.1"),
    ({"target": "image", "text_weight": 1.5}, ValueError, "text_weight=1.5"),
    ({"target": "image", "text_weight": "0.1"}, TypeError, "text_weight"),
    ({"target": "template", "text_weight": 0.01}, ValueError, "needs target='image'"),
    ({"loss": "mse", "learn_temperature": True}, ValueError, "loss='mse' has none"),
    ({"learn_temperature": True, "temperature": 0.001}, ValueError, r"\[0.01, 1\]"),
    ({"learn_temperature": "yes"}, TypeError, "learn_temperature"),
])
def test_bad_contrastive_options_are_clear_errors(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        SampleOptions(**kwargs)


def test_text_weight_without_captions_is_a_clear_error(dataset_path: Path, clip_a: Path, tmp_path: Path) -> None:
    path = _fresh_copy(dataset_path, tmp_path)
    group = zarr.open_group(str(path), mode="r+")
    del group["caption"]
    with pytest.raises(ValueError, match="needs the captions of the dataset's images"):
        train_sample(path, tmp_path / "out", clip_weights=clip_a, options=ATM, settings=TrainSettings(epochs=1, **FAST))


def test_cli_text_weight_out_of_range_is_one_line_and_exit_2(dataset_path: Path, clip_a: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "sample", "--data", str(dataset_path), "--out", str(tmp_path / "o"), "--clip-weights",
                 str(clip_a), "--target", "image", "--text-weight", "1.5", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "text_weight=1.5" in err, err


def test_cli_learn_temperature_and_text_weight(dataset_path: Path, clip_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"model_params": SMALL_NET}), encoding="utf-8")
    assert main(["train", "sample", "--data", str(dataset_path), "--out", str(out), "--clip-weights", str(clip_a),
                 "--target", "image", "--learn-temperature", "--text-weight", "0.01", "--epochs", "1",
                 "--batch-size", "24", "--config", str(config), "--quiet"]) == 0
    extra = json.loads((out / "config.json").read_text(encoding="utf-8"))["extra"]
    assert extra["training"]["options"]["learn_temperature"] is True and extra["training"]["options"]["text_weight"] == 0.01
    assert extra["temperature"]["logit_scale"] == load_temperature(out).value


# ----------------------------------------------------------------------------- target cache
def test_targets_are_cached_and_reused_by_the_second_training_run(dataset_path: Path, clip_a: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = _fresh_copy(dataset_path, tmp_path)
    shutil.rmtree(target_cache_dir(EpochDataset.open(path)), ignore_errors=True)
    clip = CountingClip(clip_a)
    opts = SampleOptions(target="image", model_params=SMALL_NET)
    caplog.set_level(logging.INFO, logger="offline.data.targets")
    train_sample(path, tmp_path / "one", clip=clip, options=opts, settings=TrainSettings(epochs=1, **FAST))
    assert clip.image_calls == 1  # the targets and the class gallery share one computation
    files = sorted(target_cache_dir(EpochDataset.open(path)).iterdir())
    assert [f.suffix for f in files] == [".json", ".safetensors"]
    meta = json.loads(files[0].read_text(encoding="utf-8"))
    ds = EpochDataset.open(path)
    assert meta["kind"] == "image" and meta["ids"] == [str(i) for i in ds.image_table_ids]
    assert meta["clip"]["fingerprint"] == clip.fingerprint() and meta["clip"]["weights"] == str(clip_a.resolve())
    assert meta["embed_dim"] == clip.embed_dim and meta["n_rows"] == len(ds.image_table_ids)
    mtimes = [f.stat().st_mtime_ns for f in files]
    caplog.clear()
    train_sample(path, tmp_path / "two", clip=clip, options=opts, settings=TrainSettings(epochs=1, **FAST))
    assert clip.image_calls == 1  # the second run never called the CLIP image encoder
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert any("reused" in r.getMessage() for r in caplog.records)
    first = load_checkpoint(tmp_path / "one").state_dict()
    second = load_checkpoint(tmp_path / "two").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)  # cached targets train the same model


def test_cached_targets_equal_the_computed_ones_and_are_invalidated(dataset_path: Path, clip_a: Path,
                                                                    tmp_path: Path) -> None:
    path = _fresh_copy(dataset_path, tmp_path)
    clip = CountingClip(clip_a)
    computed = clip_embeddings(EpochDataset.open(path), clip, "image")
    assert np.array_equal(computed, clip.inner.encode_images(EpochDataset.open(path).images))
    again = clip_embeddings(EpochDataset.open(path), clip, "image")
    assert clip.image_calls == 1 and np.array_equal(again, computed)
    # another CLIP model (other weights): recomputed, in its own file
    other = CountingClip(_tiny_clip(tmp_path / "clip-b", seed=1))
    clip_embeddings(EpochDataset.open(path), other, "image")
    assert other.image_calls == 1
    # the same dataset path with one image changed: recomputed
    group = zarr.open_group(str(path), mode="r+")
    pixels = np.asarray(group["images"][...])
    pixels[0] = 255 - pixels[0]
    group["images"][...] = pixels
    changed = clip_embeddings(EpochDataset.open(path), clip, "image")
    assert clip.image_calls == 2 and not np.array_equal(changed[0], computed[0])
    assert np.allclose(changed[1:], computed[1:], atol=1e-6)
    # captions: their own table, computed once
    clip_embeddings(EpochDataset.open(path), clip, "caption")
    clip_embeddings(EpochDataset.open(path), clip, "caption")
    assert clip.text_calls == 1
    assert len(list(target_cache_dir(EpochDataset.open(path)).glob("*.safetensors"))) == 4


def test_a_damaged_cache_entry_is_recomputed(dataset_path: Path, clip_a: Path, tmp_path: Path) -> None:
    path = _fresh_copy(dataset_path, tmp_path)
    clip = CountingClip(clip_a)
    computed = clip_embeddings(EpochDataset.open(path), clip, "image")
    tensor = next(target_cache_dir(EpochDataset.open(path)).glob("*.safetensors"))
    tensor.write_bytes(b"not a safetensors file")
    assert np.array_equal(clip_embeddings(EpochDataset.open(path), clip, "image"), computed)
    assert clip.image_calls == 2
