"""The window's pure helpers: mosaics, overlays, agreement, table rows, CSV writing (no window)."""

from __future__ import annotations

import csv
import math
import os
import sys

import numpy as np
import pytest

import gui  # noqa: F401 - the Qt work-around, before anything else touches Qt
from engine.api import ModelCard, WeightsKind
from engine.live.metrics import MetricsTracker
from engine.models.complexity import Complexity
from gui.comparison_table import (
    COLUMNS,
    CSV_COLUMNS,
    csv_rows,
    display_rows,
    table_entries,
    write_csv_atomic,
)
from gui.imaging import (
    GAP,
    LEVELS,
    agreement,
    blend_channel,
    blend_class_map,
    class_shares,
    grid_shape,
    resize_nearest,
    tile_channels,
    to_levels,
)
from gui.model_panel import agreement_badge, layer_label, status_badge
from gui.pacing import CostRecorder
from gui.plots import DecadeAxis, short_number
from gui.source_bar import describe_target, target_from_paths


@pytest.mark.parametrize("n, shape", [(0, (0, 0)), (1, (1, 1)), (6, (2, 3)), (16, (4, 4)), (64, (8, 8)),
                                      (10, (3, 4))])
def test_grid_shape_is_the_squarest_grid_that_holds_n(n, shape):
    assert grid_shape(n) == shape


def test_mosaic_tiles_channels_in_reading_order_with_gaps():
    act = np.zeros((6, 4, 5), np.float32)
    for c in range(6):
        act[c] = c  # channel c is flat at value c
    m = tile_channels(act, per_channel=False, gap=1)
    assert (m.rows, m.cols, m.tile_h, m.tile_w, m.shown, m.total) == (2, 3, 4, 5, 6, 6)
    assert m.image.shape == (2 * 4 + 1, 3 * 5 + 2)
    assert m.image.dtype == np.uint8
    assert (m.image[4, :] == GAP).all() and (m.image[:, 5] == GAP).all()  # the gap row and column
    # shared scale: channel 0 is the minimum, channel 5 the maximum
    x0, y0 = m.tile_origin(0)
    x5, y5 = m.tile_origin(5)
    assert m.image[y0, x0] == 0 and m.image[y5, x5] == LEVELS
    assert (m.low, m.high) == (0.0, 5.0)
    values = [m.image[m.tile_origin(c)[1], m.tile_origin(c)[0]] for c in range(6)]
    assert values == sorted(values)


def test_per_channel_scale_stretches_each_tile():
    act = np.stack([np.linspace(0, s, 16, dtype=np.float32).reshape(4, 4) for s in (1.0, 100.0)])
    shared = tile_channels(act, per_channel=False)
    own = tile_channels(act, per_channel=True)
    first_shared = shared.image[:4, :4]
    first_own = own.image[:4, :4]
    assert first_shared.max() < 10  # weak next to a 100x stronger channel
    assert first_own.max() == LEVELS and first_own.min() == 0


def test_flat_and_non_finite_activations_do_not_break_the_mosaic():
    act = np.ones((3, 2, 2), np.float32)
    act[1, 0, 0] = np.nan
    act[2, 1, 1] = np.inf
    m = tile_channels(act, per_channel=True)
    assert m.image.dtype == np.uint8
    assert to_levels(np.ones(4, np.float32), 1.0, 1.0).tolist() == [0, 0, 0, 0]


def test_mosaic_limits_channels_and_decimates_big_maps():
    act = np.random.default_rng(0).random((512, 224, 224), dtype=np.float32)
    m = tile_channels(act, max_channels=64, max_tile=48)
    assert (m.shown, m.total) == (64, 512)
    assert m.tile_h <= 48 and m.tile_w <= 48
    assert m.image.shape[0] < 8 * 49 and m.image.shape[1] < 8 * 49


def test_channel_at_inverts_tile_origin_and_rejects_gaps():
    m = tile_channels(np.zeros((10, 3, 3), np.float32))
    for c in range(10):
        x, y = m.tile_origin(c)
        assert m.channel_at(x + 1.5, y + 2.9) == c
    assert m.channel_at(3.2, 0) is None  # the gap column after the first tile
    assert m.channel_at(-1, 0) is None
    x, y = m.tile_origin(11)  # the empty cells after the last channel
    assert m.channel_at(x, y) is None


