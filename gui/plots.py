"""Live plots: latency, throughput, running accuracy, and accuracy against cost.

Every number comes from the engine's :class:`~engine.live.metrics.MetricsSnapshot`; the window only
keeps short histories of values the snapshot gives as single numbers (a network's FPS, its running
accuracy) so they can be drawn over time. Curves are created once per session and updated in place.

Cost notes (software rendering, measured): an antialiased 300-point noisy curve costs tens of
milliseconds per repaint, a pyqtgraph legend a few; so the time series are drawn without
antialiasing and each plot's legend (with its live numbers) is a rich-text label above it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QGraphicsItem, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from engine.api import MetricsSnapshot, human_count
from gui import style
from gui.pinned import Pinned

HISTORY = 300  # frames, as the engine's metrics window
ACCURACY_HISTORY = 5000  # refreshes: running accuracy is cumulative, its whole course is worth seeing


@dataclass(frozen=True)
class PlotModel:
    """What a plot needs to know about one network."""

    name: str
    label: str  # e.g. "LeNet-5"
    color: str
    macs: int | None
    test_top1: float | None  # shipped accuracy, 0..1 (or the published one, see published)
    status: str
    published: bool = False  # test_top1 is torchvision's published ImageNet figure, not measured here


def fmt_ms(value: float) -> str:
    if not math.isfinite(value):
        return "\u2013"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_fps(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def pipeline_fps_text(snapshot: MetricsSnapshot | None, paused: bool = False, ended: bool = False) -> str:
    """The whole pipeline's frame rate in words: measured only while frames kept coming (see
    engine.live.metrics), so a pause or a single image reads as such, not as a falling rate."""
    if paused:
        return "paused"
    fps = snapshot.pipeline_fps if snapshot is not None else None
    if fps is None:
        return "\u2013 fps"
    return f"{fps:.1f} fps" + (" (ended)" if ended else "")


NON_BREAKING_HYPHEN = "\u2011"


def swatch(color: str, text: str) -> str:
    """A coloured square and its text, kept on one line."""
    kept = text.replace(" ", "&nbsp;").replace("-", NON_BREAKING_HYPHEN)  # "VGG-16-BN" stays whole
    return f"<span style='color:{color}'>\u25a0</span>&nbsp;{kept}"


def short_number(value: float) -> str:
    """1, 10, 1k, 2M, 1G, 0.1: an axis label."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


class DecadeAxis(pg.AxisItem):
    """A log axis labelled at powers of ten (1, 10, 100, 1k, 1M), with 2 and 5 between them.

    pyqtgraph's own log axis labels every minor tick in exponent form, which is unreadable in a
    small plot; this one labels decades only, unless the range holds fewer than two of them.
    """

    def __init__(self, orientation: str) -> None:
        super().__init__(orientation)
        self.enableAutoSIPrefix(False)
        self._label_minor = False

    def logTickValues(self, minVal, maxVal, size, stdTicks):  # noqa: N802, N803 - pyqtgraph's names
        if not (math.isfinite(minVal) and math.isfinite(maxVal)) or maxVal <= minVal:
            return []
        lo, hi = math.floor(minVal), math.ceil(maxVal)
        decades = [float(v) for v in range(lo, hi + 1) if minVal <= v <= maxVal]
        minor = [v + math.log10(m) for v in range(lo, hi) for m in (2, 5) if minVal <= v + math.log10(m) <= maxVal]
        self._label_minor = len(decades) < 2
        return [(1.0, decades), (None, minor)]

    def logTickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        out = []
        for v in values:
            is_decade = abs(v - round(v)) < 1e-6
            out.append(short_number(10 ** v * scale) if is_decade or self._label_minor else "")
        return out


