"""The comparison table, as papers print it but measured live, and its CSV export.

Static columns (parameters, MACs, sizes) come from :func:`engine.models.complexity.complexity`; live ones
(latency percentiles, running accuracy) from the engine's metrics snapshot. :func:`table_entries`,
:func:`display_rows`, :func:`csv_rows` and :func:`write_csv_atomic` are plain functions; the widget
only puts their strings into cells that already exist.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.api import MetricsSnapshot, ModelCard, WeightsKind, atomic_write, backend_label, human_count
from gui import style

RESERVED_ROWS = 4  # the comparison's line-up
COLUMNS = ("Network", "Year", "Params", "MACs", "Size MB", "Act. MB", "Fwd p50 ms", "Fwd p95 ms", "Prep ms",
           "Test top-1", "Live top-1", "Weights")
CSV_COLUMNS = ("network", "model", "profile", "year", "params", "macs", "size_mb", "activation_mb",
               "forward_p50_ms", "forward_p95_ms", "preprocess_p50_ms", "latency_p50_ms", "latency_p95_ms",
               "latency_frames", "test_top1", "published_top1", "live_top1", "live_labelled_frames", "weights",
               "source", "backend", "precision")
HEADER_TIPS = {
    "Act. MB": "Activations: the fp32 outputs of every layer for one image",
    "Fwd p50 ms": "The network's forward pass in the live pipeline, median over the last 300 frames of this "
                  "source, warm. Not `python main.py bench`'s figure (the network alone, one input again and "
                  "again): live, the four run in turn and evict each other from the caches, the shown layer's "
                  "outputs are copied out and the window shares the interpreter; a small network's p50 is "
                  "several times bench's",
    "Fwd p95 ms": "95th percentile of the same forward passes",
    "Prep ms": "Preprocessing (centre crop, resize, normalise) median over the same frames; shared by "
               "networks with the same input recipe",
    "Live top-1": "Running top-1 accuracy on this source's labelled frames since it opened, and how many there were",
    "Test top-1": "CIFAR-10: top-1 on the 10,000 test images, from the weights' metrics file. ImageNet: "
                  "'pub.' is torchvision's published top-1 on ImageNet-1K validation, not measured here",
}


@dataclass(frozen=True)
class TableEntry:
    name: str
    title: str
    profile: str
    year: int | None
    params: int | None
    macs: int | None
    size_mb: float | None
    activation_mb: float | None
    p50_ms: float | None  # preprocessing + forward
    p95_ms: float | None
    forward_p50_ms: float | None
    forward_p95_ms: float | None
    preprocess_p50_ms: float | None
    frames: int
    test_top1: float | None
    published_top1: float | None
    live_top1: float | None
    labelled: int
    status: str
    source: str = ""
    backend: str = "torch"  # what ran the forward passes (engine.runtime.backends)
    precision: str = "fp32"


def table_entries(profile: str, models: Sequence[ModelCard], snapshot: MetricsSnapshot | None) -> list[TableEntry]:
    entries = []
    for info in models:
        cost = info.complexity
        stats = snapshot.models.get(info.name) if snapshot is not None else None
        counted = stats is not None and stats.frames > 0

        def known(value: float | None, counted: bool = counted) -> float | None:
            return value if counted and value is not None and math.isfinite(value) else None

        entries.append(TableEntry(
            name=info.name, title=info.display, profile=profile, year=info.year,
            params=cost.params if cost else None, macs=cost.macs if cost else None,
            size_mb=cost.size_mb if cost else None, activation_mb=cost.activation_mb if cost else None,
            p50_ms=known(stats.p50_ms) if stats else None, p95_ms=known(stats.p95_ms) if stats else None,
            forward_p50_ms=known(stats.forward_p50_ms) if stats else None,
            forward_p95_ms=known(stats.forward_p95_ms) if stats else None,
            preprocess_p50_ms=known(stats.preprocess_p50_ms) if stats else None,
            frames=stats.frames if stats is not None else 0,
            test_top1=info.test_top1, published_top1=info.published_top1,
            live_top1=stats.top1 if stats is not None else None,
            labelled=stats.labelled if stats is not None else 0, status=info.weights,
            source=snapshot.source if snapshot is not None else "", backend=info.backend,
            precision=info.precision))
    return entries


def _pct(value: float | None) -> str:
    return "\u2013" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int) -> str:
    return "\u2013" if value is None else f"{value:.{digits}f}"


def display_rows(entries: Sequence[TableEntry]) -> list[list[str]]:
    """The strings the table shows, one row per network, in :data:`COLUMNS` order."""
    rows = []
    for e in entries:
        # brackets mean top-5 in the plots: here the frame count reads as words, "of 431"
        live = _pct(e.live_top1) + (f" of {e.labelled}" if e.live_top1 is not None else "")
        rows.append([e.title, str(e.year or "\u2013"), human_count(e.params) if e.params is not None else "\u2013",
                     human_count(e.macs) if e.macs is not None else "\u2013", _num(e.size_mb, 1),
                     _num(e.activation_mb, 2), _num(e.forward_p50_ms, 2), _num(e.forward_p95_ms, 2),
                     _num(e.preprocess_p50_ms, 2),
                     _pct(e.test_top1) if e.test_top1 is not None or e.published_top1 is None
                     else f"{_pct(e.published_top1)} pub.", live,
                     e.status.upper() if e.status == WeightsKind.UNTRAINED else str(e.status)])
    return rows


def csv_rows(entries: Sequence[TableEntry]) -> list[list[object]]:
    """Full-precision values for a spreadsheet, in :data:`CSV_COLUMNS` order; empty cells for unknown."""
    def blank(v):
        return "" if v is None else v
    return [[e.title, e.name, e.profile, blank(e.year), blank(e.params), blank(e.macs), blank(e.size_mb),
             blank(e.activation_mb), blank(e.forward_p50_ms), blank(e.forward_p95_ms), blank(e.preprocess_p50_ms),
             blank(e.p50_ms), blank(e.p95_ms), e.frames, blank(e.test_top1), blank(e.published_top1),
             blank(e.live_top1), e.labelled,
             e.status, e.source, e.backend, e.precision] for e in entries]


def runtime_caption(entries: Sequence[TableEntry]) -> str:
    """Which backend and number format ran which network, in words: "on ONNX Runtime (LeNet-5,
    ENet) and torch eager (AlexNet), fp32"."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(backend_label(e.backend) + (f", {e.precision}" if e.precision != "fp32" else ""),
                          []).append(e.title)
    if len(groups) == 1:
        only = next(iter(groups))
        return f"on {only}" if "," in only else f"on {only}, fp32"
    return "on " + " and ".join(f"{how} ({', '.join(names)})" for how, names in groups.items())


