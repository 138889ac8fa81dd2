"""Stream descriptions: what a stream is, independent of where it comes from.

A :class:`StreamDescription` is read from an LSL ``StreamInfo`` (channel XML
included), written to and read from Zarr attributes as a plain dict, and
compared on reconnect with :meth:`StreamDescription.check_same_source`.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from streams._checks import check_float, check_type
from streams.errors import StreamMismatchError

#: LSL channel formats by name, as stored in ``dtype``.
LSL_FORMATS: dict[str, int] = {
    "float32": 1,
    "float64": 2,
    "string": 3,
    "int32": 4,
    "int16": 5,
    "int8": 6,
    "int64": 7,
}
_FORMAT_NAMES = {code: name for name, code in LSL_FORMATS.items()}

#: The rate LSL uses for irregular streams (markers, events).
IRREGULAR_RATE = 0.0
#: LSL stream type of the decoded results that ``bci live`` publishes and sessions record.
RESULTS_TYPE = "BCIResults"


def numpy_dtype(dtype: str) -> np.dtype:
    """Numpy dtype for an LSL channel format name (``'string'`` gives ``object``)."""
    if dtype == "string":
        return np.dtype(object)
    if dtype not in LSL_FORMATS:
        raise ValueError(
            f"dtype={dtype!r} is not an LSL channel format; use one of {sorted(LSL_FORMATS)}"
        )
    return np.dtype(dtype)


@dataclass(frozen=True)
class StreamDescription:
    """What a stream is: identity, channels, rate and sample format.

    Parameters
    ----------
    name, type, source_id : str
        LSL identity. ``source_id`` is what a reconnect looks for.
    channel_names, channel_types, channel_units : tuple of str
        One entry per channel (empty strings are filled with defaults).
    nominal_rate : float
        Samples per second; ``0.0`` for irregular streams such as markers.
    dtype : str
        LSL channel format name: ``float32``, ``float64``, ``int8``, ``int16``,
        ``int32``, ``int64`` or ``string``.
    hostname : str
        Machine that serves the stream (informational, not compared).
    """

    name: str
    type: str
    source_id: str
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...] = ()
    channel_units: tuple[str, ...] = ()
    nominal_rate: float = IRREGULAR_RATE
    dtype: str = "float32"
    hostname: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r}: a stream needs a non-empty name")
        n = len(self.channel_names)
        if n < 1:
            raise ValueError(f"stream {self.name!r} has no channels; channel_names is empty")
        if len(set(self.channel_names)) != n:
            dup = sorted(c for c, k in Counter(self.channel_names).items() if k > 1)
            shown = ", ".join(repr(c) for c in dup[:10]) + (f" and {len(dup) - 10} more" if len(dup) > 10 else "")
            raise ValueError(f"stream {self.name!r} has duplicated channel names {shown} (channel_names must be "
                             "unique); rename the channels in the sending program")
        types = tuple(self.channel_types) or (_default_type(self.type),) * n
        units = tuple(self.channel_units) or (_default_unit(self.type),) * n
        for label, values in (("channel_types", types), ("channel_units", units)):
            if len(values) != n:
                raise ValueError(
                    f"stream {self.name!r}: {label} has {len(values)} entries "
                    f"but there are {n} channels"
                )
        rate = float(self.nominal_rate)
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(
                f"stream {self.name!r}: nominal_rate={self.nominal_rate!r} must be >= 0 "
                "(0 means irregular)"
            )
        numpy_dtype(self.dtype)  # validates
        object.__setattr__(self, "channel_names", tuple(str(c) for c in self.channel_names))
        object.__setattr__(self, "channel_types", tuple(str(t) for t in types))
        object.__setattr__(self, "channel_units", tuple(str(u) for u in units))
        object.__setattr__(self, "nominal_rate", rate)

    # ------------------------------------------------------------------ shape
    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.channel_names)

    @property
    def is_regular(self) -> bool:
        """True for streams with a nominal rate (EEG, fMRI), false for markers."""
        return self.nominal_rate > 0

    @property
    def is_string(self) -> bool:
        """True for string-valued streams (markers)."""
        return self.dtype == "string"

    @property
    def numpy_dtype(self) -> np.dtype:
        """Numpy dtype of one sample value."""
        return numpy_dtype(self.dtype)

    # ------------------------------------------------------------------ dicts
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (for Zarr attributes and JSON files)."""
        d = asdict(self)
        for key in ("channel_names", "channel_types", "channel_units"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamDescription:
        """Inverse of :meth:`to_dict`; a missing key or a value of the wrong type is a clear error."""
        check_type("stream description", d, dict, "a dict")
        required = ("name", "type", "source_id", "channel_names", "nominal_rate", "dtype")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"stream description is missing {missing}; got keys {sorted(d)}")
        for key in ("name", "type", "source_id", "dtype", "hostname"):
            check_type(f"stream description {key!r}", d.get(key, ""), str)
        for key in ("channel_names", "channel_types", "channel_units"):
            values = check_type(f"stream description {key!r}", d.get(key, ()), (list, tuple), "a list of strings")
            if not all(isinstance(v, str) for v in values):
                raise TypeError(f"stream description {key!r} must be a list of strings, got {values!r:.80}")
        check_float("stream description 'nominal_rate'", d["nominal_rate"], finite=False)
        return cls(
            name=d["name"],
            type=d["type"],
            source_id=d["source_id"],
            channel_names=tuple(d["channel_names"]),
            channel_types=tuple(d.get("channel_types", ())),
            channel_units=tuple(d.get("channel_units", ())),
            nominal_rate=float(d["nominal_rate"]),
            dtype=d["dtype"],
            hostname=d.get("hostname", ""),
        )

    def renamed(self, name: str, source_id: str | None = None) -> StreamDescription:
        """Copy with a new name (and optionally source_id), e.g. for replay."""
        return replace(self, name=name, source_id=self.source_id if source_id is None else source_id)

    # ------------------------------------------------------------------ LSL
    @classmethod
    def from_lsl_info(cls, info: Any) -> StreamDescription:
        """Read a description from a ``pylsl.StreamInfo`` (full info, with its XML).

        Whatever another program wrote is read defensively: missing or partial ``<desc><channels>``
        gives default names (``ch001``...), an empty label is filled with its default name, and
        control characters in channel labels, types and units are written as visible escapes
        (``"\\x1b"``); the stream's name, type and source_id are kept as sent (a reconnect looks
        for them). A stream that cannot be described (no channels, a rate that is negative or not
        finite, an unknown channel format, duplicated labels) is refused with a
        :class:`ValueError` naming the stream and the field.
        """
        name = info.name()
        if name.startswith("(invalid: "):  # liblsl's parser refused the stream's XML and says why here
            raise ValueError(f"an LSL stream's description was refused by liblsl: {name[10:].rstrip(')')} "
                             f"(source_id {info.source_id()!r}); fix the sending program")
        fmt = info.channel_format()
        if fmt not in _FORMAT_NAMES:
            raise ValueError(
                f"stream {name!r}: channel_format={fmt!r} is not an LSL channel format this runtime reads "
                f"(one of {sorted(_FORMAT_NAMES)}: {', '.join(LSL_FORMATS)}); fix the sending program"
            )
        n = info.channel_count()
        defaults = tuple(f"ch{i + 1:03d}" for i in range(n))
        labels = _channel_field(info, "label", n)
        names = tuple(label or default for label, default in zip(labels, defaults)) if labels else defaults
        return cls(
            name=name,
            type=info.type(),
            source_id=info.source_id(),
            channel_names=names,
            channel_types=_channel_field(info, "type", n) or (),
            channel_units=_channel_field(info, "unit", n) or (),
            nominal_rate=info.nominal_srate(),
            dtype=_FORMAT_NAMES[fmt],
            hostname=info.hostname(),
        )

    def to_lsl_info(self) -> Any:
        """Build a ``pylsl.StreamInfo`` carrying the channel XML."""
        import pylsl

        info = pylsl.StreamInfo(
            self.name,
            self.type,
            self.n_channels,
            self.nominal_rate,
            LSL_FORMATS[self.dtype],
            self.source_id,
        )
        chans = info.desc().append_child("channels")
        for label, ctype, unit in zip(self.channel_names, self.channel_types, self.channel_units):
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("type", ctype)
            ch.append_child_value("unit", unit)
        return info

    # ------------------------------------------------------------------ checks
    def check_same_source(self, other: StreamDescription) -> None:
        """Raise :class:`StreamMismatchError` if ``other`` cannot continue this stream.

        Used on reconnect: channel count, names, rate and format must match,
        otherwise appending would silently corrupt the recording.
        """
        problems = []
        if other.n_channels != self.n_channels:
            problems.append(f"{other.n_channels} channels instead of {self.n_channels}")
        elif other.channel_names != self.channel_names:
            diff = [
                f"{a!r}->{b!r}"
                for a, b in zip(self.channel_names, other.channel_names)
                if a != b
            ][:5]
            problems.append(f"different channel names ({', '.join(diff)})")
        if not math.isclose(other.nominal_rate, self.nominal_rate, rel_tol=1e-9):
            problems.append(f"rate {other.nominal_rate:g} Hz instead of {self.nominal_rate:g} Hz")
        if other.dtype != self.dtype:
            problems.append(f"format {other.dtype} instead of {self.dtype}")
        if problems:
            raise StreamMismatchError(
                f"stream {self.name!r} (source_id {self.source_id!r}) came back with "
                + "; ".join(problems)
                + ". Nothing was appended; start a new recording for the changed stream."
            )


