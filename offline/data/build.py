"""Build epoch datasets from recorded Zarr sessions (or straight from the simulator).

Offline equals online: the windows are cut by the **runtime's own code path**. Each
session is fed through :func:`bci.runtime.replay.decode_session` into a
:class:`bci.runtime.pipeline.Pipeline` — the same preprocessing (:class:`OnlinePreprocessor`,
chunk by chunk, decimation timing), the same ring buffer and :class:`EventWindower`
(nearest-sample rule, offset counted in samples, gap/late-marker handling) and the same
per-window steps (baseline) that ``bci replay --decode --speed max`` and ``bci live``
use. Only the encoder is replaced by a tap that hands each window, exactly as the model
would receive it, to the dataset writer. ``tests/test_epochs.py`` checks that a real
model gives the same embeddings on the dataset's windows as the runtime on the session.

Markers ``stim/<image_id>/<label>`` give the image id and label (class index from the
stimulus set, a class list, an image map, or the sorted labels found). Blocks come from
``block_start/<n>`` markers when the session has them, otherwise from gaps between
stimulus markers longer than ``block_gap`` (default: 2.5 x the median gap).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bci.preprocessing.channel_map import INTERPOLATED, ChannelMap, ChannelMapOptions
from bci.runtime.pipeline import Pipeline
from bci.preprocessing import OnlinePreprocessor, PreprocessConfig, plan_rate
from bci.runtime.replay import decode_session
from bci.runtime.windowing import WindowSpec
from offline.data.bad_annotations import bad_spans
from offline.data.build_options import (
    DEFAULT_N_TIMES,
    DEFAULT_OFFSET,
    LabelOptions,
    SimulationOptions,
    WindowOptions,
)
from offline.data.epochs import EpochDataset, EpochDatasetWriter
from offline.data.splits import block_split, session_split, subject_split, zero_shot_split
from streams._checks import check_type
from streams.errors import OutputExistsError
from streams.session import SessionReader, SessionWriter
from streams.simulate import SimulationSpec, marker_description
from streams.synthetic import (
    BLOCK_START,
    EEGSimConfig,
    EEGSimulator,
    StimulusEvent,
    StimulusSet,
    make_balanced_schedule,
    make_stimuli,
    parse_block_marker,
    parse_marker,
)

__all__ = [
    "DEFAULT_SPLITS",
    "BuildReport",
    "LabelOptions",
    "SimulationOptions",
    "WindowOptions",
    "epochs_from_sessions",
    "epochs_from_simulation",
    "simulation_schedule",
]

logger = logging.getLogger(__name__)

#: The class-balanced schedule of :func:`epochs_from_simulation` (owned by ``streams.synthetic.schedule``).
simulation_schedule = make_balanced_schedule

#: Splits stored by default (each only when the data allow it; see BuildReport.notes).
DEFAULT_SPLITS = ("block",)
#: Without block markers, a gap between stimulus markers longer than this many median gaps starts a block.
AUTO_BLOCK_GAP_FACTOR = 2.5

ProgressFn = Callable[[int, int, float, int], None]
"""``progress(session_index, n_sessions, fraction_of_session_done, n_epochs_so_far)``."""


@dataclass
class BuildReport:
    """What a build did.

    Attributes
    ----------
    path : Path
        The dataset.
    n_epochs : int
    n_sessions : int
    dropped : dict
        Markers that produced no window, by the runtime's reason (``gap``, ``end_of_data``...).
    skipped : int
        Windows whose marker names no image (e.g. a marker filter that lets other markers through).
    seconds : float
        Wall time of the build.
    sessions : list of dict
        Per session: path, name, streams, markers, epochs, dropped, block rule.
    splits : list of str
        Splits stored with the dataset.
    notes : list of str
        Splits that could not be built and why, and other remarks.
    """

    path: Path
    n_epochs: int
    n_sessions: int
    dropped: dict[str, int]
    skipped: int
    seconds: float
    sessions: list[dict[str, Any]]
    splits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def epochs_per_second(self) -> float:
        """Build throughput."""
        return self.n_epochs / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        lines = [f"{self.path}: {self.n_epochs} epochs from {self.n_sessions} session(s) in {self.seconds:.1f} s "
                 f"({self.epochs_per_second:.0f} epochs/s); dropped markers: {drops}; skipped: {self.skipped}",
                 f"splits: {', '.join(self.splits) or 'none'}"]
        damaged = [(s["name"], d) for s in self.sessions for d in s.get("damaged", ())]
        if damaged:
            n = sum(d["stop"] - d["start"] for _, d in damaged)
            lines.append(f"skipped damaged chunks: {len(damaged)}, {n} samples: "
                         + "; ".join(f"{name}: {d['text']}" for name, d in damaged))
        bad = [(s["name"], b) for s in self.sessions for b in s.get("bad_annotations", ())]
        if bad:
            lines.append(f"left out BAD annotations (as gaps): {len(bad)}, {sum(b['n_samples'] for _, b in bad)} "
                         "samples: " + "; ".join(f"{name}: {b['marker']!r} at {b['onset']:.3f} s for "
                                                 f"{b['duration']:.3f} s" for name, b in bad))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------- the tap
@dataclass
class _TapConfig:
    """The part of a model config the pipeline reads."""

    n_times: int
    name: str = "epoch-builder (window tap)"
    labels: list[str] | None = None
    sfreq: float | None = None  # the windows' rate: the pipeline resamples other stream rates to it


class _WindowTap:
    """Takes the encoder's place in a :class:`Pipeline`: keeps every window batch as the model would get it."""

    def __init__(self, n_times: int, sfreq: float | None = None) -> None:
        self.config = _TapConfig(n_times=n_times, sfreq=sfreq)
        self.windows: deque[np.ndarray] = deque()

    def check_stream(self, n_channels: int, sfreq: float, ch_names: Sequence[str] | None = None, *,
                     stream_name: str = "") -> None:
        """Accept any stream (the builder checks a model's expectations itself)."""

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.windows.extend(np.asarray(batch, dtype=np.float32))
        return {"embedding": np.zeros((len(batch), 1), dtype=np.float32)}