class _Plot:
    """A titled plot: a rich-text header (title + legend with live numbers) over a PlotWidget."""

    def __init__(self, title: str, left: str, bottom: str, log_axis: str | None = None, tip: str = "") -> None:
        self.title = title
        axes = {log_axis: DecadeAxis(log_axis)} if log_axis else {}
        self.widget = pg.PlotWidget(background=style.PANEL, axisItems=axes)
        item = self.widget.getPlotItem()
        item.setLabel("left", left)
        item.setLabel("bottom", bottom)
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setMenuEnabled(False)
        item.hideButtons()
        # An axis (with its grid) repaints from a cached pixmap until its range or size changes:
        # redrawing the tick text every time cost about 4 ms per axis, 30 ms for a full repaint.
        for axis in item.axes.values():
            axis["item"].setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.widget.setMouseEnabled(x=False, y=False)
        self.widget.setMinimumHeight(72)
        self.header = QLabel(f"<b>{title}</b>")
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # A fixed height (three lines: the legend wraps once at 1400 px): its text changes with
        # every refresh, and a label that may change height makes Qt lay out (and repaint) the
        # whole row of plots each time.
        self.header.setFixedHeight(3 * self.header.fontMetrics().lineSpacing() + 4)
        self.header.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.header.setToolTip(tip)
        self.widget.setToolTip(tip)
        self.header_row = QHBoxLayout()
        self.header_row.setContentsMargins(4, 0, 0, 0)
        self.header_row.addWidget(Pinned(self.header), 1)  # its numbers change with every refresh
        self.container = QWidget()
        layout = QVBoxLayout(self.container)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(self.header_row)
        layout.addWidget(self.widget, 1)
        self.models: list[PlotModel] = []

    def set_models(self, models: list[PlotModel], num_classes: int) -> None:
        raise NotImplementedError

    def show_snapshot(self, snapshot: MetricsSnapshot) -> None:
        raise NotImplementedError

    def set_legend(self, parts: list[str], lead: str = "") -> None:
        text = f"<b>{self.title}</b>{('&nbsp; ' + lead) if lead else ''}<br>" + "&nbsp;&nbsp; ".join(parts)
        if self.header.text() != text:
            self.header.setText(text)

    def _curves(self, pens) -> list[pg.PlotDataItem]:
        item = self.widget.getPlotItem()
        return [item.plot([], [], pen=pen, antialias=False) for pen in pens]

    def _remove(self, curves) -> None:
        item = self.widget.getPlotItem()
        for curve in curves:
            item.removeItem(curve)


def frames_ago(count: int) -> np.ndarray:
    """x positions of the last ``count`` samples, the newest at 0."""
    return np.arange(1 - count, 1, dtype=np.float64)


class LatencyPlot(_Plot):
    def __init__(self) -> None:
        super().__init__("Forward pass", "ms", "frames (0 = now)",
                         tip="Each network's forward pass in the live pipeline, over the last 300 frames of this "
                             "source; preprocessing is in the table's Prep column. Not what `bench` measures (the "
                             "network alone, one input again and again): live, the four networks run in turn and "
                             "evict each other from the caches, the shown layer's outputs are copied out and the "
                             "window shares the interpreter, so a small network's figure is several times bench's")
        item = self.widget.getPlotItem()
        item.enableAutoRange(x=False, y=False)
        item.setXRange(-HISTORY, 0, padding=0.01)  # fixed: the axes are not redrawn every refresh
        self.curves: list[pg.PlotDataItem] = []
        self._top = 1.0

    def set_models(self, models: list[PlotModel], num_classes: int = 10) -> None:
        self._remove(self.curves)
        self.models = models
        self.curves = self._curves([pg.mkPen(m.color, width=1.5) for m in models])
        self._top = 1.0
        self.widget.getPlotItem().setYRange(0, self._top, padding=0)
        self.set_legend([swatch(m.color, m.label) for m in models], "p50 / p95")

    def show_snapshot(self, snapshot: MetricsSnapshot) -> None:
        parts, top = [], 0.0
        for m, curve in zip(self.models, self.curves):
            stats = snapshot.models.get(m.name)
            if stats is None or len(stats.forward_ms) == 0:
                curve.setData([], [])
                parts.append(swatch(m.color, m.label))
                continue
            y = stats.forward_ms
            curve.setData(frames_ago(len(y)), y)
            top = max(top, float(np.percentile(y, 99)))
            parts.append(swatch(m.color, f"{m.label} <b>{fmt_ms(stats.forward_p50_ms)}</b> / "
                                         f"{fmt_ms(stats.forward_p95_ms)}"))
        # The y range follows the 99th percentile with hysteresis: a single spike neither rescales
        # every refresh nor squashes the rest.
        if top > 0 and (top > self._top or top < 0.5 * self._top):
            self._top = top * 1.25
            self.widget.getPlotItem().setYRange(0, self._top, padding=0)
        self.set_legend(parts, "p50 / p95 ms")


