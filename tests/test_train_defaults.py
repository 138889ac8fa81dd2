"""One source of defaults: ``bci train X`` and the Python call with the same arguments write the same config.json.

Every trainer (``sample``, ``pixel``, ``saliency-gan``, ``fmri`` in each objective and with several subjects,
``clip``) is run once through the CLI entry point (:func:`bci.cli.main.main`, in-process) and once from
Python with only the arguments the command line gave (everything else left to the trainer's defaults), for
one epoch (or two steps) on tiny data. The parsed config files must be equal except for :data:`RUN_SPECIFIC`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bci.cli.main import main
from tests.test_fmri_joint import _fmri
from tests.test_training import clip_dir, make_small_dataset  # noqa: F401  (clip_dir: a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Fields that differ between two identical runs by nature: per-epoch wall-clock seconds of the history
#: (``history[*].seconds``) and the training time of the tiny CLIP (``metrics.train_seconds``).
RUN_SPECIFIC = ("history[*].seconds", "metrics.train_seconds")


def _config(path: Path) -> dict[str, Any]:
    """``path/config.json`` without :data:`RUN_SPECIFIC`, wherever they are nested."""
    data = json.loads((path / "config.json").read_text(encoding="utf-8"))

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: strip(v) for k, v in value.items() if k != "train_seconds"}
            if isinstance(out.get("history"), list):
                out["history"] = [{k: v for k, v in e.items() if k != "seconds"} for e in out["history"]]
            return out
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(copy.deepcopy(data))


def _cli(*args: str) -> None:
    assert main(["train", *args, "--quiet"]) == 0


@pytest.fixture(scope="module")
def eeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("defaults") / "small.zarr"
    make_small_dataset(path)
    return path


@pytest.fixture(scope="module")
def fmri(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("defaults-fmri")
    return (_fmri(root, "a.zarr", seed=0, n_voxels=120, n_train=80),
            _fmri(root, "b.zarr", seed=1, n_voxels=100, n_train=80))


@pytest.fixture(scope="module")
def pixel(eeg: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from offline.training.tasks.pixel import PixelSettings, train_pixel

    root = tmp_path_factory.mktemp("pixel")
    _cli("pixel", "--data", str(eeg), "--out", str(root / "cli"), "--epochs", "1")
    train_pixel(eeg, root / "py", settings=PixelSettings(epochs=1, progress=False))
    return root / "cli", root / "py"


def test_defaults_come_from_the_trainers_dataclasses() -> None:
    from offline.cli.train import command_defaults
    from offline.training.loop import TrainSettings
    from offline.training.tasks.fmri import FMRIOptions, FMRISettings
    from offline.training.tasks.fmri_joint import FMRIJointOptions
    from offline.training.tasks.saliency_gan import GanOptions, GanSettings
    from offline.training.tasks.sample import SampleOptions, SampleSettings

    sample = command_defaults("sample")
    assert sample == {**{k: getattr(SampleSettings(), k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                                   "patience", "min_delta", "grad_clip", "seed",
                                                                   "device")}, **SampleOptions().to_dict()}
    assert (sample["epochs"], sample["patience"]) == (40, 10)  # the values `bci train sample` always used
    gan = command_defaults("saliency-gan")
    assert {k: gan[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "patience", "g_channels")} == {
        "epochs": 100, "batch_size": 32, "lr": 2e-4, "weight_decay": 0.0, "patience": 0, "g_channels": 16}
    assert "d_lr_ratio" not in gan and "d_lr_ratio" in GanOptions().to_dict()  # no flag, no config key
    fmri = command_defaults("fmri")
    settings = FMRISettings()
    assert (fmri["epochs"], fmri["batch_size"], fmri["lr"], fmri["patience"]) == (
        settings.epochs, settings.batch_size, settings.lr, settings.patience) == (80, 32, 3e-4, 20)
    assert fmri["model"] == FMRIOptions().model == "fmri_mlp" and fmri["target"] == "image"
    assert fmri["dropout"] is None and FMRIJointOptions().dropout == 0.3  # None: the joint trainer's 0.3
    assert fmri["objective"] is None and fmri["top_voxels"] is None and "backbone" not in fmri
    assert TrainSettings().epochs == 30 and TrainSettings().patience == 8  # the generic defaults are unchanged


def test_sample(eeg: Path, clip_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from offline.training.tasks.sample import SampleSettings, train_sample

    _cli("sample", "--data", str(eeg), "--out", str(tmp_path / "cli"), "--clip-weights", str(clip_dir),
         "--epochs", "1")
    train_sample(eeg, tmp_path / "py", clip_weights=clip_dir, settings=SampleSettings(epochs=1, progress=False))
    cli = _config(tmp_path / "cli")
    assert cli == _config(tmp_path / "py")
    assert cli["extra"]["training"]["patience"] == 10 and cli["extra"]["training"]["batch_size"] == 64


def test_pixel(pixel: tuple[Path, Path]) -> None:
    cli = _config(pixel[0])
    assert cli == _config(pixel[1])
    assert cli["extra"]["training"]["patience"] == 10


def test_saliency_gan(eeg: Path, pixel: tuple[Path, Path], tmp_path: Path) -> None:
    from offline.training.tasks.saliency_gan import GanSettings, train_saliency_gan

    encoder = pixel[0]
    _cli("saliency-gan", "--data", str(eeg), "--encoder", str(encoder), "--out", str(tmp_path / "cli"),
         "--epochs", "1", "--image-size", "16")
    from offline.training.tasks.saliency_gan import GanOptions

    train_saliency_gan(eeg, encoder, tmp_path / "py", options=GanOptions(image_size=16),
                       settings=GanSettings(epochs=1, progress=False))
    cli = _config(tmp_path / "cli")
    assert cli == _config(tmp_path / "py")


@pytest.mark.parametrize("objective", ["clip", "dual", "pattern"])
def test_fmri_one_subject(objective: str, fmri: tuple[Path, Path], clip_dir: Path,  # noqa: F811
                          tmp_path: Path) -> None:
    from offline.training.tasks.fmri import FMRISettings, train_fmri
    from offline.training.tasks.fmri_joint import FMRIJointOptions, train_fmri_joint

    data = fmri[0]
    args = ["fmri", "--data", str(data), "--out", str(tmp_path / "cli"), "--epochs", "1"]
    settings = FMRISettings(epochs=1, progress=False)
    if objective == "clip":  # the default objective with --clip-weights
        _cli(*args, "--clip-weights", str(clip_dir))
        train_fmri(data, tmp_path / "py", clip_weights=clip_dir, settings=settings)
    elif objective == "dual":  # the default objective without
        _cli(*args)
        train_fmri_joint(data, tmp_path / "py", settings=settings)
    else:
        _cli(*args, "--objective", "pattern")
        train_fmri_joint(data, tmp_path / "py", options=FMRIJointOptions(objective="pattern"), settings=settings)
    cli = _config(tmp_path / "cli")
    assert cli == _config(tmp_path / "py")
    assert cli["extra"]["training"]["batch_size"] == 32 and cli["extra"]["training"]["patience"] == 20


def test_fmri_several_subjects(fmri: tuple[Path, Path], tmp_path: Path) -> None:
    from offline.training.tasks.fmri import FMRISettings
    from offline.training.tasks.fmri_joint import MULTI_MANIFEST, SUBJECTS_DIR, train_fmri_joint

    _cli("fmri", "--data", *map(str, fmri), "--out", str(tmp_path / "cli"), "--epochs", "1")
    train_fmri_joint(list(fmri), tmp_path / "py", settings=FMRISettings(epochs=1, progress=False))
    for k in range(len(fmri)):
        sub = Path(SUBJECTS_DIR) / f"sub-{k}"
        assert _config(tmp_path / "cli" / sub) == _config(tmp_path / "py" / sub)
    manifests = [json.loads((tmp_path / run / MULTI_MANIFEST).read_text(encoding="utf-8")) for run in ("cli", "py")]
    assert manifests[0] == manifests[1]


def test_clip(tmp_path: Path) -> None:
    from offline.training.tasks.clip import train_tiny_clip

    _cli("clip", "--out", str(tmp_path / "cli"), "--steps", "2", "--batch-size", "8", "--image-size", "32")
    train_tiny_clip(tmp_path / "py", steps=2, batch_size=8, image_size=32, progress=False)
    cli = _config(tmp_path / "cli")
    assert cli == _config(tmp_path / "py")
