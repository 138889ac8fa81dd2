"""Thin wrappers over pylsl: resolving streams by query, outlets, and a query parser.

The acquisition thread (inlet into a ring buffer, with reconnect) lives in
:mod:`streams.acquisition`; this module holds the pieces that only talk to liblsl.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import pylsl

from streams._context import ClosingContext
from streams._keys import sanitize_key  # noqa: F401 - the rule lives in streams._keys (one owner)
from streams.description import StreamDescription
from streams.errors import StreamNotFoundError

logger = logging.getLogger(__name__)

_QUIET_CONFIG = "[log]\nlevel = -3\n"
_configured = False


def configure_liblsl() -> None:
    """Silence liblsl's INFO log lines on stderr unless the user set ``LSLAPICFG``.

    Must run before liblsl is first used; later calls are no-ops.
    """
    global _configured
    if _configured:
        return
    _configured = True
    if "LSLAPICFG" in os.environ:
        return
    try:
        pylsl.set_config_content(_QUIET_CONFIG)
    except Exception:  # pragma: no cover - liblsl already initialised: keep its config
        logger.debug("liblsl was already configured; its log level is left as is")


configure_liblsl()

_QUERY_KEYS = ("name", "type", "source_id", "hostname")


@dataclass(frozen=True)
class StreamQuery:
    """What to look for: any of name, type, source_id, hostname.

    Parse one from a CLI string with :meth:`parse`: ``"EEG-Sim"`` is a name,
    ``"type=EEG"`` a type, ``"type=EEG,source_id=amp1"`` both.
    """

    name: str | None = None
    type: str | None = None
    source_id: str | None = None
    hostname: str | None = None

    @classmethod
    def parse(cls, text: str) -> StreamQuery:
        """Parse ``NAME`` or ``key=value[,key=value…]`` (keys: name, type, source_id, hostname)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"stream={text!r}: give a stream name (e.g. 'SimEEG') or key=value pairs "
                "such as 'type=EEG' or 'name=SimEEG,source_id=amp1'"
            )
        if "=" not in text:
            return cls(name=text.strip())
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in _QUERY_KEYS or not value.strip():
                raise ValueError(
                    f"stream={text!r}: cannot read {part!r}; use key=value with key one of "
                    f"{', '.join(_QUERY_KEYS)} (e.g. 'type=EEG')"
                )
            fields[key] = value.strip()
        return cls(**fields)

    def predicate(self) -> str:
        """XPath predicate for ``pylsl.resolve_bypred``."""
        terms = []
        for key in _QUERY_KEYS:
            value = getattr(self, key)
            if value is not None:
                if "'" in value:
                    raise ValueError(f"{key}={value!r}: stream properties with ' cannot be queried")
                terms.append(f"{key}='{value}'")
        return " and ".join(terms)

    def matches(self, desc: StreamDescription) -> bool:
        """Whether a description satisfies this query."""
        return all(
            getattr(self, key) is None or getattr(self, key) == getattr(desc, key)
            for key in _QUERY_KEYS
        )

    def __str__(self) -> str:
        return ",".join(f"{k}={getattr(self, k)}" for k in _QUERY_KEYS if getattr(self, k))


def describe_visible_streams(wait_time: float = 1.0) -> list[StreamDescription]:
    """Descriptions of every stream visible on the network now."""
    return [StreamDescription.from_lsl_info(i) for i in pylsl.resolve_streams(wait_time)]


def format_stream_list(descs: list[StreamDescription]) -> str:
    """One line per stream, for error messages and ``bci info``."""
    if not descs:
        return "  (no LSL streams are visible; is the amplifier/simulator running on this network?)"
    lines = []
    for d in sorted(descs, key=lambda d: (d.name, d.source_id)):
        rate = f"{d.nominal_rate:g} Hz" if d.is_regular else "irregular"
        lines.append(
            f"  name={d.name!r} type={d.type!r} source_id={d.source_id!r} "
            f"channels={d.n_channels} rate={rate} format={d.dtype} host={d.hostname!r}"
        )
    return "\n".join(lines)


