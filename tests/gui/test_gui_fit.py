"""The window on a 1366x768 laptop screen: it opens inside it, nothing widens it, and the splitter
moves both ways."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSize

from engine.api import Error as EngineError
from engine.api import ErrorCode, JobEnded, JobOutcome, JobProgress
from tests.gui.gui_fixtures import gui_settings, make_window, no_thread_leak, window_threads  # noqa: F401

LONG = 60_000
LONG_LINE = ("cannot download the ImageNet weights of vgg16_bn: <urlopen error [Errno -3] Temporary failure in "
             "name resolution>; the networks keep the weights they had, and this line goes on well past the "
             "width of any laptop screen")


def test_the_first_size_fits_the_screen():
    from gui.main_window import fit_size

    first = fit_size(QSize(1366, 768))
    assert first.width() <= 1366 and first.height() <= 768 - 30  # room for a title bar
    assert fit_size(QSize(2560, 1440)) == QSize(1600, 1000)


def test_a_short_first_size_is_not_grown_past_the_screen(qtbot, gui_settings, monkeypatch):  # noqa: F811
    """The table sat under the plots until the first resize: the layout then asked for 805 px at a
    730-pixel first size, and the window's bottom fell off a 768-pixel screen."""
    import gui.main_window as main_window
    from gui import style

    style.configure_pyqtgraph()
    monkeypatch.setattr(main_window, "default_size", lambda: QSize(1298, 730))
    window = main_window.MainWindow(precision="fp32", backend="torch")
    qtbot.addWidget(window)
    window.grab()  # the first layout, as run_window does before showing it
    window.show()
    qtbot.waitExposed(window)
    assert window.height() <= 730 and window.width() <= 1298
    # the panels whole, the bottom tabs what is left
    assert window.panel_area.height() >= window.panel_area.row_height()


def test_at_1366x768_no_action_widens_the_window_and_the_splitter_moves_both_ways(make_window, qtbot):  # noqa: F811
    window = make_window()
    window.resize(1366, 768)
    qtbot.waitUntil(lambda: window.size() == QSize(1366, 768))
    widths = [window.width()]

    def settle() -> None:
        qtbot.wait(60)
        widths.append(window.width())

    # a long status line, then a long error that needs action: shown whole in the message bar
    window.set_status(LONG_LINE)
    settle()
    window._on_event(EngineError(ErrorCode.DOWNLOAD, LONG_LINE))
    settle()
    assert window.message_bar.isVisible() and LONG_LINE in window.message_bar.text.text()
    assert "Check the network connection" in window.message_bar.text.text()
    # each long job as the engine reports it: the job bar beside the status line and the counters
    for job, unit in (("analyze", "steps"), ("top-images", "images"), ("robustness", "runs")):
        window._on_event(JobProgress(job, 3, 2000, LONG_LINE, unit))
        settle()
        assert window.job_bar.isVisible()
        window._update_counters()
        settle()
        window._on_event(JobEnded(job, JobOutcome.CANCELLED, LONG_LINE))
        settle()
    for tab in (window.analysis_view, window.overview_view, window.robustness_view, window.live_tab):
        window.bottom_tabs.setCurrentWidget(tab)
        settle()
    assert max(widths) == 1366, widths

    # the splitter: the bottom tabs up to most of the window, and back down
    splitter = window.splitter
    total = sum(splitter.sizes())
    splitter.moveSplitter(150, 1)
    qtbot.waitUntil(lambda: splitter.sizes()[1] > total - 200)
    assert window.panel_area.height() < window.panel_area.row_height()  # the panels scroll meanwhile
    splitter.moveSplitter(total - 150, 1)  # down: the bottom tabs as short as they go, the panels whole
    qtbot.waitUntil(lambda: splitter.sizes()[1] <= window.bottom_tabs.minimumSizeHint().height() + 2)
    assert window.panel_area.height() >= window.panel_area.row_height()
    assert window.width() == 1366


