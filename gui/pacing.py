"""Main-thread health: a heartbeat that measures stalls, and a record of redraw costs.

A 10 ms timer that fires late by more than its interval means the main thread was busy (or
blocked) that long: the largest such gap is the longest freeze a person could have seen.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer


class StallMeter(QObject):
    """Records the largest gap between heartbeats beyond their interval (``max_stall_ms``)."""

    def __init__(self, interval_ms: int = 10, parent: QObject | None = None, clock=time.perf_counter) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self._clock = clock
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._beat)
        self._last: float | None = None
        self.max_stall_ms = 0.0
        self.stalls_over_50ms = 0
        self.long_stalls: list[tuple[float, float]] = []  # (seconds since start, stall ms), over 50 ms
        self.beats = 0
        self._started: float | None = None
        self.first_frame_at: float | None = None  # seconds since start when the first frame was drawn
        self.max_stall_after_first_frame_ms = 0.0

    def start(self) -> None:
        self._last = self._started = self._clock()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._last = None

    def _beat(self) -> None:
        now = self._clock()
        if self._last is not None:
            self.record((now - self._last) * 1000.0)
        self._last = now

    def mark_first_frame(self) -> None:
        if self.first_frame_at is None and self._started is not None:
            self.first_frame_at = self._clock() - self._started

    def record(self, gap_ms: float) -> None:
        self.beats += 1
        stall = gap_ms - self.interval_ms
        if stall > self.max_stall_ms:
            self.max_stall_ms = stall
        if self.first_frame_at is not None and stall > self.max_stall_after_first_frame_ms:
            self.max_stall_after_first_frame_ms = stall
        if stall > 50.0:
            self.stalls_over_50ms += 1
            since = self._clock() - self._started if self._started is not None else 0.0
            self.long_stalls.append((round(since, 2), round(stall, 1)))


class CostRecorder:
    """The recent durations of one piece of main-thread work, in milliseconds."""

    def __init__(self, window: int = 1000) -> None:
        self.samples: deque[float] = deque(maxlen=window)

    def add(self, ms: float) -> None:
        self.samples.append(ms)

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(np.fromiter(self.samples, float), q)) if self.samples else None
