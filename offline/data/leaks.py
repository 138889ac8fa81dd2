"""What the parts of a split share, and which of that leaks (:func:`analyse_split`).

Works on an :class:`~offline.data.table.EpochTable` (or anything with one as ``table``,
such as :class:`~offline.data.epochs.EpochDataset`), so that the epoch dataset can check
a split before storing it without importing the split builders of :mod:`offline.data.splits`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from offline.data.table import EpochTable

__all__ = ["LEAK_RULES", "SplitCheck", "analyse_split"]

#: What may not be shared between the test part and the others, by split kind (on top
#: of the rules for every kind: no shared epochs, and no shared block or overlapping
#: windows between any two parts — except, for ``zero_shot``, between test and the rest,
#: where the held-out *classes* are what must not cross). Shared runs are reported, not refused.
LEAK_RULES: dict[str, tuple[str, ...]] = {
    "block": ("blocks",),
    "custom": ("blocks",),
    "session": ("blocks", "sessions"),
    "subject": ("blocks", "sessions", "subjects"),
    "zero_shot": ("classes",),
}

# --------------------------------------------------------------------------- units
def _table(ds: Any) -> EpochTable:
    """The :class:`EpochTable` of an epoch dataset (its ``table``), or the table itself."""
    if isinstance(ds, EpochTable):
        return ds
    table = getattr(ds, "table", None)
    if isinstance(table, EpochTable):
        return table
    raise TypeError(f"expected an EpochDataset (EpochDataset.open(path)) or EpochTable, got {type(ds).__name__}")


def _codes(*columns: np.ndarray) -> np.ndarray:
    """One integer code per distinct row of ``columns`` (int64, 0..k-1)."""
    stacked = np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1)
    if len(stacked) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(stacked, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def _unit_codes(t: EpochTable) -> dict[str, np.ndarray | None]:
    return {
        "blocks": _codes(t.subject, t.session, t.block),
        "runs": None if t.run is None else _codes(t.subject, t.session, t.run),
        "sessions": _codes(t.subject, t.session),
        "subjects": _codes(t.subject),
        "classes": np.asarray(t.labels, dtype=np.int64),
    }


# --------------------------------------------------------------------------- checks
@dataclass
class SplitCheck:
    """What one split shares between its parts, and whether that leaks.

    Attributes
    ----------
    name, kind : str
    sizes : dict
        Epochs per part.
    n_classes : dict
        Distinct classes per part.
    shared : dict
        ``{"epochs"|"blocks"|"runs"|"sessions"|"subjects"|"classes": {"train/test": n, ...}}``.
    adjacent : dict
        ``{"train/test": n}``: neighbouring windows of one session in the two parts whose
        markers are closer than one window length (overlapping data).
    leaks : list of str
        Why the split leaks (empty: it does not).
    notes : list of str
        Facts that are not leaks (e.g. classes of test missing from train).
    stored_as_leaking : bool
        The split was stored with ``allow_leak=True``.
    """

    name: str
    kind: str
    sizes: dict[str, int]
    n_classes: dict[str, int]
    shared: dict[str, dict[str, int]]
    adjacent: dict[str, int]
    leaks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stored_as_leaking: bool = False

    @property
    def leaking(self) -> bool:
        """True when the split leaks."""
        return bool(self.leaks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy."""
        return {"name": self.name, "kind": self.kind, "sizes": dict(self.sizes), "n_classes": dict(self.n_classes),
                "shared": {k: dict(v) for k, v in self.shared.items()}, "adjacent": dict(self.adjacent),
                "leaking": self.leaking, "leaks": list(self.leaks), "notes": list(self.notes),
                "stored_as_leaking": self.stored_as_leaking}

    def __str__(self) -> str:
        sizes = ", ".join(f"{p} {n} ({self.n_classes[p]} classes)" for p, n in self.sizes.items())
        lines = [f"split {self.name!r} (kind {self.kind}): {sizes}"]
        lines.append(f"  status: {'LEAKS' if self.leaking else 'ok, no leak found'}"
                     + (" (stored with allow_leak=True)" if self.stored_as_leaking else ""))
        for what, pairs in self.shared.items():
            shown = ", ".join(f"{pair} {n}" for pair, n in pairs.items())
            lines.append(f"  shared {what:<9} {shown}")
        if self.adjacent:
            lines.append("  overlapping windows " + ", ".join(f"{pair} {n}" for pair, n in self.adjacent.items()))
        lines += [f"  LEAK: {text}" for text in self.leaks]
        lines += [f"  note: {text}" for text in self.notes]
        return "\n".join(lines)


