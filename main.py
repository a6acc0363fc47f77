"""CNN Arena: ``python main.py`` opens the window; ``python main.py COMMAND`` runs headless.

See ``python main.py --help``.
"""

from __future__ import annotations

import gc
import os
import re
import sys


def main(argv: list[str] | None = None) -> int:
    from engine.cli import build_parser, run_command

    args = build_parser().parse_args(argv)
    if args.command is not None:
        return run_command(args)
    if no_display():
        print("error: no display: set DISPLAY, or use QT_QPA_PLATFORM=offscreen, or use the commands "
              "(python main.py --help)", file=sys.stderr)
        return 2
    missing = missing_source(args.window_source)
    if missing:  # said at once, before Qt and the networks load (seconds on a busy machine)
        print(f"error: {missing}", file=sys.stderr)
        return 2
    # Importing Qt, pyqtgraph and torch makes hundreds of thousands of objects that live as long as
    # the process; the collector would walk them all again and again (0.7 s of full collections
    # before the window appeared). Collected after the imports, then frozen out of later collections.
    gc.disable()
    try:
        from gui.app import run_window
    except ImportError as e:  # e.g. Qt's platform libraries missing: see the README's troubleshooting
        print(f"error: the window cannot start: {e}", file=sys.stderr)
        return 2
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()
    return run_window(args)


def no_display(environ=None) -> bool:
    """On Linux and the BSDs, no X or Wayland display and no Qt platform named: Qt would abort the
    process (SIGABRT, status 134) with a page of plugin messages."""
    environ = os.environ if environ is None else environ
    if sys.platform in ("win32", "darwin") or environ.get("QT_QPA_PLATFORM"):
        return False
    if environ.get("WAYLAND_DISPLAY"):
        return False
    display = environ.get("DISPLAY", "")
    local = re.match(r"^:(\d+)", display)  # ":1" is a socket of this machine's X server, if it runs
    return not display or bool(local and not os.path.exists(f"/tmp/.X11-unix/X{local.group(1)}"))


def missing_source(source: str | None) -> str | None:
    """The one-line error for a --source path that does not exist; None for anything else (a camera
    index, a URL, a path that exists: the engine checks what it holds)."""
    if not source or source.strip().isdigit() or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source):
        return None
    return None if os.path.lexists(source) else f"{source}: no such file or folder"


def run() -> int:
    """``main()`` for the process: Ctrl-C at any moment, even while torch is still being imported,
    is one line and status 130, never a traceback."""
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