class _EpochSink:
    """Receives the pipeline's records in window order and appends each window with its metadata."""

    def __init__(self, tap: _WindowTap, on_window: Callable[[np.ndarray, dict[str, Any]], None]) -> None:
        self.tap = tap
        self.on_window = on_window
        self.dropped: dict[str, int] = {}
        self.dropped_markers: list[dict[str, Any]] = []  # marker, marker_time, reason, detail of each

    def write(self, record: dict[str, Any]) -> None:
        if record.get("type") == "window":
            self.on_window(self.tap.windows.popleft(), record)
        elif record.get("type") == "dropped":
            reason = str(record.get("reason"))
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            self.dropped_markers.append({k: record.get(k) for k in ("marker", "marker_time", "reason", "detail")})

    def close(self) -> None:
        """Nothing to release."""


# --------------------------------------------------------------------------- marker scan
@dataclass
class _SessionPlan:
    """What one session contributes, found from its markers before any window is cut."""

    path: Path
    name: str
    data_key: str
    marker_key: str
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    modality: str
    attrs: dict[str, Any]
    stim: dict[tuple[str, float], tuple[str, str | None, int]]  # (marker, time) -> (image_id, label, block)
    block_rule: str
    n_markers: int
    skip_damaged: bool = False


def _pick_streams(reader: SessionReader, data_stream: str | None, marker_stream: str | None) -> tuple[str, str]:
    if data_stream is not None:
        data_key = reader.find(data_stream)
    else:
        regular = [k for k in reader.streams if reader.description(k).is_regular
                   and not reader.description(k).is_string]
        typed = [k for k in regular if reader.description(k).type.lower() in ("eeg", "fmri")]
        if not (typed or regular):
            raise ValueError(f"session {str(reader.path)!r} has no regular data stream (streams: {reader.streams}); "
                             "record an EEG or fMRI stream")
        data_key = (typed or regular)[0]
    if marker_stream is not None:
        marker_key = reader.find(marker_stream)
    else:
        keys = reader.marker_keys()
        if not keys:
            raise ValueError(f"session {str(reader.path)!r} has no marker stream (streams: {reader.streams}); "
                             "epochs are cut at stimulus markers")
        marker_key = keys[0]
    return data_key, marker_key


def _blocks_from_markers(times: np.ndarray, values: np.ndarray, stim_times: np.ndarray) -> np.ndarray | None:
    """Block number of each stimulus from ``block_start/<n>`` markers (None when there are none)."""
    starts = [(float(t), parsed[1]) for t, v in zip(times, values)
              if (parsed := parse_block_marker(str(v))) is not None and parsed[0] == BLOCK_START]
    if not starts:
        return None
    start_times = np.array([t for t, _ in starts])
    numbers = np.array([n if n is not None else i for i, (_, n) in enumerate(starts)], dtype=np.int64)
    pos = np.searchsorted(start_times, stim_times, side="right") - 1
    return np.where(pos >= 0, numbers[np.maximum(pos, 0)], -1)


