"""``bci gallery``: build, describe and search image galleries.

Wired into ``bci/cli/main.py`` with ``register(sub, _add_parser)``. Handlers turn the
argparse namespace into plain arguments and call :mod:`bci.retrieval.gallery`,
:mod:`bci.retrieval.search` and :func:`bci.clip.load_clip` (imported inside, only when
needed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from bci.cli.progress import add_progress_flag, show_progress
from bci.cli.types import positive_int
from bci.retrieval.build import load_embedder  # light: imports bci.clip only when called
from bci.cli import types as cli_types

#: Same as ``bci.retrieval.search.BACKENDS`` (not imported here: building the parser must not import torch).
BACKENDS: tuple[str, ...] = ("torch", "faiss-flat", "faiss-hnsw", "faiss-ivf")

EXAMPLES = (
    "bci gallery build images/ galleries/mine --clip ViT-B-32 --clip-weights weights/vit-b-32.safetensors\n"
    "  bci gallery build --synthetic galleries/synthetic --clip tiny --clip-weights models/tiny-clip\n"
    "  bci gallery info galleries/synthetic\n"
    '  bci gallery search galleries/synthetic --text "a red triangle" -k 5 --clip tiny '
    "--clip-weights models/tiny-clip"
)


# --------------------------------------------------------------------------- build
def build_command(**options: Any) -> int:
    """Build a gallery (:func:`bci.retrieval.build.build_gallery_dir`; keywords: the fields of
    :class:`~bci.retrieval.build.GalleryBuildOptions`) and print a summary."""
    from bci.retrieval.build import GalleryBuildOptions, build_gallery_dir

    result = build_gallery_dir(GalleryBuildOptions(**options))
    gallery, out = result.gallery, Path(options["out"])
    print(f"wrote gallery {out}: {len(gallery)} images, {gallery.embed_dim}-d {gallery.meta['source']} embeddings "
          f"(clip {gallery.meta['clip']}, fingerprint {gallery.meta['clip_fingerprint']})")
    _print_skipped(result.skipped)
    return 0


def _print_skipped(skipped: list[tuple[str, str]], shown: int = 10) -> None:
    if not skipped:
        return
    print(f"skipped {len(skipped)} file(s) that could not be read (use --strict to stop on them):", file=sys.stderr)
    for rel, reason in skipped[:shown]:
        print(f"  {rel}: {reason}", file=sys.stderr)
    if len(skipped) > shown:
        print(f"  ... and {len(skipped) - shown} more", file=sys.stderr)


def _cmd_build(args: argparse.Namespace) -> int:
    return build_command(images=args.images, out=args.out, synthetic=args.synthetic, clip=args.clip,
                         clip_weights=args.clip_weights, device=args.device, source=args.source,
                         stimulus_encoder=args.stimulus_encoder, pattern_grid=args.pattern_grid,
                         strict=args.strict, thumb_size=args.thumb_size, image_size=args.image_size,
                         batch_size=args.batch_size, n_per_class=args.n_per_class, seed=args.seed,
                         caption=args.caption, name=args.name, overwrite=args.overwrite,
                         progress=show_progress(args.no_progress))


# --------------------------------------------------------------------------- info
def info_command(directory: Path) -> int:
    """Print a gallery's size, dimension, CLIP, source and provenance."""
    from bci.retrieval.gallery import Gallery

    g = Gallery.load(directory)
    thumbs = "x".join(str(s) for s in g.thumbnails.shape[1:3]) if g.has_thumbnails else "none"
    print(f"gallery {g.name!r} at {directory}")
    print(f"  images:       {len(g)} ({len(set(g.labels))} distinct labels, "
          f"{sum(bool(c) for c in g.captions)} with captions)")
    print(f"  embeddings:   {g.embed_dim}-d, source {g.meta.get('source', '?')}")
    print(f"  clip:         {g.meta.get('clip', '?')} (fingerprint {g.meta.get('clip_fingerprint') or '?'})")
    print(f"  thumbnails:   {thumbs}")
    for key, label in (("clip_weights", "weights"), ("images", "from"), ("created", "created"),
                       ("bci_version", "bci version")):
        if g.meta.get(key):
            print(f"  {label + ':':<13} {g.meta[key]}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    return info_command(args.dir)


# --------------------------------------------------------------------------- search
def search_command(directory: Path, *, text: str | None, image: Path | None, k: int, clip: str,
                   clip_weights: Path | None, device: str, backend: str) -> int:
    """Search a gallery with a caption or an image file; print the top-k."""
    from bci.retrieval.gallery import Gallery
    from bci.retrieval.search import FaissNotInstalledError, Retriever, check_compatible

    if (text is None) == (image is None):
        raise ValueError("give exactly one of --text and --image")
    if k < 1:
        raise ValueError(f"-k {k} must be >= 1")
    gallery = Gallery.load(directory)
    embedder = load_embedder(clip, clip_weights, device)
    check_compatible(gallery, int(embedder.embed_dim), where=f"CLIP {embedder.name!r}",
                     clip_fingerprint=str(embedder.fingerprint()))
    try:
        retriever = Retriever(gallery, device=device if backend == "torch" else "cpu", backend=backend, k=k)
    except FaissNotInstalledError as exc:  # an ImportError: make it a one-line CLI error
        raise ValueError(str(exc)) from None
    if text is not None:
        hits = retriever.search_text([text], embedder)[0]
        what = repr(text)
    else:
        hits = retriever.search_images(_read_one_image(image), embedder)[0]
        what = str(image)
    print(f"top {len(hits)} of {len(gallery)} in gallery {gallery.name!r} for {what}:")
    width = max(len(h["id"]) for h in hits)
    for rank, h in enumerate(hits, 1):
        print(f"  {rank:>2}. {h['id']:<{width}}  {h['score']:+.4f}  {h['label']}")
    return 0


def _read_one_image(path: Path) -> Any:
    from bci.retrieval.gallery import read_image

    if not path.is_file():
        raise FileNotFoundError(f"--image {path} does not exist")
    try:
        img = read_image(path, 224)
    except Exception as exc:  # Pillow raises many types for broken files
        raise ValueError(f"--image {path}: cannot decode ({type(exc).__name__}: {exc})") from None
    return img[None]


def _cmd_search(args: argparse.Namespace) -> int:
    return search_command(args.dir, text=args.text, image=args.image, k=args.k, clip=args.clip,
                          clip_weights=args.clip_weights, device=args.device, backend=args.backend)


# --------------------------------------------------------------------------- parser
def _add_clip_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", default="tiny", metavar="NAME",
                   help="CLIP architecture: 'tiny' or an open_clip name such as ViT-B-32 [tiny]")
    p.add_argument("--clip-weights", type=Path, default=None, metavar="PATH",
                   help="local CLIP weights: a folder from 'bci train clip', an open_clip folder or a weights file "
                        "(required; nothing is downloaded)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto [cpu]")


