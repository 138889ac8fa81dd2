"""``offline.evaluation.evaluate``: reports, plots, baselines, the oracle, bad checkpoints, embedding export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bci.models.checkpoint import CheckpointError
from offline.data.epochs import EpochDataset
from offline.evaluation.evaluate import (MIN_BOOTSTRAP_BLOCKS, REPORT_FILE, evaluate, export_embeddings, format_report,
                                         resampling_units)
from offline.evaluation.plots import tsne
from offline.training.tasks.saliency_gan import GanOptions, train_saliency_gan
from offline.training.tasks.pixel import train_pixel
from offline.training.loop import TrainSettings
from tests.test_training import FAST, PIXEL, SMALL_NET, clip_dir, make_small_dataset  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("eval")
    ds = make_small_dataset(root / "small.zarr")
    pixel = root / "pixel"
    train_pixel(ds, pixel, options=PIXEL, settings=TrainSettings(epochs=6, **FAST))
    gan = root / "gan"
    train_saliency_gan(ds, pixel, gan, options=GanOptions(image_size=16, g_channels=8, d_channels=8),
                       settings=TrainSettings(epochs=3, batch_size=16, lr=2e-3, weight_decay=0.0, patience=0,
                                              progress=False))
    return {"root": root, "ds": ds, "pixel": pixel, "gan": gan}


def _not_blank(path: Path, min_size: int = 50) -> None:
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert img.shape[0] > min_size and img.shape[1] > min_size
    assert img.std() > 10, f"{path} looks blank"
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, f"{path} has almost no colours"


def test_encoder_report_plots_and_baseline(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    report = evaluate(data["pixel"], data["ds"], out_dir=out)
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved == report
    model, ridge = report["scores"]["model"], report["scores"]["ridge"]
    assert "6-way top-1" in model and "6-way top-5" in model and "pairwise" in model
    top1 = model["6-way top-1"]
    assert top1["chance"] == pytest.approx(1 / 6) and top1["n"] == len(data["ds"].split("block")["test"])
    assert top1["value"] > 0.5  # trained extractor, well above chance
    assert 0 <= ridge["6-way top-1"]["value"] <= 1
    assert report["chance"]["6-way top-1"] == pytest.approx(1 / 6)
    assert "oracle" not in report["scores"]  # not a simulator-built dataset
    protocol = report["protocol"]
    assert protocol["name"] == "block" and protocol["part"] == "test" and not protocol["zero_shot"]
    assert protocol["hash"] == data["ds"].split_info("block").sha256[:16] and "whole blocks" in protocol["description"]
    names = {Path(p).name for p in report["plots"]}
    assert {"similarity.png", "embedding_pca.png", "embedding_tsne.png", "retrieval_grid.png"} <= names
    for p in report["plots"]:
        _not_blank(Path(p))
    text = format_report(report)
    assert "6-way top-1" in text and "ridge" in text and "chance" in text
    # 95 % bootstrap intervals over the independent unit (test blocks, or images when there are few blocks)
    iv = report["intervals"]
    test = data["ds"].split("block")["test"]
    unit_ids = np.asarray(data["ds"].block)[test] if iv["unit"] == "block" else data["ds"].image_rows()[test]
    assert iv["n_units"] == len(np.unique(unit_ids)) and iv["n_boot"] == 2000 and iv["seed"] == 0
    for who in ("model", "ridge"):
        s = report["scores"][who]["6-way top-1"]
        assert s["ci95_low"] <= s["value"] <= s["ci95_high"] and s["ci_unit"] == iv["unit"]
    assert f"{top1['value']:.3f} [{top1['ci95_low']:.2f}, {top1['ci95_high']:.2f}]" in text
    assert f"95% bootstrap interval over {iv['n_units']} {iv['unit']}s (2000 resamples, seed 0)" in text


def test_intervals_resample_blocks_or_images_when_blocks_are_few(data: dict) -> None:
    ds = data["ds"]
    every = np.arange(len(ds.labels))
    boot = resampling_units(ds, every)  # 24 blocks: the blocks are the unit
    assert boot.unit == "block" and len(np.unique(boot.groups)) == len(np.unique(ds.block)) >= MIN_BOOTSTRAP_BLOCKS
    assert all(len(set(np.asarray(ds.block)[boot.groups == g])) == 1 for g in np.unique(boot.groups))
    test = ds.split("block")["test"]  # a few test blocks: their images are the unit
    few = resampling_units(ds, test)
    assert len(np.unique(np.asarray(ds.block)[test])) < MIN_BOOTSTRAP_BLOCKS
    assert few.unit == "image" and np.array_equal(few.groups, ds.image_rows()[test])


def test_gan_report_has_image_metrics_and_ridge_reconstruction(data: dict, tmp_path: Path) -> None:
    report = evaluate(data["gan"], data["ds"], out_dir=tmp_path / "gan-ev")
    model, ridge = report["scores"]["model"], report["scores"]["ridge"]
    for key in ("PixCorr", "SSIM"):
        assert np.isfinite(model[key]["value"]) and np.isfinite(model[key]["chance"])
        assert np.isfinite(ridge[key]["value"])
    assert report["kind"] == "saliency-gan" and report["model"]["generator_image_size"] == 16
    paired = report["ssim_model_minus_ridge"]
    assert paired["diff"] == pytest.approx(model["SSIM"]["value"] - ridge["SSIM"]["value"], abs=1e-6)
    assert paired["ci95_low"] <= paired["diff"] <= paired["ci95_high"] and paired["n"] == report["n"]
    assert "SSIM model - ridge, paired" in format_report(report)
    (grid,) = report["plots"]
    assert Path(grid).name == "generation_grid.png"
    _not_blank(Path(grid))
    samples = sorted((data["gan"] / "samples").glob("epoch_*.png"))
    assert len(samples) == 3
    _not_blank(samples[-1], min_size=30)  # stimulus row above generated row, 16 px images


def test_checkpoint_for_other_channels_is_a_clear_error(data: dict, tmp_path: Path) -> None:
    other = make_small_dataset(tmp_path / "12ch.zarr", n_chans=12)
    with pytest.raises(ValueError, match="16 channels.*does not fit.*12 channels.*not in the dataset"):
        evaluate(data["pixel"], other, plots=False)


def test_checkpoint_of_another_architecture_is_a_clear_error(data: dict, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(data["pixel"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["params"]["n_spatial"] = 4  # the weights were trained with 8 spatial filters
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="spatial.weight.*shape"):
        evaluate(bad, data["ds"], plots=False)
    with pytest.raises(CheckpointError, match="format"):
        (bad / "config.json").write_text(json.dumps({"format": "something-else"}))
        evaluate(bad, data["ds"], plots=False)


def test_other_split_of_the_training_data_is_refused(data: dict) -> None:
    with pytest.raises(ValueError, match="trained on split 'block'.*--split block"):
        evaluate(data["pixel"], data["ds"], split="zero_shot", plots=False)


def test_export_embeddings_npz_and_json(data: dict, tmp_path: Path) -> None:
    path = export_embeddings(data["pixel"], data["ds"], tmp_path / "emb", split="block", part="test")
    assert path.suffix == ".npz"
    ds: EpochDataset = data["ds"]
    test = ds.split("block")["test"]
    with np.load(path, allow_pickle=False) as z:
        assert z["embeddings"].shape == (len(test), PIXEL.embed_dim) and z["embeddings"].dtype == np.float32
        np.testing.assert_array_equal(z["index"], test)
        np.testing.assert_array_equal(z["label"], ds.labels[test])
        assert list(z["image_id"]) == [ds.image_ids[i] for i in test]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["embed_dim"] == PIXEL.embed_dim and meta["split"]["part"] == "test"
    assert meta["dataset_fingerprint"] == ds.fingerprint() and meta["class_names"] == list(ds.class_names)
    everything = export_embeddings(data["pixel"], data["ds"], tmp_path / "all.npz")
    with np.load(everything, allow_pickle=False) as z:
        assert len(z["index"]) == len(ds)


def test_tsne_separates_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(3, 20))
    labels = np.repeat(np.arange(3), 30)
    y = tsne(centres[labels] + rng.normal(size=(90, 20)), perplexity=10, n_iter=300)
    means = np.stack([y[labels == c].mean(axis=0) for c in range(3)])
    spread = max(np.linalg.norm(y[labels == c] - means[c], axis=1).mean() for c in range(3))
    gaps = min(np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3))
    assert gaps > 2 * spread


def test_oracle_on_a_simulated_dataset(tmp_path: Path) -> None:
    from offline.data.build import SimulationOptions, epochs_from_simulation

    report = epochs_from_simulation(tmp_path / "sim.zarr", SimulationOptions(n_classes=4, n_per_class=3, n_blocks=3,
                                                                             snr=1.0, seed=0), splits=("block",))
    ds = EpochDataset.open(report.path)
    ckpt = tmp_path / "pixel"
    train_pixel(ds, ckpt, options=PIXEL, settings=TrainSettings(epochs=1, batch_size=8, progress=False))
    ev = evaluate(ckpt, ds, part="train", plots=False, baseline=False)
    oracle = ev["scores"]["oracle"]
    assert ev["synthetic_world"] is True
    assert set(oracle) == {"4-way top-1"}  # top-5 of 4 candidates is not reported
    assert oracle["4-way top-1"]["value"] >= 0.75 and oracle["4-way top-1"]["chance"] == pytest.approx(0.25)


def test_zero_shot_split_reports_zero_shot_accuracy(data: dict, clip_dir: Path, tmp_path: Path) -> None:
    from offline.training.tasks.sample import SampleOptions, train_sample

    out = tmp_path / "zs"
    train_sample(data["ds"], out, split="zero_shot", clip_weights=clip_dir,
                 options=SampleOptions(loss="infonce", model_params=SMALL_NET),
                 settings=TrainSettings(epochs=1, **FAST))
    report = evaluate(out, data["ds"], plots=False)  # split and CLIP weights come from the checkpoint
    protocol = report["protocol"]
    assert protocol["name"] == "zero_shot" and protocol["zero_shot"] and protocol["n_classes_part"] == 2
    assert "classes never seen in training" in protocol["description"]
    zs = report["scores"]["model"]["zero-shot 2-way top-1"]
    assert zs["chance"] == pytest.approx(0.5) and 0 <= zs["value"] <= 1
    assert "zero-shot 2-way top-1" in report["scores"]["ridge"]


def _cli():
    import argparse

    from bci.cli.main import _add_parser
    from offline.cli.train import register_evaluate, register_train

    parser = argparse.ArgumentParser(prog="bci")
    sub = parser.add_subparsers(dest="command")
    train = _add_parser(sub, "train", "train a model", "bci train pixel --data ds --out dir")
    register_train(train.add_subparsers(dest="what"), _add_parser)
    register_evaluate(sub, _add_parser)
    return parser


def test_cli_train_config_file_flags_and_evaluate(data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "pixel.toml"
    cfg.write_text("batch_size = 24\nlr = 0.003\nembed_dim = 16\nepochs = 5\npatience = 0\n"
                   "[model_params]\nn_spatial = 8\nn_separable = 16\n")
    out = tmp_path / "cli-pixel"
    parser = _cli()
    args = parser.parse_args(["train", "pixel", "--data", str(data["ds"].path), "--out", str(out), "--config", str(cfg),
                              "--epochs", "2", "--seed", "3", "--quiet"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "best val_accuracy" in printed and f"bci evaluate {out}" in printed
    training = read_config_extra(out)["training"]
    assert training["epochs"] == 2 and training["seed"] == 3  # flags win over the file
    assert training["batch_size"] == 24 and training["options"]["embed_dim"] == 16  # the file wins over defaults
    args = parser.parse_args(["evaluate", str(out), "--data", str(data["ds"].path), "--out", str(tmp_path / "ev"),
                              "--no-plots"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "6-way top-1" in printed and "chance" in printed and (tmp_path / "ev" / REPORT_FILE).is_file()

    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 0.1\n")
    args = parser.parse_args(["train", "pixel", "--data", str(data["ds"].path), "--out", str(tmp_path / "b"),
                              "--config", str(bad)])
    with pytest.raises(ValueError, match="unknown keys \\['learning_rate'\\].*'lr'"):
        args.func(args)


def read_config_extra(path: Path) -> dict:
    from bci.models import read_config

    return read_config(path).extra