def write_csv_atomic(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write a CSV next to ``path`` and move it into place: readers never see a partial file."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    atomic_write(path, write)
    return Path(path)


class _TwoLines(QLabel):
    """A wrapped label of a fixed height. Its height does not follow its width: such a height would
    make the window's layout hold the table at full height on a short screen, not let it scroll."""

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt's name
        return False


class ComparisonTable(QWidget):
    message = Signal(str, bool)  # text for the status bar, is_error
    statistics_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.whole = True  # every row shown (see set_whole)
        self._rows_fitted = -1
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for column, name in enumerate(COLUMNS):
            if name in HEADER_TIPS:
                self.table.horizontalHeaderItem(column).setToolTip(HEADER_TIPS[name])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.caption = _TwoLines(self._caption_text(""), self)
        self.caption.setObjectName("dim")
        self.caption.setWordWrap(True)
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.caption.ensurePolished()  # the style sheet's font, not the default one
        self.caption.setFixedHeight(2 * self.caption.fontMetrics().lineSpacing() + 2)
        self.export_button = QPushButton("Export CSV\u2026", self)
        self.export_button.clicked.connect(self.export_dialog)
        self.statistics_button = QPushButton("Statistics\u2026", self)
        self.statistics_button.setToolTip("Confusion matrices, agreement between the networks, flip rate")
        self.statistics_button.clicked.connect(self.statistics_requested.emit)
        bottom = QHBoxLayout()
        bottom.addWidget(self.caption, 1)
        bottom.addWidget(self.statistics_button)
        bottom.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.table)
        layout.addLayout(bottom)
        self.entries: list[TableEntry] = []
        self.colors: list[str] = []
        self.last_dir = ""
        # Sized for the four networks of the comparison before they arrive: a table that grew when
        # they did would re-lay out (and repaint) the whole window.
        self._fit_height(RESERVED_ROWS)

    @staticmethod
    def _caption_text(runtime: str) -> str:
        return ("Parameters and MACs count convolutions and matrix products (1 MAC = 2 FLOPs); size = fp32 "
                f"weights; forward{' ' + runtime if runtime else ''} and prep (preprocessing) are medians over "
                "the last 300 frames of this source, warm; live top-1 over the labelled frames since the "
                "source opened.")

    def set_entries(self, entries: list[TableEntry]) -> None:
        self.entries = entries
        caption = self._caption_text(runtime_caption(entries) if entries else "")
        if self.caption.text() != caption:
            self.caption.setText(caption)
        rows = display_rows(entries)
        if self.table.rowCount() != len(rows):
            self.table.setRowCount(len(rows))
            self._fit_height(max(RESERVED_ROWS, len(rows)))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = self.table.item(r, c)
                if item is None:
                    item = QTableWidgetItem()
                    align = Qt.AlignmentFlag.AlignLeft if c == 0 else Qt.AlignmentFlag.AlignRight
                    item.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
                    if c == 0:
                        item.setForeground(QColor(style.model_color(r)))
                        font = item.font()
                        font.setBold(True)
                        item.setFont(font)
                    self.table.setItem(r, c, item)
                if item.text() != text:
                    item.setText(text)
                if c == len(row) - 1:
                    item.setForeground(QColor(style.BAD if text == "UNTRAINED" else style.TEXT))

    def set_whole(self, whole: bool) -> None:
        """Under the plots (``whole``): always tall enough for every row, the plots give way. In a
        tab of its own: it takes the tab's height and scrolls only where that is short."""
        self.whole = whole
        self._rows_fitted = -1
        self._fit_height(self.table.rowCount() or 4)

    def _fit_height(self, rows: int) -> None:
        """At most as tall as ``rows`` rows (a table of four networks needs no scroll bar where the
        window has room), and at least that (under the plots) or one row (in a tab). Both bounds
        are set once per row count, not per frame, so rows arriving never re-lay out the window."""
        table = self.table

        def height(n: int) -> int:
            return (table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
                    + n * table.verticalHeader().defaultSectionSize() + 2)
        if self._rows_fitted != rows:
            self._rows_fitted = rows
            table.setMaximumHeight(height(rows))
            table.setMinimumHeight(height(rows if self.whole else min(rows, 1)))

    def export_dialog(self) -> None:
        start = os.path.join(self.last_dir or os.path.expanduser("~"), "cnn-arena-comparison.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export the comparison table", start, "CSV files (*.csv)")
        if path:
            self.export(path)

    def export(self, path: str | os.PathLike) -> bool:
        """Write the table to ``path``; the outcome goes to the status bar, never a traceback."""
        try:
            written = write_csv_atomic(path, CSV_COLUMNS, csv_rows(self.entries))
        except OSError as e:
            self.message.emit(f"Export failed: {Path(path).name}: {e.strerror or e}", True)
            return False
        self.last_dir = str(written.parent)
        self.message.emit(f"Exported {len(self.entries)} networks to {written}", False)
        return True
