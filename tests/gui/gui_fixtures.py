"""Fixtures for the GUI tests (imported by tests/test_gui_*.py): private settings, a thread-leak
check, thread settings restored, and a started main window that is always closed."""

from __future__ import annotations

import threading
import time

import pytest


def layout_request_counter():
    """An event filter counting the LayoutRequest events of the widgets it is installed on
    (``.requests``): each one is a layout computed again."""
    from PySide6.QtCore import QEvent, QObject

    class Counter(QObject):
        requests = 0

        def eventFilter(self, _obj, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.LayoutRequest:
                self.requests += 1
            return False

    return Counter()


@pytest.fixture
def gui_settings(tmp_path, monkeypatch):
    """QSettings go to a temporary .ini file, never to the user's configuration."""
    path = tmp_path / "settings.ini"
    monkeypatch.setenv("CNN_ARENA_SETTINGS", str(path))
    return path


@pytest.fixture
def no_thread_leak():
    """Fail a test that leaves a Python thread or a QThread running after it ended.

    Threads that were there before the test are ignored; new ones get a grace period to finish.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"
    from PySide6.QtCore import QThread
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        running = [t for t in app.findChildren(QThread) if t.isRunning()]
        assert not running, f"QThreads left running: {running}"


@pytest.fixture
def window_threads():
    """The window's thread policy (one core left to the UI), undone afterwards for other tests."""
    import cv2
    import torch

    from engine.api import configure_threads

    saved = torch.get_num_threads(), cv2.getNumThreads()
    configure_threads()
    yield
    torch.set_num_threads(saved[0])
    cv2.setNumThreads(saved[1])


@pytest.fixture
def make_window(qtbot, gui_settings, window_threads, no_thread_leak):
    """``make_window(source=None, profile="cifar10")``: a started, shown MainWindow, closed at the end."""
    from gui import style
    from gui.main_window import MainWindow

    style.configure_pyqtgraph()
    windows = []

    def make(source=None, profile: str = "cifar10"):
        # auto: tests/test_precision.py and tests/test_backend.py
        window = MainWindow(profile=profile, device="cpu", precision="fp32", backend="torch")
        qtbot.addWidget(window)
        windows.append(window)
        window.show()
        window.start(source)
        qtbot.waitUntil(lambda: window.ready, timeout=60_000)
        return window

    yield make
    for window in windows:
        window.close()
        assert window.engine_stopped_cleanly, "the engine did not stop within 2 s"
