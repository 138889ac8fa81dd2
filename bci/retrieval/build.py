"""Build a gallery directory from options: pick the embedder, read the images, embed, save, read back.

:class:`GalleryBuildOptions` holds what ``bci gallery build`` takes (checked when made);
:func:`build_gallery_dir` does the work and returns the gallery and the files it skipped.
The embedder is CLIP (``clip``/``clip_weights``), a dual-encoder fMRI model's stimulus CNN
(``stimulus_encoder``) or a pattern decoder's grid (``pattern_grid``). Heavy imports
happen inside the functions, so importing this module (e.g. by the CLI's parser) stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams._checks import check_bool, check_int, check_type, check_value, ensure_path

__all__ = ["GalleryBuildOptions", "GalleryBuildResult", "build_gallery_dir", "choose_embedder", "load_embedder",
           "load_stimulus_embedder"]


@dataclass
class GalleryBuildOptions:
    """What a gallery is built from; checked when made.

    Parameters
    ----------
    out : path
        Gallery directory to write.
    images : path, optional
        Folder of images (sub-folder = label; optional ``labels.csv`` / ``captions.json``).
    synthetic : bool
        Use the synthetic stimulus set instead of ``images`` (exactly one of the two).
    clip, clip_weights : str, path
        CLIP architecture and its local weights (the default embedder).
    device : str
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    source : {"image", "text"}
        Embed the images, or their captions with the text encoder.
    strict : bool
        Stop on an unreadable image instead of skipping it.
    thumb_size : int
        Thumbnail side, 0 for none.
    image_size : int, optional
        Folder images are centre-cropped and resized to this size (None: 224; with
        ``pattern_grid`` N: 6N, so every cell stays whole).
    batch_size : int
        Images per embedder call.
    n_per_class, seed, caption
        With ``synthetic``: images per class, stimulus seed, ``"detailed"`` or ``"template"`` captions.
    name : str, optional
        Gallery name (None: ``out``'s folder name).
    overwrite : bool
        Replace a gallery already in ``out``.
    progress : bool
        Show a progress bar.
    stimulus_encoder : path, optional
        Embed with the stimulus CNN of a dual-encoder fMRI model (its checkpoint or its ``stimulus/`` folder).
    pattern_grid : int, optional
        Embed each image as its N x N pattern (for an fMRI pattern decoder of this grid).
    """

    out: str | os.PathLike
    images: str | os.PathLike | None = None
    synthetic: bool = False
    clip: str = "tiny"
    clip_weights: str | os.PathLike | None = None
    device: str = "cpu"
    source: str = "image"
    strict: bool = False
    thumb_size: int = 64
    image_size: int | None = None
    batch_size: int = 256
    n_per_class: int = 5
    seed: int = 0
    caption: str = "detailed"
    name: str | None = None
    overwrite: bool = False
    progress: bool = True
    stimulus_encoder: str | os.PathLike | None = None
    pattern_grid: int | None = None

    def __post_init__(self) -> None:
        self.out = ensure_path("out", self.out)
        for name in ("images", "clip_weights", "stimulus_encoder"):
            if getattr(self, name) is not None:
                setattr(self, name, ensure_path(name, getattr(self, name)))
        for name in ("synthetic", "strict", "overwrite", "progress"):
            check_bool(name, getattr(self, name))
        check_type("clip", self.clip, str)
        check_type("device", self.device, str)
        check_value("source", self.source, ("image", "text"))
        for name in ("thumb_size", "batch_size", "n_per_class", "seed"):
            setattr(self, name, check_int(name, getattr(self, name)))
        if self.image_size is not None:
            self.image_size = check_int("image_size", self.image_size)
        if self.pattern_grid is not None:
            self.pattern_grid = check_int("pattern_grid", self.pattern_grid, low=1)
        if self.name is not None:
            check_type("name", self.name, str)
        if self.synthetic == (self.images is not None):
            raise ValueError("give either an IMAGES folder or --synthetic (not both, not neither); "
                             "e.g. 'bci gallery build photos/ out/' or 'bci gallery build --synthetic out/'")
        if self.stimulus_encoder is not None and self.pattern_grid is not None:
            raise ValueError("give --stimulus-encoder (a dual encoder's gallery) or --pattern-grid (a pattern "
                             "decoder's), not both")
        if (self.stimulus_encoder is not None or self.pattern_grid is not None) and self.source != "image":
            raise ValueError(f"{'--stimulus-encoder' if self.stimulus_encoder is not None else '--pattern-grid'} "
                             "embeds images only; drop --source text")


@dataclass
class GalleryBuildResult:
    """A built gallery (as saved and read back) and the files skipped on the way (``(file, reason)``)."""

    gallery: Any
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_embedder(name: str, weights: str | os.PathLike | None, device: str) -> Any:
    """The CLIP embedder of ``clip``/``clip_weights``/``device`` (:func:`bci.clip.load_clip`)."""
    from bci.clip import load_clip

    return load_clip(name, weights, device)


def load_stimulus_embedder(path: str | os.PathLike, device: str) -> Any:
    """The stimulus CNN of a dual-encoder fMRI model, as a gallery embedder (``stimulus_encoder``)."""
    from bci.models.stimulus import load_stimulus_encoder
    from bci.runtime.inference import select_device
    from bci.safe_io import CheckpointError, read_json_object

    path = Path(path)
    if (path / "config.json").is_file():
        try:
            cfg = read_json_object(path / "config.json")
        except CheckpointError:
            cfg = {}  # load_stimulus_encoder says what is wrong with it
        rel = (cfg.get("extra") or {}).get("stimulus_encoder")
        if cfg.get("format") == "bci-runtime.checkpoint" and isinstance(rel, str):
            path = (path / rel).resolve()  # the dual-encoder checkpoint was given: use its CNN
    return load_stimulus_encoder(path, device=select_device(device))


def choose_embedder(options: GalleryBuildOptions) -> Any:
    """The embedder ``options`` ask for: a stimulus CNN, a pattern grid, else CLIP."""
    if options.stimulus_encoder is not None:
        return load_stimulus_embedder(options.stimulus_encoder, options.device)
    if options.pattern_grid is not None:
        from bci.models.stimulus import PatternEmbedder

        return PatternEmbedder(options.pattern_grid)
    return load_embedder(options.clip, options.clip_weights, options.device)


def build_gallery_dir(options: GalleryBuildOptions) -> GalleryBuildResult:
    """Build the gallery of ``options``, save it to ``options.out`` and read it back.

    Raises
    ------
    FileExistsError
        ``out`` already holds a gallery and ``overwrite`` is off.
    FileNotFoundError
        The ``images`` folder does not exist.
    ValueError
        With ``strict``, an unreadable image (or, with ``pattern_grid``, a flat one).
    """
    from bci.retrieval.gallery import (Gallery, build_gallery, captions_from_folder, gallery_from_stimuli,
                                       images_from_folder)

    check_type("options", options, GalleryBuildOptions)
    out, images, pattern_grid = options.out, options.images, options.pattern_grid
    if not options.overwrite and (out / "gallery.json").exists():
        raise FileExistsError(f"{out} already holds a gallery; pass --overwrite or choose another OUT")
    if images is not None and not images.is_dir():
        raise FileNotFoundError(f"image folder {images} does not exist or is not a directory")
    embedder = choose_embedder(options)  # before reading the images: a bad --clip fails fast
    image_size = options.image_size
    if image_size is None:  # patterns at a multiple of their grid keep every cell whole
        image_size = 6 * pattern_grid if pattern_grid is not None else 224
    skipped: list[tuple[str, str]] = []
    if options.synthetic:
        from streams.synthetic.stimuli import make_stimuli

        imgs, ids, labels, captions = gallery_from_stimuli(make_stimuli(options.n_per_class, seed=options.seed),
                                                           caption=options.caption)
        extra = {"images": f"synthetic stimuli (n_per_class={options.n_per_class}, seed={options.seed}, "
                           f"captions={options.caption})"}
    else:
        imgs, ids, labels, skipped = images_from_folder(images, strict=options.strict, size=image_size)
        captions = captions_from_folder(images, ids)
        extra = {"images": str(images.resolve()), "skipped": len(skipped)}
    if pattern_grid is not None:
        imgs, ids, labels, captions = _without_flat_patterns(imgs, ids, labels, captions, embedder, options.strict,
                                                             skipped)
    extra["clip_weights"] = str(Path(options.clip_weights).resolve()) if options.clip_weights is not None else ""
    if options.stimulus_encoder is not None:
        extra["stimulus_encoder"] = str(Path(options.stimulus_encoder).resolve())
    gallery = build_gallery(imgs, ids, labels, captions, embedder=embedder, source=options.source,
                            thumb_size=options.thumb_size, batch_size=options.batch_size, progress=options.progress,
                            name=options.name or out.name, extra_meta=extra)
    gallery.save(out, overwrite=options.overwrite)
    Gallery.load(out)  # read back what was written: a broken store fails here, not at start-up later
    return GalleryBuildResult(gallery, skipped)


def _without_flat_patterns(imgs: Any, ids: list[str], labels: list[str], captions: list[str], embedder: Any,
                           strict: bool, skipped: list[tuple[str, str]]) -> tuple[Any, list[str], list[str], list[str]]:
    """Leave out (or, with ``strict``, refuse) images that are one flat grey at the pattern grid."""
    flat = {int(i) for i in embedder.flat_images(imgs)}
    if not flat:
        return imgs, ids, labels, captions
    reason = f"one flat grey at {embedder.grid}x{embedder.grid}: its correlation with a decoded pattern is undefined"
    if strict:
        raise ValueError(f"image {ids[min(flat)]!r} is {reason} (--strict; drop --strict to skip such images)")
    skipped.extend((ids[i], reason) for i in sorted(flat))
    keep = [i for i in range(len(ids)) if i not in flat]
    if not keep:
        raise ValueError(f"every image is {reason}; a pattern gallery needs patterns")
    return imgs[keep], [ids[i] for i in keep], [labels[i] for i in keep], [captions[i] for i in keep]
