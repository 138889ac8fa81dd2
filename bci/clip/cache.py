"""Caches of CLIP embeddings: texts one by one (:class:`TextEmbeddingCache`) and whole tables
(:class:`EmbeddingTableCache`, e.g. the CLIP targets of a dataset's images or captions).

Text embeddings are keyed by model fingerprint + text, in memory and optionally on disk.

On disk (no pickle), under ``<directory>/<fingerprint>/<key[:2]>/``::

    <key>.npz    one array ``embedding`` (float32, (embed_dim,))
    <key>.json   {"format", "format_version", "model", "fingerprint", "text", "key", "embed_dim"}

where ``key`` is the SHA-256 (hex) of ``fingerprint + "\\0" + text``. The JSON is
written last, so its presence marks a complete entry; on reading, the text and the
fingerprint it names must match, and an unreadable or mismatching entry counts as a
miss (and is rewritten).

A table is one ``(n_rows, embed_dim)`` float32 array per fingerprint (the caller hashes the
model and every input into it), under ``<directory>/``::

    <fingerprint>.safetensors   one tensor ``embeddings``
    <fingerprint>.json          {"format", "format_version", "fingerprint", "ids", "n_rows", "embed_dim", ...}

again JSON last, no pickle; a table whose JSON or tensor does not match (fingerprint, ids,
shape, dtype) counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from bci.safe_io import atomic_write
from streams._checks import check_int

__all__ = ["EmbeddingTableCache", "TextEmbeddingCache", "text_key"]

_FORMAT = "bci-runtime.text-embedding"
_FORMAT_VERSION = 1
_TABLE_FORMAT = "bci-runtime.embedding-table"
_TABLE_FORMAT_VERSION = 1


def text_key(fingerprint: str, text: str) -> str:
    """SHA-256 (hex) of ``fingerprint + "\\0" + text``: the cache key of one text embedding."""
    return hashlib.sha256(f"{fingerprint}\0{text}".encode("utf-8")).hexdigest()


class TextEmbeddingCache:
    """Text embeddings of one or more models, in memory and optionally on disk.

    Parameters
    ----------
    directory : path, optional
        Where to persist entries; ``None`` keeps them in memory only.
    max_items : int
        Most entries kept in memory (oldest dropped first).
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_items: int = 100_000) -> None:
        self.max_items = check_int("max_items", max_items, low=1)
        self.directory = None if directory is None else Path(directory)
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._memory)

    def get(self, fingerprint: str, text: str) -> np.ndarray | None:
        """The cached embedding (a fresh copy), or ``None``."""
        cached = self._memory.get((fingerprint, text))
        if cached is None and self.directory is not None:
            cached = self._read(self.directory, fingerprint, text)
            if cached is not None:
                self._remember(fingerprint, text, cached)
        if cached is None:
            self.misses += 1
            return None
        self.hits += 1
        return cached.copy()

    def put(self, fingerprint: str, text: str, embedding: np.ndarray, *, model: str = "") -> None:
        """Store one embedding (1-D float32)."""
        vector = np.array(embedding, dtype=np.float32, copy=True)
        if vector.ndim != 1:
            raise ValueError(f"embedding must be 1-D, got shape {vector.shape}")
        vector.setflags(write=False)
        self._remember(fingerprint, text, vector)
        if self.directory is not None:
            self._write(self.directory, fingerprint, text, vector, model)

    def clear_memory(self) -> None:
        """Forget the in-memory entries (the disk ones stay)."""
        self._memory.clear()

    # ------------------------------------------------------------------ internals
    def _remember(self, fingerprint: str, text: str, vector: np.ndarray) -> None:
        if len(self._memory) >= self.max_items:
            self._memory.pop(next(iter(self._memory)))
        self._memory[(fingerprint, text)] = vector

    @staticmethod
    def _paths(directory: Path, fingerprint: str, text: str) -> tuple[Path, Path, str]:
        key = text_key(fingerprint, text)
        folder = directory / _safe(fingerprint) / key[:2]
        return folder / f"{key}.npz", folder / f"{key}.json", key

    def _read(self, directory: Path, fingerprint: str, text: str) -> np.ndarray | None:
        npz_path, json_path, key = self._paths(directory, fingerprint, text)
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            if meta.get("text") != text or meta.get("fingerprint") != fingerprint or meta.get("key") != key:
                return None
            with np.load(npz_path, allow_pickle=False) as data:
                vector = np.asarray(data["embedding"])
        except (OSError, ValueError, KeyError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if vector.dtype != np.float32 or vector.shape != (meta.get("embed_dim"),):
            return None
        vector.setflags(write=False)
        return vector

    def _write(self, directory: Path, fingerprint: str, text: str, vector: np.ndarray, model: str) -> None:
        npz_path, json_path, key = self._paths(directory, fingerprint, text)
        npz_path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "model": model,
            "fingerprint": fingerprint,
            "text": text,
            "key": key,
            "embed_dim": int(vector.shape[0]),
        }
        tmp = npz_path.with_name(f".{key}.tmp-{os.getpid()}.npz")
        try:
            np.savez(tmp, embedding=vector)
            os.replace(tmp, npz_path)
        finally:
            tmp.unlink(missing_ok=True)
        tmp_json = json_path.with_name(f".{key}.tmp-{os.getpid()}.json")
        try:
            tmp_json.write_text(json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp_json, json_path)
        finally:
            tmp_json.unlink(missing_ok=True)


