"""Image galleries: embeddings, ids, labels, captions and thumbnails, stored without pickle.

A gallery is what decoded embeddings are compared against: one L2-normalised
embedding per image (from a CLIP image encoder, or from the text encoder applied to
the image's caption), with the image's id, label, caption and a small thumbnail for
the viewer.

On disk a gallery is a directory with two files (see ``docs/retrieval.md``):

``gallery.json``
    ``format`` (``"bci-gallery"``), ``version`` (1), ``n``, ``embed_dim``,
    ``thumb_shape``, ``embeddings_sha256``, ``ids``, ``labels``, ``captions``, ``meta``.
``arrays.npz``
    ``embeddings`` (N, D) float32 and ``thumbnails`` (N, h, w, 3) uint8, read with
    ``allow_pickle=False``.

Loading checks everything and raises :class:`GalleryError` naming the file and the
problem. Building: :func:`build_gallery` (any embedder with ``encode_images`` /
``encode_text``, e.g. :class:`bci.clip.ClipEmbedder`), from a folder of images
(:func:`images_from_folder`) or from the synthetic world (:func:`gallery_from_stimuli`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Sequence

import numpy as np

from bci import __version__
from streams._checks import check_int

#: Value of ``format`` in ``gallery.json``.
FORMAT_NAME = "bci-gallery"
#: Value of ``version`` in ``gallery.json`` (this code reads exactly this version).
FORMAT_VERSION = 1
#: File names inside a gallery directory.
JSON_FILE = "gallery.json"
ARRAYS_FILE = "arrays.npz"
#: Largest allowed deviation of an embedding's L2 norm from 1.
NORM_TOLERANCE = 1e-3
#: File name suffixes read by :func:`images_from_folder` (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: Optional annotation files at the top of an image folder.
LABELS_CSV = "labels.csv"
CAPTIONS_JSON = "captions.json"
SOURCES: tuple[str, ...] = ("image", "text")


class GalleryError(ValueError):
    """A gallery is invalid: a corrupt or foreign store, or inconsistent arrays."""


class Embedder(Protocol):
    """What :func:`build_gallery` needs from an embedder (e.g. :class:`bci.clip.ClipEmbedder`)."""

    name: str
    embed_dim: int

    def encode_images(self, images: np.ndarray) -> np.ndarray: ...  # (N,H,W,3) uint8 -> (N,D) float32

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...  # N strings -> (N,D) float32

    def fingerprint(self) -> str: ...


# --------------------------------------------------------------------------- the gallery
@dataclass(eq=False, repr=False)
class Gallery:
    """Embeddings of a set of images, with their ids, labels, captions and thumbnails.

    Parameters
    ----------
    embeddings : ndarray, shape (N, D), float32
        L2-normalised rows (norms within :data:`NORM_TOLERANCE` of 1), finite.
    ids : list of str
        Unique, non-empty image ids (e.g. ``"img0003"`` or ``"dogs/rex"``).
    labels : list of str
        Per image, its class label (may be ``""`` when unknown).
    captions : list of str
        Per image, a caption (may be ``""`` when unknown).
    thumbnails : ndarray, shape (N, h, w, 3), uint8
        Small copies of the images for display; ``h = w = 0`` when the gallery has none.
    meta : dict
        JSON-serialisable provenance: ``clip`` (embedder name), ``clip_fingerprint``,
        ``source`` (``"image"`` or ``"text"``), ``name``, ``created``, ...

    Raises
    ------
    GalleryError
        Shapes, dtypes, lengths, norms or ids are inconsistent (the message says which).
    """

    embeddings: np.ndarray
    ids: list[str]
    labels: list[str]
    captions: list[str]
    thumbnails: np.ndarray
    meta: dict = field(default_factory=dict)
    #: The directory it was loaded from or last saved to (None for an unsaved gallery).
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.ids, self.labels, self.captions = list(self.ids), list(self.labels), list(self.captions)
        _validate(self, where="Gallery")
        self._index = {image_id: i for i, image_id in enumerate(self.ids)}

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"Gallery(name={self.name!r}, n={len(self)}, embed_dim={self.embed_dim}, "
                f"clip={self.meta.get('clip')!r}, source={self.meta.get('source')!r})")

    @property
    def embed_dim(self) -> int:
        """Embedding dimension D."""
        return int(self.embeddings.shape[1])

    @property
    def name(self) -> str:
        """``meta["name"]``, else the directory name, else ``"unsaved"`` (used in messages)."""
        name = self.meta.get("name")
        if isinstance(name, str) and name:
            return name
        return self.path.name if self.path is not None else "unsaved"

    @property
    def has_thumbnails(self) -> bool:
        """Whether thumbnails are stored (``thumb_size > 0`` when built)."""
        return self.thumbnails.shape[1] > 0 and self.thumbnails.shape[2] > 0

    # ------------------------------------------------------------------ look-ups
    def index_of(self, image_id: str) -> int:
        """Row of ``image_id``.

        Raises
        ------
        KeyError
            The id is not in the gallery (the message names the gallery and its size).
        """
        try:
            return self._index[image_id]
        except (KeyError, TypeError):
            example = ", ".join(repr(i) for i in self.ids[:3])
            raise KeyError(f"image id {image_id!r} is not in gallery {self.name!r} "
                           f"({len(self)} images, e.g. {example})") from None

    def thumbnail(self, image_id: str) -> np.ndarray | None:
        """Thumbnail (h, w, 3) uint8 of ``image_id``; None when the id is unknown or there are none."""
        i = self._index.get(image_id) if isinstance(image_id, str) else None
        if i is None or not self.has_thumbnails:
            return None
        return self.thumbnails[i]

    # ------------------------------------------------------------------ I/O
    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``gallery.json`` and ``arrays.npz`` into ``directory`` (created if needed).

        Parameters
        ----------
        directory : path
            Gallery directory.
        overwrite : bool
            Replace an existing gallery there; otherwise that is a FileExistsError.

        Returns
        -------
        Path
            The directory.
        """
        directory = Path(directory)
        json_path, arrays_path = directory / JSON_FILE, directory / ARRAYS_FILE
        if not overwrite and (json_path.exists() or arrays_path.exists()):
            raise FileExistsError(f"{directory} already holds a gallery; pass overwrite=True (--overwrite) "
                                  "or choose another directory")
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"gallery directory {directory} exists and is not a directory")
        header = self._header()
        text = _dump_json(header)
        directory.mkdir(parents=True, exist_ok=True)
        # arrays first, then the JSON: a gallery.json only exists next to complete arrays
        json_path.unlink(missing_ok=True)
        tmp_arrays = directory / (ARRAYS_FILE + ".tmp.npz")
        np.savez(tmp_arrays, embeddings=self.embeddings, thumbnails=self.thumbnails)
        os.replace(tmp_arrays, arrays_path)
        tmp_json = directory / (JSON_FILE + ".tmp")
        tmp_json.write_text(text, encoding="utf-8")
        os.replace(tmp_json, json_path)
        self.path = directory
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Gallery:
        """Read and validate a gallery written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            ``directory`` or one of its two files does not exist.
        GalleryError
            Foreign or corrupt store: wrong format or version, malformed JSON, an
            unreadable or pickle-bearing ``arrays.npz``, shapes or lengths that do not
            match, non-finite or non-normalised embeddings, duplicate ids, arrays that
            belong to another gallery (checksum).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"gallery directory {directory} does not exist "
                                    "(build one with 'bci gallery build')")
        header = _read_header(directory / JSON_FILE)
        embeddings, thumbnails = _read_arrays(directory / ARRAYS_FILE)
        _check_header_against_arrays(header, embeddings, thumbnails, directory)
        try:
            gallery = cls(embeddings=embeddings, ids=header["ids"], labels=header["labels"],
                          captions=header["captions"], thumbnails=thumbnails, meta=header["meta"], path=directory)
        except GalleryError as exc:
            raise GalleryError(f"{directory}: {exc}") from None
        return gallery

    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "n": len(self),
            "embed_dim": self.embed_dim,
            "thumb_shape": list(self.thumbnails.shape[1:3]),
            "embeddings_sha256": _sha256(self.embeddings),
            "meta": self.meta,
            "ids": self.ids,
            "labels": self.labels,
            "captions": self.captions,
        }


# --------------------------------------------------------------------------- validation
def _validate(g: Gallery, *, where: str) -> None:
    """Check a gallery's arrays and lists; GalleryError naming ``where`` and the problem."""
    emb, thumbs = g.embeddings, g.thumbnails
    if not isinstance(emb, np.ndarray) or emb.ndim != 2 or emb.dtype != np.float32:
        raise GalleryError(f"{where}: embeddings must be a 2-D float32 array (N, D), got "
                           f"{_describe(emb)}")
    n, d = emb.shape
    if n < 1 or d < 1:
        raise GalleryError(f"{where}: embeddings have shape {emb.shape}; a gallery needs at least one "
                           "image and one dimension")
    if not isinstance(thumbs, np.ndarray) or thumbs.ndim != 4 or thumbs.shape[3] != 3 or thumbs.dtype != np.uint8:
        raise GalleryError(f"{where}: thumbnails must be a uint8 array (N, h, w, 3), got {_describe(thumbs)}")
    if thumbs.shape[0] != n:
        raise GalleryError(f"{where}: {thumbs.shape[0]} thumbnails for {n} embeddings")
    for name in ("ids", "labels", "captions"):
        values = getattr(g, name)
        if len(values) != n:
            raise GalleryError(f"{where}: {len(values)} {name} for {n} embeddings")
        bad = next((v for v in values if not isinstance(v, str)), None)
        if bad is not None:
            raise GalleryError(f"{where}: {name} must be strings, found {bad!r}")
    if "" in g.ids:
        raise GalleryError(f"{where}: image ids must be non-empty (row {g.ids.index('')} is '')")
    if len(set(g.ids)) != n:
        dup = _first_duplicate(g.ids)
        raise GalleryError(f"{where}: image ids must be unique; {dup!r} appears more than once")
    if not isinstance(g.meta, dict):
        raise GalleryError(f"{where}: meta must be a dict, got {type(g.meta).__name__}")
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise GalleryError(f"{where}: embeddings contain NaN or inf ({int((~finite).sum())} rows, first: "
                           f"row {row}, id {g.ids[row]!r})")
    norms = np.linalg.norm(emb, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise GalleryError(f"{where}: embeddings must be L2-normalised; {int(off.sum())} rows are not "
                           f"(row {row}, id {g.ids[row]!r}, norm {norms[row]:.4g})")


def _first_duplicate(values: Sequence[str]) -> str:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return ""


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _dump_json(header: dict[str, Any]) -> str:
    try:
        return json.dumps(header, ensure_ascii=False, allow_nan=False, indent=None) + "\n"
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"gallery meta must be JSON-serialisable (str, numbers, lists, dicts): {exc}") from None