def _sub(gsub: argparse._SubParsersAction, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return gsub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def register(sub: argparse._SubParsersAction, add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``bci gallery build|info|search`` to the ``bci`` sub-command parsers."""
    p = add_parser(sub, "gallery", "Build, describe and search image galleries (CLIP embeddings + thumbnails).",
                   EXAMPLES)
    gsub = p.add_subparsers(dest="gallery_command", metavar="ACTION")
    gsub.required = True

    b = _sub(gsub, "build", "Embed a folder of images (or the synthetic stimuli) with CLIP into a gallery.",
             "bci gallery build photos/ galleries/photos --clip ViT-B-32 --clip-weights vit-b-32.safetensors\n"
             "  bci gallery build --synthetic galleries/synthetic --source text   # caption embeddings")
    b.add_argument("images", type=Path, nargs="?", default=None, metavar="IMAGES",
                   help="folder of images (sub-folder = label; optional labels.csv / captions.json)")
    b.add_argument("out", type=Path, metavar="OUT", help="gallery directory to write")
    b.add_argument("--synthetic", action="store_true", help="use the synthetic stimulus set instead of IMAGES")
    b.add_argument("--stimulus-encoder", type=Path, default=None, metavar="DIR",
                   help="embed with the stimulus CNN of a dual-encoder fMRI model (its checkpoint or its "
                        "stimulus/ folder) instead of CLIP")
    b.add_argument("--pattern-grid", type=positive_int, default=None, metavar="N",
                   help="for an fMRI pattern decoder of this grid (e.g. 10): embed each image as its NxN pattern, "
                        "so live decoding ranks the candidates by correlation with the decoded pattern")
    _add_clip_options(b)
    b.add_argument("--source", choices=("image", "text"), default="image",
                   help="embed the images, or their captions with the text encoder [image]")
    b.add_argument("--strict", action="store_true", help="stop on an unreadable image instead of skipping it")
    b.add_argument("--thumb-size", type=cli_types.non_negative_int, default=64, metavar="N", help="thumbnail side, 0 for none [64]")
    b.add_argument("--image-size", type=cli_types.non_negative_int, default=None, metavar="S",
                   help="folder images are centre-cropped and resized to S x S before embedding [224; with "
                        "--pattern-grid N: 6N, so every cell stays whole]")
    b.add_argument("--batch-size", type=cli_types.non_negative_int, default=256, help="images per CLIP call [256]")
    b.add_argument("--n-per-class", type=cli_types.non_negative_int, default=5, help="with --synthetic: images per class (40 classes) [5]")
    b.add_argument("--seed", type=cli_types.non_negative_int, default=0, help="with --synthetic: stimulus seed [0]")
    b.add_argument("--caption", choices=("detailed", "template"), default="detailed",
                   help="with --synthetic: detailed captions or 'an image of a <class>' [detailed]")
    b.add_argument("--name", default=None, help="gallery name shown in messages [OUT's folder name]")
    b.add_argument("--overwrite", action="store_true", help="replace a gallery already in OUT")
    add_progress_flag(b)
    b.set_defaults(func=_cmd_build)

    i = _sub(gsub, "info", "Describe a gallery: size, dimension, CLIP, source.", "bci gallery info galleries/photos")
    i.add_argument("dir", type=Path, metavar="DIR", help="gallery directory")
    i.set_defaults(func=_cmd_info)

    s = _sub(gsub, "search", "Search a gallery with a caption (--text) or an image file (--image).",
             'bci gallery search galleries/synthetic --text "a red triangle" -k 5 --clip tiny '
             "--clip-weights models/tiny-clip")
    s.add_argument("dir", type=Path, metavar="DIR", help="gallery directory")
    s.add_argument("--text", default=None, help="caption to search for")
    s.add_argument("--image", type=Path, default=None, help="image file to search with")
    s.add_argument("-k", "--k", type=cli_types.non_negative_int, default=5, help="results [5]")
    s.add_argument("--backend", choices=BACKENDS, default="torch", help="search backend [torch]")
    _add_clip_options(s)
    s.set_defaults(func=_cmd_search)
