"""Reading Zarr arrays when a chunk may be damaged: which chunk, which rows, and why.

One owner of: the codecs of new session arrays (:func:`checksum_codecs`: zstd, then a crc32c
checksum of the stored bytes), telling whether an array has checksums (:func:`has_checksums`),
reading the first ``n`` rows of an array so that a chunk that cannot be decoded (checksum
mismatch, zstd error, truncated or missing file) is reported as a :class:`DamagedChunk`
instead of a traceback from zarr's internals (:func:`read_rows`), and ending zarr's pending
tasks after such a failure (:func:`drain_zarr_tasks`).

The healthy path is unchanged: :func:`read_rows` first reads ``array[:n]`` in one call, exactly
as the readers always did, and only when that fails reads chunk by chunk to find the damage.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from zarr.codecs import Crc32cCodec, ZstdCodec

__all__ = ["DamagedChunk", "checksum_codecs", "drain_zarr_tasks", "has_checksums", "missing_chunks", "read_rows",
           "scan_rows"]

logger = logging.getLogger(__name__)

#: Chunks :func:`scan_rows` reads in one call.
SCAN_CHUNKS = 16
#: Seconds :func:`drain_zarr_tasks` waits for zarr's pending tasks after a failed read.
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DamagedChunk:
    """One chunk of an array that could not be read.

    Attributes
    ----------
    array : str
        The array's name in its stream group (``"data"`` or ``"time"``).
    chunk : int
        Index of the chunk along the rows (the file ``c/<chunk>/...`` of the array).
    start, stop : int
        The rows (samples) it holds, ``start`` included, ``stop`` excluded (clipped to the valid rows).
    problem : str
        What went wrong (``"checksum mismatch"``, ``"zstd: ..."``, ``"chunk file missing"``).
    """

    array: str
    chunk: int
    start: int
    stop: int
    problem: str


def checksum_codecs() -> tuple[Any, ...]:
    """The bytes-to-bytes codecs of new session arrays: zstd (level 0, zarr's default), then crc32c.

    The crc32c checksum is the last codec, so it covers the bytes as stored: any changed,
    missing or added byte of a chunk file fails the check before zstd sees it.
    """
    return (ZstdCodec(level=0, checksum=False), Crc32cCodec())


def has_checksums(array: Any) -> bool:
    """True if the Zarr v3 ``array`` stores a crc32c checksum with every chunk."""
    codecs = getattr(getattr(array, "metadata", None), "codecs", ())
    return any(isinstance(c, Crc32cCodec) for c in codecs)


def read_rows(array: Any, n: int, *, missing_is_damage: bool) -> tuple[np.ndarray, list[DamagedChunk]]:
    """The first ``n`` rows of ``array``, and the chunks among them that could not be read.

    Parameters
    ----------
    array : zarr.Array
        An array chunked along its first axis.
    n : int
        Rows to read.
    missing_is_damage : bool
        Report a chunk whose file is missing (zarr reads it as the fill value) as damaged. True
        for arrays written with every chunk stored (session arrays with checksums); an older
        writer left out chunks that held only the fill value, so there a missing file may be genuine.

    Returns
    -------
    values : numpy.ndarray
        ``array[:n]``; the rows of a damaged chunk hold the array's fill value.
    damaged : list of DamagedChunk
        In chunk order; empty when every chunk was read.
    """
    missing = missing_chunks(array, n) if missing_is_damage else []
    values, damaged = _read_block(array, 0, n)
    return values, _merge(damaged, missing)


def read_block(array: Any, start: int, stop: int, n: int, *,
               missing_is_damage: bool) -> tuple[np.ndarray, list[DamagedChunk]]:
    """Rows ``[start, stop)`` of ``array`` (of ``n`` valid rows), and the damaged chunks they touch.

    As :func:`read_rows` for a slice; each damaged chunk is reported whole (its rows up to ``n``),
    not only the part of it that was asked for.
    """
    values, damaged = _read_block(array, start, stop)
    rows = array.chunks[0]
    if missing_is_damage and stop > start:
        damaged = _merge(damaged, missing_chunks(array, min(n, -(-stop // rows) * rows), first_chunk=start // rows))
    return values, [replace(d, start=d.chunk * rows, stop=min(n, (d.chunk + 1) * rows)) for d in damaged]


def scan_rows(array: Any, n: int, *, missing_is_damage: bool,
              progress: Callable[[int], None] | None = None) -> list[DamagedChunk]:
    """The damaged chunks of the first ``n`` rows of ``array``, read :data:`SCAN_CHUNKS` chunks at a time.

    As :func:`read_rows`, without keeping the values (memory stays at one block of chunks);
    ``progress(rows)`` is called after each block.
    """
    step = array.chunks[0] * SCAN_CHUNKS
    damaged: list[DamagedChunk] = []
    for a in range(0, n, step):
        b = min(n, a + step)
        damaged += _read_block(array, a, b)[1]
        if progress is not None:
            progress(b - a)
    return _merge(damaged, missing_chunks(array, n) if missing_is_damage else [])


def missing_chunks(array: Any, n: int, *, first_chunk: int = 0) -> list[DamagedChunk]:
    """Chunks of the first ``n`` rows (from chunk ``first_chunk`` on) whose file does not exist (local stores only)."""
    root = getattr(getattr(array, "store", None), "root", None)
    if root is None or n <= 0:
        return []
    folder = Path(root) / array.path
    rows = array.chunks[0]
    cols = [math.ceil(s / c) for s, c in zip(array.shape[1:], array.chunks[1:])]
    out = []
    for i in range(first_chunk, math.ceil(n / rows)):
        for rest in np.ndindex(*cols):
            if not (folder / array.metadata.encode_chunk_key((i, *rest))).is_file():
                out.append(DamagedChunk(_name(array), i, i * rows, min(n, (i + 1) * rows),
                                        "chunk file missing (zarr would read it as the fill value)"))
                break
    return out


def drain_zarr_tasks(timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Wait for the tasks still pending on zarr's event loop after a read failed.

    zarr gathers the chunk reads of one call without cancelling the others when one fails:
    they stay pending on zarr's background loop, and at interpreter exit asyncio reports each
    ("Task was destroyed but it is pending", "cannot schedule new futures after shutdown").
    Waiting for them here ends them cleanly and retrieves their exceptions.
    """
    try:
        from zarr.core.sync import _get_loop
    except ImportError:  # pragma: no cover - another zarr layout: nothing to drain
        return

    async def wait_for_others() -> None:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        if not others:
            return
        done, _ = await asyncio.wait(others, timeout=timeout)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: no "exception was never retrieved" at exit

    try:
        asyncio.run_coroutine_threadsafe(wait_for_others(), _get_loop()).result(timeout + 5.0)
    except Exception as exc:  # pragma: no cover - draining is best effort, never the error shown
        logger.debug("could not drain zarr's pending tasks: %s", exc)


# --------------------------------------------------------------------------- internals
def _name(array: Any) -> str:
    return str(array.path).rstrip("/").rsplit("/", 1)[-1] or str(array.path)


def _problem(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "checksum" in text.lower() and isinstance(exc, ValueError):
        return "checksum mismatch (crc32c)"
    if "zstd" in text.lower():
        return text if len(text) <= 100 else text[:97] + "..."
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 100 else text[:97] + "..."


def _read_block(array: Any, start: int, stop: int) -> tuple[np.ndarray, list[DamagedChunk]]:
    """``array[start:stop]`` in one call; if that fails, chunk by chunk to find the damaged ones."""
    try:
        return np.asarray(array[start:stop]), []
    except MemoryError:
        raise
    except Exception as exc:  # a decode error somewhere: find the chunk(s), chunk by chunk
        drain_zarr_tasks()
        values, damaged = _read_each_chunk(array, start, stop)
        if not damaged:
            raise  # not a damaged chunk: whatever it is, it is not ours to reword
        logger.debug("%s: %d damaged chunk(s) after %s", array, len(damaged), exc)
        return values, damaged


def _read_each_chunk(array: Any, start: int, stop: int) -> tuple[np.ndarray, list[DamagedChunk]]:
    """Read ``array[start:stop]`` one chunk (of rows) at a time; a chunk that fails holds the fill value."""
    rows = array.chunks[0]
    empty = np.asarray(array[0:0])
    blocks, damaged = [], []
    for i in range(start // rows, math.ceil(stop / rows)):
        a, b = max(start, i * rows), min(stop, (i + 1) * rows)
        try:
            blocks.append(np.asarray(array[a:b]))
        except MemoryError:
            raise
        except Exception as exc:
            drain_zarr_tasks()
            damaged.append(DamagedChunk(_name(array), i, a, b, _problem(exc)))
            blocks.append(np.full((b - a, *empty.shape[1:]), array.fill_value, dtype=empty.dtype))
    values = np.concatenate(blocks) if blocks else empty
    return values, damaged


def _merge(damaged: list[DamagedChunk], missing: list[DamagedChunk]) -> list[DamagedChunk]:
    """Decode failures and missing files, one entry per chunk, in chunk order."""
    seen = {d.chunk for d in damaged}
    return sorted(damaged + [m for m in missing if m.chunk not in seen], key=lambda d: d.chunk)
