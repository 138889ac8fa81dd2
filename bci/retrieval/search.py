"""Cosine top-k retrieval of decoded embeddings against a :class:`~bci.retrieval.gallery.Gallery`.

Backends:

``"torch"`` (default)
    Exact search: the gallery matrix stays on the runtime's device (float32) and a
    query batch costs one matrix product and a ``torch.topk``.
``"faiss-flat"``
    Exact search with FAISS ``IndexFlatIP`` (CPU); same ids, scores within 1e-5.
``"faiss-hnsw"``
    Approximate: ``IndexHNSWFlat`` (inner product); parameters ``hnsw_m``,
    ``ef_construction``, ``ef_search``. Check it with :meth:`Retriever.recall_at_k`.
``"faiss-ivf"``
    Approximate: ``IndexIVFFlat`` (inner product, k-means coarse quantiser);
    parameters ``nlist``, ``nprobe``.

FAISS is an optional dependency (``pip install 'bci-runtime[faiss]'``), imported only
when a FAISS backend is asked for. See ``docs/retrieval.md``.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from bci.retrieval.gallery import Gallery
from streams._checks import check_int

BACKENDS: tuple[str, ...] = ("torch", "faiss-flat", "faiss-hnsw", "faiss-ivf")


class FaissNotInstalledError(ImportError):
    """A FAISS backend was asked for but ``faiss`` is not importable."""

    def __init__(self, backend: str) -> None:
        super().__init__(
            f"backend={backend!r} needs FAISS, which is not installed; install it with "
            "pip install 'bci-runtime[faiss]' (faiss-cpu), or use backend='torch' (exact search, no extra)"
        )


class DimensionMismatchError(ValueError):
    """Query (or model) embeddings and the gallery have different dimensions."""


# --------------------------------------------------------------------------- checks
def check_compatible(gallery: Gallery, embed_dim: int, *, where: str = "the model",
                     clip_fingerprint: str | None = None) -> None:
    """Check at start-up that ``gallery`` can be searched with ``embed_dim``-d embeddings.

    Parameters
    ----------
    gallery : Gallery
    embed_dim : int
        Dimension of what will be searched (a model's output, a CLIP's ``embed_dim``).
    where : str
        What produces those embeddings, for the message (``"model 'eeg_convnet'"``).
    clip_fingerprint : str, optional
        When given and the gallery records a CLIP fingerprint, they must match
        (text or image queries embedded by another CLIP are meaningless).

    Raises
    ------
    DimensionMismatchError
        The dimensions differ; the message names both and what to do.
    ValueError
        The CLIP fingerprints differ.
    """
    embed_dim = check_int("embed_dim", embed_dim, low=1)
    if int(embed_dim) != gallery.embed_dim:
        raise DimensionMismatchError(
            f"gallery {gallery.name!r} has {gallery.embed_dim}-d embeddings but {where} outputs "
            f"{int(embed_dim)}-d; rebuild the gallery with the model's CLIP or pick another model")
    stored = gallery.meta.get("clip_fingerprint")
    if clip_fingerprint is not None and stored and stored != clip_fingerprint:
        raise ValueError(
            f"gallery {gallery.name!r} was built with CLIP {gallery.meta.get('clip')!r} (fingerprint {stored}) "
            f"but {where} has fingerprint {clip_fingerprint}; use the same CLIP weights (--clip/--clip-weights) "
            "or rebuild the gallery with this one")


def _as_queries(queries: Any, dim: int, gallery_name: str) -> np.ndarray:
    """Queries as a C-contiguous, L2-normalised float32 (B, D) array."""
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().cpu().numpy()
    q = np.asarray(queries)
    if q.dtype.kind not in "fiu" or q.dtype == bool:
        raise TypeError(f"queries must be a float array (B, D), got dtype {q.dtype}")
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise ValueError(f"queries must have shape (B, D) or (D,), got {q.shape}")
    if q.shape[1] != dim:
        raise DimensionMismatchError(f"queries are {q.shape[1]}-d but gallery {gallery_name!r} has {dim}-d "
                                     "embeddings; use the model/CLIP the gallery was built for")
    with np.errstate(over="ignore", invalid="ignore"):  # a value beyond float32 becomes inf, refused below
        q = np.asarray(q, dtype=np.float32)
    sq = np.einsum("ij,ij->i", q, q, dtype=np.float64)  # float64: no overflow; NaN/inf propagate
    if not np.isfinite(sq).all():
        raise ValueError(f"queries contain NaN or inf (row {int(np.flatnonzero(~np.isfinite(sq))[0])})")
    if (sq == 0).any():
        raise ValueError(f"query row {int(np.flatnonzero(sq == 0)[0])} is all zeros; it has no direction")
    return np.ascontiguousarray(q / np.sqrt(sq)[:, None], dtype=np.float32)


def _check_k(k: Any) -> int:
    return check_int("k", k, low=1)
    return int(k)


# --------------------------------------------------------------------------- retriever
class Retriever:
    """Top-k cosine search of query embeddings in a gallery.

    Parameters
    ----------
    gallery : Gallery
    device : str
        Device of the torch backend (``"cpu"``, ``"cuda"``, ``"auto"``); FAISS
        backends run on the CPU.
    backend : {"torch", "faiss-flat", "faiss-hnsw", "faiss-ivf"}
    k : int
        Default number of results (clamped to the gallery size).
    hnsw_m : int
        HNSW graph degree (``faiss-hnsw``); 16 by default.
    ef_construction, ef_search : int
        HNSW build and search beam widths (64 and 128 by default; ``ef_search`` is
        raised to ``k`` if lower). The defaults reach recall@5 >= 0.99 on the
        benchmark's clustered 100,000 x 512 gallery (``benchmarks/retrieval.py``);
        check your own with :meth:`recall_at_k`.
    nlist : int, optional
        IVF lists (``faiss-ivf``); default ``4 * sqrt(N)``, at most ``N // 39``.
    nprobe : int
        IVF lists visited per query.
    threads : int, optional
        FAISS OpenMP threads (``faiss.omp_set_num_threads``, process-wide); None
        leaves FAISS's default. Torch threads are the process's own setting.

    Attributes
    ----------
    build_seconds : float
        Time to put the matrix on the device or build the FAISS index.
    """

    def __init__(self, gallery: Gallery, *, device: str = "cpu", backend: str = "torch", k: int = 5,
                 hnsw_m: int = 16, ef_construction: int = 64, ef_search: int = 128, nlist: int | None = None,
                 nprobe: int = 16, threads: int | None = None) -> None:
        if not isinstance(gallery, Gallery):
            raise TypeError(f"gallery must be a bci.retrieval.gallery.Gallery, got {type(gallery).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} must be one of {BACKENDS}")
        from bci.runtime.inference import select_device

        self.gallery = gallery
        self.backend = backend
        self.k = _check_k(k)
        self.device = select_device(device)
        if backend != "torch" and self.device.type != "cpu":
            raise ValueError(f"backend={backend!r} runs on the CPU (faiss-cpu); use backend='torch' for "
                             f"device={device!r}")
        self.params: dict[str, Any] = {}
        t = time.perf_counter()
        if backend == "torch":
            self._matrix = torch.tensor(gallery.embeddings, dtype=torch.float32, device=self.device)
            self._index = None
        else:
            self._matrix = None
            self._index = self._build_faiss(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
                                            nlist=nlist, nprobe=nprobe, threads=threads)
        self.build_seconds = time.perf_counter() - t

    def __repr__(self) -> str:
        return f"Retriever(backend={self.backend!r}, device={str(self.device)!r}, k={self.k}, gallery={self.gallery!r})"

    # ------------------------------------------------------------------ FAISS
    def _build_faiss(self, *, hnsw_m: int, ef_construction: int, ef_search: int, nlist: int | None,
                     nprobe: int, threads: int | None) -> Any:
        faiss = _import_faiss(self.backend)
        if threads is not None:
            faiss.omp_set_num_threads(check_int("threads", threads, low=1))
        emb = np.ascontiguousarray(self.gallery.embeddings, dtype=np.float32)
        n, d = emb.shape
        if self.backend == "faiss-flat":
            index = faiss.IndexFlatIP(d)
        elif self.backend == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(d, check_int("hnsw_m", hnsw_m, low=1), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = check_int("ef_construction", ef_construction, low=1)
            index.hnsw.efSearch = check_int("ef_search", ef_search, low=1)
            self.params = {"M": hnsw_m, "efConstruction": ef_construction, "efSearch": ef_search}
        else:
            nlist = (max(1, min(int(4 * np.sqrt(n)), n // 39)) if nlist is None
                     else check_int("nlist", nlist, low=1))
            if nlist > n:
                raise ValueError(f"nlist={nlist} must be <= the gallery size {n}")
            quantizer = faiss.IndexFlatIP(d)  # faiss's Python wrapper keeps it alive with the index
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(emb)
            index.nprobe = min(check_int("nprobe", nprobe, low=1), nlist)
            self.params = {"nlist": nlist, "nprobe": index.nprobe}
        index.add(emb)
        return index

    def set_ef_search(self, ef_search: int) -> None:
        """Change HNSW's search beam width (``faiss-hnsw`` only) without rebuilding."""
        if self.backend != "faiss-hnsw":
            raise ValueError(f"ef_search applies to backend 'faiss-hnsw', not {self.backend!r}")
        self._index.hnsw.efSearch = check_int("ef_search", ef_search, low=1)
        self.params["efSearch"] = int(ef_search)

    def set_nprobe(self, nprobe: int) -> None:
        """Change how many IVF lists a query visits (``faiss-ivf`` only; capped at ``nlist``)."""
        if self.backend != "faiss-ivf":
            raise ValueError(f"nprobe applies to backend 'faiss-ivf', not {self.backend!r}")
        self._index.nprobe = min(check_int("nprobe", nprobe, low=1), self.params["nlist"])
        self.params["nprobe"] = int(self._index.nprobe)

    @property
    def index_bytes(self) -> int:
        """Memory of the searchable structure: the device matrix, or the serialised FAISS index."""
        if self._matrix is not None:
            return int(self._matrix.element_size() * self._matrix.nelement())
        faiss = _import_faiss(self.backend)
        return int(faiss.serialize_index(self._index).nbytes)

    # ------------------------------------------------------------------ search
    def search(self, queries: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k gallery rows by cosine similarity.

        Parameters
        ----------
        queries : array-like, shape (B, D) or (D,)
            Float embeddings (numpy or torch); normalised here.
        k : int, optional
            Results per query (default ``self.k``), clamped to the gallery size.

        Returns
        -------
        scores : ndarray, shape (B, k), float32
            Cosine similarities, best first.
        indices : ndarray, shape (B, k), int64
            Gallery rows; -1 (score -inf) where an approximate index found fewer than k.

        Raises
        ------
        DimensionMismatchError
            The queries' dimension differs from the gallery's.
        """
        k = min(_check_k(self.k if k is None else k), len(self.gallery))
        q = _as_queries(queries, self.gallery.embed_dim, self.gallery.name)
        if self._matrix is not None:
            return self._search_torch(q, k)
        if self.backend == "faiss-hnsw" and self._index.hnsw.efSearch < k:
            self._index.hnsw.efSearch = k
        scores, indices = self._index.search(q, k)
        scores = scores.astype(np.float32, copy=False)
        scores[indices < 0] = -np.inf
        return scores, indices.astype(np.int64, copy=False)

    def _search_torch(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            qt = torch.from_numpy(q).to(self.device, non_blocking=True)
            scores, indices = torch.topk(qt @ self._matrix.T, k, dim=1, largest=True, sorted=True)
            return scores.cpu().numpy(), indices.cpu().numpy().astype(np.int64, copy=False)

    def topk(self, queries: Any, k: int | None = None) -> list[list[dict[str, Any]]]:
        """Like :meth:`search`, as ``[[{"id", "label", "score"}, ...] per query]`` (best first)."""
        scores, indices = self.search(queries, k)
        g = self.gallery
        return [
            [{"id": g.ids[i], "label": g.labels[i], "score": float(s)} for s, i in zip(srow, irow) if i >= 0]
            for srow, irow in zip(scores, indices)
        ]

    def search_text(self, texts: Sequence[str], embedder: Any, k: int | None = None) -> list[list[dict[str, Any]]]:
        """Search the gallery with captions embedded by ``embedder.encode_text``.

        Parameters
        ----------
        texts : sequence of str
            E.g. ``["a red triangle"]``.
        embedder : object
            Has ``encode_text`` and ``embed_dim`` (e.g. :class:`bci.clip.ClipEmbedder`);
            it should be the CLIP the gallery was built with.
        k : int, optional

        Returns
        -------
        list of list of dict
            As :meth:`topk`, one list per text.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"texts must be a non-empty list of non-empty strings, got {texts!r:.200}")
        check_compatible(self.gallery, int(embedder.embed_dim), where=f"CLIP {getattr(embedder, 'name', '?')!r}")
        return self.topk(embedder.encode_text(texts), k)

    def search_images(self, images: np.ndarray, embedder: Any, k: int | None = None) -> list[list[dict[str, Any]]]:
        """Search the gallery with images embedded by ``embedder.encode_images`` ((N, H, W, 3) uint8)."""
        from bci.retrieval.gallery import check_images

        images = check_images(images, "images")
        check_compatible(self.gallery, int(embedder.embed_dim), where=f"CLIP {getattr(embedder, 'name', '?')!r}")
        return self.topk(embedder.encode_images(images), k)

    def recall_at_k(self, queries: Any, k: int | None = None) -> float:
        """Fraction of the exact top-k that this backend returns (1.0 for exact backends).

        The reference is an exact brute-force search (float32 matrix product on the
        CPU); recall = mean over queries of ``|approx ∩ exact| / k``.
        """
        k = min(_check_k(self.k if k is None else k), len(self.gallery))
        q = _as_queries(queries, self.gallery.embed_dim, self.gallery.name)
        _, approx = self.search(q, k)
        exact = exact_topk(self.gallery.embeddings, q, k)
        hits = sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact))
        return hits / float(k * len(q))


