"""Model registry, configs and safe checkpoints: every entry builds, runs, round-trips; pickles are refused."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bci.preprocessing import ChannelScaler, PreprocessConfig
from bci.models import (
    MODELS,
    CheckpointError,
    EncoderModel,
    ModelConfig,
    build_model,
    default_config,
    list_models,
    load_checkpoint,
    read_config,
    register_model,
    save_checkpoint,
)
from bci.models.checkpoint import FORMAT, FORMAT_VERSION

REPO = Path(__file__).resolve().parents[1]
ALL_MODELS = ["eeg_convnet", "eeg_shallow", "fmri_mlp"]
#: The field's encoders, tested on tiny shapes in tests/test_field_encoders.py.
FIELD_MODELS = ["atm", "bd_atcnet", "bd_deep4", "bd_eegconformer", "bd_eegnet", "bd_shallow", "nice_tsconv"]


def _model(name: str, seed: int = 0, **overrides) -> EncoderModel:
    torch.manual_seed(seed)
    return build_model(default_config(name, **overrides)).eval()


def _input(model: EncoderModel, batch: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.n_chans, model.n_times, generator=gen)


def _randomize_batchnorm(model: torch.nn.Module, seed: int = 3) -> None:
    """Non-trivial running statistics and affine params, as after training."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


# ---------------------------------------------------------------------- registry
def test_registry_lists_the_built_in_models() -> None:
    assert list_models() == sorted(ALL_MODELS + FIELD_MODELS)
    assert set(ALL_MODELS) <= set(MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("batch", [1, 4])
def test_every_entry_builds_and_runs_on_its_declared_shape(name: str, batch: int) -> None:
    model = _model(name)
    cfg = model.get_config()
    assert (model.n_chans, model.n_times, model.sfreq, model.embed_dim) == (
        cfg.n_chans, cfg.n_times, cfg.sfreq, cfg.embed_dim,
    )
    with torch.inference_mode():
        out = model(_input(model, batch))
    assert set(out) == {"embedding"}
    assert out["embedding"].shape == (batch, cfg.embed_dim)
    assert out["embedding"].dtype == torch.float32
    assert torch.isfinite(out["embedding"]).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_classification_head_gives_logits(name: str) -> None:
    model = _model(name, n_classes=5, labels=list("abcde"))
    with torch.inference_mode():
        out = model(_input(model, 3))
    assert out["logits"].shape == (3, 5) and torch.isfinite(out["logits"]).all()
    assert out["embedding"].shape == (3, model.embed_dim)


def test_declared_defaults_match_the_design() -> None:
    eeg = default_config("eeg_convnet")
    assert (eeg.n_chans, eeg.n_times, eeg.sfreq) == (128, 440, 1000.0)
    fmri = _model("fmri_mlp")
    assert (fmri.n_chans, fmri.n_times, fmri.embed_dim) == (967, 1, 512)
    linears = [m for m in fmri.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(967, 1024), (1024, 768), (768, 512)]
    kinds = {type(m) for m in fmri.modules()}
    assert {torch.nn.LayerNorm, torch.nn.SiLU, torch.nn.Dropout} <= kinds
    shallow = _model("eeg_shallow")
    assert 0.6e6 < shallow.n_parameters() < 0.8e6  # ShallowConvNet size at 128 x 440


def test_eeg_convnet_is_a_real_eegnet_style_network() -> None:
    model = _model("eeg_convnet")
    p = model.get_config().params
    assert p["decim"] == 4 and p["temporal_kernel"] == 33  # 1 kHz -> 250 Hz, ~128 ms filters
    assert model.spatial.weight.shape == (p["n_spatial"], 128, 1)  # spatial filters over all electrodes
    assert model.temporal.groups == p["n_spatial"] and model.depthwise.groups == p["n_spatial"]
    assert model.pointwise.weight.shape == (p["n_separable"], p["n_spatial"], 1)
    assert 1e5 < model.n_parameters() < 1e6


def test_eeg_convnet_fast_path_equals_the_plain_eegnet_layer_order() -> None:
    """Spatial-first matmul + unfold depthwise == decimate -> conv layers, as in EEGNet."""
    model = _model("eeg_convnet")
    _randomize_batchnorm(model)
    x = _input(model, 3)
    with torch.no_grad():
        fast = model(x)["embedding"]
        h = model.spatial(model.decimate(x))
        h = model.pool1(model.act(model.bn1(model.temporal(h))))
        h = model.pool2(model.act(model.bn2(model.pointwise(model.depthwise(h)))))
        ref = model.embed_layer(h.flatten(1))
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_models_train_gradients_reach_every_parameter(name: str) -> None:
    model = _model(name, n_classes=3)
    model.train()
    x = _input(model, 4)
    loss = torch.nn.functional.cross_entropy(model(x)["logits"], torch.tensor([0, 1, 2, 0]))
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, f"no gradient reaches {pname}"


def test_fmri_mlp_averages_volumes_over_time() -> None:
    one = _model("fmri_mlp")
    three = build_model(default_config("fmri_mlp", n_times=3)).eval()
    three.load_state_dict(one.state_dict())
    x = _input(one, 2)
    with torch.inference_mode():
        torch.testing.assert_close(three(x.repeat(1, 1, 3))["embedding"], one(x)["embedding"])


def test_forward_rejects_the_wrong_input_shape() -> None:
    model = _model("eeg_convnet")
    with pytest.raises(ValueError, match=r"expects input \(batch, 128, 440\), got \(1, 64, 440\)"):
        model(torch.zeros(1, 64, 440))


def test_short_window_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="n_times"):
        build_model(default_config("eeg_convnet", n_times=40))
    with pytest.raises(ValueError, match="n_times=60 is too short"):
        build_model(default_config("eeg_shallow", n_times=60))