class FpsPlot(_Plot):
    def __init__(self) -> None:
        super().__init__("Throughput", "frames/s (log)", "frames (0 = now)", log_axis="left",
                         tip="Solid: frames per second of the whole pipeline, all four networks, counted only "
                             "while frames kept coming (a pause or a single picture is not averaged in). "
                             "Dashed: the frames per second each network alone could sustain (1000 / its p50 "
                             "latency, preprocessing included)")
        item = self.widget.getPlotItem()
        item.setLogMode(y=True)
        item.enableAutoRange(x=False, y=False)
        item.setXRange(-HISTORY, 0, padding=0.01)
        self._decades = (0, 1)
        self.pipeline: pg.PlotDataItem | None = None
        self.curves: list[pg.PlotDataItem] = []
        self.history: dict[str, deque[tuple[int, float]]] = {}
        self.last: MetricsSnapshot | None = None
        self.parts: list[str] = []
        self.state = (False, False)  # paused, ended

    def set_models(self, models: list[PlotModel], num_classes: int = 10) -> None:
        self.last = None
        self._remove([*self.curves, *([self.pipeline] if self.pipeline else [])])
        self.models = models
        self.curves = self._curves([pg.mkPen(m.color, width=1.2, style=Qt.PenStyle.DashLine) for m in models])
        self.pipeline = self._curves([pg.mkPen(style.TEXT, width=2.5)])[0]
        self.history = {m.name: deque(maxlen=HISTORY) for m in models}
        self._decades = (0, 1)
        self.widget.getPlotItem().setYRange(*self._decades, padding=0)
        self.set_legend([swatch(m.color, m.label) for m in models])

    def show_snapshot(self, snapshot: MetricsSnapshot) -> None:
        if self.pipeline is None:
            return
        self.last = snapshot
        fps = snapshot.history_fps
        known = np.isfinite(fps) & (fps > 0)  # the first samples have no rate yet: a log axis cannot show them
        low, high = math.inf, 0.0
        if known.any():
            x = frames_ago(len(fps))[known]
            y = fps[known]
            self.pipeline.setData(x, y)
            low, high = float(y.min()), float(y.max())
        else:
            self.pipeline.setData([], [])
        parts = []
        for m, curve in zip(self.models, self.curves):
            stats = snapshot.models.get(m.name)
            if stats is None or stats.network_fps <= 0:
                curve.setData([], [])
                parts.append(swatch(m.color, m.label))
                continue
            history = self.history[m.name]
            if not history or history[-1][0] != snapshot.frames:
                history.append((snapshot.frames, stats.network_fps))
            while history and history[0][0] < snapshot.frames - HISTORY:  # the same window as the pipeline's
                history.popleft()
            xs, ys = zip(*history)
            curve.setData(np.array(xs, np.float64) - snapshot.frames, np.array(ys))
            low, high = min(low, min(ys)), max(high, max(ys))
            parts.append(swatch(m.color, f"{m.label} {fmt_fps(stats.network_fps)}"))
        if high > 0:  # whole decades: the range (and the axis) changes only when a curve leaves it
            decades = (math.floor(math.log10(low)), max(math.floor(math.log10(low)) + 1, math.ceil(math.log10(high))))
            if decades != self._decades:
                self._decades = decades
                self.widget.getPlotItem().setYRange(*decades, padding=0.02)
        self.parts = parts
        self._legend()

    def set_state(self, paused: bool, ended: bool) -> None:
        """Playing, paused or ended: the rate in the legend says which (called when it changes)."""
        if (paused, ended) != self.state:
            self.state = (paused, ended)
            if self.last is not None:
                self._legend()

    def _legend(self) -> None:
        rate = pipeline_fps_text(self.last, *self.state)
        self.set_legend(self.parts, f"<span style='color:{style.TEXT}'>\u2501 all four: <b>{rate}</b></span>")


