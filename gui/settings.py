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


def open_settings() -> QSettings:
    path = current_settings().window_settings
    if path:
        return QSettings(str(path), QSettings.Format.IniFormat)
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
