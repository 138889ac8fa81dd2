"""Offline trainers: real torch training on a small synthetic epoch dataset (CPU, seconds).

The dataset (``make_small_dataset``) is written with ``offline.data.epochs.write_epoch_dataset``
and holds class-dependent evoked patterns in noise, single-class blocks, stimulus images
and captions, and stored ``block`` / ``zero_shot`` splits: everything the trainers read
from a real one, at 16 channels x 100 samples so that each run takes about a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bci.models import load_checkpoint, read_config
from offline.data.epochs import EpochArrays, EpochDataset, EpochMetadata, ImageTable, write_epoch_dataset
from offline.data.splits import block_split, zero_shot_split
from offline.scoring.centroids import centroid_accuracy
from offline.training.tasks.pixel import PixelOptions, train_pixel
from offline.training.encoders import build_encoder, embed_windows
from offline.training.loop import (
    NonFiniteLossError,
    TrainSettings,
    WindowSource,
    augment_windows,
    class_balanced_batches,
    derive_seed,
    fit_scaler,
    random_search,
)
from streams.synthetic import make_stimuli

CLASSES = [0, 7, 14, 21, 28, 35]  # spread over shapes and colours


def make_small_dataset(path: Path, *, n_blocks: int = 4, per_block: int = 5, n_chans: int = 16, n_times: int = 100,
                       sfreq: float = 250.0, snr: float = 0.2, seed: int = 0, leak: bool = False) -> EpochDataset:
    """Six classes, single-class blocks, class templates (+ a per-image part) in white noise."""
    rng = np.random.default_rng(seed)
    full = make_stimuli(n_per_class=2, size=32, seed=seed)
    keep = np.flatnonzero(np.isin(full.class_ids, CLASSES))
    class_of_image = np.searchsorted(CLASSES, full.class_ids[keep])
    names = [full.class_names[c] for c in CLASSES]
    t = np.arange(n_times) / sfreq
    n_classes = len(CLASSES)
    spatial = rng.normal(size=(n_classes, n_chans))
    latency = 0.1 + 0.2 * rng.random(n_classes)
    templates = spatial[:, :, None] * np.exp(-0.5 * ((t[None, None, :] - latency[:, None, None]) / 0.03) ** 2)
    image_part = 0.3 * rng.normal(size=(len(keep), n_chans))[:, :, None] * np.exp(-0.5 * ((t - 0.25) / 0.04) ** 2)
    order = np.concatenate([rng.permutation(n_classes) for _ in range(n_blocks)])
    labels, images, blocks, times = [], [], [], []
    clock = 1.0
    for b, c in enumerate(order):
        members = np.flatnonzero(class_of_image == c)
        for _ in range(per_block):
            labels.append(c)
            images.append(int(rng.choice(members)))
            blocks.append(b)
            times.append(clock)
            clock += 1.0
        clock += 2.0
    labels, images = np.asarray(labels), np.asarray(images)
    signal = templates[labels] + image_part[images]
    data = (snr * signal / signal.std() + rng.normal(size=signal.shape)) * 1e-5
    image_ids = [full.image_ids[k] for k in keep]
    write_epoch_dataset(
        path,
        EpochArrays(data.astype(np.float32), labels=labels, image_ids=[image_ids[i] for i in images],
                    subject=np.zeros(len(labels), np.int64), session=np.zeros(len(labels), np.int64),
                    block=np.asarray(blocks), marker_time=np.asarray(times)),
        EpochMetadata(sfreq=sfreq, ch_names=[f"E{i}" for i in range(n_chans)], class_names=names,
                      source={"builder": "tests.test_training.make_small_dataset"}),
        images=ImageTable(full.images[keep], image_ids, [full.captions[k] for k in keep],
                          [full.template_captions[k] for k in keep]),
    )
    ds = EpochDataset.open(path)
    ds.add_split("block", block_split(ds, val=0.25, test=0.25, seed=0), kind="block")
    ds.add_split("zero_shot", zero_shot_split(ds, n_held_out=2, val=0.25, seed=0), kind="zero_shot")
    if leak:  # a random split over windows: blocks end up in several parts
        perm = np.random.default_rng(1).permutation(len(labels))
        parts = {"train": np.sort(perm[:80]), "val": np.sort(perm[80:100]), "test": np.sort(perm[100:])}
        ds.add_split("random", parts, kind="custom", allow_leak=True)
    return EpochDataset.open(path)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPOCHS = 6
FAST = {"batch_size": 24, "lr": 3e-3, "patience": 0, "progress": False}
PIXEL = PixelOptions(embed_dim=16, per_class=4, model_params={"n_spatial": 8, "n_separable": 16})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> EpochDataset:
    return make_small_dataset(tmp_path_factory.mktemp("data") / "small.zarr", leak=True)


@pytest.fixture(scope="module")
def pixel_run(dataset: EpochDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("pixel") / "ckpt"
    result = train_pixel(dataset, out, options=PIXEL, settings=TrainSettings(epochs=EPOCHS, **FAST))
    return out, result


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- data helpers
def test_scaler_uses_training_windows_only(dataset: EpochDataset) -> None:
    train = dataset.split("block")["train"]
    scaler = fit_scaler(dataset, train)
    x = dataset.get_batch(train).astype(np.float64)
    np.testing.assert_allclose(scaler.mean, x.mean(axis=(0, 2)), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(scaler.std, x.std(axis=(0, 2)), rtol=1e-4)
    everything = fit_scaler(dataset, np.arange(len(dataset)))
    assert not np.allclose(scaler.mean, everything.mean)


class _Windows:
    """Just enough of an epoch dataset for fit_scaler: ``get_batch``."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def get_batch(self, idx: np.ndarray) -> np.ndarray:
        return self.x[np.asarray(idx)]


