"""Errors as a person reads them: what kind of thing went wrong (:class:`ErrorCode`), and any
exception as one printable line (:func:`error_line`), so that no traceback reaches a user."""

from __future__ import annotations

from enum import Enum

from engine.common.text import one_line


class ErrorCode(str, Enum):
    SOURCE = "source"  # a file, folder or stream that cannot be opened
    CAMERA = "camera"  # a camera that cannot be opened (another index may work)
    FRAME = "frame"  # one frame that cannot be read or run
    WEIGHTS = "weights"  # a checkpoint that does not load or does not fit
    DEVICE = "device"  # a device that is not there, or ran out of memory
    SESSION = "session"  # the networks could not be loaded
    CAPTURE = "capture"  # a layer that does not exist
    DOWNLOAD = "download"  # weights or data that could not be downloaded
    DATA = "data"  # a data set that cannot be read (a job's input)
    STUDY = "study"  # a study (analysis, robustness, top images, report) that could not finish
    INTERNAL = "internal"  # anything else: a bug, reported in one line


def error_line(e: object, limit: int = 160, *, os_reason: bool = False, typed: bool = False) -> str:
    """``e`` (an exception, or a reason object such as a URLError's) as one printable line of at
    most ``limit`` characters: its first non-blank line, else its type's name.

    ``os_reason``: an OSError gives its ``strerror`` alone ("No such file or directory"), without
    the path, which may be long or hold any character. ``typed``: the type's name comes first
    ("KeyError: 'x'"), except for ValueError and RuntimeError, whose messages are written for a
    person already."""
    if os_reason and isinstance(e, OSError) and e.strerror:
        text = e.strerror
    else:
        text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    if not text:
        text = type(e).__name__
    elif typed and not isinstance(e, (ValueError, RuntimeError)):
        text = f"{type(e).__name__}: {text}"
    return one_line(text, limit)
