"""Top-k predictions as labelled horizontal bars, painted directly (no child widgets per row)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from gui import style


class TopKBars(QWidget):
    """Rows of ``label  [bar]  42.1%``; the true class, when known, is marked. A click on a row
    says which class it shows (``class_clicked``)."""

    class_clicked = Signal(str)

    def __init__(self, rows: int = 5, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows = rows
        self.labels: tuple[str, ...] = ()
        self.probs: tuple[float, ...] = ()
        self.truth: str | None = None
        self.color = QColor(style.ACCENT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(self.rows * 18)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(220, self.rows * 24)

    def set_color(self, color: str) -> None:
        self.color = QColor(color)
        self.update()

    def set_predictions(self, labels, probs, truth: str | None = None) -> None:
        labels, probs = tuple(labels), tuple(float(p) for p in probs)
        if (labels, probs, truth) != (self.labels, self.probs, self.truth):
            self.labels, self.probs, self.truth = labels, probs, truth
            # the whole names on hover, where a long one (ImageNet's) had to be cut
            self.setToolTip("\n".join(f"{100 * p:5.1f}%  {name}" for name, p in zip(labels, probs)))
            self.update()

    def clear(self) -> None:
        self.set_predictions((), ())

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        row = int(event.position().y() / max(1.0, self.height() / self.rows))
        if event.button() == Qt.MouseButton.LeftButton and 0 <= row < len(self.labels):
            self.class_clicked.emit(self.labels[row])
            event.accept()
            return
        super().mousePressEvent(event)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        metrics = QFontMetrics(self.font())
        width, height = self.width(), self.height()
        row_h = height / self.rows
        pct_w = metrics.horizontalAdvance("100.0%") + 4
        # names as wide as they need (the first in bold), the bars take what is left, down to 24 px
        bold = self.font()
        bold.setBold(True)
        needed = max([QFontMetrics(bold).horizontalAdvance("\u2713 " + name) + 2 for name in self.labels] or [0])
        label_w = max(min(70, width - pct_w - 24), min(max(70, needed, int(width * 0.42)), width - pct_w - 24))
        bar_x, bar_w = label_w + 6, max(10, width - label_w - 6 - pct_w)
        dim, text, truth_color = QColor(style.TEXT_DIM), QColor(style.TEXT), QColor(style.GOOD)
        if not self.labels:
            painter.setPen(dim)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "waiting for a frame")
            painter.end()
            return
        for i in range(self.rows):
            top = i * row_h
            if i >= len(self.labels):
                break
            label, prob = self.labels[i], self.probs[i]
            is_truth = self.truth is not None and label == self.truth
            painter.setPen(truth_color if is_truth else (text if i == 0 else dim))
            font = painter.font()
            font.setBold(i == 0)
            painter.setFont(font)
            text_shown = ("\u2713 " if is_truth else "") + label
            shown = QFontMetrics(font).elidedText(text_shown, Qt.TextElideMode.ElideRight, label_w)
            painter.drawText(QRectF(0, top, label_w, row_h),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), shown)
            track = QRectF(bar_x, top + row_h * 0.22, bar_w, row_h * 0.56)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(style.PANEL_BORDER))
            painter.drawRoundedRect(track, 2, 2)
            fill = QColor(truth_color if is_truth else self.color)
            if i > 0:
                fill.setAlpha(170)
            painter.setBrush(fill)
            painter.drawRoundedRect(QRectF(track.x(), track.y(), max(1.0, track.width() * prob), track.height()), 2, 2)
            painter.setPen(text if i == 0 else dim)
            painter.drawText(QRectF(bar_x + bar_w + 2, top, pct_w, row_h),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), f"{100 * prob:.1f}%")
        painter.end()