def test_flat_channel_threshold_is_one_constant_at_its_boundary() -> None:
    from bci.preprocessing import FLAT_STD_FRACTION, ChannelScaler, flat_channels

    assert FLAT_STD_FRACTION == 1e-6  # the value the training path (fit_scaler) always used
    assert flat_channels(np.array([1.0, 1e-6, 1.01e-6, 0.0])).tolist() == [False, True, False, True]
    assert flat_channels(np.zeros(3)).all()
    signs = np.where(np.arange(200) % 2 == 0, 1.0, -1.0)  # exact std 1 about mean 0
    x = np.zeros((4, 4, 200))
    x[:, 0] = signs
    x[:, 1] = 2e-6 * signs        # 2e-6 of the largest std: kept
    x[:, 2] = 5e-7 * signs        # 5e-7: flat (it was kept by the old 1e-8 of ChannelScaler.fit)
    x[:, 3] = 3.0                 # constant: flat
    for scaler in (fit_scaler(_Windows(x), np.arange(4)), ChannelScaler.fit(x)):
        assert scaler.std[2] == 1.0 and scaler.std[3] == 1.0
        np.testing.assert_allclose(scaler.std[:2], [1.0, 2e-6], rtol=1e-6)


def test_class_balanced_batches_have_positives(dataset: EpochDataset) -> None:
    train = dataset.split("block")["train"]
    batches = class_balanced_batches(train, dataset.labels[train], 3, 4, np.random.default_rng(0))
    assert len(batches) == int(np.ceil(len(train) / 12))
    for b in batches:
        counts = np.bincount(dataset.labels[b])
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4]
        assert np.isin(b, train).all()


def test_augment_windows_is_seeded_and_label_preserving() -> None:
    x = torch.arange(20.0).repeat(4, 3, 1)
    assert augment_windows(x, torch.Generator().manual_seed(0)) is x  # all options off
    a = augment_windows(x, torch.Generator().manual_seed(1), max_shift=3, noise=0.1, scale=0.2)
    b = augment_windows(x, torch.Generator().manual_seed(1), max_shift=3, noise=0.1, scale=0.2)
    assert torch.equal(a, b) and a.shape == x.shape
    shifted = augment_windows(x, torch.Generator().manual_seed(2), max_shift=3)
    lags = [int(x[i, 0, 10] - shifted[i, 0, 10]) for i in range(4)]
    assert all(-3 <= lag <= 3 for lag in lags) and len(set(lags)) > 1
    assert torch.equal(shifted[:, 0], shifted[:, 2])  # the same shift on every channel of a window


def test_derive_seed_is_stable() -> None:
    assert derive_seed(0, "torch", 3) == derive_seed(0, "torch", 3)
    assert derive_seed(0, "torch", 3) != derive_seed(0, "torch", 4) != derive_seed(1, "torch", 3)


# ----------------------------------------------------------------------------- pixel-level training
def untrained_accuracy(dataset: EpochDataset) -> float:
    """Nearest-centroid accuracy of the same network at its (seeded) initialisation: what no training gives."""
    split = dataset.split("block")
    source = WindowSource(dataset, fit_scaler(dataset, split["train"]), np.arange(len(dataset)))
    model = build_encoder(dataset, model=None, embed_dim=PIXEL.embed_dim, seed=0, params=PIXEL.model_params)
    tr, va = embed_windows(model, source, split["train"]), embed_windows(model, source, split["val"])
    return centroid_accuracy(tr, dataset.labels[split["train"]], va, dataset.labels[split["val"]], 6)


