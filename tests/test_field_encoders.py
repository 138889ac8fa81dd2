"""The field's encoders in the registry: braindecode's (bd_*), NICE's TSConv and ATM.

Each entry, on a tiny config (4 channels, 100-128 samples at 250 Hz): builds, trains a few steps
on synthetic two-class data (the loss drops, every parameter gets a gradient), round-trips
``config.json`` + ``model.safetensors`` bit-identically, and decodes a simulated session in the
live pipeline (one embedding per marker). Plus the errors: a window too short for a model, a
missing braindecode.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.models import EncoderModel, build_model, default_config, list_models, load_checkpoint, save_checkpoint
from bci.runtime.assemble import load_encoder, pipeline_factory
from bci.runtime.replay import decode_session
from bci.runtime.sinks import ListSink
from streams.session import SessionReader
from streams.simulate import SimulationSpec, simulate_to_session

SFREQ = 250.0
N_CHANS = 4
EMBED = 16

#: Tiny configs (shape and params) that each model can take.
TINY: dict[str, dict] = {
    "bd_eegnet": {"n_times": 128, "F1": 4, "D": 2, "kernel_length": 16},
    "bd_shallow": {"n_times": 100, "n_filters_time": 8, "n_filters_spat": 8, "filter_time_length": 10,
                   "pool_time_length": 20, "pool_time_stride": 10},
    "bd_deep4": {"n_times": 100, "n_filters_time": 4, "n_filters_spat": 4, "filter_time_length": 5,
                 "pool_time_length": 2, "pool_time_stride": 2, "n_filters_2": 8, "filter_length_2": 5,
                 "n_filters_3": 8, "filter_length_3": 5, "n_filters_4": 8, "filter_length_4": 5},
    "bd_eegconformer": {"n_times": 100, "n_filters_time": 8, "filter_time_length": 10, "pool_time_length": 20,
                        "pool_time_stride": 10, "num_layers": 1, "num_heads": 2},
    "bd_atcnet": {"n_times": 100, "conv_block_n_filters": 4, "conv_block_kernel_length_1": 16,
                  "conv_block_kernel_length_2": 8, "conv_block_pool_size_1": 4, "conv_block_pool_size_2": 4,
                  "n_windows": 2, "num_heads": 2, "head_dim": 4, "tcn_depth": 1},
    "nice_tsconv": {"n_times": 100, "n_filters": 8, "temporal_kernel": 11, "pool": 21},
    "atm": {"n_times": 100, "d_model": 32, "n_heads": 2, "d_ff": 32, "n_filters": 8, "temporal_kernel": 11,
            "pool": 11, "n_subjects": 2},
}
FIELD = sorted(TINY)
CH_NAMES = [f"T{i}" for i in range(N_CHANS)]


def _tiny(name: str, seed: int = 0, **changes) -> EncoderModel:
    torch.manual_seed(seed)
    return build_model(default_config(name, n_chans=N_CHANS, sfreq=SFREQ, embed_dim=EMBED, n_classes=2,
                                      labels=["a", "b"], **{**TINY[name], **changes}))


def _two_classes(n_times: int, n: int = 32, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic windows: class 1 carries a 10 Hz burst on channel 0, class 0 noise only (seeded)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.standard_normal((n, N_CHANS, n_times)).astype(np.float32)
    t = np.arange(n_times) / SFREQ
    x[y == 1, 0] += 2.0 * np.sin(2 * np.pi * 10.0 * t).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def _eval_loss(model: EncoderModel, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x)["logits"], y))


@pytest.fixture(scope="module")
def trained() -> dict[str, dict]:
    """Each model trained 8 Adam steps on one synthetic batch; its losses and gradients recorded."""
    out = {}
    for name in FIELD:
        model = _tiny(name)
        x, y = _two_classes(model.n_times)
        before = _eval_loss(model, x, y)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        missing_grad: set[str] = set()
        for step in range(8):
            model.train()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x)["logits"], y).backward()
            if step == 0:
                missing_grad = {n for n, p in model.named_parameters()
                                if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())}
            opt.step()
        out[name] = {"model": model.eval(), "before": before, "after": _eval_loss(model, x, y),
                     "missing_grad": missing_grad}
    return out


def test_the_registry_lists_the_field_encoders() -> None:
    assert set(FIELD) <= set(list_models())


@pytest.mark.parametrize("name", FIELD)
def test_each_trains_on_synthetic_data(name: str, trained: dict) -> None:
    run = trained[name]
    assert run["missing_grad"] == set()
    assert run["after"] < run["before"] - 0.02  # the loss on the batch drops (by >= 0.03 for every entry)


@pytest.mark.parametrize("name", FIELD)
def test_checkpoint_round_trip_gives_bit_identical_outputs(name: str, trained: dict, tmp_path: Path) -> None:
    model = trained[name]["model"]
    model.set_metadata(ch_names=CH_NAMES)
    x, _ = _two_classes(model.n_times, n=4, seed=9)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / name)).eval()
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert set(a) == {"embedding", "logits"} and a["embedding"].shape == (4, EMBED)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> SessionReader:
    path = tmp_path_factory.mktemp("field") / "sim.zarr"
    return SessionReader(simulate_to_session(SimulationSpec(name="FieldSim", duration=5.0, seed=2, sfreq=SFREQ),
                                             path))


@pytest.mark.parametrize("name", FIELD)
def test_each_gives_an_embedding_per_marker_in_the_live_pipeline(name: str, trained: dict, session: SessionReader,
                                                                  tmp_path: Path) -> None:
    key = session.find("type=EEG")
    desc = session.description(key)
    model = trained[name]["model"]
    model.set_metadata(ch_names=list(desc.channel_names)[:N_CHANS])  # the model reads 4 of the stream's channels
    encoder = load_encoder(save_checkpoint(model, tmp_path / "ck"), device="cpu")
    sink = ListSink()
    pipeline = pipeline_factory(encoder, [sink])(desc)
    decode_session(session, pipeline, data_key=key, marker_key=session.marker_keys()[0])
    records = [r for r in sink.records if r["type"] in ("window", "dropped")]
    _, markers = session.markers(session.marker_keys()[0])
    windows = [r for r in records if r["type"] == "window"]
    assert len(records) == len(markers) and len(windows) >= 3
    assert all(len(r["embedding"]) == EMBED and np.isfinite(r["embedding"]).all() for r in windows)


@pytest.mark.parametrize(("name", "n_times"), [("bd_atcnet", 60), ("bd_deep4", 60), ("bd_shallow", 20),
                                               ("bd_eegconformer", 20), ("nice_tsconv", 20)])
def test_a_window_too_short_is_an_error_naming_the_model_and_shape(name: str, n_times: int) -> None:
    with pytest.raises(ValueError, match=rf"model '{name}'.*{N_CHANS} channels x {n_times} samples"):
        _tiny(name, n_times=n_times)


def test_the_default_deep4_and_atcnet_take_the_default_window_but_not_one_sample_less() -> None:
    for name in ("bd_deep4", "bd_atcnet"):
        cfg = default_config(name, n_chans=2, embed_dim=4)
        assert build_model(cfg).n_times == 440
        with pytest.raises(ValueError, match=rf"model '{name}'.*2 channels x 439 samples.*minimum required"):
            build_model(cfg.replace(n_times=439))


def test_the_field_encoders_declare_their_default_shapes() -> None:
    for name in FIELD:
        cfg = default_config(name)
        assert (cfg.n_chans, cfg.n_times) == ((128, 440) if name.startswith("bd_") else (63, 250)), name
    model = build_model(default_config("nice_tsconv"))  # THINGS-EEG2's 63 x 250 at 250 Hz, ViT-H-14's 1024
    assert (model.n_chans, model.n_times, model.sfreq, model.embed_dim) == (63, 250, 250.0, 1024)


def test_a_missing_braindecode_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "braindecode.models", None)  # what an environment without it gives
    with pytest.raises(ImportError, match=r"model 'bd_eegnet' needs braindecode.*pip install 'bci-runtime\[braindecode\]'"):
        _tiny("bd_eegnet")
    with pytest.raises(ValueError):  # the CLI's one-line errors
        _tiny("bd_shallow")


def test_atm_subject_tokens_change_the_embedding_and_bad_ids_are_named() -> None:
    model = _tiny("atm").eval()
    x, _ = _two_classes(model.n_times, n=2)
    with torch.no_grad():
        anyone = model(x)["embedding"]
        first, second = (model(x, torch.tensor([s, s]))["embedding"] for s in (0, 1))
    assert not torch.equal(first, second) and not torch.equal(first, anyone)
    with pytest.raises(ValueError, match=r"subject_ids must lie in \[0, 2\)"):
        model(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one per window"):
        model(x, torch.tensor([0]))
    with pytest.raises(ValueError, match="no subject tokens"):
        _tiny("atm", n_subjects=0)(x, torch.tensor([0, 1]))


def test_eegconformer_passes_on_braindecode_s_warning_on_many_channels() -> None:
    with pytest.warns(UserWarning, match=r"model 'bd_eegconformer'.*64 channels"):
        build_model(default_config("bd_eegconformer", n_chans=65, n_times=100, embed_dim=4,
                                   params={k: v for k, v in TINY["bd_eegconformer"].items() if k != "n_times"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _tiny("bd_eegconformer")
