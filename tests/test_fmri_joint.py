"""fMRI dual encoder (stimulus CNN), pattern decoder and multi-subject model: real training on small simulations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.models import load_checkpoint, read_config
from bci.models.checkpoint import CheckpointError
from bci.models.stimulus import (StimulusCNN, StimulusConfig, images_to_grey, load_stimulus_encoder,
                                 save_stimulus_encoder)
from offline.data.epochs import EpochDataset
from offline.training.loop import TrainSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fmri(tmp: Path, name: str, *, seed: int = 0, n_voxels: int = 300, n_train: int = 120, grid: int = 10,
          snr: float = 3.0, test_repeats: int = 2) -> Path:
    from offline.data.fmri import FMRIDesign, FMRISubject, fmri_dataset_from_simulation

    return fmri_dataset_from_simulation(tmp / name, FMRIDesign(n_train=n_train, block_size=20, val_blocks=1,
                                                               test_repeats=test_repeats, grid=grid),
                                        FMRISubject(n_voxels=n_voxels, snr=snr, seed=seed))


@pytest.fixture(scope="module")
def fmri_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fmri(tmp_path_factory.mktemp("fmri"), "a.zarr", seed=0, n_voxels=300)


@pytest.fixture(scope="module")
def fmri_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fmri(tmp_path_factory.mktemp("fmri"), "b.zarr", seed=1, n_voxels=240)


def _settings(epochs: int) -> TrainSettings:
    return TrainSettings(epochs=epochs, batch_size=24, lr=1e-3, patience=0, progress=False)


# ----------------------------------------------------------------------------- stimulus CNN
def test_stimulus_encoder_round_trip_and_refusals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = StimulusCNN(StimulusConfig(image_size=12, channels=(8, 16), embed_dim=32))
    images = (np.random.default_rng(0).random((5, 60, 60, 3)) * 255).astype(np.uint8)
    before = model.embed_images(images)
    assert before.shape == (5, 32) and before.dtype == np.float32
    save_stimulus_encoder(model, tmp_path / "stim")
    loaded = load_stimulus_encoder(tmp_path / "stim")
    np.testing.assert_allclose(loaded.embed_images(images), before, rtol=1e-5, atol=1e-6)
    assert images_to_grey(images, 12).shape == (5, 1, 12, 12)
    with pytest.raises(ValueError, match=r"shape \(5, 60\)"):
        images_to_grey(images[:, :, 0, 0], 12)
    cfg = json.loads((tmp_path / "stim" / "config.json").read_text())
    (tmp_path / "stim" / "config.json").write_text(json.dumps({**cfg, "embed_dim": 64}))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_stimulus_encoder(tmp_path / "stim")
    (tmp_path / "stim" / "config.json").write_text(json.dumps({**cfg, "format": "bci-runtime.checkpoint"}))
    with pytest.raises(CheckpointError, match="format 'bci-runtime.checkpoint'"):
        load_stimulus_encoder(tmp_path / "stim")
    (tmp_path / "stim" / "config.json").write_text(json.dumps({**cfg, "depth": 3}))
    with pytest.raises(CheckpointError, match="unknown keys \\['depth'\\]"):
        load_stimulus_encoder(tmp_path / "stim")
    (tmp_path / "stim" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "stim" / "evil.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match="pickle"):
        load_stimulus_encoder(tmp_path / "stim")
    with pytest.raises(ValueError, match="channels"):
        StimulusConfig(channels=())


# ----------------------------------------------------------------------------- objectives
def test_pattern_decoder_learns_the_patterns(fmri_a: Path, tmp_path: Path) -> None:
    from offline.evaluation.evaluate import evaluate, format_report
    from offline.training.tasks.fmri_joint import FMRIJointOptions, train_fmri_joint

    out = tmp_path / "pattern"
    result = train_fmri_joint(fmri_a, out, options=FMRIJointOptions(objective="pattern", hidden=[128]),
                              settings=_settings(12))
    cfg = read_config(out)
    assert cfg.name == "fmri_mlp" and cfg.embed_dim == 100 and cfg.n_chans == 300
    assert cfg.extra["embedding_space"] == "pattern" and cfg.extra["pattern_grid"] == 10
    assert result.best_metric > 3 / 40  # 40 validation patterns
    report = evaluate(out, fmri_a, out_dir=tmp_path / "eval")
    top1 = report["scores"]["model"]["image 12-way top-1"]
    assert top1["chance"] == pytest.approx(1 / 12) and top1["value"] > 3 / 12
    assert report["scores"]["ridge"]["image 12-way top-1"]["value"] > 3 / 12
    assert report["scores"]["oracle"]["image 12-way top-1"]["value"] > 0.5
    rec = report["reconstruction"]
    assert rec["binary_stimuli"] and rec["model"]["pixel accuracy"]["value"] > 0.55
    assert rec["model"]["PixCorr"]["value"] > rec["model"]["PixCorr"]["chance"] + 0.05
    assert (tmp_path / "eval" / "reconstruction_grid.png").stat().st_size > 1000
    text = format_report(report)
    assert "decoded 10x10 patterns" in text and "pixel accuracy" in text and "reconstruction_grid.png" in text


def test_dual_encoder_with_stimulus_cnn(fmri_a: Path, tmp_path: Path) -> None:
    from offline.evaluation.evaluate import evaluate
    from offline.training.tasks.fmri_joint import FMRIJointOptions, train_fmri_joint

    out = tmp_path / "dual"
    options = FMRIJointOptions(objective="dual", embed_dim=64, hidden=[128], stimulus_size=10,
                               stimulus_channels=[16, 32])
    result = train_fmri_joint(fmri_a, out, options=options, settings=_settings(15))
    assert (out / "stimulus" / "model.safetensors").is_file()
    extra = read_config(out).extra
    assert extra["embedding_space"] == "stimulus" and extra["stimulus_encoder"] == "stimulus"
    assert result.best_metric > 2 / 40
    report = evaluate(out, fmri_a, plots=False)
    model = report["scores"]["model"]
    assert model["image 12-way top-1"]["value"] > 2.5 / 12
    assert "image 12-way top-1" in report["scores"]["ridge"]
    _live_retrieval_with_a_stimulus_gallery(out, fmri_a, tmp_path)
    # the stimulus encoder is needed: a checkpoint that lost it says where it should be
    (out / "stimulus" / "config.json").rename(out / "stimulus" / "config.moved")
    with pytest.raises(CheckpointError, match="no config.json"):
        evaluate(out, fmri_a, plots=False, baseline=False, oracle=False)
    (out / "stimulus" / "config.moved").rename(out / "stimulus" / "config.json")
    torch.manual_seed(5)  # a CNN of the same shape but other weights in its place
    save_stimulus_encoder(StimulusCNN(StimulusConfig(10, (16, 32), 64)), out / "stimulus")
    with pytest.raises(CheckpointError, match="is not the one .* was trained with"):
        evaluate(out, fmri_a, plots=False, baseline=False, oracle=False)


def test_multi_subject_model_shares_the_trunk(fmri_a: Path, fmri_b: Path, tmp_path: Path) -> None:
    from offline.evaluation.evaluate import evaluate
    from offline.training.tasks.fmri_joint import FMRIJointOptions, train_fmri_joint

    out = tmp_path / "multi"
    result = train_fmri_joint([fmri_a, fmri_b], out, options=FMRIJointOptions(objective="pattern", hidden=[96, 64]),
                              settings=_settings(8))
    manifest = json.loads((out / "multisubject.json").read_text())
    assert [s["n_voxels"] for s in manifest["subjects"]] == [300, 240]
    assert {k for k in result.history[-1] if k.startswith("val_top1_")} == {"val_top1_sub-0", "val_top1_sub-1"}
    m0, m1 = load_checkpoint(out / "subjects" / "sub-0"), load_checkpoint(out / "subjects" / "sub-1")
    assert m0.get_config().n_chans == 300 and m1.get_config().n_chans == 240
    s0, s1 = m0.state_dict(), m1.state_dict()
    assert s0["mlp.0.weight"].shape == (96, 300) and s1["mlp.0.weight"].shape == (96, 240)
    shared = [k for k in s0 if not k.startswith("mlp.0.")]
    assert shared and all(torch.equal(s0[k], s1[k]) for k in shared)
    assert not np.allclose(m0.get_config().scaler["mean"][:240], m1.get_config().scaler["mean"])
    report = evaluate(out / "subjects" / "sub-1", fmri_b, plots=False)
    assert report["model"]["subject"] == "sub-1"
    assert report["scores"]["model"]["image 12-way top-1"]["value"] > 2 / 12
    with pytest.raises(CheckpointError, match="multi-subject fMRI model.*sub-0, sub-1"):
        evaluate(out, fmri_a)
    with pytest.raises(ValueError, match="channel"):
        evaluate(out / "subjects" / "sub-0", fmri_b)


def test_pattern_grid_28(tmp_path: Path) -> None:
    from offline.evaluation.dataset_oracle import fmri_oracle_for_dataset
    from offline.data.targets import pattern_targets

    # one presentation of each test pattern: the 28-grid plumbing does not depend on repeats, and the evaluation's
    # SSIM of 28-grid reconstructions (at the stimulus size) costs ~0.4 s per test image here
    path = _fmri(tmp_path, "g28.zarr", n_voxels=200, n_train=40, grid=28, test_repeats=1)
    ds = EpochDataset.open(path)
    assert ds.source["fmri_simulation"]["grid"] == 28
    targets = pattern_targets(np.asarray(ds.images), 28)
    assert targets.shape == (len(ds.images), 784) and set(np.unique(targets)) <= {0.0, 1.0}
    oracle = fmri_oracle_for_dataset(ds, ds.splits["block"]["train"])
    assert oracle is not None and oracle.n_candidates == len(ds.images)
    from offline.evaluation.evaluate import evaluate
    from offline.training.tasks.fmri_joint import FMRIJointOptions, train_fmri_joint

    train_fmri_joint(ds, tmp_path / "dec28", options=FMRIJointOptions(objective="pattern", hidden=[64]),
                     settings=_settings(2))
    cfg = read_config(tmp_path / "dec28")
    assert cfg.embed_dim == 784 and cfg.extra["pattern_grid"] == 28
    report = evaluate(tmp_path / "dec28", ds, plots=False, baseline=False, oracle=False)
    assert report["reconstruction"]["grid"] == 28 and "pixel accuracy" in report["reconstruction"]["model"]


def test_joint_options_are_checked() -> None:
    from offline.training.tasks.fmri_joint import FMRIJointOptions

    with pytest.raises(ValueError, match="objective='ridge'"):
        FMRIJointOptions(objective="ridge")
    with pytest.raises(ValueError, match="hidden=\\[\\] must be a non-empty"):
        FMRIJointOptions(hidden=[])
    with pytest.raises(ValueError, match="grid=1"):
        FMRIJointOptions(grid=1)


def test_joint_training_refuses_eeg(tmp_path: Path) -> None:
    from offline.training.tasks.fmri_joint import train_fmri_joint
    from tests.test_training import make_small_dataset

    dataset = make_small_dataset(tmp_path / "eeg.zarr")
    with pytest.raises(ValueError, match="modality 'eeg'.*fMRI"):
        train_fmri_joint(dataset, tmp_path / "x", settings=_settings(1))


# ----------------------------------------------------------------------------- CLI
# `bci train fmri` runs in this process (the bci_cli fixture): these tests are about flags, messages and exit
# status, and each subprocess spent ~8 s importing torch and open_clip.
def test_cli_train_fmri_objectives_resume_and_errors(fmri_a: Path, tmp_path: Path, bci_cli) -> None:
    out = tmp_path / "cli"
    common = ["train", "fmri", "--data", str(fmri_a), "--out", str(out), "--quiet", "--batch-size", "24"]
    r = bci_cli(*common, "--objective", "pattern", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert "objective 'pattern', 1 subject(s)" in r.stderr and f"bci evaluate {out} --data {fmri_a}" in r.stdout
    r = bci_cli(*common, "--objective", "pattern", "--epochs", "3", "--resume")
    assert r.returncode == 0, r.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    r = bci_cli(*common, "--objective", "dual", "--epochs", "4", "--resume")
    assert r.returncode != 0 and "cannot resume" in r.stderr and "options.objective: 'pattern' -> 'dual'" in r.stderr
    assert "Traceback" not in r.stderr
    r = bci_cli(*common, "--objective", "clip", "--overwrite")
    assert r.returncode != 0 and "--objective clip needs --clip-weights" in r.stderr
    r = bci_cli(*common, "--objective", "dual", "--top-voxels", "50", "--overwrite")
    assert r.returncode != 0 and "--top-voxels" in r.stderr and "'dual'" in r.stderr
    assert "Traceback" not in r.stderr


def _live_retrieval_with_a_stimulus_gallery(ckpt: Path, data: Path, tmp_path: Path) -> None:
    """Runtime side: a gallery embedded by the dual encoder's CNN, used by the live decoding steps."""
    from PIL import Image

    from bci.cli.gallery import build_command
    from bci.runtime.assemble import build_result_steps, load_encoder
    from bci.retrieval.gallery import Gallery, build_gallery
    from bci.retrieval.search import Retriever

    ds = EpochDataset.open(data)
    test = ds.splits["block"]["test"]
    rows = ds.image_rows()
    folder = tmp_path / "patterns"
    folder.mkdir()
    for r in np.unique(rows[test]):
        Image.fromarray(np.asarray(ds.images)[r]).save(folder / f"{ds.image_table_ids[r]}.png")
    build_command(images=folder, out=tmp_path / "gal", synthetic=False, clip="tiny", clip_weights=None, device="cpu",
                  source="image", strict=True, thumb_size=16, image_size=60, batch_size=64, n_per_class=1, seed=0,
                  caption="detailed", name=None, overwrite=False, progress=False, stimulus_encoder=ckpt)
    gallery = Gallery.load(tmp_path / "gal")
    assert gallery.meta["clip"] == "stimulus-cnn" and len(gallery) == 12
    encoder = load_encoder(ckpt, device="cpu")
    (step,) = build_result_steps(encoder, [], gallery=tmp_path / "gal")
    emb = encoder(ds.get_batch(test))["embedding"]
    _, top = Retriever(gallery, k=1).search(emb)
    hits = np.asarray([gallery.ids[i] for i in top[:, 0]]) == np.asarray([ds.image_table_ids[r] for r in rows[test]])
    assert hits.mean() > 2.5 / 12
    torch.manual_seed(99)  # another CNN of the same shape: its gallery must be refused
    other = StimulusCNN(StimulusConfig(image_size=10, channels=(16, 32), embed_dim=64))
    wrong = build_gallery(np.asarray(ds.images)[:4], ["a", "b", "c", "d"], [""] * 4, [""] * 4, embedder=other,
                          thumb_size=0, progress=False)
    wrong.save(tmp_path / "wrong")
    with pytest.raises(ValueError, match="dual encoder whose stimulus CNN has fingerprint"):
        build_result_steps(encoder, [], gallery=tmp_path / "wrong")


