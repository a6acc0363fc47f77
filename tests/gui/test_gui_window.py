"""The main window, offscreen, over the real engine: sources, panels in lockstep, layer picker,
errors, export, settings, and a clean shutdown (no thread left behind)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from tests.gui.gui_fixtures import gui_settings, make_window, no_thread_leak, window_threads  # noqa: F401
from tests.media import write_image, write_video

LONG = 60_000  # ms: the CPU is shared and slow; waits end as soon as their condition holds


def _panels(window):
    return {p.name: p for p in window.panels if p.isVisible()}


def test_a_video_runs_and_all_panels_show_the_same_frame(make_window, tmp_path, qtbot):
    video = write_video(tmp_path / "clip.avi", frames=24, size=(640, 480))
    window = make_window(str(video))
    panels = _panels(window)
    assert list(panels) == ["lenet5", "alexnet", "vgg16", "enet"]
    qtbot.waitUntil(lambda: window.frames_shown >= 3, timeout=LONG)
    frame_ids = {name: p.frame_id for name, p in panels.items()}
    assert len(set(frame_ids.values())) == 1, frame_ids
    assert next(iter(frame_ids.values())) == window.shown_frame_id
    for panel in panels.values():
        assert panel.bars.labels and len(panel.bars.labels) == 5
        assert panel.features.mosaic is not None and panel.features.mosaic.shown > 0
        assert panel.input_view.array is not None
        assert panel.latency.text().endswith("ms")
    assert panels["enet"].class_map_box.isVisible() and "%" in panels["enet"].note.text()  # the legend
    qtbot.waitUntil(lambda: window.table.table.item(0, 6).text() not in ("", "\u2013"), timeout=LONG)
    assert window.table.table.rowCount() == 4
    report = window.report()
    assert report["frames_shown"] == window.frames_shown
    # why each network runs on what it runs on (the times auto measured), beside what it runs on
    assert set(report["why"]) == set(report["backend"]) == set(panels)
    for card in window.session.models:
        assert all(note in report["why"][card.name] for note in (card.precision_note, card.backend_note))


def test_the_layer_picker_changes_the_feature_maps(make_window, tmp_path, qtbot):
    image = write_image(tmp_path / "red.png", size=(64, 48))
    window = make_window(str(image))
    alexnet = _panels(window)["alexnet"]
    qtbot.waitUntil(lambda: alexnet.features.shape == (64, 32, 32), timeout=LONG)
    qtbot.waitUntil(lambda: window.bridge.source_ended, timeout=LONG)
    assert alexnet.select_layer("features.conv3")
    assert alexnet.features.shape is None  # cleared until the layer's output arrives
    # The single image has ended: the window runs it again so the new layer appears at once.
    qtbot.waitUntil(lambda: alexnet.features.shape == (384, 7, 7), timeout=LONG)
    assert alexnet.features.layer == "features.conv3"
    assert alexnet.features.mosaic.total == 384 and alexnet.features.mosaic.shown == 64
    assert alexnet.features.caption.text().startswith("384\u00d77\u00d77")
    assert window.layer_choice["alexnet"] == "features.conv3"


def test_clicking_a_tile_paints_that_channel_over_the_input(make_window, tmp_path, qtbot):
    window = make_window(str(write_image(tmp_path / "a.png")))
    vgg = _panels(window)["vgg16"]
    qtbot.waitUntil(lambda: vgg.features.mosaic is not None and vgg.frame_id is not None, timeout=LONG)
    plain = np.array(vgg.input_view.array, copy=True)
    mosaic, canvas = vgg.features.mosaic, vgg.features.canvas
    x, y = mosaic.tile_origin(3)
    target = canvas.image_rect()  # mosaic pixels -> widget pixels, as the user sees them
    h, w = mosaic.image.shape
    at = QPoint(round(target.x() + (x + mosaic.tile_w / 2) * target.width() / w),
                round(target.y() + (y + mosaic.tile_h / 2) * target.height() / h))
    text = vgg.features.describe_at(x + 1, y + 1)  # what hovering there tells
    values = vgg.features._activation[3]
    assert text.startswith("channel 3 of features.conv1_1: ") and f"max {float(values.max()):.3g}" in text
    assert vgg.features.describe_at(x + mosaic.tile_w + 0.5, y + 1) == ""  # the gap between tiles
    qtbot.mouseMove(canvas, at)  # the tooltip path runs without error (pytest-qt fails on one)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=at)
    assert vgg.features.selected == 3
    assert "channel 3" in vgg.input_caption.text()
    assert not np.array_equal(plain, vgg.input_view.array)
    assert canvas._highlight is not None and canvas._highlight.contains(QPointF(x + 1, y + 1))
    painted = vgg.input_view.array.copy()
    assert vgg._wheel(-3) and vgg.channel_opacity == pytest.approx(0.4)  # scrolling on the input: fainter
    assert "40%" in vgg.input_caption.text() and not np.array_equal(painted, vgg.input_view.array)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=at)  # again: cleared
    assert vgg.features.selected is None and canvas._highlight is None
    window.source_bar.scale_action.setChecked(True)
    assert all(p.features.per_channel for p in _panels(window).values())


def test_an_empty_file_is_reported_in_the_status_bar(make_window, tmp_path, qtbot):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    window = make_window()
    window.open_source(str(broken))
    qtbot.waitUntil(lambda: "empty file" in window.status_text.text(), timeout=LONG)
    assert window.errors and "broken.jpg" in window.errors[0]
    assert "\n" not in window.status_text.text()
    # the engine is still alive: a good image after the bad one is shown
    window.open_source(str(write_image(tmp_path / "ok.png")))
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=LONG)


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_closing_while_a_video_plays_stops_everything_within_two_seconds(make_window, tmp_path, qtbot):
    video = write_video(tmp_path / "long.avi", frames=300, size=(640, 480))
    window = make_window(str(video))
    qtbot.waitUntil(lambda: window.frames_shown >= 2, timeout=LONG)
    assert not window.bridge.source_ended
    started = time.monotonic()
    window.close()
    assert time.monotonic() - started < 2.0
    assert window.engine_stopped_cleanly
    # the no_thread_leak fixture then checks that no engine, feeder or control thread is left


def test_export_csv_writes_the_whole_table(make_window, tmp_path, qtbot):
    window = make_window(str(write_image(tmp_path / "a.png")))
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=LONG)
    qtbot.waitUntil(lambda: window.table.entries and window.table.entries[0].p50_ms is not None, timeout=LONG)
    target = tmp_path / "out" / "table.csv"
    assert not window.table.export(target)  # no such folder: an error on the status bar, not a crash
    assert window.status_text.text().startswith("Export failed")
    target.parent.mkdir()
    assert window.table.export(target)
    with open(target, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["lenet5", "alexnet", "vgg16", "enet"]
    assert all(float(r["latency_p50_ms"]) > 0 and int(r["params"]) > 0 for r in rows)
    assert "Exported 4 networks" in window.status_text.text()
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_pause_step_and_play(make_window, tmp_path, qtbot):
    folder = tmp_path / "pics"
    for i in range(40):
        write_image(folder / f"{i:02d}.png", color=(i * 6, 100, 200))
    window = make_window(str(folder))
    qtbot.waitUntil(lambda: window.bridge.processed >= 2, timeout=LONG)
    window.toggle_play()
    assert window.bridge.paused and window.source_bar.play_action.text() == "Play"
    qtbot.waitUntil(lambda: window.bridge.engine.held, timeout=LONG)  # the folder holds its next picture
    before = window.bridge.processed
    window.step()
    qtbot.waitUntil(lambda: window.bridge.processed >= before + 1, timeout=LONG)
    window.toggle_play()
    assert not window.bridge.paused


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_a_pasted_or_dropped_image_is_shown(make_window, tmp_path, qtbot):
    from PySide6.QtGui import QColor, QGuiApplication, QImage
    window = make_window()
    image = QImage(60, 40, QImage.Format.Format_RGB32)
    image.fill(QColor(255, 0, 0))
    QGuiApplication.clipboard().setImage(image)
    window.source_bar.paste()  # what Ctrl+V does
    qtbot.waitUntil(lambda: window.frames_shown >= 1, timeout=LONG)
    panel = _panels(window)["lenet5"]
    assert panel.input_view.array[..., 0].mean() > 150  # the red picture reached the networks
    assert window.last_snapshot is not None
    shown = window.frames_shown
    dropped = write_image(tmp_path / "dropped.png", color=(0, 200, 0))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(dropped))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.frames_shown > shown, timeout=LONG)
    assert window.bridge.target == str(dropped)
    # the toolbar's runtime picker: the networks load again on ONNX Runtime, and every panel, the
    # table's caption and each frame's result say so
    box = window.source_bar.backend_box
    box.setCurrentIndex(box.findData("onnxruntime"))
    qtbot.waitUntil(lambda: window.session is not None
                    and all(m.backend == "onnxruntime" for m in window.session.models), timeout=LONG)
    window.dropEvent(QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: window.bridge.latest is not None and all(
        r.backend == "onnxruntime" for r in window.bridge.latest[0].results.values()), timeout=LONG)
    qtbot.waitUntil(lambda: all(p.cost.text().startswith("ORT \u00b7 ") for p in _panels(window).values()),
                    timeout=LONG)
    qtbot.waitUntil(lambda: "forward on ONNX Runtime, fp32" in window.table.caption.text(), timeout=LONG)


@pytest.mark.slow
def test_window_state_goes_to_the_private_settings_file(make_window, gui_settings, qtbot, monkeypatch):
    window = make_window()
    assert not window.restored_geometry
    window.source_bar.scale_action.setChecked(True)
    window.close()
    assert gui_settings.exists()
    text = gui_settings.read_text()
    assert "geometry" in text and "per_channel=true" in text
    again = make_window()
    assert again.source_bar.scale_action.isChecked()
    # offscreen there is no screen to fit: the geometry is stored but the designed size is used
    assert not again.restored_geometry and again.width() == 1600
    monkeypatch.setattr("gui.main_window._headless", lambda: False)  # as on a desktop
    assert make_window().restored_geometry


@pytest.mark.slow  # builds the 224x224 networks, seconds
@pytest.mark.parametrize("profile", ["imagenet"])
def test_the_imagenet_profile_says_which_networks_have_no_weights(make_window, profile, tmp_path, qtbot, monkeypatch):
    window = make_window(profile=profile)
    panels = _panels(window)
    assert window.session.profile == "imagenet"
    for name in ("lenet5", "enet"):
        assert panels[name].status.text() == "UNTRAINED"
        assert "random weights" in panels[name].note.text().lower()
    assert "not downloaded" in panels["alexnet"].note.text()
    assert not panels["enet"].class_map_box.isVisible()  # no class map at this size
    from gui.comparison_table import COLUMNS
    qtbot.waitUntil(lambda: window.table.table.rowCount() >= 2, timeout=LONG)
    published = window.table.table.item(1, COLUMNS.index("Test top-1")).text()
    assert published == "56.5% pub."  # torchvision's figure, shown before any download, said to be published

    vgg = panels["vgg16"]  # the line-up picker (the choosing itself is tested in the cifar10 profile)
    labels = [a.text() for a in vgg.lineup_menu.actions()]
    assert vgg.title.text() == "VGG-16" and "VGG-11" in labels and "VGG-19-BN" in labels

    # Change > Download runs as a job: a progress bar with MB and speed in the status bar, and Cancel
    import engine.data.download as download
    from engine.jobs import JobProgress

    asked = []

    def slow_download(specs, job):  # stands in for the network: 1 MB every 20 ms until cancelled
        asked.extend(s.name for s in specs)
        for step in range(500):
            job.check()
            job.report(JobProgress("download", step * 1_000_000, 244_000_000, "alexnet (alexnet.pth)"))
            time.sleep(0.02)
        return []

    monkeypatch.setattr(download, "download_weights", slow_download)
    action = panels["alexnet"].download_action
    assert action.isVisible() and action.text() == "Download the ImageNet weights (244 MB)"
    assert not panels["lenet5"].download_action.isVisible()
    action.trigger()
    qtbot.waitUntil(lambda: "MB/s" in window.job_bar.text.toolTip(), timeout=LONG)
    assert window.job_bar.isVisible() and asked == ["alexnet"]
    assert window.job_bar.text.toolTip().endswith(" MB/s \u00b7 download alexnet (alexnet.pth)")
    window.job_bar.cancel.click()
    qtbot.waitUntil(lambda: not window.job_bar.isVisible(), timeout=LONG)
    assert window.status_text.text() == "download cancelled; nothing partial was kept"
    assert panels["alexnet"].status.text() == "UNTRAINED"


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_load_weights_on_a_panel_shows_custom_and_a_misfit_is_refused(make_window, qtbot, tmp_path):
    import shutil

    import torch

    from engine.models.registry import get_spec

    window = make_window()
    panels = _panels(window)
    mine = tmp_path / "my lenet.safetensors"
    shutil.copy(Path(__file__).resolve().parents[2] / "assets" / "weights" / "lenet5_cifar10.safetensors", mine)
    assert panels["lenet5"].load_action.isEnabled() and not panels["lenet5"].default_action.isEnabled()
    panels["lenet5"]._request_weights(str(mine))  # what the file dialog hands over
    qtbot.waitUntil(lambda: panels["lenet5"].status.text() == "CUSTOM" and window.ready, timeout=LONG)
    assert "my lenet.safetensors" in panels["lenet5"].note.text() and panels["lenet5"].default_action.isEnabled()
    wrong = tmp_path / "vgg.pth"
    torch.save(get_spec("vgg16").build().state_dict(), wrong)
    panels["lenet5"]._request_weights(str(wrong))
    qtbot.waitUntil(lambda: "vgg.pth: not weights for lenet5" in window.status_text.text(), timeout=LONG)
    assert "keep the weights they had" in window.status_text.text()
    assert panels["lenet5"].status.text() == "CUSTOM"  # still the file that fitted
    panels["lenet5"].default_action.trigger()
    qtbot.waitUntil(lambda: panels["lenet5"].status.text().startswith("TRAINED") and window.ready, timeout=LONG)


def test_an_unknown_device_is_one_error_and_choosing_cpu_then_runs(qtbot, gui_settings, no_thread_leak):
    from gui.main_window import MainWindow

    window = MainWindow(profile="cifar10", device="bogus", backend="torch")
    qtbot.addWidget(window)
    window.show()
    window.start(None)
    try:
        qtbot.waitUntil(lambda: "unknown device 'bogus'" in window.status_text.text(), timeout=LONG)
        assert window.errors == ["unknown device 'bogus'; expected auto, cpu or cuda; choose cpu"]
        window._device_chosen("cpu")  # what the device box does
        qtbot.waitUntil(lambda: window.ready, timeout=LONG)
        assert window.session.device == "cpu"
    finally:
        window.close()
    assert window.engine_stopped_cleanly


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_a_missing_camera_is_a_clear_message_then_cifar10_downloads_and_vgg_changes(make_window, qtbot, tmp_path,
                                                                                    monkeypatch):
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    import engine.data.download as download
    from tests.engine.test_data import make_tiny_archive

    window = make_window()
    window.open_source("63")  # no machine has a 64th camera
    qtbot.waitUntil(lambda: "camera 63: cannot open" in window.status_text.text(), timeout=LONG)
    # the whole error and what to do about it, above the panels
    assert window.message_bar.isVisible() and "camera 63: cannot open" in window.message_bar.text.text()
    assert "another index" in window.message_bar.text.text()
    assert window.errors == [e for e in window.errors if e.startswith("camera 63")]

    # CIFAR-10 from inside the app: no archive chosen, so it offers the download, then plays it
    archive = make_tiny_archive(tmp_path / "cifar.tar.gz", train_per_class=1, test_per_class=1)
    monkeypatch.setattr(download, "download_cifar10", lambda job: archive)  # stands in for cs.toronto.edu
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: ("", ""))
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Yes)
    window.source_bar.open_cifar()
    qtbot.waitUntil(lambda: window.last_snapshot is not None and window.last_snapshot.source == "CIFAR-10 test",
                    timeout=LONG)
    assert "170 MB" in asked[0] and window.settings.value("cifar10_path") == str(archive)

    # the line-up: VGG's panel offers the other depths; the choice is remembered per profile
    vgg = _panels(window)["vgg16"]
    assert vgg.title.text() == "VGG-16-BN"
    next(a for a in vgg.lineup_menu.actions() if a.text().startswith("VGG-11")).trigger()
    qtbot.waitUntil(lambda: window.ready and "vgg11" in _panels(window), timeout=LONG)
    assert _panels(window)["vgg11"].title.text() == "VGG-11-BN"
    assert window._lineup_names("cifar10") == ["lenet5", "alexnet", "vgg11", "enet"]
    assert window._lineup_names("imagenet") == ["lenet5", "alexnet", "vgg16", "enet"]  # per profile


def test_the_table_keeps_its_height_when_the_networks_arrive(qtbot):
    """The table is sized for the comparison's four networks from the start: growing when they
    arrive would re-lay out, and repaint, the whole window."""
    from gui.comparison_table import ComparisonTable, TableEntry

    def entries(n):
        return [TableEntry(f"m{i}", f"Model {i}", "cifar10", 2000 + i, 1000, 2000, 1.0, 0.5, 1.0, 2.0, 0.9, 1.8,
                           0.1, 10, 0.5, None, None, 0, "trained") for i in range(n)]

    table = ComparisonTable()
    qtbot.addWidget(table)
    table.resize(1200, 400)  # room to spare: the table takes its full four-row height
    table.show()
    qtbot.waitExposed(table)
    bounds = (table.table.minimumHeight(), table.table.maximumHeight())
    before = table.table.height()
    assert before == bounds[1] == bounds[0]  # under the plots: every row, whatever the plots get
    table.set_entries(entries(4))
    qtbot.wait(10)
    assert table.table.rowCount() == 4 and table.table.height() == before
    assert (table.table.minimumHeight(), table.table.maximumHeight()) == bounds
    assert not table.table.verticalScrollBar().isVisible()
    table.set_whole(False)  # in a tab of its own, on a short window: down to one row, scrolling
    qtbot.wait(10)
    table.resize(1200, table.minimumSizeHint().height())
    qtbot.waitUntil(lambda: table.table.height() < bounds[0])
    table.set_whole(True)
    table.resize(1200, 400)
    table.set_entries(entries(6))  # a longer line-up still fits without a scroll bar
    qtbot.waitUntil(lambda: table.table.height() > before)
    assert not table.table.verticalScrollBar().isVisible()


def test_a_laptop_screen_squeezes_nothing_into_anything(make_window, tmp_path, qtbot):
    """At its smallest (about 1300x700 fits a 1366x768 screen) every panel keeps the height its
    rows need, and the table moves to a tab of its own rather than squeezing the plots."""
    window = make_window(str(write_image(tmp_path / "a.png")))
    qtbot.waitUntil(lambda: all(p.frame_id is not None for p in _panels(window).values()), timeout=LONG)
    window.resize(1300, 1)  # as short as it lets itself be
    qtbot.waitUntil(lambda: window.height() < 1000)
    qtbot.wait(50)
    window.resize(1300, 1)  # short, the table has moved to its tab: shorter still
    qtbot.wait(50)
    assert window.height() <= 700
    for panel in _panels(window).values():
        assert panel.height() >= panel.minimumHeight() > 300
    tabs, table = window.bottom_tabs, window.table
    assert tabs.indexOf(table) > 0 and tabs.currentWidget() is window.live_tab
    assert window.plots.height() >= 110  # the plots have the bottom to themselves (they had 50 px)
    tabs.setCurrentWidget(table)
    qtbot.waitUntil(lambda: table.isVisible() and table.table.height() >= table.table.minimumHeight())
    window.resize(1600, 1000)  # room again: the table under the plots, all four rows, no scroll bar
    qtbot.waitUntil(lambda: tabs.indexOf(table) < 0 and tabs.currentWidget() is window.live_tab)
    qtbot.waitUntil(lambda: table.isVisible() and table.table.height() == table.table.maximumHeight())
    qtbot.waitUntil(lambda: not table.table.verticalScrollBar().isVisible())


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_statistics_belong_to_the_source_on_screen(make_window, qtbot, tmp_path):
    from tests.engine.test_data import make_tiny_archive

    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=1, test_per_class=2)
    video = write_video(tmp_path / "clip.avi", frames=200, size=(64, 48))
    window = make_window()

    def live(name: str = "lenet5"):
        return next(e for e in window.table.entries if e.name == name).live_top1

    window.open_source(str(archive))
    qtbot.waitUntil(lambda: window.bridge.source_ended and window.last_snapshot is not None
                    and window.last_snapshot.frames == 6, timeout=LONG)
    qtbot.waitUntil(lambda: window.table.entries and live() is not None, timeout=LONG)

    # Statistics...: confusion with class names, a cell's frames, one shown again; agreement
    window.show_statistics()
    view = window.statistics
    assert view.isVisible() and view.confusion.rowCount() == 10
    assert view.confusion.verticalHeaderItem(3).text() == "true cat"
    counted = sum(int(view.confusion.item(r, c).text() or 0) for r in range(10) for c in range(10))
    assert counted == 6 and "6 labelled frames" in view.confusion_note.text()
    column = next(c for c in range(10) if view.confusion.item(3, c).text())  # where LeNet-5 put the two cats
    view._cell_chosen(3, column)
    assert view.cell_frames.count() >= 1
    frame_id = view.cell_frames.item(0).data(Qt.ItemDataRole.UserRole)
    view._frame_chosen(view.cell_frames.item(0))
    qtbot.waitUntil(lambda: window.shown_frame_id == frame_id, timeout=LONG)
    assert window.bridge.paused
    assert view.agreement.rowCount() == 4 and view.agreement.item(0, 0).text() == "100%"
    assert "All four agreed on" in view.agreement_note.text() and "not a video" in view.flips.text()
    view.close()
    window.source_bar.help_action.trigger()  # F1: what the badges, maps and timings mean
    assert window._help.isVisible() and "majority 3/4" in window._help.text.toPlainText()
    window._help.close()

    # "This is...": the data set names its own classes, so there is nothing to name
    picker = window.label_picker
    assert not picker.box.isEnabled() and "names its own classes" in picker.box.toolTip()
    window.open_source(str(video))
    assert picker.box.isEnabled()
    picker.choose("cat")  # the video's frames count as cats
    assert window.bridge.engine.scene_label == 3
    qtbot.waitUntil(lambda: window.last_snapshot is not None and window.last_snapshot.source == "clip.avi"
                    and window.last_snapshot.models["lenet5"].labelled > 0, timeout=LONG)
    picker.clear_button.click()
    assert window.bridge.engine.scene_label is None
    picker.choose("cat")
    window.open_source(str(video))  # a name belongs to its source: the next one starts unnamed
    assert window.bridge.engine.scene_label is None and picker.chosen is None
    qtbot.waitUntil(lambda: window.last_snapshot is not None and window.last_snapshot.source == "clip.avi"
                    and window.last_snapshot.frames >= 3, timeout=LONG)
    qtbot.waitUntil(lambda: live() is None, timeout=LONG)  # the data set's accuracy does not stay up
    assert "fps" in window.counters.text()
    window.toggle_play()  # pause
    qtbot.waitUntil(lambda: "paused" in window.counters.text(), timeout=LONG)
    assert "all four: <b>paused</b>" in window.plots.fps.header.text()
    window.reset_stats()
    assert window.plots.latency.curves[0].getData()[0] is None or len(window.plots.latency.curves[0].getData()[0]) == 0
    window.show_image(np.zeros((40, 60, 3), np.uint8), "pasted image")
    qtbot.waitUntil(lambda: window.last_snapshot is not None and window.last_snapshot.source == "pasted image",
                    timeout=LONG)
    assert window.shown_frame_id == 0 and "Play" not in window.status_text.text()


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_pictures_stay_on_screen_say_which_one_and_can_be_stepped_back(make_window, qtbot, tmp_path):
    paths = [str(write_image(tmp_path / f"p{i}.png", size=(120, 80), color=(60 * i, 90, 30))) for i in range(3)]
    window = make_window()
    window.source_bar.stills_box.setCurrentText("0.5 s each")
    window.open_source(paths)
    qtbot.waitUntil(lambda: window.status_text.text() == "1 / 3 \u00b7 p0.png", timeout=LONG)
    first = time.monotonic()
    qtbot.waitUntil(lambda: window.status_text.text() == "2 / 3 \u00b7 p1.png", timeout=LONG)
    assert time.monotonic() - first >= 0.4  # each picture stays on screen, not 0.03 s
    window.step_back()
    qtbot.waitUntil(lambda: window.status_text.text() == "1 / 3 \u00b7 p0.png", timeout=LONG)
    assert window.bridge.paused and window.source_bar.play_action.text() == "Play"
    window.show_original()
    assert window._original.isVisible() and window._original.windowTitle() == "p0.png \u2014 120\u00d780 as loaded"
    window._original.close()

    # A slideshow is drawn at most 30 times a second; pictures with no wait run as fast as the
    # networks go (as a data set does), and are drawn at most 15 times, as the tooltip says.
    from gui.main_window import MEASURE_REDRAW_MS, REDRAW_MS

    assert window.redraw_timer.interval() == REDRAW_MS
    window._update_counters()
    assert "at most 30 a second)" in window.counters.toolTip()
    window.source_bar.stills_box.setCurrentText("no wait")
    window.open_source(paths)
    assert window.redraw_timer.interval() == MEASURE_REDRAW_MS
    window._update_counters()
    assert "at most 15 a second, as pictures run as fast as the networks go" in window.counters.toolTip()
    assert window.report()["redraws_per_s_max"] == 15


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_gradcam_perturbation_and_analysis_tabs(make_window, tmp_path, qtbot):
    """Grad-CAM over every input; a perturbation that every network sees, with each panel saying
    whether its answer flipped; the Analysis tab showing the engine's verdicts."""
    from engine.studies.analysis import Analysis, judge
    from tests.engine.test_analysis import net

    window = make_window(str(write_image(tmp_path / "a.png")))
    panels = _panels(window)
    qtbot.waitUntil(lambda: all(p.frame_id is not None for p in panels.values()), timeout=LONG)
    window.source_bar.gradcam_action.setChecked(True)
    qtbot.waitUntil(lambda: all(p.input_caption.text().startswith("Grad-CAM of") for p in panels.values()),
                    timeout=LONG)
    assert all(p.layer == p.info.gradcam_layer for p in panels.values())  # the pickers moved to it
    vgg = panels["vgg16"]
    second = vgg.bars.labels[1]  # the evidence for another class than the answer: click its bar
    vgg._class_clicked(second)
    qtbot.waitUntil(lambda: f"\u201c{second}\u201d" in vgg.input_caption.text(), timeout=LONG)
    window.source_bar.gradcam_action.setChecked(False)

    view = window.robustness_view
    view.kind.setCurrentIndex(view.kind.findData("occlude"))
    view.severity.setValue(5)
    qtbot.waitUntil(lambda: all(p.frame_label.text() == "unchanged" or p.frame_label.text().startswith("flipped")
                                for p in panels.values()), timeout=LONG)
    assert "occluding square 5" in window.status_text.text()
    shown = window.shown_result
    assert shown.perturbation == "occluding square 5" and (shown.frame == 128).all(axis=2).any()
    view.severity.setValue(0)  # the clean frame again
    qtbot.waitUntil(lambda: all(p.frame_label.text().startswith("frame") for p in panels.values()), timeout=LONG)

    networks = (net("lenet5", "LeNet-5", 1e6, 0.3, 0.66, 6e4), net("enet", "ENet", 8e6, 12.0, 0.8, 3.6e5),
                net("vgg16", "VGG-16", 3e8, 9.0, 0.84, 1.5e7))
    analysis = Analysis("cifar10", "cpu", 2, "fp32", "2", "cpu", "now", 1.0, 64, networks, *judge(networks))
    window.analysis_view.show_analysis(analysis)
    assert window.analysis_view.export_button.isEnabled()
    assert "Does not hold" in window.analysis_view.verdicts.text()  # ENet's 12 ms for 8 M MACs
    assert window.analysis_view.layer_network.count() == 3


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_overview_channel_study_and_layer_health(make_window, tmp_path, qtbot, monkeypatch):
    """The Overview summarises every stage and opens one in its panel; a channel's top 9 test
    pictures come from a job; the mosaic's caption tells the layer's zeros."""
    from engine.api import LayerOverview
    from tests.engine.test_data import make_tiny_archive

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path / "cache"))
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=1, test_per_class=5)  # 3 classes
    window = make_window(str(write_image(tmp_path / "a.png")))
    qtbot.waitUntil(lambda: all(p.frame_id is not None for p in _panels(window).values()), timeout=LONG)
    window.bottom_tabs.setCurrentWidget(window.overview_view)
    canvas = window.overview_view.canvas
    qtbot.waitUntil(lambda: len(canvas.glances.get("vgg16", {})) == 18, timeout=LONG)  # 13 convolutions, 5 pools
    assert {name: len(g) for name, g in canvas.glances.items()} == {"lenet5": 6, "alexnet": 9, "vgg16": 18,
                                                                    "enet": 29}
    glance = canvas.glances["alexnet"]["features.relu2"]
    assert 0 < glance.zero_fraction < 1 and glance.strongest.ndim == 2 and not glance.strongest.flags.writeable
    canvas.layer_clicked.emit("lenet5", "features.tanh3")
    lenet = _panels(window)["lenet5"]
    assert lenet.layer == "features.tanh3"
    window.bottom_tabs.setCurrentWidget(window.live_tab)  # the engine stops summarising every layer
    qtbot.waitUntil(lambda: not any(isinstance(p, LayerOverview)
                                    for p in window.bridge.engine.request.probes.get("vgg16", ())), timeout=LONG)
    qtbot.waitUntil(lambda: "zeros" in lenet.features.caption.text(), timeout=LONG)  # health under the mosaic

    window.settings.setValue("cifar10_path", str(archive))
    window._study_channel("lenet5", "features.tanh3", 3)
    qtbot.waitUntil(lambda: window._channel_view is not None and window._channel_view.isVisible(), timeout=LONG)
    view = window._channel_view
    assert view.channel.value() == 3 and view.result.layer == "features.tanh3" and view.result.images == 15
    assert sum(1 for canvas, caption in view.cells if caption.text()) == 9
    view.close()


