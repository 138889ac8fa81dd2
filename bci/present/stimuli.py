"""The images a presenter shows: a gallery folder, loaded with the one folder loader and checked for markers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bci.retrieval.gallery import LABELS_CSV, images_from_folder, read_annotations
from streams._checks import ensure_path
from streams.markers import check_marker_part, format_marker

#: Skipped files named in a refusal.
_SHOWN = 5


@dataclass(frozen=True)
class StimulusGallery:
    """Images, ids and labels of a gallery folder, ready to show and to name in markers.

    Attributes
    ----------
    folder : Path
        Where they came from.
    ids : tuple of str
        Image ids (file names without suffix), sorted.
    labels : tuple of (str or None)
        Labels from ``labels.csv``; None where it gives none.
    images : ndarray, shape (n, S, S, 3), uint8
        The images, centre-cropped to squares of side S.
    """

    folder: Path
    ids: tuple[str, ...]
    labels: tuple[str | None, ...]
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, image_id: str) -> int | None:
        """Index of ``image_id``, or None when the gallery does not have it."""
        try:
            return self.ids.index(image_id)
        except ValueError:
            return None

    def marker(self, index: int) -> str:
        """The onset marker of image ``index``: ``stim/<id>/<label>`` (``stim/<id>`` without a label)."""
        return format_marker(self.ids[index], self.labels[index])


def load_stimulus_gallery(folder: str | os.PathLike, *, size: int = 256) -> StimulusGallery:
    """Load a gallery folder for presenting (``bci simulate --stimuli DIR`` writes one).

    Parameters
    ----------
    folder : path
        Flat folder of images (``<id>.png``, any suffix Pillow reads) with an optional
        ``labels.csv`` (``id,label[,caption]``).
    size : int
        Side of the square images returned.

    Returns
    -------
    StimulusGallery

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist or is not a folder.
    ValueError
        No image; ``labels.csv`` names images that are not there (the first are listed);
        a file that cannot be decoded; an id or label that cannot be sent in a marker
        (empty, ``"/"`` — images in sub-folders have ``/`` in their ids —, control characters).
    """
    root = ensure_path("gallery", folder, must_exist=True, kind="dir")
    loaded = images_from_folder(root, size=size)
    if loaded.skipped:
        listed = "; ".join(f"{path}: {why}" for path, why in loaded.skipped[:_SHOWN])
        raise ValueError(f"gallery {root}: {len(loaded.skipped)} image file(s) cannot be shown ({listed}); "
                         "fix or remove them")
    known = read_annotations(root).labels
    labels = tuple(known.get(i) for i in loaded.ids)
    for image_id, label in zip(loaded.ids, labels, strict=True):
        try:
            check_marker_part("image id", image_id)
            if label is not None:
                check_marker_part(f"label of {image_id!r}", label)
        except ValueError as exc:
            raise ValueError(f"gallery {root}: {exc}. The presenter needs a flat folder (DIR/<id>.png + "
                             f"{LABELS_CSV}) whose ids and labels can be sent as stim/<id>/<label>") from None
    return StimulusGallery(root, tuple(loaded.ids), labels, loaded.images)
