"""Which CLIP model: resolving a model or weights directory, and the record a checkpoint keeps of it.

:func:`resolve_clip` turns ``clip``/``weights`` arguments into a
:class:`~bci.clip.ClipEmbedder`; :func:`clip_record` is what checkpoints store about it;
:func:`recorded_clip` loads the model a checkpoint was trained with (and refuses another).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["clip_record", "recorded_clip", "resolve_clip"]


def resolve_clip(clip: Any = None, weights: str | os.PathLike | None = None, model: str = "tiny") -> Any:
    """A :class:`bci.clip.ClipEmbedder`: ``clip`` itself, or ``load_clip(model, weights=...)``."""
    if clip is not None and not isinstance(clip, (str, os.PathLike)):
        for attr in ("encode_text", "encode_images", "embed_dim"):
            if not hasattr(clip, attr):
                raise TypeError(f"clip={clip!r} must be a ClipEmbedder (bci.clip.load_clip) or a weights directory")
        return clip
    if isinstance(clip, (str, os.PathLike)):
        weights = clip
    from bci.clip.embedder import load_clip

    return load_clip(model, weights=weights)


def clip_record(clip: Any, weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """CLIP name, embedding size, fingerprint and weights location for checkpoints."""
    fingerprint = clip.fingerprint() if callable(getattr(clip, "fingerprint", None)) else None
    source = weights if weights is not None else getattr(clip, "source", None)
    where = str(Path(source).resolve()) if source and Path(str(source)).exists() else None
    return {"name": getattr(clip, "name", None), "embed_dim": int(clip.embed_dim), "fingerprint": fingerprint,
            "weights": where}


def recorded_clip(record: dict[str, Any] | None, clip: Any = None, clip_weights: str | os.PathLike | None = None) -> Any:
    """The CLIP model a checkpoint was trained with: ``clip``/``clip_weights`` when given, else the
    weights recorded in the checkpoint; a different model (fingerprint) is an error.
    """
    record = record or {}
    if clip is None and clip_weights is None:
        clip_weights = record.get("weights")
        if not clip_weights:
            raise ValueError("this checkpoint records no CLIP weights location; pass --clip-weights DIR "
                             "(the CLIP model it was trained with)")
        if not Path(clip_weights).exists():
            raise FileNotFoundError(f"the CLIP weights this checkpoint was trained with ({clip_weights}) are gone; "
                                    "pass --clip-weights DIR")
    embedder = resolve_clip(clip, clip_weights, model=str(record.get("name") or "tiny"))
    expected = record.get("fingerprint")
    got = embedder.fingerprint() if callable(getattr(embedder, "fingerprint", None)) else None
    if expected and got and expected != got:
        raise ValueError(f"the CLIP model given (fingerprint {got}) is not the one this checkpoint was trained with "
                         f"({expected}); pass the same --clip-weights as in training")
    return embedder
