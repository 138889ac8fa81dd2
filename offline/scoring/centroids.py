"""Nearest-class-centroid scoring of metric-space embeddings (pixel-level encoders).

Training validates with :func:`centroid_accuracy`; evaluation classifies with the
centroids of :func:`class_centroids` fitted on the training part.
"""

from __future__ import annotations

import numpy as np

from offline.scoring.vectors import unit_rows

__all__ = ["centroid_accuracy", "class_centroids"]


def class_centroids(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised mean embedding of each class; returns ``(centroids, present)`` (bool mask of classes seen)."""
    e = unit_rows(embeddings)
    out = np.zeros((n_classes, e.shape[1]), np.float32)
    present = np.zeros(n_classes, bool)
    for c in np.unique(labels):
        out[c] = e[labels == c].mean(axis=0)
        present[c] = True
    return unit_rows(out), present


def centroid_accuracy(train_emb: np.ndarray, train_labels: np.ndarray, emb: np.ndarray, labels: np.ndarray,
                      n_classes: int) -> float:
    """Nearest-centroid accuracy of ``emb`` among the classes present in the training embeddings."""
    centroids, present = class_centroids(train_emb, train_labels, n_classes)
    scores = unit_rows(emb) @ centroids.T
    scores[:, ~present] = -np.inf
    return float((np.argmax(scores, axis=1) == labels).mean()) if len(labels) else float("nan")
