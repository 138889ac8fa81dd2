"""Importers of public EEG/fMRI formats into Zarr sessions and epoch datasets.

* :func:`import_raw`: FIF, EDF/BDF, BrainVision, ... -> Zarr session (EEG stream + markers);
* :func:`import_bids`: one BIDS EEG recording (mne-bids) -> Zarr session (exact for ``bci export bids``);
* :func:`import_xdf`: XDF (LabRecorder) -> Zarr session (every stream, clock-corrected);
* :func:`import_eeg_imagenet`: EEG-ImageNet ``.pth`` (+ splits) -> epoch dataset;
* :func:`import_things_eeg2`: THINGS-EEG2 preprocessed ``.npy`` -> epoch dataset (zero-shot split);
* :func:`import_fmri`: voxel matrix + stimulus table -> epoch dataset (modality ``fmri``);
* :func:`load_image_folder`: images named by a dataset, from a local folder.

Errors a user can fix are :class:`ImportFormatError` (a ``ValueError``) naming the
file and the key or shape, :class:`UnsafeFileError` for files that would need
unpickling, ``FileNotFoundError`` and ``FileExistsError``. See ``docs/data.md``.
"""

from offline.importers.bids import BidsImportOptions, import_bids
from offline.importers._checks import ImportFormatError, UnsafeFileError, load_event_map, parse_time_slice
from offline.importers.eeg_imagenet import import_eeg_imagenet, read_eeg_imagenet, read_published_splits
from offline.importers.fmri import import_fmri, read_fmri
from offline.importers.images import ImageReport, load_image_folder
from offline.importers.raw import import_raw
from offline.importers.things_eeg2 import import_things_eeg2, read_things_file
from offline.importers.xdf import import_xdf

__all__ = [
    "BidsImportOptions",
    "ImageReport",
    "ImportFormatError",
    "UnsafeFileError",
    "import_bids",
    "import_eeg_imagenet",
    "import_fmri",
    "import_raw",
    "import_things_eeg2",
    "import_xdf",
    "load_event_map",
    "load_image_folder",
    "parse_time_slice",
    "read_eeg_imagenet",
    "read_fmri",
    "read_published_splits",
    "read_things_file",
]
