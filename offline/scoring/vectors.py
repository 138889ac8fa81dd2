"""Row-wise vector helpers shared by the metrics, the targets and the trainers."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["unit_rows"]


def unit_rows(x: Any, dtype: Any = np.float32) -> np.ndarray:
    """Every row of ``x`` divided by its L2 norm (rows of norm 0 are left as they are).

    Parameters
    ----------
    x : array-like, (N, D)
    dtype : numpy dtype or None
        Dtype the rows are computed in (default float32); None keeps the dtype of ``x``.

    Returns
    -------
    numpy.ndarray, (N, D)
    """
    x = np.asarray(x, dtype=dtype)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)