def uniform_description(name: str, stream_type: str, source_id: str, channel_names: Sequence[str], *,
                        channel_type: str, unit: str, nominal_rate: float) -> StreamDescription:
    """A float32 stream whose channels all share one type and unit (the simulators' EEG and fMRI streams).

    Parameters
    ----------
    name, stream_type, source_id : str
        LSL name, type and source id.
    channel_names : sequence of str
        One per channel.
    channel_type, unit : str
        The type and unit of every channel.
    nominal_rate : float
        Samples per second.
    """
    n = len(channel_names)
    return StreamDescription(
        name=name,
        type=stream_type,
        source_id=source_id,
        channel_names=tuple(channel_names),
        channel_types=(channel_type,) * n,
        channel_units=(unit,) * n,
        nominal_rate=nominal_rate,
        dtype="float32",
    )


def _default_type(stream_type: str) -> str:
    t = stream_type.lower()
    if t == "eeg":
        return "eeg"
    if t == "markers":
        return "marker"
    return "misc"


def _default_unit(stream_type: str) -> str:
    return "V" if stream_type.lower() == "eeg" else ""


def _channel_field(info: Any, field_name: str, n: int) -> tuple[str, ...] | None:
    """Read ``desc/channels/channel/<field_name>`` for all channels, or None."""
    ch = info.desc().child("channels").child("channel")
    values = []
    for _ in range(n):
        if ch.empty():
            return None
        values.append(_visible(ch.child_value(field_name)))
        ch = ch.next_sibling("channel")
    if not any(values):
        return None
    return tuple(values)


def _visible(text: str) -> str:
    """``text`` with each control character (newline, ESC, ...) written as its escape, e.g. ``"\\x1b"``."""
    if not any(unicodedata.category(c) == "Cc" for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) == "Cc" else c
                   for c in text)
