"""A holder that keeps a widget's frequent changes (a label's text, every frame) from re-laying out
the window.

When a widget in a layout changes its text, Qt asks every layout above it for a new geometry, up to
the window: the whole window's size hints are computed again (word-wrapped rich text included) and
every widget whose place moved by a pixel is repainted. Qt stops that walk at a widget whose size
is fixed in both directions. :class:`Pinned` is such a stop: the layout around it sizes it like any
widget, and it gives its child exactly its own size, fixed; the child's changes then stay inside.
Measured at 1600x1000 on the CIFAR-10 test set: the window's thread used 0.50 of a core with the
per-frame labels in the layout, 0.34 without their re-layouts.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QSizePolicy, QWidget


class Pinned(QWidget):
    """Holds ``child`` at the holder's own size. ``height`` (default: the child's size hint, once
    its style is applied) is the holder's fixed height; its width follows the child's horizontal
    size policy, with the child's size hint and minimum taken once, here. So only content that
    never changes the space it needs belongs in one: a label elided or wrapped to the width it gets,
    a row whose last item takes what the others leave."""

    def __init__(self, child: QWidget, parent: QWidget | None = None, *, height: int | None = None) -> None:
        super().__init__(parent)
        hidden = child.isHidden() and child.testAttribute(Qt.WidgetAttribute.WA_WState_ExplicitShowHide)
        child.setParent(self)
        child.ensurePolished()
        # what a layout would give it: the hints within the child's own minimum and maximum
        hint = child.sizeHint().expandedTo(child.minimumSize()).boundedTo(child.maximumSize())
        minimum = child.minimumSizeHint().expandedTo(child.minimumSize()).boundedTo(child.maximumSize())
        self.child = child
        self._hint = QSize(max(0, hint.width()), height if height is not None else max(0, hint.height()))
        self._minimum = QSize(max(0, minimum.width()), self._hint.height())
        self.setSizePolicy(child.sizePolicy().horizontalPolicy(), QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self._hint.height())
        child.move(0, 0)
        child.setFixedSize(self.size())
        child.setVisible(not hidden)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self._hint

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self._minimum

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.child.setFixedSize(event.size())
        super().resizeEvent(event)