def test_pixel_training_learns(dataset: EpochDataset, pixel_run: tuple[Path, object]) -> None:
    out, result = pixel_run
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    untrained = untrained_accuracy(dataset)  # random features already separate classes somewhat
    assert result.best_metric >= max(untrained + 0.2, 1 / 6 + 0.4), (untrained, result.history)
    model = load_checkpoint(out)
    cfg = model.get_config()
    assert cfg.scaler is not None and len(cfg.scaler["mean"]) == 16
    extra = cfg.extra
    assert extra["trained"] and extra["task"] == "pixel" and extra["seed"] == 0
    assert extra["split"]["name"] == "block" and extra["split"]["dataset_fingerprint"] == dataset.fingerprint()
    assert extra["split"]["hash"] == dataset.split_info("block").sha256[:16]
    assert extra["metrics"]["val_accuracy"] == pytest.approx(result.best_metric)
    assert cfg.labels == list(dataset.class_names)
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["epoch"] == EPOCHS - 1 and state["stopped"] == "max_epochs"


def test_same_seed_same_weights_and_resume_equals_uninterrupted(dataset: EpochDataset, tmp_path: Path,
                                                                pixel_run: tuple[Path, object]) -> None:
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("other-seed", 1)):
        runs[name] = tmp_path / name
        train_pixel(dataset, runs[name], options=PIXEL, settings=TrainSettings(epochs=1, seed=seed, **FAST))
    assert _same(_weights(runs["a"]), _weights(runs["b"]))
    assert (runs["a"] / "last" / "optim-model.safetensors").read_bytes() == \
        (runs["b"] / "last" / "optim-model.safetensors").read_bytes()
    assert not _same(_weights(runs["a"]), _weights(runs["other-seed"]))

    full, _ = pixel_run  # EPOCHS epochs in one go, seed 0
    cut = tmp_path / "cut"
    train_pixel(dataset, cut, options=PIXEL, settings=TrainSettings(epochs=EPOCHS // 2, **FAST))
    resumed = train_pixel(dataset, cut, options=PIXEL, settings=TrainSettings(epochs=EPOCHS, **FAST), resume=True)
    assert resumed.epochs_run == EPOCHS and len(resumed.history) == EPOCHS
    assert _same(load_file(str(full / "last" / "model.safetensors")), load_file(str(cut / "last" / "model.safetensors")))
    assert _same(_weights(full), _weights(cut))
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    full_history = json.loads((full / "last" / "state.json").read_text())["history"]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in full_history]


def test_existing_output_needs_resume_or_overwrite(dataset: EpochDataset, pixel_run: tuple[Path, object]) -> None:
    out, _ = pixel_run
    with pytest.raises(FileExistsError, match="--resume"):
        train_pixel(dataset, out, options=PIXEL, settings=TrainSettings(epochs=1, **FAST))


def test_nan_stops_and_keeps_last_good_checkpoint(dataset: EpochDataset, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    train_pixel(dataset, out, options=PIXEL, settings=TrainSettings(epochs=1, **FAST))
    before = {p.name: p.read_bytes() for p in [out / "config.json", out / "model.safetensors",
                                                out / "last" / "state.json", out / "last" / "model.safetensors"]}
    huge = {**FAST, "lr": 1e30}
    with pytest.raises(NonFiniteLossError) as err:
        train_pixel(dataset, out, options=PIXEL, settings=TrainSettings(epochs=3, grad_clip=None, **huge), resume=True)
    text = str(err.value)
    assert "epoch 2" in text and "step" in text and "dataset epochs [" in text
    assert "last good checkpoints are kept" in text and str(out) in text
    after = {p.name: p.read_bytes() for p in [out / "config.json", out / "model.safetensors",
                                               out / "last" / "state.json", out / "last" / "model.safetensors"]}
    assert after == before
    load_checkpoint(out)  # still loads


def test_leaking_split_is_refused(dataset: EpochDataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="leaks"):
        train_pixel(dataset, tmp_path / "leak", split="random", options=PIXEL, settings=TrainSettings(epochs=1, **FAST))
    assert not (tmp_path / "leak" / "config.json").exists()


def test_unknown_split_is_named(dataset: EpochDataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no split 'nope'.*block"):
        train_pixel(dataset, tmp_path / "x", split="nope", options=PIXEL, settings=TrainSettings(epochs=1, **FAST))


def test_random_search_keeps_best_trial(dataset: EpochDataset, tmp_path: Path) -> None:
    out = tmp_path / "search"

    def trial(params: dict, directory: Path, resume: bool):
        opts = PixelOptions(embed_dim=16, per_class=4, margin=params["margin"],
                            model_params={"n_spatial": 8, "n_separable": 16})
        return train_pixel(dataset, directory, options=opts, settings=TrainSettings(
            epochs=1, **{**FAST, "lr": params["lr"]}), resume=resume)

    summary = random_search(trial, {"lr": ("loguniform", 1e-3, 1e-2), "margin": [0.1, 0.3]}, 2, out, seed=0)
    assert len(summary["trials"]) == 2
    best = summary["trials"][summary["best"]]
    assert best["best_metric"] == max(t["best_metric"] for t in summary["trials"])
    assert (out / "model.safetensors").read_bytes() == (Path(best["directory"]) / "model.safetensors").read_bytes()
    assert json.loads((out / "search.json").read_text())["best"] == summary["best"]
    assert read_config(out).extra["task"] == "pixel"


# ----------------------------------------------------------------------------- sample-level (CLIP) training
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny CLIP (seeded, untrained) saved as 'bci train clip' writes it: distinct text embeddings."""
    from bci.clip import build_clip_model, default_preprocess, save_clip, tiny_config

    torch.manual_seed(0)
    cfg = tiny_config()
    out = tmp_path_factory.mktemp("clip") / "tiny"
    save_clip(build_clip_model(cfg, "tiny"), out, name="tiny", model_cfg=cfg, preprocess_cfg=default_preprocess(64))
    return out


SMALL_NET = {"n_spatial": 8, "n_separable": 16}


def test_sample_training_aligns_to_clip_templates(dataset: EpochDataset, clip_dir: Path, tmp_path: Path) -> None:
    from bci.clip import load_clip
    from offline.data.targets import class_gallery
    from offline.scoring.metrics import retrieval_top
    from offline.training.tasks.sample import SampleOptions, train_sample

    out = tmp_path / "sample"
    opts = SampleOptions(loss="infonce", model_params=SMALL_NET)
    result = train_sample(dataset, out, clip_weights=clip_dir, options=opts,
                          settings=TrainSettings(epochs=EPOCHS, **FAST))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0], losses
    clip = load_clip("tiny", weights=clip_dir)
    split = dataset.split("block")
    source = WindowSource(dataset, fit_scaler(dataset, split["train"]), split["val"])
    untrained = build_encoder(dataset, model=None, embed_dim=clip.embed_dim, seed=0, params=SMALL_NET)
    base = retrieval_top(embed_windows(untrained, source, split["val"]), class_gallery(dataset, clip, "template"),
                         dataset.labels[split["val"]])["top1"]
    assert result.best_metric >= max(base + 0.2, 1 / 6 + 0.3), (base, result.history)
    cfg = read_config(out)
    assert cfg.embed_dim == clip.embed_dim == 128
    extra = cfg.extra
    assert extra["clip"]["fingerprint"] == clip.fingerprint() and extra["clip"]["weights"] == str(clip_dir.resolve())
    assert extra["target"] == "template" and extra["embedding_space"] == "clip" and extra["task"] == "sample"
    assert extra["training"]["options"]["loss"] == "infonce"


def test_two_stage_sample_extractor_on_a_frozen_pixel_backbone(dataset: EpochDataset, clip_dir: Path,
                                                                pixel_run: tuple[Path, object], tmp_path: Path) -> None:
    """--backbone: the pixel-level layers are copied and stay frozen; only the MLP head learns."""
    from bci.models import load_checkpoint
    from offline.evaluation.evaluate import evaluate
    from offline.training.tasks.sample import SampleOptions, train_sample

    pixel_dir, _ = pixel_run
    out = tmp_path / "two-stage"
    opts = SampleOptions(loss="infonce", backbone=str(pixel_dir), head_hidden=32)
    result = train_sample(dataset, out, clip_weights=clip_dir, options=opts, settings=TrainSettings(epochs=EPOCHS, **FAST))
    assert result.best_metric > 1 / 6 + 0.2, result.history
    cfg = read_config(out)
    assert cfg.params["head_hidden"] == 32 and cfg.params["feature_dim"] == 16 and cfg.embed_dim == 128
    assert cfg.extra["backbone"]["path"] == str(pixel_dir.resolve()) and cfg.extra["backbone"]["same_dataset_and_split"]
    pixel, two_stage = _weights(pixel_dir), _weights(out)
    backbone = [k for k in pixel if not k.startswith("head.")]
    assert backbone and all(torch.equal(pixel[k], two_stage[k]) for k in backbone)  # BN statistics included
    assert any(k.startswith("align_head.") for k in two_stage)
    model = load_checkpoint(out)  # an ordinary checkpoint for the runtime
    assert model(torch.zeros(2, 16, 100))["embedding"].shape == (2, 128)
    report = evaluate(out, dataset, plots=False, oracle=False)
    assert report["scores"]["model"]["6-way top-1"]["value"] > 1 / 6
    with pytest.raises(ValueError, match="trained on split 'block'.*not on split 'zero_shot'"):
        train_sample(dataset, tmp_path / "leak", clip_weights=clip_dir, split="zero_shot", options=opts,
                     settings=TrainSettings(epochs=1, **FAST))
    with pytest.raises(ValueError, match="already has an MLP head"):
        train_sample(dataset, tmp_path / "again", clip_weights=clip_dir,
                     options=SampleOptions(backbone=str(out)), settings=TrainSettings(epochs=1, **FAST))
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(pixel_dir, unrecorded, ignore=shutil.ignore_patterns("last"))
    cfg_json = json.loads((unrecorded / "config.json").read_text())
    cfg_json["extra"].pop("split")
    (unrecorded / "config.json").write_text(json.dumps(cfg_json))
    with pytest.raises(ValueError, match="records no training split"):
        train_sample(dataset, tmp_path / "unrec", clip_weights=clip_dir,
                     options=SampleOptions(backbone=str(unrecorded)), settings=TrainSettings(epochs=1, **FAST))
    with pytest.raises(FileNotFoundError, match="--backbone .*missing"):
        train_sample(dataset, tmp_path / "none", clip_weights=clip_dir,
                     options=SampleOptions(backbone=str(tmp_path / "missing")), settings=TrainSettings(epochs=1, **FAST))


def test_sample_target_needs_what_the_dataset_lacks(dataset: EpochDataset, clip_dir: Path, tmp_path: Path) -> None:
    from offline.training.tasks.sample import SampleOptions

    with pytest.raises(ValueError, match="target="):
        SampleOptions(target="pixels")
    with pytest.raises(ValueError, match="loss="):
        SampleOptions(loss="l1")


# ----------------------------------------------------------------------------- fMRI
def test_fmri_training_with_voxel_selection(clip_dir: Path, tmp_path: Path) -> None:
    from offline.evaluation.evaluate import evaluate
    from offline.data.fmri import FMRIDesign, FMRISubject, fmri_dataset_from_simulation
    from offline.training.tasks.fmri import train_fmri
    from streams.synthetic.fmri import FMRISimConfig, FMRISimulator

    path = fmri_dataset_from_simulation(tmp_path / "fmri.zarr",
                                        FMRIDesign(n_train=60, block_size=10, val_blocks=1, test_repeats=2),
                                        FMRISubject(n_voxels=200, snr=3.0, seed=0))
    ds = EpochDataset.open(path)
    assert ds.modality == "fmri" and ds.data.shape[1:] == (200, 2)
    out = tmp_path / "fmri-model"
    result = train_fmri(ds, out, clip_weights=clip_dir, top_voxels=50,
                        settings=TrainSettings(epochs=2, batch_size=16, progress=False))
    cfg = read_config(out)
    assert cfg.name == "fmri_mlp" and cfg.n_chans == 50 and len(cfg.ch_names) == 50
    sim = FMRISimulator(FMRISimConfig(n_voxels=200, snr=3.0, seed=0))
    kept = [sim.channel_names.index(c) for c in cfg.ch_names]
    assert sim.responsive[kept].mean() >= 0.95 > sim.responsive.mean()  # the encoding model finds real voxels
    assert cfg.extra["voxel_selection"]["top_n"] == 50 and cfg.extra["level"] == "image"
    assert np.isfinite(result.best_metric)
    report = evaluate(out, ds, plots=False)
    model = report["scores"]["model"]
    assert "image 12-way top-1" in model and model["image 12-way top-1"]["chance"] == pytest.approx(1 / 12)
    oracle = report["scores"]["oracle"]["image 12-way top-1"]
    assert oracle["value"] > 0.5  # the simulator's receptive fields identify the 12 test patterns


def test_train_fmri_refuses_eeg_data(dataset: EpochDataset, clip_dir: Path, tmp_path: Path) -> None:
    from offline.training.tasks.fmri import train_fmri

    with pytest.raises(ValueError, match="modality 'eeg'.*fMRI"):
        train_fmri(dataset, tmp_path / "x", clip_weights=clip_dir)
