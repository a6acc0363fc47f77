"""A small pyqtgraph canvas for one image: fixed aspect, no pan/zoom, clicks reported in pixels.

Both the input view and the feature-map mosaic are one of these. The image item is updated in
place (``setImage``), never rebuilt, and the view range changes only when the image's shape does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSizePolicy

from gui import style


class _ClickableImage(pg.ImageItem):
    def __init__(self) -> None:
        super().__init__(axisOrder="row-major")
        self.on_click: Callable[[float, float], None] | None = None

    def mouseClickEvent(self, ev) -> None:  # noqa: N802 - Qt's name
        if self.on_click is not None and ev.button() == Qt.MouseButton.LeftButton:
            pos = ev.pos()
            self.on_click(pos.x(), pos.y())
            ev.accept()
        else:
            ev.ignore()


class ImageCanvas(pg.GraphicsView):
    """Shows an RGB uint8 image, or a uint8 index image through a lookup table."""

    def __init__(self, parent=None, *, min_size: int = 96) -> None:
        super().__init__(parent, background=style.PANEL)
        self.setAntialiasing(False)  # pixels stay pixels (a 32x32 input is shown as it is)
        self.setMinimumSize(min_size, min_size)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.view = pg.ViewBox(lockAspect=True, invertY=True, enableMouse=False, enableMenu=False,
                               defaultPadding=0.0)
        self.setCentralItem(self.view)
        self.image = _ClickableImage()
        self.view.addItem(self.image)
        self._shape: tuple[int, ...] | None = None
        self.setToolTip("")

    @property
    def on_click(self):
        return self.image.on_click

    @on_click.setter
    def on_click(self, callback: Callable[[float, float], None] | None) -> None:
        self.image.on_click = callback
        self.setCursor(Qt.CursorShape.PointingHandCursor if callback else Qt.CursorShape.ArrowCursor)

    def set_rgb(self, rgb: np.ndarray) -> None:
        self.image.setImage(rgb, autoLevels=False, levels=(0, 255), lut=None)
        self._fit(rgb.shape[:2])

    def set_indexed(self, index: np.ndarray, lut: np.ndarray) -> None:
        """``index`` (H, W) uint8 shown through ``lut`` (256, 3): exact colours, no autoscaling."""
        self.image.setImage(index, autoLevels=False, levels=(0, 255), lut=lut)
        self._fit(index.shape[:2])

    def clear(self) -> None:
        self.image.clear()
        self._shape = None

    def _fit(self, shape: tuple[int, ...]) -> None:
        if shape != self._shape:
            self._shape = shape
            self.view.setRange(xRange=(0, shape[1]), yRange=(0, shape[0]), padding=0.0)
