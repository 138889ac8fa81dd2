"""Qt widgets of the viewer: traces (EEG) or voxel images (fMRI), results, health, the main window.

Every widget is redrawn from the model by :meth:`ViewerWindow.refresh`, which a
``QTimer`` calls at a fixed frame rate; no widget is touched by another thread.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from bci.viewer.images import ImageCache, ThumbnailGallery, placeholder_tile
from bci.viewer.model import ResultEntry, ResultsSnapshot, TraceSource, ViewerModel
from bci.viewer.qtcompat import guard_none_refcount
from bci.viewer.sources import Health, Provider
from streams.synthetic.markers import parse_marker

#: Pens of even / odd channels (exact colours: antialiasing is off, tests look for them).
TRACE_COLORS = ((120, 200, 255), (255, 210, 120))
LATEST_WINDOW_BRUSH = (255, 200, 0, 70)
OLDER_WINDOW_BRUSH = (110, 150, 255, 35)
MARKER_COLOR = (255, 90, 90)
GROUP_SIZES = ("16", "32", "64", "all")
#: Points per channel drawn (min/max pairs): about one per horizontal pixel of the plot.
MAX_POINTS = 800
TOPK_SHOWN = 5
IMAGE_TILES = ("saliency", "diffusion", "reconstruction")
_BG = "#15181d"


def array_to_pixmap(image: np.ndarray, size: int) -> QtGui.QPixmap:
    """``(h, w, 3)`` uint8 → a QPixmap scaled to fit ``size`` × ``size`` (nearest neighbour: crisp)."""
    arr = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = arr.shape[:2]
    qimage = QtGui.QImage(arr.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()
    return QtGui.QPixmap.fromImage(qimage).scaled(
        size, size, QtCore.Qt.AspectRatioMode.KeepAspectRatio, QtCore.Qt.TransformationMode.FastTransformation)


def minmax_decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce ``(n,)`` times and ``(n, k)`` values to at most ``max_points`` per channel.

    Each bin of samples becomes its minimum and maximum, so spikes and line noise stay
    visible (plain striding would alias them). The newest samples are kept whole.
    """
    n = len(x)
    if n <= max_points:
        return x, y
    step = math.ceil(n / max(1, max_points // 2))
    m = (n // step) * step
    ys = y[n - m:].reshape(m // step, step, y.shape[1])
    out_y = np.empty((2 * (m // step), y.shape[1]), dtype=y.dtype)
    out_y[0::2] = ys.min(axis=1)
    out_y[1::2] = ys.max(axis=1)
    xs = x[n - m:].reshape(m // step, step)
    out_x = np.empty(2 * (m // step), dtype=x.dtype)
    out_x[0::2] = xs[:, 0]
    out_x[1::2] = xs[:, -1]
    return out_x, out_y


def stacked_xy(x: np.ndarray, y: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One polyline for ``k`` channels, each shifted by its offset.

    Returns ``x``, ``y`` and the ``connect`` array (0 where one channel ends), the
    fastest form pyqtgraph draws. Non-finite samples are drawn at the channel's offset.
    """
    n, k = y.shape
    xx = np.tile(x, k)
    yy = (np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0) + offsets[None, :]).T.ravel()
    connect = np.ones(n * k, dtype=np.int32)
    connect[n - 1 :: n] = 0
    return xx, yy, connect


def marker_text(value: str) -> str:
    """Short label of a marker: ``"img0012 red triangle"`` for ``stim/img0012/red triangle``."""
    image_id, label = parse_marker(value)
    if image_id is None:
        return value[:24]
    return f"{image_id} {label}" if label else image_id


# --------------------------------------------------------------------------- traces
class TracesWidget(QtWidgets.QWidget):
    """Scrolling stacked multichannel traces with markers and decoded windows."""

    def __init__(self, seconds: float = 5.0, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.seconds = float(seconds)
        self.processed = False
        self.auto_scale = True
        self.spacing = 50e-6  # data units between channels
        self._last_autoscale = 0.0
        self._ticks_key: tuple | None = None
        self._build_controls()
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "time (s, 0 = newest sample)")
        self.curves = [pg.PlotCurveItem(pen=pg.mkPen(c, width=1), skipFiniteCheck=True) for c in TRACE_COLORS]
        for c in self.curves:
            self.plot.addItem(c)
        self._marker_lines: list[pg.InfiniteLine] = []
        self._regions: list[pg.LinearRegionItem] = []
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.controls)
        layout.addWidget(self.plot, 1)
        self.n_drawn = 0

    def _build_controls(self) -> None:
        self.controls = QtWidgets.QHBoxLayout()
        self.group_size = QtWidgets.QComboBox()
        self.group_size.addItems([f"{g} ch" if g != "all" else "all" for g in GROUP_SIZES])
        self.group_size.setCurrentIndex(1)
        self.group = QtWidgets.QSpinBox()
        self.group.setPrefix("group ")
        self.group.setMinimum(1)
        self.scale = QtWidgets.QDoubleSpinBox()
        self.scale.setRange(0.01, 1e6)
        self.scale.setDecimals(2)
        self.scale.setSuffix(" µV/ch")
        self.scale.setValue(50.0)
        self.scale.valueChanged.connect(self._on_scale)
        self.auto = QtWidgets.QCheckBox("auto scale")
        self.auto.setChecked(True)
        self.auto.toggled.connect(self._on_auto)
        self.view = QtWidgets.QComboBox()
        self.view.addItems(["raw", "preprocessed"])
        self.span = QtWidgets.QDoubleSpinBox()
        self.span.setRange(0.5, 30.0)
        self.span.setValue(self.seconds)
        self.span.setSuffix(" s")
        self.span.valueChanged.connect(lambda v: setattr(self, "seconds", float(v)))
        for label, w in (("channels", self.group_size), ("", self.group), ("scale", self.scale), ("", self.auto),
                         ("view", self.view), ("span", self.span)):
            if label:
                self.controls.addWidget(QtWidgets.QLabel(label))
            self.controls.addWidget(w)
        self.controls.addStretch(1)

    def _on_scale(self, value: float) -> None:
        if self.scale.hasFocus():  # the user typed a value: stop auto scaling
            self.auto.setChecked(False)
        self.spacing = value * 1e-6

    def _on_auto(self, on: bool) -> None:
        self.auto_scale = on

    def channel_slice(self, n_channels: int) -> slice:
        """The channels of the selected group."""
        size_text = GROUP_SIZES[self.group_size.currentIndex()]
        size = n_channels if size_text == "all" else min(int(size_text), n_channels)
        n_groups = max(1, math.ceil(n_channels / size))
        self.group.setMaximum(n_groups)
        self.group.setEnabled(n_groups > 1)
        start = (min(self.group.value(), n_groups) - 1) * size
        return slice(start, min(start + size, n_channels))

    def update_view(self, model: ViewerModel, results: ResultsSnapshot | None) -> None:
        """Redraw from the newest samples, markers and windows."""
        source = model.processed if self.processed and model.processed is not None else model.raw
        if source is None:
            return
        data, times = source.latest(self.seconds)
        if len(times) < 2:
            return
        t_ref = float(times[-1])
        sel = self.channel_slice(data.shape[1])
        x, y = minmax_decimate(times - t_ref, data[:, sel], max_points=MAX_POINTS)
        y = y - np.median(np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0), axis=0, keepdims=True)
        self._autoscale(y)
        names = source.ch_names[sel]
        offsets = -np.arange(len(names), dtype=np.float64) * self.spacing
        for parity, curve in enumerate(self.curves):
            cols = np.arange(parity, len(names), 2)
            if len(cols):
                xx, yy, connect = stacked_xy(x, y[:, cols].astype(np.float64), offsets[cols])
                curve.setData(xx, yy, connect=connect)
            else:
                curve.setData([], [])
        self._set_ticks(names, offsets)
        self.plot.setXRange(-self.seconds, 0.0, padding=0.01)
        self.plot.setYRange(offsets[-1] - self.spacing, self.spacing, padding=0.0)
        self._draw_markers(model, results, t_ref)
        self._draw_windows(results, t_ref)
        self.n_drawn += 1

    def _autoscale(self, y: np.ndarray) -> None:
        now = time.monotonic()
        if not self.auto_scale or now - self._last_autoscale < 0.5 or not y.size:
            return
        self._last_autoscale = now
        lo, hi = np.percentile(np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0), [5, 95], axis=0)
        spread = (hi - lo)[hi > lo]
        if len(spread):
            self.spacing = float(np.median(spread))
            self.scale.blockSignals(True)
            self.scale.setValue(self.spacing * 1e6)
            self.scale.blockSignals(False)

    def _set_ticks(self, names: tuple[str, ...], offsets: np.ndarray) -> None:
        key = (names, float(offsets[-1]) if len(offsets) else 0.0)
        if key == self._ticks_key:  # unchanged: do not make the axis re-layout every frame
            return
        self._ticks_key = key
        every = max(1, math.ceil(len(names) / 32))
        ticks = [(float(o), n) for i, (o, n) in enumerate(zip(offsets, names, strict=True)) if i % every == 0]
        self.plot.getAxis("left").setTicks([ticks, []])

    def _pool(self, items: list, n: int, make: Any) -> list:
        while len(items) < n:
            item = make()
            self.plot.addItem(item)
            items.append(item)
        for item in items[n:]:
            item.hide()
        return items[:n]

    def _draw_markers(self, model: ViewerModel, results: ResultsSnapshot | None, t_ref: float) -> None:
        marks: list[tuple[float, str]] = []
        if model.markers is not None:
            values, mtimes = model.markers.latest(64)
            marks = [(float(t), str(v[0])) for v, t in zip(values, mtimes, strict=True)]
        elif results is not None:
            marks = list(results.record_markers)
        # the stagger level of a label follows the marker's time, so it stays put while scrolling
        visible = [(t - t_ref, v, int(t * 1.7) % 3) for t, v in marks if -self.seconds <= t - t_ref <= 0.5][-24:]
        lines = self._pool(self._marker_lines, len(visible), lambda: pg.InfiniteLine(
            angle=90, movable=False, pen=pg.mkPen(MARKER_COLOR, width=1, style=QtCore.Qt.PenStyle.DashLine),
            label="", labelOpts={"position": 0.97, "color": MARKER_COLOR, "anchors": [(0, 0), (0, 0)]}))
        for line, (x, value, level) in zip(lines, visible, strict=True):
            line.setPos(x)
            line.label.setText(marker_text(value))
            line.label.setPosition(0.985 - 0.035 * level)
            line.show()

    def _draw_windows(self, results: ResultsSnapshot | None, t_ref: float) -> None:
        spans = []
        if results is not None:
            for i, e in enumerate(results.entries[:6]):
                if e.start_time is not None and e.end_time is not None and e.end_time - t_ref > -self.seconds:
                    spans.append((e.start_time - t_ref, e.end_time - t_ref, i == 0))
        regions = self._pool(self._regions, len(spans), lambda: pg.LinearRegionItem(movable=False))
        for region, (a, b, latest) in zip(regions, spans, strict=True):
            region.setRegion((a, b))
            region.setBrush(pg.mkBrush(LATEST_WINDOW_BRUSH if latest else OLDER_WINDOW_BRUSH))
            region.setZValue(-10)
            region.show()


# --------------------------------------------------------------------------- fMRI
class FmriWidget(QtWidgets.QWidget):
    """fMRI: the voxel pattern of the newest TR, the last TRs as a carpet, the decoded pattern."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = QtWidgets.QComboBox()  # same interface as TracesWidget for the window
        self.view.addItems(["raw"])
        self.processed = False
        self.layout_widget = pg.GraphicsLayoutWidget()
        self.title = QtWidgets.QLabel("waiting for the first volume")
        self.voxels = pg.ImageItem()
        self.carpet = pg.ImageItem()
        self.decoded = pg.ImageItem()
        for col, (item, title) in enumerate(((self.voxels, "newest volume"),
                                             (self.carpet, "last 30 TRs"),
                                             (self.decoded, "decoded pattern"))):
            vb = self.layout_widget.addPlot(row=0, col=col, title=title)
            vb.hideAxis("left")
            vb.hideAxis("bottom")
            vb.setAspectLocked(col != 1)
            vb.invertY(True)
            vb.addItem(item)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.layout_widget, 1)
        self._total = -1
        self._decoded_key: str | None = None
        self.n_drawn = 0

    def update_view(self, model: ViewerModel, results: ResultsSnapshot | None, cache: ImageCache) -> None:
        """Redraw when a new volume or a new decoded image has arrived."""
        src: TraceSource | None = model.raw
        if src is None:
            return
        total = src.buffer.total
        if total != self._total and total > 0:
            self._total = total
            data, _ = src.latest(30 / src.sfreq)
            self.voxels.setImage(_square(data[-1]).T, autoLevels=True)
            self.carpet.setImage(data, autoLevels=True)
            self.title.setText(f"TR {total}  ({data.shape[1]} voxels, TR = {1 / src.sfreq:g} s)")
            self.n_drawn += 1
        entry = results.entries[0] if results is not None and results.entries else None
        ref = entry.images.get("reconstruction") if entry is not None else None
        if ref and ref != self._decoded_key:
            image = cache.image(ref)
            if image is not None:
                self._decoded_key = ref
                self.decoded.setImage(np.transpose(image, (1, 0, 2)))


def _square(volume: np.ndarray) -> np.ndarray:
    """A 1-D voxel vector as the smallest square image (padded with its minimum)."""
    n = len(volume)
    side = math.ceil(math.sqrt(n))
    pad = np.full(side * side, np.nanmin(volume) if n else 0.0, dtype=np.float32)
    pad[:n] = volume
    return pad.reshape(side, side)


# --------------------------------------------------------------------------- results
@functools.lru_cache(maxsize=1)
def _placeholder() -> np.ndarray:
    tile = placeholder_tile(64)
    tile.flags.writeable = False
    return tile


class Tile(QtWidgets.QFrame):
    """An image with a caption; ``state`` is ``"image"``, ``"placeholder"`` or ``"empty"``."""

    def __init__(self, size: int = 64, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.tile_size = size
        self.state = "empty"
        self.image_id: str | None = None
        self.picture = QtWidgets.QLabel()
        self.picture.setFixedSize(size, size)
        self.picture.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.caption = QtWidgets.QLabel()
        self.caption.setWordWrap(True)
        self.caption.setFixedWidth(size + 8)
        self.caption.setAlignment(QtCore.Qt.AlignmentFlag.AlignHCenter | QtCore.Qt.AlignmentFlag.AlignTop)
        self.caption.setStyleSheet("font-size: 9px;")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(1)
        layout.addWidget(self.picture, 0, QtCore.Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.caption)
        self.set_empty()

    def set_image(self, image: np.ndarray | None, caption: str, *, image_id: str | None = None,
                  highlight: bool = False) -> None:
        """Show ``image`` (None: the placeholder) with ``caption``; a green frame when ``highlight``."""
        self.state = "image" if image is not None else "placeholder"
        self.image_id = image_id
        shown = image if image is not None else _placeholder()
        self.picture.setPixmap(array_to_pixmap(shown, self.tile_size))
        self.caption.setText(caption)
        color = "#3ddc84" if highlight else "#444a55"
        self.setStyleSheet(f"Tile {{ border: 2px solid {color}; border-radius: 3px; }}")
        self.show()

    def set_empty(self) -> None:
        """Nothing to show: hidden."""
        self.state = "empty"
        self.image_id = None
        self.picture.clear()
        self.caption.clear()
        self.hide()


class ResultRow(QtWidgets.QGroupBox):
    """One decoded window: the true stimulus, the top-k, and the generated images."""

    def __init__(self, tile_size: int = 64, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QGridLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(3)
        self.true_tile = Tile(tile_size)
        self.topk_tiles = [Tile(tile_size) for _ in range(TOPK_SHOWN)]
        self.image_tiles = {kind: Tile(tile_size) for kind in IMAGE_TILES}
        # line 1: the true stimulus, then the top-k; line 2: the generated images
        layout.addWidget(self.true_tile, 0, 0)
        for col, tile in enumerate(self.topk_tiles, start=1):
            layout.addWidget(tile, 0, col)
        for col, tile in enumerate(self.image_tiles.values(), start=1):
            layout.addWidget(tile, 1, col)
        layout.setColumnStretch(TOPK_SHOWN + 1, 1)
        self.entry_serial: int | None = None

    def show_entry(self, entry: ResultEntry | None, cache: ImageCache) -> None:
        """Fill the tiles from ``entry`` (None: an empty row)."""
        if entry is None:
            self.entry_serial = None
            self.setTitle("")
            for tile in (self.true_tile, *self.topk_tiles, *self.image_tiles.values()):
                tile.set_empty()
            self.hide()
            return
        self.entry_serial = entry.serial
        lat = f"{entry.latency_ms:.1f} ms" if entry.latency_ms is not None else "-"
        self.setTitle(f"window {entry.window_index if entry.window_index is not None else '?'}"
                      f"  {marker_text(entry.marker) if entry.marker else entry.kind}  latency {lat}")
        self._true(entry, cache)
        self._topk(entry, cache)
        for kind, tile in self.image_tiles.items():
            ref = entry.images.get(kind)
            if ref:
                tile.set_image(cache.image(ref), kind)
            else:
                tile.set_empty()
        self.show()

    def _true(self, entry: ResultEntry, cache: ImageCache) -> None:
        if entry.image_id is None:
            self.true_tile.set_empty()
            return
        caption = f"TRUE\n{entry.true_label or entry.image_id}"
        self.true_tile.set_image(cache.thumbnail(entry.image_id), caption, image_id=entry.image_id)

    def _topk(self, entry: ResultEntry, cache: ImageCache) -> None:
        items = entry.topk or entry.class_scores
        by_class = not entry.topk
        for i, tile in enumerate(self.topk_tiles):
            if i >= len(items):
                tile.set_empty()
                continue
            item = items[i]
            score = f"{item['score']:.3f}" if item["score"] is not None else "-"
            name = item["label"] or item["id"]
            image = cache.thumbnail_for_label(item["label"]) if by_class else cache.thumbnail(item["id"])
            missing = "" if by_class or image is not None else "\n(not in gallery)" if cache.gallery else ""
            hit = (item["label"] == entry.true_label) if by_class else (item["id"] == entry.image_id)
            kind = " (class)" if by_class else ""
            tile.set_image(image, f"{i + 1}. {name}{kind}\n{score}{missing}", image_id=item["id"],
                           highlight=bool(hit and (entry.true_label if by_class else entry.image_id)))


class ResultsPanel(QtWidgets.QWidget):
    """The newest decoded windows with their retrieved and generated images, and hit rates."""

    def __init__(self, cache: ImageCache, rows: int = 4, tile_size: int = 64,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.cache = cache
        self.summary = QtWidgets.QLabel("no results yet")
        self.summary.setObjectName("summary")
        self.hits = QtWidgets.QLabel("")
        self.hits.setObjectName("hits")
        self.malformed = QtWidgets.QLabel("malformed results skipped: 0")
        self.malformed.setObjectName("malformed")
        self.rows = [ResultRow(tile_size) for _ in range(rows)]
        layout = QtWidgets.QVBoxLayout(self)
        for w in (self.summary, self.hits, self.malformed):
            layout.addWidget(w)
        for row in self.rows:
            layout.addWidget(row)
        layout.addStretch(1)
        self.version = -1

    def update_view(self, snap: ResultsSnapshot) -> None:
        """Redraw when the results changed."""
        if snap.version == self.version:
            return
        self.version = snap.version
        drops = ", ".join(f"{k} {v}" for k, v in sorted(snap.dropped.items())) or "none"
        self.summary.setText(f"decoded windows: {snap.n_windows}    dropped markers: {drops}")
        self.hits.setText(f"image hits: {snap.image_hits.text()}\nclass hits: {snap.class_hits.text()}")
        self.malformed.setText(f"malformed results skipped: {snap.n_malformed}"
                               + (f" (last: {snap.last_malformed[:60]})" if snap.last_malformed else ""))
        self.malformed.setStyleSheet("color: #ff6b6b;" if snap.n_malformed else "")
        for i, row in enumerate(self.rows):
            entry = snap.entries[i] if i < len(snap.entries) else None
            row.show_entry(entry, self.cache)


# --------------------------------------------------------------------------- health
class HealthPanel(QtWidgets.QWidget):
    """Sampling rate, buffer, gaps, reconnects, latency p50/p99 (live plot), device."""

    KEYS = ("stream", "rate", "buffer", "loss", "reconnects", "latency", "device", "results")

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        grid = QtWidgets.QGridLayout()
        self.values: dict[str, QtWidgets.QLabel] = {}
        for i, key in enumerate(self.KEYS):
            name = QtWidgets.QLabel(key)
            name.setStyleSheet("color: #8a93a3;")
            value = QtWidgets.QLabel("-")
            value.setObjectName(f"health_{key}")
            grid.addWidget(name, i, 0)
            grid.addWidget(value, i, 1)
            self.values[key] = value
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setFixedHeight(140)
        self.plot.setLabel("left", "latency (ms)")
        self.plot.setLabel("bottom", "s")
        self.plot.addLegend(offset=(5, 5))
        self.p50 = self.plot.plot(pen=pg.mkPen((90, 220, 130), width=2), name="p50")
        self.p99 = self.plot.plot(pen=pg.mkPen((240, 110, 90), width=2), name="p99")
        self._t0 = time.monotonic()
        self._history: list[tuple[float, float, float]] = []
        layout = QtWidgets.QHBoxLayout(self)
        layout.addLayout(grid, 1)
        layout.addWidget(self.plot, 1)

    def update_view(self, h: Health) -> None:
        """Show ``h`` and extend the latency plot."""
        v = self.values
        v["stream"].setText(f"{h.stream} ({h.stream_type}, {h.n_channels} ch)")
        measured = f"{h.measured_rate:.1f}" if h.measured_rate is not None else "…"
        v["rate"].setText(f"{measured} Hz measured / {h.nominal_rate:g} Hz nominal")
        off = h.measured_rate is not None and h.nominal_rate > 0 and abs(h.measured_rate / h.nominal_rate - 1) > 0.05
        v["rate"].setStyleSheet("color: #ff6b6b;" if off else "")
        backlog = f", decoder backlog {h.decoder_backlog} samples" if h.decoder_backlog is not None else ""
        v["buffer"].setText(f"{100 * h.buffer_fill:.0f}% ({h.buffer_held_s:.1f} of {h.buffer_capacity_s:.0f} s)"
                            f"{backlog}")
        loss = f"{h.n_gaps} gaps, ~{h.missing_samples} samples missing"
        if h.overwritten:
            loss += f", {h.overwritten} overwritten before decoding"
        if h.n_nonfinite:
            loss += f", {h.n_nonfinite} NaN/inf"
        v["loss"].setText(loss)
        v["loss"].setStyleSheet("color: #ff6b6b;" if h.n_gaps or h.overwritten else "")
        v["reconnects"].setText(str(h.n_reconnects))
        v["results"].setText(h.extra.get("results", "in-process"))
        v["latency"].setText("-" if math.isnan(h.latency_p50) else
                             f"p50 {h.latency_p50:.1f} ms, p99 {h.latency_p99:.1f} ms (last 100 windows)")
        v["device"].setText(h.device)
        if not math.isnan(h.latency_p50):
            self._history.append((time.monotonic() - self._t0, h.latency_p50, h.latency_p99))
            self._history = self._history[-600:]
            arr = np.asarray(self._history)
            self.p50.setData(arr[:, 0], arr[:, 1])
            self.p99.setData(arr[:, 0], arr[:, 2])


# --------------------------------------------------------------------------- window
class ViewerWindow(QtWidgets.QMainWindow):
    """The viewer: traces (or fMRI images), results and health, redrawn at ``fps`` by a QTimer.

    Parameters
    ----------
    provider : Provider
        Source of the model and the health figures.
    fps : float
        Frames per second.
    seconds : float
        Time span of the traces.
    gallery : ThumbnailGallery, optional
        Thumbnails of retrieved images.
    image_dir : path, optional
        Relative image paths in records are resolved against it.
    processed : bool
        Start in the preprocessed view (when available).
    """

    def __init__(self, provider: Provider, *, fps: float = 30.0, seconds: float = 5.0,
                 gallery: ThumbnailGallery | None = None, image_dir: Any = None, processed: bool = False,
                 title: str = "bci viewer") -> None:
        guard_none_refcount()
        super().__init__()
        if not (isinstance(fps, (int, float)) and 1 <= fps <= 240):
            raise ValueError(f"fps={fps!r} must be a number of frames per second between 1 and 240")
        self.provider = provider
        self.model = provider.model
        self.cache = ImageCache(gallery, image_dir)
        self.setWindowTitle(title)
        self.signal_view: TracesWidget | FmriWidget = (
            FmriWidget() if self.model.modality == "fmri" else TracesWidget(seconds))
        self.results_panel = ResultsPanel(self.cache)
        self.health_panel = HealthPanel()
        self._build_layout()
        self.signal_view.view.currentIndexChanged.connect(self._on_view)
        if processed and self.signal_view.view.count() > 1:
            self.signal_view.view.setCurrentIndex(1)  # -> _on_view(1); back to raw if unavailable
        else:
            self._on_view(0)
        self.frames = 0
        self._last_health = 0.0
        self._results: ResultsSnapshot | None = None
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.setInterval(max(1, round(1000 / fps)))
        self.timer.timeout.connect(self.refresh)

    def _build_layout(self) -> None:
        left = QtWidgets.QWidget()
        lv = QtWidgets.QVBoxLayout(left)
        lv.setContentsMargins(4, 4, 4, 4)
        lv.addWidget(self.signal_view, 1)
        lv.addWidget(self.health_panel, 0)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.results_panel)
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([740, 540])
        self.setCentralWidget(splitter)
        self.status = self.statusBar()

    def _on_view(self, index: int) -> None:
        want = index == 1
        available = self.provider.set_processed(want)
        if want and not available:
            self.signal_view.view.setCurrentIndex(0)
            self.status.showMessage("no preprocessing configured: showing raw samples", 5000)
            want = False
        self.signal_view.processed = want

    @property
    def last_results(self) -> ResultsSnapshot | None:
        """The results state the last frame drew."""
        return self._results

    def start(self) -> None:
        """Start redrawing at the frame rate."""
        self.timer.start()

    def stop(self) -> None:
        """Stop redrawing."""
        self.timer.stop()

    def refresh(self) -> None:
        """Draw one frame from the newest state (never blocks on the data threads)."""
        if self._results is None or self._results.version != self.model.version:
            self._results = self.model.results(limit=len(self.results_panel.rows) + 4)
        if isinstance(self.signal_view, FmriWidget):
            self.signal_view.update_view(self.model, self._results, self.cache)
        else:
            self.signal_view.update_view(self.model, self._results)
        self.results_panel.update_view(self._results)
        now = time.monotonic()
        if now - self._last_health >= 0.25:
            self._last_health = now
            self.health_panel.update_view(self.provider.health())
        self.frames += 1

    def save_screenshot(self, path: Any) -> None:
        """Draw a frame and save the window as a PNG."""
        self.refresh()
        QtWidgets.QApplication.processEvents()
        if not self.grab().save(str(path), "PNG"):
            raise OSError(f"could not write the screenshot {str(path)!r}")
