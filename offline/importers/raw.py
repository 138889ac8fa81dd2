"""MNE-readable raw files (FIF, EDF/BDF, BrainVision, EEGLAB, ...) to a Zarr session.

The session gets one data stream (type ``EEG``: every channel except stimulus
channels, data in SI units as float32, i.e. volts for EEG) and one marker stream
(type ``Markers``, strings) holding the annotations and the stimulus-channel
events in time order. With an event map, mapped events are written as the
runtime's stimulus markers ``stim/<image_id>/<label>`` so that an epoch dataset
can be cut from the session; unmapped events are written as ``event/<text>``.

Time axis: sample ``i`` lies at ``(first_samp + i) / sfreq`` seconds, the clock
of ``raw.first_time`` and of ``raw.annotations.onset`` (seconds since
``meas_date`` when the file has one). ``meas_date`` is stored as the root
attribute ``meas_date`` (ISO 8601, or null).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offline.importers._checks import (
    EventTarget,
    ImportFormatError,
    check_output,
    first_few,
    normalize_event_map,
    require_file,
)
from streams.description import StreamDescription
from streams.session import SessionWriter

logger = logging.getLogger(__name__)

#: Seconds of data read from the file per block.
BLOCK_SECONDS = 10.0
#: Prefix of events that the event map does not cover (so they never read as stimuli).
UNMAPPED_PREFIX = "event/"

# FIFF unit codes (mne.io.constants.FIFF.FIFF_UNIT_*) -> unit strings.
_FIFF_UNITS = {107: "V", 112: "T", 201: "T/m", 202: "Am", 203: "Am/m^2", 114: "Hz", 108: "Ohm", 101: "m",
               106: "K", 110: "S", 2: "s", -1: ""}


@dataclass
class _Events:
    """Markers collected from annotations and stimulus channels."""

    times: list[float] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def import_raw(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    event_map: Mapping[Any, Any] | None = None,
    stim_channel: str | Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Import an MNE-readable raw file into a Zarr session.

    Parameters
    ----------
    path : str or os.PathLike
        Any file :func:`mne.io.read_raw` reads (``.fif``, ``.edf``, ``.bdf``,
        ``.vhdr``, ``.set``, ...).
    out : str or os.PathLike
        Session directory to create.
    event_map : dict, optional
        Event code (stim channel, e.g. ``"12"``) or annotation description ->
        image id, ``(image_id, label)`` or ``{"image_id", "label"}``. Mapped events
        become ``stim/<image_id>/<label>`` markers, unmapped ones
        ``event/<text>``. Without a map every event is written as it is
        (annotation description, or the code as a number string).
    stim_channel : str or list of str, optional
        Channels to read events from with :func:`mne.find_events`. Default: every
        channel of type ``stim`` (none: annotations only). Stimulus channels are
        not part of the data stream.
    overwrite : bool
        Replace ``out`` if it exists.
    progress : bool
        Show a progress bar (tqdm) while copying samples.

    Returns
    -------
    Path
        The session directory. Its root attribute ``imported_from`` records the
        file, the options and event counts (mapped, unmapped, unused map keys).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ImportFormatError
        mne cannot read the file (unknown extension, truncated or corrupt file),
        the stim channel does not exist, or the file has no data channel.
    """
    src = require_file(path, "raw file")
    out = check_output(out, overwrite)
    emap = normalize_event_map(event_map, source="event_map") if event_map is not None else None
    return raw_to_session(_read_raw(src), src, out, event_map=emap, stim_channel=stim_channel,
                          overwrite=overwrite, progress=progress)