def _read_header(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {path.parent} is not a complete gallery "
                                "(rebuild it with 'bci gallery build')")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryError(f"{path}: not valid JSON ({exc}); the gallery is corrupt, rebuild it") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise GalleryError(f"{path}: format is {found!r}, not {FORMAT_NAME!r}; this is not a bci gallery")
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise GalleryError(f"{path}: gallery format version {version!r} is not supported (this bci reads "
                           f"version {FORMAT_VERSION}); rebuild the gallery with this version of bci")
    for key, kind in (("n", int), ("embed_dim", int), ("thumb_shape", list), ("embeddings_sha256", str),
                      ("ids", list), ("labels", list), ("captions", list), ("meta", dict)):
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise GalleryError(f"{path}: field {key!r} must be a {kind.__name__}, got {header.get(key)!r:.80}")
    return header


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {path.parent} is not a complete gallery "
                                "(rebuild it with 'bci gallery build')")
    try:
        # our own file handle: np.load leaks its own when the zip directory is unreadable
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            keys = set(npz.files)
            if keys != {"embeddings", "thumbnails"}:
                raise GalleryError(f"{path}: expected the arrays 'embeddings' and 'thumbnails', found "
                                   f"{sorted(keys)}; this is not a bci gallery")
            embeddings, thumbnails = npz["embeddings"], npz["thumbnails"]
    except GalleryError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise GalleryError(f"{path}: holds pickled objects, which bci never loads (unsafe); "
                               "rebuild the gallery with 'bci gallery build'") from None
        raise GalleryError(f"{path}: unreadable ({exc}); the file is corrupt, rebuild the gallery") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error,
            RuntimeError, NotImplementedError) as exc:  # zipfile: encrypted / unsupported compression flags
        raise GalleryError(f"{path}: unreadable ({type(exc).__name__}: {exc}); the file is truncated or "
                           "corrupt, rebuild the gallery") from None
    return embeddings, thumbnails