def test_eeg_convnet_adapts_to_other_rates_and_montages() -> None:
    model = _model("eeg_convnet", n_chans=64, n_times=250, sfreq=250.0, embed_dim=128)
    assert model.get_config().params["decim"] == 1
    with torch.inference_mode():
        assert model(_input(model, 2))["embedding"].shape == (2, 128)


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ALL_MODELS)
def test_get_config_from_config_round_trip(name: str) -> None:
    model = _model(name)
    cfg = model.get_config()
    again = type(model).from_config(cfg)
    assert again.get_config() == cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert build_model(cfg).state_dict().keys() == model.state_dict().keys()


def test_get_config_is_a_copy() -> None:
    model = _model("eeg_convnet")
    cfg = model.get_config()
    cfg.params["n_spatial"] = 999
    cfg.extra["x"] = 1
    assert model.get_config().params["n_spatial"] == 32 and "x" not in model.get_config().extra


def test_set_metadata_updates_data_fields_only() -> None:
    model = _model("eeg_convnet", n_chans=2, n_times=440)
    model.set_metadata(scaler={"mean": [0.0, 1.0], "std": [1.0, 2.0]}, extra={"data_hash": "abc"})
    assert model.get_config().scaler == {"mean": [0.0, 1.0], "std": [1.0, 2.0]}
    with pytest.raises(ValueError, match=r"cannot change \['n_chans'\]"):
        model.set_metadata(n_chans=3)


def test_default_config_overrides() -> None:
    cfg = default_config("eeg_convnet", embed_dim=256, dropout=0.5, params={"n_spatial": 16})
    assert cfg.embed_dim == 256 and cfg.params["dropout"] == 0.5 and cfg.params["n_spatial"] == 16
    with pytest.raises(ValueError, match=r"unknown overrides \['colour'\].*n_spatial"):
        default_config("eeg_convnet", colour="red")
    with pytest.raises(ValueError, match=r"unknown model 'nope'; registered models are " + re.escape(str(list_models()))):
        default_config("nope")


