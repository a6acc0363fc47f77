"""A line-up's analysis in the Analysis tab: the survey's six figures with this machine's numbers,
the comparison's four in their colours and the rest of the line-up grey, and the verdicts with
their statistic, interval and number of networks. It draws an immutable LineupAnalysis from the
engine; it measures nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg

from engine.api import LineupAnalysis, NetworkAnalysis, pareto_front
from gui import style

GREY = "#6d737c"
CAPTIONS = {
    "a": "(a) Top-1 (published) against G MACs (log); dot area \u221d parameters",
    "b": "(b) ms per image against batch size, log-log (p50, warm, network alone)",
    "c": "(c) Memory the process took against batch size, log-log",
    "d": "(d) Batch-1 latency against G MACs, with the least-squares line",
    "e": "(e) Accuracy density: published top-1 per million parameters (log)",
    "f": "(f) Top-1 against batch-1 ms (log), with the hyperbola fitted to the front",
}


def _style(r: LineupAnalysis, n: NetworkAnalysis) -> tuple[str, bool]:
    four = [e.network.name for e in r.entries if e.group == "four"]
    return (style.model_color(four.index(n.name)), True) if n.name in four else (GREY, False)


def _sound(r: LineupAnalysis) -> list[NetworkAnalysis]:
    return [e.network for e in r.entries if not e.problems]


def verdicts_html(r: LineupAnalysis, escape) -> str:
    heads = {True: (style.GOOD, "Holds"), False: (style.BAD, "Does not hold"), None: (style.WARN, "Not judged")}
    lines = []
    for v in r.verdicts:
        color, head = heads[v.holds]
        stat = "\u2013" if v.value is None else f"{v.value:.0f}" if v.claim == "density" else f"{v.value:.2f}"
        lines.append(f'<span style="color:{color}"><b>{head}{" (weak)" if v.weak else ""}:</b></span> '
                     f"{escape(v.text)}<br><span style=\"color:{style.TEXT_DIM}\">{escape(v.statistic)} = {stat}; "
                     f"{escape(v.interval_text)}; {v.n} networks</span>")
    lines.append(f'<span style="color:{style.TEXT_DIM}">Top-1: torchvision\'s published ImageNet-1K figures, not '
                 f"measured here; the networks run with random weights (the same time). Not measured: "
                 f"{escape(', '.join(r.not_measured))}.</span>")
    return "<br>".join(lines)


def _point(widget: pg.PlotWidget, x: float, y: float, color: str, strong: bool, text: str, size: float,
           log_x: bool = False) -> None:
    widget.plot([x], [y], pen=None, symbol="o", symbolSize=size, symbolBrush=pg.mkBrush(color),
                symbolPen=pg.mkPen(style.TEXT if strong else GREY))
    label = pg.TextItem(text, color=style.TEXT if strong else style.TEXT_DIM, anchor=(0, 1.1))
    label.setPos(math.log10(x) if log_x else x, y)
    widget.addItem(label)


def draw_lineup(plots: dict[str, pg.PlotWidget], r: LineupAnalysis) -> None:
    """Draw the six figures of ``r`` into ``plots`` (keys a to f, cleared first)."""
    for key in "abcdef":
        plots[key].getPlotItem().clear()
    order = sorted(r.networks, key=lambda n: _style(r, n)[1])  # the four drawn last, on top
    scored = [n for n in order if n.top1 is not None]
    biggest = max((n.params for n in scored), default=1)
    for n in scored:
        color, strong = _style(r, n)
        _point(plots["a"], n.macs / 1e9, 100 * n.top1, color, strong, n.label,
               8 + 30 * math.sqrt(n.params / biggest), log_x=True)
    sound = [n for n in order if n in _sound(r)]
    for n in sound:
        color, strong = _style(r, n)
        pen = pg.mkPen(color, width=2.5 if strong else 1)
        batches = np.array([p.batch for p in n.batches], float)
        plots["b"].plot(batches, [p.ms_per_image_p50 for p in n.batches], pen=pen, symbol="o", symbolSize=4,
                        symbolBrush=color)
        peaks = [p.peak_mb for p in n.batches]
        if all(v is not None and v > 0 for v in peaks):
            plots["c"].plot(batches, peaks, pen=pen, symbol="o", symbolSize=4, symbolBrush=color)
        _point(plots["d"], n.macs / 1e9, n.latency_ms, color, strong, n.label, 9)
    timed = [n for n in sound if n.macs > 0 and n.latency_ms > 0]
    if len(timed) >= 2:
        slope, intercept = np.polyfit([n.macs / 1e9 for n in timed], [n.latency_ms for n in timed], 1)
        xs = np.linspace(0, max(n.macs for n in timed) / 1e9 * 1.05, 20)
        plots["d"].plot(xs, slope * xs + intercept, pen=pg.mkPen(style.TEXT_DIM, width=1, style=pg.QtCore.Qt.DashLine))
    dense = sorted((n for n in r.networks if n.density is not None), key=lambda n: -n.density)
    if dense:
        logs = [math.log10(n.density) for n in dense]
        base = math.floor(min(logs + [0.0]))  # the bars rise from a power of ten below the least
        plots["e"].addItem(pg.BarGraphItem(x=np.arange(len(dense)), height=[v - base for v in logs], width=0.6,
                                           brushes=[_style(r, n)[0] for n in dense], y0=base))
        for i, n in enumerate(dense):  # names along the bars: a dozen do not fit side by side
            label = pg.TextItem(f"{n.label} {n.density:.1f}", color=style.TEXT, angle=90, anchor=(0, 0.5))
            label.setPos(i, base + 0.02)
            plots["e"].addItem(label)
        plots["e"].getAxis("bottom").setTicks([[]])
        plots["e"].getAxis("left").setTicks([[(k, f"{10 ** k:g}") for k in range(base, 4)]])
    front_nets = pareto_front([n for n in sound if n.top1 is not None])
    for n in (n for n in sound if n.top1 is not None):
        color, strong = _style(r, n)
        _point(plots["f"], n.latency_ms, 100 * n.top1, color, strong or n in front_nets, n.label, 9, log_x=True)
    if len(front_nets) >= 3:
        u = 1 / np.array([n.latency_ms for n in front_nets])
        slope, a = np.polyfit(u, [100 * n.top1 for n in front_nets], 1)
        xs = np.geomspace(front_nets[0].latency_ms, max(n.latency_ms for n in sound), 60)
        plots["f"].plot(xs, a + slope / xs, pen=pg.mkPen(style.TEXT_DIM, width=1, style=pg.QtCore.Qt.DashLine))