class EmbeddingTableCache:
    """Embedding tables on disk, one per fingerprint: ``<fingerprint>.safetensors`` + ``<fingerprint>.json``.

    Parameters
    ----------
    directory : path
        Where the tables live (created on the first :meth:`save`).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def paths(self, fingerprint: str) -> tuple[Path, Path]:
        """The ``.safetensors`` and ``.json`` files of ``fingerprint``."""
        name = _safe(fingerprint)
        return self.directory / f"{name}.safetensors", self.directory / f"{name}.json"

    def load(self, fingerprint: str, ids: list[str]) -> np.ndarray | None:
        """The stored table of ``fingerprint`` when it is complete and names the same ``ids``; else None."""
        tensor_path, json_path = self.paths(fingerprint)
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            if (meta.get("format") != _TABLE_FORMAT or meta.get("format_version") != _TABLE_FORMAT_VERSION
                    or meta.get("fingerprint") != fingerprint or meta.get("ids") != list(ids)):
                return None
            table = load_file(str(tensor_path))["embeddings"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError, UnicodeDecodeError, SafetensorError):
            return None
        if table.dtype != np.float32 or table.shape != (len(ids), meta.get("embed_dim")):
            return None
        return table

    def save(self, fingerprint: str, ids: list[str], table: np.ndarray, meta: dict[str, Any]) -> Path:
        """Write ``table`` (``(len(ids), D)`` float32) with ``meta`` (JSON) in its description; returns the JSON path."""
        array = np.ascontiguousarray(table, dtype=np.float32)
        if array.ndim != 2 or len(array) != len(ids):
            raise ValueError(f"table has shape {array.shape}; expected ({len(ids)}, embed_dim), one row per id")
        tensor_path, json_path = self.paths(fingerprint)
        self.directory.mkdir(parents=True, exist_ok=True)
        json_path.unlink(missing_ok=True)  # the JSON marks a complete table: written last
        atomic_write(tensor_path, lambda p: save_file({"embeddings": array}, str(p), metadata={"format": _TABLE_FORMAT}))
        body = {**meta, "format": _TABLE_FORMAT, "format_version": _TABLE_FORMAT_VERSION, "fingerprint": fingerprint,
                "n_rows": int(array.shape[0]), "embed_dim": int(array.shape[1]), "ids": list(ids)}
        text = json.dumps(body, indent=1, ensure_ascii=False) + "\n"
        atomic_write(json_path, lambda p: p.write_text(text, encoding="utf-8"))
        return json_path


def _safe(fingerprint: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in fingerprint) or "_"
