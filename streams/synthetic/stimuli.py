"""Procedurally drawn stimuli: coloured shapes with captions, and Miyawaki-style binary patterns.

Every image shows one shape of one colour at some position and size on a dark
grey background. The class is the (shape, colour) pair: 8 shapes x 5 colours =
40 classes, like EEG-ImageNet. Position and size vary within a class and are
named in the detailed caption ("a large red triangle in the upper left").

Drawing uses signed distance functions (numpy only), which gives exact
anti-aliased edges. Everything is deterministic from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from streams._checks import check_int, ensure_int

#: Shape names, in class order.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "bar")

#: Colour names and their RGB values, in class order.
COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)),
    ("green", (40, 180, 70)),
    ("blue", (50, 100, 230)),
    ("yellow", (240, 210, 40)),
    ("purple", (160, 70, 220)),
)
COLOUR_NAMES: tuple[str, ...] = tuple(name for name, _ in COLOURS)

#: Background RGB of every image.
BACKGROUND: tuple[int, int, int] = (48, 48, 48)

#: Names of the columns of :attr:`StimulusSet.features`.
FEATURE_NAMES: tuple[str, ...] = (
    *(f"shape={s}" for s in SHAPES),
    *(f"colour={c}" for c in COLOUR_NAMES),
    "x",
    "y",
    "size",
)

SIZE_WORDS: tuple[str, ...] = ("small", "medium", "large")
# (vertical cell, horizontal cell) -> phrase; cells are -1, 0, +1 (down/left, centre, up/right)
_POSITION_PHRASES: dict[tuple[int, int], str] = {
    (1, -1): "in the upper left",
    (1, 0): "at the top",
    (1, 1): "in the upper right",
    (0, -1): "on the left",
    (0, 0): "in the centre",
    (0, 1): "on the right",
    (-1, -1): "in the lower left",
    (-1, 0): "at the bottom",
    (-1, 1): "in the lower right",
}
#: Distinct (size, position) combinations, so captions are unique for up to this many images per class.
N_LAYOUTS = len(SIZE_WORDS) * len(_POSITION_PHRASES)


@dataclass(eq=False)
class StimulusSet:
    """Images with their classes, captions and generative factors.

    Attributes
    ----------
    images : ndarray, shape (n_images, H, W, 3), uint8
    image_ids : list of str
        ``"img0000"``, ``"img0001"``, ...
    class_ids : ndarray, shape (n_images,), int64
        ``shape_index * len(COLOURS) + colour_index``.
    class_names : list of str
        Per class, ``"<colour> <shape>"`` (e.g. ``"red triangle"``).
    captions : list of str
        Per image, detailed (``"a large red triangle in the upper left"``); unique
        while ``n_per_class <= N_LAYOUTS`` (27).
    template_captions : list of str
        Per image, the class template (``"an image of a red triangle"``).
    features : ndarray, shape (n_images, 16), float32
        Generative factors (:data:`FEATURE_NAMES`): one-hot shape (8), one-hot
        colour (5), ``x`` in [-1, 1] (left to right), ``y`` in [-1, 1] (bottom to
        top), ``size`` in [0, 1] (smallest to largest).
    """

    images: np.ndarray
    image_ids: list[str]
    class_ids: np.ndarray
    class_names: list[str]
    captions: list[str]
    template_captions: list[str]
    features: np.ndarray

    @property
    def n_images(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes (shape x colour)."""
        return len(self.class_names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the feature columns."""
        return FEATURE_NAMES

    def label(self, i: int) -> str:
        """Class name of image ``i`` (e.g. ``"red triangle"``)."""
        return self.class_names[int(self.class_ids[self._check_index(i)])]

    def class_images(self, class_id: int) -> np.ndarray:
        """Indices of the images of one class."""
        if not 0 <= int(class_id) < self.n_classes:
            raise IndexError(f"class_id={class_id!r} out of range [0, {self.n_classes})")
        return np.flatnonzero(self.class_ids == int(class_id))

    def index_of(self, image_id: str) -> int:
        """Image index of ``image_id`` (KeyError with a hint if unknown)."""
        try:
            return self.image_ids.index(image_id)
        except ValueError:
            raise KeyError(
                f"image_id={image_id!r} is not in this stimulus set "
                f"({self.image_ids[0]}..{self.image_ids[-1]})"
            ) from None

    def _check_index(self, i: int) -> int:
        ensure_int(i, "image index")
        if not -self.n_images <= i < self.n_images:
            raise IndexError(f"image index {i} out of range for {self.n_images} images")
        return int(i)


def make_stimuli(n_per_class: int = 5, size: int = 64, seed: int = 0) -> StimulusSet:
    """Draw the stimulus set: 40 classes (8 shapes x 5 colours), ``n_per_class`` images each.

    Parameters
    ----------
    n_per_class : int
        Images per class (>= 1). Each gets a different (size, position) layout
        while ``n_per_class <= 27``; beyond that layouts repeat (with different
        jitter) and captions may repeat.
    size : int
        Image height and width in pixels (>= 16).
    seed : int
        Seed of the positions and sizes; the same seed gives the same images.

    Returns
    -------
    StimulusSet
        Images ordered by class, then instance: image ``i`` has class
        ``i // n_per_class``.
    """
    check_int("n_per_class", n_per_class, low=1)
    check_int("size", size, low=16)
    check_int("seed", seed, low=0)
    rng = np.random.default_rng([seed, 0x5717])
    n_colours = len(COLOURS)
    classes = list(product(range(len(SHAPES)), range(n_colours)))
    n = len(classes) * n_per_class
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    features = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
    class_ids = np.empty(n, dtype=np.int64)
    captions: list[str] = []
    templates: list[str] = []
    class_names = [f"{COLOURS[c][0]} {SHAPES[s]}" for s, c in classes]
    layouts = list(product(range(len(SIZE_WORDS)), _POSITION_PHRASES))
    i = 0
    for class_id, (shape, colour) in enumerate(classes):
        order = rng.permutation(len(layouts))
        for m in range(n_per_class):
            size_cell, (vcell, hcell) = layouts[order[m % len(layouts)]]
            x = hcell * 2.0 / 3.0 + rng.uniform(-0.2, 0.2)
            y = vcell * 2.0 / 3.0 + rng.uniform(-0.2, 0.2)
            s = (size_cell + 0.5) / 3.0 + rng.uniform(-0.1, 0.1)
            images[i] = draw_shape(SHAPES[shape], COLOURS[colour][1], x, y, s, size)
            features[i, shape] = 1.0
            features[i, len(SHAPES) + colour] = 1.0
            features[i, -3:] = (x, y, s)
            class_ids[i] = class_id
            name = class_names[class_id]
            captions.append(f"a {SIZE_WORDS[size_cell]} {name} {_POSITION_PHRASES[(vcell, hcell)]}")
            templates.append(template_caption(name))
            i += 1
    return StimulusSet(
        images=images,
        image_ids=[f"img{k:04d}" for k in range(n)],
        class_ids=class_ids,
        class_names=class_names,
        captions=captions,
        template_captions=templates,
        features=features,
    )


def draw_shape(
    shape: str,
    rgb: tuple[int, int, int],
    x: float,
    y: float,
    size_factor: float,
    size: int = 64,
    background: tuple[int, int, int] = BACKGROUND,
) -> np.ndarray:
    """Draw one anti-aliased shape.

    Parameters
    ----------
    shape : str
        One of :data:`SHAPES`.
    rgb : tuple of int
        Fill colour.
    x, y : float
        Centre in [-1, 1] (x left to right, y bottom to top); the centre lies
        within the middle half of the image.
    size_factor : float
        In [0, 1]; the shape's radius goes from 10% to 22% of the image width.
    size : int
        Image height and width.
    background : tuple of int
        Background colour.

    Returns
    -------
    ndarray, shape (size, size, 3), uint8
    """
    if shape not in _SDFS:
        raise ValueError(f"shape={shape!r} is not one of {SHAPES}")
    cx = (0.5 + 0.25 * x) * size
    cy = (0.5 - 0.25 * y) * size
    radius = (0.10 + 0.12 * size_factor) * size
    grid = np.arange(size) + 0.5
    px = grid[None, :] - cx
    py = cy - grid[:, None]  # y up
    coverage = np.clip(0.5 - _SDFS[shape](px, py, radius), 0.0, 1.0)[..., None]
    img = np.asarray(background, float) * (1.0 - coverage) + np.asarray(rgb, float) * coverage
    return np.round(img).astype(np.uint8)


# ---------------------------------------------------------------- signed distances (pixels)
def _sd_polygon(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance to a closed polygon (negative inside), vectorised over pixels."""
    d = np.full(np.broadcast(px, py).shape, np.inf)
    sign = np.ones_like(d)
    n = len(verts)
    for i in range(n):
        vix, viy = verts[i]
        vjx, vjy = verts[i - 1]
        ex, ey = vjx - vix, vjy - viy
        wx, wy = px - vix, py - viy
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        bx, by = wx - ex * t, wy - ey * t
        d = np.minimum(d, bx * bx + by * by)
        c1 = py >= viy
        c2 = py < vjy
        c3 = ex * wy > ey * wx
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        sign = np.where(flip, -sign, sign)
    return sign * np.sqrt(d)


def _regular(n: int, r_outer: float, r_inner: float | None = None, rot: float = 90.0) -> np.ndarray:
    """Vertices of a regular polygon (or a star when ``r_inner`` is given), counter-clockwise."""
    if r_inner is None:
        ang = np.deg2rad(rot + 360.0 * np.arange(n) / n)
        return np.stack([r_outer * np.cos(ang), r_outer * np.sin(ang)], axis=1)
    ang = np.deg2rad(rot + 180.0 * np.arange(2 * n) / n)
    rad = np.where(np.arange(2 * n) % 2 == 0, r_outer, r_inner)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


def _rect(hx: float, hy: float) -> np.ndarray:
    return np.array([[hx, hy], [-hx, hy], [-hx, -hy], [hx, -hy]])


def _cross(arm: float, half: float) -> np.ndarray:
    a, h = arm, half
    return np.array(
        [[h, a], [a, a], [a, h], [-a, h], [-a, a], [-h, a], [-h, -a], [-a, -a], [-a, -h], [a, -h], [a, -a], [h, -a]]
    )


def _sd_circle(px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    return np.hypot(px, py) - 0.9 * r


def _sd_ring(px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    return np.abs(np.hypot(px, py) - 0.72 * r) - 0.2 * r


_SDFS = {
    "circle": _sd_circle,
    "square": lambda px, py, r: _sd_polygon(px, py, _rect(0.8 * r, 0.8 * r)),
    "triangle": lambda px, py, r: _sd_polygon(px, py + 0.2 * r, _regular(3, 1.15 * r)),
    "star": lambda px, py, r: _sd_polygon(px, py + 0.08 * r, _regular(5, 1.1 * r, 0.45 * r)),
    "cross": lambda px, py, r: _sd_polygon(px, py, _cross(0.3 * r, r)),
    "diamond": lambda px, py, r: _sd_polygon(px, py, np.array([[0, r], [-0.65 * r, 0], [0, -r], [0.65 * r, 0]])),
    "ring": _sd_ring,
    "bar": lambda px, py, r: _sd_polygon(px, py, _rect(r, 0.3 * r)),
}


#: The class-template caption: one image's text in CLIP-style zero-shot prompts.
TEMPLATE = "an image of {article} {name}"


def template_caption(name: str, article: str | None = None) -> str:
    """The class-template caption of class ``name``: ``"an image of a red triangle"``.

    Parameters
    ----------
    name : str
        Class name (e.g. ``"red triangle"``).
    article : str or None
        The article before the name. ``None`` (the synthetic world) picks ``"an"`` before
        a vowel and ``"a"`` otherwise; the importers, the fMRI builder and the CLIP-sample
        trainer pass ``"a"`` (they always have), so their texts, and the CLIP targets made
        from them, stay as they were (``"an image of a apple"``).

    Returns
    -------
    str
    """
    return TEMPLATE.format(article=_article(name) if article is None else article, name=name)


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


# ---------------------------------------------------------------- Miyawaki-style patterns
# 5x5 letters (scaled up to the grid): the letters of "neuron", as in Miyawaki et al. (2008).
_LETTERS: dict[str, tuple[str, ...]] = {
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#"),
    "E": ("#####", "#....", "####.", "#....", "#####"),
    "U": ("#...#", "#...#", "#...#", "#...#", ".###."),
    "R": ("####.", "#...#", "####.", "#..#.", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", ".###."),
}


def pattern_images(patterns: np.ndarray, scale: int = 6) -> np.ndarray:
    """Binary patterns ``(n, g, g)`` → uint8 RGB images ``(n, g·scale, g·scale, 3)``, white on black."""
    p = np.asarray(patterns, dtype=np.uint8)
    big = np.kron(p, np.ones((1, scale, scale), np.uint8)) * 255
    return np.repeat(big[..., None], 3, axis=3)


def geometric_patterns(grid: int = 10) -> list[np.ndarray]:
    """The fixed geometric patterns: square frames, a plus, an X and letters (N, E, U, R, O).

    Parameters
    ----------
    grid : int
        Pattern side (>= 5).

    Returns
    -------
    list of ndarray, each (grid, grid) uint8 0/1
    """
    check_int("grid", grid, low=5)
    g = grid
    out = []
    frame = np.zeros((g, g), np.uint8)
    frame[[0, -1], :] = frame[:, [0, -1]] = 1
    out.append(frame)
    small = np.zeros((g, g), np.uint8)
    lo, hi = g // 4, g - 1 - g // 4
    small[[lo, hi], lo : hi + 1] = small[lo : hi + 1, [lo, hi]] = 1
    out.append(small)
    plus = np.zeros((g, g), np.uint8)
    mid = slice((g - 1) // 2, g // 2 + 1)
    plus[mid, :] = plus[:, mid] = 1
    out.append(plus)
    idx = np.arange(g)
    xcross = np.zeros((g, g), np.uint8)
    xcross[idx, idx] = xcross[idx, g - 1 - idx] = 1
    out.append(xcross)
    scale = g // 5
    pad = (g - 5 * scale) // 2
    for rows in _LETTERS.values():
        small_letter = np.array([[ch == "#" for ch in row] for row in rows], np.uint8)
        letter = np.zeros((g, g), np.uint8)
        big = np.kron(small_letter, np.ones((scale, scale), np.uint8))
        letter[pad : pad + big.shape[0], pad : pad + big.shape[1]] = big
        out.append(letter)
    return out


def make_binary_patterns(n: int, seed: int = 0, grid: int = 10, random_fraction: float = 0.5) -> np.ndarray:
    """Miyawaki-style binary patterns: random ones mixed with geometric ones.

    Random patterns have each cell on with probability 0.5. Geometric ones cycle
    through :func:`geometric_patterns` (frames, plus, X, letters). Which
    positions hold geometric patterns is spread evenly over the sequence.

    Parameters
    ----------
    n : int
        Number of patterns (>= 1).
    seed : int
        Seed of the random patterns.
    grid : int
        Pattern side (>= 5); Miyawaki et al. used 10.
    random_fraction : float
        Fraction of random patterns, in [0, 1].

    Returns
    -------
    ndarray, shape (n, grid, grid), uint8 with values 0 and 1
    """
    check_int("n", n, low=1)
    check_int("seed", seed, low=0)
    check_int("grid", grid, low=5)
    if not 0.0 <= float(random_fraction) <= 1.0:
        raise ValueError(f"random_fraction={random_fraction!r} must be in [0, 1]")
    rng = np.random.default_rng([seed, 0xB1A7])
    geo = geometric_patterns(grid)
    n_geo = n - int(round(n * float(random_fraction)))
    geo_slots = set(np.round(np.linspace(0, n - 1, n_geo)).astype(int).tolist()) if n_geo else set()
    out = np.empty((n, grid, grid), np.uint8)
    k = 0
    for i in range(n):
        if i in geo_slots:
            out[i] = geo[k % len(geo)]
            k += 1
        else:
            out[i] = rng.random((grid, grid)) < 0.5
    return out
