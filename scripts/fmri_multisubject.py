"""Multi-subject vs single-subject fMRI models on the synthetic world (docs/results.md).

Usage: python scripts/fmri_multisubject.py {dual,pattern} N_TRAIN N_SUBJECTS [WORKDIR]
"""
import json
import sys
import time

import numpy as np

from offline.evaluation.evaluate import evaluate
from offline.data.fmri import FMRIDesign, FMRISubject, fmri_dataset_from_simulation
from offline.training.tasks.fmri_joint import FMRIJointOptions, train_fmri_joint
from offline.training.loop import TrainSettings

obj = sys.argv[1]; n_train = int(sys.argv[2]); n_sub = int(sys.argv[3])
root = sys.argv[4] if len(sys.argv) > 4 else "fmri-multisubject"
paths = [fmri_dataset_from_simulation(f"{root}/s{k}_{n_train}.zarr", FMRIDesign(n_train=n_train, block_size=20,
                                      val_blocks=1), FMRISubject(seed=k), overwrite=True) for k in range(n_sub)]
st = TrainSettings(epochs=80, batch_size=32, lr=3e-4, weight_decay=1e-2, patience=20, progress=False)
res = {"single": [], "multi": [], "ridge": [], "oracle": []}
t = time.time()
for k, p in enumerate(paths):
    out = f"{root}/single_{obj}_{n_train}_{k}"
    train_fmri_joint(p, out, options=FMRIJointOptions(objective=obj), settings=st, overwrite=True)
    r = evaluate(out, p, plots=False)
    res["single"].append(r["scores"]["model"]["image 12-way top-1"]["value"])
    res["ridge"].append(r["scores"]["ridge"]["image 12-way top-1"]["value"])
    res["oracle"].append(r["scores"]["oracle"]["image 12-way top-1"]["value"])
t1 = time.time()
out = f"{root}/multi_{obj}_{n_train}"
train_fmri_joint(paths, out, options=FMRIJointOptions(objective=obj), settings=st, overwrite=True)
for k, p in enumerate(paths):
    r = evaluate(f"{out}/subjects/sub-{k}", p, plots=False, oracle=False, baseline=False)
    res["multi"].append(r["scores"]["model"]["image 12-way top-1"]["value"])
res["seconds_single"] = round(t1 - t, 1); res["seconds_multi"] = round(time.time() - t1, 1)
print(obj, n_train, json.dumps({k: (np.round(v, 3).tolist() if isinstance(v, list) else v) for k, v in res.items()}))
print(obj, n_train, {k: round(float(np.mean(v)), 3) for k, v in res.items() if isinstance(v, list)})
