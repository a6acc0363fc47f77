"""A line-up's analysis (:class:`~engine.studies.lineup_analysis.LineupAnalysis`) as files: the survey's
six figures redrawn with this machine's numbers (PNG), the data (CSV, JSON) and one
self-contained ``report.html``. The comparison's four networks are drawn in their colours, the
rest of the line-up in grey.

matplotlib's Agg canvas draws the figures (no pyplot, no GUI backend); jinja2 fills the page,
escaping every value.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.studies.analysis import NetworkAnalysis, fit_line, pareto_front
from engine.studies.analysis_report import COLORS, check_out, csv_bytes, new_figure, png_bytes, write_files
from engine.studies.lineup_analysis import LineupAnalysis
from engine.studies.verdict_stats import fit_hyperbola

GREY = "#9a9a9a"
SURVEY = "Canziani, Paszke and Culurciello 2016, arXiv 1605.07678"

CAPTIONS = {
    "a_accuracy_vs_ops": "(a) Top-1 against operations (G multiply-accumulates per image, log scale); marker area "
                         "proportional to the parameters. Top-1: torchvision's published ImageNet-1K figure.",
    "b_time_vs_batch": "(b) Milliseconds per image against batch size, log-log: p50 of the batch's time divided by "
                       "its size, warm, the network alone.",
    "c_memory_vs_batch": "(c) Memory against batch size: what the process took while the batch ran, log-log.",
    "d_ops_vs_time": "(d) Batch-1 latency (p50) against operations, with the least-squares line.",
    "e_density": "(e) Accuracy density: published top-1 points per million parameters. The survey ("
                 + SURVEY + ") puts ENet's density at 13\u00d7 AlexNet's and 24\u00d7 VGG-19's on its own "
                 "ImageNet ENet; no top-1 is published for ENet here, so ours cannot stand beside it.",
    "f_accuracy_vs_time": "(f) Top-1 against batch-1 latency (log scale), with the hyperbola top-1 = a - k / ms "
                          "fitted to the front of best accuracy for the time (ringed).",
}


def _four(r: LineupAnalysis) -> list[str]:
    return [e.network.name for e in r.entries if e.group == "four"]


def _style(r: LineupAnalysis, n: NetworkAnalysis) -> tuple[str, bool]:
    """(colour, highlighted): the four in their colours, the others grey."""
    four = _four(r)
    return (COLORS[four.index(n.name) % len(COLORS)], True) if n.name in four else (GREY, False)


def _sound(r: LineupAnalysis) -> list[NetworkAnalysis]:
    """The networks whose timings passed their checks: the only ones drawn against time."""
    return [e.network for e in r.entries if not e.problems]


def _no_timing(ax, r: LineupAnalysis) -> None:
    """Said on a figure against time when no timing passed its checks (nothing broken is drawn)."""
    if not _sound(r):
        busy = r.busy
        ax.text(0.5, 0.5, f"no timing passed its checks:\n{busy.text if busy else 'nothing measured'}",
                transform=ax.transAxes, ha="center", va="center", fontsize=9, color="#b3261e")


def _label(ax, n: NetworkAnalysis, x: float, y: float, color: str, strong: bool) -> None:
    ax.annotate(n.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8 if strong else 7,
                color="black" if strong else "#666666", fontweight="bold" if strong else "normal")


def figure_accuracy_vs_ops(r: LineupAnalysis) -> bytes:
    fig, ax = new_figure()
    scored = [n for n in r.networks if n.top1 is not None]
    biggest = max((n.params for n in scored), default=1)
    for n in sorted(scored, key=lambda n: _style(r, n)[1]):  # the four on top
        color, strong = _style(r, n)
        ax.scatter([n.macs / 1e9], [100 * n.top1], s=20 + 900 * n.params / biggest, color=color,
                   alpha=0.8 if strong else 0.45, edgecolors="black" if strong else "none", linewidths=0.6)
        _label(ax, n, n.macs / 1e9, 100 * n.top1, color, strong)
    missing = [n.label for n in r.networks if n.top1 is None]
    ax.set_xscale("log")
    ax.set_xlabel("G MACs per image")
    ax.set_ylabel("top-1 % (published)")
    ax.set_title("Top-1 against operations" + (f" (none published: {', '.join(missing)})" if missing else ""),
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


def _per_batch(r: LineupAnalysis, value: Callable, ylabel: str, title: str) -> bytes:
    fig, ax = new_figure()
    for n in sorted(_sound(r), key=lambda n: _style(r, n)[1]):
        color, strong = _style(r, n)
        points = [(p.batch, value(p)) for p in n.batches if value(p) is not None and value(p) > 0]
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, "o-", color=color, lw=2 if strong else 1, ms=4 if strong else 3,
                alpha=1.0 if strong else 0.7, label=n.label if strong else None)
        ax.annotate(n.label, (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 0), fontsize=6,
                    color="black" if strong else "#666666")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    _no_timing(ax, r)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


def figure_time_vs_batch(r: LineupAnalysis) -> bytes:
    return _per_batch(r, lambda p: p.ms_per_image_p50, "ms per image (p50)",
                      f"Time per image against batch size ({r.device}, {r.threads} thread"
                      f"{'s' if r.threads != 1 else ''})")


def figure_memory_vs_batch(r: LineupAnalysis) -> bytes:
    return _per_batch(r, lambda p: p.peak_mb, "MB the process took", "Memory against batch size")


def figure_ops_vs_time(r: LineupAnalysis) -> bytes:
    fig, ax = new_figure()
    nets = [n for n in _sound(r) if n.macs > 0 and n.latency_ms > 0]
    for n in sorted(nets, key=lambda n: _style(r, n)[1]):
        color, strong = _style(r, n)
        ax.scatter([n.macs / 1e9], [n.latency_ms], color=color, s=40 if strong else 25, zorder=3,
                   edgecolors="black" if strong else "none", linewidths=0.5)
        _label(ax, n, n.macs / 1e9, n.latency_ms, color, strong)
    fit = fit_line([n.macs for n in nets], [n.latency_ms for n in nets])
    verdict = next((v for v in r.verdicts if v.claim == "operations"), None)
    if fit is not None:
        xs = np.linspace(0, max(n.macs for n in nets) * 1.05, 50)
        interval = f" ({verdict.interval_text})" if verdict is not None and verdict.low is not None else ""
        ax.plot(xs / 1e9, fit.predict(xs), "k--", lw=1,
                label=f"least squares, R\u00b2 = {fit.r2:.2f} over {fit.n}{interval}")
        ax.legend(fontsize=7)
    ax.set_xlabel("G MACs per image")
    ax.set_ylabel("batch-1 latency, ms (p50)")
    ax.set_title("Operations against time", fontsize=9)
    _no_timing(ax, r)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def figure_density(r: LineupAnalysis) -> bytes:
    fig, ax = new_figure(7.0, 4.0)
    dense = sorted((n for n in r.networks if n.density is not None), key=lambda n: -n.density)
    ax.bar(range(len(dense)), [n.density for n in dense], color=[_style(r, n)[0] for n in dense])
    for i, n in enumerate(dense):
        ax.annotate(f"{n.density:.1f}", (i, n.density), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(dense)), [n.label for n in dense], rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("top-1 points per million parameters")
    missing = [n.label for n in r.networks if n.density is None]
    ax.set_title("Accuracy density" + (f" (none published: {', '.join(missing)})" if missing else ""), fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return png_bytes(fig)


def figure_accuracy_vs_time(r: LineupAnalysis) -> bytes:
    fig, ax = new_figure()
    scored = [n for n in _sound(r) if n.top1 is not None and n.latency_ms > 0]
    front = pareto_front(scored)
    for n in sorted(scored, key=lambda n: _style(r, n)[1]):
        color, strong = _style(r, n)
        ax.scatter([n.latency_ms], [100 * n.top1], color=color, s=40 if strong else 25, zorder=3,
                   edgecolors="black" if n in front else "none", linewidths=1.2)
        _label(ax, n, n.latency_ms, 100 * n.top1, color, strong)
    fit = fit_hyperbola([n.latency_ms for n in front], [100 * n.top1 for n in front]) if len(front) >= 3 else None
    if fit is not None:
        xs = np.geomspace(min(n.latency_ms for n in front), max(n.latency_ms for n in scored), 100)
        ax.plot(xs, fit.predict(xs), "k--", lw=1,
                label=f"top-1 = {fit.a:.1f} - {fit.k:.1f} / ms, R\u00b2 = {fit.r2:.2f} over the front's {fit.n}")
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency, ms (p50)")
    ax.set_ylabel("top-1 % (published)")
    ax.set_title("Top-1 against time", fontsize=9)
    _no_timing(ax, r)
    ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


FIGURES: dict[str, Callable[[LineupAnalysis], bytes]] = {
    "a_accuracy_vs_ops": figure_accuracy_vs_ops,
    "b_time_vs_batch": figure_time_vs_batch,
    "c_memory_vs_batch": figure_memory_vs_batch,
    "d_ops_vs_time": figure_ops_vs_time,
    "e_density": figure_density,
    "f_accuracy_vs_time": figure_accuracy_vs_time,
}


def network_rows(r: LineupAnalysis) -> list[dict]:
    rows = []
    for e in r.entries:
        n, pub = e.network, e.published
        rows.append({
            "network": n.label, "name": n.name, "group": e.group, "year": e.year, "params": n.params,
            "published_params": pub.params if pub else None, "macs": n.macs,
            "published_gops": pub.gops if pub else None,
            "top1_published": None if n.top1 is None or n.top1_kind != "published" else round(100 * n.top1, 2),
            "published_weights": pub.weights if pub else None,
            "latency_ms_p50": round(n.latency_ms, 3), "latency_ms_p95": round(n.batches[0].ms_per_image_p95, 3),
            "process_mb_batch1": None if n.batches[0].peak_mb is None else round(n.batches[0].peak_mb, 1),
            "layers_ratio": round(n.layers_ratio, 3), "density": None if n.density is None else round(n.density, 2),
            "threads": e.threads, "load": None if e.load is None else round(e.load, 2),
            "timing": "; ".join(e.problems) or "sound", "cached": e.cached})
    return rows


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CNN Arena: the survey's claims on the {{ r.lineup }} line-up</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.5em; } table { border-collapse: collapse; margin: 1em 0; font-size: .85em; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; } tr.four td:first-child { font-weight: bold; }
li.holds b.head { color: #17804f; } li.fails b.head { color: #b3261e; } li.open b.head { color: #8a6d00; }
li { margin: .6em 0; line-height: 1.4; } .stat { color: #444; font-size: .9em; }
figure { display: inline-block; vertical-align: top; margin: 1em 1em 1em 0; max-width: 540px; }
figure img { max-width: 100%; } figcaption { font-size: .8em; color: #555; }
.meta { color: #555; font-size: .9em; } .broken { color: #b3261e; }
</style></head><body>
<h1>Do the survey's claims hold on this machine? The {{ r.lineup }} line-up, {{ r.entries|length }} networks</h1>
<p class="meta">{{ r.device }} with {{ r.threads }} thread(s), {{ r.precision }}, torch {{ r.torch_version }},
torchvision {{ r.torchvision_version }}; {{ r.machine }}; {{ r.created }}, {{ how }}; batch sizes 1 to
{{ r.max_batch }}, at least {{ r.runs }} runs each. Claims from {{ survey }}, measured there on a Jetson TX1.
The comparison's four networks are in colour, the rest of the line-up in grey.</p>
<h2>Verdicts</h2><ul>
{% for v in r.verdicts %}<li class="{{ 'holds' if v.holds else 'fails' if v.holds is sameas false else 'open' }}">
<b class="head">{{ 'Holds' if v.holds else 'Does not hold' if v.holds is sameas false else 'Not judged' }}
{{- ' (weak)' if v.weak }}:</b>
{{ v.text }}<br><span class="stat">Statistic: {{ v.statistic }} = {{ stat(v) }}; {{ v.interval_text }};
{{ v.n }} networks.</span></li>
{% endfor %}</ul>
<h2>Networks</h2>
<table><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr class="{{ row.group }}">
<td>{{ row.network }}</td><td>{{ row.group }}</td><td>{{ row.year }}</td>
<td>{{ '%.1f'|format(row.params / 1e6) }}</td><td>{{ '%.2f'|format(row.macs / 1e9) }}</td>
<td>{{ ('%.1f%%'|format(row.top1_published)) if row.top1_published is not none else 'none published' }}</td>
<td>{{ '%.2f'|format(row.latency_ms_p50) }}</td><td>{{ '%.2f'|format(row.latency_ms_p95) }}</td>
<td>{{ ('%.0f'|format(row.process_mb_batch1)) if row.process_mb_batch1 is not none else '-' }}</td>
<td>{{ '%.2f'|format(row.layers_ratio) }}</td>
<td>{{ ('%.1f'|format(row.density)) if row.density is not none else '-' }}</td>
<td class="{{ '' if row.timing == 'sound' else 'broken' }}">{{ 'cached' if row.cached else row.timing }}</td></tr>
{% endfor %}</table>
<p class="meta">Time: batch 1, p50 and p95, warm, the network alone with random weights (a trained network takes
the same time). Memory: what the process took while batch 1 ran. Layers / whole: the layers' times inside whole
passes, summed, against the pass without hooks; a timing whose layers are more than 15% off, whose p95 is more
than twice its p50, or that shared its cores with other work, is not used. Top-1: torchvision's published
ImageNet-1K validation figure for the weights named in analysis.json, not measured here. Not measured:
{{ r.not_measured|join(', ') }} (the survey's, not built by torchvision).</p>
<h2>The survey's figures, with this machine's numbers</h2>
{% for name, caption, data in figures %}<figure><img src="data:image/png;base64,{{ data }}" alt="{{ caption }}">
<figcaption>{{ caption }}</figcaption></figure>{% endfor %}
</body></html>
"""


