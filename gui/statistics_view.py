"""What the engine counts besides accuracy, in a window of its own: each network's confusion matrix
as a heat map with the class names, the agreement between networks, and the flip rate on video.

A click on a confusion cell lists the frames counted there (the latest 50); a double-click on one
shows it again in the main window, when the engine still keeps it. Everything here is read from
the immutable ``MetricsSnapshot`` the window already has; it is refreshed with the slow parts of
the window, never per frame.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.api import MetricsSnapshot, ModelCard
from gui import style

MAX_CLASSES_SHOWN = 40  # beyond this (ImageNet), only the classes that occur in the labels or answers


def shown_classes(confusion: np.ndarray, limit: int = MAX_CLASSES_SHOWN) -> list[int]:
    """The classes a confusion matrix is drawn with: all of them when few, else the ones that occur
    as a label or an answer, the most frequent first, at most ``limit``."""
    n = confusion.shape[0]
    if n <= limit:
        return list(range(n))
    weight = confusion.sum(0) + confusion.sum(1)
    present = [int(i) for i in np.argsort(-weight, kind="stable") if weight[i] > 0]
    return sorted(present[:limit])


def heat(value: float) -> QColor:
    """0..1 to a colour from the panel's background to the accent: a dark, quiet scale."""
    low, high = QColor(style.PANEL), QColor(style.ACCENT)
    v = float(np.clip(value, 0.0, 1.0))
    return QColor(int(low.red() + v * (high.red() - low.red())), int(low.green() + v * (high.green() - low.green())),
                  int(low.blue() + v * (high.blue() - low.blue())))


