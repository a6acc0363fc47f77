"""What every command prints: one-line errors, aligned tables, JSON, a job's progress; and how a
command's job hears Ctrl-C."""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class CliError(Exception):
    """A one-line message for the terminal; the command exits with status 2."""


def terminal_text(text: str) -> str:
    """``text`` safe to print: every control character (ESC, BEL, CR, ...) shown as ``\\xNN``, so
    a file name cannot retitle, clear or rewrite the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] if c.isascii() else "?" for c in str(text))


def print_json(obj: Any) -> None:
    """``obj`` as strict JSON: a non-finite number (NaN, inf) becomes null, never the bare ``NaN``
    that JSON parsers refuse."""
    json.dump(finite(obj), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def finite(obj: Any) -> Any:
    """``obj`` with every float that is not finite replaced by None (dicts, lists, tuples walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int] | None = None) -> str:
    """An aligned plain-text table; columns in ``right`` are right-aligned (numbers)."""
    right = right or set()
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(padded).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


@contextmanager
def stop_on_signals(job) -> Iterator[None]:
    """SIGINT and SIGTERM cancel ``job`` (an engine.jobs.JobState) at its next safe point; a
    second Ctrl-C interrupts at once. Only the main thread can take signals: elsewhere, no change."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if job.cancelled and signum == signal.SIGINT:
            raise KeyboardInterrupt
        job.cancel()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class JobProgressBar:
    """A job's progress on stderr: one rewritten line on a terminal, a line every few seconds in a log."""

    def __init__(self, stream=None, log_interval_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else log_interval_s
        self.last = 0.0
        self.label = ""

    def __call__(self, p) -> None:  # an engine.jobs.JobProgress
        finished = p.total > 0 and p.done >= p.total
        now = time.monotonic()
        if now - self.last < self.interval and not finished and p.text == self.label:
            return
        self.last, self.label = now, p.text
        if p.total > 0:
            width = 20
            filled = int(width * min(p.done, p.total) / p.total)
            bar = "#" * filled + "." * (width - filled)
            line = f"{p.job} {p.text} [{bar}] {p.amount()}"
        else:
            line = f"{p.job} {p.text} {p.amount()}"
        if self.tty:
            self.stream.write("\r" + line.ljust(90) + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def pil_font(size: int):
    """Pillow's own font at ``size`` points (Pillow 10.1 and later), or its one bitmap size before."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()
