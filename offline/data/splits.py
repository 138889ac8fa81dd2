"""Train/val/test splits of epoch datasets that never leak, and a checker for any split.

Why: in a block design (every block shows one class, as in EEG-ImageNet) windows of one
block share slow drifts, so a split that puts windows of one block in both train and
test lets a classifier recognise the *block* rather than the image (Li et al. 2021).
Every builder here therefore assigns **whole blocks** (or whole sessions, subjects or
classes) to a part:

==================  ===============================================  ==================================
builder             test part                                        val part
==================  ===============================================  ==================================
``block_split``     whole blocks, stratified by class                whole blocks
``session_split``   whole sessions (subject, session)                whole blocks of the other sessions
``subject_split``   whole subjects                                   whole blocks (or subjects)
``zero_shot_split`` every epoch of the held-out classes              whole blocks of the seen classes
==================  ===============================================  ==================================

A block is identified by ``(subject, session, block)``, a run by ``(subject, session,
run)``, a session by ``(subject, session)``. Fractions are fractions of those units,
not of epochs.

:func:`analyse_split` finds, for every pair of parts: shared epochs, blocks, runs,
sessions, subjects and classes, and windows of one session whose markers are closer
than one window length (their data overlap). Shared epochs, blocks and overlapping
windows always leak; shared runs are reported but allowed (blocks of one run may go to
different parts). What counts as a leak depends on the
split's kind (see :data:`LEAK_RULES`); :meth:`offline.data.epochs.EpochDataset.add_split`
refuses a leaking split. :func:`check_splits` reports on the stored splits and warns
about the block-design confound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from offline.data.epochs import EpochDataset
from offline.data.leaks import LEAK_RULES, SplitCheck, _table, _unit_codes, analyse_split
from offline.data.table import EpochTable, SplitInfo
from streams._checks import check_float, check_int

__all__ = [
    "LEAK_RULES",
    "SplitInfo",
    "SplitCheck",
    "SplitReport",
    "analyse_split",
    "block_design",
    "block_split",
    "check_splits",
    "prepare_split",
    "session_split",
    "subject_split",
    "zero_shot_split",
]

#: A dataset is reported as a block design when at least this fraction of its blocks
#: (those with two epochs or more) holds a single class.
BLOCK_DESIGN_FRACTION = 0.9

_LI_2021 = ("Li et al. 2021, 'The perils and pitfalls of block design for EEG classification experiments', "
            "IEEE TPAMI 43(1)")


# --------------------------------------------------------------------------- design
def block_design(ds: EpochDataset | EpochTable) -> dict[str, Any]:
    """How block-designed the recording is.

    Returns
    -------
    dict
        ``n_blocks``; ``n_multi`` (blocks with >= 2 epochs); ``n_single_class`` (of
        those, blocks holding one class); ``fraction_single_class``;
        ``classes_in_one_block`` (classes whose epochs all lie in a single block);
        ``block_design`` (True when ``fraction_single_class >= BLOCK_DESIGN_FRACTION``).
    """
    t = _table(ds)
    blocks = _unit_codes(t)["blocks"]
    n_blocks = int(blocks.max() + 1) if len(blocks) else 0
    sizes = np.bincount(blocks, minlength=n_blocks)
    pairs = np.unique(np.stack([blocks, t.labels], axis=1), axis=0) if len(blocks) else np.zeros((0, 2), int)
    classes_per_block = np.bincount(pairs[:, 0], minlength=n_blocks)
    multi = sizes >= 2
    single = int(np.sum(multi & (classes_per_block == 1)))
    blocks_per_class = np.bincount(pairs[:, 1], minlength=len(t.class_names))
    n_multi = int(multi.sum())
    fraction = single / n_multi if n_multi else 0.0
    return {
        "n_blocks": n_blocks,
        "n_multi": n_multi,
        "n_single_class": single,
        "fraction_single_class": fraction,
        "classes_in_one_block": int(np.sum(blocks_per_class == 1)),
        "block_design": bool(n_multi >= 2 and fraction >= BLOCK_DESIGN_FRACTION),
    }


def _design_warnings(design: dict[str, Any], n_classes: int) -> list[str]:
    out = []
    if design["block_design"]:
        out.append(
            f"block design: {design['n_single_class']} of {design['n_multi']} blocks show a single class. A "
            "classifier can then decode slow drifts or block identity (time in session, impedances, fatigue) "
            "instead of the images: within-block splits of EEG-ImageNet reported ~83% that fell to near chance "
            f"with a rapid, interleaved design ({_LI_2021}). Splits here never share a block, which removes "
            "within-block leakage, but block-level drifts can still correlate with class: compare with a "
            "rapid-design recording or a session split, and report chance and a label-shuffled control."
        )
    if design["classes_in_one_block"]:
        out.append(
            f"{design['classes_in_one_block']} of {n_classes} classes have all their epochs in a single block: "
            "a block split cannot put them in both train and test (they stay in train)."
        )
    return out


@dataclass
class SplitReport:
    """Leak report of a dataset's splits (``str()`` for people, ``to_dict()`` for JSON).

    Attributes
    ----------
    path : str
    summary : dict
        Epochs, classes, subjects, sessions, blocks and the :func:`block_design` figures.
    warnings : list of str
        Dataset-level warnings (block-design confound, single-block classes).
    splits : list of SplitCheck
    """

    path: str
    summary: dict[str, Any]
    warnings: list[str]
    splits: list[SplitCheck]

    @property
    def leaking(self) -> bool:
        """True when any checked split leaks."""
        return any(s.leaking for s in self.splits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy."""
        return {"path": self.path, "summary": dict(self.summary), "warnings": list(self.warnings),
                "leaking": self.leaking, "splits": [s.to_dict() for s in self.splits]}

    def __str__(self) -> str:
        s = self.summary
        lines = [
            f"dataset {self.path}",
            f"  {s['n_epochs']} epochs, {s['n_classes']} classes, {s['n_subjects']} subject(s), "
            f"{s['n_sessions']} session(s), {s['n_blocks']} block(s)",
            f"  blocks holding a single class: {s['n_single_class']} of {s['n_multi']} with >= 2 epochs"
            + (" -> block design" if s["block_design"] else ""),
        ]
        lines += [f"WARNING: {w}" for w in self.warnings]
        if self.splits:
            lines.append("(per split, 'shared' counts what a pair of parts has in common; only LEAK lines are "
                         "problems)")
        if not self.splits:
            lines.append("no splits stored (add one with offline.data.splits + EpochDataset.add_split)")
        for check in self.splits:
            lines.append(str(check))
        n_leak = sum(c.leaking for c in self.splits)
        lines.append(f"result: {n_leak} of {len(self.splits)} split(s) leak" if self.splits
                     else "result: nothing to check")
        return "\n".join(lines)


