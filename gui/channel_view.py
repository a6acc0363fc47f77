"""What a channel looks for: the 9 test pictures that excite it most, each cropped to the part of
the picture its strongest unit sees (its receptive field), with their classes.

It shows a :class:`~engine.api.TopImages` the engine computed (a job over the labelled set); one
window, reused, that does not block the main one. The grid saves as PNG from its context menu.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from gui import style
from gui.image_canvas import ImageCanvas


class ChannelView(QDialog):
    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setModal(False)
        self.result = None
        self.title = QLabel("", self)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.channel = QSpinBox(self)
        self.channel.setPrefix("channel ")
        self.channel.setToolTip("Another channel of the same layer")
        self.channel.valueChanged.connect(lambda c: self._draw(c))
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.channel)
        self.grid_widget = QWidget(self)
        self.grid = QGridLayout(self.grid_widget)
        self.grid.setSpacing(6)
        self.cells: list[tuple[ImageCanvas, QLabel]] = []
        for i in range(9):
            canvas = ImageCanvas(self.grid_widget, min_size=96)
            caption = QLabel("", self.grid_widget)
            caption.setObjectName("dim")
            caption.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            box = QVBoxLayout()
            box.addWidget(canvas, 1)
            box.addWidget(caption)
            self.grid.addLayout(box, i // 3, i % 3)
            self.cells.append((canvas, caption))
        self.summary = QLabel("", self)
        self.summary.setObjectName("dim")
        self.summary.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.grid_widget, 1)
        layout.addWidget(self.summary)
        self.grid_widget.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid_widget.customContextMenuRequested.connect(self._menu)
        self.resize(460, 560)

    def show_channel(self, result, channel: int, label: str) -> None:
        """``result``: a TopImages of ``label``'s network; ``channel``: the one to show first."""
        self.result, self.label = result, label
        self.channel.blockSignals(True)
        self.channel.setRange(0, result.channels - 1)
        self.channel.setValue(min(max(0, channel), result.channels - 1))
        self.channel.blockSignals(False)
        self._draw(self.channel.value())
        self.show()
        self.raise_()

    def _draw(self, channel: int) -> None:
        r = self.result
        if r is None:
            return
        self.setWindowTitle(f"What {self.label} {r.layer} channel {channel} looks for")
        self.title.setText(f"<b>{self.label}</b> \u00b7 {r.layer} \u00b7 channel {channel}")
        classes = []
        for rank, (canvas, caption) in enumerate(self.cells):
            if rank < r.top_k and np.isfinite(r.scores[channel, rank]):
                canvas.set_rgb(np.ascontiguousarray(r.crop(channel, rank)))
                name = r.class_name(channel, rank)
                classes.append(name)
                caption.setText(f"{name} \u00b7 {r.scores[channel, rank]:.2g}")
                caption.setToolTip(f"test image {int(r.image_ids[channel, rank])}, peak at "
                                   f"{tuple(int(v) for v in r.positions[channel, rank])} of the layer's "
                                   f"{r.map_shape[1]}\u00d7{r.map_shape[2]} map")
            else:
                canvas.clear()
                caption.setText("")
        common = Counter(classes).most_common(1)
        theme = f"{common[0][1]} of {len(classes)} are {common[0][0]}" if common else "no image fires it"
        silent = " This channel never fired on these images: the pictures tie at zero." \
            if channel in r.silent_channels else ""
        self.summary.setText(
            f"The {r.top_k} of {r.images} CIFAR-10 test images with the highest peak in this channel, each cropped "
            f"to the {r.receptive.size[0]:g}\u00d7{r.receptive.size[1]:g}-pixel receptive field of the unit where it "
            f"peaked "
            f"(clipped to the picture); number: the peak. {theme}.{silent}")
        self.summary.setStyleSheet(f"color: {style.TEXT_DIM};")

    def _menu(self, pos: QPoint) -> None:
        menu = QMenu(self)
        menu.addAction("Save the grid as PNG\u2026", self.save_png)
        menu.exec(self.grid_widget.mapToGlobal(pos))

    def save_png(self) -> None:
        name = f"cnn-arena-channel-{self.channel.value()}.png"
        path, _ = QFileDialog.getSaveFileName(self, "Save the grid", name, "PNG (*.png)")
        if path:
            self.grab().save(path, "PNG")
