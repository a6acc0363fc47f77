"""The Analysis tab: the survey's claims measured on this machine, as figures and three verdicts.

It shows an immutable :class:`~engine.api.Analysis` (from the engine's ``analyze`` job, or its
cache); it measures nothing itself. The verdict sentences come from the engine, computed from the
numbers. The figures are those of ``python main.py analyze --out``: (a) accuracy against MACs,
(b) time per image against batch size, (c) memory against batch size, (d) latency against MACs for
networks and for layers, (e) accuracy per parameter, (f) accuracy against speed with its upper
envelope, (g) one network's layers, time share beside MAC share.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.api import (
    Analysis,
    LineupAnalysis,
    NetworkAnalysis,
    backend_glyph,
    backend_label,
    backend_marker,
    backends,
    pareto_front,
)
from gui import lineup_plots, style

# matplotlib's marker letters (a backend's registry marker) as pyqtgraph's symbols ("t1" is ▲, "t" ▼)
PG_SYMBOLS = {"o": "o", "^": "t1", "v": "t", "s": "s", "D": "d", "x": "x", "+": "+", "*": "star", "p": "p", "h": "h"}


def backend_sets() -> list[tuple[str, tuple[str, ...]]]:
    """The analysis's backend choices: torch eager alone, with each other backend (its short name),
    or with all of them."""
    others = [b for b in backends() if not b.reference]
    sets = [("torch", ())] + [(f"+ {b.short}", (b.name,)) for b in others]
    return sets + ([("+ all", tuple(b.name for b in others))] if len(others) > 1 else [])


LINEUPS = (("the four", "four"), ("+ the survey's 8", "paper"), ("+ 6 after it", "modern"))
# the axes that a line-up draws in other units than the four's: (left, bottom)
LINEUP_AXES = {"a": ("top-1 % (published)", "G MACs per image"), "d": ("ms, batch 1", "G MACs per image"),
               "f": ("top-1 % (published)", "ms, batch 1")}
CAPTIONS = {
    "a": "(a) Top-1 against MACs (log); dot area \u221d parameters; \u25c6 published ImageNet top-1",
    "b": "(b) ms per image against batch size, log-log (p50, warm, network alone)",
    "c": "(c) Memory against batch: solid, what the process took; dashed, layer outputs counted",
    "d": "(d) Batch-1 latency against MACs: networks, a marker per backend, and least-squares lines",
    "d2": "(d) Every layer alone: ms against its MACs, log-log, coloured by network",
    "e": "(e) Top-1 points per million parameters (log)",
    "f": "(f) Top-1 against images/s at batch 1; line: the upper envelope",
    "g": "(g) Layers of the chosen network: time share (bar) beside MAC share (outline), %",
}


def _plot(left: str, bottom: str, log_x: bool = False, log_y: bool = False) -> pg.PlotWidget:
    widget = pg.PlotWidget(background=style.PANEL)
    item = widget.getPlotItem()
    item.setLabel("left", left)
    item.setLabel("bottom", bottom)
    item.showGrid(x=True, y=True, alpha=0.25)
    item.setMenuEnabled(False)
    item.hideButtons()
    item.setLogMode(x=log_x, y=log_y)
    widget.setMouseEnabled(x=False, y=False)
    widget.setMinimumSize(300, 190)
    item.getViewBox().setDefaultPadding(0.12)  # room for the labels beside the outermost points
    return widget


def _pos(value: float, log: bool) -> float:
    return math.log10(value) if log else value


class AnalysisView(QWidget):
    measure_requested = Signal(int, str, bool, object)  # max batch, precision, fresh, other backends (tuple)
    export_requested = Signal()
    cached_requested = Signal(int, str, object)  # max batch, precision, other backends: show the cached result

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.analysis: Analysis | None = None
        self.measure_button = QPushButton("Measure", self)
        self.measure_button.setToolTip("Measure every network of this profile here: time per batch size, memory, "
                                       "time per layer. The source pauses meanwhile, for a clean measurement, "
                                       "and plays on afterwards")
        self.measure_button.clicked.connect(self._measure)
        self.max_batch = QSpinBox(self)
        self.max_batch.setRange(1, 512)
        self.max_batch.setValue(64)
        self.max_batch.setPrefix("batches 1 to ")
        self.max_batch.setToolTip("The largest batch size measured: 1, 2, 4, ... up to this")
        self.max_batch.valueChanged.connect(self._setup_changed)
        self.precision = QComboBox(self)
        self.precision.addItems(["fp32", "bf16"])
        self.precision.setToolTip("fp32 compares operations like with like; bf16 where the hardware has it")
        self.precision.currentTextChanged.connect(self._setup_changed)
        self.backends = QComboBox(self)
        for text, chosen in backend_sets():
            self.backends.addItem(text, chosen)
        self.backends.setToolTip("The backends measured: torch eager always (with the time of every layer), and "
                                 "others beside it (" + ", ".join(f"{b.short}: {b.label}" for b in backends()
                                                                  if not b.reference) +
                                 "), each with its own fit in (d) and its own verdicts. torch.compile first "
                                 "compiles each network: seconds each")
        self.backends.currentIndexChanged.connect(lambda _i: self._setup_changed())
        self.lineup_box = QComboBox(self)
        for text, lineup in LINEUPS:
            self.lineup_box.addItem(text, lineup)
        self.lineup_box.setToolTip("imagenet: the four alone, or beside the survey's networks that torchvision builds "
                                   "(GoogLeNet, Inception-v3, ResNet-18 to 152, VGG-19) or six from after it, with "
                                   "torchvision's published top-1; about 10 minutes on a 2-core CPU, then cached")
        self.lineup_box.currentIndexChanged.connect(lambda _i: self._setup_changed())
        self.export_button = QPushButton("Export report\u2026", self)
        self.export_button.setToolTip("Write the figures (PNG), the data (CSV, JSON) and report.html into a folder")
        self.export_button.clicked.connect(self.export_requested.emit)
        self.export_button.setEnabled(False)
        self.meta = QLabel("Not measured yet on this machine: Measure takes a minute or two.", self)
        self.meta.setObjectName("dim")
        self.meta.setWordWrap(True)
        self.meta.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top = QHBoxLayout()
        for w in (self.measure_button, self.lineup_box, self.max_batch, self.precision, self.backends,
                  self.export_button):
            top.addWidget(w)
        top.addWidget(self.meta, 1)

        self.verdicts = QLabel("", self)
        self.verdicts.setTextFormat(Qt.TextFormat.RichText)
        self.verdicts.setWordWrap(True)
        self.verdicts.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.verdicts.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.verdicts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.plots = {
            "a": _plot("top-1 %", "MACs per image", log_x=True),
            "b": _plot("ms per image", "batch size", log_x=True, log_y=True),
            "c": _plot("MB", "batch size", log_x=True, log_y=True),
            "d": _plot("ms, batch 1", "M MACs per image"),
            "d2": _plot("ms, alone", "MACs of the layer", log_x=True, log_y=True),
            "e": _plot("top-1 per M params", ""),
            "f": _plot("top-1 %", "images/s, batch 1", log_x=True),
            "g": _plot("", "% of the network"),
        }
        self.layer_network = QComboBox(self)
        self.layer_network.setToolTip("Whose layers (g) shows")
        self.layer_network.currentIndexChanged.connect(lambda _i: self._draw_layers())
        grid_widget = QWidget(self)
        grid = QGridLayout(grid_widget)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(10)
        self.captions: dict[str, QLabel] = {}
        self._boxes: dict[str, QVBoxLayout] = {}
        self._grid = grid
        for i, key in enumerate(("a", "b", "c", "d", "d2", "e", "f", "g")):
            box = QVBoxLayout()
            caption = QLabel(CAPTIONS[key])
            caption.setObjectName("dim")
            caption.setWordWrap(True)
            caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            self.captions[key] = caption
            if key == "g":
                row = QHBoxLayout()
                row.addWidget(caption, 1)
                row.addWidget(self.layer_network)
                box.addLayout(row)
            else:
                box.addWidget(caption)
            box.addWidget(self.plots[key], 1)
            grid.addLayout(box, i // 4, i % 4)
            self._boxes[key] = box
        for column in range(4):
            grid.setColumnStretch(column, 1)
        inner = QWidget(self)
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 0, 0)
        inner_layout.addWidget(self.verdicts)
        inner_layout.addWidget(grid_widget, 1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(inner)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 2)
        layout.addLayout(top)
        layout.addWidget(scroll, 1)

    # -- requests ----------------------------------------------------------------------------------

    def _measure(self) -> None:
        self.measure_requested.emit(self.max_batch.value(), self.precision.currentText(), self.analysis is not None
                                    and self._matches(self.analysis), self.other_backends)

    @property
    def other_backends(self) -> tuple[str, ...]:
        """The backends besides torch eager that the set-up asks for."""
        return tuple(self.backends.currentData() or ())

    @property
    def lineup(self) -> str:
        """The line-up the set-up asks for: four, paper or modern."""
        return self.lineup_box.currentData() or "four"

    def _matches(self, analysis) -> bool:
        if isinstance(analysis, LineupAnalysis) or self.lineup != "four":
            return isinstance(analysis, LineupAnalysis) and analysis.lineup == self.lineup
        return (analysis.max_batch == self.max_batch.value() and analysis.precision == self.precision.currentText()
                and tuple(v.backend for v in analysis.backends) == self.other_backends)

    def _setup_changed(self) -> None:
        for w in (self.max_batch, self.precision, self.backends):  # a line-up has its own batch sizes
            w.setEnabled(self.lineup == "four")
        self.cached_requested.emit(self.max_batch.value(), self.precision.currentText(), self.other_backends)

    def set_busy(self, busy: bool) -> None:
        self.measure_button.setEnabled(not busy)
        if busy:
            self.meta.setText("Measuring\u2026 the source is paused meanwhile (two jobs on one CPU would "
                              "measure each other); progress and Cancel are in the status bar.")

    def clear(self, text: str = "Not measured yet with these settings: Measure takes a minute or two.") -> None:
        self.analysis = None
        self.measure_button.setText("Measure")
        self.export_button.setEnabled(False)
        self.meta.setText(text)
        self.verdicts.setText("")
        for widget in self.plots.values():
            widget.getPlotItem().clear()
        self.layer_network.clear()

    # -- showing -----------------------------------------------------------------------------------

    def show_analysis(self, a: Analysis | LineupAnalysis | None) -> None:
        if a is None:
            self.clear()
            return
        self.analysis = a
        self.measure_button.setText("Re-measure")
        self.export_button.setEnabled(True)
        self._lineup_mode(isinstance(a, LineupAnalysis))
        if isinstance(a, LineupAnalysis):
            self._show_lineup(a)
            return
        when = f"cached from {a.created}" if a.cached else f"measured {a.created} in {a.seconds:.0f} s"
        notes = "".join(f" {n}." for n in a.notes)
        self.meta.setText(f"{a.profile}, {a.device} with {a.threads} thread{'s' if a.threads != 1 else ''}, "
                          f"{a.precision}, batch 1 to {a.max_batch}; {when}.{notes}")
        heads = {True: (style.GOOD, "Holds"), False: (style.BAD, "Does not hold"), None: (style.WARN, "Not judged")}
        lines = [f'<span style="color:{heads[v.holds][0]}"><b>{heads[v.holds][1]}:</b></span> {_escape(v.text)}'
                 for v in a.verdicts]
        for view in a.backends:  # the verdicts on time again, on each other backend
            lines += [f'<b>On {_escape(backend_label(view.backend))}:</b> <span style="color:{heads[v.holds][0]}">'
                      f'<b>{heads[v.holds][1]}:</b></span> {_escape(v.text)}' for v in view.verdicts[:2]]
            lines += [f"<b>On {_escape(backend_label(view.backend))}:</b> {_escape(n)}" for n in view.notes]
        self.verdicts.setText("<br>".join(lines))
        self._draw(a)
        current = self.layer_network.currentText()
        self.layer_network.blockSignals(True)
        self.layer_network.clear()
        self.layer_network.addItems([n.label for n in a.networks])
        if current in [n.label for n in a.networks]:
            self.layer_network.setCurrentText(current)
        self.layer_network.blockSignals(False)
        self._draw_layers()

    def _lineup_mode(self, on: bool) -> None:
        """Six figures for a line-up (no layers: (d) right and (g) hidden), in its units."""
        for key in ("d2", "g"):
            self.plots[key].setVisible(not on)
            self.captions[key].setVisible(not on)
        self.layer_network.setVisible(not on)
        # six figures in three columns, or the four's eight in four
        keys = ("a", "b", "c", "d", "e", "f") if on else ("a", "b", "c", "d", "d2", "e", "f", "g")
        columns = 3 if on else 4
        for box in self._boxes.values():
            self._grid.removeItem(box)
        for i, key in enumerate(keys):
            self._grid.addLayout(self._boxes[key], i // columns, i % columns)
        for column in range(4):
            self._grid.setColumnStretch(column, 1 if column < columns else 0)
        defaults = {"a": ("top-1 %", "MACs per image"), "d": ("ms, batch 1", "M MACs per image"),
                    "f": ("top-1 %", "images/s, batch 1")}
        for key, (left, bottom) in (LINEUP_AXES if on else defaults).items():
            self.plots[key].getPlotItem().setLabel("left", left)
            self.plots[key].getPlotItem().setLabel("bottom", bottom)
        for key in "abcdef":
            self.captions[key].setText(lineup_plots.CAPTIONS[key] if on else CAPTIONS[key])

    def _show_lineup(self, r: LineupAnalysis) -> None:
        how = "every network cached" if r.cached else f"measured in {r.seconds:.0f} s"
        self.meta.setText(f"The {r.lineup} line-up: {len(r.entries)} networks, imagenet, {r.device} with {r.threads} "
                          f"thread{'s' if r.threads != 1 else ''}, {r.precision}, batch 1 to {r.max_batch}; {how}. "
                          "The four in colour, the rest grey.")
        self.verdicts.setText(lineup_plots.verdicts_html(r, _escape))
        lineup_plots.draw_lineup(self.plots, r)

    def _color(self, a: Analysis, net: NetworkAnalysis) -> str:
        return style.model_color([n.name for n in a.networks].index(net.name))

    def _draw(self, a: Analysis) -> None:
        for widget in self.plots.values():
            widget.getPlotItem().clear()
        nets = a.networks
        # (a) accuracy against MACs, dot area proportional to parameters
        scored = [n for n in nets if n.top1 is not None]
        biggest = max((n.params for n in scored), default=1)
        for n in scored:
            size = 8 + 34 * math.sqrt(n.params / biggest)
            self._point("a", n.macs, 100 * n.top1, self._color(a, n), n.label, size,
                        "d" if n.top1_kind == "published" else "o", log_x=True)
        # (b), (c) against batch size
        for n in nets:
            color = self._color(a, n)
            batches = np.array([p.batch for p in n.batches], float)
            self.plots["b"].plot(batches, [p.ms_per_image_p50 for p in n.batches], pen=pg.mkPen(color, width=2),
                                 symbol="o", symbolSize=5, symbolBrush=color, name=n.label)
            peaks = [p.peak_mb for p in n.batches]
            if all(v is not None and v > 0 for v in peaks):
                self.plots["c"].plot(batches, peaks, pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5,
                                     symbolBrush=color)
            self.plots["c"].plot(batches, [max(p.activation_mb, 1e-3) for p in n.batches],
                                 pen=pg.mkPen(color, width=1, style=Qt.PenStyle.DashLine))
        # (d) latency against MACs with the fit; layers log-log
        for n in nets:
            self._point("d", n.macs / 1e6, n.latency_ms, self._color(a, n), n.label, 11, "o")
            layers = [x for x in n.layers if x.macs > 0 and x.ms > 0]
            if layers:
                self.plots["d2"].plot([x.macs for x in layers], [x.ms for x in layers], pen=None, symbol="o",
                                      symbolSize=5, symbolBrush=self._color(a, n), symbolPen=None)
        fits = [("torch", a.network_fit, backend_glyph("torch"))]
        for view in a.backends:  # each backend's points with its registry marker
            fits.append((view.backend, view.network_fit, backend_glyph(view.backend)))
            symbol = PG_SYMBOLS.get(backend_marker(view.backend), "o")
            for n in view.networks:
                self.plots["d"].plot([n.macs / 1e6], [n.latency_ms], pen=None, symbol=symbol, symbolSize=10,
                                     symbolBrush=pg.mkBrush(self._color(a, n)), symbolPen=pg.mkPen(style.TEXT_DIM))
        dashes = (Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine, Qt.PenStyle.DashDotDotLine,
                  Qt.PenStyle.SolidLine)
        r2_lines = []
        for (backend, fit, shape), dash in zip(fits, dashes):
            if fit is None:
                continue
            xs = np.linspace(0, max(n.macs for n in nets) * 1.05, 20)
            self.plots["d"].plot(xs / 1e6, fit.predict(xs), pen=pg.mkPen(style.TEXT_DIM, width=1, style=dash))
            r2_lines.append(f"{shape} {backend_label(backend)}: R\u00b2 = {fit.r2:.2f}" if a.backends else
                            f"R\u00b2 = {fit.r2:.2f}")
        if r2_lines:
            self._text("d", "<br>".join(r2_lines), 0.02, 0.98)
        if a.layer_fit is not None:
            self._text("d2", f"R\u00b2 = {a.layer_fit.r2:.2f} (linear)", 0.02, 0.98)
        # (e) density bars
        dense = [n for n in nets if n.density is not None]
        if dense:
            bars = pg.BarGraphItem(x=np.arange(len(dense)), height=[math.log10(n.density) for n in dense], width=0.6,
                                   brushes=[self._color(a, n) for n in dense], y0=0)
            self.plots["e"].addItem(bars)
            self.plots["e"].getAxis("bottom").setTicks([[(i, n.label) for i, n in enumerate(dense)]])
            self.plots["e"].getAxis("left").setTicks([[(k, f"{10 ** k:g}") for k in range(0, 5)]])
            for i, n in enumerate(dense):
                label = pg.TextItem(f"{n.density:.0f}", color=style.TEXT, anchor=(0.5, 1.1))
                label.setPos(i, math.log10(n.density))
                self.plots["e"].addItem(label)
        # (f) accuracy against speed, with the upper envelope
        for n in scored:
            self._point("f", 1000 / n.latency_ms, 100 * n.top1, self._color(a, n), n.label, 11,
                        "d" if n.top1_kind == "published" else "o", log_x=True)
        front = pareto_front(nets)
        if len(front) >= 2:
            xs = [1000 / n.latency_ms for n in front]
            ys = [100 * n.top1 for n in front]
            self.plots["f"].plot(xs, ys, pen=pg.mkPen(style.TEXT_DIM, width=1))

    def _point(self, key: str, x: float, y: float, color: str, text: str, size: float, symbol: str,
               log_x: bool = False) -> None:
        widget = self.plots[key]
        widget.plot([x], [y], pen=None, symbol=symbol, symbolSize=size, symbolBrush=pg.mkBrush(color),
                    symbolPen=pg.mkPen(style.TEXT_DIM))
        label = pg.TextItem(text, color=color, anchor=(0, 1.2))
        label.setPos(_pos(x, log_x), y)
        widget.addItem(label)

    def _text(self, key: str, text: str, fx: float, fy: float) -> None:
        label = pg.LabelItem(text, color=style.TEXT_DIM, size="8pt")
        label.setParentItem(self.plots[key].getPlotItem().getViewBox())
        label.anchor(itemPos=(fx, fy), parentPos=(fx, fy))

    def _draw_layers(self) -> None:
        widget = self.plots["g"]
        widget.getPlotItem().clear()
        a = self.analysis
        if a is None or self.layer_network.currentIndex() < 0:
            return
        net = a.networks[self.layer_network.currentIndex()]
        layers = [x for x in net.layers if x.ms > 0]
        total_ms = sum(x.ms for x in layers) or 1.0
        total_macs = sum(x.macs for x in layers) or 1
        ys = -np.arange(len(layers), dtype=float)
        color = self._color(a, net)
        widget.addItem(pg.BarGraphItem(x0=0, y=ys, height=0.7, width=[100 * x.ms / total_ms for x in layers],
                                       brush=color))
        widget.addItem(pg.BarGraphItem(x0=0, y=ys, height=0.7, width=[100 * x.macs / total_macs for x in layers],
                                       brush=None, pen=pg.mkPen(style.TEXT, width=1)))
        step = max(1, len(layers) // 12)
        widget.getAxis("left").setTicks([[(float(ys[i]), layers[i].name.split(".")[-1])
                                          for i in range(0, len(layers), step)]])
        widget.setToolTip(f"{net.label}: layers sum to {net.layers_ms:.2f} ms, the whole pass takes "
                          f"{net.forward_ms:.2f} ms (ratio {net.layers_ratio:.2f})\n" +
                          "\n".join(f"{x.name}: {x.ms:.3f} ms, {100 * x.ms / total_ms:.1f}% of the time, "
                                    f"{100 * x.macs / total_macs:.1f}% of the MACs" for x in layers[:40]))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
