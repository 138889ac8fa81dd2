"""A Zarr session -> one BIDS EEG recording (mne-bids), with nothing of the LSL recording lost.

What goes where (``BIDS_ROOT`` is a BIDS dataset; ``<base>`` is
``sub-<S>[_ses-<N>]_task-<T>[_run-<R>]``)::

    dataset_description.json, participants.tsv, README      written / updated by mne-bids
    sub-<S>/[ses-<N>/]eeg/<base>_eeg.vhdr|.eeg|.vmrk        the EEG stream (BrainVision float32 in V: exact)
                         <base>_eeg.edf                      (--format EDF: 16-bit, lossy)
                         <base>_eeg.json                     sidecar + "LSLStream" (the stream's metadata)
                         <base>_channels.tsv                 names, types, units
                         <base>_events.tsv|.json             every marker in the data's span, gaps as BAD_gap
    sourcedata/bci/sub-<S>/[ses-<N>/]eeg/<base>_lsl.json     what BIDS has no place for (see LSL_FORMAT)
                                        <base>_lsltimes.npy  float64 LSL timestamp of every sample
    derivatives/bci/dataset_description.json                 DatasetType "derivative"
    derivatives/bci/sub-<S>/[ses-<N>/]eeg/<base>_desc-results_events.tsv   decoded results (if any)

:func:`export_bids` is what ``bci export bids`` and the tests call;
:mod:`offline.importers.bids` reads the files back (:func:`lsl_paths` names them).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streams._checks import check_bool, check_type, check_value, ensure_path
from streams.description import RESULTS_TYPE

logger = logging.getLogger(__name__)

#: Export formats: BrainVision (float32, exact) and EDF (16-bit, lossy).
FORMATS = ("BrainVision", "EDF")
#: ``format`` of the sourcedata JSON, and its version.
LSL_FORMAT = "bci-runtime.bids-lsl"
LSL_FORMAT_VERSION = 1
#: Pipeline name of the sourcedata and derivatives folders.
PIPELINE = "bci"
#: trial_type of a recording gap in events.tsv (mne reads ``BAD_*`` as bad segments).
GAP_TRIAL_TYPE = "BAD_gap"
#: Extra events.tsv columns and their descriptions (events.json).
EVENT_COLUMNS = {
    "image_id": "Stimulus image id parsed from the marker (streams.synthetic.markers.parse_marker); n/a if none.",
    "label": "Stimulus class label parsed from the marker; n/a if none.",
    "lsl_time": "Exact LSL timestamp of the marker in seconds (repr of a float64); the gap's last sample before "
                "it for BAD_gap rows.",
}
#: Suffixes of a recording's own files in its eeg/ folder (electrodes/coordsystem are shared by the subject).
_OWN_SUFFIXES = frozenset({"eeg", "channels", "events"})
_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
_NA = "n/a"


def check_label(flag: str, value: Any, *, optional: bool = False) -> str | None:
    """A BIDS entity label (letters and digits only), named by its CLI flag in errors.

    Parameters
    ----------
    flag : str
        The option, e.g. ``"--subject"``.
    value : str or int or None
        The label (an int is taken as its decimal text, e.g. a run number).
    optional : bool
        Accept ``None``.
    """
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    check_type(flag, value, str, "a str such as '01'")
    if not _LABEL_RE.match(value):
        hint = f"; drop the prefix: {value.split('-', 1)[1]!r}" if re.match(r"^(sub|ses|task|run)-", value) else ""
        raise ValueError(f"{flag}={value!r} is not a valid BIDS label: use letters and digits only "
                         f"(e.g. '01'){hint}")
    return value


@dataclass
class BidsExportOptions:
    """What to export, and where.

    Parameters
    ----------
    session : str or os.PathLike
        Zarr session (``streams.session.SessionReader``).
    bids_root : str or os.PathLike
        BIDS dataset folder: new, empty, or an existing BIDS dataset (another recording is added).
    subject : str
        BIDS subject label (letters and digits, e.g. ``"01"``).
    session_label, task, run : str, optional
        BIDS entities; ``task`` defaults to ``"bci"``.
    format : {"BrainVision", "EDF"}
        BrainVision (float32 in volts: bit-exact for float32 stores) or EDF (16-bit: lossy).
    stream : str, optional
        Data stream (anything ``SessionReader.find`` accepts); default the first EEG stream.
    overwrite : bool
        Replace this recording's files if they exist.
    progress : bool
        Show a progress bar on stderr.
    skip_damaged : bool
        Export around damaged chunks (``bci info --verify`` lists them): their samples are left out
        of the data, the timestamps and every other stream, and each damaged range is a gap (a
        ``BAD_gap`` row, like any recorded gap). Default: stop with
        :class:`~streams.errors.DamagedChunkError`.
    """

    session: str | os.PathLike
    bids_root: str | os.PathLike
    subject: str
    session_label: str | None = None
    task: str = "bci"
    run: str | None = None
    format: str = "BrainVision"
    stream: str | None = None
    overwrite: bool = False
    progress: bool = False
    skip_damaged: bool = False

    def __post_init__(self) -> None:
        self.session = ensure_path("session", self.session, must_exist=True, kind="dir")
        self.bids_root = ensure_path("bids_root", self.bids_root)
        self.subject = check_label("--subject", self.subject)
        self.session_label = check_label("--session", self.session_label, optional=True)
        self.task = check_label("--task", self.task)
        self.run = check_label("--run", self.run, optional=True)
        check_value("--format", self.format, FORMATS)
        if self.stream is not None:
            check_type("--stream", self.stream, str)
        check_bool("overwrite", self.overwrite)
        check_bool("progress", self.progress)
        check_bool("skip_damaged", self.skip_damaged)


@dataclass
class BidsExportResult:
    """What :func:`export_bids` wrote."""

    data_file: Path
    events_file: Path | None
    lsl_json: Path
    lsl_times: Path
    results_file: Path | None
    n_samples: int
    n_events: int
    n_markers_outside: int
    n_gaps: int
    in_sourcedata: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per stream with damaged chunks left out

    def summary(self) -> str:
        """Lines for the CLI."""
        lines = [f"wrote {self.data_file} ({self.n_samples} samples)",
                 f"  events: {self.events_file} ({self.n_events} rows, {self.n_gaps} gap(s) as {GAP_TRIAL_TYPE})"
                 if self.events_file else "  events: none",
                 f"  LSL timestamps and original streams: {self.lsl_json}, {self.lsl_times.name}"]
        if self.n_markers_outside:
            lines.append(f"  {self.n_markers_outside} marker(s) outside the data's span: not in events.tsv, "
                         f"kept in {self.lsl_json.name}")
        if self.results_file:
            lines.append(f"  decoded results: {self.results_file}")
        if self.in_sourcedata:
            lines.append(f"  streams with no place in BIDS, kept in sourcedata/{PIPELINE}: "
                         f"{', '.join(self.in_sourcedata)}")
        lines += [f"  {line}" for line in self.skipped]
        return "\n".join(lines)


def bids_path(root: str | os.PathLike, subject: str, session: str | None, task: str | None, run: str | None,
              **kwargs: Any) -> Any:
    """The ``mne_bids.BIDSPath`` of one EEG recording."""
    import mne_bids

    return mne_bids.BIDSPath(root=root, subject=subject, session=session, task=task, run=run, datatype="eeg",
                             **kwargs)


def lsl_paths(bp: Any) -> tuple[Path, Path, Path]:
    """Sourcedata JSON, timestamps ``.npy`` and results TSV of the recording ``bp`` (a ``BIDSPath``)."""
    base = bp.copy().update(suffix=None, extension=None, datatype="eeg").basename
    rel = Path(*[p for p in (f"sub-{bp.subject}", f"ses-{bp.session}" if bp.session else None, "eeg") if p])
    root = Path(bp.root)
    src = root / "sourcedata" / PIPELINE / rel
    return src / f"{base}_lsl.json", src / f"{base}_lsltimes.npy", \
        root / "derivatives" / PIPELINE / rel / f"{base}_desc-results_events.tsv"


# --------------------------------------------------------------------------- export
def export_bids(options: BidsExportOptions) -> BidsExportResult:
    """Export one session's EEG stream, markers, gaps, timestamps and results to a BIDS dataset.

    Parameters
    ----------
    options : BidsExportOptions

    Returns
    -------
    BidsExportResult

    Raises
    ------
    ValueError
        ``bids_root`` is a non-empty folder that is not a BIDS dataset, or a label is invalid.
    FileExistsError
        The recording exists in the dataset and ``overwrite`` is false.
    streams.errors.StreamNotFoundError
        The session has no EEG stream (or not the one selected).
    streams.errors.DamagedChunkError
        A chunk of the session cannot be read and ``skip_damaged`` is false (nothing is written).
    """
    from tqdm import tqdm

    from streams.integrity import skipped_summary
    from streams.session import SessionReader

    check_type("options", options, BidsExportOptions)
    root = _check_root(options)
    reader = SessionReader(options.session, skip_damaged=options.skip_damaged)
    key = reader.find(options.stream if options.stream is not None else "type=EEG")
    bp = bids_path(root, options.subject, options.session_label, options.task, options.run)
    existing = _check_recording_free(bp, options.overwrite)
    steps = tqdm(total=4, desc="bids export", unit="step", disable=not options.progress, leave=False)
    try:
        times = reader.times(key)
        raw = reader.to_raw(key, markers=None)
        markers = _marker_streams(reader, key)
        events = _events(reader, key, times, markers, raw.info["sfreq"])
        steps.update()
        _remove_recording(bp, existing)  # only now: a session that cannot be exported leaves the old one intact
        with tempfile.TemporaryDirectory(prefix="bci-bids-") as tmp:
            written = _write_recording(raw, events, bp, options, Path(tmp))
        steps.update()
        _update_sidecar(written, reader, key)
        lsl_json, lsl_times, results_path = lsl_paths(bp)
        results = [k for k in reader.streams if reader.description(k).type == RESULTS_TYPE]
        others = [k for k in reader.streams if k != key and k not in markers and k not in results]
        _write_sourcedata(lsl_json, lsl_times, reader, key, times, markers, results, others)
        steps.update()
        results_file = _write_results(results_path, reader, results, times, raw.info["sfreq"]) if results else None
        steps.update()
    finally:
        steps.close()
    if others:
        logger.info("streams %s have no place in a BIDS EEG recording: kept in %s", others, lsl_json.parent)
    skipped: list[str] = []
    if options.skip_damaged:
        skipped_summary(reader, [key, *markers, *results, *others], skipped.append)
    return BidsExportResult(
        data_file=Path(written.fpath), events_file=Path(written.copy().update(suffix="events", extension=".tsv")
                                                        .fpath) if events.n_rows else None,
        lsl_json=lsl_json, lsl_times=lsl_times, results_file=results_file, n_samples=len(times),
        n_events=events.n_rows, n_markers_outside=events.n_outside, n_gaps=events.n_gaps, in_sourcedata=others,
        skipped=skipped)


def _check_root(options: BidsExportOptions) -> Path:
    root = Path(options.bids_root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"BIDS_ROOT {str(root)!r} is a file; pass a folder (new, empty, or a BIDS dataset)")
    if root.is_dir() and any(root.iterdir()) and not (root / "dataset_description.json").is_file():
        raise ValueError(f"BIDS_ROOT {str(root)!r} is not empty and not a BIDS dataset (no "
                         "dataset_description.json); choose a new or empty folder (--overwrite never deletes "
                         "a folder that is not a BIDS dataset)")
    return root


def _recording_files(bp: Any) -> list[Path]:
    """Files of recording ``bp`` already in the dataset: its data, sidecars, sourcedata and results."""
    folder, prefix = Path(bp.directory), bp.basename + "_"
    own = [p for p in folder.glob(prefix + "*") if p.name[len(prefix):].split(".")[0] in _OWN_SUFFIXES] \
        if folder.is_dir() else []
    lsl_json = lsl_paths(bp)[0]
    extra = [p for p in lsl_json.parent.glob(lsl_json.name[: -len("lsl.json")] + "*")] if lsl_json.parent.is_dir() \
        else []
    return sorted(own) + sorted(extra) + [p for p in lsl_paths(bp)[2:] if p.is_file()]


def _check_recording_free(bp: Any, overwrite: bool) -> list[Path]:
    """Refuse an existing recording without ``overwrite``; return its files (another format's too)."""
    existing = _recording_files(bp)
    if existing and not overwrite:
        raise FileExistsError(f"BIDS_ROOT already holds recording {bp.basename} "
                              f"({', '.join(p.name for p in existing[:4])}); pass --overwrite to replace it, or "
                              "choose another --subject/--session/--task/--run")
    return existing


def _remove_recording(bp: Any, existing: list[Path]) -> None:
    """Delete the files of the recording being replaced and their ``scans.tsv`` rows."""
    for path in existing:
        path.unlink()
    _drop_scans_rows(bp, {f"eeg/{p.name}" for p in existing})


def _drop_scans_rows(bp: Any, names: set[str]) -> None:
    """Remove the rows of deleted data files from the subject's ``scans.tsv`` (mne-bids adds the new one)."""
    scans = bp.copy().update(suffix="scans", extension=".tsv", task=None, run=None, datatype=None)
    path = Path(bp.directory).parent / scans.basename
    if not names or not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for i, line in enumerate(lines) if i == 0 or line.split("\t", 1)[0] not in names]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _marker_streams(reader: Any, key: str) -> list[str]:
    return [k for k in reader.streams if k != key and reader.description(k).type.lower() == "markers"]


