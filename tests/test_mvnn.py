"""MVNN whitening (bci.preprocessing.mvnn): the fit, training on the train part only, the checkpoint, live == offline.

Real parts: a real epoch dataset on disk, a real (1-epoch) ``bci train sample --mvnn`` run through the CLI entry
point with a real tiny CLIP, ``config.json`` + ``model.safetensors`` loaded back, and the live
:class:`bci.runtime.inference.Encoder` on raw windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.cli.main import main
from bci.models import load_checkpoint, save_checkpoint
from bci.preprocessing.mvnn import NoiseWhitener, ledoit_wolf_shrinkage
from offline.data.epochs import EpochDataset
from tests.test_training import SMALL_NET, clip_dir, make_small_dataset  # noqa: F401  (clip_dir: a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _repeated(n_conditions: int = 60, reps: int = 6, n_chans: int = 6, n_times: int = 20,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of repeated conditions: a condition pattern + correlated noise (covariance ``mix @ mix.T``)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(n_chans, n_chans)) + 2 * np.eye(n_chans)
    signal = rng.normal(size=(n_conditions, n_chans, n_times)) * 3
    noise = np.einsum("cd,ndt->nct", mix, rng.normal(size=(n_conditions * reps, n_chans, n_times)))
    conditions = np.repeat(np.arange(n_conditions), reps)
    return (signal[conditions] + noise).astype(np.float32), conditions, mix @ mix.T


def test_whitened_training_noise_has_identity_covariance() -> None:
    x, cond, true_cov = _repeated()
    w = NoiseWhitener.fit(x, cond)
    assert w.record["n_conditions"] == 60 and w.record["repetitions"] == [6, 6] and 0 <= w.record["shrinkage"] < 0.1
    y = w.transform(x).astype(np.float64)
    resid = y - y.reshape(60, 6, *y.shape[1:]).mean(axis=1).repeat(6, axis=0)
    cov = np.einsum("nct,ndt->cd", resid, resid) / (len(y) * y.shape[2]) * 6 / 5
    np.testing.assert_allclose(cov, np.eye(6), atol=0.1)
    raw = np.einsum("cd,de,ef->cf", w.matrix, true_cov, w.matrix)          # W Σ W: the true noise, whitened
    assert np.abs(raw - np.eye(6)).max() < 0.2 and np.abs(true_cov - np.eye(6)).max() > 1
    # the analytic Ledoit-Wolf intensity: a scaled identity needs no shrinkage; 2 samples of 6 channels need much
    assert ledoit_wolf_shrinkage(np.eye(6), np.eye(6) / 6) == 0.0
    z = np.random.default_rng(1).normal(size=(2, 6))
    assert ledoit_wolf_shrinkage(z, z.T @ z / 2) > 0.5


@pytest.mark.parametrize("how, match", [
    ("once", r"needs repetitions of the same image.*60 condition\(s\) of the 60 training window\(s\) are seen at "
             r"most 1 time"),
    ("duplicate", r"noise covariance of the 6 channels is singular \(rank 5.*flat or a copy"),
    ("identical", r"repetitions of every image are identical"),
    ("nan", "NaN or infinite"),
    ("shape", r"windows of shape \(360, 6\) must be"),
    ("conditions", "59 conditions for 360 windows"),
])
def test_bad_input_is_refused_with_a_clear_error(how: str, match: str) -> None:
    x, cond, _ = _repeated()
    if how == "once":
        x, cond = x[::6], cond[::6]
    elif how == "duplicate":
        x[:, 5] = x[:, 0]
    elif how == "identical":
        x = np.repeat(x[::6], 6, axis=0)
    elif how == "nan":
        x[3, 2, 1] = np.nan
    elif how == "shape":
        x = x[:, :, 0]
    elif how == "conditions":
        cond = np.arange(59)
    with pytest.raises(ValueError, match=match):
        NoiseWhitener.fit(x, cond)
    with pytest.raises(TypeError, match="expected real-valued"):
        NoiseWhitener.fit(x.astype(complex), cond)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, clip_dir: Path) -> tuple[EpochDataset, Path]:  # noqa: F811
    """``bci train sample --mvnn`` (CLI entry point, 1 epoch) on a small dataset with repeated images."""
    root = tmp_path_factory.mktemp("mvnn")
    ds = make_small_dataset(root / "small.zarr")
    out = root / "model"
    params = root / "params.json"
    params.write_text(json.dumps({"model_params": SMALL_NET}))
    assert main(["train", "sample", "--data", str(ds.path), "--out", str(out), "--clip-weights", str(clip_dir),
                 "--epochs", "1", "--mvnn", "--config", str(params), "--quiet"]) == 0
    return ds, out


def _standardised(ds: EpochDataset, idx: np.ndarray, scaler: dict) -> np.ndarray:
    x = ds.get_batch(idx).astype(np.float32)
    mean, std = (np.asarray(scaler[k], np.float32)[None, :, None] for k in ("mean", "std"))
    return (x - mean) / std


def test_fitted_on_the_training_part_only_and_stored(trained: tuple[EpochDataset, Path]) -> None:
    ds, out = trained
    config = json.loads((out / "config.json").read_text())
    record = config["scaler"]["mvnn"]
    train = np.sort(ds.split("block")["train"])
    assert record["fitted_on"] == "the training part" and record["n_windows"] == len(train)
    model = load_checkpoint(out)
    stored = model.mvnn_whitening.numpy()
    ids = np.asarray(ds.image_ids)
    expected = NoiseWhitener.fit(_standardised(ds, train, config["scaler"]), ids[train]).matrix
    np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-7)
    everything = np.arange(ds.n_epochs)                                  # what a leaking fit would store
    leaked = NoiseWhitener.fit(_standardised(ds, everything, config["scaler"]), ids).matrix
    assert np.abs(stored - leaked).max() > 1e-3


def test_round_trip_and_live_equals_offline(trained: tuple[EpochDataset, Path], tmp_path: Path) -> None:
    from bci.runtime.inference import Encoder

    ds, out = trained
    model = load_checkpoint(out)
    config = model.get_config()
    again = load_checkpoint(save_checkpoint(model, tmp_path / "copy"))
    torch.testing.assert_close(again.mvnn_whitening, model.mvnn_whitening, rtol=0, atol=0)
    assert again.get_config().scaler == config.scaler
    idx = np.arange(8)
    offline = _standardised(ds, idx, config.scaler)
    with torch.inference_mode():
        expected = model(torch.from_numpy(offline))["embedding"].numpy()
    live = Encoder(again, device="cpu", compile=False, cuda_graph=False, warmup=0)
    got = np.stack([live(ds.get_batch([i])[0])["embedding"] for i in idx])  # raw windows, one at a time
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # the live pipeline: a continuous stream of those epochs back to back, a marker at each one's first sample
    from bci.runtime.pipeline import Pipeline
    from bci.runtime.windowing import WindowSpec
    from streams.markers import format_marker

    stream = np.concatenate(list(ds.get_batch(idx)), axis=1).T                # (8 * n_times, n_chans)
    times = 10.0 + np.arange(len(stream)) / ds.sfreq
    pipeline = Pipeline(live, sfreq=ds.sfreq, ch_names=list(ds.ch_names), window=WindowSpec(n_times=ds.n_times,
                                                                                            offset=0.0))
    records = pipeline.push_markers([format_marker(f"img{i}") for i in idx], times[idx * ds.n_times])
    records += pipeline.push_data(stream, times) + pipeline.finish()
    windows = [r for r in records if r["type"] == "window"]
    assert [r["window_start_index"] for r in windows] == (idx * ds.n_times).tolist()
    np.testing.assert_allclose(np.array([r["embedding"] for r in windows]), expected, rtol=1e-4, atol=1e-5)
    model.set_whitening(None)                                            # the same model without its whitening
    with torch.inference_mode():
        unwhitened = model(torch.from_numpy(offline))["embedding"].numpy()
    assert np.abs(unwhitened - expected).max() > 1e-3
    again.set_metadata(scaler={k: v for k, v in config.scaler.items() if k != "mvnn"})
    with pytest.raises(ValueError, match="no 'mvnn' record"):
        save_checkpoint(again, tmp_path / "lost")


def test_evaluate_whitens_the_ridge_input_too(trained: tuple[EpochDataset, Path], clip_dir: Path) -> None:  # noqa: F811
    """``bci evaluate`` on an MVNN checkpoint: the network and the ridge baseline see the same whitened windows."""
    from offline.evaluation.evaluate import _EncoderRun, evaluate

    ds, out = trained
    run = _EncoderRun(out, ds)
    idx = np.arange(5)
    expected = np.matmul(run.model.mvnn_whitening.numpy(), _standardised(ds, idx, run.config.scaler))
    np.testing.assert_allclose(run.scaled(idx), expected, rtol=1e-6, atol=1e-6)
    report = evaluate(out, ds, clip_weights=clip_dir, plots=False, oracle=False)
    assert {"model", "ridge"} <= set(report["scores"])
