"""The app's settings from its environment. Every ``CNN_ARENA_*`` variable is read here and
nowhere else, when asked (a test or a notebook may change the environment between calls)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "cnn-arena"
THREADS_VAR = "CNN_ARENA_THREADS"
ORT_THREADS_VAR = "CNN_ARENA_ORT_THREADS"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path  # CNN_ARENA_CACHE, else the platform's user cache folder
    threads: int | None  # CNN_ARENA_THREADS: torch threads of the engine (None: the engine's policy)
    ort_threads: int | None  # CNN_ARENA_ORT_THREADS: ONNX Runtime's threads (None: the policy)
    backend: str | None  # CNN_ARENA_BACKEND: what runs the networks when no --backend is given
    debug: bool  # CNN_ARENA_DEBUG: tracebacks and OpenCV's own log lines reach the terminal
    window_settings: Path | None  # CNN_ARENA_SETTINGS: an .ini file for the window's saved state

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        cache = env.get("CNN_ARENA_CACHE", "").strip()
        window = env.get("CNN_ARENA_SETTINGS", "").strip()
        return cls(
            cache_dir=Path(cache).expanduser() if cache else Path(platformdirs.user_cache_dir(APP, appauthor=False)),
            threads=_count(env.get(THREADS_VAR, "")),
            ort_threads=_count(env.get(ORT_THREADS_VAR, "")),
            backend=env.get("CNN_ARENA_BACKEND", "").strip() or None,
            debug=bool(env.get("CNN_ARENA_DEBUG", "").strip()),
            window_settings=Path(window).expanduser() if window else None,
        )


def _count(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def current() -> Settings:
    """The settings as the environment says now."""
    return Settings.from_environ()


def cache_dir() -> Path:
    """Where the app keeps what it can make again: decoded data sets, exports, measurements, runs."""
    return current().cache_dir