@dataclass
class _EventTable:
    """Annotation arguments of the exported markers and gaps."""

    onset: list[float] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    description: list[str] = field(default_factory=list)
    extras: list[dict[str, str]] = field(default_factory=list)
    n_outside: int = 0
    n_gaps: int = 0

    @property
    def n_rows(self) -> int:
        return len(self.onset)

    def add(self, onset: float, duration: float, text: str, extras: dict[str, str]) -> None:
        self.onset.append(onset)
        self.duration.append(duration)
        self.description.append(text)
        self.extras.append(extras)


def _events(reader: Any, key: str, times: np.ndarray, markers: list[str], sfreq: float) -> _EventTable:
    """Markers on the data's sample grid (onset = nearest sample / sfreq), plus one BAD_gap per gap."""
    from streams.synthetic.markers import parse_marker

    table = _EventTable()
    n = len(times)
    rows: list[tuple[float, float, str, dict[str, str]]] = []
    for mk in markers:
        t, values = reader.markers(mk)
        durations = reader.stream_attrs(mk).get("durations")
        if not isinstance(durations, list) or len(durations) != len(t):
            durations = [0.0] * len(t)
        for ti, v, d in zip(t, values, durations):
            if not times[0] <= ti <= times[-1]:
                table.n_outside += 1
                continue
            sample = int(round(float(np.interp(ti, times, np.arange(n)))))
            image_id, label = parse_marker(str(v))
            rows.append((sample / sfreq, float(d or 0.0), str(v),
                         {"image_id": image_id or _NA, "label": label or _NA, "lsl_time": repr(float(ti))}))
    for gap in reader.gaps(key):
        start, end = gap["start_time"], gap["end_time"]
        if np.isfinite(end):
            after = int(np.searchsorted(times, end, side="left"))
        elif np.isfinite(start):
            after = int(np.searchsorted(times, start, side="right"))
        else:
            continue  # unknown position: kept in the sourcedata JSON only
        before = min(max(after - 1, 0), n - 1)
        rows.append((before / sfreq, 1.0 / sfreq, GAP_TRIAL_TYPE,
                     {"image_id": _NA, "label": _NA, "lsl_time": repr(float(times[before]))}))
        table.n_gaps += 1
    for row in sorted(rows, key=lambda r: r[0]):  # stable: markers keep their order at one onset
        table.add(*row)
    return table