def check_splits(ds: EpochDataset, split_name: str | None = None) -> SplitReport:
    """Check the stored splits of ``ds`` (all, or ``split_name``) for leaks and the design confound.

    Raises
    ------
    KeyError
        ``split_name`` is not stored (the message lists the stored ones).
    """
    if not isinstance(ds, EpochDataset):
        raise TypeError(f"check_splits needs an EpochDataset (EpochDataset.open(path)), got {type(ds).__name__}")
    t = ds.table
    units = _unit_codes(t)
    design = block_design(t)
    summary = {
        "n_epochs": t.n_epochs,
        "n_classes": int(len(np.unique(t.labels))),
        "n_subjects": int(units["subjects"].max() + 1),
        "n_sessions": int(units["sessions"].max() + 1),
        **design,
    }
    names = [split_name] if split_name is not None else sorted(ds.splits)
    checks = []
    for name in names:
        info = ds.split_info(name)
        check = analyse_split(t, info.parts, kind=info.kind, name=name)
        check.stored_as_leaking = info.leaking
        checks.append(check)
    return SplitReport(path=str(ds.path), summary=summary, warnings=_design_warnings(design, len(t.class_names)),
                       splits=checks)


# --------------------------------------------------------------------------- builders
def _check_fraction(name: str, value: float) -> float:
    if not 0 <= check_float(name, value) < 1:
        raise ValueError(f"{name}={value!r} must be a fraction in [0, 1)")
    return float(value)