def _blocks_from_gaps(stim_times: np.ndarray, block_gap: float | None) -> tuple[np.ndarray, float]:
    """Block number of each stimulus from gaps longer than ``block_gap`` seconds."""
    if len(stim_times) < 2:
        return np.zeros(len(stim_times), dtype=np.int64), float("inf")
    gaps = np.diff(np.sort(stim_times))
    threshold = block_gap if block_gap is not None else AUTO_BLOCK_GAP_FACTOR * float(np.median(gaps))
    order = np.argsort(stim_times, kind="stable")
    blocks_sorted = np.concatenate([[0], np.cumsum(gaps > threshold)])
    out = np.empty(len(stim_times), dtype=np.int64)
    out[order] = blocks_sorted
    return out, float(threshold)


def _scan_session(path: Path, *, data_stream: str | None, marker_stream: str | None,
                  marker_filter: re.Pattern[str] | None, block_gap: float | None,
                  skip_damaged: bool = False) -> _SessionPlan:
    reader = SessionReader(path, skip_damaged=skip_damaged)
    data_key, marker_key = _pick_streams(reader, data_stream, marker_stream)
    desc = reader.description(data_key)
    times, values = reader.markers(marker_key)
    values = np.array([str(v) for v in values], dtype=object)
    chosen = [i for i, v in enumerate(values) if marker_filter is None or marker_filter.search(v)]
    parsed = [parse_marker(values[i]) for i in chosen]
    stim_idx = [i for i, (image_id, _) in zip(chosen, parsed) if image_id is not None]
    stim_times = times[stim_idx]
    blocks = _blocks_from_markers(times, values, stim_times)
    if blocks is not None:
        rule = "block_start markers"
    else:
        blocks, threshold = _blocks_from_gaps(stim_times, block_gap)
        rule = f"gaps between stimulus markers > {threshold:.3g} s"
    stim = {}
    for i, b in zip(stim_idx, blocks):
        image_id, label = parse_marker(values[i])
        stim[(values[i], float(times[i]))] = (image_id, label, int(b))
    modality = "fmri" if desc.type.lower() == "fmri" else "eeg"
    return _SessionPlan(path=path, name=str(reader.attrs.get("session") or path.name), data_key=data_key,
                        marker_key=marker_key, sfreq=float(desc.nominal_rate), ch_names=list(desc.channel_names),
                        ch_types=list(desc.channel_types), modality=modality, attrs=reader.attrs, stim=stim,
                        block_rule=rule, n_markers=len(values), skip_damaged=skip_damaged)


# --------------------------------------------------------------------------- classes
@dataclass
class _Classes:
    names: list[str]
    of_epoch: Callable[[str, str | None], int]
    stimuli: StimulusSet | None
    rule: str


def _synthetic_stimuli(plans: list[_SessionPlan]) -> StimulusSet | None:
    """The stimulus set of simulated sessions, rebuilt from their attributes (None if not all agree)."""
    keys = set()
    for plan in plans:
        sim = plan.attrs.get("simulation")
        if not plan.attrs.get("synthetic") or not isinstance(sim, dict) or sim.get("modality", "eeg") != "eeg":
            return None
        keys.add((int(sim.get("seed", 0)), int(sim.get("n_images_per_class", 5)), int(sim.get("image_size", 64)),
                  tuple(sim.get("classes") or ())))
    if len(keys) != 1:
        return None
    seed, n_per, size, classes = keys.pop()
    stimuli = make_stimuli(n_per_class=n_per, size=size, seed=seed)
    return _subset_classes(stimuli, list(classes)) if classes else stimuli


def _stimuli_agree(stimuli: StimulusSet, plans: list[_SessionPlan]) -> bool:
    ids = {image_id: i for i, image_id in enumerate(stimuli.image_ids)}
    for plan in plans:
        for image_id, label, _ in plan.stim.values():
            if image_id not in ids or (label is not None and label != stimuli.label(ids[image_id])):
                return False
    return True


def _resolve_classes(plans: list[_SessionPlan], labels: LabelOptions) -> _Classes:
    stimuli, class_names, image_map = labels.stimuli, labels.class_names, labels.image_map
    if isinstance(stimuli, str):  # 'auto' (LabelOptions checked it)
        found = _synthetic_stimuli(plans) if class_names is None and image_map is None else None
        stimuli = found if found is not None and _stimuli_agree(found, plans) else None
    if stimuli is not None:
        return _classes_from_stimuli(stimuli, plans)
    if image_map is not None:
        return _classes_from_map(image_map, class_names)
    labels = sorted({label for p in plans for _, label, _ in p.stim.values() if label is not None})
    names = list(class_names) if class_names is not None else labels
    if not names:
        raise ValueError("the stimulus markers carry no labels ('stim/<id>' without '/<label>'); pass class_names "
                         "with image_map, or stimuli, to label the epochs")
    index = {n: i for i, n in enumerate(names)}

    def of_label(image_id: str, label: str | None) -> int:
        if label is None or label not in index:
            raise ValueError(f"marker for image {image_id!r} has label {label!r}, which is not in class_names "
                             f"(e.g. {names[:3]}); pass class_names listing every label, or an image_map")
        return index[label]

    return _Classes(names, of_label, None, "labels of the markers" + (" (class_names given)" if class_names else ""))


