"""PNG plots of :func:`offline.evaluation.evaluate.evaluate` (matplotlib, Agg canvas; no global backend change).

* ``similarity.png``: mean cosine similarity of the predictions of each true class
  (rows) to each class embedding (columns), over the classes of the evaluated part;
* ``embedding_pca.png`` / ``embedding_tsne.png``: 2-D maps of the embeddings coloured by class;
* ``retrieval_grid.png``: stimulus | retrieved (an image of the top-1 class) per window;
* ``generation_grid.png``: stimulus | generated | ridge reconstruction per window.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from offline.data.epochs import EpochDataset

__all__ = ["encoder_plots", "gan_plots", "pca_2d", "tsne"]

_MAX_GRID = 8
_MAX_TSNE = 1500


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, format="png", bbox_inches="tight")
    return str(path)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components of ``x`` (n, d) (SVD of the centred data)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = u[:, :2] * s[:2]
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def _similarity_plot(path: Path, sims: np.ndarray, true: np.ndarray, names: list[str]) -> str:
    m = sims.shape[1]
    mat = np.full((m, m), np.nan)
    for i in range(m):
        if (true == i).any():
            mat[i] = sims[true == i].mean(axis=0)
    fig = _figure(7, 6)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="mean cosine similarity")
    if m <= 40:
        ax.set_xticks(range(m), names, rotation=90, fontsize=6)
        ax.set_yticks(range(m), names, fontsize=6)
    ax.set_xlabel("candidate embedding")
    ax.set_ylabel("true candidate of the windows")
    ax.set_title(f"prediction vs candidate similarity ({m} candidates)")
    return _save(fig, path)


def _scatter(path: Path, xy: np.ndarray, labels: np.ndarray, title: str) -> str:
    fig = _figure(6, 5)
    ax = fig.add_subplot(1, 1, 1)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab20", s=10)
    fig.colorbar(sc, ax=ax, label="class index")
    ax.set_title(title)
    return _save(fig, path)


def _upscale(images: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of uint8 ``(n, h, w, 3)`` to ``(n, size, size, 3)``."""
    n, h, w = images.shape[:3]
    rows = (np.arange(size) * h // size)[:, None]
    cols = (np.arange(size) * w // size)[None, :]
    return images[:, rows, cols]


def _image_grid_plot(path: Path, columns: dict[str, np.ndarray], row_titles: list[str] | None = None) -> str:
    """One picture: a column per entry of ``columns`` (titled), a row per example (optionally labelled)."""
    names = list(columns)
    n = min(_MAX_GRID, min(len(v) for v in columns.values()))
    size, pad = 64, 4
    cells = {k: _upscale(np.asarray(v[:n], dtype=np.uint8), size) for k, v in columns.items()}
    grid = np.full((n * (size + pad) + pad, len(names) * (size + pad) + pad, 3), 255, np.uint8)
    for j, name in enumerate(names):
        for i in range(n):
            y, x = pad + i * (size + pad), pad + j * (size + pad)
            grid[y : y + size, x : x + size] = cells[name][i]
    fig = _figure(1.0 * len(names) + (2.2 if row_titles else 0.3), 1.0 * n + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([pad + j * (size + pad) + size / 2 for j in range(len(names))], names, fontsize=7)
    ax.xaxis.tick_top()
    if row_titles:
        ax.set_yticks([pad + i * (size + pad) + size / 2 for i in range(n)], row_titles[:n], fontsize=6)
    else:
        ax.set_yticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _save(fig, path)


def encoder_plots(out: Path, ds: EpochDataset, idx: np.ndarray, pred: np.ndarray, sims: np.ndarray, true: np.ndarray,
                  names: list[str], candidate_rows: np.ndarray | None, *, tsne: bool = True) -> list[str]:
    """Similarity matrix, PCA (and t-SNE) maps and the retrieval grid of an encoder evaluation.

    Parameters
    ----------
    out : Path
        Output directory.
    ds : EpochDataset
    idx : numpy.ndarray
        Evaluated epochs.
    pred : numpy.ndarray, (n, D)
        Their embeddings.
    sims : numpy.ndarray, (n, M)
        Similarity of each embedding to each candidate (class or image).
    true : numpy.ndarray, (n,)
        Column of each window's true candidate.
    names : list of str
        Candidate names.
    candidate_rows : numpy.ndarray or None
        Image-table row shown for each candidate in the grid.
    tsne : bool
        Also a t-SNE map (up to 1500 points).
    """
    paths = [_similarity_plot(out / "similarity.png", sims, true, names)]
    paths.append(_scatter(out / "embedding_pca.png", pca_2d(pred), true, "embeddings, PCA"))
    if tsne and 4 <= len(pred) <= _MAX_TSNE:
        paths.append(_scatter(out / "embedding_tsne.png", _tsne_2d(pred), true, "embeddings, t-SNE"))
    if candidate_rows is not None and ds.images is not None and ds.image_table_ids is not None:
        images = np.asarray(ds.images)
        rows = ds.image_rows(idx)
        top = np.argmax(sims, axis=1)
        pick = _spread(len(idx))
        stim = images[rows[pick]]
        blank = np.zeros_like(images[0])
        retrieved = np.stack([images[candidate_rows[t]] if candidate_rows[t] >= 0 else blank for t in top[pick]])
        titles = [f"{names[true[k]]} -> {names[top[k]]}" for k in pick]
        paths.append(_image_grid_plot(out / "retrieval_grid.png",
                                      {"stimulus": stim, "retrieved": retrieved}, titles))
    return paths


def gan_plots(out: Path, stim: np.ndarray, generated: np.ndarray, ridge: np.ndarray | None, *,
              label: str = "generated", file: str = "generation_grid.png") -> list[str]:
    """Grid stimulus | generated (or ``label``) | ridge reconstruction, written to ``out / file``."""
    pick = _spread(len(stim))
    cols = {"stimulus": stim[pick], label: generated[pick]}
    if ridge is not None:
        cols["ridge"] = ridge[pick]
    return [_image_grid_plot(out / file, cols)]


def _spread(n: int) -> np.ndarray:
    """Up to 8 indices spread evenly over ``n`` (different classes in class-ordered parts)."""
    return np.unique(np.linspace(0, n - 1, num=min(_MAX_GRID, n)).round().astype(np.int64))


# ============================================================================ t-SNE
def tsne(x: np.ndarray, *, perplexity: float = 30.0, n_iter: int = 400, seed: int = 0) -> np.ndarray:
    """Exact 2-D t-SNE (van der Maaten & Hinton 2008) in numpy, for a few thousand points at most.

    Parameters
    ----------
    x : numpy.ndarray, (n, d)
    perplexity : float
        Effective number of neighbours (capped at ``(n - 1) / 3``).
    n_iter : int
        Gradient steps (the first quarter with early exaggeration 12).
    seed : int

    Returns
    -------
    numpy.ndarray, (n, 2)
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    if n > 5000:
        raise ValueError(f"exact t-SNE of {n} points is too slow; use PCA or subsample to <= 5000")
    perplexity = float(min(perplexity, (n - 1) / 3))
    d2 = np.maximum((x * x).sum(1)[:, None] - 2 * x @ x.T + (x * x).sum(1)[None, :], 0.0)
    p = _joint_probabilities(d2, perplexity)
    rng = np.random.default_rng(seed)
    y = rng.normal(scale=1e-4, size=(n, 2))
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    for it in range(n_iter):
        exaggeration = 12.0 if it < n_iter // 4 else 1.0
        momentum = 0.5 if it < n_iter // 4 else 0.8
        sq = (y * y).sum(1)
        num = 1.0 / (1.0 + np.maximum(sq[:, None] - 2 * y @ y.T + sq[None, :], 0.0))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        w = (exaggeration * p - q) * num
        grad = 4.0 * ((np.diag(w.sum(1)) - w) @ y)
        same = np.sign(grad) == np.sign(velocity)
        gains = np.clip(np.where(same, gains * 0.8, gains + 0.2), 0.01, None)
        velocity = momentum * velocity - 200.0 * gains * grad
        y = y + velocity
        y -= y.mean(axis=0)
    return y


def _joint_probabilities(d2: np.ndarray, perplexity: float) -> np.ndarray:
    n = len(d2)
    target = math.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        lo, hi, beta = 0.0, np.inf, 1.0 / max(np.median(d2[i][d2[i] > 0]) if (d2[i] > 0).any() else 1.0, 1e-12)
        row = np.delete(d2[i], i)
        for _ in range(64):
            e = np.exp(-(row - row.min()) * beta)
            s = e.sum()
            h = math.log(s) + beta * float((row - row.min()) @ e) / s
            if abs(h - target) < 1e-5:
                break
            if h > target:
                lo, beta = beta, beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi, beta = beta, (beta + lo) / 2
        p[i, np.arange(n) != i] = e / s
    p = (p + p.T) / (2 * n)
    return np.maximum(p, 1e-12)


_tsne_2d = tsne  # encoder_plots' ``tsne`` argument hides the function's name
