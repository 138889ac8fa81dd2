"""Steps that add to a decoded window's record: retrieval (top-k), pixel-level images, diffusion.

A step is called by :class:`bci.runtime.pipeline.Pipeline` once per batch of windows that
completed together, after the encoder and before the records are emitted, with the
model input batch, the encoder outputs and the records (one per window, in order). It
adds fields to the records. Fast steps (retrieval, the saliency generator: milliseconds)
run inline so their results are in the record the latency is measured on; slow ones
(latent diffusion: seconds) hand the work to a :class:`DiffusionWorker` thread that emits
a follow-up ``"type": "image"`` record and never blocks decoding.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from streams._checks import check_int

logger = logging.getLogger(__name__)


class ResultStep(Protocol):
    """Adds fields to the records of one decoded batch."""

    def __call__(self, batch: np.ndarray, outputs: dict[str, np.ndarray], records: list[dict[str, Any]]) -> None:
        """``batch`` (B, n_chans, n_times) model input; ``outputs`` encoder outputs; ``records`` B dicts."""

    def close(self) -> None:
        """Release resources (threads, files)."""


class RetrievalStep:
    """Top-k gallery items for each window's embedding (``record["topk"]``).

    When the window's marker names an image that is in the gallery, the record also
    gets ``true_rank`` (1 = retrieved first; None when the image is not in the top
    ``rank_depth``) so hit rates can be computed from the events file.

    Parameters
    ----------
    retriever : bci.retrieval.search.Retriever
        Search over the gallery (exact torch or FAISS).
    k : int
        How many items each record lists.
    query : callable, optional
        Maps the encoder's embeddings to the gallery's space before the search (e.g.
        :func:`bci.models.stimulus.pattern_query` for a pattern decoder); default: as they are.
    """

    def __init__(self, retriever: Any, k: int = 5, query: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        k = check_int("k", k, low=1)  # items retrieved per window
        self.retriever = retriever
        self.k = min(k, len(retriever.gallery.ids))
        self._ids = retriever.gallery.ids
        self._labels = retriever.gallery.labels
        self._index = {image_id: i for i, image_id in enumerate(self._ids)}
        self.query = query

    def __call__(self, batch: np.ndarray, outputs: dict[str, np.ndarray], records: list[dict[str, Any]]) -> None:
        queries = outputs["embedding"] if self.query is None else self.query(outputs["embedding"])
        scores, indices = self.retriever.search(queries, k=self.k)
        for rec, row_scores, row_idx in zip(records, scores, indices):
            # an approximate index returns -1 when it found fewer than k items: skip those
            rec["topk"] = [
                {"id": self._ids[j], "label": self._labels[j], "score": float(s)}
                for s, j in zip(row_scores, row_idx) if j >= 0
            ]
            true_id = rec.get("image_id")
            if true_id is not None and true_id in self._index:
                hits = np.flatnonzero(row_idx == self._index[true_id])
                rec["true_rank"] = int(hits[0]) + 1 if len(hits) else None

    def close(self) -> None:
        """Nothing to release."""


class ImageWriter:
    """Writes generated images as PNG files named after the window (``<kind>_<index>.png``).

    Records carry the path (relative to nothing: absolute), never the pixels, so the
    events file and the results stream stay small.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, kind: str, window_index: int, image: np.ndarray) -> str:
        """Save one ``(H, W, 3)`` uint8 image; returns its path."""
        from PIL import Image

        path = self.directory / f"{kind}_{window_index:06d}.png"
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(path)
        return str(path.resolve())


class SaliencyStep:
    """Pixel-level image G(f_θ(x)) for each window (``record["images"]["saliency"]``).

    Parameters
    ----------
    feature_encoder : bci.runtime.inference.Encoder
        The pixel-level extractor f_θ (its own checkpoint); it sees the same window batch.
    image_step : callable
        ``features (B, F) -> uint8 (B, H, W, 3)`` (e.g. :class:`bci.generation.PixelImageStep`).
    writer : ImageWriter
        Where the images go.
    on_image : callable, optional
        Also called with ``(record, image)`` (e.g. to feed the diffusion worker).
    """

    def __init__(self, feature_encoder: Any, image_step: Callable[[np.ndarray], np.ndarray], writer: ImageWriter,
                 on_image: Callable[[dict[str, Any], np.ndarray], None] | None = None) -> None:
        self.feature_encoder = feature_encoder
        self.image_step = image_step
        self.writer = writer
        self.on_image = on_image

    def __call__(self, batch: np.ndarray, outputs: dict[str, np.ndarray], records: list[dict[str, Any]]) -> None:
        features = self.feature_encoder(batch)["embedding"]
        images = self.image_step(features)
        for rec, image in zip(records, images):
            path = self.writer.write("saliency", int(rec["window_index"]), image)
            rec.setdefault("images", {})["saliency"] = path
            if self.on_image is not None:
                self.on_image(rec, image)

    def close(self) -> None:
        """Nothing to release."""