def test_a_remade_card_reaches_its_panel_and_report_and_status_text_never_re_lays_out_the_window(make_window):
    """A ModelUpdated changes the session's card (which the report reads), its panel's tooltip and
    the status bar; one that arrives while the panels are being filled waits for them. The status
    bar's per-frame texts never make the window lay itself out again."""
    import dataclasses

    from engine.api import ModelUpdated

    window = make_window()
    name = window.session.models[1].name
    panel = next(p for p in window.panels if p.name == name)
    note = "2 torch threads: 1.00 ms against 2.00 ms on 1 (medians of 5 live frames each, alternated)"
    card = dataclasses.replace(window.session.card(name), threads=2, threads_note=note, backend_note=note)
    window._on_event(ModelUpdated(card, f"{card.display} runs on {note}"))
    assert window.session.card(name) is card and note in window.report()["why"][name]
    assert note in panel.cost.toolTip() and window.status_text.text() == f"{card.display} runs on {note}"
    window.set_status("a source failed", True)
    window._on_event(ModelUpdated(card, "not over an error"))
    assert window.status_text.text() == "a source failed"

    later = dataclasses.replace(card, threads=1, threads_note="1 torch thread", backend_note="1 torch thread")
    session = window.session
    window._filling = True
    window._on_event(ModelUpdated(later, "later"))
    assert window.session.card(name) is card  # not while the panels are filled
    window._session_ready(session)
    assert window.session.card(name) is later and "1 torch thread" in panel.cost.toolTip()
    assert not window._filling

    # The status line and the counters change with every frame; neither may make the window's
    # layout run again (it re-placed the toolbar and the central widget each time).
    from PySide6.QtWidgets import QApplication

    from tests.gui.gui_fixtures import layout_request_counter

    window.set_status("")
    for _ in range(5):  # the message bar the error above opened is laid out first
        QApplication.processEvents()
    counter = layout_request_counter()
    window.installEventFilter(counter)
    window.statusBar().installEventFilter(counter)
    try:
        for i in range(20):
            window.set_status(f"{i * 137} / 10000 \u00b7 CIFAR-10 test #{i * 7919}")
            window.frames_shown = i * 1111
            window._update_counters()
            QApplication.processEvents()
    finally:
        window.removeEventFilter(counter)
        window.statusBar().removeEventFilter(counter)
    assert counter.requests == 0
    window.set_status("an error", True)  # shown whole in the message bar too: that one may lay out the window
    assert window.status_text.text() == "an error" and f"shown {19 * 1111}/" in window.counters.text()