def placeholder_text(num_classes: int) -> str:
    """What the accuracy plot asks for before a labelled frame: labels of the line-up's own classes
    (the engine does not score CIFAR-10's ten labels against ImageNet's thousand classes)."""
    if num_classes == 10:
        return ("No labels in this source: open the\nCIFAR-10 test set (or a folder of\n"
                "class-named folders) to measure accuracy.")
    return (f"No labels of these {num_classes:,} classes in this\nsource: open a folder of folders named\n"
            "after them to measure accuracy.")


class AccuracyPlot(_Plot):
    def __init__(self) -> None:
        super().__init__("Running top-1 accuracy", "%", "labelled frames",
                         tip="Top-1 accuracy over this source's labelled frames since it opened; top-5 in "
                             "brackets. The dotted line is chance (one class in ten)")
        item = self.widget.getPlotItem()
        item.setYRange(0, 100, padding=0.02)
        item.enableAutoRange(y=False)
        self.curves: list[pg.PlotDataItem] = []
        self.history: dict[str, deque[tuple[int, float]]] = {}
        self.chance = pg.InfiniteLine(angle=0, pen=pg.mkPen(style.TEXT_DIM, width=1, style=Qt.PenStyle.DotLine),
                                      label="chance", labelOpts={"color": style.TEXT_DIM, "position": 0.92})
        self.widget.addItem(self.chance)
        self.placeholder = pg.TextItem(placeholder_text(10), color=style.TEXT_DIM, anchor=(0.5, 0.5))
        self.widget.addItem(self.placeholder)
        self.placeholder.setPos(0.5, 55)
        self._waiting()

    def _waiting(self) -> None:
        item = self.widget.getPlotItem()
        item.enableAutoRange(x=False)
        item.setXRange(0, 1, padding=0)
        self._span = 0
        self.placeholder.show()

    def set_models(self, models: list[PlotModel], num_classes: int) -> None:
        self._remove(self.curves)
        self.models = models
        self.curves = self._curves([pg.mkPen(m.color, width=1.8) for m in models])
        self.history = {m.name: deque(maxlen=ACCURACY_HISTORY) for m in models}
        self.chance.setValue(100.0 / max(1, num_classes))
        self.placeholder.setText(placeholder_text(num_classes))
        self._waiting()
        self.set_legend([swatch(m.color, m.label) for m in models], "top-5 in brackets")

    def show_snapshot(self, snapshot: MetricsSnapshot) -> None:
        labelled, parts = False, []
        for m, curve in zip(self.models, self.curves):
            stats = snapshot.models.get(m.name)
            if stats is None or stats.top1 is None:
                parts.append(swatch(m.color, m.label))
                continue
            labelled = True
            history = self.history[m.name]
            if not history or history[-1][0] != stats.labelled:
                history.append((stats.labelled, 100.0 * stats.top1))
            xs, ys = zip(*history)
            curve.setData(np.array(xs), np.array(ys))
            top5 = f" ({100 * stats.top5:.0f})" if stats.top5 is not None else ""
            parts.append(swatch(m.color, f"{m.label} <b>{100 * stats.top1:.1f}</b>{top5}"))
        if labelled and self.placeholder.isVisible():
            self.placeholder.hide()
        seen = max((s.labelled for s in snapshot.models.values()), default=0)
        if labelled and seen > self._span:  # the x range doubles when full: the axis rarely changes
            self._span = max(100, 2 * self._span, seen)
            self.widget.getPlotItem().setXRange(0, self._span, padding=0.01)
        self.set_legend(parts, "top-1 % (top-5)" if labelled else "top-5 in brackets")


