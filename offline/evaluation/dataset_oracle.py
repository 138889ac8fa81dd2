"""The simulator's oracle for an epoch dataset built by ``epochs_from_simulation``.

A synthetic dataset records how it was simulated (``source["simulation"]``: seed,
SNR, classes, images per class), how its windows were cut (``attrs["window"]``:
offset, length) and preprocessed (``preprocessing``). That is enough to rebuild the
stimulus set and the simulator, hence the true expected window of every image, and
to score windows with :class:`offline.evaluation.oracle.EEGOracle` (matched filter, noise
covariance from the training windows). Anything else (real data, a stimulus set
that does not match the stored images) gives ``None``: no oracle.
"""

from __future__ import annotations

import numpy as np

from bci.preprocessing import PreprocessConfig
from offline.data.epochs import EpochDataset
from offline.data.fmri import patterns_from_images
from offline.evaluation.oracle import EEGOracle, FMRIOracle
from streams.synthetic import EEGSimConfig, EEGSimulator, StimulusSet, make_stimuli
from streams.synthetic.fmri import FMRISimConfig, FMRISimulator

__all__ = ["fmri_oracle_for_dataset", "oracle_for_dataset", "simulated_stimuli"]


def simulated_stimuli(ds: EpochDataset) -> StimulusSet | None:
    """The stimulus set of a synthetic dataset (its image table order and class numbering), or None."""
    sim = (ds.source or {}).get("simulation")
    if not isinstance(sim, dict) or ds.images is None or ds.image_table_ids is None:
        return None
    images = np.asarray(ds.images)
    full = make_stimuli(n_per_class=int(sim.get("n_images_per_class", 5)), size=int(images.shape[1]),
                        seed=int(sim.get("seed", 0)))
    where = {image_id: i for i, image_id in enumerate(full.image_ids)}
    if any(i not in where for i in ds.image_table_ids):
        return None
    keep = np.asarray([where[i] for i in ds.image_table_ids])
    names = [str(c) for c in ds.class_names]
    if any(full.class_names[int(full.class_ids[k])] not in names for k in keep):
        return None
    class_ids = np.asarray([names.index(full.class_names[int(full.class_ids[k])]) for k in keep], dtype=np.int64)
    subset = StimulusSet(images=full.images[keep], image_ids=[full.image_ids[k] for k in keep], class_ids=class_ids,
                         class_names=names, captions=[full.captions[k] for k in keep],
                         template_captions=[full.template_captions[k] for k in keep], features=full.features[keep])
    if not np.array_equal(subset.images, images):
        return None
    return subset


def oracle_for_dataset(ds: EpochDataset, train: np.ndarray) -> EEGOracle | None:
    """A fitted :class:`EEGOracle` for a dataset simulated by ``epochs_from_simulation`` (None otherwise).

    Parameters
    ----------
    ds : EpochDataset
        Synthetic EEG dataset.
    train : numpy.ndarray
        Training epoch indices (the noise covariance is estimated from them only).
    """
    sim = (ds.source or {}).get("simulation")
    if str(ds.modality) != "eeg" or not isinstance(sim, dict):
        return None
    stimuli = simulated_stimuli(ds)
    if stimuli is None:
        return None
    window = (ds.attrs or {}).get("window") or {}
    pre = ds.preprocessing
    preprocess = PreprocessConfig.from_dict(pre) if isinstance(pre, dict) else None
    simulator = EEGSimulator(stimuli, EEGSimConfig(snr=float(sim.get("snr", 1.0)), seed=int(sim.get("seed", 0))))
    if [str(c) for c in simulator.channel_names] != [str(c) for c in ds.ch_names]:
        return None
    oracle = EEGOracle.from_simulator(simulator, offset=float(window.get("offset", 0.020)),
                                      n_times=int(ds.data.shape[2]), preprocess=preprocess,
                                      ch_names=list(ds.ch_names))
    rows = ds.image_rows(train)
    return oracle.fit(ds.get_batch(train).astype(np.float64), rows)


def fmri_oracle_for_dataset(ds: EpochDataset, train: np.ndarray) -> FMRIOracle | None:
    """A fitted :class:`offline.evaluation.oracle.FMRIOracle` over the dataset's image table (None if not simulated here)."""
    sim_meta = (ds.source or {}).get("fmri_simulation")
    if not isinstance(sim_meta, dict) or ds.images is None:
        return None
    sim = FMRISimulator(FMRISimConfig(n_voxels=int(sim_meta["n_voxels"]), grid=int(sim_meta.get("grid", 10)),
                                      snr=float(sim_meta["snr"]), seed=int(sim_meta["seed"])))
    if [str(c) for c in sim.channel_names] != [str(c) for c in ds.ch_names]:
        return None
    oracle = FMRIOracle(sim, patterns_from_images(np.asarray(ds.images), sim.config.grid))
    x = ds.get_batch(train).astype(np.float64).mean(axis=2)
    return oracle.fit(x, ds.image_rows(train))
