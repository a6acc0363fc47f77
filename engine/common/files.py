"""Writing files so that a failure never leaves a partial one behind."""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

STALE_TEMP_SECONDS = 3600.0  # a temporary file this old is left from a crash, whoever wrote it

_TEMP_SUFFIX = ".tmp"
_WRITER = re.compile(r"\.pid(\d+)\.[^.]+$")  # the ".pid<writer>.<random>" ending of a temporary file


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *, cache: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A full disk or a crash leaves the old file (or none), never a partial one. A crash can leave the
    hidden temporary file itself, named after ``path`` and the writing process so that
    :func:`remove_stale_temps` can tell it from one still being written.

    A symbolic link is kept: its target is the file written (atomically). A path that is not a
    regular file (a device such as ``/dev/stdout``, a FIFO) cannot be replaced without breaking what
    it is, so it is written through directly; ``-`` is standard output.

    ``cache``: ``path`` is a cache entry, which only this app writes: whatever is there that is not
    a regular file (a FIFO would block the write for good) is replaced by one, never written through.
    """
    if cache:
        _write_cache_entry(Path(path), write)
        return
    if os.fspath(path) == "-":
        _write_to_stdout(write)
        return
    path = Path(path)
    try:
        through = not stat.S_ISREG(os.stat(path).st_mode)  # follows links: what a reader would open
    except (FileNotFoundError, NotADirectoryError):
        through = False
    # /dev/stdout and /proc/self/fd/N name an open descriptor: replacing its file would not reach it
    through = through or os.path.realpath(path).startswith(("/dev/", "/proc/"))
    if through:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", os.fspath(path))
        write(path)
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # a dangling link: its target is created
    _replace(path, write)


def _write_cache_entry(path: Path, write: Callable[[Path], object]) -> None:
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        regular = True  # nothing there, or a dangling link: created
    if regular and path.is_symlink():
        path = Path(os.path.realpath(path))
    elif not regular and path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(errno.EISDIR, "is a folder", os.fspath(path))
    _replace(path, write)


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp's 0600 would make shipped weights unreadable to other users; set after writing,
        # since a writer may replace the file (safetensors' save_file does)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_to_stdout(write: Callable[[Path], object]) -> None:
    """``write`` into a private temporary file, then its bytes to standard output: a writer may
    need a real file (to seek, or to replace it), which a pipe is not."""
    with tempfile.TemporaryDirectory(prefix="cnn-arena-out-") as folder:
        tmp = Path(folder) / "out"
        write(tmp)
        out = getattr(sys.stdout, "buffer", None)
        with open(tmp, "rb") as f:
            data = f.read()
        if out is not None:
            sys.stdout.flush()
            out.write(data)
            out.flush()
        else:
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()


def remove_stale_temps(folder: str | os.PathLike, pattern: str, *, max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove what :func:`atomic_write` left in ``folder`` when a process died while writing a file
    whose name matches ``pattern`` (a glob such as ``"cifar10-*.npz"``); returns what was removed.

    A temporary file is stale when the process named in it is no longer running, or when it has not
    been written to for ``max_age`` seconds (a name without a process, or a process id reused since).
    Nothing else is touched: other names, folders, links.
    """
    import psutil

    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed  # no cache folder yet, or one that cannot be listed: nothing to clean
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(_TEMP_SUFFIX)):
            continue
        stem = name[1:-len(_TEMP_SUFFIX)]
        writer = _WRITER.search(stem)
        target = stem[:writer.start()] if writer else stem.rpartition(".")[0]
        if not fnmatch.fnmatchcase(target, pattern):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            pid = int(writer.group(1)) if writer else None
            dead = pid is not None and pid != os.getpid() and not psutil.pid_exists(pid)
            if dead or now - info.st_mtime > max_age:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except (OSError, ValueError, OverflowError):
            continue  # gone already, or not ours to remove
    return removed


class NotARegularFile(OSError):
    """A path that is not a regular file (a FIFO, a device, a folder), or is one larger than its bound."""


def open_regular(path: str | os.PathLike, max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for reading, once it is known to be a regular file (links followed) of at most
    ``max_bytes``: a FIFO would block the read for good and ``/dev/zero`` fill the memory, so every
    cache, checkpoint and settings file is opened here. Opening never waits (``O_NONBLOCK``, which
    a regular file ignores). :class:`NotARegularFile` (an OSError) otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file", os.fspath(path))
        if max_bytes is not None and info.st_size > max_bytes:
            raise NotARegularFile(errno.EFBIG, f"larger than {max_bytes / 1e6:.0f} MB", os.fspath(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of ``path`` (see :func:`open_regular`); never more than ``max_bytes``, even when the
    file grows while it is read."""
    with open_regular(path, max_bytes) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise NotARegularFile(errno.EFBIG, f"larger than {max_bytes / 1e6:.0f} MB", os.fspath(path))
    return data


def cache_rebuilt(what: str, path: str | os.PathLike, why: BaseException | str) -> None:
    """One line on stderr (the ``engine.cache`` logger) for a damaged cache entry that is built again."""
    import logging

    from engine.data.imageio import one_line

    if isinstance(why, BaseException):
        lines = (getattr(why, "strerror", None) or str(why)).strip().splitlines()
        why = lines[0] if lines else type(why).__name__
    logging.getLogger("engine.cache").warning("%s cache %s: %s; built again", what, one_line(Path(path).name, 80),
                                              one_line(why, 120))