def test_unknown_architecture_param_is_named() -> None:
    cfg = ModelConfig("eeg_convnet", 128, 440, 1000.0, 512, params={"n_spatail": 8})
    with pytest.raises(ValueError, match=r"no parameters \['n_spatail'\]; its parameters are .*'n_spatial'"):
        build_model(cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, r"unknown keys \['colour'\]"),
        ({"n_chans": 0}, r"n_chans=0 must be a positive int"),
        ({"sfreq": -1.0}, r"sfreq=-1.0 must be a positive"),
        ({"ch_names": ["a", "b"]}, r"ch_names has 2 names but n_chans=3"),
        ({"ch_names": ["a", "a", "b"]}, r"duplicated names \['a'\]"),
        ({"scaler": {"mean": [0.0] * 3}}, r"scaler is missing \['std'\]"),
        ({"scaler": {"mean": [0.0] * 2, "std": [1.0] * 3}}, r"scaler\['mean'\] must be a number or a list of n_chans=3"),
        ({"scaler": {"mean": 0.0, "std": [1.0, 0.0, 1.0]}}, r"scaler\['std'\] must be > 0"),
        ({"n_classes": 2, "labels": ["a", "b", "c"]}, r"3 labels but n_classes=2"),
    ],
)
def test_config_validation_names_the_bad_field(change: dict, message: str) -> None:
    d = {"name": "eeg_convnet", "n_chans": 3, "n_times": 440, "sfreq": 1000.0, "embed_dim": 8, **change}
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(d)


def test_config_accepts_numpy_values_and_stores_plain_json() -> None:
    cfg = ModelConfig(
        "fmri_mlp", np.int64(3), 1, np.float32(0.5), 8,
        scaler={"mean": np.zeros(3, np.float32), "std": np.float32(2.0), "fit_on": "train"},
    )
    assert cfg.n_chans == 3 and type(cfg.n_chans) is int and cfg.sfreq == 0.5
    assert cfg.scaler == {"mean": [0.0, 0.0, 0.0], "std": 2.0, "fit_on": "train"}
    json.dumps(cfg.to_dict())


def test_config_missing_key_is_named() -> None:
    with pytest.raises(ValueError, match=r"missing \['sfreq'\]"):
        ModelConfig.from_dict({"name": "x", "n_chans": 1, "n_times": 1, "embed_dim": 1})


def test_register_model_rejects_duplicates_and_non_models() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("eeg_convnet")(type("Other", (EncoderModel,), {"default_shape": {}}))
    with pytest.raises(TypeError, match="EncoderModel subclasses"):
        register_model("plain")(object)  # type: ignore[arg-type]
    assert "plain" not in MODELS


def test_a_registered_plugin_model_builds_and_checkpoints(tmp_path: Path) -> None:
    @register_model("test_linear")
    class TinyLinear(EncoderModel):
        default_shape = {"n_chans": 2, "n_times": 3, "sfreq": 10.0, "embed_dim": 4}
        default_params = {"bias": True}

        def _build(self, params: dict) -> None:
            self.lin = torch.nn.Linear(6, self.embed_dim, bias=params["bias"])

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.flatten(1))

    try:
        model = _model("test_linear")
        loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ck"))
        x = _input(model, 2)
        torch.testing.assert_close(loaded(x)["embedding"], model(x)["embedding"], rtol=0, atol=0)
    finally:
        MODELS.pop("test_linear")



def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``), read from its AST."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_model_files_import_the_base_never_the_registry() -> None:
    """braindecode's layout: the registry finds the models; a model file does not import it (no cycle)."""
    model_files = {Path(sys.modules[cls.__module__].__file__) for cls in MODELS.values()
                   if cls.__module__.startswith("bci.models.")}
    assert {p.name for p in model_files} >= {"eeg.py", "fmri.py"}
    for path in model_files:
        imported = _imported_modules(path)
        assert "bci.models.base" in imported, path
        assert not {m for m in imported if m == "bci.models.registry" or m.startswith("bci.models.registry.")}, path
        assert "register_model" not in path.read_text(encoding="utf-8"), path
    registry = _imported_modules(REPO / "bci" / "models" / "registry.py")
    assert not {m for m in registry if m.startswith(("bci.models.eeg", "bci.models.fmri"))}