def _classes_from_stimuli(stimuli: StimulusSet, plans: list[_SessionPlan]) -> _Classes:
    ids = {image_id: i for i, image_id in enumerate(stimuli.image_ids)}

    def of_stimulus(image_id: str, label: str | None) -> int:
        if image_id not in ids:
            raise ValueError(f"marker image id {image_id!r} is not in the stimulus set "
                             f"({stimuli.image_ids[0]}..{stimuli.image_ids[-1]}); pass the set the session showed")
        k = int(stimuli.class_ids[ids[image_id]])
        if label is not None and label != stimuli.class_names[k]:
            raise ValueError(f"marker says image {image_id!r} is {label!r} but the stimulus set says "
                             f"{stimuli.class_names[k]!r}; pass the set the session showed")
        return k

    return _Classes(list(stimuli.class_names), of_stimulus, stimuli, "stimulus set")


def _classes_from_map(image_map: Mapping[str, str | int], class_names: Sequence[str] | None) -> _Classes:
    values = list(image_map.values())
    if class_names is None:
        if not all(isinstance(v, str) for v in values):
            raise ValueError("image_map maps to class indices: pass class_names too")
        class_names = sorted(set(values))
    names = list(class_names)
    index = {n: i for i, n in enumerate(names)}

    def of_map(image_id: str, label: str | None) -> int:
        if image_id not in image_map:
            raise ValueError(f"image id {image_id!r} of a marker is not in image_map ({len(image_map)} ids)")
        v = image_map[image_id]
        k = index.get(v) if isinstance(v, str) else int(v)
        if k is None or not 0 <= k < len(names):
            raise ValueError(f"image_map[{image_id!r}]={v!r} is not a class of class_names ({len(names)} classes)")
        return k

    return _Classes(names, of_map, None, "image_map")


# --------------------------------------------------------------------------- building
def _from_model(model: str | os.PathLike) -> tuple[PreprocessConfig | None, int, float, Any]:
    from bci.models.checkpoint import read_config

    cfg = read_config(model)
    pre = PreprocessConfig.from_dict(cfg.preprocessing) if cfg.preprocessing else None
    return pre, int(cfg.n_times), float(cfg.sfreq), cfg


def _dataset_channels(first: _SessionPlan, cmap: ChannelMap | None) -> tuple[list[str], list[str]]:
    """Channel names and types of the epochs: the sessions' own, or the model's after a channel map."""
    if cmap is None or cmap.is_identity:
        return first.ch_names, first.ch_types
    fallback = next((first.ch_types[s] for s in cmap.sources if s != INTERPOLATED), "EEG")
    return list(cmap.model_names), [first.ch_types[s] if s != INTERPOLATED else fallback for s in cmap.sources]


def _check_plans(plans: list[_SessionPlan]) -> None:
    first = plans[0]
    for p in plans[1:]:
        if p.ch_names != first.ch_names or not math.isclose(p.sfreq, first.sfreq):
            raise ValueError(
                f"session {str(p.path)!r} has {len(p.ch_names)} channels at {p.sfreq:g} Hz but "
                f"{str(first.path)!r} has {len(first.ch_names)} at {first.sfreq:g} Hz (or other channel names); "
                "build one dataset per montage and rate"
            )


def _subject_codes(plans: list[_SessionPlan], subject: str | int | None) -> tuple[list[int], list[str]]:
    names: list[str] = []
    codes = []
    for p in plans:
        name = str(subject) if subject is not None else str(p.attrs.get("subject") or "subject-0")
        if name not in names:
            names.append(name)
        codes.append(names.index(name))
    return codes, names


