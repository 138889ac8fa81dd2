"""Galleries: build, save/load round trip, corrupt stores refused, image folders, the CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from bci.retrieval.gallery import (
    ARRAYS_FILE,
    FORMAT_VERSION,
    JSON_FILE,
    Gallery,
    GalleryError,
    build_gallery,
    captions_from_folder,
    gallery_from_stimuli,
    images_from_folder,
    make_thumbnails,
)
from streams.synthetic.stimuli import make_stimuli


class PixelEmbedder:
    """A small, deterministic, real embedder (stands in for CLIP in these tests).

    Images: resized to 8x8 RGB, centred, times a fixed seeded random projection,
    L2-normalised. Texts: sum of per-word vectors seeded from the word's SHA-256,
    L2-normalised (same words, same vector). Same interface as ``bci.clip.ClipEmbedder``.
    """

    def __init__(self, embed_dim: int = 32, seed: int = 0, name: str = "pixel-test") -> None:
        self.name = name
        self.embed_dim = embed_dim
        self.image_size = 8
        self._proj = np.random.default_rng(seed).standard_normal((8 * 8 * 3, embed_dim)).astype(np.float32)
        self.seed = seed
        self.calls = 0

    def encode_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self.calls += 1
        small = np.stack([np.asarray(Image.fromarray(im).resize((8, 8), Image.Resampling.BILINEAR))
                          for im in images]).reshape(len(images), -1).astype(np.float32) / 255.0
        out = (small - small.mean(axis=1, keepdims=True)) @ self._proj
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.embed_dim), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{word}".encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(seed).standard_normal(self.embed_dim).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def fingerprint(self) -> str:
        return hashlib.sha256(self._proj.tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def stimuli():
    return make_stimuli(n_per_class=2, size=64, seed=3)


@pytest.fixture(scope="module")
def gallery(stimuli) -> Gallery:
    images, ids, labels, captions = gallery_from_stimuli(stimuli)
    return build_gallery(images, ids, labels, captions, embedder=PixelEmbedder(), thumb_size=32,
                         batch_size=7, progress=False, name="synth")


# --------------------------------------------------------------------------- build + round trip
def test_build_from_stimuli_embeds_every_image_once(stimuli, gallery: Gallery) -> None:
    emb = PixelEmbedder()
    expected = emb.encode_images(stimuli.images)
    np.testing.assert_allclose(gallery.embeddings, expected, atol=1e-6)
    assert gallery.embeddings.dtype == np.float32 and gallery.embeddings.shape == (80, 32)
    assert gallery.ids == stimuli.image_ids
    assert gallery.labels[:2] == ["red circle", "red circle"] and gallery.labels[-1] == "purple bar"
    assert gallery.captions == stimuli.captions
    assert gallery.thumbnails.shape == (80, 32, 32, 3) and gallery.thumbnails.dtype == np.uint8
    assert gallery.meta["clip"] == "pixel-test" and gallery.meta["clip_fingerprint"] == emb.fingerprint()
    assert gallery.meta["source"] == "image" and gallery.meta["name"] == "synth"


def test_save_load_round_trip(tmp_path: Path, gallery: Gallery) -> None:
    out = gallery.save(tmp_path / "g")
    assert sorted(p.name for p in out.iterdir()) == [ARRAYS_FILE, JSON_FILE]
    loaded = Gallery.load(out)
    np.testing.assert_array_equal(loaded.embeddings, gallery.embeddings)
    np.testing.assert_array_equal(loaded.thumbnails, gallery.thumbnails)
    assert (loaded.ids, loaded.labels, loaded.captions, loaded.meta) == (
        gallery.ids, gallery.labels, gallery.captions, gallery.meta)
    assert loaded.index_of("img0005") == 5
    np.testing.assert_array_equal(loaded.thumbnail("img0005"), gallery.thumbnails[5])
    assert loaded.thumbnail("nope") is None
    with pytest.raises(KeyError, match="'nope' is not in gallery 'synth'"):
        loaded.index_of("nope")
    header = json.loads((out / JSON_FILE).read_text())
    assert header["format"] == "bci-gallery" and header["version"] == FORMAT_VERSION


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path, gallery: Gallery) -> None:
    gallery.save(tmp_path / "g")
    with pytest.raises(FileExistsError, match="overwrite"):
        gallery.save(tmp_path / "g")
    gallery.save(tmp_path / "g", overwrite=True)
    assert len(Gallery.load(tmp_path / "g")) == 80


def test_text_source_embeds_captions(stimuli) -> None:
    images, ids, labels, _ = gallery_from_stimuli(stimuli, caption="template")
    emb = PixelEmbedder()
    g = build_gallery(images, ids, labels, stimuli.template_captions, embedder=emb, source="text", progress=False)
    np.testing.assert_allclose(g.embeddings, emb.encode_text(stimuli.template_captions), atol=1e-6)
    assert g.meta["source"] == "text" and g.thumbnails.shape == (80, 64, 64, 3)
    with pytest.raises(ValueError, match="needs a caption for every image"):
        build_gallery(images, ids, labels, [""] * 80, embedder=emb, source="text", progress=False)


def test_no_thumbnails_with_thumb_size_zero(tmp_path: Path, stimuli) -> None:
    images, ids, labels, captions = gallery_from_stimuli(stimuli)
    g = build_gallery(images[:5], ids[:5], labels[:5], captions[:5], embedder=PixelEmbedder(), thumb_size=0,
                      progress=False)
    loaded = Gallery.load(g.save(tmp_path / "g"))
    assert loaded.thumbnails.shape == (5, 0, 0, 3) and loaded.thumbnail(ids[0]) is None


def test_build_rejects_bad_inputs(stimuli) -> None:
    images, ids, labels, captions = gallery_from_stimuli(stimuli)
    emb = PixelEmbedder()
    with pytest.raises(ValueError, match="source='bogus'"):
        build_gallery(images, ids, labels, captions, embedder=emb, source="bogus", progress=False)
    with pytest.raises(ValueError, match="same length"):
        build_gallery(images, ids, labels[:-1], captions, embedder=emb, progress=False)
    with pytest.raises(TypeError, match="uint8"):
        build_gallery(images.astype(np.float32), ids, labels, captions, embedder=emb, progress=False)
    with pytest.raises(GalleryError, match="unique"):
        build_gallery(images[:2], ["a", "a"], labels[:2], captions[:2], embedder=emb, progress=False)

    class WrongDim(PixelEmbedder):
        embed_dim = 16

        def __init__(self) -> None:
            super().__init__(embed_dim=32)
            self.embed_dim = 16

    with pytest.raises(ValueError, match=r"returned shape \(3, 32\), expected \(3, 16\)"):
        build_gallery(images[:3], ids[:3], labels[:3], captions[:3], embedder=WrongDim(), progress=False)


def test_gallery_validates_its_arrays() -> None:
    emb = np.eye(3, 4, dtype=np.float32)
    thumbs = np.zeros((3, 2, 2, 3), np.uint8)
    ok = dict(embeddings=emb, ids=["a", "b", "c"], labels=["x"] * 3, captions=[""] * 3, thumbnails=thumbs)
    assert Gallery(**ok).embed_dim == 4
    with pytest.raises(GalleryError, match="float32"):
        Gallery(**{**ok, "embeddings": emb.astype(np.float64)})
    with pytest.raises(GalleryError, match="2 thumbnails for 3 embeddings"):
        Gallery(**{**ok, "thumbnails": thumbs[:2]})
    with pytest.raises(GalleryError, match="L2-normalised.*id 'b'"):
        Gallery(**{**ok, "embeddings": emb * np.array([[1], [2], [1]], np.float32)})
    with pytest.raises(GalleryError, match="2 labels for 3"):
        Gallery(**{**ok, "labels": ["x", "y"]})


def test_make_thumbnails_resizes() -> None:
    img = np.zeros((2, 40, 30, 3), np.uint8)
    img[:, :, :15] = 255
    t = make_thumbnails(img, 10)
    assert t.shape == (2, 10, 10, 3)
    assert t[0, 5, 0, 0] == 255 and t[0, 5, 9, 0] == 0


# --------------------------------------------------------------------------- corrupt stores
def _rewrite_json(path: Path, **changes) -> None:
    header = json.loads((path / JSON_FILE).read_text())
    header.update(changes)
    (path / JSON_FILE).write_text(json.dumps(header))


def _rewrite_arrays(path: Path, embeddings: np.ndarray, thumbnails: np.ndarray, *, fix_checksum: bool) -> None:
    np.savez(path / ARRAYS_FILE, embeddings=embeddings, thumbnails=thumbnails)
    if fix_checksum:
        _rewrite_json(path, embeddings_sha256=hashlib.sha256(np.ascontiguousarray(embeddings).tobytes()).hexdigest())


class _Exploit:
    """Unpickling this would create a directory: proves that loading never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _corrupt(kind: str, path: Path, gallery: Gallery) -> None:
    emb, thumbs = gallery.embeddings, gallery.thumbnails
    if kind == "missing json":
        (path / JSON_FILE).unlink()
    elif kind == "missing arrays":
        (path / ARRAYS_FILE).unlink()
    elif kind == "invalid json":
        (path / JSON_FILE).write_text("{not json")
    elif kind == "foreign format":
        _rewrite_json(path, format="something-else")
    elif kind == "wrong version":
        _rewrite_json(path, version=FORMAT_VERSION + 1)
    elif kind == "truncated npz":
        data = (path / ARRAYS_FILE).read_bytes()
        (path / ARRAYS_FILE).write_bytes(data[: len(data) // 2])
    elif kind == "flipped byte in npz":
        data = bytearray((path / ARRAYS_FILE).read_bytes())
        data[len(data) // 3] ^= 0xFF
        (path / ARRAYS_FILE).write_bytes(bytes(data))
    elif kind == "mismatched lengths":
        header = json.loads((path / JSON_FILE).read_text())
        _rewrite_json(path, labels=header["labels"][:-1])
    elif kind == "mismatched rows":
        _rewrite_arrays(path, emb[:-1], thumbs[:-1], fix_checksum=True)
    elif kind == "nan embeddings":
        bad = emb.copy()
        bad[3, 0] = np.nan
        _rewrite_arrays(path, bad, thumbs, fix_checksum=True)
    elif kind == "not normalised":
        _rewrite_arrays(path, emb * 2, thumbs, fix_checksum=True)
    elif kind == "float64 embeddings":
        _rewrite_arrays(path, emb.astype(np.float64), thumbs, fix_checksum=True)
    elif kind == "foreign arrays":
        other = np.roll(emb, 1, axis=0)
        _rewrite_arrays(path, other, thumbs, fix_checksum=False)
    elif kind == "duplicate ids":
        header = json.loads((path / JSON_FILE).read_text())
        _rewrite_json(path, ids=[header["ids"][0]] + header["ids"][1:-1] + [header["ids"][0]])
    elif kind == "extra array":
        np.savez(path / ARRAYS_FILE, embeddings=emb, thumbnails=thumbs, other=np.zeros(3))
    elif kind == "pickle in npz":
        marker = path / "pwned"
        payload = np.empty(1, dtype=object)
        payload[0] = _Exploit(marker)
        np.savez(path / ARRAYS_FILE, embeddings=payload, thumbnails=thumbs)
    else:  # pragma: no cover
        raise AssertionError(kind)


CORRUPTIONS = {
    "missing json": (FileNotFoundError, "gallery.json is missing"),
    "missing arrays": (FileNotFoundError, "arrays.npz is missing"),
    "invalid json": (GalleryError, "gallery.json: not valid JSON"),
    "foreign format": (GalleryError, "format is 'something-else'.*not a bci gallery"),
    "wrong version": (GalleryError, f"version {FORMAT_VERSION + 1} is not supported"),
    "truncated npz": (GalleryError, "arrays.npz: unreadable"),
    "flipped byte in npz": (GalleryError, "arrays.npz"),
    "mismatched lengths": (GalleryError, "gallery.json: 79 labels for n=80"),
    "mismatched rows": (GalleryError, r"shape \(79, 32\) but .*80 x 32"),
    "nan embeddings": (GalleryError, "NaN or inf.*row 3"),
    "not normalised": (GalleryError, "L2-normalised"),
    "float64 embeddings": (GalleryError, "must be float32"),
    "foreign arrays": (GalleryError, "do not match the checksum"),
    "duplicate ids": (GalleryError, "unique; 'img0000'"),
    "extra array": (GalleryError, "found \\['embeddings', 'other', 'thumbnails'\\]"),
    "pickle in npz": (GalleryError, "pickled objects"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_store_is_refused_with_a_clear_error(kind: str, tmp_path: Path, gallery: Gallery) -> None:
    path = gallery.save(tmp_path / "g")
    _corrupt(kind, path, gallery)
    error, pattern = CORRUPTIONS[kind]
    with pytest.raises(error, match=pattern) as exc:
        Gallery.load(path)
    assert str(path) in str(exc.value)
    assert not (path / "pwned").exists()


def test_load_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Gallery.load(tmp_path / "nowhere")


# --------------------------------------------------------------------------- image folders
def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "big").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(root / "cats" / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 50, 4), dtype=np.uint8), "RGBA").save(root / "cats" / "b.PNG")
    Image.fromarray(rng.integers(0, 255, (30, 20), dtype=np.uint8), "L").save(root / "dogs" / "c.jpg")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "dogs" / "big" / "d.bmp")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "top.png")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = (root / "cats" / "a.png").read_bytes()
    (root / "cats" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"junk")


