"""Numbers and names as a person reads them (shared by the command line and the window)."""

from __future__ import annotations


def human_count(n: float, digits: int | None = None) -> str:
    """``62006`` -> ``62.01k``; ``138357544`` -> ``138.36M``; with ``digits``, that many
    significant digits where the space is short: ``human_count(182_220_000, 3)`` -> ``182M``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            value = n / size
            if digits is None:
                return f"{value:.2f}{unit}"
            decimals = max(0, digits - len(str(int(value))))
            return f"{value:.{decimals}f}{unit}"
    return str(int(n))


def one_line(text: str, limit: int) -> str:
    """``text`` with unprintable characters as ``?`` and, past ``limit`` characters, its middle as ``…``."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    if len(text) > limit:
        keep = (limit - 1) // 2
        text = f"{text[:keep]}\u2026{text[-keep:]}"
    return text