def test_resize_nearest_keeps_values_and_shape():
    img = np.arange(4, dtype=np.uint8).reshape(2, 2)
    big = resize_nearest(img, 4, 6)
    assert big.shape == (4, 6)
    assert set(np.unique(big)) == {0, 1, 2, 3}
    assert big[0, 0] == 0 and big[-1, -1] == 3


def test_blend_channel_paints_strong_activations_over_the_input():
    view = np.zeros((32, 32, 3), np.uint8)
    channel = np.zeros((8, 8), np.float32)
    channel[:4] = 5.0  # top half active
    lut = np.zeros((256, 3), np.uint8)
    lut[:, 1] = np.arange(256)  # green ramp
    out = blend_channel(view, channel, lut)
    assert out.shape == view.shape and out.dtype == np.uint8
    assert out[:16, :, 1].mean() > 4 * max(1.0, out[16:, :, 1].mean())


def test_blend_class_map_uses_the_palette_and_confidence():
    view = np.full((4, 4, 3), 128, np.uint8)
    cmap = np.array([[0, 1], [1, 0]], np.uint8)
    palette = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    out = blend_class_map(view, cmap, palette, opacity=1.0)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 3]) == (0, 0, 255)
    unsure = blend_class_map(view, cmap, palette, confidence=np.zeros((2, 2), np.float32), opacity=1.0)
    assert 128 < unsure[0, 0, 0] < 255  # low confidence lets the input show through


def test_class_shares_largest_first():
    cmap = np.array([[2, 2, 2], [0, 2, 1]], np.uint8)
    shares = class_shares(cmap, 4)
    assert shares[0] == (2, pytest.approx(4 / 6))
    assert {c for c, _ in shares} == {0, 1, 2}


def test_agreement_counts_networks_with_the_same_answer():
    same = agreement({"a": 3, "b": 3, "c": 1, "d": 3})
    assert same == {"a": 3, "b": 3, "c": 1, "d": 3}
    assert agreement_badge(4, 4)[0] == "all 4 agree"
    assert agreement_badge(3, 4)[0] == "majority 3/4"
    assert agreement_badge(2, 4)[0] == "agrees 2/4"
    assert agreement_badge(1, 4)[0] == "disagrees"


def test_weights_notes_say_why_there_are_no_weights():
    from gui.model_panel import weights_note
    assert weights_note("bundled", "assets/weights/x.safetensors", "x") == "Weights: assets/weights/x.safetensors"
    assert "not downloaded" in weights_note("untrained", "torchvision AlexNet_Weights", "alexnet", downloadable=True)
    assert "train --model vgg16" in weights_note("untrained", "not trained yet: vgg16...", "vgg16")


def test_status_badges_say_untrained_plainly():
    assert status_badge("untrained", None)[0] == "UNTRAINED"
    assert status_badge("bundled", 0.931)[0] == "TRAINED \u00b7 test 93.1%"
    assert layer_label("features.conv1_1", (64, 32, 32)) == "features.conv1_1   64\u00d732\u00d732"


def _card(name, year, status=WeightsKind.UNTRAINED, top1=None, cost=None):
    return ModelCard(name, f"{name.upper()} ({name})", name.upper(), year, "a paper", status, "here", False, (), "",
                     False, ("x", "y"), top1, cost)


def test_table_rows_combine_static_counts_and_live_metrics():
    infos = [_card("lenet5", 1998, WeightsKind.BUNDLED, 0.7, Complexity(62006, 651720, 0.25, 0.06)),
             _card("vgg16", 2014)]
    tracker = MetricsTracker(["lenet5", "vgg16"], 2)
    entries = table_entries("cifar10", infos, tracker.snapshot())
    rows = display_rows(entries)
    assert len(rows) == 2 and all(len(r) == len(COLUMNS) for r in rows)
    assert rows[0][:4] == ["LENET5", "1998", "62.01k", "651.72k"]
    assert rows[0][COLUMNS.index("Test top-1")] == "70.0%" and rows[0][COLUMNS.index("Live top-1")] == "\u2013"
    assert rows[1][2] == "\u2013" and rows[1][-1] == "UNTRAINED"
    raw = csv_rows(entries)
    assert all(len(r) == len(CSV_COLUMNS) for r in raw)
    assert raw[0][4] == 62006 and raw[1][4] == ""