def _check_header_against_arrays(header: dict[str, Any], embeddings: np.ndarray, thumbnails: np.ndarray,
                                 directory: Path) -> None:
    arrays, json_path = directory / ARRAYS_FILE, directory / JSON_FILE
    if embeddings.dtype != np.float32 or embeddings.ndim != 2:
        raise GalleryError(f"{arrays}: embeddings must be float32 (N, D), got {_describe(embeddings)}")
    if embeddings.shape != (header["n"], header["embed_dim"]):
        raise GalleryError(f"{arrays}: embeddings have shape {embeddings.shape} but {json_path} says "
                           f"{header['n']} x {header['embed_dim']}; the files belong to different galleries")
    if list(thumbnails.shape[1:3]) != header["thumb_shape"]:
        raise GalleryError(f"{arrays}: thumbnails are {thumbnails.shape[1:3]} but {json_path} says "
                           f"{tuple(header['thumb_shape'])}")
    for key in ("ids", "labels", "captions"):
        if len(header[key]) != header["n"]:
            raise GalleryError(f"{json_path}: {len(header[key])} {key} for n={header['n']} images")
    if _sha256(embeddings) != header["embeddings_sha256"]:
        raise GalleryError(f"{arrays}: embeddings do not match the checksum in {json_path}; "
                           "the arrays were changed or belong to another gallery")