class PatternStep:
    """The stimulus pattern a pattern decoder reads out of each window (``record["images"]["reconstruction"]``).

    A pattern decoder (``bci train fmri --objective pattern``; checkpoint
    ``extra.embedding_space == "pattern"``) outputs one logit per cell of a ``grid × grid``
    stimulus, row-major. The step turns them into probabilities, draws them as a grey
    image (white = on, each cell ``scale`` pixels wide) and attaches it to the record:
    written to a PNG file by ``writer``, or — without one — as a small ``data:image/png``
    URI (a 60 × 60 grey PNG is well under 1 kB), so the viewer's fMRI panel shows the decoded
    pattern next to the volumes.

    Parameters
    ----------
    grid : int
        Pattern side; the model's embedding has ``grid²`` entries.
    writer : ImageWriter, optional
        Where the images go; None embeds them in the records.
    scale : int
        Pixels per cell.
    """

    def __init__(self, grid: int, writer: ImageWriter | None = None, scale: int = 6) -> None:
        self.grid, self.scale = check_int("grid", grid, low=1), check_int("scale", scale, low=1)
        self.writer = writer

    def images(self, logits: np.ndarray) -> np.ndarray:
        """``(B, grid²)`` logits → ``(B, grid·scale, grid·scale, 3)`` uint8 grey images."""
        from bci.models.stimulus import pattern_probabilities

        x = np.asarray(logits)
        if x.ndim != 2 or x.shape[1] != self.grid * self.grid:
            raise ValueError(f"pattern logits have shape {x.shape}; expected (batch, {self.grid * self.grid}) "
                             f"for a {self.grid}x{self.grid} pattern")
        prob = pattern_probabilities(x)
        cells = np.rint(prob * 255.0).astype(np.uint8).reshape(-1, self.grid, self.grid)
        big = np.kron(cells, np.ones((1, self.scale, self.scale), np.uint8))
        return np.repeat(big[..., None], 3, axis=3)

    def __call__(self, batch: np.ndarray, outputs: dict[str, np.ndarray], records: list[dict[str, Any]]) -> None:
        from bci.images import encode_png_data_uri

        for rec, image in zip(records, self.images(outputs["embedding"])):
            ref = (self.writer.write("reconstruction", int(rec["window_index"]), image) if self.writer is not None
                   else encode_png_data_uri(image))
            rec.setdefault("images", {})["reconstruction"] = ref

    def close(self) -> None:
        """Nothing to release."""


class DiffusionWorker:
    """Runs latent-diffusion img2img off the decoding thread, one window at a time.

    Each request is the pixel-level image and the sample-level embedding of a window;
    the result is emitted to ``emit`` as a follow-up record
    ``{"type": "image", "window_index", "marker", "images": {"diffusion": path}, ...}``.
    The queue is bounded: when diffusion cannot keep up, new requests are skipped and
    counted (``skipped``), never queued without limit and never blocking the decoder.
    """

    def __init__(self, img2img: Callable[..., np.ndarray], writer: ImageWriter,
                 emit: Callable[[dict[str, Any]], None], *, strength: float = 0.6, steps: int = 20, seed: int = 0,
                 max_pending: int = 2, clock: Callable[[], float] | None = None) -> None:
        self.img2img = img2img
        self.writer = writer
        self.emit = emit
        self.strength, self.steps, self.seed = float(strength), int(steps), int(seed)
        self.clock = clock
        self.skipped = 0
        self.done = 0
        self.failed = 0
        self._queue: queue.Queue[tuple[dict[str, Any], np.ndarray, np.ndarray] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="bci-diffusion", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any], image: np.ndarray, embedding: np.ndarray) -> bool:
        """Queue one window; False (and counted) when the worker is busy."""
        try:
            self._queue.put_nowait((record, image, embedding))
            return True
        except queue.Full:
            self.skipped += 1
            return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            record, image, embedding = item
            try:
                out = self.img2img(image[None], embedding[None], strength=self.strength, steps=self.steps,
                                   seed=self.seed)
                path = self.writer.write("diffusion", int(record["window_index"]), out[0])
            except Exception:  # one failed image must not stop decoding; it is logged and counted
                self.failed += 1
                logger.exception("diffusion failed for window %s", record.get("window_index"))
                continue
            self.done += 1
            follow_up = {"type": "image", "window_index": record["window_index"], "marker": record.get("marker"),
                         "marker_time": record.get("marker_time"), "images": {"diffusion": path}}
            if self.clock is not None:
                follow_up["emitted_time"] = self.clock()
            self.emit(follow_up)

    def close(self, timeout: float = 60.0) -> None:
        """Finish queued work (up to ``timeout`` s) and stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)


def run_steps(steps: Sequence[ResultStep], batch: np.ndarray, outputs: dict[str, np.ndarray],
              records: list[dict[str, Any]]) -> None:
    """Apply every step in order."""
    for step in steps:
        step(batch, outputs, records)