def test_the_accuracy_plot_asks_for_labels_of_the_line_ups_own_classes(qtbot):
    """On ImageNet's line-up the empty accuracy plot does not send a person to the CIFAR-10 test
    set, whose labels are not scored there."""
    from gui.plots import AccuracyPlot

    plot = AccuracyPlot()
    qtbot.addWidget(plot.widget)
    plot.set_models([], 10)
    assert "CIFAR-10 test set" in plot.placeholder.textItem.toPlainText()
    plot.set_models([], 1000)
    text = plot.placeholder.textItem.toPlainText()
    assert "1,000 classes" in text and "CIFAR-10 test set" not in text and plot.placeholder.isVisible()




def test_the_accuracy_vs_cost_legend_fits_its_two_lines_on_a_laptop_screen(qtbot):
    """On ImageNet's line-up (two published figures, two untrained networks) the legend has every
    part, and at the width a plot gets at 1366x768 it needs no third line (one was cut off)."""
    from gui.plots import PlotModel, TradeoffPlot

    plot = TradeoffPlot()
    qtbot.addWidget(plot.container)
    plot.container.resize(315, 290)  # a quarter of the window at its smallest
    plot.container.show()
    qtbot.waitExposed(plot.container)
    models = [PlotModel("lenet5", "LeNet-5", "#5ab0f0", 164_000_000, None, "untrained"),
              PlotModel("alexnet", "AlexNet", "#f0a020", 714_000_000, 0.565, "downloaded", published=True),
              PlotModel("vgg16", "VGG-16", "#30c090", 15_500_000_000, 0.716, "downloaded", published=True),
              PlotModel("enet", "ENet", "#e090c0", 311_000_000, None, "untrained")]
    plot.set_models(models, 1000)
    legend = plot.header.text().split("<br>", 1)[1]
    assert legend == ("y: \u25c6 published top-1 \u00b7\u00a0\u25a1\u00a0no\u00a0top-1\u00a0yet "
                      "\u00b7\u00a0\u22ef\u00a0chance")
    header = plot.header
    lines = round((header.heightForWidth(header.width()) - 4) / header.fontMetrics().lineSpacing())
    assert header.width() < 250 and lines <= 3  # the title and two lines of legend