# --------------------------------------------------------------------------- building
def build_gallery(
    images: np.ndarray | None,
    ids: Sequence[str],
    labels: Sequence[str],
    captions: Sequence[str],
    *,
    embedder: Embedder,
    source: str = "image",
    thumb_size: int = 64,
    batch_size: int = 256,
    progress: bool = True,
    name: str | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Gallery:
    """Embed images (or their captions) and assemble a :class:`Gallery`.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3), uint8, or None
        The images. Needed for ``source="image"`` and for thumbnails; may be None
        with ``source="text"`` (then there are no thumbnails).
    ids, labels, captions : sequences of str, length N
        Unique ids; labels and captions (``""`` when unknown; ``source="text"``
        needs every caption).
    embedder : object
        Has ``encode_images``, ``encode_text``, ``embed_dim``, ``name`` and
        ``fingerprint()`` (e.g. :func:`bci.clip.load_clip`).
    source : {"image", "text"}
        Embed the images with the image encoder, or the captions with the text encoder.
    thumb_size : int
        Side of the square thumbnails (0: store none).
    batch_size : int
        Images or captions per call to the embedder.
    progress : bool
        Show a progress bar (tqdm, on stderr).
    name : str, optional
        Gallery name stored in ``meta["name"]`` (shown in messages).
    extra_meta : dict, optional
        More JSON-serialisable provenance to store in ``meta``.

    Returns
    -------
    Gallery
        Embeddings float32, re-normalised; ``meta`` with ``clip``, ``clip_fingerprint``,
        ``source``, ``embed_dim``, ``thumb_size``, ``created``, ``bci_version``.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r} must be one of {SOURCES} (--source)")
    thumb_size = check_int("thumb_size", thumb_size, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)
    ids, labels, captions = _check_strings("ids", ids), _check_strings("labels", labels), \
        _check_strings("captions", captions)
    n = len(ids)
    if n == 0:
        raise ValueError("ids is empty: a gallery needs at least one image")
    if len(labels) != n or len(captions) != n:
        raise ValueError(f"ids, labels and captions must have the same length, got {n}, {len(labels)}, "
                         f"{len(captions)}")
    if images is not None:
        images = check_images(images, "images")
        if images.shape[0] != n:
            raise ValueError(f"images has {images.shape[0]} rows but there are {n} ids")
    elif source == "image":
        raise ValueError("images is None: source='image' needs the images (or use source='text')")
    if source == "text" and any(not c.strip() for c in captions):
        empty = [ids[i] for i, c in enumerate(captions) if not c.strip()]
        raise ValueError(f"source='text' needs a caption for every image; {len(empty)} have none "
                         f"(e.g. {empty[:3]}); add captions or use source='image'")
    embeddings = _embed(embedder, images, captions, source=source, batch_size=batch_size, progress=progress)
    thumbnails = make_thumbnails(images, thumb_size) if images is not None and thumb_size > 0 \
        else np.zeros((n, 0, 0, 3), np.uint8)
    meta = {
        "name": name or "",
        "clip": str(getattr(embedder, "name", type(embedder).__name__)),
        "clip_fingerprint": str(embedder.fingerprint()) if hasattr(embedder, "fingerprint") else "",
        "source": source,
        "embed_dim": int(embeddings.shape[1]),
        "thumb_size": int(thumb_size),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bci_version": __version__,
        **(extra_meta or {}),
    }
    return Gallery(embeddings=embeddings, ids=ids, labels=labels, captions=captions, thumbnails=thumbnails,
                   meta=meta)


def _embed(embedder: Embedder, images: np.ndarray | None, captions: list[str], *, source: str,
           batch_size: int, progress: bool) -> np.ndarray:
    """Run the embedder batch by batch with a progress bar; check and re-normalise its output."""
    from tqdm.auto import tqdm

    n = len(captions)
    chunks = []
    with tqdm(total=n, desc=f"embedding {source}s", unit=source, disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if source == "image":
                out = embedder.encode_images(images[start:stop])
            else:
                out = embedder.encode_text(captions[start:stop])
            chunks.append(_check_embedder_output(out, stop - start, embedder))
            bar.update(stop - start)
    emb = np.concatenate(chunks, axis=0)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        row = int(np.flatnonzero(norms[:, 0] <= 1e-12)[0])
        raise ValueError(f"the embedder returned a zero vector for row {row}; it cannot be normalised")
    return (emb / norms).astype(np.float32)


def _check_embedder_output(out: Any, n: int, embedder: Embedder) -> np.ndarray:
    arr = np.asarray(out, dtype=np.float32)
    dim = getattr(embedder, "embed_dim", None)
    if arr.ndim != 2 or arr.shape[0] != n or (dim is not None and arr.shape[1] != dim):
        raise ValueError(f"embedder {getattr(embedder, 'name', embedder)!r} returned shape {arr.shape}, "
                         f"expected ({n}, {dim})")
    if not np.isfinite(arr).all():
        raise ValueError(f"embedder {getattr(embedder, 'name', embedder)!r} returned NaN or inf")
    return arr


def make_thumbnails(images: np.ndarray, size: int) -> np.ndarray:
    """Resize images to ``size`` x ``size`` thumbnails (Pillow, antialiased).

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3), uint8
    size : int
        Thumbnail side (>= 1).

    Returns
    -------
    ndarray, shape (N, size, size, 3), uint8
    """
    images = check_images(images, "images")
    size = check_int("size", size, low=1)
    if images.shape[1:3] == (size, size):
        return images.copy()
    from PIL import Image

    out = np.empty((images.shape[0], size, size, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))
    return out


def check_images(images: Any, name: str = "images") -> np.ndarray:
    """Validate an image batch: uint8 (N, H, W, 3) with N, H, W >= 1 (TypeError/ValueError otherwise)."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (N, H, W, 3) uint8, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 (0-255 RGB), got {images.dtype}")
    if images.ndim != 4 or images.shape[3] != 3 or min(images.shape[:3]) < 1:
        raise ValueError(f"{name} must have shape (N, H, W, 3) with N, H, W >= 1, got {images.shape}")
    return images


