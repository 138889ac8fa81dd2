"""BrainFlow boards as LSL sources: a board (``BoardShim``) streamed as an EEG outlet plus a marker outlet.

BrainFlow is imported lazily (:func:`import_brainflow`); without it, opening a source says which extra
to install. Everything about a board (channel rows, EEG names, rate, timestamp and marker rows) comes
from ``BoardShim.get_board_descr``.

Units: BrainFlow reports ExG channels (EEG, EMG, ECG, EOG) in microvolts; our EEG streams carry volts
(docs/streams.md), so those rows are multiplied by 1e-6 and labelled ``V``. Other rows (accelerometer,
gyroscope, ...) are sent as BrainFlow gives them, with an empty unit (BrainFlow documents no unit for
them). Samples are sent as float32, like every EEG stream of the runtime.

Timestamps: BrainFlow stamps every sample with the Unix time (``time.time()``) at which it was acquired
(its timestamp row). They are mapped to the LSL clock by one offset, ``local_clock() - time.time()``,
measured when the stream starts (the tightest of several bracketed readings). The offset is measured
again before every push; if the two clocks have stepped apart by more than :data:`CLOCK_STEP` (the
wall clock was set), the new offset is adopted and the step logged and counted. A marker (a non-zero
value in BrainFlow's marker row) carries exactly the LSL timestamp of the sample it is attached to.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from streams._checks import check_float, check_int, check_type, ensure_path
from streams._context import PlayingContext
from streams.description import StreamDescription
from streams.markers import marker_stream_description
from streams.errors import StreamsError
from streams.lsl import SOURCE_CLOSE_LINGER_S, Outlet, local_clock

logger = logging.getLogger(__name__)

__all__ = [
    "BRAINFLOW_EXTRA",
    "CHANNEL_KINDS",
    "BrainflowError",
    "BrainflowSource",
    "BrainflowSourceOptions",
    "import_brainflow",
    "marker_text",
    "read_marker_map",
    "resolve_board",
    "stream_board",
]

#: How to install BrainFlow (the error when it is missing names it).
BRAINFLOW_EXTRA = "pip install 'bci-runtime[brainflow]'"

#: BrainFlow channel kinds (``<kind>_channels`` in the board description) -> (LSL channel type, unit,
#: scale). ExG rows come in microvolts and are sent in volts; the others unchanged, unit unknown.
CHANNEL_KINDS: dict[str, tuple[str, str, float]] = {
    "eeg": ("EEG", "V", 1e-6),
    "emg": ("EMG", "V", 1e-6),
    "ecg": ("ECG", "V", 1e-6),
    "eog": ("EOG", "V", 1e-6),
    "accel": ("ACC", "", 1.0),
    "rotation": ("ROT", "", 1.0),
    "gyro": ("GYRO", "", 1.0),
    "magnetometer": ("MAG", "", 1.0),
    "eda": ("EDA", "", 1.0),
    "ppg": ("PPG", "", 1.0),
    "optical": ("OPTICAL", "", 1.0),
    "temperature": ("TEMP", "", 1.0),
    "resistance": ("RES", "", 1.0),
    "analog": ("ANALOG", "", 1.0),
    "other": ("MISC", "", 1.0),
}
_XYZ_KINDS = ("accel", "gyro", "magnetometer")

#: A change of the LSL-minus-Unix clock offset larger than this (s) is a wall-clock step.
CLOCK_STEP = 0.010

#: A playback board that sends nothing for this long (s) has reached the end of its file.
PLAYBACK_STALL = 2.0

#: Automatic markers (``insert_markers_every``) stop this long (s) before ``duration`` ends, so each
#: still gets a sample to attach to.
INSERT_MARGIN = 0.25

#: Boards that take their description from ``--master-board``.
_MASTER_BOARDS = ("PLAYBACK_FILE_BOARD", "STREAMING_BOARD")

#: Connection fields of ``BrainFlowInputParams`` the options carry (flag ``--x-y`` for field ``x_y``).
CONNECTION_FIELDS = ("serial_port", "ip_address", "ip_port", "mac_address", "serial_number", "file", "other_info")


class BrainflowError(StreamsError, ValueError):
    """A board that is unknown, cannot be opened, or a BrainFlow option that does not fit."""


# --------------------------------------------------------------------------- import


def import_brainflow() -> SimpleNamespace:
    """Import BrainFlow and load its native libraries; a one-line error naming the extra when missing.

    Returns
    -------
    types.SimpleNamespace
        ``BoardShim``, ``BoardIds``, ``BrainFlowInputParams``, ``BrainFlowError``, ``DataFilter``.
    """
    try:
        with warnings.catch_warnings():
            # brainflow 5.23 on Python 3.11 locates its native libraries through pkg_resources when
            # importlib.resources refuses its module (the libraries load on first use, not at import),
            # and setuptools>=80 warns "pkg_resources is deprecated" on that import. Exactly that
            # warning is ignored here, while both libraries are loaded once; nothing else is hidden.
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            from brainflow.board_shim import BoardControllerDLL, BoardIds, BoardShim, BrainFlowError, BrainFlowInputParams
            from brainflow.data_filter import DataFilter, DataHandlerDLL

            BoardControllerDLL.get_instance()
            DataHandlerDLL.get_instance()
    except ImportError as exc:
        raise BrainflowError(f"BrainFlow is not installed ({exc}); install it with {BRAINFLOW_EXTRA}") from None
    return SimpleNamespace(BoardShim=BoardShim, BoardIds=BoardIds, BrainFlowInputParams=BrainFlowInputParams,
                           BrainFlowError=BrainFlowError, DataFilter=DataFilter)


def resolve_board(board: str | int) -> int:
    """A BrainFlow board id from a ``BoardIds`` name or an integer id.

    Names are case-insensitive, ``-`` and ``_`` alike, and the ``_BOARD`` suffix may be left out
    (``synthetic``, ``SYNTHETIC_BOARD``, ``cyton``, ``playback-file``). An unknown name or id is a
    :class:`BrainflowError` listing the available names.
    """
    ids = import_brainflow().BoardIds
    by_name = {b.name: int(b.value) for b in ids}
    if isinstance(board, (int, np.integer)) and not isinstance(board, bool):
        value = int(board)
    else:
        check_type("board", board, str, "a BrainFlow board name or id")
        text = board.strip()
        try:
            value = int(text)
        except ValueError:
            key = text.upper().replace("-", "_")
            for candidate in (key, f"{key}_BOARD"):
                if candidate in by_name:
                    return by_name[candidate]
            raise BrainflowError(f"board={board!r} is not a BrainFlow board; use an integer id or one of: "
                                 f"{', '.join(sorted(by_name))}") from None
    if value not in by_name.values():
        raise BrainflowError(f"board={board!r} is not a BrainFlow board id; use one of: "
                             + ", ".join(f"{n} ({v})" for n, v in sorted(by_name.items(), key=lambda kv: kv[1])))
    return value


def _board_name(board_id: int) -> str:
    return import_brainflow().BoardIds(board_id).name


# --------------------------------------------------------------------------- markers


def marker_text(code: float, marker_map: dict[float, str] | None = None) -> str:
    """The string sent for BrainFlow marker ``code``: its entry in ``marker_map``, else the number as text.

    Integral codes are written without a decimal point (``3.0`` -> ``"3"``), others with ``repr``.
    """
    if marker_map and code in marker_map:
        return marker_map[code]
    value = float(code)
    return str(int(value)) if value.is_integer() else repr(value)


def read_marker_map(path: str | Path) -> dict[float, str]:
    """Read a marker map: BrainFlow marker code -> marker string (e.g. ``stim/img0001/cat``).

    Parameters
    ----------
    path : str or Path
        A ``.json`` file holding one object (``{"1": "stim/img0001/cat", ...}``), or a TSV file with
        two tab-separated columns ``code`` and ``marker`` per line (an optional header line
        ``code<TAB>marker``; blank lines and lines starting with ``#`` are skipped).

    Returns
    -------
    dict
        ``{float(code): marker}``. Codes must be non-zero numbers (BrainFlow's marker row holds 0
        where there is no marker), each given once; markers non-empty strings.
    """
    path = ensure_path("marker_map", path, must_exist=True, kind="file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BrainflowError(f"marker map {str(path)!r} is not valid JSON ({exc}); write one object "
                                 '{"1": "stim/img0001/cat", ...}') from None
        if not isinstance(raw, dict):
            raise BrainflowError(f"marker map {str(path)!r} must hold one JSON object code -> marker, "
                                 f"got {type(raw).__name__}")
        entries = [(f"key {k!r}", k, v) for k, v in raw.items()]
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 2:
                raise BrainflowError(f"marker map {str(path)!r} line {number}: expected 2 tab-separated "
                                     f"columns code<TAB>marker, got {len(parts)}: {line!r}")
            if not entries and parts[0].strip().lower() == "code":
                continue  # header
            entries.append((f"line {number}", parts[0], parts[1]))
    out: dict[float, str] = {}
    for where, key, value in entries:
        try:
            code = float(key)
        except (TypeError, ValueError):
            raise BrainflowError(f"marker map {str(path)!r} {where}: code {key!r} is not a number") from None
        if not math.isfinite(code) or code == 0:
            raise BrainflowError(f"marker map {str(path)!r} {where}: code {key!r} must be a finite non-zero number "
                                 "(BrainFlow writes 0 where there is no marker)")
        if not isinstance(value, str) or not value.strip():
            raise BrainflowError(f"marker map {str(path)!r} {where}: the marker for code {key!r} must be a "
                                 f"non-empty string, got {value!r}")
        if code in out:
            raise BrainflowError(f"marker map {str(path)!r} {where}: code {key!r} is given twice")
        out[code] = value.strip()
    if not out:
        raise BrainflowError(f"marker map {str(path)!r} holds no entries")
    return out


# --------------------------------------------------------------------------- options


@dataclass
class BrainflowSourceOptions:
    """What to stream from which BrainFlow board.

    Parameters
    ----------
    board : str or int
        A ``BoardIds`` name (``synthetic``, ``SYNTHETIC_BOARD``, ``cyton``) or an integer id.
    serial_port, ip_address, mac_address, serial_number, file, other_info : str
        ``BrainFlowInputParams`` connection fields ('' = not set); which a board needs is in
        BrainFlow's board table.
    ip_port : int
        ``BrainFlowInputParams.ip_port`` (0 = not set).
    master_board : str, int or None
        The board whose data a ``PLAYBACK_FILE_BOARD`` or ``STREAMING_BOARD`` carries (required for
        those two, refused for the others).
    name : str or None
        Data stream name (markers: ``NAME-Markers``); default ``BrainFlow-<board name>``.
    channels : tuple of str
        Channel kinds to send, in this order (keys of :data:`CHANNEL_KINDS`); a row in two kinds
        (BrainFlow lists the synthetic board's 16 rows as EEG, EMG, ECG and EOG) is sent once.
    marker_map : dict or None
        Marker code -> marker string (:func:`read_marker_map`); unmapped codes go as the number.
    duration : float or None
        Seconds to stream (None: until :meth:`BrainflowSource.stop`, or the end of a playback file).
    chunk_size : int
        Push once this many samples are waiting (the poll period is half a chunk, 1-20 ms).
    wait_for_consumers : float
        Before streaming, wait up to this many seconds for an inlet on both outlets (0: do not wait).
        The board starts streaming after the wait.
    insert_markers_every : float or None
        Test/demo aid: call BrainFlow's ``insert_marker`` every S seconds (codes cycle through the
        marker map's codes, else 1, 2, 3, ...), so the marker path runs without a task program.
    """

    board: str | int = "synthetic"
    serial_port: str = ""
    ip_address: str = ""
    ip_port: int = 0
    mac_address: str = ""
    serial_number: str = ""
    file: str = ""
    other_info: str = ""
    master_board: str | int | None = None
    name: str | None = None
    channels: tuple[str, ...] = ("eeg",)
    marker_map: dict[float, str] | None = None
    duration: float | None = None
    chunk_size: int = 10
    wait_for_consumers: float = 0.0
    insert_markers_every: float | None = None

    def __post_init__(self) -> None:
        for key in CONNECTION_FIELDS:
            if key != "ip_port":
                check_type(key, getattr(self, key), str)
        self.ip_port = check_int("ip_port", self.ip_port, low=0, high=65535)
        if self.name is not None:
            check_type("name", self.name, str)
            if not self.name.strip():
                raise ValueError(f"name={self.name!r}: a stream needs a non-empty name")
        if isinstance(self.channels, str):
            self.channels = tuple(c for c in self.channels.split(",") if c.strip())
        self.channels = tuple(str(c).strip().lower() for c in self.channels)
        if not self.channels:
            raise ValueError(f"channels=(): choose at least one of {', '.join(CHANNEL_KINDS)}")
        for kind in self.channels:
            if kind not in CHANNEL_KINDS:
                raise ValueError(f"channels: {kind!r} is not a BrainFlow channel kind; choose from "
                                 f"{', '.join(CHANNEL_KINDS)}")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels={','.join(self.channels)}: a kind is given twice")
        if self.duration is not None:
            self.duration = check_float("duration", self.duration, positive=True)
        self.chunk_size = check_int("chunk_size", self.chunk_size, low=1)
        self.wait_for_consumers = check_float("wait_for_consumers", self.wait_for_consumers, low=0.0)
        if self.insert_markers_every is not None:
            self.insert_markers_every = check_float("insert_markers_every", self.insert_markers_every, positive=True)
        if self.marker_map is not None:
            check_type("marker_map", self.marker_map, dict, "a dict code -> marker (read_marker_map)")


# --------------------------------------------------------------------------- board layout


@dataclass(frozen=True)
class BoardLayout:
    """Which rows of a board's data array go where, read from its description.

    Attributes
    ----------
    rows : ndarray of int
        Data rows sent, in stream channel order.
    scale : ndarray of float
        Factor per sent row (1e-6 for ExG: microvolts to volts).
    names, types, units : tuple of str
        Channel labels, types and units.
    rate : float
    timestamp_row, marker_row : int
    n_rows : int
        Rows of the board's data array.
    """

    rows: np.ndarray
    scale: np.ndarray
    names: tuple[str, ...]
    types: tuple[str, ...]
    units: tuple[str, ...]
    rate: float
    timestamp_row: int
    marker_row: int
    n_rows: int
    board_name: str


def board_layout(descr: dict[str, Any], channels: tuple[str, ...], board_name: str) -> BoardLayout:
    """The :class:`BoardLayout` of a board description (``BoardShim.get_board_descr``) for ``channels``."""
    rows: list[int] = []
    names: list[str] = []
    types: list[str] = []
    units: list[str] = []
    scale: list[float] = []
    eeg_names = [n.strip() for n in str(descr.get("eeg_names", "")).split(",") if n.strip()]
    missing = [k for k in channels if not descr.get(f"{k}_channels")]
    if missing:
        have = [k for k in CHANNEL_KINDS if descr.get(f"{k}_channels")]
        raise BrainflowError(f"board {board_name} has no {', '.join(missing)} channels; it has: {', '.join(have)}")
    for kind in channels:
        kind_rows = [int(r) for r in descr[f"{kind}_channels"]]
        lsl_type, unit, factor = CHANNEL_KINDS[kind]
        if kind == "eeg" and len(eeg_names) == len(kind_rows):
            labels = eeg_names
        elif kind in _XYZ_KINDS and len(kind_rows) == 3:
            labels = [f"{kind}_{axis}" for axis in "xyz"]
        else:
            labels = [f"{kind}{i + 1}" for i in range(len(kind_rows))]
        for row, label in zip(kind_rows, labels):
            if row in rows:
                continue  # already sent under an earlier kind
            rows.append(row)
            names.append(label)
            types.append(lsl_type)
            units.append(unit)
            scale.append(factor)
    for key in ("sampling_rate", "timestamp_channel", "marker_channel", "num_rows"):
        if key not in descr:
            raise BrainflowError(f"board {board_name}: its BrainFlow description lacks {key!r}; it cannot be streamed")
    return BoardLayout(rows=np.array(rows, dtype=np.intp), scale=np.array(scale), names=tuple(names),
                       types=tuple(types), units=tuple(units), rate=float(descr["sampling_rate"]),
                       timestamp_row=int(descr["timestamp_channel"]), marker_row=int(descr["marker_channel"]),
                       n_rows=int(descr["num_rows"]), board_name=board_name)


def clock_offset(tries: int = 5) -> float:
    """``local_clock() - time.time()``: the LSL clock minus the Unix clock, from the tightest of ``tries`` brackets."""
    best = (math.inf, 0.0)
    for _ in range(tries):
        before = local_clock()
        unix = time.time()
        after = local_clock()
        best = min(best, (after - before, (before + after) / 2 - unix))
    return best[1]


# --------------------------------------------------------------------------- the source


class BrainflowSource(PlayingContext):
    """Stream a BrainFlow board over LSL: data outlet ``NAME`` (type EEG) and marker outlet ``NAME-Markers``.

    Use like :class:`streams.simulate.LiveSimulation`: :meth:`open` (prepares the board, creates both
    outlets), :meth:`run` (in a thread or the main thread; returns at ``duration``, at the end of a
    playback file, or after :meth:`stop`), :meth:`close` (stops the board, releases it, closes the
    outlets); ``with BrainflowSource(opts) as src: src.run()`` does all three.

    Attributes
    ----------
    n_pushed, n_markers : int
        Samples and markers sent so far.
    inserted : list of (float, float)
        ``(LSL time, code)`` of every marker inserted through :meth:`insert_marker`.
    clock_steps : int
        Wall-clock steps detected (see the module docstring).
    """

    def __init__(self, options: BrainflowSourceOptions) -> None:
        check_type("options", options, BrainflowSourceOptions)
        self.options = options
        self.bf = import_brainflow()
        self.board_id = resolve_board(options.board)
        self.board_name = _board_name(self.board_id)
        self.descr_id = self._descr_board()
        self.layout = board_layout(self.bf.BoardShim.get_board_descr(self.descr_id), options.channels,
                                   self.board_name if self.descr_id == self.board_id
                                   else f"{self.board_name} (master {_board_name(self.descr_id)})")
        self.name = options.name or f"BrainFlow-{self.board_name}"
        self.file_markers = 0
        self.file_samples = self._playback_samples()
        self.board: Any = None
        self.data_outlet: Outlet | None = None
        self.marker_outlet: Outlet | None = None
        self.n_pushed = 0
        self.n_markers = 0
        self.clock_steps = 0
        self.inserted: list[tuple[float, float]] = []
        self.offset = 0.0
        self._streaming = False
        self._stop = threading.Event()

    # ------------------------------------------------------------------ descriptions
    def _descr_board(self) -> int:
        master = self.options.master_board
        if self.board_name in _MASTER_BOARDS:
            if master is None:
                raise BrainflowError(f"board {self.board_name} replays another board's data: give --master-board "
                                     "(the board that recorded it, e.g. synthetic or cyton)")
            return resolve_board(master)
        if master is not None:
            raise BrainflowError(f"--master-board is for {' and '.join(_MASTER_BOARDS)}, not {self.board_name}")
        return self.board_id

    def _playback_samples(self) -> int | None:
        """Samples in a playback file (the stream ends after them); None for other boards."""
        if self.board_name != "PLAYBACK_FILE_BOARD":
            return None
        path = ensure_path("file", self.options.file or "", must_exist=bool(self.options.file), kind="file")
        if not self.options.file:
            raise BrainflowError("board PLAYBACK_FILE_BOARD needs --file (a file written by BrainFlow's "
                                 "DataFilter.write_file)")
        data = self.bf.DataFilter.read_file(str(path))
        if data.ndim != 2 or data.shape[0] != self.layout.n_rows:
            raise BrainflowError(f"file {str(path)!r} has {data.shape[0] if data.ndim == 2 else 1} rows per sample "
                                 f"but the master board {_board_name(self.descr_id)} has {self.layout.n_rows}; "
                                 "check --master-board")
        self.file_markers = int(np.count_nonzero(data[self.layout.marker_row]))
        return int(data.shape[1])

    @property
    def source_id(self) -> str:
        """``brainflow-<board>-<connection>``: stable across runs with the same board and connection."""
        o = self.options
        where = o.serial_number or o.mac_address or o.serial_port or (
            f"{o.ip_address}:{o.ip_port}" if o.ip_address else "") or (Path(o.file).name if o.file else "")
        return f"brainflow-{self.board_name.lower()}" + (f"-{where}" if where else "")

    def description(self) -> StreamDescription:
        """The data stream: type EEG, the chosen rows, float32, the board's nominal rate."""
        lay = self.layout
        return StreamDescription(name=self.name, type="EEG", source_id=self.source_id, channel_names=lay.names,
                                 channel_types=lay.types, channel_units=lay.units, nominal_rate=lay.rate,
                                 dtype="float32")

    def marker_description(self) -> StreamDescription:
        """The marker stream ``NAME-Markers``: type Markers, one string channel, irregular."""
        return marker_stream_description(f"{self.name}-Markers", self.source_id + "-markers")

    # ------------------------------------------------------------------ lifecycle
    def _params(self) -> Any:
        params = self.bf.BrainFlowInputParams()
        for key in CONNECTION_FIELDS:
            setattr(params, key, getattr(self.options, key))
        if self.descr_id != self.board_id:
            params.master_board = self.descr_id
        return params

    def _connection_hint(self) -> str:
        set_flags = [f"--{k.replace('_', '-')} {getattr(self.options, k)}" for k in CONNECTION_FIELDS
                     if getattr(self.options, k)]
        return (f"flags given: {' '.join(set_flags) if set_flags else 'none'}; check that the board is on and "
                "connected and that --serial-port / --ip-address / --ip-port / --mac-address / --serial-number / "
                "--other-info are the ones BrainFlow's board table lists for this board")

    def open(self) -> None:
        """Prepare the board's session and create both outlets (:meth:`run` starts the board's stream)."""
        if self.board is not None:
            return
        self.bf.BoardShim.disable_board_logger()
        board = self.bf.BoardShim(self.board_id, self._params())
        try:
            board.prepare_session()
        except self.bf.BrainFlowError as exc:
            raise BrainflowError(f"cannot open BrainFlow board {self.board_name} ({self.board_id}): {exc}; "
                                 f"{self._connection_hint()}") from None
        self.board = board
        self.data_outlet = Outlet(self.description(), chunk_size=self.options.chunk_size)
        self.marker_outlet = Outlet(self.marker_description())

    def _start(self) -> None:
        """Start the board's stream (once) and measure the clock offset."""
        if self._streaming:
            return
        try:
            self.board.start_stream()
        except self.bf.BrainFlowError as exc:
            raise BrainflowError(f"BrainFlow board {self.board_name} did not start streaming: {exc}; "
                                 f"{self._connection_hint()}") from None
        self._streaming = True
        self.offset = clock_offset()

    def wait_for_consumers(self, timeout: float) -> bool:
        """Block until both outlets have an inlet (or ``timeout`` seconds pass); True if they do."""
        self.open()
        end = local_clock() + timeout
        return all(o.wait_for_consumers(max(0.0, end - local_clock())) for o in (self.data_outlet, self.marker_outlet))

    def insert_marker(self, code: float) -> None:
        """Insert marker ``code`` (non-zero) into the board's marker row, as a task program would."""
        code = check_float("code", code)
        if code == 0:
            raise ValueError("code=0: BrainFlow writes 0 where there is no marker; use a non-zero code")
        if not self._streaming:
            raise BrainflowError("insert_marker: the board is not streaming; insert markers while run() runs")
        self.inserted.append((local_clock(), code))
        self.board.insert_marker(code)

    def run(self) -> None:
        """Push the board's samples (and markers) until ``duration``, the end of a playback file, or :meth:`stop`."""
        self.open()
        self._start()
        opts = self.options
        poll = min(0.020, max(0.001, opts.chunk_size / self.layout.rate / 2))
        start = local_clock()
        end = start + opts.duration if opts.duration is not None else math.inf
        codes = list(opts.marker_map) if opts.marker_map else None
        next_insert = start + opts.insert_markers_every if opts.insert_markers_every else math.inf
        last_data = start
        while not self._stop.is_set():
            now = local_clock()
            if now >= next_insert and end - now > INSERT_MARGIN:
                self.insert_marker(codes[len(self.inserted) % len(codes)] if codes else len(self.inserted) + 1)
                next_insert += opts.insert_markers_every
            try:
                count = self.board.get_board_data_count()
                if count:
                    last_data = now
                done = now >= end or (self.file_samples is not None and (
                    self.n_pushed + count >= self.file_samples or now - last_data > PLAYBACK_STALL))
                data = self.board.get_board_data(count) if count >= opts.chunk_size or (done and count) else None
            except self.bf.BrainFlowError as exc:
                raise BrainflowError(f"BrainFlow board {self.board_name} stopped after {self.n_pushed} samples: "
                                     f"{exc}; {self._connection_hint()}") from None
            if data is not None:
                self._push(data)
            if done:
                break
            self._stop.wait(poll)

    def _push(self, data: np.ndarray) -> None:
        lay = self.layout
        offset = clock_offset()
        if abs(offset - self.offset) > CLOCK_STEP:
            logger.warning("the wall clock stepped by %.3f s relative to the LSL clock; timestamps follow the new "
                           "offset", offset - self.offset)
            self.clock_steps += 1
            self.offset = offset
        times = data[lay.timestamp_row] + self.offset
        samples = (data[lay.rows] * lay.scale[:, None]).T
        self.data_outlet.push_chunk(samples, times)
        self.n_pushed += data.shape[1]
        marks = np.flatnonzero(data[lay.marker_row])
        if marks.size:
            values = [[marker_text(float(data[lay.marker_row, i]), self.options.marker_map)] for i in marks]
            self.marker_outlet.push_chunk(np.array(values, dtype=object), times[marks])
            self.n_markers += int(marks.size)

    def stop(self) -> None:
        """Ask :meth:`run` to return early."""
        self._stop.set()

    def _close_outlets(self) -> None:
        for outlet in (self.data_outlet, self.marker_outlet):
            if outlet is not None:
                outlet.close(linger=SOURCE_CLOSE_LINGER_S)
        self.data_outlet = self.marker_outlet = None

    def close(self) -> None:
        """Stop and release the board, close the outlets."""
        board, self.board = self.board, None
        if board is not None:
            if self._streaming:
                try:
                    board.stop_stream()
                except self.bf.BrainFlowError as exc:
                    logger.warning("BrainFlow board %s: stop_stream failed: %s", self.board_name, exc)
                self._streaming = False
            board.release_session()
        self._close_outlets()


def stream_board(options: BrainflowSourceOptions, report: Callable[[str], None] = print) -> BrainflowSource:
    """Stream a board until ``options.duration``, the end of a playback file, or Ctrl-C / SIGTERM (``bci stream brainflow``).

    Parameters
    ----------
    options : BrainflowSourceOptions
    report : callable
        Receives the start line (what is streamed) and the summary line.

    Returns
    -------
    BrainflowSource
        The closed source (counters: ``n_pushed``, ``n_markers``, ``inserted``, ``clock_steps``).
    """
    source = BrainflowSource(options)
    with source:
        desc = source.description()
        kinds = "/".join(dict.fromkeys(desc.channel_types))
        report(f"streaming BrainFlow board {source.board_name} ({source.board_id}) as {desc.name!r} "
               f"({desc.n_channels} ch {kinds}, {desc.nominal_rate:g} Hz, float32) + markers "
               f"{source.marker_description().name!r}"
               + (f" for {options.duration:g} s" if options.duration else "")
               + ("" if source.file_samples is None else f", {source.file_samples} samples from {options.file}")
               + "; Ctrl-C stops")
        if options.wait_for_consumers and not source.wait_for_consumers(options.wait_for_consumers):
            report(f"no consumer on both streams within {options.wait_for_consumers:g} s; streaming anyway")
        try:
            source.run()
        except KeyboardInterrupt:
            pass
    lost = len(source.inserted) - source.n_markers
    report(f"pushed {source.n_pushed} samples and {source.n_markers} markers"
           + (f" ({len(source.inserted)} inserted)" if source.inserted else "")
           + (f"; {lost} inserted marker(s) never appeared in the board's data (inserted after its last sample)"
              if source.inserted and lost > 0 else "")
           + (f"; {source.clock_steps} wall-clock steps" if source.clock_steps else "")
           + (f"; the file holds {source.file_markers} marker(s), BrainFlow's playback board replayed "
              f"{source.n_markers}" if source.file_markers != source.n_markers and source.file_samples else ""))
    return source
