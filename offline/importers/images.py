"""Images referenced by a dataset, read from a local folder into one ``(n, H, W, 3)`` uint8 array.

Names are matched to files in this order: the name as a relative path (with or
without an image extension), then the file stem anywhere below the folder
(``n02106662_13`` finds ``n02106662/n02106662_13.JPEG``), case-insensitively.
Every image is converted to RGB, centre-cropped to a square and resized
(Lanczos) to ``size x size``. Missing and undecodable files are not fatal: their
rows stay black (zeros) and :class:`ImageReport` lists them.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from offline.importers._checks import first_few, require_dir
from streams._checks import check_int

logger = logging.getLogger(__name__)

#: File extensions tried for a name without one (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass
class ImageReport:
    """What :func:`load_image_folder` found.

    Attributes
    ----------
    n_requested : int
        Names asked for.
    found : int
        Images decoded and stored.
    missing : list of str
        Names with no matching file.
    undecodable : list of str
        Names whose file exists but could not be decoded (``"name: reason"``).
    directory : str
        The folder searched.
    size : int
        Side of the stored square images.
    """

    n_requested: int
    found: int = 0
    missing: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    directory: str = ""
    size: int = 0

    @property
    def ok(self) -> bool:
        """True when every requested image was stored."""
        return self.found == self.n_requested

    def summary(self) -> str:
        """One paragraph for the command line."""
        text = f"images: {self.found}/{self.n_requested} read from {self.directory} ({self.size}x{self.size})"
        if self.missing:
            text += f"; {len(self.missing)} missing (black): {first_few(self.missing)}"
        if self.undecodable:
            text += f"; {len(self.undecodable)} undecodable (black): {first_few(self.undecodable, 3)}"
        return text

    def to_dict(self) -> dict[str, object]:
        """JSON-able record for the dataset's ``source``."""
        return {"directory": self.directory, "size": self.size, "requested": self.n_requested,
                "found": self.found, "n_missing": len(self.missing), "missing": self.missing[:100],
                "n_undecodable": len(self.undecodable), "undecodable": self.undecodable[:100]}


def _index(directory: Path) -> dict[str, Path]:
    """Lower-case stem and relative path (with and without extension) -> file, for image files."""
    index: dict[str, Path] = {}
    for p in sorted(directory.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        rel = p.relative_to(directory).as_posix().lower()
        for key in (rel, rel[: -len(p.suffix)], p.stem.lower(), p.name.lower()):
            index.setdefault(key, p)
    return index


def find_image(index: dict[str, Path], name: str) -> Path | None:
    """The file for ``name`` in an index from :func:`_index`, or None."""
    key = name.strip().replace("\\", "/").lower()
    base = key.rsplit("/", 1)[-1]
    candidates = [key, base]
    for k in (key, base):
        stem, dot, ext = k.rpartition(".")
        if dot and f".{ext}" in IMAGE_EXTENSIONS:
            candidates.append(stem)
    for k in candidates:
        if k in index:
            return index[k]
    return None


def read_image(path: Path, size: int) -> np.ndarray:
    """Decode ``path`` to RGB, centre-crop to a square, resize to ``(size, size, 3)`` uint8.

    Raises
    ------
    OSError, ValueError
        The file cannot be decoded (Pillow's errors, including decompression bombs).
    """
    from PIL import Image

    with warnings.catch_warnings():
        # a huge image is a decompression-bomb warning in Pillow; treat it as undecodable
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            if side != size:
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8).copy()


def load_image_folder(
    directory: str | os.PathLike,
    names: Sequence[str],
    size: int = 64,
    *,
    progress: bool = False,
) -> tuple[np.ndarray, ImageReport]:
    """Read the images named ``names`` from ``directory``.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder searched recursively.
    names : sequence of str
        Image names or relative paths, with or without extension (e.g.
        ``"n02106662_13"``, ``"train/aardvark_01b.jpg"``).
    size : int
        Side of the square output images (default 64).
    progress : bool
        Show a progress bar (tqdm).

    Returns
    -------
    images : ndarray, shape (len(names), size, size, 3), uint8
        Black rows for missing or undecodable images.
    report : ImageReport
        Counts and the names not found / not decodable.

    Raises
    ------
    FileNotFoundError
        ``directory`` does not exist.
    TypeError
        ``size`` is not an int.
    ValueError
        ``size`` is below 1.
    """
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    size = check_int("size", size, low=1)  # pixels
    root = require_dir(directory, "image folder")
    index = _index(root)
    images = np.zeros((len(names), int(size), int(size), 3), dtype=np.uint8)
    report = ImageReport(n_requested=len(names), directory=str(root), size=int(size))
    for i, name in enumerate(tqdm(names, desc="images", unit="img", disable=not progress, leave=False)):
        path = find_image(index, str(name))
        if path is None:
            report.missing.append(str(name))
            continue
        try:
            images[i] = read_image(path, int(size))
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as e:
            report.undecodable.append(f"{name}: {type(e).__name__}: {e}")
            continue
        report.found += 1
    if not report.ok:
        logger.warning(report.summary())
    return images, report
