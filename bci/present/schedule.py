"""The presenter's trial list: which image each trial shows and the blank interval after it (pure, seeded).

Timing of one trial (``bci present``)::

    stimulus (duration)  blank while waiting for the result  feedback  blank ISI  | next stimulus
    |==================|---------------------------------|=========|----------|

Without a results stream the wait and the feedback are left out. Each trial's ISI is
``isi + U(0, jitter)`` (uniform), as in :mod:`streams.synthetic.schedule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bci.present.choices import ORDERS
from streams._checks import check_float, check_int, check_value


@dataclass(frozen=True)
class Trial:
    """One trial of the presenter.

    Attributes
    ----------
    index : int
        Trial number, from 0.
    image_index : int
        Index of the image in the gallery.
    isi_s : float
        Blank seconds after this trial, before the next stimulus.
    """

    index: int
    image_index: int
    isi_s: float


def make_trials(n_images: int, n_trials: int | None = None, *, isi_ms: float = 1000.0, jitter_ms: float = 200.0,
                order: str = "random", seed: int = 0) -> list[Trial]:
    """The trial list for a gallery of ``n_images`` images.

    Parameters
    ----------
    n_images : int
        Images in the gallery (>= 1).
    n_trials : int or None
        Trials (>= 1); None: ``n_images`` (each image once).
    isi_ms, jitter_ms : float
        ISI after each trial: ``isi_ms + U(0, jitter_ms)`` milliseconds (both >= 0).
    order : {"random", "sequential"}
        ``random``: consecutive shuffled passes through the gallery, so every image is shown
        ``n_trials // n_images`` or one more times; ``sequential``: 0, 1, 2, ... repeated.
    seed : int
        Seed of the shuffles and the jitter: same seed, same trials.

    Returns
    -------
    list of Trial
    """
    n_images = check_int("n_images", n_images, low=1)
    n_trials = n_images if n_trials is None else check_int("n_trials", n_trials, low=1)
    isi_ms = check_float("isi_ms", isi_ms, low=0.0)
    jitter_ms = check_float("jitter_ms", jitter_ms, low=0.0)
    check_value("order", order, ORDERS)
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    images = _image_order(n_images, n_trials, order, rng)
    isis = (isi_ms + rng.uniform(0.0, jitter_ms, n_trials)) / 1000.0
    return [Trial(i, int(k), float(s)) for i, (k, s) in enumerate(zip(images, isis, strict=True))]


def _image_order(n_images: int, n_trials: int, order: str, rng: np.random.Generator) -> Sequence[int]:
    if order == "sequential":
        return [i % n_images for i in range(n_trials)]
    passes = -(-n_trials // n_images)
    return np.concatenate([rng.permutation(n_images) for _ in range(passes)])[:n_trials].tolist()