def epochs_from_sessions(
    sessions: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    window: WindowOptions | None = None,
    labels: LabelOptions | None = None,
    *,
    splits: Sequence[str] = DEFAULT_SPLITS,
    seed: int = 0,
    overwrite: bool = False,
    chunk_epochs: int = 64,
    source: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> BuildReport:
    """Cut event-locked epochs from Zarr sessions with the runtime's code path into an epoch dataset.

    Parameters
    ----------
    sessions : sequence of path
        Zarr sessions (``bci record``, ``bci simulate --out``, ``bci live --record``).
    out : path
        Dataset to create.
    window : WindowOptions, optional
        Preprocessing, model, window offset and length, marker filter and stream selection
        (default ``WindowOptions()``: default preprocessing, 440 samples from 20 ms after each
        ``stim/`` marker for EEG).
    labels : LabelOptions, optional
        Stimulus set, class names, image map, subject and block gap (default ``LabelOptions()``:
        classes from the simulator's stimuli or the marker labels).
    splits : sequence of {'block', 'zero_shot', 'session', 'subject'}
        Splits to store (each skipped, with a note, when the data do not allow it).
    seed : int
        Seed of the splits.
    overwrite : bool
    chunk_epochs : int
    source : dict, optional
        Extra provenance stored with the dataset.
    progress : callable, optional
        ``progress(session_index, n_sessions, fraction_done, n_epochs)``.

    Returns
    -------
    BuildReport
    """
    t0 = time.perf_counter()
    window = check_type("window", window if window is not None else WindowOptions(), WindowOptions)
    labels = check_type("labels", labels if labels is not None else LabelOptions(), LabelOptions)
    _check_split_kinds(splits)
    plans = [_scan_session(p, data_stream=window.data_stream, marker_stream=window.marker_stream,
                           marker_filter=window.compiled_filter(), block_gap=labels.block_gap,
                           skip_damaged=window.skip_damaged)
             for p in _checked_paths(sessions)]
    _check_plans(plans)
    marker_filter = window.marker_filter or None
    pre, spec, out_sfreq, cmap = _window_setup(plans[0], window)
    classes = _resolve_classes(plans, labels)
    for plan in plans:  # every label resolves before anything is written
        for image_id, label, _ in plan.stim.values():
            classes.of_epoch(image_id, label)
    first = plans[0]
    window_attrs = {"offset": spec.offset, "n_times": spec.n_times, "input_sfreq": first.sfreq,
                    "marker_filter": marker_filter,
                    "code_path": "bci.runtime.replay.decode_session -> bci.runtime.pipeline.Pipeline"}
    if cmap is not None and not cmap.is_identity:
        window_attrs["channel_map"] = cmap.to_dict()
    ch_names, ch_types = _dataset_channels(first, cmap)
    writer = EpochDatasetWriter(
        out, n_channels=len(ch_names), n_times=spec.n_times, sfreq=out_sfreq, ch_names=ch_names,
        ch_types=ch_types, class_names=classes.names, modality=first.modality, chunk_epochs=chunk_epochs,
        overwrite=overwrite, preprocessing=None if pre is None else pre.to_dict(), attrs={"window": window_attrs},
    )
    try:
        report = _write_sessions(writer, plans, spec=spec, sfreq=out_sfreq, pre=pre, marker_filter=marker_filter,
                                 classes=classes, subject=labels.subject, progress=progress, channel_map=cmap,
                                 source=lambda per_session: _source(plans, per_session, classes, window.model,
                                                                    source))
    except BaseException:
        shutil.rmtree(writer.path, ignore_errors=True)  # the incomplete store this call created
        raise
    _store_splits(report, splits, seed)
    report.seconds = time.perf_counter() - t0
    return report


def _window_setup(first: _SessionPlan, window: WindowOptions
                  ) -> tuple[PreprocessConfig | None, WindowSpec, float, ChannelMap | None]:
    """Preprocessing, window, output rate and channel map (from a checkpoint when ``window.model`` is given).

    With a model, the sessions' channels are mapped onto the model's (``window.channels``) exactly as
    ``bci live`` maps a stream; the pipeline applies the map before preprocessing.
    """
    pre, n_times, model = window.preprocess_config(), window.n_times, window.model
    model_sfreq, model_names, cmap = None, None, None
    if model is not None:
        pre, n_times, model_sfreq, config = _from_model(model)
        model_names = config.ch_names
        cmap = (window.channels or ChannelMapOptions()).for_model(first.ch_names, config)  # as bci live maps
    spec = WindowSpec(n_times=int(n_times if n_times is not None else DEFAULT_N_TIMES[first.modality]),
                      offset=float(window.offset if window.offset is not None else DEFAULT_OFFSET[first.modality]))
    out_names = _dataset_channels(first, cmap)[0]
    if model_sfreq is not None and plan_rate(first.sfreq, model_sfreq, pre,
                                             model_name=f"model {str(model)!r}").resample:
        out_sfreq = model_sfreq  # the pipeline resamples the sessions to the model's rate, as live
    else:
        out_sfreq = OnlinePreprocessor(pre, first.sfreq, out_names).out_sfreq if pre is not None else first.sfreq
    _check_model_fit(model, model_sfreq, model_names, out_sfreq, out_names)
    return pre, spec, out_sfreq, cmap


def _write_sessions(writer: EpochDatasetWriter, plans: list[_SessionPlan], *, spec: WindowSpec, sfreq: float,
                    pre: PreprocessConfig | None, marker_filter: str | None, classes: _Classes,
                    subject: str | int | None, progress: ProgressFn | None,
                    source: Callable[[list[dict[str, Any]]], dict[str, Any]],
                    channel_map: ChannelMap | None = None) -> BuildReport:
    """Cut every session into ``writer``, add the image table and provenance, close it."""
    subj_codes, subj_names = _subject_codes(plans, subject)
    per_session, dropped, skipped = [], {}, 0
    for i, plan in enumerate(plans):
        info = _cut_session(plan, i, len(plans), writer, spec=spec, sfreq=sfreq, pre=pre,
                            marker_filter=marker_filter, classes=classes, subject=subj_codes[i], progress=progress,
                            channel_map=channel_map)
        per_session.append(info)
        skipped += info["skipped"]
        for k, v in info["dropped"].items():
            dropped[k] = dropped.get(k, 0) + v
    if classes.stimuli is not None:
        st = classes.stimuli
        writer.set_images(st.images, st.image_ids, st.captions, st.template_captions)
    writer.set_attrs(source=source(per_session))
    path = writer.close(subject_names=subj_names, session_names=[p.name for p in plans])
    return BuildReport(path=path, n_epochs=writer.n_epochs, n_sessions=len(plans), dropped=dropped,
                       skipped=skipped, seconds=0.0, sessions=per_session)


def _checked_paths(sessions: Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(sessions, (str, os.PathLike)):
        sessions = [sessions]
    paths = [Path(s) for s in sessions]
    if not paths:
        raise ValueError("sessions is empty; give at least one Zarr session")
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"session {str(p)!r} does not exist")
    return paths


def _check_model_fit(model: Any, sfreq: float | None, names: list[str] | None, out_sfreq: float,
                     ch_names: list[str]) -> None:
    if model is None:
        return
    if sfreq is not None and not math.isclose(sfreq, out_sfreq, rel_tol=1e-6):
        raise ValueError(f"model {str(model)!r} expects {sfreq:g} Hz but its preprocessing gives {out_sfreq:g} Hz "
                         "windows from these sessions; use a model trained at this rate")
    if names is not None and list(names) != list(ch_names):
        raise ValueError(f"model {str(model)!r} expects channels {names[:3]}... ({len(names)}) but the sessions have "
                         f"{ch_names[:3]}... ({len(ch_names)}); use a model trained on this montage")


def _cut_session(plan: _SessionPlan, index: int, n_sessions: int, writer: EpochDatasetWriter, *, spec: WindowSpec,
                 sfreq: float,
                 pre: PreprocessConfig | None, marker_filter: str | None, classes: _Classes, subject: int,
                 progress: ProgressFn | None, channel_map: ChannelMap | None = None) -> dict[str, Any]:
    """Run one session through the runtime pipeline and append its windows."""
    reader = SessionReader(plan.path, skip_damaged=plan.skip_damaged)
    times = reader.times(plan.data_key)
    t_first, t_span = (float(times[0]), float(times[-1] - times[0])) if len(times) else (0.0, 0.0)
    tap = _WindowTap(spec.n_times, sfreq)
    counts = {"epochs": 0, "skipped": 0}

    def on_window(window: np.ndarray, record: dict[str, Any]) -> None:
        key = (str(record["marker"]), float(record["marker_time"]))
        if key not in plan.stim:
            counts["skipped"] += 1
            return
        image_id, label, block = plan.stim[key]
        writer.append(window[None], labels=[classes.of_epoch(image_id, label)], image_ids=[image_id],
                      subject=subject, session=index, block=block, marker_time=[key[1]])
        counts["epochs"] += 1
        if progress is not None and t_span > 0:
            progress(index, n_sessions, min(1.0, (key[1] - t_first) / t_span), writer.n_epochs)

    sink = _EpochSink(tap, on_window)
    pipeline = Pipeline(tap, sfreq=plan.sfreq, ch_names=plan.ch_names, preprocess=pre, window=spec,  # type: ignore[arg-type]
                        marker_filter=marker_filter, sinks=[sink], stream_name=plan.name, channel_map=channel_map)
    bad = bad_spans(reader, plan.marker_key, times, plan.sfreq)
    decode_session(reader, pipeline, data_key=plan.data_key, marker_key=plan.marker_key,
                   leave_out=[(b.start_time, b.end_time, b.reason) for b in bad])
    pipeline.close()
    if progress is not None:
        progress(index, n_sessions, 1.0, writer.n_epochs)
    return {"path": str(plan.path), "name": plan.name, "data_stream": plan.data_key,
            "marker_stream": plan.marker_key, "n_markers": plan.n_markers, "n_stimulus_markers": len(plan.stim),
            "n_epochs": counts["epochs"], "skipped": counts["skipped"], "dropped": dict(sink.dropped),
            "damaged": _damaged_info(reader, [plan.data_key, plan.marker_key]),
            "bad_annotations": [b.to_dict() for b in bad], "dropped_markers": sink.dropped_markers,
            "block_rule": plan.block_rule, "synthetic": bool(plan.attrs.get("synthetic", False)),
            "simulation": plan.attrs.get("simulation")}


def _damaged_info(reader: SessionReader, keys: list[str]) -> list[dict[str, Any]]:
    """The damaged ranges a ``skip_damaged`` reader left out (none otherwise: it would have raised)."""
    if not reader.skip_damaged:
        return []
    return [{"stream": r.stream, "array": r.array, "chunk": r.chunk, "start": r.start, "stop": r.stop,
             "start_time": r.start_time, "end_time": r.end_time, "problem": r.problem, "text": r.describe()}
            for key in keys for r in reader.damaged(key)]


def _source(plans: list[_SessionPlan], per_session: list[dict[str, Any]], classes: _Classes, model: Any,
            extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "builder": "offline.data.build.epochs_from_sessions",
        "sessions": per_session,
        "classes_from": classes.rule,
        "model": None if model is None else str(model),
        "synthetic": all(bool(p.attrs.get("synthetic", False)) for p in plans),
        **dict(extra or {}),
    }


_SPLIT_BUILDERS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "block": block_split,
    "zero_shot": zero_shot_split,
    "session": session_split,
    "subject": subject_split,
}


