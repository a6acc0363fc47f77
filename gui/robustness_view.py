"""The Robustness tab: one perturbation applied live to what all the networks see, and the
robustness bench's curves (top-1 against severity, one small plot per perturbation).

The perturbations and their severities are the engine's (:mod:`engine.probes.perturb`, CIFAR-10-C's for
the corruptions it defines); this view only chooses one and draws what the engine measured.
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
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.api import PERTURBATION_KINDS, Perturbation
from gui import style

LABELS = {"gaussian_noise": "Gaussian noise", "gaussian_blur": "Gaussian blur", "brightness": "Brightness",
          "contrast": "Contrast", "jpeg": "JPEG quality", "pixelate": "Pixelate", "rotate": "Rotation",
          "occlude": "Occluding square"}


class RobustnessView(QWidget):
    perturbation_changed = Signal(object)  # Perturbation or None
    bench_requested = Signal(int)  # images

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.center = (0.5, 0.5)
        self.kind = QComboBox(self)
        self.kind.addItem("No perturbation", "")
        for kind in PERTURBATION_KINDS:
            self.kind.addItem(LABELS.get(kind, kind), kind)
        self.kind.setToolTip("What is done to every frame before the networks see it; all of them see the same")
        self.severity = QSlider(Qt.Orientation.Horizontal, self)
        self.severity.setRange(0, 5)
        self.severity.setPageStep(1)
        self.severity.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.severity.setFixedWidth(140)
        self.severity.setToolTip("Severity 0 (the clean frame, bit for bit) to 5; CIFAR-10-C's levels for the "
                                 "corruptions it defines")
        self.severity_label = QLabel("severity 0", self)
        self.severity_label.setMinimumWidth(150)
        self.kind.currentIndexChanged.connect(self._changed)
        self.severity.valueChanged.connect(self._changed)
        self.hint = QLabel("", self)
        self.hint.setObjectName("dim")
        self.hint.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        live = QHBoxLayout()
        title = QLabel("<b>Perturb</b>", self)
        for w in (title, self.kind, self.severity, self.severity_label):
            live.addWidget(w)
        live.addWidget(self.hint, 1)

        self.images = QSpinBox(self)
        self.images.setRange(50, 10000)
        self.images.setSingleStep(250)
        self.images.setValue(1000)
        self.images.setSuffix(" images")
        self.images.setToolTip("Test pictures spread over the classes; every perturbation at severities 1-5")
        self.run_button = QPushButton("Run the bench on CIFAR-10\u2026", self)
        self.run_button.setToolTip("Top-1 of every network under each perturbation at each severity, on the "
                                   "CIFAR-10 test set (the source pauses meanwhile); the same as "
                                   "python main.py robustness")
        self.run_button.clicked.connect(lambda: self.bench_requested.emit(self.images.value()))
        self.summary = QLabel("Not run yet: the curves appear here.", self)
        self.summary.setObjectName("dim")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bench = QHBoxLayout()
        title = QLabel("<b>Bench</b>", self)
        for w in (title, self.images, self.run_button):
            bench.addWidget(w)
        bench.addWidget(self.summary, 1)

        self.plots: dict[str, pg.PlotWidget] = {}
        grid_widget = QWidget(self)
        grid = QGridLayout(grid_widget)
        grid.setContentsMargins(0, 0, 0, 0)
        for i, kind in enumerate(PERTURBATION_KINDS):
            plot = pg.PlotWidget(background=style.PANEL)
            item = plot.getPlotItem()
            item.setTitle(LABELS.get(kind, kind), size="9pt", color=style.TEXT)
            item.setLabel("left", "top-1 %")
            item.setLabel("bottom", "severity")
            item.showGrid(x=True, y=True, alpha=0.25)
            item.setMenuEnabled(False)
            item.hideButtons()
            item.setXRange(0, 5, padding=0.05)
            item.setYRange(0, 100, padding=0.02)
            plot.setMouseEnabled(x=False, y=False)
            plot.setMinimumSize(220, 160)
            self.plots[kind] = plot
            grid.addWidget(plot, i // 4, i % 4)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(grid_widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 2)
        layout.addLayout(live)
        layout.addLayout(bench)
        layout.addWidget(scroll, 1)
        self._changed()

    @property
    def perturbation(self) -> Perturbation | None:
        kind = self.kind.currentData()
        if not kind or self.severity.value() == 0:
            return None
        return Perturbation(kind, self.severity.value(), center=self.center)

    def _changed(self) -> None:
        kind = self.kind.currentData()
        value = self.severity.value()
        self.severity.setEnabled(bool(kind))
        p = Perturbation(kind, value, center=self.center) if kind else None
        if p is None or value == 0:
            self.severity_label.setText("severity 0: the clean frame")
        else:
            self.severity_label.setText(f"severity {value}: {_parameter(p)}")
        self.hint.setText("Click or drag on a network's input to move the square." if kind == "occlude" else
                          "A panel says \u201cflipped\u201d when its answer differs from the clean frame's."
                          if kind else "")
        self.perturbation_changed.emit(self.perturbation)

    def move_occluder(self, fx: float, fy: float) -> bool:
        """Centre the occluding square at (fx, fy), fractions of the picture; False when the
        perturbation is another one."""
        if self.kind.currentData() != "occlude":
            return False
        self.center = (min(1.0, max(0.0, fx)), min(1.0, max(0.0, fy)))
        self.perturbation_changed.emit(self.perturbation)
        return True

    def set_busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        if busy:
            self.summary.setText("Running\u2026 the source is paused meanwhile; progress and Cancel are in the "
                                 "status bar.")

    def show_result(self, result, labels: dict[str, str], colors: dict[str, str]) -> None:
        """Curves of a :class:`~engine.studies.robustness.RobustnessResult` (labels, colours by network)."""
        for kind, plot in self.plots.items():
            plot.getPlotItem().clear()
            if kind not in result.kinds:
                continue
            for name in result.models:
                ys = [100 * v for v in result.curve(name, kind)]  # clean first
                xs = [0] + list(result.severities)
                ok = [(x, y) for x, y in zip(xs, ys) if not math.isnan(y)]
                if ok:
                    plot.plot(np.array([x for x, _ in ok], float), np.array([y for _, y in ok]),
                              pen=pg.mkPen(colors.get(name, style.TEXT), width=2), symbol="o", symbolSize=4,
                              symbolBrush=colors.get(name, style.TEXT))
        parts = []
        for name in result.models:
            clean, mean = 100 * result.clean[name], 100 * result.mean_top1(name)
            parts.append(f"<span style='color:{colors.get(name, style.TEXT)}'><b>{labels.get(name, name)}</b></span> "
                         f"clean {clean:.1f}%, under corruption {mean:.1f}% ({100 * result.relative(name):.0f}% "
                         f"of clean)")
        self.summary.setText(f"{result.images} images, {result.seconds:.0f} s \u00b7 " + " \u00b7 ".join(parts))


def _parameter(p: Perturbation) -> str:
    value = p.parameter
    if value is None:
        return ""
    return {"gaussian_noise": f"noise \u03c3 {value:g}", "gaussian_blur": f"blur \u03c3 {value:g} px at 32 px",
            "brightness": f"+{value:g} brightness", "contrast": f"contrast \u00d7{value:g}",
            "jpeg": f"JPEG quality {value:g}", "pixelate": f"pixelate to {value:g}\u00d7",
            "rotate": f"rotate {value:g}\u00b0", "occlude": f"square {100 * value:.0f}% of the side"}.get(p.kind, "")
