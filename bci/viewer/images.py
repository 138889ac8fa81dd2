"""Images for the results panel: gallery thumbnails, image references in records, placeholder tiles.

A record refers to an image (``record["images"][kind]``) either by a **file path**
(absolute, or relative to ``base_dir``) or by a small **data URI**
(``data:image/png;base64,...``). Pixels never travel inside the viewer's model:
they are decoded on the GUI thread when a tile shows them, and cached.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# The Qt-free encoding lives below the runtime and the viewer (bci.images); re-exported for the viewer's users.
from bci.images import DATA_URI_PREFIX, MAX_IMAGE_BYTES, as_rgb, decode_image_ref, encode_png_data_uri  # noqa: F401
from streams._checks import check_int

logger = logging.getLogger(__name__)


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
    size = check_int("size", size, low=4)  # pixels
    yy, xx = np.mgrid[:size, :size]
    tile = np.full((size, size, 3), 70, np.uint8)
    tile[((xx + yy) // 4) % 2 == 0] = 95
    tile[[0, -1], :] = 150
    tile[:, [0, -1]] = 150
    return tile


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
