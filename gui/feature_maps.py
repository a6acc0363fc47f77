"""The feature-map view of one network: a channel mosaic of the chosen layer, click to pick a channel.

The mosaic is drawn by numpy (:func:`gui.imaging.tile_channels`) into one uint8 image shown through
a fixed lookup table, so a frame costs one ``setImage``. Clicking a tile selects that channel
(the panel then paints it over the input); clicking it again clears the selection.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QMenu, QSizePolicy, QVBoxLayout, QWidget

from gui import style
from gui.elided import ElidedLabel
from gui.image_canvas import ImageCanvas
from gui.imaging import Mosaic, tile_channels
from gui.pinned import Pinned

MAX_CHANNELS = 64


def shape_text(shape: tuple[int, ...]) -> str:
    return "\u00d7".join(str(s) for s in shape)


class FeatureMapView(QWidget):
    channel_selected = Signal(object)  # int channel, or None when cleared

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = ImageCanvas(self, min_size=64)
        self.canvas.on_click = self._clicked
        self.canvas.describe = self.describe_at
        self.canvas.setToolTip("Click a channel to paint it over the input; click it again to clear")
        self.caption = ElidedLabel(" ", self)  # a narrow panel cuts it with "…"; all of it on hover
        self.caption.setObjectName("dim")
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(Pinned(self.caption, self))  # its text changes with every frame
        self._lut = style.feature_lut()
        self.per_channel = False
        self.layer: str | None = None
        self.shape: tuple[int, ...] | None = None
        self.mosaic: Mosaic | None = None
        self.selected: int | None = None
        self._activation: np.ndarray | None = None
        self.canvas.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.canvas.customContextMenuRequested.connect(self._menu)
        self.extra_actions: list = []  # (text, callback(channel or None)) the owner adds to the menu
        self.health = ""  # the owner's layer-health note, appended to the caption

    def _menu(self, pos: QPoint) -> None:
        menu = QMenu(self)
        save = menu.addAction("Save the mosaic as PNG\u2026", self.save_png)
        save.setEnabled(self.mosaic is not None)
        at = self.canvas.to_image(QPointF(pos))
        channel = self.mosaic.channel_at(*at) if at is not None and self.mosaic is not None else None
        for text, callback in self.extra_actions:
            action = menu.addAction(text.format(channel=channel), lambda c=channel, cb=callback: cb(c))
            action.setEnabled(channel is not None)
        menu.exec(self.canvas.mapToGlobal(pos))

    def save_png(self) -> None:
        if self.mosaic is None:
            return
        name = f"cnn-arena-{(self.layer or 'layer').replace('.', '-')}.png"
        path, _ = QFileDialog.getSaveFileName(self, "Save the mosaic", name, "PNG (*.png)")
        if path:
            self.canvas.grab().save(path, "PNG")

    def set_per_channel(self, per_channel: bool) -> None:
        if per_channel != self.per_channel:
            self.per_channel = per_channel
            if self._activation is not None and self.layer is not None:
                self.set_activation(self.layer, self._activation)

    def set_activation(self, layer: str, activation: np.ndarray) -> None:
        if layer != self.layer:
            self.selected = None
        self.layer, self.shape, self._activation = layer, tuple(activation.shape), activation
        mosaic = tile_channels(activation, max_channels=MAX_CHANNELS, per_channel=self.per_channel)
        self.mosaic = mosaic
        self.canvas.set_indexed(mosaic.image, self._lut)
        if self.selected is not None and self.selected >= mosaic.shown:
            self.selected = None
        self._place_highlight()
        scale = "per-channel scale" if self.per_channel else f"range {mosaic.low:.3g} \u2026 {mosaic.high:.3g}"
        count = f"{mosaic.total} ch" if mosaic.shown == mosaic.total else f"{mosaic.shown} of {mosaic.total} ch"
        pick = f" \u00b7 ch {self.selected} on the input" if self.selected is not None else ""
        text = f"{shape_text(self.shape)} \u00b7 {count} \u00b7 {scale}{pick}{self.health}"
        if self.caption.text() != text:
            self.caption.setText(text)

    def clear(self, message: str = " ") -> None:
        self.canvas.clear()
        self.layer = self.shape = self.mosaic = self._activation = None
        self.selected = None
        self.canvas.set_highlight(None)
        self.caption.setText(message)

    def selected_map(self) -> np.ndarray | None:
        """The selected channel at full resolution, or None."""
        if self.selected is None or self._activation is None:
            return None
        return self._activation[self.selected]

    def select_channel(self, channel: int | None) -> None:
        if self.mosaic is not None and channel is not None and not 0 <= channel < self.mosaic.shown:
            channel = None
        self.selected = channel
        if self.layer is not None and self._activation is not None:
            self.set_activation(self.layer, self._activation)
        self.channel_selected.emit(channel)

    def describe_at(self, x: float, y: float) -> str:
        """The channel under mosaic pixel (x, y) and its values, for the tooltip ("" on a gap)."""
        if self.mosaic is None or self._activation is None:
            return ""
        channel = self.mosaic.channel_at(x, y)
        if channel is None:
            return ""
        values = self._activation[channel]
        action = "click to clear" if channel == self.selected else "click to paint it over the input"
        return (f"channel {channel} of {self.layer}: min {float(values.min()):.3g}, "
                f"mean {float(values.mean()):.3g}, max {float(values.max()):.3g} \u00b7 {action}")

    def _clicked(self, x: float, y: float) -> None:
        if self.mosaic is None:
            return
        channel = self.mosaic.channel_at(x, y)
        if channel is None or channel == self.selected:
            self.select_channel(None)
        else:
            self.select_channel(channel)

    def _place_highlight(self) -> None:
        if self.selected is None or self.mosaic is None:
            self.canvas.set_highlight(None)
            return
        x, y = self.mosaic.tile_origin(self.selected)
        self.canvas.set_highlight(QRectF(x - 0.5, y - 0.5, self.mosaic.tile_w + 1, self.mosaic.tile_h + 1))