def test_csv_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    write_csv_atomic(target, ["a", "b"], [[1, 2], [3, "x,y"]])
    with open(target, newline="") as f:
        assert list(csv.reader(f)) == [["a", "b"], ["1", "2"], ["3", "x,y"]]

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_csv_atomic(target, ["a"], [[9]])
    with open(target, newline="") as f:  # the old file is untouched, and no temporary is left
        assert next(csv.reader(f)) == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_dropped_paths_become_one_target(tmp_path):
    a, b, note = tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "note.txt"
    for p in (a, b, note):
        p.write_bytes(b"x")
    assert target_from_paths([]) is None
    assert target_from_paths([str(tmp_path)]) == str(tmp_path)
    assert target_from_paths([str(b), str(note), str(a)]) == [str(a), str(b)]
    assert target_from_paths([str(note), str(a)]) == str(a)
    assert describe_target([str(a), str(b)]) == "2 images"
    assert describe_target("0") == "camera 0"
    assert describe_target("clip.avi") == "video clip.avi"


def test_axis_and_cost_helpers(qapp):
    assert short_number(1e6) == "1M" and short_number(2.5e8) == "250M" and short_number(10) == "10"
    axis = DecadeAxis("left")
    ticks = axis.logTickValues(0.0, 3.0, 200, [])
    assert ticks[0][1] == [0.0, 1.0, 2.0, 3.0]
    assert axis.logTickStrings([0.0, 3.0, math.log10(2)], 1.0, 1.0) == ["1", "1k", ""]
    costs = CostRecorder()
    assert costs.percentile(50) is None
    for v in (1.0, 2.0, 3.0):
        costs.add(v)
    assert costs.percentile(50) == 2.0


def test_stall_meter_keeps_the_longest_gap(qapp):
    from gui.pacing import StallMeter
    meter = StallMeter(10)
    for gap in (10.0, 12.0, 75.0, 11.0):
        meter.record(gap)
    assert meter.max_stall_ms == pytest.approx(65.0)
    assert meter.stalls_over_50ms == 1


def test_the_qt_binding_keeps_its_references(qapp):
    # PySide6 6.12.0 on CPython < 3.12 drops a reference to None on every call that returns
    # nothing, and a busy window then aborts the interpreter; pyproject.toml excludes that release.
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(20_000):
        probe.setObjectName("x")
    assert sys.getrefcount(None) >= before - 100


def test_qimage_to_rgb_handles_row_padding(qapp):
    from PySide6.QtGui import QColor, QImage

    from gui.source_bar import qimage_to_rgb
    image = QImage(5, 3, QImage.Format.Format_ARGB32)  # 5 px * 3 bytes is not a multiple of 4: padded rows
    image.fill(QColor(10, 20, 30))
    image.setPixelColor(4, 2, QColor(200, 100, 50))
    rgb = qimage_to_rgb(image)
    assert rgb.shape == (3, 5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[2, 4]) == (200, 100, 50)


def test_scatter_labels_overlap_neither_labels_nor_other_points():
    from gui.plots import label_anchors
    # two close points, one far away, in a 4-decade-wide plot 400 px wide; labels ~20 chars
    anchors = label_anchors([6.0, 6.1, 9.0], [10.0, 10.0, 80.0], [20, 20, 20], (5.5, 9.5), 400.0)
    assert anchors[0][1] != anchors[1][1]  # close: different rows
    assert anchors[0][0] == 0.0  # at the left edge: grows to the right
    assert anchors[2][0] == 1.0 and anchors[2][1] < 0  # right edge, high up: grows left, below the point
    # AlexNet and VGG as in the window: 182M and 313M MACs at 84% in a 90 px high plot; the label of
    # the first must not sit on the second's dot (it did: both below, the label across the dot)
    xs, ys = [5.8, 8.26, 8.5], [68.0, 84.0, 84.0]
    anchors = label_anchors(xs, ys, [7, 7, 9], (5.4, 8.9), 300.0, height_px=90.0)
    per_px, (px2, py2) = 3.5 / 300.0, ((8.5 - 5.4) / (3.5 / 300.0), 84.0 / 100 * 90.0)
    ax, ay = anchors[1]
    left = (8.26 - 5.4) / per_px - ax * (7 * 6.5 + 6)
    bottom = 84.0 / 100 * 90.0 + (ay - 1) * 15.0
    assert not (left - 6 < px2 < left + 7 * 6.5 + 6 + 6 and bottom - 6 < py2 < bottom + 15.0 + 6)


class _FakeEngine:
    def __init__(self, *args, on_result=None, on_event=None, **kwargs) -> None:
        self.on_result, self.on_event = on_result, on_event
        self.dropped = self.processed = 0
        self.paused = False

    def stop(self, timeout=1.0) -> bool:
        return True


