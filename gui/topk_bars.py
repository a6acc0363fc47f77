"""Top-k predictions as labelled horizontal bars, painted directly (no child widgets per row)."""

from __future__ import annotations

from typing import NamedTuple

from PySide6.QtCore import QEvent, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

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
        self._dim, self._text = QColor(style.TEXT_DIM), QColor(style.TEXT)
        self._truth_color, self._track = QColor(style.GOOD), QColor(style.PANEL_BORDER)
        self._cached: _Layout | None = None  # the last frame's layout
        self._fonts: tuple | None = None  # (font key, plain, bold, their metrics)
        self._measured: dict = {}  # name -> its width in bold; (text, bold, width) -> the text cut to fit
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
            self.update()

    def tooltip_text(self) -> str:
        """The whole names with their probabilities (a long ImageNet name is cut in the bars), then
        the widget's own tooltip (what a click does), if it has one."""
        names = "\n".join(f"{100 * p:5.1f}%  {name}" for name, p in zip(self.labels, self.probs))
        return "\n\n".join(part for part in (names, self.toolTip()) if part)

    def event(self, event: QEvent) -> bool:
        # Written when asked for, not with every frame (up to 30 times a second in each panel).
        if event.type() == QEvent.Type.ToolTip and self.labels:
            QToolTip.showText(event.globalPos(), self.tooltip_text(), self)
            return True
        return super().event(event)

    def clear(self) -> None:
        self.set_predictions((), ())

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        row = int(event.position().y() / max(1.0, self.height() / self.rows))
        if event.button() == Qt.MouseButton.LeftButton and 0 <= row < len(self.labels):
            self.class_clicked.emit(self.labels[row])
            event.accept()
            return
        super().mousePressEvent(event)

    def _layout(self) -> _Layout:
        """Where everything goes and what each row's name reads, for this size, font, set of names
        and true class. The text measurements behind it are kept (a name's width, its cut form),
        so a new frame, whose top five are usually the same names in another order, measures
        nothing again."""
        key = (self.width(), self.height(), self.font().key(), self.labels, self.truth)
        if self._cached is not None and self._cached.key == key:
            return self._cached
        width, height, font_key = key[0], key[1], key[2]
        if self._fonts is None or self._fonts[0] != font_key:
            plain, bold = QFont(self.font()), QFont(self.font())
            plain.setBold(False)
            bold.setBold(True)
            self._fonts = (font_key, plain, bold, QFontMetrics(plain), QFontMetrics(bold))
            self._measured.clear()
        _, plain, bold, plain_metrics, bold_metrics = self._fonts
        if len(self._measured) > 4096:  # ImageNet's thousand names, several widths each, at most
            self._measured.clear()
        measured = self._measured

        def advance(name: str) -> int:
            found = measured.get(name)
            if found is None:
                found = measured[name] = bold_metrics.horizontalAdvance("\u2713 " + name) + 2
            return found

        row_h = height / self.rows
        pct_w = plain_metrics.horizontalAdvance("100.0%") + 4
        # names as wide as they need (the first in bold), the bars take what is left, down to 24 px
        needed = max([advance(name) for name in self.labels] or [0])
        label_w = max(min(70, width - pct_w - 24), min(max(70, needed, int(width * 0.42)), width - pct_w - 24))
        bar_x, bar_w = label_w + 6, max(10, width - label_w - 6 - pct_w)
        rows = []
        for i, label in enumerate(self.labels[:self.rows]):
            top = i * row_h
            is_truth = self.truth is not None and label == self.truth
            text = ("\u2713 " if is_truth else "") + label
            name = measured.get((text, i == 0, label_w))
            if name is None:
                metrics = bold_metrics if i == 0 else plain_metrics
                name = measured[(text, i == 0, label_w)] = metrics.elidedText(text, Qt.TextElideMode.ElideRight,
                                                                               label_w)
            rows.append(_Row(name, bold if i == 0 else plain, is_truth, QRectF(0, top, label_w, row_h),
                             QRectF(bar_x, top + row_h * 0.22, bar_w, row_h * 0.56),
                             QRectF(bar_x + bar_w + 2, top, pct_w, row_h)))
        self._cached = _Layout(key, tuple(rows))
        return self._cached

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        if not self.labels:
            painter.setPen(QColor(style.TEXT_DIM))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "waiting for a frame")
            painter.end()
            return
        # Square bars filled without antialiasing: Qt's raster engine fills an antialiased rounded
        # rectangle as a path, several times the cost of a plain fill, and ten of them a paint, in
        # four panels, up to 30 times a second, was a tenth of the window's drawing time.
        dim, text, truth_color = self._dim, self._text, self._truth_color
        right = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        for i, (row, prob) in enumerate(zip(self._layout().rows, self.probs)):
            painter.setFont(row.font)
            painter.setPen(truth_color if row.is_truth else (text if i == 0 else dim))
            painter.drawText(row.name_rect, right, row.name)
            track = row.track
            painter.fillRect(track, self._track)
            fill = QColor(truth_color if row.is_truth else self.color)
            if i > 0:
                fill.setAlpha(170)
            painter.fillRect(QRectF(track.x(), track.y(), max(1.0, track.width() * prob), track.height()), fill)
            painter.setPen(text if i == 0 else dim)
            painter.drawText(row.pct_rect, right, f"{100 * prob:.1f}%")
        painter.end()


class _Row(NamedTuple):
    name: str  # as shown: elided to fit, with a check mark on the true class
    font: QFont
    is_truth: bool
    name_rect: QRectF
    track: QRectF
    pct_rect: QRectF


class _Layout(NamedTuple):
    key: tuple
    rows: tuple[_Row, ...]