def raw_to_session(
    raw: Any,
    src: Path,
    out: Path,
    *,
    event_map: dict[str, EventTarget] | None = None,
    stim_channel: str | Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write an already opened :class:`mne.io.Raw` as a session (the body of :func:`import_raw`).

    Parameters
    ----------
    raw : mne.io.Raw
        The recording (its annotations become markers).
    src : Path
        The file it was read from (stream name, provenance).
    out : Path
        Session directory to create (checked by the caller).
    event_map : dict, optional
        A normalized event map (:func:`~offline.importers._checks.normalize_event_map`).
    stim_channel, overwrite, progress
        As in :func:`import_raw`.
    provenance : mapping, optional
        Keys added to (or replacing those of) the root attribute ``imported_from``.
    """
    stim = _stim_channels(raw, stim_channel, src)
    picks = [i for i, name in enumerate(raw.ch_names) if name not in stim]
    if not picks:
        raise ImportFormatError(f"{str(src)!r} has only stimulus channels {stim}; no data to import")
    events = _collect_events(raw, stim, src)
    values, counts = _map_events(events, event_map)
    desc = _data_description(raw, picks, src)
    attrs = _provenance(raw, src, event_map, stim, counts)
    attrs["imported_from"].update(provenance or {})
    with SessionWriter(out, overwrite=overwrite, attrs=attrs) as writer:
        key = writer.add_stream(desc)
        writer.set_attrs(key, **_stream_attrs(raw))
        mkey = writer.add_stream(StreamDescription(
            f"{desc.name}-Markers", "Markers", f"{src.name}-markers", ("marker",), dtype="string"))
        _copy_samples(raw, picks, writer, key, progress)
        order = np.argsort(np.asarray(events.times, dtype=np.float64), kind="stable")
        if len(order):
            t = np.asarray(events.times, dtype=np.float64)[order]
            writer.append(mkey, np.array([values[i] for i in order], dtype=object)[:, None], t)
        writer.set_attrs(mkey, durations=[events.durations[i] for i in order],
                         event_sources=[events.sources[i] for i in order])
    logger.info("imported %s -> %s: %d samples, %d markers", src, out, raw.n_times, len(order))
    return out


# --------------------------------------------------------------------------- reading
def _read_raw(src: Path) -> Any:
    import mne

    try:
        # verbose="error": mne's warnings (e.g. about EDF header fields) are logged, not raised
        return mne.io.read_raw(src, preload=False, verbose="error")
    except FileNotFoundError:
        raise
    except Exception as e:  # any failure of a third-party reader is a file problem for the user
        raise ImportFormatError(
            f"mne could not read {str(src)!r} ({type(e).__name__}: {e}). Supported are the formats of "
            "mne.io.read_raw (.fif, .edf, .bdf, .gdf, .vhdr, .set, .cnt, .mff, ...); the file may be "
            "truncated or corrupt"
        ) from e


def _stim_channels(raw: Any, stim_channel: str | Sequence[str] | None, src: Path) -> list[str]:
    if stim_channel is None:
        return [n for n, t in zip(raw.ch_names, raw.get_channel_types()) if t == "stim"]
    wanted = [stim_channel] if isinstance(stim_channel, str) else [str(s) for s in stim_channel]
    missing = [s for s in wanted if s not in raw.ch_names]
    if missing:
        raise ImportFormatError(
            f"stim_channel {missing} not in {str(src)!r}; its channels are {first_few(raw.ch_names, 20)}"
        )
    return wanted


def _collect_events(raw: Any, stim: list[str], src: Path) -> _Events:
    import mne

    ev = _Events()
    ann = raw.annotations
    for onset, duration, text in zip(ann.onset, ann.duration, ann.description):
        ev.times.append(float(onset))
        ev.values.append(str(text))
        ev.durations.append(float(duration))
        ev.sources.append("annotation")
    sfreq = float(raw.info["sfreq"])
    for ch in stim:
        try:
            found = mne.find_events(raw, stim_channel=ch, shortest_event=1, initial_event=True,
                                    verbose="error")
        except (ValueError, RuntimeError) as e:
            raise ImportFormatError(f"{str(src)!r}: could not read events from stim channel {ch!r}: {e}") from e
        for sample, _, code in found:
            ev.times.append(float(sample) / sfreq)
            ev.values.append(str(int(code)))
            ev.durations.append(0.0)
            ev.sources.append(f"stim:{ch}")
    return ev


def _map_events(events: _Events, emap: dict[str, EventTarget] | None) -> tuple[list[str], dict[str, Any]]:
    """Marker strings for every event, and counts for the provenance record."""
    from streams.synthetic.markers import format_marker  # lazy: the package pulls in the simulators

    if emap is None:
        return list(events.values), {"n_events": len(events.values), "event_map": False}
    values, unmapped, used = [], [], set()
    for text in events.values:
        target = emap.get(text.strip())
        if target is None:
            values.append(UNMAPPED_PREFIX + text)
            unmapped.append(text)
        else:
            used.add(text.strip())
            values.append(format_marker(*target))
    if emap and not used and events.values:
        logger.warning("no event matched the event map (events: %s; map keys: %s)",
                       first_few(sorted(set(events.values))), first_few(sorted(emap)))
    return values, {
        "n_events": len(values),
        "event_map": True,
        "n_mapped": len(values) - len(unmapped),
        "n_unmapped": len(unmapped),
        "unmapped_values": sorted(set(unmapped))[:50],
        "unused_map_keys": sorted(set(emap) - used)[:50],
    }


# --------------------------------------------------------------------------- description
def _data_description(raw: Any, picks: list[int], src: Path) -> StreamDescription:
    types = raw.get_channel_types()
    return StreamDescription(
        name=src.stem or "EEG",
        type="EEG",
        source_id=src.name,
        channel_names=tuple(raw.ch_names[i] for i in picks),
        channel_types=tuple(types[i] for i in picks),
        channel_units=tuple(_unit(raw.info["chs"][i]) for i in picks),
        nominal_rate=float(raw.info["sfreq"]),
        dtype="float32",
    )


def _unit(ch: Mapping[str, Any]) -> str:
    unit = _FIFF_UNITS.get(int(ch.get("unit", -1)), "")
    mul = int(ch.get("unit_mul", 0))
    return f"1e{mul} {unit}".strip() if mul and unit else unit


def _stream_attrs(raw: Any) -> dict[str, Any]:
    info = raw.info
    attrs: dict[str, Any] = {
        "mne_info": {
            "highpass": _finite(info.get("highpass")),
            "lowpass": _finite(info.get("lowpass")),
            "line_freq": _finite(info.get("line_freq")),
            "bads": list(info.get("bads") or []),
            "first_samp": int(raw.first_samp),
        }
    }
    montage = raw.get_montage()
    if montage is not None:
        pos = montage.get_positions()
        attrs["montage"] = {
            "coord_frame": str(pos.get("coord_frame")),
            "ch_pos": {str(k): [float(x) for x in v] for k, v in pos["ch_pos"].items()},
        }
    return attrs


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _provenance(raw: Any, src: Path, emap: dict[str, EventTarget] | None, stim: list[str],
                counts: dict[str, Any]) -> dict[str, Any]:
    meas = raw.info.get("meas_date")
    return {
        "meas_date": meas.isoformat() if meas is not None else None,
        "imported_from": {
            "importer": "raw",
            "file": src.name,
            "path": str(src.resolve()),
            "format": src.suffix.lower().lstrip("."),
            "stim_channels": stim,
            "time_axis": "(first_samp + i) / sfreq seconds since meas_date",
            **counts,
        },
    }


# --------------------------------------------------------------------------- samples
def _copy_samples(raw: Any, picks: list[int], writer: SessionWriter, key: str, progress: bool) -> None:
    from tqdm import tqdm

    sfreq = float(raw.info["sfreq"])
    step = max(1, int(round(BLOCK_SECONDS * sfreq)))
    n = raw.n_times
    for start in tqdm(range(0, n, step), desc="samples", unit="block", disable=not progress, leave=False):
        stop = min(n, start + step)
        block = raw.get_data(picks=picks, start=start, stop=stop, verbose="error")
        times = (raw.first_samp + np.arange(start, stop, dtype=np.float64)) / sfreq
        writer.append(key, block.T.astype(np.float32), times)
