"""Images for the results panel: gallery thumbnails, image references in records, placeholder tiles.

A record refers to an image (``record["images"][kind]``) either by a **file path**
(absolute, or relative to ``base_dir``) or by a small **data URI**
(``data:image/png;base64,...``). Pixels never travel inside the viewer's model:
they are decoded on the GUI thread when a tile shows them, and cached.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

#: Largest image reference decoded (a data URI or a file), in bytes.
MAX_IMAGE_BYTES = 4 * 1024 * 1024
DATA_URI_PREFIX = "data:image/"


class ThumbnailGallery(Protocol):
    """What the viewer uses of a :class:`bci.retrieval.gallery.Gallery`."""

    def thumbnail(self, image_id: str) -> np.ndarray | None:
        """``(h, w, 3)`` uint8, or None when the id is unknown."""


def load_gallery(directory: str | os.PathLike) -> ThumbnailGallery:
    """Load a gallery directory (``bci.retrieval.gallery.Gallery.load``) for thumbnails.

    Raises
    ------
    FileNotFoundError
        ``directory`` does not exist.
    ValueError
        The gallery module is not available in this installation.
    """
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"--gallery {str(path)!r} does not exist; build one with 'bci gallery' or omit it")
    try:
        from bci.retrieval.gallery import Gallery
    except ImportError as exc:
        raise ValueError(f"--gallery needs bci.retrieval.gallery, which cannot be imported here ({exc})") from None
    return Gallery.load(path)


def placeholder_tile(size: int = 64, text_rows: int = 0) -> np.ndarray:
    """A grey, diagonally hatched ``(size, size, 3)`` uint8 tile for a missing image."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"size={size!r} must be an integer >= 4 (pixels)")
    yy, xx = np.mgrid[:size, :size]
    tile = np.full((size, size, 3), 70, np.uint8)
    tile[((xx + yy) // 4) % 2 == 0] = 95
    tile[[0, -1], :] = 150
    tile[:, [0, -1]] = 150
    return tile


def as_rgb(image: Any) -> np.ndarray:
    """``image`` as a C-contiguous ``(h, w, 3)`` uint8 array (grey and RGBA accepted).

    Floats are taken to be in [0, 1] and clipped.
    """
    arr = np.asarray(image)
    if arr.dtype.kind == "f":
        arr = (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"image of shape {arr.shape} is not (h, w), (h, w, 3) or (h, w, 4)")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def decode_image_ref(ref: str, base_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Pixels of an image reference: a ``data:image/...;base64,`` URI or a file path.

    Raises
    ------
    ValueError
        Not decodable, too large, or not an image.
    FileNotFoundError
        The path does not exist.
    """
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"image reference {ref!r} must be a non-empty string (path or data URI)")
    if ref.startswith(DATA_URI_PREFIX):
        head, sep, payload = ref.partition(",")
        if not sep or ";base64" not in head:
            raise ValueError(f"data URI {ref[:40]!r}... must be data:image/<type>;base64,<data>")
        if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise ValueError(f"data URI of {len(payload)} characters is too large (limit {MAX_IMAGE_BYTES} bytes)")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"data URI is not valid base64: {exc}") from None
        return _decode_bytes(raw, "data URI")
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise ValueError(f"image {str(path)!r} is larger than {MAX_IMAGE_BYTES} bytes")
    return _decode_bytes(path.read_bytes(), str(path))


def _decode_bytes(raw: bytes, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > 4096 * 4096:
                raise ValueError(f"{what}: {img.width}x{img.height} pixels is too large for a tile")
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{what} is not a readable image: {exc}") from None


def encode_png_data_uri(image: np.ndarray) -> str:
    """A small ``data:image/png;base64,...`` URI of ``image`` (for producers of records).

    A grey image (2-D, or three equal channels) is stored as a one-channel PNG: a third
    of the bytes, the same pixels once decoded (:func:`decode_image_ref` returns RGB).
    """
    from PIL import Image

    rgb = as_rgb(image)
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb[..., 0]) if grey else rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class ImageCache:
    """Decoded thumbnails and record images, most recently used kept (GUI thread only).

    Parameters
    ----------
    gallery : ThumbnailGallery, optional
        Source of thumbnails by image id.
    base_dir : path, optional
        Relative image paths in records are resolved against it.
    capacity : int
        Images kept.
    """

    def __init__(self, gallery: ThumbnailGallery | None = None, base_dir: str | os.PathLike | None = None,
                 capacity: int = 256) -> None:
        self.gallery = gallery
        self.base_dir = base_dir
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, str], np.ndarray | None] = OrderedDict()
        self._label_index: dict[str, str] | None = None
        self.n_failed = 0

    def thumbnail(self, image_id: str) -> np.ndarray | None:
        """The gallery thumbnail of ``image_id``; None without a gallery or for an unknown id."""
        if self.gallery is None:
            return None
        return self._get(("id", image_id), lambda: self.gallery.thumbnail(image_id))

    def thumbnail_for_label(self, label: str) -> np.ndarray | None:
        """A thumbnail of the first gallery image with class ``label`` (for class-score results)."""
        labels = getattr(self.gallery, "labels", None)
        ids = getattr(self.gallery, "ids", None)
        if not label or labels is None or ids is None:
            return None
        if self._label_index is None:
            self._label_index = {}
            for image_id, lab in zip(ids, labels, strict=False):
                self._label_index.setdefault(lab, image_id)
        image_id = self._label_index.get(label)
        return self.thumbnail(image_id) if image_id is not None else None

    def image(self, ref: str) -> np.ndarray | None:
        """The image a record refers to; None (logged once) when it cannot be read."""
        return self._get(("ref", ref), lambda: decode_image_ref(ref, self.base_dir))

    def _get(self, key: tuple[str, str], load: Any) -> np.ndarray | None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            value = load()
            value = as_rgb(value) if value is not None else None
        except (ValueError, OSError, KeyError) as exc:
            self.n_failed += 1
            logger.warning("viewer: cannot show %s %r: %s", key[0], key[1][:80], exc)
            value = None
        self._cache[key] = value
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return value
