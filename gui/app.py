"""``python main.py`` with no command: the window, its command-line options, and a safe exit.

``--quit-after SECONDS`` closes the window by itself, SECONDS after the first frame was drawn (or
after the source failed, or, with no source, after the networks were loaded); on closing,
``--screenshot`` saves a PNG of the whole window and ``--report`` a JSON summary of the run (frames
shown and dropped, the longest main-thread stall, latencies, why no frame arrived). An unexpected
exception becomes one line on the status bar and on stderr, never a traceback dialog or a crash
(set ``CNN_ARENA_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from engine.api import WeightsError, atomic_write, configure_threads, current_settings, parse_weights_args
from gui import style
from gui.main_window import MainWindow


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_screenshot(window: MainWindow, path: str | os.PathLike) -> bool:
    """A PNG of the whole window as it is drawn now, written atomically: a full disk leaves the
    file that was there, never a broken one. False when it could not be written."""
    QApplication.processEvents()
    image = window.grab()

    def write(tmp) -> None:
        if not image.save(os.fspath(tmp), "PNG"):
            raise OSError("the image could not be written (is the disk full?)")

    try:
        atomic_write(path, write)
    except OSError:
        return False
    return True


def make_excepthook(window: MainWindow, stream=None):
    def hook(kind, value, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            window.close()
            return
        line = f"internal error: {kind.__name__}: {str(value).strip().splitlines()[0] if str(value).strip() else ''}"
        print(line, file=stream or sys.stderr)
        if current_settings().debug:
            traceback.print_exception(kind, value, tb, file=stream or sys.stderr)
        try:
            window.errors.append(line)
            window.set_status(line, True)
        except RuntimeError:  # the window is already gone
            pass
    return hook


# --quit-after waits this long at most for a first frame (a machine so busy the networks never load)
FIRST_FRAME_WAIT_S = 120.0


def preload_modules(backend: str) -> None:
    """Import, before the window shows, what the engine's thread would import while it loads the
    networks: importing onnx (ml_dtypes' extension) holds the interpreter lock for 0.3-1.3 s, and
    the window, waiting for it, froze that long."""
    if backend != "torch":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            pass  # the engine says so, in one line, when it needs them


class QuitAfter:
    """Closes ``window`` ``seconds`` after it has something to show: its first frame drawn, its
    source failed or ended, or (no source) its networks loaded; and, whatever happens, at most
    FIRST_FRAME_WAIT_S + ``seconds`` after the start. ``counted_from`` says which it was."""

    def __init__(self, window: MainWindow, seconds: float, source: str | None) -> None:
        self.window, self.seconds, self.source = window, seconds, source
        self.counted_from: str | None = None
        self._ended_polls = 0
        self._poll = QTimer(window)
        self._poll.setInterval(50)
        self._poll.timeout.connect(self._check)
        self._poll.start()
        QTimer.singleShot(int((FIRST_FRAME_WAIT_S + seconds) * 1000), window, self._give_up)

    def _started(self) -> str | None:
        w = self.window
        if w.frames_shown > 0:
            return "the first frame"
        if w.source_errors:
            return "the source's failure"
        # The end is reported when the feeder runs out, before the networks answer its last frame:
        # a source that ended counts only once it has stayed without a frame for a second.
        ended = w.ready and w.bridge.source_ended
        self._ended_polls = self._ended_polls + 1 if ended else 0
        if self._ended_polls * self._poll.interval() >= 1000:
            return "the end of the source"
        if w.ready and not self.source:
            return "the networks being loaded"
        return None

    def _check(self) -> None:
        what = self._started()
        if what is not None:
            self._poll.stop()
            self.counted_from = what
            QTimer.singleShot(max(0, int(self.seconds * 1000)), self.window, self.window.close)

    def _give_up(self) -> None:
        if self.counted_from is None:
            self.counted_from = f"the start: nothing to show within {FIRST_FRAME_WAIT_S:.0f} s"
            self.window.close()


def run_window(args) -> int:
    """Open the window with the options of ``engine.cli`` and run until it closes; the exit status."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("CNN Arena")
    app.setApplicationName("CNN Arena")
    style.configure_pyqtgraph()
    configure_threads()
    # The engine thread holds the interpreter lock between torch calls; by default another thread
    # waits up to 5 ms for its turn, and a redraw needs many turns. 1 ms keeps the window fluid.
    sys.setswitchinterval(0.001)
    app.setStyleSheet(style.STYLESHEET)
    try:
        weights = parse_weights_args(getattr(args, "window_weights", None) or [])
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preload_modules(getattr(args, "window_backend", None) or "auto")
    window = MainWindow(profile=getattr(args, "window_profile", None) or "cifar10",
                        device=getattr(args, "window_device", None) or "cpu", weights=weights,
                        precision=getattr(args, "window_precision", None) or "auto",
                        backend=getattr(args, "window_backend", None) or "auto")
    failures: list[str] = []

    def on_closing() -> None:
        screenshot = getattr(args, "screenshot", None)
        if screenshot:
            try:
                if not save_screenshot(window, screenshot):
                    failures.append(f"cannot write the screenshot {screenshot}")
            except OSError as e:
                failures.append(f"cannot write the screenshot {screenshot}: {e}")

    window.closing_hooks.append(on_closing)
    window.closing_hooks.append(lambda: QTimer.singleShot(0, app.quit))
    previous_hook = sys.excepthook
    sys.excepthook = make_excepthook(window)
    # Ctrl-C, `timeout` (SIGTERM) and a closed terminal (SIGHUP) close the window as its close button
    # does: the report, the screenshot and the settings are written.
    closing_signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s]
    previous_handlers = {s: signal.signal(s, lambda *_: window.close()) for s in closing_signals}
    wake = QTimer()  # lets Python run its signal handlers (Ctrl+C) while Qt's loop waits
    wake.timeout.connect(lambda: None)
    wake.start(250)
    try:
        # Render the window once off screen before showing it: the first paint polishes every
        # widget, lays out the plots and rasterises the fonts (50-100 ms). Done here, the window
        # appears that much later instead of freezing for that long once it is on screen.
        window.grab()
        window.show()
        window.start(getattr(args, "window_source", None))
        quit_after = getattr(args, "quit_after", None)
        timer = QuitAfter(window, quit_after, getattr(args, "window_source", None)) if quit_after is not None else None
        if window.isVisible():
            app.exec()
        if not window._closed:
            window.close()
        report = getattr(args, "report", None)
        if report:  # after closing, so the engine has stopped and the counts are final
            try:
                data = window.report()
                if timer is not None:
                    data["quit_after_counted_from"] = timer.counted_from
                write_json_atomic(report, data)
            except (OSError, ValueError) as e:
                failures.append(f"cannot write the report {report}: {e}")
    finally:
        wake.stop()
        sys.excepthook = previous_hook
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)
    source_failed = bool(getattr(args, "window_source", None)) and bool(window.source_errors)
    if source_failed:  # the source asked for on the command line could not be opened
        failures.insert(0, window.source_errors[0])
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    status = 2 if source_failed else 1 if failures else 0
    if not window.engine_stopped_cleanly:
        # A thread is still inside torch (a network being built) or a driver: finalising the
        # interpreter under it aborts the process ("terminate called without an active
        # exception"). Everything is written and the window is gone: leave without finalising.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    window.deleteLater()
    return status
