"""Where the window keeps what it remembers (geometry, last folder, last data set).

``CNN_ARENA_SETTINGS`` names an .ini file to use instead of the user's own settings store: tests
and demos set it so they never touch a person's configuration.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QSettings

ORGANISATION = "CNN Arena"
APPLICATION = "CNN Arena"
ENV = "CNN_ARENA_SETTINGS"


def open_settings() -> QSettings:
    path = os.environ.get(ENV)
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(ORGANISATION, APPLICATION)