def exact_topk(embeddings: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 256) -> np.ndarray:
    """Exact top-k rows by inner product (numpy; queries in chunks to bound memory).

    Returns
    -------
    ndarray, shape (B, k), int64
        Best first.
    """
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ embeddings.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


    return int(value)


def _import_faiss(backend: str) -> Any:
    try:
        import faiss
    except ImportError:
        raise FaissNotInstalledError(backend) from None
    return faiss


# --------------------------------------------------------------------------- synthetic data
def clustered_unit_vectors(n: int, dim: int, *, n_queries: int = 0, n_clusters: int = 1000, spread: float = 1.0,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered random unit vectors (for benchmarks and tests of approximate search).

    ``n_clusters`` random unit centres; each vector is ``centre + spread * g`` with
    ``g ~ N(0, I / dim)``, normalised, so its cosine to its centre is about
    ``1 / sqrt(1 + spread**2)`` and to another member of its cluster about
    ``1 / (1 + spread**2)``: near neighbours must be told apart inside a cluster,
    which is what makes approximate-search recall meaningful. Queries are fresh
    draws from the same clusters.

    Returns
    -------
    vectors : ndarray, shape (n, dim), float32
    queries : ndarray, shape (n_queries, dim), float32
    """
    for name, value, minimum in (("n", n, 1), ("dim", dim, 1), ("n_queries", n_queries, 0),
                                 ("n_clusters", n_clusters, 1)):
        check_int(name, value, low=minimum)
    if not spread >= 0:
        raise ValueError(f"spread={spread!r} must be >= 0")
    rng = np.random.default_rng([seed, 0xC1A5])
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        out = centres[rng.integers(0, n_clusters, m)]
        out += np.float32(spread / np.sqrt(dim)) * rng.standard_normal((m, dim), dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    return draw(n), draw(n_queries)


def gallery_from_vectors(vectors: np.ndarray, *, name: str = "synthetic") -> Gallery:
    """A :class:`Gallery` over bare unit vectors (ids ``v0000000``..., no labels, captions or thumbnails)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    return Gallery(embeddings=vectors, ids=[f"v{i:07d}" for i in range(n)], labels=[""] * n, captions=[""] * n,
                   thumbnails=np.zeros((n, 0, 0, 3), np.uint8), meta={"name": name, "source": "synthetic"})
