"""One BIDS EEG recording -> a Zarr session (``mne_bids.read_raw_bids``).

* Any BIDS dataset: the recording (data + ``events.tsv`` as annotations) goes through the raw
  importer (:func:`offline.importers.raw.raw_to_session`): one EEG stream, one marker stream,
  optional event map to ``stim/<image_id>/<label>`` markers.
* A recording written by ``bci export bids`` (its ``sourcedata/bci/..._lsl.json`` exists): the
  original session comes back exactly: stream descriptions, keys and attributes, the LSL timestamp
  of every sample, the gaps, every marker string and time (also those outside the data's span) and
  the decoded-results stream. The samples themselves are read from the BIDS data file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offline.exporters.bids import LSL_FORMAT, LSL_FORMAT_VERSION, bids_path, check_label, lsl_paths
from offline.importers._checks import ImportFormatError, check_output, first_few, normalize_event_map
from offline.importers.raw import BLOCK_SECONDS, raw_to_session
from streams._checks import check_bool, ensure_path

logger = logging.getLogger(__name__)

#: Data-file extensions of EEG recordings that mne-bids reads.
EEG_EXTENSIONS = (".vhdr", ".edf", ".bdf", ".set", ".fif")
_ROOT_RESERVED = ("schema", "schema_version", "created", "closed", "writer", "zarr_version", "complete", "streams")


@dataclass
class BidsImportOptions:
    """Which recording of a BIDS dataset to import, and where.

    Parameters
    ----------
    bids_root : str or os.PathLike
        The BIDS dataset (with ``dataset_description.json``).
    out : str or os.PathLike
        Session directory to create.
    subject : str
        BIDS subject label (without ``sub-``).
    session_label, task, run : str, optional
        Narrow the choice; needed only when the subject has several recordings.
    event_map : mapping, optional
        Event (``trial_type``) -> image id / ``(image_id, label)`` (as ``bci import raw --event-map``);
        only for recordings not written by ``bci export bids``.
    overwrite, progress : bool
    """

    bids_root: str | os.PathLike
    out: str | os.PathLike
    subject: str
    session_label: str | None = None
    task: str | None = None
    run: str | None = None
    event_map: Mapping[Any, Any] | None = None
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        self.bids_root = ensure_path("BIDS_ROOT", self.bids_root, must_exist=True, kind="dir")
        self.out = ensure_path("OUT", self.out)
        self.subject = check_label("--subject", self.subject)
        self.session_label = check_label("--session", self.session_label, optional=True)
        self.task = check_label("--task", self.task, optional=True)
        self.run = check_label("--run", self.run, optional=True)
        check_bool("overwrite", self.overwrite)
        check_bool("progress", self.progress)


def find_recording(options: BidsImportOptions) -> Any:
    """The one EEG recording the options select (a ``BIDSPath``), or a ValueError listing the choices."""
    import mne_bids

    root = Path(options.bids_root)
    if not (root / "dataset_description.json").is_file():
        raise ValueError(f"BIDS_ROOT {str(root)!r} is not a BIDS dataset: it has no dataset_description.json")
    subjects = mne_bids.get_entity_vals(root, "subject")
    if options.subject not in subjects:
        raise ValueError(f"--subject {options.subject!r} is not in BIDS_ROOT {str(root)!r}; its subjects are "
                         f"{first_few(sorted(subjects), 30) if subjects else '(none)'}")
    everything = _eeg_recordings(root, options.subject, None, None, None)
    found = _eeg_recordings(root, options.subject, options.session_label, options.task, options.run)
    listing = ", ".join(p.basename for p in everything) or "(none)"
    if not found:
        raise ValueError(f"no EEG recording of sub-{options.subject} matches --session {options.session_label} "
                         f"--task {options.task} --run {options.run}; its EEG recordings are: {listing}")
    if len(found) > 1:
        raise ValueError(f"sub-{options.subject} has {len(found)} matching EEG recordings: "
                         f"{', '.join(p.basename for p in found)}; choose one with --session/--task/--run")
    return found[0]


def _eeg_recordings(root: Path, subject: str, session: str | None, task: str | None, run: str | None) -> list:
    import mne_bids

    paths = mne_bids.find_matching_paths(root, subjects=subject, sessions=session, tasks=task, runs=run,
                                         datatypes="eeg", suffixes="eeg", extensions=list(EEG_EXTENSIONS))
    inside = [p for p in paths if Path(p.fpath).resolve().relative_to(root.resolve()).parts[0].startswith("sub-")]
    return sorted(inside, key=lambda p: p.basename)


def import_bids(options: BidsImportOptions) -> Path:
    """Import one BIDS EEG recording into a Zarr session.

    Parameters
    ----------
    options : BidsImportOptions

    Returns
    -------
    Path
        The session; root attribute ``imported_from`` records the dataset, the entities and
        whether the LSL recording was restored exactly (``"lsl_restored"``).

    Raises
    ------
    ValueError
        Not a BIDS dataset, no such subject, none or several matching recordings (the message
        lists them), or an exported recording whose files no longer agree.
    FileExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    import mne_bids

    from streams._checks import check_type

    check_type("options", options, BidsImportOptions)
    out = check_output(options.out, options.overwrite)
    bp = find_recording(options)
    raw = mne_bids.read_raw_bids(bp, verbose="error")
    src = Path(bp.fpath)
    provenance = {"importer": "bids", "bids_root": str(Path(options.bids_root).resolve()),
                  "bids_file": bp.basename, "entities": {k: v for k, v in bp.entities.items() if v is not None}}
    lsl_json, lsl_times, _ = lsl_paths(bp)
    if lsl_json.is_file():
        if options.event_map is not None:
            raise ValueError(f"{bp.basename} was written by bci export bids: its original markers are restored, so "
                             "--event-map does not apply; map the markers when cutting epochs instead")
        return _restore(raw, lsl_json, lsl_times, out, options, provenance)
    emap = normalize_event_map(options.event_map, source="--event-map") if options.event_map is not None else None
    return raw_to_session(raw, src, out, event_map=emap, overwrite=options.overwrite, progress=options.progress,
                          provenance={**provenance, "lsl_restored": False})