def resolve(query: StreamQuery | str, timeout: float = 5.0) -> pylsl.StreamInfo:
    """Find exactly one stream matching ``query``.

    Parameters
    ----------
    query : StreamQuery or str
        What to look for (a string is parsed with :meth:`StreamQuery.parse`).
    timeout : float
        Seconds to wait for the stream to appear.

    Returns
    -------
    pylsl.StreamInfo
        The resolved stream (open an inlet on it to get the full XML).

    Raises
    ------
    StreamNotFoundError
        Nothing matched; the message lists the streams that are visible.
        Also raised when several streams with different source_ids match.
    """
    if isinstance(query, str):
        query = StreamQuery.parse(query)
    if timeout <= 0:
        raise ValueError(f"timeout={timeout!r} must be > 0 seconds")
    found = pylsl.resolve_bypred(query.predicate(), 1, timeout)
    if found:
        # give late responders a moment so an ambiguity is seen, not hidden
        found = pylsl.resolve_bypred(query.predicate(), len(found) + 1, 0.2) or found
    sources = {(i.source_id(), i.uid()) for i in found}
    if not found:
        visible = describe_visible_streams()
        raise StreamNotFoundError(
            f"no LSL stream matches {query} after {timeout:g} s. Visible streams:\n"
            f"{format_stream_list(visible)}\n"
            "Pass one of these names, or type=…/source_id=… to select."
        )
    if len(sources) > 1:
        descs = [StreamDescription.from_lsl_info(i) for i in found]
        ids = {d.source_id for d in descs}
        if len(ids) > 1 or "" in ids:
            raise StreamNotFoundError(
                f"{len(found)} LSL streams match {query}; it must name exactly one. Matching:\n"
                f"{format_stream_list(descs)}\nAdd source_id=… (e.g. '{query},source_id={descs[0].source_id}')."
            )
    return found[0]


#: Seconds a source's outlet stays open after its last push while an inlet is connected: liblsl sends
#: in the background and destroying the outlet drops what is not sent yet (a stream's last chunk or
#: marker). Every source that ends a stream (simulate, replay, follow, BrainFlow, markers, results)
#: closes with it.
SOURCE_CLOSE_LINGER_S = 1.0