def test_every_built_in_model_declares_its_name_and_input_shape() -> None:
    from bci.models.registry import models_in

    for name in ALL_MODELS:
        cls = MODELS[name]
        assert cls.__dict__["registry_name"] == name
        assert {"n_chans", "n_times", "sfreq", "embed_dim"} <= set(cls.default_shape)
        assert cls in models_in(sys.modules[cls.__module__])
        model = build_model(default_config(name))
        assert (model.n_chans, model.n_times, model.sfreq) == tuple(cls.default_shape[k]
                                                                    for k in ("n_chans", "n_times", "sfreq"))
        assert build_model(model.get_config()).get_config() == model.get_config()


def test_discovery_finds_models_of_a_package_without_their_registering(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bci.models.registry import discover_models

    pkg = tmp_path / "plugin_models_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(
        "import torch\n"
        "from bci.models.base import EncoderModel\n\n\n"
        "class Tiny(EncoderModel):\n"
        "    registry_name = 'test_discovered_tiny'\n"
        "    default_shape = {'n_chans': 2, 'n_times': 3, 'sfreq': 10.0, 'embed_dim': 4}\n\n"
        "    def _build(self, params):\n"
        "        self.lin = torch.nn.Linear(6, self.embed_dim)\n\n"
        "    def embed(self, x):\n"
        "        return self.lin(x.flatten(1))\n\n\n"
        "class NotRegistered(EncoderModel):\n"
        "    default_shape = {}\n"
    )
    (pkg / "no_shape.py").write_text(
        "from bci.models.base import EncoderModel\n\n\n"
        "class NoShape(EncoderModel):\n"
        "    registry_name = 'test_discovered_no_shape'\n"
        "    default_shape = {'n_chans': 2, 'n_times': 3, 'embed_dim': 4}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(TypeError, match=r"NoShape.default_shape is missing \['sfreq'\]"):
            discover_models("plugin_models_pkg")
        (pkg / "no_shape.py").unlink()
        sys.modules.pop("plugin_models_pkg.no_shape", None)
        assert discover_models("plugin_models_pkg") == ["test_discovered_tiny"]
        assert "test_discovered_tiny" in list_models()
        model = build_model(default_config("test_discovered_tiny"))
        assert model(torch.zeros(1, 2, 3))["embedding"].shape == (1, 4)
    finally:
        MODELS.pop("test_discovered_tiny", None)
        for mod in [m for m in sys.modules if m.startswith("plugin_models_pkg")]:
            sys.modules.pop(mod)
    assert "test_discovered_no_shape" not in MODELS


# ---------------------------------------------------------------------- checkpoints
def _full_metadata(model: EncoderModel) -> None:
    n = model.n_chans
    model.set_metadata(
        ch_names=[f"E{i}" for i in range(n)],
        preprocessing=PreprocessConfig(l_freq=0.5, h_freq=40.0).to_dict(),
        scaler=ChannelScaler(np.full(n, 0.1, np.float32), np.full(n, 2.0, np.float32)).to_dict(),
        extra={"data_hash": "sha256:abc", "metrics": {"top1": 0.5}},
    )


@pytest.mark.parametrize("name", ALL_MODELS)
def test_save_load_round_trip_is_exact(name: str, tmp_path: Path) -> None:
    model = _model(name, n_classes=4, labels=["w", "x", "y", "z"])
    _randomize_batchnorm(model)
    _full_metadata(model)
    path = save_checkpoint(model, tmp_path / "ck")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_checkpoint(path)
    assert not loaded.training and type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    x = _input(model, 4)
    with torch.inference_mode():
        a, b = model(x), loaded(x)
    for key in ("embedding", "logits"):
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_checkpoint_files_are_plain_json_and_safetensors(tmp_path: Path) -> None:
    model = _model("eeg_convnet")
    path = save_checkpoint(model, tmp_path / "ck")
    data = json.loads((path / "config.json").read_text())
    assert data["format"] == FORMAT and data["format_version"] == FORMAT_VERSION
    assert data["name"] == "eeg_convnet" and data["params"]["decim"] == 4
    tensors = load_file(str(path / "model.safetensors"))
    assert tensors.keys() == model.state_dict().keys()
    assert read_config(path) == model.get_config()


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first, second = _model("fmri_mlp", seed=0), _model("fmri_mlp", seed=1)
    save_checkpoint(first, tmp_path / "ck")
    with pytest.raises(FileExistsError, match="already holds a checkpoint.*overwrite=True"):
        save_checkpoint(second, tmp_path / "ck")
    save_checkpoint(second, tmp_path / "ck", overwrite=True)
    loaded = load_checkpoint(tmp_path / "ck")
    torch.testing.assert_close(loaded.state_dict()["mlp.0.weight"], second.state_dict()["mlp.0.weight"])
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.startswith(".")]


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_checkpoint(_model("eeg_convnet", embed_dim=16), tmp_path / "ck")


