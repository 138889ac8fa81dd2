"""Inference: device selection, the Encoder (scaler, batching, warm-up, head), stream checks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from bci.runtime.inference import WARMUP_BATCH_SIZES, Encoder, measure_latency, select_device
from bci.models import EncoderModel, build_model, default_config, load_checkpoint, save_checkpoint

NAMES = [f"E{i}" for i in range(128)]


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Encoder(threads=...) is process-wide: restore the setting after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _model(name: str = "eeg_convnet", seed: int = 0, **overrides) -> EncoderModel:
    torch.manual_seed(seed)
    return build_model(default_config(name, **overrides)).eval()


def _windows(batch: int, n_chans: int = 128, n_times: int = 440, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, n_chans, n_times)).astype(np.float32)


# ---------------------------------------------------------------------- devices
def test_select_device_cpu_and_auto_without_cuda(no_cuda: None) -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("request_", ["cuda", "cuda:0"])
def test_select_device_cuda_without_cuda_is_a_clear_error(no_cuda: None, request_: str) -> None:
    with pytest.raises(ValueError, match=rf"device='{request_}' was requested but CUDA is not available: .*--device cpu"):
        select_device(request_)


def test_select_device_rejects_unknown_strings() -> None:
    with pytest.raises(ValueError, match=r"device='gpu' is not one of 'auto', 'cpu', 'cuda', 'cuda:N'"):
        select_device("gpu")
    with pytest.raises(TypeError, match="device=0 must be a string"):
        select_device(0)  # type: ignore[arg-type]


def test_encoder_auto_device_is_cpu_without_cuda(no_cuda: None) -> None:
    enc = Encoder(_model(), warmup=0)
    assert enc.device == torch.device("cpu")
    assert not enc.compiled and not enc.uses_cuda_graph


# ---------------------------------------------------------------------- encoding
def test_batch_results_equal_per_window_results() -> None:
    model = _model()
    enc = Encoder(model, device="cpu", warmup=1)
    x = _windows(5)
    batch = enc(x)["embedding"]
    assert batch.shape == (5, 512) and batch.dtype == np.float32
    singles = np.stack([enc(x[i])["embedding"] for i in range(5)])
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        direct = model(torch.from_numpy(x))["embedding"].numpy()
    np.testing.assert_allclose(batch, direct, rtol=1e-5, atol=1e-6)


def test_single_window_gives_unbatched_outputs() -> None:
    enc = Encoder(_model(n_classes=3), device="cpu", warmup=0)
    out = enc(_windows(1)[0])
    assert out["embedding"].shape == (512,) and out["scores"].shape == (3,)


def test_large_batches_are_chunked_with_identical_results() -> None:
    enc = Encoder(_model("fmri_mlp"), device="cpu", warmup=0, max_batch=2)
    x = _windows(5, 967, 1)
    whole = Encoder(_model("fmri_mlp"), device="cpu", warmup=0)(x)["embedding"]
    np.testing.assert_allclose(enc(x)["embedding"], whole, rtol=1e-5, atol=1e-6)


def test_empty_batch_gives_empty_outputs() -> None:
    enc = Encoder(_model(n_classes=4), device="cpu", warmup=0)
    out = enc(np.zeros((0, 128, 440), np.float32))
    assert out["embedding"].shape == (0, 512) and out["scores"].shape == (0, 4)


def test_scores_are_the_softmax_of_the_head() -> None:
    model = _model(n_classes=4, labels=["a", "b", "c", "d"])
    enc = Encoder(model, device="cpu", warmup=0)
    x = _windows(3)
    out = enc(x)
    assert set(out) == {"embedding", "scores"}
    np.testing.assert_allclose(out["scores"].sum(axis=1), 1.0, rtol=1e-5)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x))["logits"]
    np.testing.assert_allclose(out["scores"], torch.softmax(logits, -1).numpy(), rtol=1e-5, atol=1e-7)
    assert enc.config.labels == ["a", "b", "c", "d"]


def test_the_checkpoint_scaler_is_applied(tmp_path) -> None:
    model = _model("fmri_mlp")
    rng = np.random.default_rng(3)
    mean, std = rng.normal(size=967), rng.uniform(0.5, 2.0, size=967)
    model.set_metadata(scaler={"mean": mean.tolist(), "std": std.tolist()})
    enc = Encoder(load_checkpoint(save_checkpoint(model, tmp_path / "ck")), device="cpu", warmup=0)
    x = (rng.normal(size=(4, 967, 1)) * 3 + 1).astype(np.float32)
    scaled = ((x - mean[None, :, None]) / std[None, :, None]).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(scaled))["embedding"].numpy()
    np.testing.assert_allclose(enc(x)["embedding"], expected, rtol=1e-4, atol=1e-5)
    unscaled = Encoder(_model("fmri_mlp"), device="cpu", warmup=0)(x)["embedding"]
    assert not np.allclose(unscaled, expected, atol=1e-3)


def test_scalar_scaler_broadcasts_over_channels() -> None:
    model = _model("fmri_mlp")
    model.set_metadata(scaler={"mean": 1.0, "std": 2.0})
    enc = Encoder(model, device="cpu", warmup=0)
    x = _windows(2, 967, 1)
    with torch.inference_mode():
        expected = model(torch.from_numpy((x - 1.0) / 2.0))["embedding"].numpy()
    np.testing.assert_allclose(enc(x)["embedding"], expected, rtol=1e-5, atol=1e-6)


def test_other_dtypes_and_read_only_arrays_are_accepted_without_warnings() -> None:
    enc = Encoder(_model(), device="cpu", warmup=0)
    x = _windows(2)
    ref = enc(x)["embedding"]
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_allclose(enc(ro)["embedding"], ref)
    np.testing.assert_allclose(enc(x.astype(np.float64))["embedding"], ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(enc(np.asfortranarray(x))["embedding"], ref, rtol=1e-6, atol=1e-7)
    assert np.array_equal(ro, x)  # the caller's data is never modified


def test_bad_inputs_are_clear_errors() -> None:
    enc = Encoder(_model(), device="cpu", warmup=0)
    with pytest.raises(ValueError, match=r"shape \(2, 64, 440\) but the model 'eeg_convnet' expects \(batch, 128, 440\)"):
        enc(np.zeros((2, 64, 440), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        enc([[0.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="real numbers"):
        enc(np.zeros((1, 128, 440), complex))


def test_bad_encoder_arguments_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="registered model"):
        Encoder(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compile='yes' must be True, False or 'auto'"):
        Encoder(_model(), device="cpu", compile="yes", warmup=0)
    with pytest.raises(ValueError, match="warmup=-1 must be an integer >= 0"):
        Encoder(_model(), device="cpu", warmup=-1)
    with pytest.raises(ValueError, match="threads=0 must be an integer >= 1"):
        Encoder(_model(), device="cpu", threads=0)


def test_compile_is_off_by_default_on_cpu_and_explicit_failures_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def fake_compile(module: torch.nn.Module, **kwargs: object):
        calls.append(module)

        def broken(x: torch.Tensor) -> dict[str, torch.Tensor]:
            raise RuntimeError("inductor exploded")

        return broken

    monkeypatch.setattr(torch, "compile", fake_compile)
    enc = Encoder(_model(), device="cpu", warmup=1)
    assert calls == [] and not enc.compiled
    with pytest.raises(RuntimeError, match="inductor exploded"):
        Encoder(_model(), device="cpu", compile=True, warmup=1)
    assert len(calls) == 1


def test_threads_sets_torch_threads_and_defaults_to_one_on_cpu() -> None:
    torch.set_num_threads(2)
    enc = Encoder(_model("fmri_mlp"), device="cpu", warmup=0, threads=2)
    assert torch.get_num_threads() == 2 and enc.threads == 2
    enc = Encoder(_model("fmri_mlp"), device="cpu", warmup=0)
    assert torch.get_num_threads() == 1 and enc.threads == 1


# ---------------------------------------------------------------------- warm-up
def _count_forwards(model: torch.nn.Module) -> list[int]:
    batches: list[int] = []
    model.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    return batches


def test_warm_up_runs_batch_one_and_typical_batch_sizes_at_start() -> None:
    model = _model()
    batches = _count_forwards(model)
    enc = Encoder(model, device="cpu", warmup=3)
    assert batches == [1, 1, 1, *WARMUP_BATCH_SIZES]
    assert enc.warmup_calls == 3 + len(WARMUP_BATCH_SIZES)
    enc(_windows(1))
    assert batches[-1] == 1 and len(batches) == 4 + len(WARMUP_BATCH_SIZES)


def test_warm_up_can_be_disabled() -> None:
    model = _model()
    batches = _count_forwards(model)
    enc = Encoder(model, device="cpu", warmup=0)
    assert batches == [] and enc.warmup_calls == 0


def test_encoder_puts_the_model_in_eval_mode() -> None:
    model = _model(n_classes=2)
    model.train()
    enc = Encoder(model, device="cpu", warmup=0)
    x = _windows(2)
    np.testing.assert_array_equal(enc(x)["embedding"], enc(x)["embedding"])  # dropout off


# ---------------------------------------------------------------------- stream checks
@pytest.fixture
def named_encoder() -> Encoder:
    model = _model()
    model.set_metadata(ch_names=NAMES)
    return Encoder(model, device="cpu", warmup=0)


def test_matching_stream_passes(named_encoder: Encoder) -> None:
    named_encoder.check_stream(128, 1000.0, NAMES, stream_name="EEG")
    named_encoder.check_stream(128, 1000, None)


def test_channel_count_mismatch_names_both(named_encoder: Encoder) -> None:
    with pytest.raises(ValueError, match=r"stream 'EEG' has 64 channels but the model 'eeg_convnet' expects 128; .*retrain"):
        named_encoder.check_stream(64, 1000.0, stream_name="EEG")


def test_rate_mismatch_names_both(named_encoder: Encoder) -> None:
    with pytest.raises(ValueError, match=r"stream 'EEG' gives windows at 500.0 Hz .* expects 1000 Hz; resample"):
        named_encoder.check_stream(128, 500.0, stream_name="EEG")


def test_count_and_rate_mismatch_are_reported_together(named_encoder: Encoder) -> None:
    with pytest.raises(ValueError, match=r"has 32 channels .*; the stream gives windows at 250"):
        named_encoder.check_stream(32, 250.0)


def test_channel_name_mismatch_lists_missing_channels(named_encoder: Encoder) -> None:
    names = ["X1", "X2", *NAMES[2:]]
    with pytest.raises(ValueError, match=r"2 model channels missing from the stream \(e.g. \['E0', 'E1'\]\), 2 stream channels unknown to the model \(e.g. \['X1', 'X2'\]\)"):
        named_encoder.check_stream(128, 1000.0, names, stream_name="EEG")


def test_channel_order_mismatch_is_reported(named_encoder: Encoder) -> None:
    names = [NAMES[1], NAMES[0], *NAMES[2:]]
    with pytest.raises(ValueError, match=r"different order \(position 0: stream 'E1', model 'E0'\)"):
        named_encoder.check_stream(128, 1000.0, names)


def test_names_are_not_checked_when_the_model_has_none() -> None:
    Encoder(_model(), device="cpu", warmup=0).check_stream(128, 1000.0, [f"Z{i}" for i in range(128)])


# ---------------------------------------------------------------------- latency helper
def test_measure_latency_reports_percentiles() -> None:
    enc = Encoder(_model("fmri_mlp"), device="cpu", warmup=1)
    stats = measure_latency(enc, n_calls=5)
    assert set(stats) == {"p50", "p90", "p99", "mean", "max"}
    assert 0 < stats["p50"] <= stats["p99"] <= stats["max"]


# ---------------------------------------------------------------------- CUDA (GPU machines only)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("graph", [True, False])
def test_cuda_encoder_matches_cpu(graph: bool) -> None:
    scaler = {"mean": 0.5, "std": 2.0}
    cpu_model, gpu_model = _model(n_classes=3), _model(n_classes=3)  # same seed: same weights
    for m in (cpu_model, gpu_model):
        m.set_metadata(scaler=scaler)
    x = _windows(4)
    ref = Encoder(cpu_model, device="cpu", warmup=0)(x)
    gpu = Encoder(gpu_model, device="cuda", compile=False, cuda_graph=graph, warmup=2)
    assert gpu.device.type == "cuda" and gpu.uses_cuda_graph is graph
    batch = gpu(x)
    singles = [gpu(x[i]) for i in range(4)]
    for key in ("embedding", "scores"):
        np.testing.assert_allclose(batch[key], ref[key], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(np.stack([s[key] for s in singles]), ref[key], rtol=1e-3, atol=1e-4)
