"""Retrieval and the pixel-level image inside ``bci replay --decode`` (the same pipeline as ``bci live``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.cli.main import main


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 25 s simulated session, an untrained 128-d encoder, a gallery of the stimuli, a generator."""
    from bci import clip
    from bci.retrieval.gallery import build_gallery, gallery_from_stimuli
    from bci.generation import GeneratorConfig, SaliencyGenerator, save_generator
    from streams.synthetic.stimuli import make_stimuli

    root = tmp_path_factory.mktemp("steps")
    session = root / "sim.zarr"
    assert main(["simulate", "--duration", "25", "--out", str(session), "--seed", "3"]) == 0
    model = root / "model"
    assert main(["model", "init", "eeg_convnet", "--out", str(model), "--params", '{"embed_dim": 128}']) == 0
    cfg, pre = clip.tiny_config(64), clip.default_preprocess(64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip_dir = clip.save_clip(clip.build_clip_model(cfg, "tiny"), root / "clip", name="tiny", model_cfg=cfg,
                                  preprocess_cfg=pre)
        embedder = clip.load_clip("tiny", weights=clip_dir)
        images, ids, labels, captions = gallery_from_stimuli(make_stimuli(seed=3))  # the simulator's stimuli
        gallery = root / "gallery"
        build_gallery(images, ids, labels, captions, embedder=embedder, progress=False).save(gallery)
        generator = root / "generator"
        save_generator(SaliencyGenerator(GeneratorConfig(feature_dim=128, image_size=32)), generator,
                       metadata={"encoder": {"path": str(model)}})
    return {"session": session, "model": model, "gallery": gallery, "generator": generator, "root": root}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_decode_with_gallery_lists_topk_and_true_rank(world: dict[str, Path], tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    rc = main(["replay", str(world["session"]), "--decode", "--model", str(world["model"]), "--speed", "max",
               "--gallery", str(world["gallery"]), "--topk", "3", "--marker-filter", "^stim/", "--events", str(events), "--results-stream", ""])
    assert rc == 0
    windows = [r for r in _records(events) if r["type"] == "window"]
    assert len(windows) >= 15
    from bci.retrieval.gallery import Gallery

    gallery = Gallery.load(world["gallery"])
    emb = np.asarray([w["embedding"] for w in windows], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    expected = np.argsort(-(emb @ gallery.embeddings.T), axis=1)[:, :3]
    for w, exp in zip(windows, expected):
        assert [t["id"] for t in w["topk"]] == [gallery.ids[j] for j in exp]
        assert w["topk"][0]["label"] == gallery.labels[exp[0]]
        assert "true_rank" in w  # every stimulus of the session is in this gallery
        assert w["true_rank"] is None or 1 <= w["true_rank"] <= 3
    assert all(w["latency_ms"] is not None for w in windows)


def test_gallery_of_another_size_is_refused_at_start(world: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "model64"
    assert main(["model", "init", "eeg_convnet", "--out", str(other), "--params", '{"embed_dim": 64}']) == 0
    capsys.readouterr()
    rc = main(["replay", str(world["session"]), "--decode", "--model", str(other), "--speed", "max",
               "--gallery", str(world["gallery"]), "--results-stream", ""])
    assert rc == 2
    err = capsys.readouterr().err
    assert "128" in err and "64" in err


def test_generator_writes_a_saliency_image_per_window(world: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    events = tmp_path / "ev.jsonl"
    rc = main(["replay", str(world["session"]), "--decode", "--model", str(world["model"]), "--speed", "max",
               "--generator", str(world["generator"]), "--images", str(tmp_path / "img"), "--events", str(events),
               "--results-stream", ""])
    assert rc == 0
    windows = [r for r in _records(events) if r["type"] == "window"]
    assert windows
    for w in windows:
        path = Path(w["images"]["saliency"])
        assert path.is_file()
        assert np.asarray(Image.open(path)).shape == (32, 32, 3)
    assert len(list((tmp_path / "img").glob("saliency_*.png"))) == len(windows)


def test_diffusion_without_generator_is_a_clear_error(world: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["replay", str(world["session"]), "--decode", "--model", str(world["model"]), "--speed", "max",
               "--diffusion", str(tmp_path / "nowhere"), "--results-stream", ""])
    assert rc == 2
    assert "--generator" in capsys.readouterr().err


def test_pattern_step_draws_the_decoded_pattern(tmp_path: Path) -> None:
    from bci.runtime.steps import ImageWriter, PatternStep
    from bci.viewer.images import decode_image_ref

    logits = np.full((2, 9), -5.0, np.float32)   # all off
    logits[0, [0, 4, 8]] = 5.0   # a diagonal on
    logits[1, 3] = 0.0           # undecided: mid grey
    records = [{"window_index": 3}, {"window_index": 4}]
    PatternStep(3, scale=2)(np.zeros((2, 1, 1)), {"embedding": logits}, records)
    first = decode_image_ref(records[0]["images"]["reconstruction"])
    assert first.shape == (6, 6, 3) and records[0]["images"]["reconstruction"].startswith("data:image/png;base64,")
    np.testing.assert_array_equal(first[::2, ::2, 0] > 127, np.eye(3, dtype=bool))
    second = decode_image_ref(records[1]["images"]["reconstruction"])
    assert second[2, 0, 0] == 128 and second[0, 0, 0] == 2   # sigmoid(0) = 0.5, sigmoid(-5) = 0.0067
    written = [{"window_index": 7}, {"window_index": 8}]
    PatternStep(3, ImageWriter(tmp_path / "img"), scale=2)(np.zeros((2, 1, 1)), {"embedding": logits}, written)
    assert written[0]["images"]["reconstruction"] == str((tmp_path / "img" / "reconstruction_000007.png").resolve())
    np.testing.assert_array_equal(decode_image_ref(written[0]["images"]["reconstruction"]), first)
    with pytest.raises(ValueError, match=r"shape \(2, 9\); expected \(batch, 16\) for a 4x4 pattern"):
        PatternStep(4)(np.zeros((2, 1, 1)), {"embedding": logits}, records)
    with pytest.raises(ValueError, match="grid=0 must be an integer >= 1"):
        PatternStep(0)


def test_pattern_decoder_gets_its_step_and_a_wrong_grid_is_refused(tmp_path: Path) -> None:
    from bci.runtime.assemble import build_result_steps, load_encoder
    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config
    from bci.runtime.steps import PatternStep

    cfg = default_config("fmri_mlp", n_chans=20, n_times=1, sfreq=0.5, embed_dim=16)
    cfg.extra = {"embedding_space": "pattern", "pattern_grid": 4}
    path = save_checkpoint(build_model(cfg), tmp_path / "m")
    (step,) = build_result_steps(load_encoder(path, device="cpu"), [])
    assert isinstance(step, PatternStep) and step.grid == 4
    cfg.extra = {"embedding_space": "pattern", "pattern_grid": 5}
    bad = save_checkpoint(build_model(cfg), tmp_path / "bad")
    with pytest.raises(ValueError, match="records pattern_grid=5 for 16 outputs"):
        build_result_steps(load_encoder(bad, device="cpu"), [])


def test_pattern_gallery_ranks_by_correlation_and_other_galleries_are_refused(tmp_path: Path) -> None:
    from bci.runtime.assemble import build_result_steps, load_encoder
    from bci.retrieval.gallery import build_gallery
    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config
    from bci.models.stimulus import PatternEmbedder, StimulusCNN, StimulusConfig, pattern_query
    from bci.runtime.steps import PatternStep, RetrievalStep

    rng = np.random.default_rng(0)
    cells = (rng.random((6, 4, 4)) < 0.5).astype(np.uint8)
    images = np.repeat(np.kron(cells, np.ones((1, 5, 5), np.uint8))[..., None] * 255, 3, axis=3)  # 20x20 RGB
    ids = [f"p{i}" for i in range(6)]
    emb = PatternEmbedder(4).encode_images(images)
    logits = rng.normal(size=(3, 16))
    prob = 1 / (1 + np.exp(-logits))
    pearson = np.array([[np.corrcoef(q, c.ravel())[0, 1] for c in cells] for q in prob])
    np.testing.assert_allclose(pattern_query(logits) @ emb.T, pearson, atol=1e-5)  # cosine here = Pearson r
    with pytest.raises(ValueError, match="image row 1 is one flat grey at 4x4"):
        PatternEmbedder(4).encode_images(np.stack([images[0], np.zeros_like(images[0])]))

    cfg = default_config("fmri_mlp", n_chans=20, n_times=1, sfreq=0.5, embed_dim=16)
    cfg.extra = {"embedding_space": "pattern", "pattern_grid": 4}
    encoder = load_encoder(save_checkpoint(build_model(cfg), tmp_path / "m"), device="cpu")
    build_gallery(images, ids, ids, [""] * 6, embedder=PatternEmbedder(4), progress=False).save(tmp_path / "pg")
    retrieval, drawing = build_result_steps(encoder, [], gallery=tmp_path / "pg", topk=6)
    assert isinstance(retrieval, RetrievalStep) and isinstance(drawing, PatternStep)
    records = [{"window_index": i} for i in range(3)]
    retrieval(np.zeros((3, 20, 1)), {"embedding": logits.astype(np.float32)}, records)
    for rec, row in zip(records, pearson):
        assert [t["id"] for t in rec["topk"]] == [ids[j] for j in np.argsort(-row)]
    torch.manual_seed(0)  # a 16-d gallery from another embedder would rank by something else: refused
    other = StimulusCNN(StimulusConfig(image_size=8, channels=(4,), embed_dim=16))
    build_gallery(images, ids, ids, [""] * 6, embedder=other, thumb_size=0, progress=False).save(tmp_path / "cnn")
    with pytest.raises(ValueError, match="4x4 pattern decoder.*--pattern-grid 4"):
        build_result_steps(encoder, [], gallery=tmp_path / "cnn")
    # a pattern gallery of another grid: the same advice, not a size mismatch's "rebuild with the model's CLIP"
    build_gallery(np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)[:, :25, :25], ids, ids, [""] * 6,
                  embedder=PatternEmbedder(5), progress=False).save(tmp_path / "pg5")
    with pytest.raises(ValueError, match="pattern-grid-5.*4x4 pattern decoder.*--pattern-grid 4"):
        build_result_steps(encoder, [], gallery=tmp_path / "pg5")
    # and the other way round: a model that is not a pattern decoder refuses a pattern gallery of its size
    plain = default_config("fmri_mlp", n_chans=20, n_times=1, sfreq=0.5, embed_dim=16)
    plain_encoder = load_encoder(save_checkpoint(build_model(plain), tmp_path / "plain"), device="cpu")
    with pytest.raises(ValueError, match="holds stimulus patterns for an fMRI pattern decoder.*not a pattern decoder"):
        build_result_steps(plain_encoder, [], gallery=tmp_path / "pg")
    with pytest.raises(ValueError, match="embedded by a dual encoder's stimulus CNN.*is not that dual encoder"):
        build_result_steps(plain_encoder, [], gallery=tmp_path / "cnn")


def test_gallery_build_pattern_grid_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(3):
        img = np.zeros((20, 20, 3), np.uint8)
        img[: 5 * (i + 1), :5] = 255
        Image.fromarray(img).save(folder / f"p{i}.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "blank.png")  # no pattern: left out, said so
    assert main(["gallery", "build", str(folder), str(tmp_path / "g"), "--pattern-grid", "4", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "wrote gallery" in out and "3 images, 16-d image embeddings (clip pattern, fingerprint pattern-grid-4)" in out
    assert "blank: one flat grey at 4x4: its correlation with a decoded pattern is undefined" in err
    from bci.retrieval.gallery import Gallery

    assert sorted(Gallery.load(tmp_path / "g").ids) == ["p0", "p1", "p2"]
    assert main(["gallery", "build", str(folder), str(tmp_path / "s"), "--pattern-grid", "4", "--strict"]) == 2
    assert "image 'blank' is one flat grey at 4x4" in capsys.readouterr().err
    assert main(["gallery", "build", str(folder), str(tmp_path / "h"), "--pattern-grid", "4", "--source", "text"]) == 2
    assert "--pattern-grid embeds images only" in capsys.readouterr().err
    assert main(["gallery", "build", str(folder), str(tmp_path / "h"), "--pattern-grid", "4",
                 "--stimulus-encoder", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


# --------------------------------------------------------------------------- the library calls behind the CLI
def test_replay_decode_library_call_matches_the_cli(world: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``replay_decode(ReplayOptions(...))`` is what ``bci replay --decode`` runs: the same records."""
    from bci.runtime.assemble import DecodeOptions
    from bci.runtime.replay import ReplayOptions, replay_decode

    cli_events, lib_events = tmp_path / "cli.jsonl", tmp_path / "lib.jsonl"
    assert main(["replay", str(world["session"]), "--decode", "--model", str(world["model"]), "--speed", "max",
                 "--gallery", str(world["gallery"]), "--topk", "2", "--marker-filter", "^stim/", "--events",
                 str(cli_events), "--results-stream", "", "--device", "cpu"]) == 0
    cli_out = capsys.readouterr().out
    pipeline = replay_decode(ReplayOptions(world["session"], DecodeOptions(
        world["model"], gallery=world["gallery"], topk=2, marker_filter="^stim/", events=lib_events,
        results_stream="", device="cpu"), speed=float("inf")))
    import re

    def no_latency(text: str) -> str:
        return re.sub(r"[\d.]+/[\d.]+/[\d.]+ ms", "", text)

    assert no_latency(capsys.readouterr().out) == no_latency(cli_out)  # the CLI only translates flags
    assert pipeline.stats.n_windows >= 15
    drop = ("latency_ms", "emitted_time", "marker_lateness_ms")  # clock readings
    cli = [{k: v for k, v in r.items() if k not in drop} for r in _records(cli_events)]
    lib = [{k: v for k, v in r.items() if k not in drop} for r in _records(lib_events)]
    assert [r.keys() for r in cli] == [r.keys() for r in lib]
    for a, b in zip(cli, lib):
        np.testing.assert_allclose(a.pop("embedding", []), b.pop("embedding", []), atol=1e-6)
        assert a == b


def test_decode_options_check_their_values_for_every_caller() -> None:
    """Checks that used to live in the CLI (--topk, --strength) hold for Python callers too."""
    from bci.runtime.assemble import DecodeOptions, assemble
    from bci.runtime.live import LiveOptions, RunLoop, run_live
    from bci.runtime.replay import ReplayOptions, replay_decode

    assert DecodeOptions("m").model == Path("m") and DecodeOptions("m").topk == 5
    for kwargs, error, match in (
        ({"topk": 0}, ValueError, "topk=0 must be an integer >= 1"),
        ({"topk": True}, TypeError, "topk=True"),
        ({"topk": 2.0}, TypeError, "topk=2.0"),
        ({"strength": 1.5}, ValueError, "strength=1.5"),
        ({"strength": float("nan")}, ValueError, "strength=nan"),
        ({"diffusion_steps": 0}, ValueError, "diffusion_steps=0"),
        ({"retrieval": "annoy"}, ValueError, "retrieval='annoy'"),
        ({"hop": 0.0}, ValueError, "hop=0.0"),
        ({"overwrite": 1}, TypeError, "overwrite"),
        ({"events": 3}, TypeError, "events"),
    ):
        with pytest.raises(error, match=match):
            DecodeOptions("m", **kwargs)
    with pytest.raises(TypeError, match="model"):
        DecodeOptions(None)  # type: ignore[arg-type]
    decode = DecodeOptions("m")
    with pytest.raises(ValueError, match="without --markers there are no events"):
        LiveOptions("SimEEG", None, decode)
    assert LiveOptions("SimEEG", None, DecodeOptions("m", hop=0.5)).markers is None
    with pytest.raises(ValueError, match="--record stores the results"):
        LiveOptions("SimEEG", "M", DecodeOptions("m", results_stream=""), record="rec.zarr")
    with pytest.raises(ValueError, match="resolve_timeout=0"):
        LiveOptions("SimEEG", "M", decode, resolve_timeout=0)
    with pytest.raises(TypeError, match="decode"):
        LiveOptions("SimEEG", "M", {"model": "m"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="speed=0"):
        ReplayOptions("s.zarr", decode, speed=0)
    assert ReplayOptions("s.zarr", decode, speed=float("inf")).speed == float("inf")
    for call in (lambda: assemble({"model": "m"}), lambda: run_live(decode),
                 lambda: replay_decode(decode), lambda: run_live(LiveOptions("S", "M", decode), loop=print)):
        with pytest.raises(TypeError):
            call()  # type: ignore[arg-type]
    assert RunLoop().note == "" and RunLoop().until is None


def test_demo_and_runtime_import_neither_the_cli_nor_the_viewer() -> None:
    """The demo calls the libraries (no bci.cli); the runtime encodes images with bci.images (no bci.viewer)."""
    import subprocess
    import sys

    code = ("import sys, offline.demo, bci.runtime.live, bci.runtime.replay, bci.runtime.steps, bci.runtime.assemble; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith(('bci.cli', 'bci.viewer'))}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.stdout.strip() == "[]"
