"""The Overview tab: every network's layers at a glance, one row per network, aligned by depth.

Each row shows one small picture per layer with a spatial map (a convolution, a pool, or one of
ENet's blocks), placed by relative depth (0: the first layer, 1: the last), so that the stages of
LeNet-5's three convolutions and VGG-16's thirteen line up. The picture is the layer's strongest
channel on this frame, or the mean over its channels; under it a red bar grows with the share of
the layer's outputs that are exactly zero (what a ReLU silences). Hover for the layer's shape, its
share of the network's multiply-accumulates, its zeros and the channels that were silent; click to
show that layer in the network's panel. The pictures come from the engine's overview probe
(``engine.probes.overview``), read from the frame's own forward pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PySide6.QtCore import QPoint, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from engine.api import LayerInfo, ModelCard, human_count
from gui import style

ACTIVATIONS = ("ReLU", "ReLU6", "Tanh", "PReLU", "GELU", "SiLU", "Sigmoid")
POOLS = ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d")
CONVS = ("Conv2d", "ConvTranspose2d")
BETWEEN = ("BatchNorm2d", *ACTIVATIONS)  # what may follow a convolution within one stage


def overview_layers(card: ModelCard) -> tuple[LayerInfo, ...]:
    """The layers a row shows, one per stage of the network: a convolution's output after its
    normalisation and non-linearity (where the zeros a ReLU makes are), a pool, or a composite block
    (ENet's bottlenecks). Each carries the multiply-accumulates of its whole stage (the convolution
    before it included), so the shares add up to the network's convolutions."""
    shown, macs = [], 0
    layers = card.layers
    for i, layer in enumerate(layers):
        macs += layer.macs
        following = layers[i + 1].kind if i + 1 < len(layers) else ""
        ends_stage = (layer.kind in POOLS or (layer.kind in ACTIVATIONS and following not in BETWEEN)
                      or (layer.kind in CONVS and following not in BETWEEN)
                      or layer.kind.endswith(("Block", "Bottleneck")))
        if ends_stage:
            shown.append(dataclasses.replace(layer, macs=macs))
            macs = 0
    return tuple(shown)


