"""Retrieval: exact torch top-k, FAISS flat/HNSW/IVF, dimension checks, text search, the benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.retrieval.gallery import Gallery, build_gallery, gallery_from_stimuli
from bci.retrieval.search import (
    BACKENDS,
    DimensionMismatchError,
    FaissNotInstalledError,
    Retriever,
    check_compatible,
    clustered_unit_vectors,
    exact_topk,
    gallery_from_vectors,
)
from streams.synthetic.stimuli import make_stimuli
from tests.test_gallery import PixelEmbedder


@pytest.fixture(scope="module")
def small() -> tuple[Gallery, np.ndarray]:
    """2,000 x 32 clustered gallery and 64 un-normalised queries."""
    vectors, queries = clustered_unit_vectors(2000, 32, n_queries=64, n_clusters=50, spread=1.0, seed=1)
    return gallery_from_vectors(vectors, name="small"), queries * 3.7


def _numpy_reference(gallery: Gallery, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q = queries.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sims = q @ gallery.embeddings.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def test_torch_topk_matches_numpy_brute_force(small) -> None:
    gallery, queries = small
    r = Retriever(gallery, backend="torch", k=7)
    scores, indices = r.search(queries)
    ref_scores, ref_idx = _numpy_reference(gallery, queries, 7)
    assert scores.dtype == np.float32 and indices.dtype == np.int64 and scores.shape == (64, 7)
    np.testing.assert_array_equal(indices, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # one query as a 1-D vector, as a torch tensor, and k per call
    s1, i1 = r.search(queries[5], k=3)
    np.testing.assert_array_equal(i1, ref_idx[5:6, :3])
    s2, i2 = r.search(torch.from_numpy(queries[:2]), k=2)
    np.testing.assert_array_equal(i2, ref_idx[:2, :2])
    np.testing.assert_array_equal(exact_topk(gallery.embeddings, queries / np.linalg.norm(queries, axis=1,
                                                                                           keepdims=True), 7), ref_idx)


def test_topk_records_and_k_clamped_to_gallery_size() -> None:
    vectors, queries = clustered_unit_vectors(4, 8, n_queries=2, n_clusters=2, seed=0)
    g = Gallery(embeddings=vectors, ids=["a", "b", "c", "d"], labels=["x", "y", "x", "y"], captions=[""] * 4,
                thumbnails=np.zeros((4, 0, 0, 3), np.uint8))
    r = Retriever(g, k=10)
    hits = r.topk(queries)
    assert len(hits) == 2 and len(hits[0]) == 4
    assert set(hits[0][0]) == {"id", "label", "score"}
    assert sorted(h["id"] for h in hits[0]) == ["a", "b", "c", "d"]
    best = int(np.argmax(vectors @ queries[0]))
    assert hits[0][0]["id"] == g.ids[best] and hits[0][0]["label"] == g.labels[best]


def test_faiss_flat_gives_exactly_the_torch_results(small) -> None:
    gallery, queries = small
    t_scores, t_idx = Retriever(gallery, backend="torch", k=5).search(queries)
    f_scores, f_idx = Retriever(gallery, backend="faiss-flat", k=5, threads=1).search(queries)
    np.testing.assert_array_equal(f_idx, t_idx)
    np.testing.assert_allclose(f_scores, t_scores, atol=1e-5)
    assert f_scores.dtype == np.float32 and f_idx.dtype == np.int64


def test_ivf_visiting_every_list_is_exact(small) -> None:
    gallery, queries = small
    r = Retriever(gallery, backend="faiss-ivf", k=5, nlist=16, nprobe=16, threads=1)
    assert r.params == {"nlist": 16, "nprobe": 16}
    assert r.recall_at_k(queries, 5) == 1.0
    r.set_nprobe(1)
    assert r.recall_at_k(queries, 5) < 1.0  # one list of 16 misses neighbours: the recall measure can fail


@pytest.mark.slow
def test_hnsw_recall_at_5_on_100k_clustered_gallery() -> None:
    """100,000 x 64-d, 1,000 clusters (cosine ~0.5 in a cluster); M=16, efConstruction=40, efSearch=256 (0.997)."""
    vectors, queries = clustered_unit_vectors(100_000, 64, n_queries=200, n_clusters=1000, spread=1.0, seed=0)
    gallery = gallery_from_vectors(vectors)
    r = Retriever(gallery, backend="faiss-hnsw", k=5, hnsw_m=16, ef_construction=40, ef_search=256)
    assert r.recall_at_k(queries, 5) >= 0.99
    r.set_ef_search(5)
    assert r.recall_at_k(queries, 5) < 0.99  # a narrow beam is measurably approximate
    scores, indices = r.search(queries[:3])
    assert indices.shape == (3, 5) and np.all(indices >= 0)
    np.testing.assert_allclose(scores, np.take_along_axis(queries[:3] @ vectors.T, indices, axis=1), atol=1e-5)


def test_dimension_mismatch_is_a_clear_error(small) -> None:
    gallery, queries = small
    r = Retriever(gallery)
    with pytest.raises(DimensionMismatchError, match="queries are 16-d but gallery 'small' has 32-d"):
        r.search(np.ones((2, 16), np.float32))
    with pytest.raises(DimensionMismatchError, match="gallery 'small' has 32-d embeddings but model 'm' outputs "
                                                     "256-d; rebuild the gallery"):
        check_compatible(gallery, 256, where="model 'm'")
    check_compatible(gallery, 32)
    with pytest.raises(ValueError, match="NaN or inf"):
        r.search(np.full((1, 32), np.nan))
    with pytest.raises(ValueError, match="all zeros"):
        r.search(np.zeros(32))
    with pytest.raises(ValueError, match="k=0"):
        r.search(queries, k=0)
    with pytest.raises(ValueError, match="backend='annoy'"):
        Retriever(gallery, backend="annoy")


def test_fingerprint_mismatch_is_refused() -> None:
    stim = make_stimuli(1, seed=0)
    images, ids, labels, captions = gallery_from_stimuli(stim)
    g = build_gallery(images, ids, labels, captions, embedder=PixelEmbedder(seed=0), progress=False)
    check_compatible(g, 32, clip_fingerprint=PixelEmbedder(seed=0).fingerprint())
    with pytest.raises(ValueError, match="fingerprint"):
        check_compatible(g, 32, where="CLIP 'other'", clip_fingerprint=PixelEmbedder(seed=1).fingerprint())


def test_search_text_finds_the_captioned_image() -> None:
    stim = make_stimuli(1, seed=0)
    images, ids, labels, captions = gallery_from_stimuli(stim, caption="template")
    emb = PixelEmbedder()
    g = build_gallery(images, ids, labels, captions, embedder=emb, source="text", progress=False)
    r = Retriever(g, k=3)
    hits = r.search_text(["an image of a green star", "an image of a blue ring"], emb)
    assert [h[0]["label"] for h in hits] == ["green star", "blue ring"]
    assert hits[0][0]["score"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(DimensionMismatchError, match="16-d"):
        r.search_text(["a red bar"], PixelEmbedder(embed_dim=16))
    with pytest.raises(ValueError, match="non-empty"):
        r.search_text([""], emb)
    image_hits = r.search_images(images[:1], emb)
    assert len(image_hits[0]) == 3


def test_missing_faiss_says_how_to_install(small, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # what an environment without faiss-cpu looks like
    with pytest.raises(FaissNotInstalledError, match=r"pip install 'bci-runtime\[faiss\]'"):
        Retriever(small[0], backend="faiss-hnsw")
    assert Retriever(small[0], backend="torch").search(small[1][:1])[1].shape == (1, 5)


def test_faiss_refuses_a_gpu_device(small) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            Retriever(small[0], backend="faiss-flat", device="cuda")
    else:
        with pytest.raises(ValueError, match="runs on the CPU"):
            Retriever(small[0], backend="faiss-flat", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_on_cuda_matches_cpu(small) -> None:
    gallery, queries = small
    g_scores, g_idx = Retriever(gallery, device="cuda").search(queries)
    c_scores, c_idx = Retriever(gallery, device="cpu").search(queries)
    np.testing.assert_array_equal(g_idx, c_idx)
    np.testing.assert_allclose(g_scores, c_scores, atol=1e-5)


def test_cli_backends_match_the_library() -> None:
    from bci.cli import gallery as cli_gallery

    assert cli_gallery.BACKENDS == BACKENDS


@pytest.mark.slow
def test_benchmark_runs_on_tiny_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.retrieval`` end to end on tiny sizes (in this process: no second torch import)."""
    import faiss

    from benchmarks.retrieval import main

    out = tmp_path / "retrieval.json"
    threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        assert main(["--n", "3000", "--dim", "16", "--clusters", "30", "--queries", "40", "--tune-queries", "40",
                     "--warmup", "2", "--build-threads", "1", "--backends", ",".join(BACKENDS),
                     "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads[0])
        faiss.omp_set_num_threads(threads[1])
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["results"]) == set(BACKENDS)
    assert result["results"]["torch"]["recall_at_k"] == 1.0 == result["results"]["faiss-flat"]["recall_at_k"]
    assert result["results"]["faiss-hnsw"]["params"]["efSearch"] >= 16
    assert result["results"]["faiss-hnsw"]["latency_ms"]["n"] == 40
    assert result["ratios_vs_torch"]["torch"]["p50_vs_torch"] == 1.0
    assert result["config"]["threads"] == 1 and "| faiss-hnsw |" in stdout