def test_bridge_keeps_only_the_newest_result_and_counts_the_rest(qapp):
    import threading

    from gui.bridge import EngineBridge
    bridge = EngineBridge(engine_factory=_FakeEngine)
    signals = []
    bridge.result_ready.connect(lambda p: signals.append(p))

    def produce():
        for i in range(5):
            bridge.engine.on_result(f"result {i}", f"metrics {i}")
    worker = threading.Thread(target=produce, name="fake engine")
    worker.start()
    worker.join()
    qapp.processEvents()
    assert len(signals) == 1  # one signal in flight at a time, however many results came
    assert bridge.take_latest() == ("result 4", "metrics 4")
    assert bridge.take_latest() is None  # taken: nothing new to draw
    assert (bridge.results_received, bridge.results_skipped) == (5, 4)
    bridge.engine.on_result("result 5", "metrics 5")
    qapp.processEvents()
    bridge.engine.on_result("result 6", "metrics 6")  # arrives before a redraw took result 5
    qapp.processEvents()
    assert bridge.take_latest() == ("result 6", "metrics 6") and bridge.results_skipped == 5



def _layout_requests_on_text_changes(qtbot, pinned: bool):
    """How often a window re-lays itself out while a label in it changes its text 20 times; and
    that label's geometry."""
    from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

    from gui.pinned import Pinned
    from tests.gui.gui_fixtures import layout_request_counter

    window = QWidget()
    qtbot.addWidget(window)
    layout = QVBoxLayout(window)
    live = QLabel("0 ms")
    layout.addWidget(Pinned(live) if pinned else live)
    layout.addWidget(QLabel("a neighbour"))
    window.resize(300, 120)
    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(20)  # the first layout is done

    counter = layout_request_counter()
    window.installEventFilter(counter)
    for i in range(20):  # texts of every length, as a per-frame number gives
        live.setText("9" * (i % 7 + 1) + " ms")
        qtbot.wait(1)
    window.removeEventFilter(counter)
    return counter.requests, live.geometry()


def test_a_pinned_label_changes_its_text_without_re_laying_out_the_window(qtbot):
    free, _ = _layout_requests_on_text_changes(qtbot, pinned=False)
    assert free >= 10  # the problem the holder solves: a new text lays the whole window out again
    pinned, geometry = _layout_requests_on_text_changes(qtbot, pinned=True)
    assert pinned == 0
    assert geometry.x() == 0 and geometry.width() > 250  # the child fills the holder's width


def test_topk_bars_lay_out_once_per_set_of_names_and_answer_the_tooltip_when_asked(qapp):
    from PySide6.QtCore import QEvent, QPoint
    from PySide6.QtGui import QHelpEvent, QImage
    from PySide6.QtWidgets import QToolTip

    from gui.topk_bars import TopKBars

    bars = TopKBars(3)
    bars.resize(240, 72)
    bars.setToolTip("click a class")
    names = ("cat", "dog", "a very long class name that cannot fit in the label column")
    bars.set_predictions(names, (0.7, 0.2, 0.1), truth="dog")
    assert bars.toolTip() == "click a class"  # nothing written per frame
    first = bars._layout()
    assert bars._layout() is first  # same size, font and names: worked out once
    assert [row.name for row in first.rows][:2] == ["cat", "\u2713 dog"] and first.rows[1].is_truth
    assert first.rows[2].name.endswith("\u2026")  # cut to its column, whole in the tooltip
    bars.set_predictions(names, (0.5, 0.3, 0.2), truth="dog")  # only the numbers changed
    assert bars._layout() is first
    bars.resize(400, 72)
    wider = bars._layout()
    assert wider is not first and wider.rows[2].name_rect.width() > first.rows[2].name_rect.width()
    assert len(wider.rows[2].name) > len(first.rows[2].name)  # the wider column shows more of the name
    image = QImage(bars.size(), QImage.Format.Format_ARGB32)
    bars.render(image)  # paints without error from the kept layout
    assert "50.0%  cat" in bars.tooltip_text() and names[2] in bars.tooltip_text()
    assert bars.tooltip_text().endswith("\n\nclick a class")  # the hint stays after the first frame
    bars.show()
    bars.event(QHelpEvent(QEvent.Type.ToolTip, QPoint(5, 5), bars.mapToGlobal(QPoint(5, 5))))
    assert QToolTip.text() == bars.tooltip_text()
    QToolTip.hideText()
    bars.close()