class OverviewCanvas(QWidget):
    layer_clicked = Signal(str, str)  # model, layer

    LABEL_W = 96
    ROW_GAP = 6

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[tuple[ModelCard, str, tuple[LayerInfo, ...]]] = []  # card, colour, layers
        self.glances: dict[str, dict] = {}  # model -> layer -> LayerGlance
        self.use_mean = False
        self._lut = style.feature_lut()
        self._hits: list[tuple[QRect, str, str]] = []
        self.setMouseTracking(True)
        self.setMinimumHeight(100)  # rows shrink to fit a short window; the figures are on hover
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_models(self, cards: list[ModelCard]) -> None:
        self.rows = [(c, style.model_color(i), overview_layers(c)) for i, c in enumerate(cards)]
        self.glances = {}
        self.update()

    def set_glances(self, glances: dict[str, dict]) -> None:
        self.glances = glances
        self.update()

    def _picture(self, g) -> QImage:
        values = np.asarray(g.mean if self.use_mean else g.strongest, np.float32)
        low, high = float(values.min()), float(values.max())
        levels = np.zeros(values.shape, np.uint8) if high <= low else \
            ((values - low) * (255.0 / (high - low))).astype(np.uint8)
        rgb = np.ascontiguousarray(self._lut[levels])
        h, w = levels.shape
        return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(style.PANEL))
        self._hits = []
        if not self.rows:
            painter.setPen(QColor(style.TEXT_DIM))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "the networks' layers appear here")
            return
        n_rows = len(self.rows)
        row_h = max(40, (self.height() - self.ROW_GAP * (n_rows + 1)) // n_rows)
        most = max(len(layers) for _c, _col, layers in self.rows) or 1
        left, right = self.LABEL_W + 8, self.width() - 8
        span = max(1, right - left)
        size = int(max(12, min(row_h - 18, span / most - 4, 64)))
        small = QFont(self.font())
        small.setPointSizeF(max(6.5, self.font().pointSizeF() - 2))
        for r, (card, colour, layers) in enumerate(self.rows):
            top = self.ROW_GAP + r * (row_h + self.ROW_GAP)
            painter.setPen(QColor(colour))
            bold = QFont(self.font())
            bold.setBold(True)
            painter.setFont(bold)
            painter.drawText(QRect(4, top, self.LABEL_W, size), int(Qt.AlignmentFlag.AlignVCenter), card.display)
            glances = self.glances.get(card.name, {})
            total = card.complexity.macs if card.complexity is not None and card.complexity.macs else 0
            count = len(layers)
            room = (span - size) / (count - 1) if count > 1 else span  # from one picture to the next
            captions = room >= 76 and row_h - size >= 26  # else on hover only
            for i, layer in enumerate(layers):
                depth = i / (count - 1) if count > 1 else 0.0
                x = int(left + depth * (span - size))
                box = QRect(x, top, size, size)
                g = glances.get(layer.name)
                if g is not None:
                    painter.drawImage(QRectF(box), self._picture(g))
                    zeros = QRect(x, top + size + 2, max(1, int(size * g.zero_fraction)), 3)
                    painter.fillRect(zeros, QColor(style.BAD))
                else:
                    painter.fillRect(box, QColor(style.BACKGROUND))
                painter.setPen(QColor(style.PANEL_BORDER))
                painter.drawRect(box)
                if captions:
                    painter.setFont(small)
                    painter.setPen(QColor(style.TEXT_DIM))
                    share = f"{100 * layer.macs / total:.0f}%" if total and layer.macs else ""
                    c, h, w = layer.shape
                    painter.drawText(QRect(min(max(0, x + size // 2 - 38), self.width() - 78), top + size + 6, 76, 14),
                                     int(Qt.AlignmentFlag.AlignHCenter), f"{c}\u00d7{h}\u00b2 {share}".strip())
                self._hits.append((box.adjusted(-2, -2, 2, 8), card.name, layer.name))
        painter.end()

    def _at(self, pos: QPoint) -> tuple[str, str] | None:
        for rect, model, layer in self._hits:
            if rect.contains(pos):
                return model, layer
        return None

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        hit = self._at(event.position().toPoint())
        QToolTip.showText(event.globalPosition().toPoint(), self._describe(*hit) if hit else "", self)
        self.setCursor(Qt.CursorShape.PointingHandCursor if hit else Qt.CursorShape.ArrowCursor)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        hit = self._at(event.position().toPoint())
        if hit is not None and event.button() == Qt.MouseButton.LeftButton:
            self.layer_clicked.emit(*hit)

    def _describe(self, model: str, layer: str) -> str:
        card, _colour, layers = next(row for row in self.rows if row[0].name == model)
        info = next(x for x in layers if x.name == layer)
        c, h, w = info.shape
        total = card.complexity.macs if card.complexity is not None else 0
        text = f"{card.display} \u00b7 {layer} ({info.kind})\n{c} channels of {h}\u00d7{w}"
        if total and info.macs:
            text += f" \u00b7 {human_count(info.macs)} MACs, {100 * info.macs / total:.1f}% of the network's"
        g = self.glances.get(model, {}).get(layer)
        if g is not None:
            shown = "the mean of its channels" if self.use_mean else f"channel {g.strongest_channel}, its strongest"
            text += (f"\nshowing {shown}\n{100 * g.zero_fraction:.0f}% of its outputs are 0; {g.silent} of "
                     f"{g.channels} channels have no positive value on this frame")
        return text + "\nclick: show this layer in the panel"


class OverviewView(QWidget):
    layer_clicked = Signal(str, str)  # model, layer

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = OverviewCanvas(self)
        self.canvas.layer_clicked.connect(self.layer_clicked.emit)
        self.mode = QComboBox(self)
        self.mode.addItems(["strongest channel", "mean over channels"])
        self.mode.setToolTip("What each small picture shows: the channel with the highest peak on this frame, "
                             "or the mean of all the layer's channels")
        self.mode.currentIndexChanged.connect(self._mode)
        self.caption = QLabel("One row per network, layers placed by depth (first layer left, last right); red "
                              "bar: share of outputs that are 0. Hover for figures, click to open a layer in its "
                              "panel. Refreshed with the plots, at most 5 times a second.", self)
        self.caption.setObjectName("dim")
        self.caption.setWordWrap(True)
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top = QHBoxLayout()
        top.addWidget(self.mode)
        top.addWidget(self.caption, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 2)
        layout.addLayout(top)
        layout.addWidget(self.canvas, 1)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)

    def _mode(self, index: int) -> None:
        self.canvas.use_mean = index == 1
        self.canvas.update()

    def layers_for(self, model: str) -> tuple[str, ...]:
        return next((tuple(x.name for x in layers) for card, _c, layers in self.canvas.rows if card.name == model), ())

    def _menu(self, pos: QPoint) -> None:
        menu = QMenu(self)
        menu.addAction("Save as PNG\u2026", self.save_png)
        menu.exec(self.mapToGlobal(pos))

    def save_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the overview", "cnn-arena-overview.png", "PNG (*.png)")
        if path:
            self.canvas.grab().save(path, "PNG")