def _check_strings(name: str, values: Sequence[str]) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    values = list(values)
    bad = next((v for v in values if not isinstance(v, str)), None)
    if bad is not None:
        raise TypeError(f"{name} must contain only strings, found {bad!r} ({type(bad).__name__})")
    return values




# --------------------------------------------------------------------------- image folders
class FolderImages(NamedTuple):
    """What :func:`images_from_folder` returns (unpacks as ``images, ids, labels, skipped``)."""

    images: np.ndarray
    """(N, S, S, 3) uint8, every image centre-cropped to a square and resized to S."""
    ids: list[str]
    """Path relative to the folder, ``/``-separated, without suffix (``"dogs/rex"``)."""
    labels: list[str]
    """From ``labels.csv`` when listed there, else the name of the file's parent folder."""
    skipped: list[tuple[str, str]]
    """(relative path, reason) of every image file that was not loaded."""


def images_from_folder(folder: str | os.PathLike, *, strict: bool = False, size: int = 224) -> FolderImages:
    """Load every image under ``folder`` (recursively, sorted) as one uint8 array.

    Files with a suffix in :data:`IMAGE_SUFFIXES` (case-insensitive) are read with
    Pillow and converted to RGB; hidden files and folders (``.name``) are ignored.
    Each image is centre-cropped to a square and resized to ``size`` x ``size``
    (as CLIP's preprocessing does).

    * id: the path relative to ``folder`` without its suffix, ``/``-separated.
    * label: the name of the folder holding the file (``folder/dog/1.png`` -> ``"dog"``;
      a file at the top takes the name of ``folder`` itself), unless ``labels.csv``
      at the top of ``folder`` gives one (see :func:`read_annotations`).

    Parameters
    ----------
    folder : path
        Folder of images (sub-folders per class, or flat).
    strict : bool
        Raise on the first file that cannot be decoded (or a duplicate id) instead
        of skipping it.
    size : int
        Side of the returned square images (>= 8).

    Returns
    -------
    FolderImages
        ``(images, ids, labels, skipped)``.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        No readable image; with ``strict``, an undecodable file or a duplicate id;
        a malformed ``labels.csv`` / ``captions.json`` or one naming unknown ids.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    size = check_int("size", size, low=8)
    annotations = read_annotations(root)
    images: list[np.ndarray] = []
    ids: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in _image_files(root):
        rel = path.relative_to(root).as_posix()
        image_id = rel.rsplit(".", 1)[0]
        if image_id in seen:
            _skip_or_raise(skipped, rel, f"duplicate id {image_id!r} (another file has the same name "
                                         "with a different suffix)", strict)
            continue
        try:
            images.append(read_image(path, size))
        except Exception as exc:  # Pillow raises many types for broken files
            _skip_or_raise(skipped, rel, f"cannot decode: {type(exc).__name__}: {exc}", strict)
            continue
        ids.append(image_id)
        seen.add(image_id)
    if not ids:
        detail = f" ({len(skipped)} unreadable)" if skipped else ""
        raise ValueError(f"no readable images in {root}{detail}; expected files ending in "
                         f"{', '.join(IMAGE_SUFFIXES)}")
    _check_annotation_ids(root, annotations, set(ids) | {p.rsplit(".", 1)[0] for p, _ in skipped})
    labels = [annotations.labels.get(i, _folder_label(root, i)) for i in ids]
    return FolderImages(np.stack(images), ids, labels, skipped)


def captions_from_folder(folder: str | os.PathLike, ids: Sequence[str]) -> list[str]:
    """Captions of ``ids`` from the folder's ``labels.csv`` / ``captions.json`` (``""`` when none)."""
    annotations = read_annotations(Path(folder))
    return [annotations.captions.get(i, "") for i in ids]