def test_the_precision_box_goes_back_to_what_runs_when_bf16_is_refused(make_window, qtbot, monkeypatch):  # noqa: F811
    import engine.runtime.precision as precision

    monkeypatch.setattr(precision, "bf16_native", lambda device: False)  # a CPU without bf16 arithmetic
    window = make_window()
    box = window.source_bar.precision_box
    assert box.currentText() == "fp32"
    box.setCurrentText("bf16")  # as the person picks it
    qtbot.waitUntil(lambda: "no native bf16" in " ".join(window.errors), timeout=LONG)
    qtbot.waitUntil(lambda: box.currentText() == "fp32")
    assert all(m.precision == "fp32" for m in window.session.models)


def test_the_label_box_gives_the_keyboard_back_after_a_name_and_on_escape(make_window, qtbot, tmp_path):  # noqa: F811
    from PySide6.QtCore import Qt

    from tests.media import write_image

    window = make_window()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    box = window.label_picker.box
    assert box.focusPolicy() == Qt.FocusPolicy.ClickFocus  # never where the keyboard starts
    box.setFocus()
    qtbot.waitUntil(box.hasFocus)
    qtbot.keyClicks(box.lineEdit(), "ca")  # typing: the letters (and a space) go to the box
    assert box.lineEdit().text() == "ca"
    qtbot.keyClick(box.lineEdit(), Qt.Key.Key_Escape)
    assert not box.hasFocus()
    box.setFocus()
    qtbot.waitUntil(box.hasFocus)
    qtbot.keyClicks(box.lineEdit(), "cat")
    qtbot.keyClick(box.lineEdit(), Qt.Key.Key_Return)  # a name chosen
    assert window.label_picker.chosen == 3 and not box.hasFocus()
    paused = window.bridge.paused
    qtbot.keyClick(window, Qt.Key.Key_Space)  # the window's shortcut again, not a space in the box
    qtbot.waitUntil(lambda: window.bridge.paused != paused)
    # a folder of class-named folders labels its own frames: the box is disabled and says why
    write_image(tmp_path / "cat" / "a.png")
    window.open_source(str(tmp_path))
    assert window.label_picker.chosen is None and window.bridge.engine.scene_label is None
    qtbot.waitUntil(lambda: not box.isEnabled(), timeout=LONG)
    assert "names its own classes" in window.label_picker.toolTip()


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_custom_weights_run_the_frame_on_screen_again_with_the_files_own_top1(make_window, qtbot, tmp_path):  # noqa: F811
    import json
    import shutil
    from pathlib import Path

    from tests.media import write_image

    window = make_window(str(write_image(tmp_path / "a.png")))
    panel = next(p for p in window.panels if p.name == "lenet5")
    qtbot.waitUntil(lambda: panel.frame_id is not None and window.bridge.source_ended, timeout=LONG)
    shipped = Path(__file__).resolve().parents[2] / "assets" / "weights" / "lenet5_cifar10.safetensors"
    custom = tmp_path / "mine.safetensors"
    shutil.copyfile(shipped, custom)
    custom.with_suffix(".json").write_text(json.dumps({"model": "lenet5", "test_top1": 0.487}))
    window._weights_requested("lenet5", str(custom))
    qtbot.waitUntil(lambda: panel.info is not None and panel.info.weights == "custom", timeout=LONG)
    assert panel.info.test_top1 == 0.487 and "its file: test 48.7%" in panel.status.text()
    # the picture on screen is run again with the new weights: no Play needed
    qtbot.waitUntil(lambda: panel.frame_id is not None, timeout=LONG)


def test_a_custom_files_metrics_are_used_only_when_they_are_a_fraction_for_this_network():
    from engine.live.worker import _file_top1

    assert _file_top1({"model": "lenet5", "test_top1": 0.487}, "lenet5") == 0.487
    assert _file_top1({"test_top1": 0.5}, "lenet5") == 0.5
    for bad in ({"model": "vgg16", "test_top1": 0.9}, {"test_top1": 48.7}, {"test_top1": "0.4"},
                {"test_top1": True}, [0.4], None):
        assert _file_top1(bad, "lenet5") is None


