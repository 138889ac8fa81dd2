"""Which channels of an epoch dataset feed a model: its rate, window and channel names checked against the dataset."""

from __future__ import annotations

import math
import os

import numpy as np

from bci.models import ModelConfig
from offline.data.epochs import EpochDataset

__all__ = ["channel_selection"]


def _fit_message(ckpt: str | os.PathLike, cfg: ModelConfig, ds: EpochDataset, problem: str) -> str:
    return (f"checkpoint {ckpt} (model {cfg.name!r}: {cfg.n_chans} channels x {cfg.n_times} samples at "
            f"{cfg.sfreq:g} Hz) does not fit dataset {ds.path} ({ds.data.shape[1]} channels x "
            f"{ds.data.shape[2]} samples at {float(ds.sfreq):g} Hz): {problem}")


def channel_selection(cfg: ModelConfig, ds: EpochDataset, ckpt: str | os.PathLike = "") -> np.ndarray | None:
    """Dataset channel indices that feed the model (None: all, in order); a clear error when they cannot."""
    names = [str(c) for c in ds.ch_names]
    if not math.isclose(float(ds.sfreq), cfg.sfreq, rel_tol=1e-6):
        raise ValueError(_fit_message(ckpt, cfg, ds, "the sampling rates differ; resample or retrain"))
    if int(ds.data.shape[2]) != cfg.n_times:
        raise ValueError(_fit_message(ckpt, cfg, ds, "the window lengths differ; rebuild the epochs or retrain"))
    if cfg.ch_names is None or cfg.ch_names == names:
        if cfg.n_chans != len(names):
            raise ValueError(_fit_message(ckpt, cfg, ds, "the channel counts differ; use a model trained on "
                                                         "this montage"))
        return None
    missing = [c for c in cfg.ch_names if c not in names]
    if missing:
        raise ValueError(_fit_message(ckpt, cfg, ds, f"the model's channels {missing[:5]} "
                                                     f"({len(missing)} in all) are not in the dataset"))
    where = {c: i for i, c in enumerate(names)}
    return np.asarray([where[c] for c in cfg.ch_names], dtype=np.int64)
