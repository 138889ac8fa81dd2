"""Channel mapping at the boundary, stream -> model: names, a map file, montage positions, interpolation.

A real amplifier names its channels its own way (``Fp1``, ``FP1``, ``EEG Fp1-Ref``, ``E1``),
adds channels the model never saw (a trigger ``Status``) and may lack a few the model needs.
:func:`map_channels` decides **once, at start** which stream channel feeds each model channel and
returns an immutable :class:`ChannelMap`; :meth:`ChannelMap.apply` then maps every chunk
(``(n_samples, n_stream_channels)`` -> ``(n_samples, n_model_channels)`` float32): a pure
index take, plus one small matmul when channels are interpolated.

Matching, in this order (each step sees only the channels the earlier ones left):

1. ``channel_map`` (a TSV or JSON file, or a dict ``stream -> model``): an explicit map wins for
   every channel it names;
2. exact names;
3. normalised names (:func:`normalise_name`: case-insensitive, without an ``EEG`` type prefix and
   a reference suffix such as ``-Ref``/``-A1``/``-M2``/``-AVG``); two channels with one
   normalised name are an error, never a guess;
4. ``stream_montage``: electrode positions (an mne standard montage for the stream, the model's
   montage for the model), both normalised to a unit head, assigned one-to-one
   (:func:`scipy.optimize.linear_sum_assignment`); a pair further apart than half the model
   montage's median electrode spacing does not match;
5. model channels still missing are interpolated from the matched ones with mne's spherical
   splines (:meth:`mne.io.Raw.interpolate_bads` run once on a unit basis gives the matrix), up to
   ``max_interpolated`` of the model's channels; beyond that, a :class:`ValueError` names them.

Stream channels left over (extras, triggers) are dropped and listed by :meth:`ChannelMap.describe`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streams._checks import check_float, check_type, ensure_path

__all__ = [
    "DEFAULT_MAX_INTERPOLATED",
    "INTERPOLATED",
    "ChannelMap",
    "ChannelMapOptions",
    "check_map_options",
    "find_montage",
    "map_channels",
    "normalise_name",
    "read_channel_map",
]

#: Default largest fraction of the model's channels that may be interpolated.
DEFAULT_MAX_INTERPOLATED = 0.1
#: The source of a model channel that no stream channel feeds.
INTERPOLATED = "interpolated"
#: A montage pair matches when closer than this fraction of the model montage's median electrode spacing.
MONTAGE_MATCH_SPACING = 0.5
#: How each model channel was matched, in the order of the steps.
RULES = ("file", "exact", "normalised", "montage", INTERPOLATED)

_PREFIX = re.compile(r"^eeg[\s:_-]+", re.IGNORECASE)
_SUFFIX = re.compile(r"[\s_-]+(?:ref|a1|a2|m1|m2|a1a2|m1m2|le|avg|av|car)$", re.IGNORECASE)
_MAP_FILE = "channel_map"


def normalise_name(name: str) -> str:
    """The name used by the normalised-name step: case-folded, without ``EEG `` and a reference suffix.

    ``"EEG Fp1-Ref"``, ``"FP1"``, ``"Fp1-A1"`` and ``"fp1"`` all give ``"fp1"``; a bipolar name such
    as ``"Fp1-F7"`` is kept whole (``"fp1-f7"``), and so is a name that is only a prefix or suffix.
    """
    text = str(name).strip()
    stripped = _PREFIX.sub("", text)
    stripped = _SUFFIX.sub("", stripped)
    return (stripped or text).casefold()


# ----------------------------------------------------------------------------------------- the map
@dataclass(frozen=True, eq=False)
class ChannelMap:
    """Which stream channel feeds each model channel (immutable; built by :func:`map_channels`).

    Attributes
    ----------
    stream_names, model_names : tuple of str
        Channels of the stream (as it sends them) and of the model (as it expects them).
    sources : tuple of (int or "interpolated")
        For each model channel: the stream channel index that feeds it, or ``"interpolated"``.
    rules : tuple of str
        For each model channel: how it was matched (``file``, ``exact``, ``normalised``,
        ``montage`` or ``interpolated``).
    dropped : tuple of str
        Stream channels that feed no model channel.
    interpolated : tuple of str
        Model channels interpolated from the others.
    weights : ndarray or None
        ``(n_interpolated, n_direct)`` float32: each interpolated channel from the directly fed
        model channels, in model order (None when nothing is interpolated).
    stream_montage, model_montage : str or None
        Montages used (None: not needed).
    """

    stream_names: tuple[str, ...]
    model_names: tuple[str, ...]
    sources: tuple[int | str, ...]
    rules: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    interpolated: tuple[str, ...] = ()
    weights: np.ndarray | None = None
    stream_montage: str | None = None
    model_montage: str | None = None
    _index: np.ndarray = field(init=False, repr=False)
    _direct: np.ndarray = field(init=False, repr=False)
    _interp: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        direct = np.array([i for i, s in enumerate(self.sources) if s != INTERPOLATED], dtype=np.int64)
        index = np.array([self.sources[i] for i in direct], dtype=np.int64)
        interp = np.array([i for i, s in enumerate(self.sources) if s == INTERPOLATED], dtype=np.int64)
        if len(interp) and (self.weights is None or self.weights.shape != (len(interp), len(direct))):
            raise ValueError(f"ChannelMap: {len(interp)} interpolated channel(s) need weights of shape "
                             f"({len(interp)}, {len(direct)})")
        for name, arr in (("_index", index), ("_direct", direct), ("_interp", interp)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if self.weights is not None:
            w = np.array(self.weights, dtype=np.float32)
            w.setflags(write=False)
            object.__setattr__(self, "weights", w)

    @property
    def is_identity(self) -> bool:
        """True when the stream's channels are the model's, in order: :meth:`apply` returns its input."""
        return self.stream_names == self.model_names and not self.interpolated

    @property
    def method(self) -> str:
        """``identity``, ``index`` (a pure take) or ``interpolation`` (a take and a matmul)."""
        if self.is_identity:
            return "identity"
        return "interpolation" if self.interpolated else "index"

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Map ``(n_samples, n_stream_channels)`` to ``(n_samples, n_model_channels)`` float32.

        An identity map returns ``data`` itself (no copy, dtype unchanged).
        """
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != len(self.stream_names):
            raise ValueError(f"channel map expects (n_samples, {len(self.stream_names)}) stream data, got an array "
                             f"of shape {data.shape}")
        if self.is_identity:
            return data
        direct = data[:, self._index].astype(np.float32, copy=False)
        if not len(self._interp):
            return direct
        out = np.empty((len(data), len(self.model_names)), dtype=np.float32)
        out[:, self._direct] = direct
        out[:, self._interp] = direct @ self.weights.T
        return out

    def counts(self) -> dict[str, int]:
        """Model channels per matching rule (``file``, ``exact``, ``normalised``, ``montage``, ``interpolated``)."""
        return {rule: sum(r == rule for r in self.rules) for rule in RULES}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: method, ``[stream, model]`` pairs, dropped, interpolated, counts, montages."""
        return {
            "method": self.method,
            "pairs": [[self.stream_names[s], m] for s, m in zip(self.sources, self.model_names) if s != INTERPOLATED],
            "dropped": list(self.dropped),
            "interpolated": list(self.interpolated),
            "matched_by": self.counts(),
            "stream_montage": self.stream_montage,
            "model_montage": self.model_montage,
        }

    def describe(self) -> str:
        """A short text for the start of a run: how each model channel is fed, what is dropped."""
        n_s, n_m = len(self.stream_names), len(self.model_names)
        if self.is_identity:
            return f"channels: the stream's {n_s} channels are the model's (no mapping)"
        c = self.counts()
        text = (f"channels: stream {n_s} -> model {n_m}: {c['exact']} exact, {c['normalised']} by normalised name, "
                f"{c['file']} via file, {c['montage']} via montage, {c['interpolated']} interpolated")
        if self.interpolated:
            text += f" ({_some(self.interpolated)})"
        if self.dropped:
            text += f"; dropped {len(self.dropped)} stream channel(s): {_some(self.dropped, 20)}"
        return text


def _some(names: Sequence[str], k: int = 10) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


# ----------------------------------------------------------------------------------------- map files
def read_channel_map(source: str | os.PathLike | Mapping[str, str]) -> dict[str, str]:
    """An explicit map ``stream name -> model name`` from a dict, a JSON object file or a TSV file.

    A ``.json`` file holds one object ``{"E1": "A1", ...}``; any other file is a TSV whose first
    line (after ``#`` comment lines) is the header ``stream<TAB>model`` and whose every other
    non-empty line is ``<stream name><TAB><model name>``. Errors name the file and the line.
    """
    if isinstance(source, Mapping):
        pairs = list(source.items())
        where = "channel_map"
    else:
        path = ensure_path(_MAP_FILE, source, must_exist=True, kind="file")
        where = str(path)
        pairs = _read_json_map(path) if path.suffix.lower() == ".json" else _read_tsv_map(path)
    out: dict[str, str] = {}
    for stream, model in pairs:
        if not isinstance(stream, str) or not isinstance(model, str) or not stream or not model:
            raise TypeError(f"{where}: every entry must map a stream channel name (str) to a model channel name "
                            f"(str), got {stream!r} -> {model!r}")
        if stream in out:
            raise ValueError(f"{where}: stream channel {stream!r} is mapped twice ({out[stream]!r} and {model!r}); "
                             "map each stream channel once")
        out[stream] = model
    return out


def _read_json_map(path: Path) -> list[tuple[Any, Any]]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{_MAP_FILE} {str(path)!r}: not valid JSON at line {exc.lineno}: {exc.msg}; write one "
                         'object {"<stream name>": "<model name>", ...}') from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{_MAP_FILE} {str(path)!r}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{_MAP_FILE} {str(path)!r}: holds a JSON {type(obj).__name__}, not an object; write "
                         '{"<stream name>": "<model name>", ...}')
    return list(obj.items())


def _read_tsv_map(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{_MAP_FILE} {str(path)!r}: not UTF-8 text ({exc.reason})") from None
    pairs: list[tuple[str, str]] = []
    header_seen = False
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if not header_seen:
            if [f.casefold() for f in fields] != ["stream", "model"]:
                raise ValueError(f"{_MAP_FILE} {str(path)!r} line {number}: the first line must be the header "
                                 f"'stream<TAB>model', got {line!r}")
            header_seen = True
            continue
        if len(fields) != 2 or not all(fields):
            raise ValueError(f"{_MAP_FILE} {str(path)!r} line {number}: expected '<stream name><TAB><model name>' "
                             f"(2 tab-separated columns), got {line!r}")
        pairs.append((fields[0], fields[1]))
    if not header_seen:
        raise ValueError(f"{_MAP_FILE} {str(path)!r}: empty; the first line must be the header 'stream<TAB>model'")
    return pairs


def check_map_options(channel_map: Any, stream_montage: Any, max_interpolated: Any) -> tuple[Any, str | None, float]:
    """Check the options of a channel mapping (shared by ``DecodeOptions`` and ``WindowOptions``).

    Returns ``(channel_map, stream_montage, max_interpolated)``: a path (checked to exist) or a dict
    or None; a montage name (checked against mne's list) or None; a fraction in [0, 1].
    """
    if channel_map is not None and not isinstance(channel_map, Mapping):
        channel_map = ensure_path(_MAP_FILE, channel_map, must_exist=True, kind="file")
    if stream_montage is not None:
        check_type("stream_montage", stream_montage, str, "an mne standard montage name (str)")
        _check_montage_name("stream_montage", stream_montage)
    return channel_map, stream_montage, check_float("max_interpolated", max_interpolated, low=0.0, high=1.0)


# ----------------------------------------------------------------------------------------- montages
def _builtin_montages() -> list[str]:
    import mne

    return list(mne.channels.get_builtin_montages())


def _check_montage_name(name: str, value: str) -> None:
    known = _builtin_montages()
    if value not in known:
        raise ValueError(f"{name}={value!r} is not an mne standard montage (e.g. {', '.join(known[:6])}, ...); "
                         "list them all with: python -c \"import mne; print(mne.channels.get_builtin_montages())\"")


def _geometry(montage: str) -> dict[str, np.ndarray]:
    """Unit direction of every electrode of a standard montage (head size normalised by a sphere fit)."""
    from streams.synthetic.eeg import montage_geometry

    names, dirs, _ = montage_geometry(montage)
    return dict(zip(names, dirs))


def find_montage(names: Sequence[str]) -> str | None:
    """The mne standard montage holding every name in ``names`` (the smallest such; None if none does)."""
    import mne

    wanted = set(names)
    best: tuple[int, str] | None = None
    for name in _builtin_montages():
        if name == "standard_1020":  # deprecated alias of colin27_1020 (warns on use)
            continue
        got = set(mne.channels.make_standard_montage(name).ch_names)
        if wanted <= got and (best is None or len(got) < best[0]):
            best = (len(got), name)
    return None if best is None else best[1]


def _spacing(geometry: dict[str, np.ndarray]) -> float:
    """Median angle (rad) from each electrode to its nearest neighbour."""
    dirs = np.array(list(geometry.values()))
    ang = np.arccos(np.clip(dirs @ dirs.T, -1.0, 1.0))
    np.fill_diagonal(ang, np.inf)
    return float(np.median(ang.min(axis=1)))


def _interpolation_weights(model_names: Sequence[str], montage: str, missing: Sequence[str]) -> np.ndarray:
    """``(n_missing, n_present)`` spherical-spline weights, from mne's ``interpolate_bads`` on a unit basis."""
    import mne

    montage_obj = mne.channels.make_standard_montage(montage)
    absent = [n for n in model_names if n not in set(montage_obj.ch_names)]
    if absent:
        raise ValueError(f"model channel(s) {_some(absent, 5)} are not in montage {montage!r}, so the missing "
                         f"channels {_some(missing, 5)} cannot be interpolated; name the model's montage or map "
                         "the missing channels with --channel-map FILE")
    present = [n for n in model_names if n not in set(missing)]
    basis = np.zeros((len(model_names), len(present)))
    basis[[list(model_names).index(n) for n in present], np.arange(len(present))] = 1.0
    raw = mne.io.RawArray(basis, mne.create_info(list(model_names), 1.0, "eeg"), verbose=False)
    raw.set_montage(montage_obj, verbose=False)
    raw.info["bads"] = list(missing)
    raw.interpolate_bads(reset_bads=True, verbose=False)
    return raw.get_data(picks=list(missing)).astype(np.float32)


# ----------------------------------------------------------------------------------------- the builder
class _Matcher:
    """The state of one :func:`map_channels` call: what is matched so far, and how."""

    def __init__(self, stream_names: list[str], model_names: list[str]) -> None:
        self.stream, self.model = stream_names, model_names
        self.source: dict[str, int] = {}  # model name -> stream index
        self.rule: dict[str, str] = {}
        self.used: set[int] = set()

    def free_stream(self) -> list[int]:
        return [i for i in range(len(self.stream)) if i not in self.used]

    def free_model(self) -> list[str]:
        return [m for m in self.model if m not in self.source]

    def take(self, model: str, stream_index: int, rule: str) -> None:
        self.source[model] = stream_index
        self.rule[model] = rule
        self.used.add(stream_index)

    def by_file(self, explicit: Mapping[str, str], where: str) -> None:
        unknown_s = [s for s in explicit if s not in self.stream]
        unknown_m = sorted({m for m in explicit.values() if m not in self.model})
        if unknown_s:
            raise ValueError(f"{where} names stream channel(s) {_some(unknown_s, 5)} that the stream does not have "
                             f"(it has {_some(self.stream, 5)}); fix the map's 'stream' column")
        if unknown_m:
            raise ValueError(f"{where} names model channel(s) {_some(unknown_m, 5)} that the model does not have "
                             f"(it has {_some(self.model, 5)}); fix the map's 'model' column")
        targets: dict[str, list[str]] = {}
        for s, m in explicit.items():
            targets.setdefault(m, []).append(s)
        twice = {m: ss for m, ss in targets.items() if len(ss) > 1}
        if twice:
            m, ss = next(iter(twice.items()))
            raise ValueError(f"{where} sends {len(ss)} stream channels ({', '.join(ss)}) to model channel {m!r}"
                             f"{f' (and {len(twice) - 1} more such)' if len(twice) > 1 else ''}; "
                             "map one stream channel to each model channel")
        dup = [s for s in explicit if self.stream.count(s) > 1]
        if dup:
            raise ValueError(f"{where} names stream channel {dup[0]!r}, which the stream has "
                             f"{self.stream.count(dup[0])} times; the map cannot say which one")
        for s, m in explicit.items():
            self.take(m, self.stream.index(s), "file")

    def by_name(self, key: Any, rule: str) -> None:
        """Match free model channels to free stream channels whose ``key(name)`` is equal, unambiguously."""
        free = self.free_stream()
        by_key: dict[str, list[int]] = {}
        for i in free:
            by_key.setdefault(key(self.stream[i]), []).append(i)
        model_keys: dict[str, list[str]] = {}
        for m in self.model:
            model_keys.setdefault(key(m), []).append(m)
        for m in self.free_model():
            hits = by_key.get(key(m), [])
            if not hits:
                continue
            if len(hits) > 1 or len(model_keys[key(m)]) > 1:
                names = [self.stream[i] for i in hits] + [n for n in model_keys[key(m)] if n != m]
                raise ValueError(f"model channel {m!r} matches {', '.join(repr(n) for n in names)} by {rule} name; "
                                 "the match is ambiguous: say which with --channel-map FILE (stream<TAB>model)")
            self.take(m, hits[0], rule)
            by_key.pop(key(m))

    def by_montage(self, stream_montage: str, model_montage: str) -> None:
        from scipy.optimize import linear_sum_assignment

        stream_geo, model_geo = _geometry(stream_montage), _geometry(model_montage)
        stream_norm = {normalise_name(n): d for n, d in stream_geo.items()}
        free_s = [i for i in self.free_stream()
                  if self.stream[i] in stream_geo or normalise_name(self.stream[i]) in stream_norm]
        free_m = [m for m in self.free_model() if m in model_geo]
        if not free_s or not free_m:
            return
        s_dirs = np.array([stream_geo.get(self.stream[i], stream_norm.get(normalise_name(self.stream[i])))
                           for i in free_s])
        m_dirs = np.array([model_geo[m] for m in free_m])
        angle = np.arccos(np.clip(m_dirs @ s_dirs.T, -1.0, 1.0))
        rows, cols = linear_sum_assignment(angle)
        limit = MONTAGE_MATCH_SPACING * _spacing(model_geo)
        for r, c in zip(rows, cols):
            if angle[r, c] <= limit:
                self.take(free_m[r], free_s[c], "montage")


def _names(name: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of channel names (list of str), got {type(value).__name__}")
    out = [str(check_type(f"{name}[{i}]", v, str)) for i, v in enumerate(value)]
    if not out:
        raise ValueError(f"{name} is empty; give the channel names")
    return out


def map_channels(
    stream_names: Sequence[str],
    model_names: Sequence[str],
    *,
    channel_map: str | os.PathLike | Mapping[str, str] | None = None,
    stream_montage: str | None = None,
    model_montage: str | None = None,
    max_interpolated: float = DEFAULT_MAX_INTERPOLATED,
) -> ChannelMap:
    """Decide which stream channel feeds each model channel (see the module docstring for the order).

    Parameters
    ----------
    stream_names : sequence of str
        Channels of the stream, in its order.
    model_names : sequence of str
        Channels the model expects, in its order (unique).
    channel_map : path or dict, optional
        Explicit ``stream -> model`` map: a TSV (``stream<TAB>model`` header) or JSON object file, or a dict.
    stream_montage : str, optional
        mne standard montage of the stream's electrodes: match the rest by position.
    model_montage : str, optional
        mne standard montage of the model's electrodes (None: the smallest standard montage holding
        every model name, found only when positions are needed).
    max_interpolated : float
        Largest fraction of model channels that may be interpolated, in [0, 1].

    Returns
    -------
    ChannelMap

    Raises
    ------
    ValueError
        A map naming unknown channels or sending two stream channels to one model channel, an
        unknown montage, an ambiguous name, or more missing model channels than allowed.
    """
    stream, model = _names("stream_names", stream_names), _names("model_names", model_names)
    if len(set(model)) != len(model):
        raise ValueError(f"model_names has duplicates ({sorted({m for m in model if model.count(m) > 1})[:5]}); "
                         "a model's channel names are unique")
    channel_map, stream_montage, max_interpolated = check_map_options(channel_map, stream_montage, max_interpolated)
    if model_montage is not None:
        check_type("model_montage", model_montage, str, "an mne standard montage name (str)")
        _check_montage_name("model_montage", model_montage)
    if channel_map is None and stream_montage is None and stream == model:
        return ChannelMap(tuple(stream), tuple(model), tuple(range(len(model))), ("exact",) * len(model))
    m = _Matcher(stream, model)
    if channel_map is not None:
        where = "channel_map" if isinstance(channel_map, Mapping) else f"channel_map {str(channel_map)!r}"
        m.by_file(read_channel_map(channel_map), where)
    m.by_name(lambda n: n, "exact")
    m.by_name(normalise_name, "normalised")
    missing = m.free_model()
    if missing and stream_montage is not None:
        model_montage = model_montage or _model_montage(model, missing)
        m.by_montage(stream_montage, model_montage)
        missing = m.free_model()
    allowed = math.floor(max_interpolated * len(model) + 1e-9)
    if len(missing) > allowed:
        raise ValueError(
            f"{len(missing)} of the model's {len(model)} channels have no stream channel: {_some(missing)}; "
            f"at most {allowed} may be interpolated (max_interpolated={max_interpolated:g}); the stream has "
            f"{_some([stream[i] for i in m.free_stream()], 8) or 'no channel'} left over. Map them with "
            "--channel-map FILE (stream<TAB>model), match by position with --stream-montage NAME, or allow more "
            "with --max-interpolated FRACTION")
    weights = None
    if missing:
        model_montage = model_montage or _model_montage(model, missing)
        weights = _interpolation_weights(model, model_montage, missing)
    sources = tuple(m.source.get(n, INTERPOLATED) for n in model)
    rules = tuple(m.rule.get(n, INTERPOLATED) for n in model)
    return ChannelMap(tuple(stream), tuple(model), sources, rules,
                      dropped=tuple(stream[i] for i in m.free_stream()), interpolated=tuple(missing),
                      weights=weights, stream_montage=stream_montage, model_montage=model_montage)


def _model_montage(model: list[str], missing: list[str]) -> str:
    found = find_montage(model)
    if found is None:
        raise ValueError(f"model channel(s) {_some(missing)} have no stream channel, and no mne standard montage "
                         "holds every model channel name, so their positions are unknown; map them with "
                         "--channel-map FILE (stream<TAB>model)")
    return found


# ----------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ChannelMapOptions:
    """How a run maps stream channels to the model's (checked when made); one owner for live, replay and epochs.

    Attributes
    ----------
    channel_map : path or dict, optional
        Explicit ``stream -> model`` map (TSV ``stream<TAB>model`` or JSON object file, or a dict).
    stream_montage : str, optional
        mne standard montage of the stream's electrodes (match by position).
    max_interpolated : float
        Largest fraction of the model's channels that may be interpolated, in [0, 1].
    """

    channel_map: str | os.PathLike | Mapping[str, str] | None = None
    stream_montage: str | None = None
    max_interpolated: float = DEFAULT_MAX_INTERPOLATED

    def __post_init__(self) -> None:
        checked = check_map_options(self.channel_map, self.stream_montage, self.max_interpolated)
        for name, value in zip(("channel_map", "stream_montage", "max_interpolated"), checked):
            object.__setattr__(self, name, value)

    @property
    def given(self) -> bool:
        """True when a map file or a stream montage was asked for."""
        return self.channel_map is not None or self.stream_montage is not None

    def for_model(self, stream_names: Sequence[str], config: Any) -> ChannelMap | None:
        """The map from a stream to a model (its ``config``: a :class:`bci.models.ModelConfig`).

        The targets are ``config.ch_names``; their montage is ``config.extra["montage"]`` when the
        checkpoint records one, else the smallest mne standard montage holding every name
        (:func:`find_montage`). A model without channel names takes the stream's channels as they
        are (an identity map when the counts agree, None when they do not: the model's own check
        then reports the counts); asking for a map file or a montage for such a model is a
        :class:`ValueError`.
        """
        model_names = config.ch_names
        if model_names is None:
            if self.given:
                raise ValueError(f"model {config.name!r} does not record its channel names, so there is nothing to "
                                 "map the stream onto; drop --channel-map/--stream-montage or use a checkpoint with "
                                 "ch_names")
            if len(stream_names) != config.n_chans:
                return None
            model_names = stream_names
        extra = config.extra if isinstance(config.extra, dict) else {}
        montage = extra.get("montage") if isinstance(extra.get("montage"), str) else None
        return map_channels(stream_names, model_names, channel_map=self.channel_map,
                            stream_montage=self.stream_montage, model_montage=montage,
                            max_interpolated=self.max_interpolated)