def label_anchors(xs: list[float], ys: list[float], lengths: list[int], x_range: tuple[float, float],
                  width_px: float, char_px: float = 6.5, y_range: tuple[float, float] = (0.0, 100.0),
                  height_px: float = 150.0, line_px: float = 15.0, slack_px: float = 2.0) -> list[tuple[float, float]]:
    """TextItem anchors for point labels (x sorted ascending) that overlap neither each other nor
    any other point, worked out in pixels. A label's box may pass the plot's edge by ``slack_px``
    (the empty margin around its text).

    A label prefers to sit above its point (below it for points high up), centred, or starting or
    ending at the point where it would leave the plot. When that place is taken it tries the other
    side, then one text line further out, and so on; if nothing is free it keeps its first choice.
    """
    per_px = (x_range[1] - x_range[0]) / max(1.0, width_px)
    y_span = (y_range[1] - y_range[0]) or 1.0
    pts = [((x - x_range[0]) / per_px, (y - y_range[0]) / y_span * height_px) for x, y in zip(xs, ys)]
    placed: list[tuple[float, float, float, float]] = []  # left, right, bottom, top in pixels (y up)
    anchors = []
    for i, ((px, py), n) in enumerate(zip(pts, lengths)):
        width = n * char_px + 6
        centred = 0.5
        if px - width / 2 < 0:
            centred = 0.0
        elif px + width / 2 > width_px:
            centred = 1.0
        first_above = ys[i] < 60
        # centred first, then ending at the point (to its left), then starting there (to its right)
        candidates = [(row, above, ax) for row in range(4) for above in (first_above, not first_above)
                      for ax in dict.fromkeys((centred, 1.0, 0.0))]
        choice = None
        for row, above, ax in candidates:
            ay = 1.2 + 1.1 * row if above else -0.2 - 1.1 * row
            left, right = px - ax * width, px - ax * width + width
            bottom, top = py + (ay - 1) * line_px, py + ay * line_px
            if bottom < -slack_px or top > height_px + slack_px or left < -slack_px or right > width_px + slack_px:
                continue
            hits_label = any(left < r and right > lft and bottom < t and top > b for lft, r, b, t in placed)
            hits_point = any(j != i and left - 5 < qx < right + 5 and bottom - 5 < qy < top + 5
                             for j, (qx, qy) in enumerate(pts))
            if not hits_label and not hits_point:
                choice = (ax, ay, left, right, bottom, top)
                break
        if choice is None:
            ay = 1.2 if first_above else -0.2
            left = px - centred * width
            choice = (centred, ay, left, left + width, py + (ay - 1) * line_px, py + ay * line_px)
        placed.append(choice[2:])
        anchors.append(choice[:2])
    return anchors