def test_an_empty_grad_cam_says_so_and_offers_the_deeper_layer(make_window, qtbot, tmp_path):  # noqa: F811
    """VGG-16-BN's relu4_3 map was all zero for 16 of 101 CIFAR-10 test images (relu5_3: none): the
    window painted nothing and said nothing."""
    import dataclasses

    import numpy as np

    from gui.model_panel import deeper_layer
    from tests.media import write_image

    window = make_window(str(write_image(tmp_path / "a.png")))
    panel = next(p for p in window.panels if p.name == "vgg16")
    assert deeper_layer(panel.info.layers, "features.relu4_3") == "features.relu5_3"
    assert deeper_layer(panel.info.layers, "features.relu5_3") is None
    qtbot.waitUntil(lambda: panel.frame_id is not None and window.bridge.source_ended, timeout=LONG)
    window._gradcam(True)  # the picture on screen runs again with Grad-CAM
    qtbot.waitUntil(lambda: panel._result is not None and hasattr(panel._result.probes.get("gradcam"), "map"),
                    timeout=LONG)
    cam = panel._result.probes["gradcam"]
    empty = dataclasses.replace(cam, map=np.zeros_like(cam.map), layer="features.relu4_3")
    window.source_bar.set_playing(False)
    window.bridge.pause()
    panel._result = panel._result._replace(probes={**panel._result.probes, "gradcam": empty})
    panel._paint_input()
    assert f"no \u201c{cam.label}\u201d evidence at relu4_3" in panel.input_caption.text()
    assert 'href="features.relu5_3"' in panel.input_caption.text()
    panel.input_caption.linkActivated.emit("features.relu5_3")  # the person clicks "try relu5_3"
    assert panel.layer == "features.relu5_3"


def test_frames_run_again_are_not_counted_as_shown(make_window, qtbot, tmp_path):  # noqa: F811
    """'shown 51/48': a frame run again (a new layer while paused, a step back) was counted as shown."""
    from tests.media import write_image

    window = make_window(str(write_image(tmp_path / "a.png")))
    qtbot.waitUntil(lambda: window.shown_result is not None and window.bridge.source_ended, timeout=LONG)
    for _ in range(3):
        before = window.shown_result
        assert window.bridge.rerun_last()
        qtbot.waitUntil(lambda: window.shown_result is not before, timeout=LONG)  # noqa: B023 - waited for here
    window._update_counters()
    assert window.frames_shown == window.bridge.processed == 1
    assert "shown 1/1" in window.counters.text()


def test_live_forward_times_do_not_claim_to_be_benchs():
    """The window's LeNet-5 p50 was 0.86 ms against bench's 0.09: its labels said 'the network alone,
    as bench measures it'. They say what the live figure includes instead."""
    from gui.comparison_table import HEADER_TIPS
    from gui.model_panel import LIVE_TIMING

    for text in (HEADER_TIPS["Fwd p50 ms"], LIVE_TIMING):
        assert "live pipeline" in text and "caches" in text and "as `bench` measures" not in text


def test_a_channel_search_asks_for_the_data_set_rather_than_searching_a_folder(make_window, monkeypatch, tmp_path):  # noqa: F811
    """With no CIFAR-10 file remembered, the start folder of the file dialog (the home folder) was
    searched as if it were the data set, and failed on '.pyenv'."""
    from PySide6.QtWidgets import QFileDialog

    window = make_window()
    asked = []
    monkeypatch.setattr(window.source_bar, "cifar_start_path", lambda: str(tmp_path))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (asked.append(a), ("", ""))[1])
    started = []
    monkeypatch.setattr(window.bridge, "top_images", lambda *a: started.append(a) or True)
    window._study_channel("lenet5", "features.c1", 0)
    assert asked and not started  # the person was asked, and cancelled: nothing searched
