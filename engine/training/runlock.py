"""One training at a time per run folder.

Two ``train`` commands on the same run would share its checkpoint and weights: one overwrites the
other's checkpoints and moves its weights aside. The first takes the folder's lock; the second is
refused in one line naming the process that holds it.

Written with ``fcntl.flock`` rather than a lock library: the kernel drops the lock the moment its
process dies, however it dies, so a stale lock from a killed run is taken over without any guess
about ages, and the holder's pid and host are kept in the lock file for the refusal to name. Where
``flock`` is not available (another system, a file system without it), the pid in the file decides:
a lock whose process no longer runs on this host is taken over.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on every system
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".train.lock"


class RunLocked(Exception):
    """The run folder is held by another process; ``str(e)`` is one line."""


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock for the block; RunLocked when another live
    process holds it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                     0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RunLocked(f"{self.path}: not a regular file; remove it")
            if not self._lock(fd):
                raise RunLocked(f"{self.folder} is being trained by {_holder_text(self._read(fd))}; wait for it to "
                                "end, or stop it (a lock whose process has ended is taken over)")
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{socket.gethostname()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no holder named: the next run need not ask whether it still lives
        except OSError:
            pass
        os.close(fd)  # drops the flock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _lock(self, fd: int) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                # ENOLCK and the like: no flock here, the pid in the file decides
        pid, host = self._read(fd)
        return pid is None or pid == os.getpid() or host != socket.gethostname() or not _alive(pid)

    @staticmethod
    def _read(fd: int) -> tuple[int | None, str]:
        try:
            text = os.pread(fd, 256, 0).decode("utf-8", "replace").split("\n")
            return int(text[0]), text[1].strip() if len(text) > 1 else ""
        except (OSError, ValueError):
            return None, ""


def _alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def _holder_text(holder: tuple[int | None, str]) -> str:
    pid, host = holder
    if pid is None:
        return "another process"
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"process {pid}{where}"
