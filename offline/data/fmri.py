"""fMRI epoch datasets from the synthetic fMRI world (Miyawaki-style, SPEC §4–5).

:func:`fmri_dataset_from_simulation` simulates one block-design session of the
:class:`streams.synthetic.FMRISimulator` (967 voxels, TR 2 s, 10×10 binary patterns)
and writes an epoch dataset (``offline.data.epochs.write_epoch_dataset``):

* **training trials**: ``n_train`` random patterns, each shown once, in blocks of
  ``block_size`` trials (Miyawaki et al. trained on random patterns);
* **test trials**: 12 patterns never used in training — the 9 geometric ones (square
  frames, plus, X, letters N E U R O) and 3 further random patterns — each shown
  ``test_repeats`` times, one repeat per test block (shuffled order);
* each trial: pattern on for ``stim_trs`` TRs, rest for ``rest_trs``; the epoch is
  ``n_times`` volumes from ``offset`` seconds after onset (the HRF delay), raw
  volume units, ``(n_voxels, n_times)``;
* the image table holds the patterns drawn as ``(10·scale)²`` RGB images (white
  cells on black), with captions; classes are ``"random pattern"`` and the names of
  the geometric patterns;
* splits: ``"block"`` (kind ``custom``): train = training blocks except ``val_blocks``
  of them, val = those, test = the test blocks (new images: image-level retrieval
  among the 12 test patterns).

``source["fmri_simulation"]`` records everything needed to rebuild the simulator and
its oracle (:func:`offline.evaluation.dataset_oracle.fmri_oracle_for_dataset`; the builder
computes no oracle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from offline.data.epochs import EpochArrays, EpochDataset, EpochMetadata, ImageTable, write_epoch_dataset
from streams._checks import check_float, check_int, check_type
from streams.synthetic.fmri import FMRISimConfig, FMRISimulator
from streams.synthetic.stimuli import geometric_patterns, pattern_images, template_caption

__all__ = ["GEOMETRIC_NAMES", "FMRIDesign", "FMRIEpochs", "FMRISubject", "fmri_dataset_from_simulation",
           "pattern_images", "patterns_from_images"]

GEOMETRIC_NAMES = ("large square frame", "small square frame", "plus", "X", "letter N", "letter E", "letter U",
                   "letter R", "letter O")


def patterns_from_images(images: np.ndarray, grid: int = 10) -> np.ndarray:
    """Inverse of :func:`pattern_images`: cell means > 127 → 1, ``(n, grid, grid)`` float."""
    x = np.asarray(images, dtype=np.float64).mean(axis=3)
    n, h, w = x.shape
    s = h // grid
    cells = x[:, : s * grid, : s * grid].reshape(n, grid, s, grid, s).mean(axis=(2, 4))
    return (cells > 127).astype(np.float64)


@dataclass(frozen=True)
class FMRIDesign:
    """The experiment: the patterns shown and their block schedule.

    Attributes
    ----------
    n_train : int
        Random training patterns (one trial each), >= 4.
    block_size : int
        Training trials per block.
    val_blocks : int
        Training blocks used for validation (fewer than the training blocks).
    test_repeats : int
        Presentations of each of the 12 test patterns (one per test block).
    stim_trs, rest_trs : int
        Trial timing in TRs: pattern on, then rest.
    grid : int
        Pattern side: 10 (Miyawaki, default) or e.g. 28 for digit-sized stimuli (>= 5).
    """

    n_train: int = 400
    block_size: int = 20
    val_blocks: int = 2
    test_repeats: int = 6
    stim_trs: int = 3
    rest_trs: int = 3
    grid: int = 10

    def __post_init__(self) -> None:
        n_train = check_int("n_train", self.n_train, low=4)
        block_size = check_int("block_size", self.block_size, low=1)
        val_blocks = check_int("val_blocks", self.val_blocks, low=1)
        check_int("test_repeats", self.test_repeats, low=1)
        check_int("stim_trs", self.stim_trs, low=1)
        check_int("rest_trs", self.rest_trs, low=0)
        check_int("grid", self.grid, low=5)
        n_train_blocks = -(-n_train // block_size)
        if val_blocks >= n_train_blocks:
            raise ValueError(f"val_blocks={val_blocks} must leave training blocks (n_train={n_train} makes "
                             f"{n_train_blocks} blocks of {block_size})")


@dataclass(frozen=True)
class FMRISubject:
    """The simulated subject and recording (``streams.synthetic.FMRISimConfig``).

    Attributes
    ----------
    snr : float
        Simulator SNR (``FMRISimConfig.snr``), >= 0.
    seed : int
        Seeds the receptive fields (the subject), the noise, the patterns and their order.
    n_voxels : int
    """

    snr: float = 1.0
    seed: int = 0
    n_voxels: int = 967

    def __post_init__(self) -> None:
        check_float("snr", self.snr, low=0)
        check_int("seed", self.seed)
        check_int("n_voxels", self.n_voxels, low=1)


@dataclass(frozen=True)
class FMRIEpochs:
    """How the epochs are cut from the volumes, and how the patterns are drawn in the image table.

    Attributes
    ----------
    offset : float
        Seconds from onset to the first volume of the epoch (the HRF delay).
    n_times : int
        Volumes per epoch.
    image_scale : int
        Pixels per pattern cell in the image table.
    """

    offset: float = 6.0
    n_times: int = 2
    image_scale: int = 6

    def __post_init__(self) -> None:
        check_float("offset", self.offset)
        check_int("n_times", self.n_times, low=1)
        check_int("image_scale", self.image_scale, low=1)


def fmri_dataset_from_simulation(out: str | os.PathLike, design: FMRIDesign | None = None,
                                 subject: FMRISubject | None = None, epochs: FMRIEpochs | None = None, *,
                                 overwrite: bool = False) -> Path:
    """Simulate a Miyawaki-style fMRI session and write its epoch dataset (see the module docstring).

    Parameters
    ----------
    out : path
        Dataset to create.
    design : FMRIDesign, optional
        Patterns and schedule (default ``FMRIDesign()``: 400 training patterns in blocks of 20,
        2 validation blocks, 12 test patterns shown 6 times, 3 TRs on, 3 TRs off, 10x10 grid).
    subject : FMRISubject, optional
        SNR, seed and voxels of the simulated subject (default ``FMRISubject()``).
    epochs : FMRIEpochs, optional
        Epoch offset and length, image scale (default ``FMRIEpochs()``: 2 volumes from 6 s).
    overwrite : bool

    Returns
    -------
    Path
        The dataset.
    """
    design = check_type("design", design if design is not None else FMRIDesign(), FMRIDesign)
    subject = check_type("subject", subject if subject is not None else FMRISubject(), FMRISubject)
    epochs = check_type("epochs", epochs if epochs is not None else FMRIEpochs(), FMRIEpochs)
    n_train, block_size, val_blocks = int(design.n_train), int(design.block_size), int(design.val_blocks)
    test_repeats, stim_trs, rest_trs, grid = (int(design.test_repeats), design.stim_trs, design.rest_trs,
                                              int(design.grid))
    snr, seed, n_voxels = subject.snr, subject.seed, subject.n_voxels
    offset, n_times, image_scale = epochs.offset, int(epochs.n_times), epochs.image_scale
    rng = np.random.default_rng([int(seed), 0xF3A1])
    config = FMRISimConfig(n_voxels=int(n_voxels), grid=grid, snr=float(snr), seed=int(seed))
    sim = FMRISimulator(config)
    g = config.grid
    train_p = (rng.random((n_train, g, g)) < 0.5).astype(np.uint8)
    test_p = np.concatenate([np.stack(geometric_patterns(g)), (rng.random((3, g, g)) < 0.5).astype(np.uint8)])
    patterns = np.concatenate([train_p, test_p])
    image_ids = [f"pat{i:04d}" for i in range(len(patterns))]
    names = ["random pattern", *GEOMETRIC_NAMES]
    image_class = np.concatenate([np.zeros(n_train, np.int64), np.arange(1, 10), np.zeros(3, np.int64)])
    order, blocks = _trial_order(n_train, block_size, len(test_p), test_repeats, rng)
    volumes, _, events = sim.generate(patterns[order].astype(float), stim_duration_trs=stim_trs, rest_trs=rest_trs,
                                      lead_trs=2)
    first = int(round(offset / config.tr))
    starts = np.asarray([int(round(onset / config.tr)) + first for onset, _ in events])
    if starts.max() + n_times > len(volumes):
        raise ValueError(f"offset={offset} s and n_times={n_times} reach past the session; lower them")
    data = np.stack([volumes[s : s + n_times].T for s in starts]).astype(np.float32)
    test_blocks = np.unique(blocks[order >= n_train])
    train_blocks = np.setdiff1d(np.unique(blocks), test_blocks)
    val_b = rng.choice(train_blocks, size=val_blocks, replace=False)
    is_test = np.isin(blocks, test_blocks)
    parts = {"train": np.flatnonzero(~is_test & ~np.isin(blocks, val_b)), "val": np.flatnonzero(np.isin(blocks, val_b)),
             "test": np.flatnonzero(is_test)}
    captions = [f"a binary pattern: {names[c]}" if c else "a random binary pattern" for c in image_class]
    source = {"builder": "offline.data.fmri.fmri_dataset_from_simulation", "synthetic": True,
              "fmri_simulation": {"n_train": n_train, "block_size": block_size, "val_blocks": val_blocks,
                                  "test_repeats": test_repeats, "snr": float(snr), "seed": int(seed),
                                  "n_voxels": int(n_voxels), "stim_trs": stim_trs, "rest_trs": rest_trs,
                                  "offset": float(offset), "n_times": n_times, "tr": config.tr,
                                  "image_scale": image_scale, "grid": grid}}
    path = write_epoch_dataset(
        out,
        EpochArrays(data, labels=image_class[order], image_ids=[image_ids[i] for i in order],
                    subject=np.zeros(len(order), np.int64), session=np.zeros(len(order), np.int64), block=blocks,
                    marker_time=np.asarray([onset for onset, _ in events])),
        EpochMetadata(
            sfreq=1.0 / config.tr, ch_names=sim.channel_names, ch_types=["fmri"] * sim.n_voxels, class_names=names,
            source=source, modality="fmri",
            # how the epochs were cut, so a model trained on them decodes live windows cut the same way
            # (bci.runtime.assemble.trained_offset): volumes from onset + offset, as the runtime's fMRI windows
            attrs={"window": {"offset": float(offset), "n_times": n_times, "input_sfreq": 1.0 / config.tr,
                              "marker_filter": None,
                              "code_path": "offline.data.fmri (simulator volumes at onset + offset)"}},
        ),
        images=ImageTable(pattern_images(patterns, image_scale), image_ids, captions,
                          [template_caption(names[c], article="a") for c in image_class]),
        overwrite=overwrite,
    )
    EpochDataset.open(path).add_split("block", parts, kind="custom",
                                      meta={"builder": "offline.data.fmri", "test": "12 new patterns"})
    return Path(path)


def _trial_order(n_train: int, block_size: int, n_test: int, repeats: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pattern index and block of every trial: training blocks and test blocks interleaved."""
    train = rng.permutation(n_train)
    chunks = [train[i : i + block_size] for i in range(0, n_train, block_size)]
    tests = [n_train + rng.permutation(n_test) for _ in range(repeats)]
    slots = np.linspace(0, len(chunks), num=repeats, endpoint=False).round().astype(int)
    sequence: list[np.ndarray] = []
    for i, chunk in enumerate(chunks):
        sequence += [tests[k] for k in np.flatnonzero(slots == i)]
        sequence.append(chunk)
    order = np.concatenate(sequence)
    blocks = np.concatenate([np.full(len(s), b, np.int64) for b, s in enumerate(sequence)])
    return order, blocks
