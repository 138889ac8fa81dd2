"""Qt-free image encoding for result records: PNG data URIs, image references, RGB conversion.

A record refers to an image (``record["images"][kind]``) either by a **file path**
(absolute, or relative to ``base_dir``) or by a small **data URI**
(``data:image/png;base64,...``). Producers (the runtime's result steps) encode with
:func:`encode_png_data_uri`; consumers (the viewer, tests) decode with
:func:`decode_image_ref`. Below both the runtime and the viewer, so neither imports the other.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DATA_URI_PREFIX", "MAX_IMAGE_BYTES", "as_rgb", "decode_image_ref", "encode_png_data_uri"]

#: Largest image reference decoded (a data URI or a file), in bytes.
MAX_IMAGE_BYTES = 4 * 1024 * 1024
DATA_URI_PREFIX = "data:image/"


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