def _check_split_kinds(kinds: Sequence[str]) -> None:
    if isinstance(kinds, str):
        raise TypeError(f"splits={kinds!r} must be a list of split kinds, e.g. ['block']")
    unknown = [k for k in kinds if k not in _SPLIT_BUILDERS]
    if unknown:
        raise ValueError(f"splits={list(kinds)!r}: unknown kind(s) {unknown}; choose from {sorted(_SPLIT_BUILDERS)}")


def _store_splits(report: BuildReport, kinds: Sequence[str], seed: int) -> None:
    """Build and store each split kind the data allow; note why the others were skipped."""
    if not kinds:
        return
    ds = EpochDataset.open(report.path, cache_bytes=0)
    for kind in kinds:
        try:
            parts = _SPLIT_BUILDERS[kind](ds, seed=seed)
        except ValueError as exc:
            report.notes.append(f"no {kind!r} split: {exc}")
            continue
        meta: dict[str, Any] = {"builder": f"offline.data.splits.{_SPLIT_BUILDERS[kind].__name__}", "seed": seed}
        if kind == "zero_shot":
            meta["held_out_classes"] = [ds.class_names[c] for c in np.unique(ds.labels[parts["test"]])]
        ds.add_split(kind, parts, kind=kind, meta=meta)
        report.splits.append(kind)


