"""Numbers and names as a person reads them (shared by the command line and the window)."""

from __future__ import annotations


def human_count(n: float) -> str:
    """``62006`` -> ``62.01k``; ``138357544`` -> ``138.36M``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))