def analyse_split(
    ds: Any,
    parts: Mapping[str, np.ndarray],
    *,
    kind: str = "custom",
    name: str = "",
) -> SplitCheck:
    """Find what the parts of a split share, and which of that leaks for this ``kind``.

    Parameters
    ----------
    ds : EpochDataset or EpochTable
    parts : dict of str to numpy.ndarray
        Epoch indices per part.
    kind : {'block', 'session', 'subject', 'zero_shot', 'custom'}
    name : str
        For the report.

    Returns
    -------
    SplitCheck

    Notes
    -----
    Leaks, for every kind: an epoch in two parts; a block in two parts; windows of one
    session in two parts whose markers are closer than one window length. Runs shared
    between parts (blocks of one run in different parts) are reported as notes.
    ``zero_shot``: between ``test`` and the other parts only shared *classes* leak
    (shared blocks are reported as notes, inevitable in a rapid design). ``session``
    and ``subject``: the test part may share no session (subject) with the others.
    The "test" rules apply to the part named ``test`` (to every pair when there is none).
    """
    t = _table(ds)
    if kind not in LEAK_RULES:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(LEAK_RULES)}")
    idx = {p: np.asarray(v, dtype=np.int64) for p, v in parts.items()}
    units = _unit_codes(t)
    pairs = list(combinations(idx, 2))
    shared: dict[str, dict[str, int]] = {"epochs": {}}
    for a, b in pairs:
        shared["epochs"][f"{a}/{b}"] = int(np.intersect1d(idx[a], idx[b]).size)
    for what, codes in units.items():
        if codes is None:
            continue
        shared[what] = {f"{a}/{b}": int(np.intersect1d(codes[idx[a]], codes[idx[b]]).size) for a, b in pairs}
    adjacent = _adjacent(t, idx, units["sessions"])
    check = SplitCheck(name=name, kind=kind, sizes={p: int(len(v)) for p, v in idx.items()},
                       n_classes={p: int(len(np.unique(t.labels[v]))) for p, v in idx.items()},
                       shared=shared, adjacent=adjacent)
    _apply_rules(check, pairs, "test" in idx)
    _class_notes(check, t, idx)
    if t.run is None:
        check.notes.append("no run numbers stored: runs not checked")
    if t.marker_time is None:
        check.notes.append("no marker times stored: overlapping windows not checked")
    return check


def _adjacent(t: EpochTable, idx: dict[str, np.ndarray], sessions: np.ndarray) -> dict[str, int]:
    """Neighbouring windows (same session, markers closer than a window) in different parts."""
    names = list(idx)
    if t.marker_time is None or len(names) < 2:
        return {}
    ep = np.concatenate([idx[p] for p in names])
    part = np.concatenate([np.full(len(idx[p]), i) for i, p in enumerate(names)])
    sess, when = sessions[ep], t.marker_time[ep]
    order = np.lexsort((when, sess))
    ep, part, sess, when = ep[order], part[order], sess[order], when[order]
    close = (sess[1:] == sess[:-1]) & (np.diff(when) < t.window_seconds) & (part[1:] != part[:-1])
    close &= ep[1:] != ep[:-1]
    out = {f"{a}/{b}": 0 for a, b in combinations(names, 2)}
    for i in np.flatnonzero(close):
        lo, hi = sorted((int(part[i]), int(part[i + 1])))
        out[f"{names[lo]}/{names[hi]}"] += 1
    return out


def _apply_rules(check: SplitCheck, pairs: list[tuple[str, str]], has_test: bool) -> None:
    zero_shot = check.kind == "zero_shot"
    held_out = LEAK_RULES[check.kind]
    for a, b in pairs:
        key = f"{a}/{b}"
        test_pair = (not has_test) or "test" in (a, b)
        if check.shared["epochs"][key]:
            check.leaks.append(f"parts {a!r} and {b!r} share {check.shared['epochs'][key]} epoch(s)")
        n = check.shared["blocks"][key]
        if n and zero_shot and test_pair:
            check.notes.append(f"parts {a!r} and {b!r} share {n} block(s); allowed for a zero-shot split, since "
                               "no class is in both")
        elif n:
            check.leaks.append(f"parts {a!r} and {b!r} share {n} block(s) (whole blocks must stay in one part)")
        n_runs = check.shared.get("runs", {}).get(key, 0)
        if n_runs:
            check.notes.append(f"parts {a!r} and {b!r} hold blocks of {n_runs} common run(s): not a leak, but slow "
                               "drifts within a run are shared (hold out whole runs to exclude them)")
        n_adj = check.adjacent.get(key, 0)
        if n_adj and not (zero_shot and test_pair):
            check.leaks.append(f"parts {a!r} and {b!r} hold {n_adj} pair(s) of overlapping windows (same session, "
                               "markers closer than one window)")
        if test_pair:
            for what in held_out:
                if what == "blocks":
                    continue
                n = check.shared[what][key]
                if n:
                    check.leaks.append(f"parts {a!r} and {b!r} share {n} {what[:-1]}(s); a {check.kind} split "
                                       f"holds whole {what} out for test")


def _class_notes(check: SplitCheck, t: EpochTable, idx: dict[str, np.ndarray]) -> None:
    if check.kind == "zero_shot" or "train" not in idx:
        return
    train = set(np.unique(t.labels[idx["train"]]).tolist())
    for part, v in idx.items():
        if part == "train":
            continue
        missing = sorted(set(np.unique(t.labels[v]).tolist()) - train)
        if missing:
            names = [t.class_names[c] for c in missing[:5]]
            check.notes.append(f"{len(missing)} class(es) of {part!r} never appear in 'train' (e.g. {names})")
