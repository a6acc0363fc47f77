"""The state a long job shares with whoever started it: progress out, cancel in, partial results out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Cancelled(Exception):
    """Raised inside a job at its next safe point after :meth:`JobState.cancel`."""


@dataclass(frozen=True)
class JobProgress:
    """One progress report: ``done`` of ``total`` units (``total`` 0 when unknown) and a line of
    text. ``unit`` names what is counted: ``"bytes"`` (a download), ``"images"``, ``"runs"``, ..."""

    job: str
    done: int
    total: int
    text: str = ""
    unit: str = "bytes"

    def amount(self) -> str:
        """``done``/``total`` in words: "12.5/233.1 MB", "2,560/10,000 images"."""
        if self.unit == "bytes":
            done = f"{self.done / 1e6:.1f}"
            return f"{done}/{self.total / 1e6:.1f} MB" if self.total > 0 else f"{done} MB"
        return f"{self.done:,}/{self.total:,} {self.unit}" if self.total > 0 else f"{self.done:,} {self.unit}"

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total > 0 else None


class JobState:
    """Thread-safe: any thread may cancel; the job polls :meth:`check` at its safe points.

    ``on_progress`` is called on the job's own thread with every :class:`JobProgress`; ``partial``
    holds results the job has finished so far (e.g. one network of several), readable after a cancel.
    """

    def __init__(self, on_progress: Callable[[JobProgress], None] | None = None) -> None:
        self._cancel = threading.Event()
        self._on_progress = on_progress
        self.partial: dict[str, Any] = {}

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` when a cancel was asked for."""
        if self._cancel.is_set():
            raise Cancelled()

    def report(self, progress: JobProgress) -> None:
        if self._on_progress is not None:
            self._on_progress(progress)