def _write_recording(raw: Any, events: _EventTable, bp: Any, options: BidsExportOptions, tmp: Path) -> Any:
    """Write the data file and its sidecars with mne-bids; returns the written BIDSPath."""
    import mne
    import mne_bids

    if options.format == "BrainVision":
        source = _float32_brainvision(raw, tmp)
    else:
        source = raw
    if events.n_rows:
        source.set_annotations(mne.Annotations(events.onset, events.duration, events.description,
                                               orig_time=None, extras=events.extras))
    event_id = {d: i + 1 for i, d in enumerate(sorted(set(events.description)))} if events.n_rows else None
    kwargs: dict[str, Any] = {"format": "auto"} if options.format == "BrainVision" else {
        "format": "EDF", "allow_preload": True}
    with warnings.catch_warnings():
        # mne-bids warns that it converts to EDF, which is what --format EDF asked for
        warnings.filterwarnings("ignore", message=".*[Cc]onverting.*")
        return mne_bids.write_raw_bids(source, bp.copy(), event_id=event_id,
                                       extra_columns_descriptions=dict(EVENT_COLUMNS) if events.n_rows else None,
                                       overwrite=options.overwrite, verbose="error", **kwargs)


def _float32_brainvision(raw: Any, tmp: Path) -> Any:
    """Write ``raw`` as BrainVision float32 in volts (exact for float32 data) and read it back (not preloaded).

    mne-bids' own conversion writes µV (float32 of x * 1e6: about one value in ten off by one ulp);
    a BrainVision file passed with ``format="auto"`` is copied as it is.
    """
    import mne
    import pybv
    from mne.channels.channels import _unit2human
    from mne.io.constants import FIFF

    units = ["V" if ch["unit"] == FIFF.FIFF_UNIT_V else _unit2human.get(ch["unit"], "n/a")
             for ch in raw.info["chs"]]
    with warnings.catch_warnings():
        # pybv recommends µV for compatibility; V is what makes float32 storage exact
        warnings.filterwarnings("ignore", message="Encountered unsupported voltage units")
        pybv.write_brainvision(data=raw.get_data(), sfreq=raw.info["sfreq"], ch_names=raw.ch_names,
                               fname_base="data", folder_out=str(tmp), unit=units, resolution=1.0,
                               fmt="binary_float32", overwrite=True)
    out = mne.io.read_raw_brainvision(tmp / "data.vhdr", preload=False, verbose="error")
    out.set_channel_types(dict(zip(raw.ch_names, raw.get_channel_types())), verbose="error")
    montage = raw.get_montage()
    if montage is not None:
        out.set_montage(montage, verbose="error")
    return out


