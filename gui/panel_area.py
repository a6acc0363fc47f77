"""The row of network panels inside a vertical scroll area, so that the splitter under it moves
both ways on a short screen.

At 1366x768 the panels' own minimum (about 400 px: input, top-5, notes, feature maps) left the
splitter no room to give the bottom tabs more: it only moved down. In a scroll area the row keeps
its minimum and scrolls when the splitter makes it shorter; its width is never scrolled: the
window is at least as wide as the panels need.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QWidget

MIN_VISIBLE_HEIGHT = 120  # a panel's name, costs and the top of its input, however far the splitter goes up


class PanelArea(QScrollArea):
    def __init__(self, row: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(row)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        row = self.widget().minimumSizeHint()
        return QSize(row.width() + self.verticalScrollBar().sizeHint().width(), MIN_VISIBLE_HEIGHT)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        row = self.widget().sizeHint()
        return QSize(row.width() + self.verticalScrollBar().sizeHint().width(), row.height())

    def row_height(self) -> int:
        """The height at which the whole row shows without scrolling."""
        return self.widget().minimumSizeHint().height()