# --------------------------------------------------------------------------- simulation
def _subset_classes(stimuli: StimulusSet, classes: Sequence[int]) -> StimulusSet:
    """The images of ``classes`` only, class ids renumbered 0..k-1 (image ids kept)."""
    classes = [int(c) for c in classes]
    keep = np.flatnonzero(np.isin(stimuli.class_ids, classes))
    remap = {c: i for i, c in enumerate(classes)}
    return StimulusSet(
        images=stimuli.images[keep],
        image_ids=[stimuli.image_ids[i] for i in keep],
        class_ids=np.array([remap[int(stimuli.class_ids[i])] for i in keep], dtype=np.int64),
        class_names=[stimuli.class_names[c] for c in classes],
        captions=[stimuli.captions[i] for i in keep],
        template_captions=[stimuli.template_captions[i] for i in keep],
        features=stimuli.features[keep],
    )


def _spread_classes(n_classes: int, n_total: int) -> list[int]:
    """``n_classes`` class indices spread evenly over ``0..n_total-1`` (shapes and colours vary)."""
    return sorted({int(round(x)) for x in np.linspace(0, n_total - 1, n_classes)})


def _write_simulated_session(path: Path, stimuli: StimulusSet, schedule: list[StimulusEvent], *, snr: float,
                             seed: int, design: str, session: int = 0, classes: list[int], n_images_per_class: int,
                             image_size: int) -> Path:
    """The simulator's samples and markers into a Zarr session (as ``bci simulate --out`` writes them)."""
    sim = EEGSimulator(stimuli, EEGSimConfig(snr=snr, seed=seed, session=session))
    duration = schedule[-1].onset + 1.5
    spec = SimulationSpec(name="SimEEG", modality="eeg", duration=duration, snr=snr, seed=seed, design=design,
                          session=session)
    attrs = {
        "source": "synthetic world (offline.data.build.epochs_from_simulation)",
        "synthetic": True,
        "simulation": {"modality": "eeg", "duration": duration, "snr": snr, "seed": seed, "session": session,
                       "design": design,
                       "n_images_per_class": n_images_per_class, "image_size": image_size, "classes": classes},
    }
    sfreq = sim.sfreq
    with SessionWriter(path, overwrite=True, attrs=attrs) as writer:
        data_key = writer.add_stream(sim.description(name=spec.name, source_id=spec.source_id))
        marker_key = writer.add_stream(marker_description(spec))
        for data, first in sim.stream(schedule, chunk_size=int(round(sfreq)), duration=duration):
            writer.append(data_key, data, (first + np.arange(len(data))) / sfreq)
        idx = np.array([int(round(ev.onset * sfreq)) for ev in schedule])
        writer.append(marker_key, np.array([[ev.marker] for ev in schedule], dtype=object), idx / sfreq)
    return path