class TradeoffPlot(_Plot):
    """Accuracy against cost, one labelled point per network: the trade-off the comparison is about."""

    def __init__(self) -> None:
        super().__init__("Accuracy vs cost", "top-1 %", "MACs per image (log)", log_axis="bottom",
                         tip="Each network's accuracy against its cost: the trade-off the survey describes. "
                             "Filled: running top-1 on this source, the shipped test top-1 or (\u25c6) torchvision's "
                             "published ImageNet top-1 (not measured here); hollow (\u25a1): no accuracy yet "
                             "(untrained, or weights without a test score on a source without labels)")
        item = self.widget.getPlotItem()
        item.setLogMode(x=True)
        item.setYRange(0, 100, padding=0.05)
        item.enableAutoRange(y=False)
        self.points = pg.ScatterPlotItem(size=13, pxMode=True)
        item.addItem(self.points)
        self.labels: list[pg.TextItem] = []
        self.num_classes = 10
        self.x_mode = 0
        self.chance = pg.InfiniteLine(angle=0, pen=pg.mkPen(style.TEXT_DIM, width=1, style=Qt.PenStyle.DotLine))
        item.addItem(self.chance)
        self.mode_box = QComboBox()
        self.mode_box.addItems(["x: MACs", "x: latency"])
        self.mode_box.setToolTip("What the cost axis measures: the static count of multiply-accumulates, "
                                 "or the measured latency p50")
        self.mode_box.currentIndexChanged.connect(self._set_mode)
        self.header_row.addWidget(self.mode_box, 0, Qt.AlignmentFlag.AlignTop)
        self._last: MetricsSnapshot | None = None

    def set_models(self, models: list[PlotModel], num_classes: int) -> None:
        for label in self.labels:
            self.widget.removeItem(label)
        self.models, self.num_classes = models, num_classes
        self.labels = [pg.TextItem(m.label, color=m.color) for m in models]
        for label in self.labels:
            self.widget.addItem(label)
        self.chance.setValue(100.0 / max(1, num_classes))
        self._last = None
        self._draw(None)

    def _set_mode(self, mode: int) -> None:
        self.x_mode = mode
        self.widget.getPlotItem().setLabel("bottom", "MACs per image (log)" if mode == 0 else "latency p50, ms (log)")
        self._draw(self._last)

    def show_snapshot(self, snapshot: MetricsSnapshot) -> None:
        self._last = snapshot
        self._draw(snapshot)

    def _draw(self, snapshot: MetricsSnapshot | None) -> None:
        points = []  # (x, y, measured, model, label, symbol)
        sources = set()
        for m, label in zip(self.models, self.labels):
            stats = snapshot.models.get(m.name) if snapshot is not None else None
            if self.x_mode == 0:
                x = float(m.macs) if m.macs else None
            else:
                x = stats.p50_ms if stats is not None and stats.frames else None
            if x is None or not math.isfinite(x) or x <= 0:
                label.hide()
                continue
            if stats is not None and stats.top1 is not None:
                y, measured, symbol = 100 * stats.top1, True, "o"
                sources.add("running top-1 on this source")
            elif m.test_top1 is not None and m.published:
                y, measured, symbol = 100 * m.test_top1, True, "d"
                sources.add("\u25c6 published top-1")  # the tooltip: whose, and that it is not measured here
            elif m.test_top1 is not None:
                y, measured, symbol = 100 * m.test_top1, True, "o"
                sources.add("test top-1 from the custom file's metrics JSON" if m.status == "custom"
                            else "shipped test top-1")
            else:
                y, measured, symbol = 100.0 / max(1, self.num_classes), False, "s"
            points.append((x, y, measured, m, label, symbol))
        points.sort(key=lambda p: p[0])
        xs = np.log10(np.array([p[0] for p in points])) if points else np.array([])
        self.points.setData(x=xs, y=[p[1] for p in points],
                            brush=[pg.mkBrush(p[3].color) if p[2] else pg.mkBrush(style.PANEL) for p in points],
                            pen=[pg.mkPen(p[3].color, width=2) for p in points],
                            symbol=[p[5] for p in points])
        if len(xs):
            lo, hi = float(xs.min()), float(xs.max())
            pad = max(0.35, 0.12 * (hi - lo))
            self.widget.getPlotItem().setXRange(lo - pad, hi + pad, padding=0)
            # the name alone: the axis gives the cost, the tooltip the figures
            texts = [m.label for _x, _y, _measured, m, _label, _symbol in points]
            box = self.widget.getPlotItem().getViewBox()
            # the labels' own size in pixels: a fixed guess let a label high up lose the top of its
            # letters to the edge of a short plot. A TextItem's box includes an empty margin around
            # the text, which may pass the edge.
            items = [p[4].textItem for p in points]
            sizes = [item.boundingRect() for item in items]
            margin = max((item.document().documentMargin() for item in items), default=0.0)
            char_px = max((r.width() - 2 * margin) / max(1, len(t)) for r, t in zip(sizes, texts)) if sizes else 6.5
            line_px = max((r.height() for r in sizes), default=15.0)
            # room above the highest point for one label, however short the plot: otherwise the
            # names of the two most accurate networks, side by side up there, had nowhere to go
            # but far below their points
            y_lo, top = -5.0, max(p[1] for p in points)
            room = min(0.45, (1.25 * line_px + 2) / max(40.0, box.height()))
            y_hi = max(105.0, (top - room * y_lo) / (1 - room))
            self.widget.getPlotItem().setYRange(y_lo, y_hi, padding=0)
            anchors = label_anchors(list(xs), [p[1] for p in points], [len(t) for t in texts],
                                    (lo - pad, hi + pad), max(100.0, box.width()), char_px=char_px,
                                    y_range=(y_lo, y_hi), height_px=max(40.0, box.height()), line_px=line_px,
                                    slack_px=max(2.0, margin - 1))
            for (x, y, measured, m, label, _symbol), text, anchor in zip(points, texts, anchors):
                cost = f"{human_count(x)} MACs" if self.x_mode == 0 else f"{fmt_ms(x)} ms p50"
                label.setToolTip(f"{m.label}: {cost}, " + (f"top-1 {y:.1f}%" if measured else "no accuracy"))
                label.setText(text)
                label.setAnchor(anchor)
                label.setPos(math.log10(x), y)
                label.show()
        hollow = any(not p[2] for p in points)
        note = " and ".join(sorted(sources)) if sources else "none measured yet"
        # a non-breaking space after each dot: where the line wraps, the dot starts the next line
        # rather than hanging at the end of this one. Short parts: longer ones did not fit the header's
        # two lines on the ImageNet line-up at 1366x768 (the tooltip says what each means).
        # Within a part, non-breaking spaces too; the dotted line's key is three dots (\u22ef).
        self.set_legend([f"y: {note}" + (" \u00b7\u00a0\u25a1\u00a0no\u00a0top-1\u00a0yet" if hollow else "")
                         + " \u00b7\u00a0\u22ef\u00a0chance"])