class Annotations(NamedTuple):
    """Labels and captions by image id, from the optional files of an image folder."""

    labels: dict[str, str]
    captions: dict[str, str]


def read_annotations(folder: str | os.PathLike) -> Annotations:
    """Read the optional ``labels.csv`` and ``captions.json`` at the top of an image folder.

    ``labels.csv``: UTF-8 CSV with a header row holding ``id`` and at least one of
    ``label`` and ``caption``; ``id`` is the image id (relative path without suffix,
    ``/``-separated). ``captions.json``: a JSON object ``{"<id>": "<caption>", ...}``;
    it takes precedence over the ``caption`` column.

    Returns
    -------
    Annotations
        Empty dicts when the files are absent.

    Raises
    ------
    ValueError
        A file is malformed (the message names the file and the line).
    """
    root = Path(folder)
    labels: dict[str, str] = {}
    captions: dict[str, str] = {}
    csv_path = root / LABELS_CSV
    if csv_path.is_file():
        labels, captions = _read_labels_csv(csv_path)
    json_path = root / CAPTIONS_JSON
    if json_path.is_file():
        captions.update(_read_captions_json(json_path))
    return Annotations(labels, captions)


def _read_labels_csv(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    labels: dict[str, str] = {}
    captions: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            if "id" not in fields or not ({"label", "caption"} & set(fields)):
                raise ValueError(f"{path}: the header must name 'id' and 'label' and/or 'caption', got {fields}")
            reader.fieldnames = fields
            for row in reader:
                image_id = (row.get("id") or "").strip()
                if not image_id:
                    raise ValueError(f"{path}, line {reader.line_num}: empty id")
                if row.get("label") is not None and row["label"].strip():
                    labels[image_id] = row["label"].strip()
                if row.get("caption") is not None and row["caption"].strip():
                    captions[image_id] = row["caption"].strip()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: malformed CSV ({exc})") from None
    return labels, captions


def _read_captions_json(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f'{path}: must be a JSON object {{"<image id>": "<caption>", ...}}')
    return data


def _check_annotation_ids(root: Path, annotations: Annotations, known: set[str]) -> None:
    unknown = sorted((set(annotations.labels) | set(annotations.captions)) - known)
    if unknown:
        raise ValueError(f"{root}: {LABELS_CSV}/{CAPTIONS_JSON} name {len(unknown)} id(s) with no image file, "
                         f"e.g. {unknown[:3]}; ids are paths relative to the folder without suffix, "
                         f"e.g. {sorted(known)[:2]}")


def _image_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith(".") and Path(fn).suffix.lower() in IMAGE_SUFFIXES:
                files.append(Path(dirpath) / fn)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_image(path: str | os.PathLike, size: int = 224) -> np.ndarray:
    """Decode an image file, convert to RGB, centre-crop to a square and resize to ``size``.

    Returns
    -------
    ndarray, shape (size, size, 3), uint8

    Raises
    ------
    OSError, ValueError, ...
        Whatever Pillow raises for a missing, truncated or undecodable file.
    """
    from PIL import Image, ImageOps

    size = check_int("size", size, low=1)
    with Image.open(path) as img:
        img.load()
        rgb = img.convert("RGB")
    fitted = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BICUBIC)
    return np.asarray(fitted, dtype=np.uint8)