def test_stimuli_held_out_for_one_subject_must_be_held_out_for_all(fmri_a: Path, tmp_path: Path) -> None:
    """Multi-subject: another subject training on this subject's test stimuli would inflate its scores."""
    import shutil

    from offline.training.tasks.fmri_joint import train_fmri_joint

    copy = tmp_path / "b.zarr"
    shutil.copytree(fmri_a, copy)
    ds = EpochDataset.open(copy)
    parts = ds.splits["block"]
    blocks = np.asarray(ds.block)
    train_blocks = np.unique(blocks[parts["train"]])
    swapped = {"train": np.sort(np.concatenate([parts["val"], parts["test"]])),
               "val": np.flatnonzero(blocks == train_blocks[0]), "test": np.flatnonzero(blocks == train_blocks[1])}
    ds.add_split("block", swapped, kind="custom", overwrite=True)
    with pytest.raises(ValueError, match="stimulus image.*of the 'val' part of sub-0.*training part of sub-1"):
        train_fmri_joint([fmri_a, copy], tmp_path / "leak", settings=_settings(1))


def test_cli_search_keeps_the_fmri_sub_checkpoints(fmri_a: Path, fmri_b: Path, tmp_path: Path, bci_cli) -> None:
    from offline.evaluation.evaluate import evaluate

    out = tmp_path / "search-dual"
    r = bci_cli("train", "fmri", "--data", str(fmri_a), "--out", str(out), "--objective", "dual", "--search", "2",
             "--epochs", "1", "--quiet", "--embed-dim", "32", "--stimulus-size", "10")
    assert r.returncode == 0, r.stderr
    assert (out / "stimulus" / "model.safetensors").is_file()
    assert "image 12-way top-1" in evaluate(out, fmri_a, plots=False, oracle=False)["scores"]["model"]
    out = tmp_path / "search-multi"
    r = bci_cli("train", "fmri", "--data", str(fmri_a), str(fmri_b), "--out", str(out), "--objective", "pattern",
             "--search", "2", "--epochs", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (out / "multisubject.json").is_file() and not (out / "config.json").exists()
    assert read_config(out / "subjects" / "sub-1").n_chans == 240


def test_model_trained_on_the_dataset_decodes_a_recorded_session(tmp_path: Path) -> None:
    """offline = online for fMRI: a dual encoder trained on ``fmri_dataset_from_simulation`` epochs retrieves the
    geometric patterns of a session of the same simulated subject recorded by ``bci simulate --modality fmri``,
    through the runtime's own windowing (the checkpoint's trained offset) in ``bci replay --decode``."""
    from bci.cli.main import main
    from bci.retrieval.gallery import build_gallery
    from offline.data.fmri import GEOMETRIC_NAMES, pattern_images
    from offline.training.tasks.fmri_joint import FMRIJointOptions, train_fmri_joint
    from streams.synthetic.stimuli import geometric_patterns, make_binary_patterns

    data = _fmri(tmp_path, "ds.zarr", seed=0, n_voxels=967, n_train=160, snr=3.0)
    assert EpochDataset.open(data).attrs["window"]["offset"] == 6.0
    ckpt = tmp_path / "dual"
    options = FMRIJointOptions(objective="dual", embed_dim=64, hidden=[128], stimulus_size=10,
                               stimulus_channels=[16, 32])
    train_fmri_joint(data, ckpt, options=options, settings=_settings(20))
    assert read_config(ckpt).extra["data"]["window"]["offset"] == 6.0

    geometric = np.stack(geometric_patterns(10))
    gallery = tmp_path / "gallery"
    build_gallery(pattern_images(geometric), list(GEOMETRIC_NAMES), list(GEOMETRIC_NAMES), list(GEOMETRIC_NAMES),
                  embedder=load_stimulus_encoder(ckpt / "stimulus"), thumb_size=0, progress=False).save(gallery)
    session, events = tmp_path / "s.zarr", tmp_path / "ev.jsonl"
    assert main(["simulate", "--modality", "fmri", "--duration", "480", "--snr", "3", "--seed", "0",
                 "--out", str(session)]) == 0
    assert main(["replay", str(session), "--decode", "--model", str(ckpt), "--speed", "max", "--gallery",
                 str(gallery), "--topk", "1", "--events", str(events), "--results-stream", "", "--device", "cpu"]) == 0

    shown = make_binary_patterns(40, seed=0)  # what the session showed: 480 s / 12 s per trial
    truth, retrieved = [], []
    for rec in map(json.loads, events.read_text().splitlines()):
        if rec["type"] != "window":
            continue
        assert rec["window_start_index"] == round(rec["marker_time"] / 2.0) + 3  # 6 s after onset, TR 2 s
        match = np.flatnonzero((geometric == shown[int(rec["marker"].split("/")[1][len("pattern"):])]).all(axis=(1, 2)))
        if len(match):
            truth.append(GEOMETRIC_NAMES[match[0]])
            retrieved.append(rec["topk"][0]["id"])
    assert len(truth) >= 15
    accuracy = np.mean(np.asarray(truth) == np.asarray(retrieved))
    assert accuracy > 4 / 9, (accuracy, list(zip(truth, retrieved)))  # chance 1/9

    # a pattern decoder on the same data: every window carries its decoded pattern for the viewer's fMRI panel
    from bci.viewer.images import decode_image_ref

    # and it identifies the geometric patterns by correlation from a gallery built with --pattern-grid
    from PIL import Image

    decoder, events = tmp_path / "pattern", tmp_path / "ev-pattern.jsonl"
    train_fmri_joint(data, decoder, options=FMRIJointOptions(objective="pattern", hidden=[128]),
                     settings=_settings(12))
    folder = tmp_path / "geometric"
    folder.mkdir()
    for name, image in zip(GEOMETRIC_NAMES, pattern_images(geometric)):
        Image.fromarray(image).save(folder / f"{name}.png")
    assert main(["gallery", "build", str(folder), str(tmp_path / "pattern-gallery"), "--pattern-grid", "10",
                 "--no-progress"]) == 0
    assert main(["replay", str(session), "--decode", "--model", str(decoder), "--speed", "max", "--events",
                 str(events), "--results-stream", "", "--device", "cpu", "--topk", "1",
                 "--gallery", str(tmp_path / "pattern-gallery")]) == 0
    correct, truth, retrieved = [], [], []
    for rec in map(json.loads, events.read_text().splitlines()):
        if rec["type"] != "window":
            continue
        image = decode_image_ref(rec["images"]["reconstruction"])
        assert image.shape == (60, 60, 3)  # 10x10 cells of 6 pixels
        cells = image[3::6, 3::6, 0] > 127
        np.testing.assert_array_equal(cells.ravel(), np.asarray(rec["embedding"]) > 0)  # sigmoid(logit) > 0.5
        pattern = shown[int(rec["marker"].split("/")[1][len("pattern"):])]
        correct.append(cells == pattern.astype(bool))
        match = np.flatnonzero((geometric == pattern).all(axis=(1, 2)))
        if len(match):
            truth.append(GEOMETRIC_NAMES[match[0]])
            retrieved.append(rec["topk"][0]["id"])
    assert len(correct) >= 30 and np.mean(correct) > 0.6  # pixel accuracy (0.64 here), chance 0.5, 4000 cells
    accuracy = np.mean(np.asarray(truth) == np.asarray(retrieved))
    assert accuracy > 6 / 9, (accuracy, list(zip(truth, retrieved)))  # 1.0 here; chance 1/9


def test_fmri_dataset_options_check_their_values_when_made() -> None:
    from offline.data.fmri import FMRIDesign, FMRIEpochs, FMRISubject

    assert (FMRIDesign().n_train, FMRISubject().n_voxels, FMRIEpochs().offset) == (400, 967, 6.0)
    with pytest.raises(ValueError, match=r"val_blocks=2 must leave training blocks \(n_train=40 makes 2 blocks"):
        FMRIDesign(n_train=40, block_size=20)
    with pytest.raises(ValueError, match="n_train=3 must be an integer >= 4"):
        FMRIDesign(n_train=3)
    with pytest.raises(TypeError, match="grid=10.0 must be an integer"):
        FMRIDesign(grid=10.0)
    with pytest.raises(ValueError, match="snr=-1 must be >= 0"):
        FMRISubject(snr=-1)
    with pytest.raises(ValueError, match="n_times=0 must be an integer >= 1"):
        FMRIEpochs(n_times=0)
