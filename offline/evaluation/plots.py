"""PNG plots of :func:`offline.evaluation.evaluate.evaluate` (matplotlib, Agg canvas; no global backend change).

* ``similarity.png``: mean cosine similarity of the predictions of each true class
  (rows) to each class embedding (columns), over the classes of the evaluated part;
* ``embedding_pca.png`` / ``embedding_tsne.png``: 2-D maps of the embeddings coloured by class;
* ``retrieval_grid.png``: stimulus | retrieved (an image of the top-1 class) per window;
* ``generation_grid.png``: stimulus | generated | ridge reconstruction per window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["encoder_plots", "gan_plots", "pca_2d"]

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


def encoder_plots(out: Path, ds: Any, idx: np.ndarray, pred: np.ndarray, sims: np.ndarray, true: np.ndarray,
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
    from offline.evaluation.evaluate import tsne as run_tsne

    paths = [_similarity_plot(out / "similarity.png", sims, true, names)]
    paths.append(_scatter(out / "embedding_pca.png", pca_2d(pred), true, "embeddings, PCA"))
    if tsne and 4 <= len(pred) <= _MAX_TSNE:
        paths.append(_scatter(out / "embedding_tsne.png", run_tsne(pred), true, "embeddings, t-SNE"))
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