def _skip_or_raise(skipped: list[tuple[str, str]], rel: str, reason: str, strict: bool) -> None:
    if strict:
        raise ValueError(f"{rel}: {reason} (strict mode; drop --strict to skip such files)")
    skipped.append((rel, reason))


def _folder_label(root: Path, image_id: str) -> str:
    parent = Path(image_id).parent
    return parent.name if parent.name else root.resolve().name


# --------------------------------------------------------------------------- synthetic world
def gallery_from_stimuli(stimulus_set: Any, *, caption: str = "detailed"
                         ) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Images, ids, labels and captions of a synthetic :class:`~streams.synthetic.stimuli.StimulusSet`.

    Parameters
    ----------
    stimulus_set : StimulusSet
        From :func:`streams.synthetic.stimuli.make_stimuli`.
    caption : {"detailed", "template"}
        ``"a large red triangle in the upper left"`` or ``"an image of a red triangle"``.

    Returns
    -------
    images, ids, labels, captions
        Ready for :func:`build_gallery`; labels are class names (``"red triangle"``).
    """
    if caption not in ("detailed", "template"):
        raise ValueError(f"caption={caption!r} must be 'detailed' or 'template'")
    for attr in ("images", "image_ids", "class_ids", "class_names", "captions", "template_captions"):
        if not hasattr(stimulus_set, attr):
            raise TypeError(f"stimulus_set must be a streams.synthetic.stimuli.StimulusSet (no {attr!r}), "
                            f"got {type(stimulus_set).__name__}")
    labels = [stimulus_set.class_names[int(c)] for c in stimulus_set.class_ids]
    captions = stimulus_set.captions if caption == "detailed" else stimulus_set.template_captions
    return np.asarray(stimulus_set.images), list(stimulus_set.image_ids), labels, list(captions)