def _stream_meta(reader: Any, key: str) -> dict[str, Any]:
    desc = reader.description(key).to_dict()
    attrs = reader.stream_attrs(key)
    meta = {"key": key, "stream": desc, "n_samples": reader.n_samples(key), "gaps": attrs.get("gaps", []),
            "nonfinite_samples": attrs.get("nonfinite_samples", 0),
            "attrs": {k: v for k, v in attrs.items()
                      if k not in ("stream", "index", "gaps", "nonfinite_samples", "n_samples", "flush_rows")}}
    damaged = reader.damaged(key) if reader.skip_damaged else []
    if damaged:  # the samples left out: what was written, and every gap with the damaged ranges among them
        meta["n_samples"] = len(reader.times(key))
        meta["gaps"] = [{n: (v if not isinstance(v, float) or math.isfinite(v) else None) for n, v in g.items()}
                        for g in reader.gaps(key)]
        meta["damaged"] = [{"array": r.array, "chunk": r.chunk, "start": r.start, "stop": r.stop,
                            "problem": r.problem, "text": r.describe()} for r in damaged]
    return meta


def _update_sidecar(bp: Any, reader: Any, key: str) -> None:
    """Add the stream's LSL metadata to ``<base>_eeg.json`` (and drop mne-bids' guessed manufacturer)."""
    import mne_bids

    desc = reader.description(key)
    attrs, root = reader.stream_attrs(key), reader.attrs
    lsl = {"name": desc.name, "type": desc.type, "source_id": desc.source_id, "nominal_rate": desc.nominal_rate,
           "channel_format": desc.dtype}
    for name, value in (("hostname", desc.hostname), ("created_at", root.get("created")),
                        ("channel_map", attrs.get("channel_map") or root.get("channel_map"))):
        if value:
            lsl[name] = value
    sidecar = bp.copy().update(suffix="eeg", extension=".json")
    mne_bids.update_sidecar_json(sidecar, {"Manufacturer": _NA, "LSLStream": lsl,
                                           "RecordingSoftware": str(root.get("writer", "bci-runtime"))},
                                 verbose="error")


