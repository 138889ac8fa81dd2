"""The presenter's window: an image (or nothing) on black, a caption, and a photodiode patch in a corner."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

#: What the window shows.
BLANK, STIMULUS, FEEDBACK = "blank", "stimulus", "feedback"


def to_qimage(image: np.ndarray) -> QtGui.QImage:
    """An (H, W, 3) uint8 RGB array as a QImage that owns its pixels."""
    rgb = np.ascontiguousarray(image, dtype=np.uint8)
    h, w, _ = rgb.shape
    return QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()


class PresenterWidget(QtWidgets.QWidget):
    """Black window: the current image centred, a caption under it, the photodiode patch.

    The patch is white while a stimulus is shown and black otherwise. Every ``show_*``
    method paints synchronously (:meth:`QWidget.repaint`): when it returns, the frame has
    been drawn and handed to the window system, which is when the presenter sends the marker.

    Parameters
    ----------
    photodiode : str
        ``"off"`` or a corner (``"top-left"``, ...).
    photodiode_size : int
        Side of the patch in pixels.
    on_abort : callable
        Called when the participant or operator presses Escape or closes the window.
    """

    def __init__(self, photodiode: str = "off", photodiode_size: int = 50,
                 on_abort: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.setWindowTitle("bci present")
        self.setCursor(QtCore.Qt.CursorShape.BlankCursor)
        self.photodiode = photodiode
        self.photodiode_size = int(photodiode_size)
        self.on_abort = on_abort
        self.mode = BLANK
        self.caption = ""
        self._image: QtGui.QImage | None = None
        self._closing = False

    # ------------------------------------------------------------------ what to show
    def show_stimulus(self, image: QtGui.QImage) -> None:
        """Draw ``image`` with the patch white."""
        self._set(STIMULUS, image, "")

    def show_feedback(self, image: QtGui.QImage | None, caption: str) -> None:
        """Draw the decoded ``image`` (or none) with ``caption``; the patch black."""
        self._set(FEEDBACK, image, caption)

    def show_blank(self) -> None:
        """Draw a black frame (patch black)."""
        self._set(BLANK, None, "")

    def photodiode_rect(self) -> QtCore.QRect | None:
        """Where the patch is, in widget pixels (None when off)."""
        if self.photodiode == "off":
            return None
        s = self.photodiode_size
        x = 0 if self.photodiode.endswith("left") else self.width() - s
        y = 0 if self.photodiode.startswith("top") else self.height() - s
        return QtCore.QRect(x, y, s, s)

    # ------------------------------------------------------------------ Qt
    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 (Qt name)
        painter = QtGui.QPainter(self)
        try:
            painter.fillRect(self.rect(), QtGui.QColor(0, 0, 0))
            if self._image is not None:
                x = (self.width() - self._image.width()) // 2
                y = (self.height() - self._image.height()) // 2
                painter.drawImage(x, y, self._image)
            if self.caption:
                painter.setPen(QtGui.QColor(255, 255, 255))
                font = painter.font()
                font.setPixelSize(max(14, self.height() // 30))
                painter.setFont(font)
                top = (self.height() + (self._image.height() if self._image is not None else 0)) // 2 + 10
                painter.drawText(QtCore.QRect(0, top, self.width(), self.height() - top),
                                 int(QtCore.Qt.AlignmentFlag.AlignHCenter | QtCore.Qt.AlignmentFlag.AlignTop),
                                 self.caption)
            patch = self.photodiode_rect()
            if patch is not None:
                colour = 255 if self.mode == STIMULUS else 0
                painter.fillRect(patch, QtGui.QColor(colour, colour, colour))
        finally:
            painter.end()

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802
        if event.key() == QtCore.Qt.Key.Key_Escape:
            self._abort()
        else:
            super().keyPressEvent(event)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
        if not self._closing:
            self._abort()
        super().closeEvent(event)

    def close_quietly(self) -> None:
        """Close without calling ``on_abort`` (the run is over)."""
        self._closing = True
        self.close()

    def _abort(self) -> None:
        if self.on_abort is not None:
            self.on_abort()

    def _set(self, mode: str, image: QtGui.QImage | None, caption: str) -> None:
        self.mode, self._image, self.caption = mode, image, caption
        self.repaint()