def _check_seed(seed: int) -> np.random.Generator:
    return np.random.default_rng([check_int("seed", seed, low=0), 0x5B17])


def _largest_remainder(ideal: np.ndarray, cap: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts near ``ideal`` summing to ``total`` (at most), each within ``cap``."""
    base = np.minimum(np.floor(ideal).astype(np.int64), cap)
    left = total - int(base.sum())
    tiebreak = rng.random(len(ideal))
    while left > 0:
        room = np.flatnonzero(base < cap)
        if not len(room):
            break
        frac = (ideal - base)[room]
        order = room[np.lexsort((tiebreak[room], -frac))]
        for s in order[:left]:
            base[s] += 1
        left = total - int(base.sum())
    return base


def _allocate(strata: np.ndarray, fractions: Sequence[tuple[str, float]], rng: np.random.Generator,
              what: str) -> np.ndarray:
    """Part name of each unit; every stratum keeps at least one unit in 'train'.

    A part other than ``test`` that gets no unit (no stratum has one to spare) stays empty.
    """
    labels, stratum = np.unique(strata, return_inverse=True)
    k = np.bincount(stratum, minlength=len(labels))
    room = k - 1
    out = np.full(len(strata), "train", dtype=object)
    taken = np.zeros(len(labels), dtype=np.int64)
    order = [rng.permutation(np.flatnonzero(stratum == s)) for s in range(len(labels))]
    for part, f in fractions:
        if f <= 0:
            continue
        ideal = k * f
        total = max(1, int(round(ideal.sum())))
        counts = _largest_remainder(ideal, room - taken, total, rng)
        if counts.sum() == 0 and part == "test":
            raise ValueError(
                f"cannot hold out any {what} for {part!r}: every stratum has a single {what} "
                f"({len(strata)} {what}s in {len(labels)} strata). Record more {what}s (e.g. several blocks per "
                "class), or use another split kind (zero_shot_split holds out whole classes)"
            )
        for s in range(len(labels)):
            chosen = order[s][taken[s]:taken[s] + counts[s]]
            out[chosen] = part
        taken += counts
    return out


def _pure_blocks(blocks: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block code present: dominant label and whether the block holds one class."""
    uniq = np.unique(blocks)
    dominant = np.empty(len(uniq), dtype=np.int64)
    pure = np.empty(len(uniq), dtype=bool)
    for i, b in enumerate(uniq):
        lab = labels[blocks == b]
        counts = np.bincount(lab)
        dominant[i] = int(np.argmax(counts))
        pure[i] = np.count_nonzero(counts) == 1
    return dominant, pure


def _block_parts(t: EpochTable, idx: np.ndarray, fractions: Sequence[tuple[str, float]],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Whole blocks of epochs ``idx`` to parts, stratified by class when blocks are single-class."""
    blocks = _unit_codes(t)["blocks"][idx]
    uniq = np.unique(blocks)
    if len(uniq) < 2 and any(f > 0 for _, f in fractions):
        raise ValueError(f"only {len(uniq)} block(s) among these {len(idx)} epochs: a block split needs at least "
                         "2 blocks (record several blocks, or give block numbers per epoch)")
    dominant, pure = _pure_blocks(blocks, t.labels[idx])
    strata = dominant if pure.mean() >= 0.5 else np.zeros(len(uniq), dtype=np.int64)
    assign = _allocate(strata, fractions, rng, "block")
    part_of_block = dict(zip(uniq.tolist(), assign.tolist()))
    part_of_epoch = np.array([part_of_block[b] for b in blocks.tolist()], dtype=object)
    names = ["train", *(p for p, _ in fractions)]
    return {p: np.sort(idx[part_of_epoch == p]) for p in names}


def block_split(ds: EpochDataset | EpochTable, *, val: float = 0.1, test: float = 0.2, seed: int = 0,
                indices: Any | None = None) -> dict[str, np.ndarray]:
    """Whole blocks to train/val/test, stratified by class.

    Parameters
    ----------
    ds : EpochDataset or EpochTable
    val, test : float
        Fractions of *blocks* (per class, when blocks hold a single class) for val and test;
        counts are rounded with the largest-remainder rule, at least one block each when
        the fraction is > 0, and every class keeps at least one block in train.
    seed : int
    indices : array-like of int, optional
        Split only these epochs.

    Returns
    -------
    dict
        ``{"train": idx, "val": idx, "test": idx}`` (sorted int64; ``val`` may be empty).

    Raises
    ------
    ValueError
        Fewer than 2 blocks, or no block can be held out (every class has one block).
    """
    t = _table(ds)
    rng = _check_seed(seed)
    fr = [("test", _check_fraction("test", test)), ("val", _check_fraction("val", val))]
    if fr[0][1] + fr[1][1] >= 1:
        raise ValueError(f"val={val!r} + test={test!r} must leave blocks for train (sum < 1)")
    idx = np.arange(t.n_epochs) if indices is None else np.unique(np.asarray(indices, dtype=np.int64))
    parts = _block_parts(t, idx, fr, rng)
    return {"train": parts["train"], "val": parts["val"], "test": parts["test"]}


def _held_out_units(codes: np.ndarray, strata: np.ndarray | None, chosen: Any | None, test: float,
                    rng: np.random.Generator, what: str) -> np.ndarray:
    """Boolean per epoch: in a held-out unit (given explicitly or allocated)."""
    uniq = np.unique(codes)
    if len(uniq) < 2:
        raise ValueError(f"only {len(uniq)} {what} in the dataset: a {what} split needs at least 2")
    if chosen is not None:
        return np.isin(codes, np.asarray(chosen, dtype=np.int64))
    unit_strata = np.zeros(len(uniq), dtype=np.int64) if strata is None else np.array(
        [strata[codes == u][0] for u in uniq])
    assign = _allocate(unit_strata, [("test", test)], rng, what)
    return np.isin(codes, uniq[assign == "test"])


def session_split(ds: EpochDataset | EpochTable, *, test: float = 0.25, val: float = 0.1, seed: int = 0,
                  test_sessions: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Whole sessions to test; val from whole blocks of the remaining sessions.

    Parameters
    ----------
    ds : EpochDataset or EpochTable
    test : float
        Fraction of sessions (``(subject, session)`` pairs, per subject) for test.
    val : float
        Fraction of the remaining blocks for val.
    seed : int
    test_sessions : sequence of int, optional
        Session codes to hold out (for every subject), instead of ``test``.

    Returns
    -------
    dict
        ``{"train", "val", "test"}`` sorted epoch indices.
    """
    t = _table(ds)
    rng = _check_seed(seed)
    test, val = _check_fraction("test", test), _check_fraction("val", val)
    units = _unit_codes(t)
    if test_sessions is not None:
        held = np.isin(t.session, np.asarray(test_sessions, dtype=np.int64))
        if held.all() or not held.any():
            raise ValueError(f"test_sessions={list(test_sessions)!r} must hold out some but not all sessions "
                             f"(codes present: {np.unique(t.session).tolist()})")
    else:
        held = _held_out_units(units["sessions"], units["subjects"], None, test, rng, "session")
    return _with_block_val(t, held, val, rng)


def subject_split(ds: EpochDataset | EpochTable, *, test: float = 0.2, val: float = 0.1, seed: int = 0,
                  test_subjects: Sequence[int] | None = None, val_unit: str = "block") -> dict[str, np.ndarray]:
    """Whole subjects to test (cross-subject); val from blocks (or whole subjects) of the rest.

    Parameters
    ----------
    ds : EpochDataset or EpochTable
    test : float
        Fraction of subjects for test.
    val : float
        Fraction of the remaining blocks (``val_unit="block"``) or subjects (``"subject"``).
    seed : int
    test_subjects : sequence of int, optional
        Subject codes to hold out, instead of ``test``.
    val_unit : {'block', 'subject'}

    Returns
    -------
    dict
        ``{"train", "val", "test"}`` sorted epoch indices.
    """
    t = _table(ds)
    rng = _check_seed(seed)
    test, val = _check_fraction("test", test), _check_fraction("val", val)
    if val_unit not in ("block", "subject"):
        raise ValueError(f"val_unit={val_unit!r}: choose 'block' or 'subject'")
    subjects = _unit_codes(t)["subjects"]
    chosen = None
    if test_subjects is not None:
        wanted = np.asarray(test_subjects, dtype=np.int64)
        chosen = np.unique(subjects[np.isin(t.subject, wanted)])
        if not len(chosen) or len(chosen) == len(np.unique(subjects)):
            raise ValueError(f"test_subjects={list(test_subjects)!r} must hold out some but not all subjects "
                             f"(codes present: {np.unique(t.subject).tolist()})")
    held = _held_out_units(subjects, None, chosen, test, rng, "subject")
    if val_unit == "block" or val == 0:
        return _with_block_val(t, held, val, rng)
    rest = np.flatnonzero(~held)
    val_mask = _held_out_units(subjects[rest], None, None, val, rng, "subject")
    return {"train": np.sort(rest[~val_mask]), "val": np.sort(rest[val_mask]), "test": np.flatnonzero(held)}


def _with_block_val(t: EpochTable, held: np.ndarray, val: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rest = np.flatnonzero(~held)
    if val > 0:
        parts = _block_parts(t, rest, [("val", val)], rng)
    else:
        parts = {"train": rest, "val": np.zeros(0, dtype=np.int64)}
    return {"train": parts["train"], "val": parts["val"], "test": np.flatnonzero(held)}


def zero_shot_split(ds: EpochDataset | EpochTable, *, held_out_classes: Sequence[str | int] | None = None,
                    n_held_out: int | None = None, val: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """Every epoch of the held-out classes to test; train/val from whole blocks of the others.

    Parameters
    ----------
    ds : EpochDataset or EpochTable
    held_out_classes : sequence of str or int, optional
        Class names or indices to hold out.
    n_held_out : int, optional
        Otherwise hold out this many classes drawn with ``seed`` (default: 20% of the
        classes present, at least one).
    val : float
        Fraction of the seen classes' blocks for val.
    seed : int

    Returns
    -------
    dict
        ``{"train", "val", "test"}``; no held-out class appears in train or val.
    """
    t = _table(ds)
    rng = _check_seed(seed)
    val = _check_fraction("val", val)
    present = np.unique(t.labels)
    held = _held_out_classes(t, present, held_out_classes, n_held_out, rng)
    test_mask = np.isin(t.labels, held)
    rest = np.flatnonzero(~test_mask)
    if val > 0:
        parts = _block_parts(t, rest, [("val", val)], rng)
    else:
        parts = {"train": rest, "val": np.zeros(0, dtype=np.int64)}
    return {"train": parts["train"], "val": parts["val"], "test": np.flatnonzero(test_mask)}


def _held_out_classes(t: EpochTable, present: np.ndarray, names: Sequence[str | int] | None, n: int | None,
                      rng: np.random.Generator) -> np.ndarray:
    if names is not None:
        if isinstance(names, (str, bytes)):
            raise TypeError(f"held_out_classes={names!r} must be a list of class names or indices")
        out = []
        for c in names:
            if isinstance(c, str):
                if c not in t.class_names:
                    raise ValueError(f"held_out_classes: {c!r} is not a class name (e.g. {t.class_names[:3]})")
                out.append(t.class_names.index(c))
            elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < len(t.class_names):
                out.append(int(c))
            else:
                raise ValueError(f"held_out_classes: {c!r} is neither a class name nor an index "
                                 f"0..{len(t.class_names) - 1}")
        held = np.unique(out)
        absent = [t.class_names[c] for c in held if c not in present]
        if absent:
            raise ValueError(f"held_out_classes {absent} have no epochs in this dataset")
    else:
        if n is None:
            n = max(1, int(round(0.2 * len(present))))
        n = check_int("n_held_out", n, low=1)
        if n >= len(present):
            raise ValueError(f"n_held_out={n} must leave classes to train on ({len(present)} classes present)")
        held = np.sort(rng.choice(present, size=int(n), replace=False))
    if len(held) >= len(present):
        raise ValueError("holding out every class leaves nothing to train on; hold out fewer classes")
    return held


# --------------------------------------------------------------------------- for training and evaluation
def prepare_split(dataset: EpochDataset, name: str | None = None, *, check_leaks: bool = True) -> SplitInfo:
    """Pick a stored split, check it for leaks and describe it.

    Parameters
    ----------
    dataset : EpochDataset
        An open epoch dataset.
    name : str or None
        Split name; None takes ``"block"`` when stored, else the only split.
    check_leaks : bool
        Refuse (``ValueError``) a split stored as leaking (``allow_leak=True``) or that
        ``offline.data.splits.check_splits`` reports as leaking (windows of one block, run or
        session in two parts, overlapping windows, ...).

    Returns
    -------
    SplitInfo
    """
    splits = dict(dataset.splits)
    if name is None:
        if not splits:
            raise ValueError(
                f"dataset {_ds_path(dataset)} stores no split; add one (offline.data.splits, e.g. block_split) "
                "or pass --split"
            )
        name = "block" if "block" in splits else sorted(splits)[0] if len(splits) == 1 else None
        if name is None:
            raise ValueError(f"dataset {_ds_path(dataset)} stores several splits {sorted(splits)}; choose one with --split")
    if not isinstance(name, str) or name not in splits:
        raise ValueError(f"dataset {_ds_path(dataset)} has no split {name!r}; stored splits are {sorted(splits)}")
    parts = {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in dataset.split(name).items()}
    for key in ("train", "val"):
        if len(parts.get(key, ())) == 0:
            raise ValueError(f"split {name!r} of {_ds_path(dataset)} has an empty {key!r} part; it needs train and val")
    parts.setdefault("test", np.zeros(0, np.int64))
    stored = dataset.split_info(name)
    kind, digest, leaks = str(stored.kind), str(stored.sha256), list(stored.leaks)
    if check_leaks:
        if leaks:
            raise ValueError(_leak_message(dataset, name, leaks))
        _refuse_leaks(dataset, name)
    return SplitInfo(name=name, kind=kind, parts=parts, sha256=digest, leaks=leaks,
                     dataset_fingerprint=str(dataset.fingerprint()))


def _leak_message(dataset: EpochDataset, name: str, leaks: Sequence[str]) -> str:
    return (f"split {name!r} of {_ds_path(dataset)} leaks: {'; '.join(str(x) for x in leaks)}. Training on it "
            "would inflate the scores; rebuild the split by block/run/session/class (offline.data.splits)")


def _refuse_leaks(dataset: EpochDataset, name: str) -> None:
    if not isinstance(dataset, EpochDataset):
        return
    report = check_splits(dataset, name)
    problems = [str(p) for check in report.splits if check.name == name for p in check.leaks]
    if problems:
        raise ValueError(_leak_message(dataset, name, problems))


def _ds_path(dataset: EpochDataset) -> str:
    return str(dataset.path)