def html_report(r: LineupAnalysis, pngs: dict[str, bytes]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)

    def stat(v) -> str:
        return "-" if v.value is None else f"{v.value:.0f}" if v.claim == "density" else f"{v.value:.2f}"

    how = "every network read from the cache" if r.cached else f"measured in {r.seconds:.0f} s"
    figures = [(key, CAPTIONS[key], base64.b64encode(pngs[f"{key}.png"]).decode()) for key in FIGURES]
    head = ["network", "group", "year", "M params", "G MACs", "top-1 (published)", "ms b=1 p50", "p95",
            "MB b=1", "layers / whole", "top-1 per M params", "timing"]
    return env.from_string(PAGE).render(r=r, rows=network_rows(r), head=head, figures=figures, stat=stat, how=how,
                                        survey=SURVEY)


def write_lineup_report(r: LineupAnalysis, out: str | Path) -> list[Path]:
    """The six figures (PNG), ``networks.csv``, ``analysis.json`` and ``report.html`` into ``out``
    (see :func:`engine.studies.analysis_report.check_out`); returns the paths written."""
    out = check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {f"{key}.png": draw(r) for key, draw in FIGURES.items()}
    files["networks.csv"] = csv_bytes(network_rows(r))
    files["analysis.json"] = json.dumps(r.to_dict(), indent=1, allow_nan=True).encode()
    files["report.html"] = html_report(r, files).encode()
    return write_files(out, files)
