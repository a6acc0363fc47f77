"""``python main.py --source ... --quit-after ... --report ... --screenshot ...``, run in-process."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys

import pytest

from tests.gui.gui_fixtures import gui_settings, no_thread_leak, window_threads  # noqa: F401
from tests.media import write_video

REPORT_KEYS = {"frames_shown", "frames_dropped", "results_skipped_by_display", "frames_dropped_by_engine",
               "pipeline_fps", "max_stall_ms", "latency_ms_p50", "frames_processed", "errors", "profile",
               "device", "duration_s"}


@pytest.mark.slow  # a whole app process, seconds
def test_sigterm_closes_like_the_close_button_with_a_screenshot_and_a_report(qapp, tmp_path, gui_settings,
                                                                            window_threads, no_thread_leak):
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QImage

    from gui.app import run_window

    video = write_video(tmp_path / "clip.avi", frames=60, size=(640, 480))
    report, shot = tmp_path / "report.json", tmp_path / "shot.png"
    args = argparse.Namespace(window_source=str(video), window_profile="cifar10", window_device="cpu",
                              quit_after=None, report=str(report), screenshot=str(shot), command=None)
    hook, term = sys.excepthook, signal.getsignal(signal.SIGTERM)
    from gui.main_window import MainWindow

    earlier = {id(w) for w in qapp.topLevelWidgets()}  # another test's window may not be deleted yet

    def term_after_frames() -> None:  # SIGTERM is what `timeout` sends
        windows = [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow) and id(w) not in earlier]
        # only once the app handles SIGTERM: sent before, it would end the test run itself
        if windows and windows[0].frames_shown >= 3 and signal.getsignal(signal.SIGTERM) is not term:
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            QTimer.singleShot(100, term_after_frames)

    QTimer.singleShot(100, term_after_frames)
    assert run_window(args) == 0
    assert sys.excepthook is hook and signal.getsignal(signal.SIGTERM) is term  # restored for whoever runs next
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 1000 and image.height() >= 700
    data = json.loads(report.read_text())
    assert REPORT_KEYS <= set(data)
    assert data["frames_shown"] >= 1 and data["frames_processed"] >= data["frames_shown"]
    assert data["frames_dropped"] == data["frames_dropped_by_engine"] + data["results_skipped_by_display"]
    assert set(data["latency_ms_p50"]) == {"lenet5", "alexnet", "vgg16", "enet"}
    assert all(v is None or v > 0 for v in data["latency_ms_p50"].values())
    assert data["profile"] == "cifar10" and data["device"] == "cpu" and data["errors"] == 0
    assert data["engine_stopped_cleanly"] is True
    assert 0 < data["duration_s"] < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "report.json", "settings.ini", "shot.png"]


def test_an_unexpected_exception_is_one_line_not_a_traceback():
    from gui.app import make_excepthook

    class Window:
        errors: list[str] = []
        status = ""

        def set_status(self, text, error=False):
            self.status = text

        def close(self):
            pass

    window, err = Window(), io.StringIO()
    hook = make_excepthook(window, err)
    try:
        raise ValueError("bad thing\nsecond line")
    except ValueError:
        hook(*sys.exc_info())
    assert err.getvalue() == "internal error: ValueError: bad thing\n"
    assert window.status == "internal error: ValueError: bad thing"
    assert window.errors == ["internal error: ValueError: bad thing"]


def test_a_missing_source_is_one_line_and_status_2_before_anything_loads(capsys):
    import main

    assert main.main(["--source", "/nope.mp4", "--quit-after", "2", "--report", "r.json"]) == 2
    err = capsys.readouterr().err
    assert err == "error: /nope.mp4: no such file or folder\n"
    assert main.missing_source("0") is None and main.missing_source("rtsp://host/x") is None


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_quit_after_counts_from_the_first_frame_or_the_sources_failure(qtbot, tmp_path, gui_settings,
                                                                     window_threads, no_thread_leak):
    """On a busy machine the networks took 10-14 s to load: counted from the start, --quit-after 30
    closed the window before any frame (frames_processed: 0, a screenshot of "Loading the networks")."""
    from gui import style
    from gui.app import QuitAfter
    from gui.main_window import MainWindow
    from tests.media import write_image

    style.configure_pyqtgraph()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for source, counted_from in ((write_image(tmp_path / "a.png"), "the first frame"),
                                 (empty, "the source's failure")):
        window = MainWindow(precision="fp32", backend="torch")
        qtbot.addWidget(window)
        window.show()
        window.start(str(source))
        quit_after = QuitAfter(window, 0.1, str(source))
        qtbot.waitUntil(lambda: window._closed, timeout=60_000)  # noqa: B023 - waited for here
        assert quit_after.counted_from == counted_from
        report = window.report()
        if counted_from == "the first frame":
            assert report["frames_shown"] >= 1 and report["no_frame_because"] is None
        else:
            assert report["frames_shown"] == 0 and "empty file" in report["no_frame_because"]
        assert window.engine_stopped_cleanly


def test_no_display_is_one_line_not_qts_abort(capsys, monkeypatch):
    import main

    if sys.platform in ("win32", "darwin"):
        pytest.skip("Qt finds the display by itself there")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert main.main([]) == 2
    assert capsys.readouterr().err == ("error: no display: set DISPLAY, or use QT_QPA_PLATFORM=offscreen, or use "
                                       "the commands (python main.py --help)\n")
    assert main.no_display({"DISPLAY": ":987654"})  # no X server behind it
    assert not main.no_display({"QT_QPA_PLATFORM": "offscreen"}) and not main.no_display({"WAYLAND_DISPLAY": "w"})
