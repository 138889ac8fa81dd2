"""Integrity of a recorded session: read every chunk, list the damaged ones (``bci info --verify``).

:func:`verify_session` reads every chunk of the ``data`` and ``time`` arrays of every stream
and returns a :class:`VerifyReport`: per stream, whether its chunks carry crc32c checksums
(sessions written since checksums were added) and every damaged chunk as stream + sample
range + time range. :func:`skipped_summary` is the line a reader with ``skip_damaged=True``
prints about what it left out.

What is detected: with checksums, any changed, missing or extra byte of a chunk file and a
missing chunk file. Without checksums (older sessions), only what zstd itself cannot decode
(a damaged frame header or block header, a truncated file) and a missing ``time`` chunk; bytes
changed inside a stored (incompressible) zstd block decode without error and go unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from streams._checks import ensure_path
from streams.session import DamagedRange, SessionReader

__all__ = ["StreamCheck", "VerifyReport", "skipped_summary", "verify_session"]

#: Exit status of ``bci info --verify`` when the session was read and damage was found (0: clean).
DAMAGE_FOUND_EXIT = 1


@dataclass
class StreamCheck:
    """What :func:`verify_session` found in one stream."""

    key: str
    n_samples: int
    n_chunks: int  # of data and time together
    checksums: bool
    damaged: list[DamagedRange] = field(default_factory=list)


@dataclass
class VerifyReport:
    """The result of :func:`verify_session`; ``str()`` is what ``bci info --verify`` prints."""

    path: Path
    streams: list[StreamCheck]
    notes: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> list[DamagedRange]:
        """Every damaged chunk of every stream."""
        return [d for s in self.streams for d in s.damaged]

    @property
    def ok(self) -> bool:
        """True when no chunk is damaged."""
        return not self.damaged

    @property
    def exit_code(self) -> int:
        """0 when clean, :data:`DAMAGE_FOUND_EXIT` when a chunk is damaged."""
        return 0 if self.ok else DAMAGE_FOUND_EXIT

    def __str__(self) -> str:
        n_chunks = sum(s.n_chunks for s in self.streams)
        lines = [f"verified {self.path}: {len(self.streams)} stream(s), {n_chunks} chunks read, "
                 f"{len(self.damaged)} damaged"]
        for s in self.streams:
            how = ("crc32c checksums: every byte checked" if s.checksums else
                   "no checksums (older writer): decoded every chunk; changed bytes that still decode go unnoticed")
            lines.append(f"  {s.key}: {s.n_samples} samples, {s.n_chunks} chunks, {how}")
            lines += [f"    DAMAGED {d.describe()}" for d in s.damaged]
        lines += [f"  note: {n}" for n in self.notes]
        if not self.ok:
            lines.append(f"  {len(self.damaged)} damaged chunk(s), {sum(d.n_samples for d in self.damaged)} samples: "
                         "'--skip-damaged' on bci replay / bci epochs / bci export bids reads the rest, the damaged "
                         "samples as gaps")
        return "\n".join(lines)


def verify_session(path: str | os.PathLike, *, progress: bool = False) -> VerifyReport:
    """Read every chunk of every stream of a session and list the damaged ones.

    Parameters
    ----------
    path : str or os.PathLike
        The session directory.
    progress : bool
        Draw a progress bar on stderr (tqdm; the CLI decides with :func:`bci.cli.progress.show_progress`).

    Returns
    -------
    VerifyReport
        ``exit_code`` 0 when clean, 1 when a chunk is damaged.

    Raises
    ------
    SessionFormatError
        Not a session (its metadata cannot be read): nothing to verify chunk by chunk.
    """
    path = ensure_path("path", path, must_exist=True)
    reader = SessionReader(path, skip_damaged=True)
    total = sum(reader.n_samples(k) * (reader.description(k).n_channels + 1) for k in reader.streams)
    from tqdm.auto import tqdm

    checks = []
    with tqdm(total=total, unit="value", unit_scale=True, desc="verify", disable=not progress, leave=False) as bar:
        for key in reader.streams:
            damaged = reader.damaged(key, progress=bar.update)
            checks.append(StreamCheck(key, reader.n_samples(key), reader.n_chunks(key), reader.has_checksums(key),
                                      damaged))
    return VerifyReport(path, checks, list(reader.notes))


def skipped_summary(reader: SessionReader, keys: Sequence[str], say: Callable[[str], None]) -> None:
    """Say what ``reader`` (``skip_damaged=True``) left out of streams ``keys``: one line per stream with damage."""
    for key in keys:
        ranges = reader.damaged(key)
        if not ranges:
            continue
        seconds = reader.description(key).nominal_rate
        n = sum(r.n_samples for r in ranges)
        length = f", {n / seconds:.3f} s" if seconds > 0 else ""
        say(f"skipped damaged chunks of {key!r}: {n} samples{length} in {len(ranges)} chunk(s): "
            + "; ".join(f"samples {r.start}-{r.stop - 1} ({r.time_text()}): {r.problem}" for r in ranges))
