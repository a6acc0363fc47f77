"""Where the window keeps what it remembers (geometry, last folder, last data set).

``CNN_ARENA_SETTINGS`` names an .ini file to use instead of the user's own settings store: tests
and demos set it so they never touch a person's configuration.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QSettings

from engine.api import current_settings

ORGANISATION = "CNN Arena"
APPLICATION = "CNN Arena"
ENV = "CNN_ARENA_SETTINGS"


MAX_SETTINGS_BYTES = 4 << 20  # what the window keeps is a few kB


def open_settings() -> QSettings:
    path = current_settings().window_settings
    if path:
        problem = settings_file_problem(path)
        if problem is None:
            return QSettings(str(path), QSettings.Format.IniFormat)
        # Qt would block on a FIFO for good, or read a device without end: the window opens with
        # settings it does not keep
        folder = Path(tempfile.mkdtemp(prefix="cnn-arena-settings-"))
        print(f"warning: {ENV}: {problem}; the window's settings will not be kept", file=sys.stderr)
        return QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)
    fallback = fallback_settings_path()
    if fallback is not None:
        return QSettings(str(fallback), QSettings.Format.IniFormat)
    return QSettings(ORGANISATION, APPLICATION)


def fallback_settings_path(environ: dict[str, str] | None = None) -> Path | None:
    """Where the settings go when the environment names no home (a service, ``env -i``): Qt would
    otherwise write them to ``/.config``. The account's home from the password database, or a
    private temporary folder (with a warning: they will not be kept). None when HOME is set, or
    off Linux and the BSDs, where Qt does not read HOME for this."""
    environ = os.environ if environ is None else environ
    if sys.platform in ("win32", "darwin") or environ.get("XDG_CONFIG_HOME") or environ.get("HOME"):
        return None
    home = ""
    try:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError, OSError):
        pass
    if home and home != "/" and os.access(home, os.W_OK):
        return Path(home) / ".config" / ORGANISATION / f"{APPLICATION}.conf"
    folder = Path(tempfile.gettempdir()) / f"cnn-arena-{os.getuid()}"
    print(f"warning: no home folder: the window's settings go to {folder} and will not be kept", file=sys.stderr)
    return folder / "settings.ini"


def settings_file_problem(path: str) -> str | None:
    """Why the settings file ``path`` cannot be used, or None (a regular file of bounded size, or
    none yet: Qt creates it)."""
    import stat

    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return f"cannot be read ({getattr(e, 'strerror', None) or e})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size > MAX_SETTINGS_BYTES:
        return f"larger than {MAX_SETTINGS_BYTES >> 20} MB"
    return None
