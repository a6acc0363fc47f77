"""A small canvas for one image: fixed aspect, pixels kept sharp, clicks reported in image pixels.

Both the input view and the feature-map mosaic are one of these. It is a plain widget that paints
a ``QImage`` made over the numpy array (no copy for a contiguous array), not a graphics scene:
Qt repaints every changed scene's window at once, scene by scene, so eight image scenes per frame
would cost eight window repaints where plain widgets share one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from gui import style


class ImageCanvas(QWidget):
    """Shows an RGB uint8 image, or a uint8 index image through a lookup table."""

    def __init__(self, parent: QWidget | None = None, *, min_size: int = 96) -> None:
        super().__init__(parent)
        self.setMinimumSize(min_size, min_size)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)  # paints every pixel itself
        self._background = QColor(style.PANEL)
        self.array: np.ndarray | None = None  # what is shown: (H, W, 3) RGB or (H, W) indices
        self._image: QImage | None = None
        self._tables: dict[int, tuple[np.ndarray, list[int]]] = {}  # id(lut) -> (lut, Qt colour table)
        self._highlight: QRectF | None = None
        self._on_click: Callable[[float, float], None] | None = None
        self.on_double_click: Callable[[], None] | None = None
        self.on_wheel: Callable[[int], bool] | None = None  # steps up (+) or down (-); True when used
        self._describe: Callable[[float, float], str] | None = None

    @property
    def on_click(self) -> Callable[[float, float], None] | None:
        return self._on_click

    @on_click.setter
    def on_click(self, callback: Callable[[float, float], None] | None) -> None:
        self._on_click = callback
        self.setCursor(Qt.CursorShape.PointingHandCursor if callback else Qt.CursorShape.ArrowCursor)

    @property
    def describe(self) -> Callable[[float, float], str] | None:
        """Given image pixel coordinates under the mouse, the tooltip to show there ("" for the
        widget's own tooltip)."""
        return self._describe

    @describe.setter
    def describe(self, callback: Callable[[float, float], str] | None) -> None:
        self._describe = callback
        self.setMouseTracking(callback is not None)

    def set_rgb(self, rgb: np.ndarray) -> None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
            raise ValueError(f"an RGB image is (H, W, 3) and not empty, not {rgb.shape}")
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        self._show(rgb, QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888))

    def set_indexed(self, index: np.ndarray, lut: np.ndarray) -> None:
        """``index`` (H, W) uint8 shown through ``lut`` (256, 3): exact colours, no autoscaling."""
        if index.ndim != 2 or 0 in index.shape:
            raise ValueError(f"an index image is (H, W) and not empty, not {index.shape}")
        index = np.ascontiguousarray(index, dtype=np.uint8)
        h, w = index.shape
        image = QImage(index.data, w, h, w, QImage.Format.Format_Indexed8)
        image.setColorTable(self._table(lut))
        self._show(index, image)

    def set_highlight(self, rect: QRectF | None) -> None:
        """Outline ``rect`` (in image pixels) with a white frame, or nothing."""
        if rect != self._highlight:
            self._highlight = rect
            self.update()

    def clear(self) -> None:
        self.array = self._image = None
        self.update()

    def image_rect(self) -> QRectF:
        """Where the image is drawn: as large as fits, centred, at its own aspect ratio."""
        if self.array is None:
            return QRectF()
        h, w = self.array.shape[:2]
        scale = min(self.width() / w, self.height() / h)
        return QRectF((self.width() - w * scale) / 2, (self.height() - h * scale) / 2, w * scale, h * scale)

    def to_image(self, pos: QPointF) -> tuple[float, float] | None:
        """Widget position -> image pixel coordinates, or None outside the image."""
        target = self.image_rect()
        if self.array is None or not target.contains(pos):
            return None
        h, w = self.array.shape[:2]
        return ((pos.x() - target.x()) * w / target.width(), (pos.y() - target.y()) * h / target.height())

    def _show(self, array: np.ndarray, image: QImage) -> None:
        # Converted once here to the format Qt's raster painter draws natively: scaling an RGB888 or
        # indexed image converts it on every paint (a 32x32 input drawn at 128x128: 96 µs a paint
        # against 10 µs; the window paints eight canvases up to 30 times a second). The copy owns
        # its pixels; the array is kept for the image coordinates and tooltips.
        self.array, self._image = array, image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
        self.update()

    def _table(self, lut: np.ndarray) -> list[int]:
        cached = self._tables.get(id(lut))
        if cached is None or cached[0] is not lut:
            rgb = np.asarray(lut, np.uint32)
            table = (0xFF000000 | rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]).tolist()
            cached = self._tables[id(lut)] = (lut, table)
        return cached[1]

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), self._background)
        if self._image is None:
            return
        target = self.image_rect()
        painter.drawImage(target, self._image)  # no smoothing: a 32x32 input shows its pixels
        if self._highlight is not None:
            h, w = self.array.shape[:2]
            sx, sy = target.width() / w, target.height() / h
            r = self._highlight
            pen = QPen(QColor("#ffffff"), 2)
            painter.setPen(pen)
            painter.drawRect(QRectF(target.x() + r.x() * sx, target.y() + r.y() * sy, r.width() * sx, r.height() * sy))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        if self._on_click is not None and event.buttons() & Qt.MouseButton.LeftButton:  # a drag: clicks all along
            at = self.to_image(event.position())
            if at is not None:
                self._on_click(*at)
        if self._describe is not None:
            at = self.to_image(event.position())
            text = (self._describe(*at) if at is not None else "") or self.toolTip()
            QToolTip.showText(event.globalPosition().toPoint(), text, self)
        super().mouseMoveEvent(event)

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt's name
        steps = event.angleDelta().y() // 120
        if self.on_wheel is not None and steps and self.on_wheel(steps):
            event.accept()
            return
        super().wheelEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        if self.on_double_click is not None and event.button() == Qt.MouseButton.LeftButton:
            self.on_double_click()
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        if self._on_click is not None and event.button() == Qt.MouseButton.LeftButton:
            at = self.to_image(event.position())
            if at is not None:
                self._on_click(*at)
                event.accept()
                return
        super().mousePressEvent(event)