# --------------------------------------------------------------------------- exact restore
def _restore(raw: Any, doc_path: Path, times_path: Path, out: Path, options: BidsImportOptions,
             provenance: dict[str, Any]) -> Path:
    from streams.description import StreamDescription
    from streams.session import SessionWriter

    doc = _read_doc(doc_path)
    data = doc["data"]
    desc = StreamDescription.from_dict(data["stream"])
    times = np.load(times_path, allow_pickle=False)
    if len(times) != raw.n_times or len(times) != int(data["n_samples"]):
        raise ImportFormatError(f"{str(times_path)!r} holds {len(times)} timestamps but the BIDS file has "
                                f"{raw.n_times} samples (the export had {data['n_samples']}): the recording was "
                                "changed after export")
    if list(raw.ch_names) != list(desc.channel_names):
        raise ImportFormatError(f"the BIDS file's channels {first_few(raw.ch_names)} differ from the exported "
                                f"stream's {first_few(list(desc.channel_names))}: the recording was changed")
    session_attrs = doc["session_attrs"]
    attrs = {k: v for k, v in session_attrs.items() if k not in _ROOT_RESERVED and k != "imported_from"}
    provenance = {**provenance, "lsl_restored": True,
                  "original": {k: session_attrs.get(k) for k in ("created", "closed", "writer", "imported_from")
                               if k in session_attrs},
                  "from_sourcedata": [m["key"] for m in doc.get("others", [])]}
    others = {m["key"]: m for m in [*doc.get("markers", []), *doc.get("results", []), *doc.get("others", [])]}
    order = [k for k in session_attrs.get("streams", []) if k == data["key"] or k in others]
    with SessionWriter(out, overwrite=options.overwrite, attrs={**attrs, "imported_from": provenance}) as writer:
        for k in order:
            if k != data["key"]:
                _restore_stream(writer, others[k], doc_path.parent)
                continue
            _restore_data(writer, _add(writer, data, desc), raw, desc, times, options.progress)
    logger.info("restored %s -> %s exactly (%d samples)", doc_path.name, out, len(times))
    return out


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ImportFormatError(f"{str(path)!r} is not readable JSON ({e}); remove it to import the recording "
                                "without its LSL timestamps") from None
    if doc.get("format") != LSL_FORMAT or not isinstance(doc.get("format_version"), int) \
            or doc["format_version"] > LSL_FORMAT_VERSION:
        raise ImportFormatError(f"{str(path)!r} is not a {LSL_FORMAT} file of version <= {LSL_FORMAT_VERSION} "
                                f"(format {doc.get('format')!r}, version {doc.get('format_version')!r})")
    return doc


def _restore_data(writer: Any, key: str, raw: Any, desc: Any, times: np.ndarray, progress: bool) -> None:
    """The data stream: samples from the BIDS file (in the stream's unit and dtype), LSL timestamps."""
    from tqdm import tqdm

    from streams.session import _TO_VOLTS

    # SessionReader.to_raw scaled µV/mV to volts on export; scale back to the stream's unit
    unscale = np.array([1.0 / _TO_VOLTS.get(u.strip().lower(), 1.0) for u in desc.channel_units])
    step = max(1, int(round(BLOCK_SECONDS * desc.nominal_rate)))
    for start in tqdm(range(0, len(times), step), desc="samples", unit="block", disable=not progress, leave=False):
        stop = min(len(times), start + step)
        block = raw.get_data(start=start, stop=stop, verbose="error").T * unscale
        if desc.numpy_dtype.kind in "iu":
            block = np.rint(block)
        writer.append(key, block.astype(desc.numpy_dtype), times[start:stop])


def _restore_stream(writer: Any, meta: dict[str, Any], folder: Path) -> None:
    """A marker, results or other stream from the sourcedata JSON (and its .npy files)."""
    from streams.description import StreamDescription

    desc = StreamDescription.from_dict(meta["stream"])
    key = _add(writer, meta, desc)
    if "data_file" in meta:
        data = np.load(folder / meta["data_file"], allow_pickle=False)
        times = np.load(folder / meta["times_file"], allow_pickle=False)
    else:
        data = np.array(meta["values"], dtype=object).reshape(-1, 1)
        times = np.asarray(meta["times"], dtype=np.float64)
        if not desc.is_string:
            data = data.astype(np.float64)
    if len(times):
        writer.append(key, data, times)


def _add(writer: Any, meta: dict[str, Any], desc: Any) -> str:
    """Add a stream with its original key, user attributes and gaps."""
    key = writer.add_stream(desc, key=meta["key"])
    if meta.get("attrs"):
        writer.set_attrs(key, **meta["attrs"])
    for gap in meta.get("gaps", []):
        start, end = gap.get("start_time"), gap.get("end_time")
        writer.add_gap(key, float("nan") if start is None else start, float("nan") if end is None else end,
                       str(gap.get("reason", "")))
    return key