def epochs_from_simulation(
    out: str | os.PathLike,
    simulation: SimulationOptions | None = None,
    window: WindowOptions | None = None,
    *,
    splits: Sequence[str] = ("block", "zero_shot"),
    keep_session: str | os.PathLike | None = None,
    overwrite: bool = False,
    chunk_epochs: int = 64,
    progress: ProgressFn | None = None,
) -> BuildReport:
    """Simulate a session of the synthetic world and build its epoch dataset (same code path as sessions).

    The simulated session (128-channel EEG at 1 kHz + ``stim/<id>/<label>`` and block
    markers) is written to a temporary Zarr session (or ``keep_session``), then
    :func:`epochs_from_sessions` cuts it. The dataset holds the stimulus images, captions
    and template captions, and a ``block`` and a ``zero_shot`` split.

    Parameters
    ----------
    out : path
    simulation : SimulationOptions, optional
        The simulated experiment: trials and blocks per class, SNR, seed (of the stimuli, the
        schedule, the simulator and the splits), classes, images, design, session (default
        ``SimulationOptions()``).
    window : WindowOptions, optional
        As for :func:`epochs_from_sessions` (default ``WindowOptions()``: default
        preprocessing, 440 samples from 20 ms after each stimulus).
    splits : sequence of str
        Splits to store.
    keep_session : path, optional
        Keep the simulated session there (otherwise a temporary directory is used).
    overwrite, chunk_epochs, progress
        As for :func:`epochs_from_sessions`.

    Returns
    -------
    BuildReport
    """
    t0 = time.perf_counter()
    sim = check_type("simulation", simulation if simulation is not None else SimulationOptions(), SimulationOptions)
    n_per_class, n_blocks, snr, seed = sim.n_per_class, sim.n_blocks, sim.snr, sim.seed
    n_classes, n_images_per_class, design, session = sim.n_classes, sim.n_images_per_class, sim.design, sim.session
    image_size = sim.image_size
    full = make_stimuli(n_per_class=n_images_per_class, size=image_size, seed=seed)
    classes = _spread_classes(int(n_classes), full.n_classes)
    stimuli = _subset_classes(full, classes) if len(classes) < full.n_classes else full
    schedule = make_balanced_schedule(stimuli, n_per_class=n_per_class, n_blocks=n_blocks, design=design,
                                      seed=seed if session == 0 else seed * 1_000_003 + session)
    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{str(out_path)!r} already exists; choose a new path or pass overwrite=True "
                              "(--overwrite on the CLI)")
    with tempfile.TemporaryDirectory(prefix="bci-sim-") as tmp:
        session_path = Path(keep_session) if keep_session is not None else Path(tmp) / "session.zarr"
        _write_simulated_session(session_path, stimuli, schedule, snr=float(snr), seed=int(seed), design=design,
                                 session=int(session),
                                 classes=classes if len(classes) < full.n_classes else [],
                                 n_images_per_class=n_images_per_class, image_size=image_size)
        report = epochs_from_sessions(
            [session_path], out_path, window, LabelOptions(stimuli=stimuli, subject=f"sim-{seed}"),
            splits=splits, seed=seed, overwrite=overwrite, chunk_epochs=chunk_epochs, progress=progress,
            source={"simulation": {"n_per_class": n_per_class, "n_blocks": n_blocks, "snr": snr, "seed": seed,
                                   "n_classes": n_classes, "n_images_per_class": n_images_per_class,
                                   "design": design, "session": session,
                                   "session_kept": None if keep_session is None else str(session_path)}},
        )
    build_seconds = report.seconds
    report.seconds = time.perf_counter() - t0
    report.notes.append(f"simulating the session took {report.seconds - build_seconds:.1f} s, cutting the epochs "
                        f"{build_seconds:.1f} s")
    return report
