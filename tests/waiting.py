"""Waiting on a condition in tests, never on the clock: a sleep before "nothing happened" passes
on a slow machine without checking anything."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.01) -> bool:
    """True as soon as ``condition()`` is true; False when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def no_thread_left(before: set[threading.Thread], timeout: float = 2.0) -> bool:
    """Every thread started since ``before`` was taken has ended (within ``timeout``)."""
    return wait_until(lambda: set(threading.enumerate()) <= before, timeout)