class Outlet(ClosingContext):
    """An LSL outlet for a :class:`StreamDescription` (simulator, replay, results).

    Parameters
    ----------
    desc : StreamDescription
        What the stream is; the channel XML is written from it.
    chunk_size : int
        Samples per network chunk (0: as pushed).
    max_buffered : float
        Seconds (or ×100 samples for irregular streams) the outlet keeps for slow inlets.
    """

    def __init__(self, desc: StreamDescription, chunk_size: int = 0, max_buffered: int = 360) -> None:
        self.desc = desc
        self._outlet: pylsl.StreamOutlet | None = pylsl.StreamOutlet(
            desc.to_lsl_info(), chunk_size, max_buffered
        )
        self._dtype = None if desc.is_string else desc.numpy_dtype

    def push_chunk(self, data: np.ndarray, times: np.ndarray | float | None = None) -> None:
        """Push samples ``(n, n_channels)``.

        ``times`` is either one timestamp per sample, the time of the last sample
        (the others are derived from the nominal rate), or None for "now".
        """
        outlet = self._require_open()
        if self.desc.is_string:
            rows = [[str(v) for v in row] for row in np.asarray(data, dtype=object).reshape(-1, self.desc.n_channels)]
            if not rows:
                return
            stamps = [float(t) for t in np.atleast_1d(times)] if times is not None else 0.0
            if isinstance(stamps, list) and len(stamps) == 1:
                stamps = stamps[0]
            outlet.push_chunk(rows, stamps)
            return
        arr = np.ascontiguousarray(data, dtype=self._dtype)
        if arr.ndim != 2 or arr.shape[1] != self.desc.n_channels:
            raise ValueError(
                f"stream {self.desc.name!r}: data has shape {arr.shape}, "
                f"expected (n_samples, {self.desc.n_channels})"
            )
        if arr.shape[0] == 0:
            return
        if times is None:
            outlet.push_chunk(arr)
        elif np.ndim(times) == 0:
            outlet.push_chunk(arr, float(times))
        else:
            t = np.asarray(times, dtype=np.float64)
            if t.shape != (arr.shape[0],):
                raise ValueError(
                    f"stream {self.desc.name!r}: {t.shape[0] if t.ndim else 0} timestamps for "
                    f"{arr.shape[0]} samples"
                )
            outlet.push_chunk(arr, t.tolist())

    def push_sample(self, values: list | tuple | np.ndarray, timestamp: float = 0.0) -> None:
        """Push one sample (``timestamp`` 0 means now)."""
        outlet = self._require_open()
        if self.desc.is_string:
            values = [str(v) for v in values]
        outlet.push_sample(list(values), float(timestamp))

    @property
    def have_consumers(self) -> bool:
        """Whether at least one inlet is connected."""
        return bool(self._require_open().have_consumers())

    def wait_for_consumers(self, timeout: float) -> bool:
        """Block until an inlet connects or ``timeout`` seconds pass."""
        return bool(self._require_open().wait_for_consumers(timeout))

    def close(self, linger: float = 0.0) -> None:
        """Destroy the outlet; inlets see the stream as lost.

        Parameters
        ----------
        linger : float
            Seconds to wait first when an inlet is connected: liblsl sends in the background, and
            destroying the outlet drops what it has not sent yet (a source's last chunk).
        """
        if self._outlet is not None:
            if linger > 0 and self._outlet.have_consumers():
                time.sleep(linger)
            outlet, self._outlet = self._outlet, None
            del outlet

    def _require_open(self) -> pylsl.StreamOutlet:
        if self._outlet is None:
            raise RuntimeError(f"outlet {self.desc.name!r} is closed")
        return self._outlet


def decode_text(raw: bytes | str) -> str:
    """A string sample as ``str``: UTF-8, with bytes that are not valid UTF-8 kept as ``\\xNN`` escapes.

    LSL string samples are bytes; another program may send any (Latin-1 text, binary). pylsl's own decode
    raises on them, which would stop an acquisition thread; here they stay visible and nothing is lost.
    """
    if isinstance(raw, str):
        return raw
    return bytes(raw).decode("utf-8", errors="backslashreplace")


def pull_string_chunk(inlet: pylsl.StreamInlet, timeout: float, max_samples: int = 1024,
                      min_samples: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Pull a chunk of a string stream without pylsl's strict UTF-8 decode (see :func:`decode_text`).

    Returns
    -------
    values : numpy.ndarray
        ``(n_samples, n_channels)`` object array of ``str``.
    stamps : numpy.ndarray
        ``(n_samples,)`` float64 timestamps.
    n_escaped : int
        Values that were not valid UTF-8 (kept with ``\\xNN`` escapes).
    """
    raw, stamps = inlet.pull_chunk(timeout=timeout, max_samples=max_samples, min_samples=min_samples,
                                   as_numpy=True)
    raw = np.asarray(raw, dtype=object).reshape(len(stamps), -1) if len(stamps) else np.empty((0, inlet.channel_count), object)
    values = np.empty(raw.shape, dtype=object)
    n_escaped = 0
    for index, value in np.ndenumerate(raw):
        text = decode_text(value)
        n_escaped += isinstance(value, bytes) and text.encode("utf-8", "surrogatepass") != value
        values[index] = text
    return values, np.asarray(stamps, dtype=np.float64), int(n_escaped)


def local_clock() -> float:
    """LSL's clock (seconds), the time base of every timestamp."""
    return pylsl.local_clock()