class LivePlots(QWidget):
    """The four plots in a row."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.latency, self.fps, self.accuracy, self.tradeoff = LatencyPlot(), FpsPlot(), AccuracyPlot(), TradeoffPlot()
        self._models: list[PlotModel] = []
        self._classes = 10
        self._frames, self._source = 0, None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        for plot in (self.latency, self.fps, self.accuracy, self.tradeoff):
            layout.addWidget(plot.container, 1)

    @property
    def all(self) -> tuple[_Plot, ...]:
        return (self.latency, self.fps, self.accuracy, self.tradeoff)

    def set_models(self, models: list[PlotModel], num_classes: int) -> None:
        self.remember(models, num_classes)
        for plot in self.all:
            plot.set_models(models, num_classes)

    def remember(self, models: list[PlotModel], num_classes: int) -> None:
        """The line-up the plots show (the window fills the plots one by one, spread over frames)."""
        self._models, self._classes = models, num_classes
        self._frames, self._source = 0, None

    def reset(self) -> None:
        """Empty every plot (a new source, or Reset): their histories belong to the old statistics."""
        self.set_models(self._models, self._classes)

    def show_snapshot(self, snapshot: MetricsSnapshot) -> None:
        if snapshot.frames < self._frames or (self._source is not None and snapshot.source != self._source):
            self.reset()  # the engine started the statistics over
        self._frames, self._source = snapshot.frames, snapshot.source
        for plot in self.all:
            plot.show_snapshot(snapshot)