def _edit_config(path: Path, **changes) -> None:
    data = json.loads((path / "config.json").read_text())
    data.update(changes)
    (path / "config.json").write_text(json.dumps(data))


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint directory .*nowhere does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_missing_config_is_named(ckpt: Path) -> None:
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no config.json; files there: model.safetensors"):
        load_checkpoint(ckpt)


def test_missing_weights_are_named(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"has no model.safetensors"):
        load_checkpoint(ckpt)


def test_newer_format_version_is_refused(ckpt: Path) -> None:
    _edit_config(ckpt, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match=r"format_version 2, newer than this runtime reads \(1\)"):
        load_checkpoint(ckpt)


def test_foreign_format_is_refused(ckpt: Path) -> None:
    _edit_config(ckpt, format="something-else")
    with pytest.raises(CheckpointError, match=r"format 'something-else', expected 'bci-runtime.checkpoint'"):
        load_checkpoint(ckpt)


def test_unknown_model_name_lists_the_registered_ones(ckpt: Path) -> None:
    _edit_config(ckpt, name="eeg_transformer")
    with pytest.raises(CheckpointError, match=r"'eeg_transformer'.*registered models are " + re.escape(str(list_models()))):
        load_checkpoint(ckpt)


def test_weights_that_do_not_fit_name_the_tensor_and_both_shapes(ckpt: Path) -> None:
    _edit_config(ckpt, embed_dim=32)
    with pytest.raises(CheckpointError, match=r"tensor 'embed_layer.weight' has shape \(16, 384\) in the file but the architecture needs \(32, 384\)"):
        load_checkpoint(ckpt)


def test_weights_with_a_missing_tensor_are_named(ckpt: Path) -> None:
    _edit_config(ckpt, n_classes=3)
    with pytest.raises(CheckpointError, match=r"tensor 'head.weight' \(shape \(3, 16\)\) is missing"):
        load_checkpoint(ckpt)


def test_invalid_config_json_is_a_checkpoint_error(ckpt: Path) -> None:
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)
    _edit_config_raw = {"name": "eeg_convnet", "format": FORMAT, "format_version": 1, "n_chans": 0,
                        "n_times": 440, "sfreq": 1000.0, "embed_dim": 16}
    (ckpt / "config.json").write_text(json.dumps(_edit_config_raw))
    with pytest.raises(CheckpointError, match="n_chans=0 must be a positive int"):
        load_checkpoint(ckpt)