def test_images_from_folder_skips_broken_files(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _write_folder(root)
    images, ids, labels, skipped = images_from_folder(root, size=32)
    assert ids == ["cats/a", "cats/b", "dogs/big/d", "dogs/c", "top"]
    assert labels == ["cats", "cats", "big", "dogs", "imgs"]
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert [p for p, _ in skipped] == ["cats/truncated.png", "dogs/broken.png"]
    assert all("cannot decode" in reason for _, reason in skipped)
    with pytest.raises(ValueError, match="truncated.png: cannot decode.*strict"):
        images_from_folder(root, strict=True)


def test_images_from_folder_reads_labels_csv_and_captions_json(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _write_folder(root)
    (root / "labels.csv").write_text("id,label,caption\ncats/a,tabby,a tabby cat\ndogs/c,,a small dog\n")
    (root / "captions.json").write_text(json.dumps({"top": "a tiny thing", "cats/a": "a striped cat"}))
    _, ids, labels, _ = images_from_folder(root, size=16)
    assert labels[ids.index("cats/a")] == "tabby" and labels[ids.index("dogs/c")] == "dogs"
    assert captions_from_folder(root, ids) == ["a striped cat", "", "", "a small dog", "a tiny thing"]
    (root / "labels.csv").write_text("id,label\ncats/zzz,lion\n")
    with pytest.raises(ValueError, match="name 1 id\\(s\\) with no image file.*cats/zzz"):
        images_from_folder(root, size=16)
    (root / "labels.csv").write_text("name,label\ncats/a,lion\n")
    with pytest.raises(ValueError, match="header must name 'id'"):
        images_from_folder(root, size=16)


def test_images_from_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        images_from_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="no readable images.*1 unreadable"):
        images_from_folder(tmp_path / "empty")


def test_gallery_from_stimuli_labels_and_captions(stimuli) -> None:
    images, ids, labels, captions = gallery_from_stimuli(stimuli, caption="template")
    assert images.shape == (80, 64, 64, 3) and ids[0] == "img0000"
    assert labels[0] == "red circle" and captions[0] == "an image of a red circle"
    with pytest.raises(TypeError, match="StimulusSet"):
        gallery_from_stimuli(object())


# --------------------------------------------------------------------------- CLI
def _cli(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    """Parse with the real ``bci gallery`` parsers and run the handler (embedder: PixelEmbedder).

    ``bci.clip`` (the real tiny CLIP) is another module's; the lead adds a CLI test with it.
    """
    from bci.cli import gallery as cli_gallery
    from bci.cli.main import _add_parser
    from bci.retrieval import build

    def fake(name: str, weights: Path | None, device: str) -> PixelEmbedder:
        return PixelEmbedder(name=name)

    monkeypatch.setattr(cli_gallery, "load_embedder", fake)  # bci gallery search
    monkeypatch.setattr(build, "load_embedder", fake)  # bci gallery build (bci.retrieval.build.choose_embedder)
    parser = argparse.ArgumentParser(prog="bci")
    sub = parser.add_subparsers(dest="command")
    cli_gallery.register(sub, _add_parser)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_build_info_search_on_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "imgs"
    _write_folder(root)
    out = tmp_path / "gal"
    assert _cli(monkeypatch, ["gallery", "build", str(root), str(out), "--clip", "pixel", "--thumb-size", "16",
                              "--image-size", "32", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "wrote gallery" in captured.out and "5 images, 32-d image embeddings" in captured.out
    assert "skipped 2 file(s)" in captured.err and "dogs/broken.png" in captured.err
    g = Gallery.load(out)
    assert g.ids == ["cats/a", "cats/b", "dogs/big/d", "dogs/c", "top"] and g.thumbnails.shape[1:] == (16, 16, 3)
    assert g.meta["clip"] == "pixel" and g.meta["skipped"] == 2

    assert _cli(monkeypatch, ["gallery", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "images:       5" in info and "32-d, source image" in info and "clip:         pixel" in info

    query = tmp_path / "q.png"
    Image.open(root / "dogs" / "c.jpg").save(query)
    assert _cli(monkeypatch, ["gallery", "search", str(out), "--image", str(query), "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("top 2 of 5") and lines[1].split()[1] == "dogs/c"

    with pytest.raises(FileExistsError, match="--overwrite"):
        _cli(monkeypatch, ["gallery", "build", str(root), str(out)])
    with pytest.raises(ValueError, match="cats/truncated.png"):
        _cli(monkeypatch, ["gallery", "build", str(root), str(tmp_path / "g2"), "--strict", "--no-progress"])


def test_cli_build_synthetic_text_and_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert _cli(monkeypatch, ["gallery", "build", "--synthetic", str(out), "--source", "text", "--caption",
                              "template", "--n-per-class", "1", "--no-progress"]) == 0
    g = Gallery.load(out)
    assert len(g) == 40 and g.meta["source"] == "text" and g.name == "syn"
    capsys.readouterr()
    assert _cli(monkeypatch, ["gallery", "search", str(out), "--text", "an image of a red triangle"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "red triangle" in lines[1] and len(lines) == 6
    with pytest.raises(ValueError, match="either an IMAGES folder or --synthetic"):
        _cli(monkeypatch, ["gallery", "build", str(tmp_path), str(out), "--synthetic"])
    with pytest.raises(ValueError, match="exactly one of --text and --image"):
        _cli(monkeypatch, ["gallery", "search", str(out)])


def test_build_gallery_dir_is_the_library_behind_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``build_gallery_dir(GalleryBuildOptions(...))`` builds, saves and reads back; the options check themselves."""
    from bci.retrieval import build

    monkeypatch.setattr(build, "load_embedder", lambda name, weights, device: PixelEmbedder(name=name))
    root = tmp_path / "imgs"
    _write_folder(root)
    options = build.GalleryBuildOptions(tmp_path / "gal", images=root, clip="pixel", thumb_size=16, image_size=32,
                                        progress=False)
    result = build.build_gallery_dir(options)
    assert len(result.gallery) == 5 and len(result.skipped) == 2
    assert Gallery.load(tmp_path / "gal").ids == result.gallery.ids and result.gallery.name == "gal"
    with pytest.raises(FileExistsError, match="--overwrite"):
        build.build_gallery_dir(options)
    pattern = build.GalleryBuildOptions(tmp_path / "pat", images=root, pattern_grid=4, progress=False)
    assert type(build.choose_embedder(pattern)).__name__ == "PatternEmbedder"
    for kwargs, error, match in (
        ({}, ValueError, "either an IMAGES folder or --synthetic"),
        ({"images": root, "synthetic": True}, ValueError, "either an IMAGES folder or --synthetic"),
        ({"synthetic": True, "pattern_grid": 4, "stimulus_encoder": root}, ValueError, "not both"),
        ({"synthetic": True, "pattern_grid": 4, "source": "text"}, ValueError, "drop --source text"),
        ({"synthetic": True, "source": "bogus"}, ValueError, "source='bogus'"),
        ({"synthetic": True, "batch_size": 2.5}, TypeError, "batch_size=2.5"),
        ({"synthetic": True, "pattern_grid": 0}, ValueError, "pattern_grid=0"),
        ({"synthetic": "yes"}, TypeError, "synthetic='yes'"),
    ):
        with pytest.raises(error, match=match):
            build.GalleryBuildOptions(tmp_path / "x", **kwargs)


def test_cli_help_has_examples(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["gallery", "--help"], ["gallery", "build", "--help"], ["gallery", "search", "--help"]):
        with pytest.raises(SystemExit) as exc:
            _cli(monkeypatch, argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "example:" in out and "bci gallery" in out


# --------------------------------------------------------------------------- the real tiny CLIP
@pytest.fixture(scope="module")
def tiny_clip_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two randomly initialised tiny CLIPs (the second slightly perturbed), saved as ``bci train clip`` would."""
    import torch

    clip = pytest.importorskip("bci.clip")
    cfg, pre = clip.tiny_config(64), clip.default_preprocess(64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = clip.build_clip_model(cfg, "tiny")
        first = clip.save_clip(model, tmp_path_factory.mktemp("clip0"), name="tiny", model_cfg=cfg,
                               preprocess_cfg=pre)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    dirs = [first, clip.save_clip(model, tmp_path_factory.mktemp("clip1"), name="tiny", model_cfg=cfg,
                                  preprocess_cfg=pre)]
    return dirs[0], dirs[1]


def test_cli_with_the_real_tiny_clip(tmp_path: Path, tiny_clip_dirs: tuple[Path, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``bci gallery build/search`` through ``bci.clip.load_clip`` (no stand-in embedder)."""
    from bci.cli import gallery as cli_gallery
    from bci.cli.main import _add_parser
    from bci.clip import load_clip

    def run(argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="bci")
        cli_gallery.register(parser.add_subparsers(dest="command"), _add_parser)
        args = parser.parse_args(argv)
        return args.func(args)

    weights, other = tiny_clip_dirs
    root = tmp_path / "imgs"
    _write_folder(root)
    out = tmp_path / "gal"
    assert run(["gallery", "build", str(root), str(out), "--clip", "tiny", "--clip-weights", str(weights),
                "--image-size", "64", "--no-progress"]) == 0
    g = Gallery.load(out)
    clip = load_clip("tiny", weights)
    images, _, _, _ = images_from_folder(root, size=64)
    np.testing.assert_allclose(g.embeddings, clip.encode_images(images), atol=1e-5)
    assert g.embed_dim == clip.embed_dim == 128 and g.meta["clip_fingerprint"] == clip.fingerprint()
    capsys.readouterr()
    assert run(["gallery", "search", str(out), "--text", "a cat", "-k", "3", "--clip", "tiny",
                "--clip-weights", str(weights)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("top 3 of 5") and len(lines) == 4
    with pytest.raises(ValueError, match="fingerprint"):
        run(["gallery", "search", str(out), "--text", "a cat", "--clip", "tiny", "--clip-weights", str(other)])