class StatisticsView(QDialog):
    """Confusion, agreement and flips of the source on screen."""

    def __init__(self, parent: QWidget | None, examples: Callable[[str, int, int], tuple[tuple[int, str], ...]],
                 show_frame: Callable[[int], bool]) -> None:
        super().__init__(parent)
        self.setWindowTitle("Statistics of this source")
        self.resize(980, 640)  # ten CIFAR-10 class names side by side, "automobile" whole
        self._examples, self._show_frame = examples, show_frame
        self.models: list[ModelCard] = []
        self.snapshot: MetricsSnapshot | None = None
        self._classes: list[int] = []

        self.model_box = QComboBox(self)
        self.model_box.currentIndexChanged.connect(lambda _i: self._draw_confusion())
        self.confusion_note = QLabel("", self)
        self.confusion_note.setObjectName("dim")
        self.confusion = _table(self)
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.confusion.cellClicked.connect(self._cell_chosen)
        self.cell_title = QLabel("Click a cell to list its frames; double-click a frame to see it again.", self)
        self.cell_title.setObjectName("dim")
        self.cell_frames = QListWidget(self)
        self.cell_frames.setMaximumHeight(140)
        self.cell_frames.itemDoubleClicked.connect(self._frame_chosen)
        confusion_tab = QWidget(self)
        layout = QVBoxLayout(confusion_tab)
        row = QHBoxLayout()
        row.addWidget(QLabel("Network", self))
        row.addWidget(self.model_box)
        row.addWidget(self.confusion_note, 1)
        layout.addLayout(row)
        layout.addWidget(self.confusion, 1)
        layout.addWidget(self.cell_title)
        layout.addWidget(self.cell_frames)

        self.agreement_note = QLabel("", self)
        self.agreement_note.setWordWrap(True)
        self.agreement = _table(self)
        self.flips = QLabel("", self)
        self.flips.setWordWrap(True)
        self.flips.setTextFormat(Qt.TextFormat.RichText)
        agreement_tab = QWidget(self)
        layout = QVBoxLayout(agreement_tab)
        layout.addWidget(self.agreement_note)
        layout.addWidget(self.agreement, 1)
        layout.addWidget(self.flips)

        self.tabs = QTabWidget(self)
        self.tabs.addTab(confusion_tab, "Confusion")
        self.tabs.addTab(agreement_tab, "Agreement and flips")
        outer = QVBoxLayout(self)
        outer.addWidget(self.tabs)

    # -- input ---------------------------------------------------------------------------------

    def set_models(self, models: list[ModelCard]) -> None:
        self.models = list(models)
        self.model_box.blockSignals(True)
        self.model_box.clear()
        self.model_box.addItems([m.display for m in self.models])
        self.model_box.blockSignals(False)
        self.snapshot = None
        self.cell_frames.clear()

    def show_snapshot(self, snapshot: MetricsSnapshot | None) -> None:
        self.snapshot = snapshot
        source = f" \u2014 {snapshot.source}" if snapshot is not None and snapshot.source else ""
        self.setWindowTitle(f"Statistics of this source{source}")
        self._draw_confusion()
        self._draw_agreement()

    # -- drawing -------------------------------------------------------------------------------

    def _model(self) -> ModelCard | None:
        index = self.model_box.currentIndex()
        return self.models[index] if 0 <= index < len(self.models) else None

    def _draw_confusion(self) -> None:
        model, snapshot = self._model(), self.snapshot
        stats = snapshot.models.get(model.name) if model is not None and snapshot is not None else None
        if stats is None or stats.confusion is None:
            self.confusion.setRowCount(0)
            self.confusion.setColumnCount(0)
            self.confusion_note.setText("No labelled frames in this source yet: open the CIFAR-10 test set, or a "
                                        "folder of class-named folders.")
            return
        matrix = stats.confusion
        classes = shown_classes(matrix)
        names = model.class_names
        self._classes = classes
        self.confusion.setRowCount(len(classes))
        self.confusion.setColumnCount(len(classes))
        self.confusion.setVerticalHeaderLabels([f"true {names[i]}" for i in classes])
        self.confusion.setHorizontalHeaderLabels([names[i] for i in classes])
        rows = matrix[np.ix_(classes, classes)]
        totals = matrix.sum(1)
        for r, true_class in enumerate(classes):
            for c, _ in enumerate(classes):
                count = int(rows[r, c])
                share = count / totals[true_class] if totals[true_class] else 0.0
                item = _cell(self.confusion, r, c)
                item.setText(str(count) if count else "")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                item.setBackground(QBrush(heat(share)))
                item.setForeground(QBrush(QColor(style.TEXT if share < 0.6 else style.BACKGROUND)))
                item.setToolTip(f"true {names[true_class]}, answered {names[classes[c]]}: {count} frames "
                                f"({100 * share:.1f}% of this class)")
        shown = "" if len(classes) == matrix.shape[0] else f"; {len(classes)} of {matrix.shape[0]} classes shown"
        self.confusion_note.setText(f"{stats.labelled} labelled frames since the source opened; rows: the true "
                                    f"class, columns: the answer, colour: share of the row{shown}")

    def _draw_agreement(self) -> None:
        snapshot = self.snapshot
        if snapshot is None or not self.models:
            return
        names = [next((m.display for m in self.models if m.name == n), n) for n in snapshot.model_names]
        matrix = snapshot.agreement
        self.agreement.setRowCount(len(names))
        self.agreement.setColumnCount(len(names))
        self.agreement.setVerticalHeaderLabels(names)
        self.agreement.setHorizontalHeaderLabels(names)
        for r in range(len(names)):
            for c in range(len(names)):
                value = float(matrix[r, c]) if np.isfinite(matrix[r, c]) else None
                item = _cell(self.agreement, r, c)
                item.setText("\u2013" if value is None else f"{100 * value:.0f}%")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                item.setBackground(QBrush(heat(value or 0.0)))
                item.setForeground(QBrush(QColor(style.TEXT if (value or 0) < 0.6 else style.BACKGROUND)))
        rate = snapshot.all_agree_rate
        self.agreement_note.setText(
            "Share of frames on which two networks gave the same top-1 answer, since the source opened. "
            + ("All four agreed on " + f"{100 * rate:.1f}% of {snapshot.frames - snapshot.errors} frames."
               if rate is not None else "No frame yet."))
        parts = []
        for model in self.models:
            stats = snapshot.models.get(model.name)
            if stats is not None and stats.flip_rate is not None:
                parts.append(f"{model.display} <b>{100 * stats.flip_rate:.1f}%</b>")
        self.flips.setText("Flip rate (video and camera: how often the top-1 answer changes from one frame to the "
                           "next; steadier is lower): " + (" \u00b7 ".join(parts) if parts else "\u2013 (not a video)"))

    # -- interaction ---------------------------------------------------------------------------

    def _cell_chosen(self, row: int, column: int) -> None:
        model = self._model()
        if model is None or not (0 <= row < len(self._classes) and 0 <= column < len(self._classes)):
            return
        true_class, answer = self._classes[row], self._classes[column]
        frames = self._examples(model.name, true_class, answer)
        names = model.class_names
        self.cell_title.setText(f"{model.display}: true {names[true_class]}, answered {names[answer]} \u2014 "
                                f"the latest {len(frames)} frames (double-click one to see it again)")
        self.cell_frames.clear()
        for frame_id, source in reversed(frames):
            item = QListWidgetItem(f"frame {frame_id} \u00b7 {source}")
            item.setData(Qt.ItemDataRole.UserRole, frame_id)
            self.cell_frames.addItem(item)

    def _frame_chosen(self, item: QListWidgetItem) -> None:
        frame_id = item.data(Qt.ItemDataRole.UserRole)
        if not self._show_frame(int(frame_id)):
            self.cell_title.setText(f"Frame {frame_id} is no longer kept: only the most recent frames can be shown "
                                    "again")


def _cell(table: QTableWidget, row: int, column: int) -> QTableWidgetItem:
    """The table's item at (row, column), made and placed the first time."""
    item = table.item(row, column)
    if item is None:
        item = QTableWidgetItem()
        table.setItem(row, column, item)
    return item


def _table(parent: QWidget) -> QTableWidget:
    table = QTableWidget(0, 0, parent)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    return table