@pytest.fixture
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a checkpoint must never unpickle: fail loudly if torch.load is reached."""

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", forbidden)


@pytest.mark.parametrize("filename", ["model.pt", "model.pth", "weights.ckpt", "model.pkl"])
def test_directory_with_only_a_pickle_is_refused(tmp_path: Path, filename: str, no_torch_load: None) -> None:
    ckdir = tmp_path / "old"
    ckdir.mkdir()
    torch.save(_model("fmri_mlp").state_dict(), ckdir / filename)
    with pytest.raises(CheckpointError, match=rf"refusing to load pickle-based checkpoint .*{filename}: pickle can execute code.*save_checkpoint"):
        load_checkpoint(ckdir)


def test_pickle_file_path_is_refused(tmp_path: Path, no_torch_load: None) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="refusing to load pickle-based checkpoint"):
        load_checkpoint(tmp_path / "model.pt")


@pytest.mark.parametrize("zipfile", [True, False])
def test_pickle_disguised_as_safetensors_is_refused(ckpt: Path, zipfile: bool, no_torch_load: None) -> None:
    torch.save(_model("eeg_convnet", embed_dim=16).state_dict(), ckpt / "model.safetensors",
               _use_new_zipfile_serialization=zipfile)
    with pytest.raises(CheckpointError, match=r"refusing to load pickle-based checkpoint .*model.safetensors"):
        load_checkpoint(ckpt)


def test_config_with_pickled_weights_beside_it_is_refused(ckpt: Path, no_torch_load: None) -> None:
    (ckpt / "model.safetensors").unlink()
    torch.save(_model("eeg_convnet", embed_dim=16).state_dict(), ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"refusing to load pickle-based checkpoint .*pytorch_model.bin"):
        load_checkpoint(ckpt)


def test_garbage_weights_file_is_a_clear_error(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(ckpt)


def test_no_unsafe_torch_load_in_the_package() -> None:
    """Static guard over the packages: no pickle.load(s), no weights_only=False, allow_pickle=True only
    behind THINGS-EEG2's --trust-pickle, and every torch.load call passes weights_only=True."""
    call = re.compile(r"""^[^"'#\n]*\btorch\.load\(([^\n]*)$""", re.M)
    n_calls = 0
    for package in ("bci", "offline", "streams"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            assert "weights_only=False" not in text, path
            assert not re.search(r"\bpickle\.loads?\(|^\s*(import|from) (dill|cloudpickle)\b", text, re.M), path
            if path.name != "things_eeg2.py":  # the one opt-in path: `bci import things-eeg2 --trust-pickle`
                assert not re.search(r"^[^\"'#\n]*allow_pickle=True", text, re.M), path
            for match in call.finditer(text):
                n_calls += 1
                assert "weights_only=True" in match.group(1), f"{path}: torch.load without weights_only=True"
    assert n_calls >= 1  # the CLIP loader reads .pt files this way; the guard must see it


def test_safetensors_whose_header_length_looks_like_pickle_magic_loads(tmp_path: Path) -> None:
    """A header length of 0x0280 starts the file with b"\\x80\\x02", a pickle's magic: still safetensors."""
    from safetensors.torch import load_file, save_file

    from bci.models.checkpoint import KIND
    from bci.safe_io import refuse_if_pickle

    path = tmp_path / "model.safetensors"
    for pad in range(0, 2000):
        save_file({"w": torch.zeros(3)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:  # pragma: no cover - the loop above always finds one
        pytest.fail("could not produce a 640-byte safetensors header")
    refuse_if_pickle(path, KIND)  # must not raise
    assert torch.equal(load_file(str(path))["w"], torch.zeros(3))


def test_eeg_convnet_mlp_head_keeps_backbone_names() -> None:
    """head_hidden adds align_head.* after a feature_dim-sized embed_layer; the rest is named as without it."""
    torch.manual_seed(0)
    plain = build_model(default_config("eeg_convnet", n_chans=8, n_times=200, sfreq=250.0, embed_dim=16))
    headed = build_model(default_config("eeg_convnet", n_chans=8, n_times=200, sfreq=250.0, embed_dim=32,
                                        head_hidden=24, feature_dim=16))
    plain_keys = set(plain.state_dict())
    assert plain_keys < set(headed.state_dict())
    assert {k for k in headed.state_dict() if k not in plain_keys} == {
        "align_head.0.weight", "align_head.0.bias", "align_head.3.weight", "align_head.3.bias"}
    headed.load_state_dict(plain.state_dict(), strict=False)
    assert headed(torch.randn(3, 8, 200))["embedding"].shape == (3, 32)
    with pytest.raises(ValueError, match="feature_dim=16 needs head_hidden"):
        build_model(default_config("eeg_convnet", feature_dim=16))
    with pytest.raises(ValueError, match="head_hidden=0"):
        build_model(default_config("eeg_convnet", head_hidden=0))