def _write_sourcedata(path: Path, times_path: Path, reader: Any, key: str, times: np.ndarray, markers: list[str],
                      results: list[str], others: list[str]) -> None:
    from streams._store import jsonable

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(times_path, times.astype(np.float64), allow_pickle=False)
    def with_samples(k: str) -> dict[str, Any]:
        t, values = reader.markers(k)
        return {**_stream_meta(reader, k), "times": [float(x) for x in t], "values": [str(v) for v in values]}

    doc = {
        "format": LSL_FORMAT, "format_version": LSL_FORMAT_VERSION,
        "session_attrs": reader.attrs, "data": {**_stream_meta(reader, key), "times_file": times_path.name},
        "markers": [with_samples(k) for k in markers], "results": [with_samples(k) for k in results],
        "others": [_other_stream(reader, k, times_path) for k in others],
    }
    path.write_text(json.dumps(jsonable(doc, "sourcedata"), indent=1), encoding="utf-8")


def _other_stream(reader: Any, key: str, times_path: Path) -> dict[str, Any]:
    """A stream BIDS has no place for: strings inline, numbers as ``<base>_stream-<key>_{data,time}.npy``."""
    if reader.description(key).is_string:
        t, values = reader.markers(key)
        return {**_stream_meta(reader, key), "times": [float(x) for x in t], "values": [str(v) for v in values]}
    base = times_path.name[: -len("lsltimes.npy")] + f"stream-{key}"
    files = {"data_file": f"{base}_data.npy", "times_file": f"{base}_time.npy"}
    np.save(times_path.parent / files["data_file"], reader.data(key), allow_pickle=False)
    np.save(times_path.parent / files["times_file"], reader.times(key), allow_pickle=False)
    return {**_stream_meta(reader, key), **files}


def _write_results(path: Path, reader: Any, results: list[str], times: np.ndarray, sfreq: float) -> Path:
    """Decoded results as a derivative events TSV: onset (data clock), stream, lsl_time, value (JSON text)."""
    from streams._store import writer_version

    root = next(p for p in path.parents if p.name == PIPELINE and p.parent.name == "derivatives")
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "bci-runtime decoded results", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bci-runtime", "Version": writer_version()}]}, indent=2), encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["onset\tduration\tstream\tlsl_time\tvalue"]
    n = len(times)
    for k in results:
        t = reader.times(k)
        values = reader.data(k)[:, 0]
        for ti, v in zip(t, values):
            onset = float(np.interp(ti, times, np.arange(n))) / sfreq if n else 0.0
            text = str(v).replace("\t", "\\t").replace("\n", "\\n")
            lines.append(f"{onset!r}\t0\t{k}\t{float(ti)!r}\t{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
