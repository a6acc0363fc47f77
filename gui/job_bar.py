"""A long job's progress in the status bar: what it is doing, a bar, and Cancel.

Hidden when no job runs. It reads the engine's ``JobProgress`` and ``JobEnded`` events and shows
how much is done in the job's own unit (MB with the speed for a download, images for an
evaluation); Cancel asks the engine to stop the job at its next safe point.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QSize, Signal
from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QSizePolicy, QToolButton, QWidget

from engine.api import JobEnded, JobProgress
from gui.elided import ElidedLabel

MAX_TEXT_PX = 300  # beside the status line and the counters on a 1366-pixel screen; the whole line is the tooltip
MIN_TEXT_PX = 110  # the numbers ("1,234/2,000 images"), when the window is as narrow as it goes


class _JobText(ElidedLabel):
    """Asks for MAX_TEXT_PX whatever its text (a new line must not re-lay out the status bar) and
    takes down to MIN_TEXT_PX: the bar never makes the window wider than the screen."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(MAX_TEXT_PX, super().sizeHint().height())


class JobBar(QWidget):
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = _JobText("", self)
        self.text.setMinimumWidth(MIN_TEXT_PX)
        self.text.setMaximumWidth(MAX_TEXT_PX)
        self.text.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.bar = QProgressBar(self)
        self.bar.setFixedWidth(120)
        self.bar.setTextVisible(False)
        self.cancel = QToolButton(self)
        self.cancel.setText("Cancel")
        self.cancel.setToolTip("Stop this job; nothing half-done is kept")
        self.cancel.clicked.connect(self._cancel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 8, 0)
        layout.addWidget(self.text)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel)
        self._started: float | None = None
        self._first_done = 0
        self.hide()

    def show_progress(self, p: JobProgress) -> None:
        now = time.monotonic()
        if self._started is None or not self.isVisible():
            self._started, self._first_done = now, p.done
            self.cancel.setEnabled(True)
        if p.total > 0:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * min(p.done, p.total) / p.total))
        else:
            self.bar.setRange(0, 0)  # busy, amount unknown
        line = p.amount()  # the numbers first: they survive when the line is cut short
        elapsed = now - self._started
        if p.unit == "bytes" and elapsed >= 0.5:
            line += f" \u00b7 {(p.done - self._first_done) / 1e6 / elapsed:.1f} MB/s"
        line += f" \u00b7 {p.job} {p.text}"
        self._set_line(line)
        self.show()

    def _set_line(self, line: str) -> None:
        self.text.setText(line)  # elided to the width it gets; the whole line is its tooltip

    def end(self, event: JobEnded) -> None:
        self._started = None
        self.hide()

    def _cancel(self) -> None:
        self.cancel.setEnabled(False)
        self._set_line("cancelling \u00b7 " + self.text.toolTip())
        self.cancel_requested.emit()
