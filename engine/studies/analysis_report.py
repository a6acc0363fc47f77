"""An :class:`~engine.studies.analysis.Analysis` as files: figures (PNG), data (CSV, JSON) and one
self-contained ``report.html`` (figures embedded) that opens in any browser.

The figures are drawn with matplotlib's Agg canvas directly (no pyplot, no GUI backend), so this
module works headless and never touches the window's Qt.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.common.files import atomic_write
from engine.runtime.backends import glyph
from engine.runtime.backends import label as backend_label
from engine.runtime.backends import marker as backend_marker
from engine.studies.analysis import Analysis, NetworkAnalysis, pareto_front

# The window's colours for the four networks (gui.style.MODEL_COLORS), on a light background here.
COLORS = ("#1f77b4", "#d98500", "#0f9d77", "#b0578f", "#8c8c00", "#c2501d")

CAPTIONS = {
    "a_accuracy_vs_macs": "(a) Top-1 against operations (MACs per image, log scale); bubble area proportional to "
                          "the parameters. Diamonds: torchvision's published ImageNet top-1, not measured here.",
    "b_latency_vs_batch": "(b) Milliseconds per image against batch size, log-log, warm, p50 of the batch's time "
                          "divided by its size; the network alone (no preprocessing).",
    "c_memory_vs_batch": "(c) Memory against batch size: solid, what the process took while the batch ran; "
                         "dashed, the layer outputs of the batch as the engine counts them (fp32).",
    "d_latency_vs_macs": "(d) Batch-1 latency against MACs, networks (left, with the least-squares line) and "
                         "every layer alone on its recorded input (right), coloured by network.",
    "e_density": "(e) Accuracy per parameter: top-1 points per million parameters (the survey's "
                 "\"information density\").",
    "f_accuracy_vs_speed": "(f) Top-1 against images per second at batch 1; the line is the upper envelope: "
                           "the best accuracy reached at that speed or slower.",
    "g_layers": "(g) Where the time goes: each layer's share of the network's time (bar) beside its share "
                "of the MACs (outline), batch 1.",
}


def new_figure(width: float = 6.0, height: float = 4.0, columns: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, columns)
    return fig, axes


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _colour(analysis: Analysis, net: NetworkAnalysis) -> str:
    return COLORS[[n.name for n in analysis.networks].index(net.name) % len(COLORS)]


def figure_accuracy_vs_macs(a: Analysis) -> bytes:
    fig, ax = new_figure()
    scored = [n for n in a.networks if n.top1 is not None]
    biggest = max((n.params for n in scored), default=1)
    for n in scored:
        ax.margins(x=0.25, y=0.12)
        ax.scatter([n.macs / 1e6], [100 * n.top1], s=30 + 1500 * n.params / biggest, alpha=0.55,
                   color=_colour(a, n), marker="D" if n.top1_kind == "published" else "o", edgecolors="black",
                   linewidths=0.5)
        ax.annotate(n.label, (n.macs / 1e6, 100 * n.top1), textcoords="offset points", xytext=(6, 6), fontsize=9)
    missing = [n.label for n in a.networks if n.top1 is None]
    ax.set_xscale("log")
    ax.set_xlabel("million MACs per image")
    ax.set_ylabel("top-1 %")
    ax.set_title("Accuracy against operations" + (f" (no accuracy: {', '.join(missing)})" if missing else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def figure_latency_vs_batch(a: Analysis) -> bytes:
    fig, ax = new_figure()
    for n in a.networks:
        ax.plot([p.batch for p in n.batches], [p.ms_per_image_p50 for p in n.batches], "o-", color=_colour(a, n),
                label=n.label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per image (p50)")
    ax.set_title(f"Time per image against batch size ({a.device}, {a.threads} threads, {a.precision})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


def figure_memory_vs_batch(a: Analysis) -> bytes:
    fig, ax = new_figure()
    for n in a.networks:
        color = _colour(a, n)
        batches = [p.batch for p in n.batches]
        peaks = [p.peak_mb if p.peak_mb is not None and p.peak_mb > 0 else np.nan for p in n.batches]
        ax.plot(batches, peaks, "o-", color=color, label=f"{n.label}, process")
        ax.plot(batches, [p.activation_mb for p in n.batches], "--", color=color, alpha=0.7)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("MB")
    ax.set_title("Memory against batch size (dashed: all layer outputs at once)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


def figure_latency_vs_macs(a: Analysis) -> bytes:
    fig, (left, right) = new_figure(10.0, 4.0, 2)
    for n in a.networks:
        left.scatter([n.macs / 1e6], [n.latency_ms], color=_colour(a, n), s=50, zorder=3)
        left.annotate(n.label, (n.macs / 1e6, n.latency_ms), textcoords="offset points", xytext=(6, -10),
                      fontsize=9)
    for view in a.backends:  # the same networks on other backends, each with its registry marker
        for n in view.networks:
            left.scatter([n.macs / 1e6], [n.latency_ms], color=_colour(a, n), marker=backend_marker(view.backend),
                         s=50, zorder=3, edgecolors="k", linewidths=0.5)
    # each backend's markers named in its fit's legend entry
    styles = (":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
    fits = [(f"torch eager {glyph('torch')}", a.network_fit, "--")] + [
        (f"{backend_label(v.backend)} {glyph(v.backend)}", v.network_fit, styles[i % len(styles)])
        for i, v in enumerate(a.backends)]
    for name, fit, line in fits:
        if fit is not None:
            xs = np.linspace(0, max(n.macs for n in a.networks) * 1.05, 50)
            left.plot(xs / 1e6, fit.predict(xs), color="k", linestyle=line, lw=1,
                      label=f"{name + ': ' if a.backends else ''}least squares, R\u00b2 = {fit.r2:.2f}")
    if any(fit is not None for _, fit, _ in fits):
        left.legend(fontsize=8)
    left.set_xlabel("million MACs per image")
    left.set_ylabel("batch-1 latency, ms (p50)")
    left.set_title("Networks", fontsize=10)
    left.grid(alpha=0.3)
    for n in a.networks:
        layers = [layer for layer in n.layers if layer.macs > 0 and layer.ms > 0]
        right.scatter([layer.macs for layer in layers], [layer.ms for layer in layers], color=_colour(a, n),
                      s=14, alpha=0.8, label=n.label)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("MACs of the layer")
    right.set_ylabel("ms, alone (p50)")
    lf = a.layer_fit
    right.set_title("Layers" + (f" (R\u00b2 = {lf.r2:.2f} over {lf.n}, linear fit)" if lf else ""), fontsize=10)
    right.legend(fontsize=8)
    right.grid(alpha=0.3, which="both")
    return png_bytes(fig)


def figure_density(a: Analysis) -> bytes:
    fig, ax = new_figure()
    scored = [n for n in a.networks if n.density is not None]
    ax.bar([n.label for n in scored], [n.density for n in scored], color=[_colour(a, n) for n in scored])
    for i, n in enumerate(scored):
        ax.annotate(f"{n.density:.0f}", (i, n.density), ha="center", va="bottom", fontsize=9)
    ax.set_yscale("log")
    ax.set_ylabel("top-1 points per million parameters")
    ax.set_title("Accuracy per parameter", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return png_bytes(fig)


def figure_accuracy_vs_speed(a: Analysis) -> bytes:
    fig, ax = new_figure()
    for n in a.networks:
        if n.top1 is None:
            continue
        ax.scatter([1000 / n.latency_ms], [100 * n.top1], color=_colour(a, n), s=60, zorder=3,
                   marker="D" if n.top1_kind == "published" else "o")
        ax.annotate(n.label, (1000 / n.latency_ms, 100 * n.top1), textcoords="offset points", xytext=(6, 6),
                    fontsize=9)
    front = pareto_front(a.networks)
    if len(front) >= 2:
        xs = [1000 / n.latency_ms for n in front]
        ys = [100 * n.top1 for n in front]
        ax.step(xs, ys, where="post", color="black", lw=1, alpha=0.6, label="upper envelope")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("images per second, batch 1")
    ax.set_ylabel("top-1 %")
    ax.set_title("Accuracy against speed", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


def figure_layers(a: Analysis, net: NetworkAnalysis) -> bytes:
    layers = [layer for layer in net.layers if layer.ms > 0]
    fig, ax = new_figure(7.0, max(2.5, 0.22 * len(layers) + 1.2))
    total_ms = sum(layer.ms for layer in layers) or 1.0
    total_macs = sum(layer.macs for layer in layers) or 1
    ys = np.arange(len(layers))
    ax.barh(ys, [100 * layer.ms / total_ms for layer in layers], color=_colour(a, net), alpha=0.8, label="time")
    ax.barh(ys, [100 * layer.macs / total_macs for layer in layers], fill=False, edgecolor="black", lw=0.8,
            label="MACs")
    ax.set_yticks(ys, [layer.name for layer in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("% of the network")
    ax.set_title(f"{net.label}: time share and MAC share of each layer (sum of layers "
                 f"{net.layers_ms:.2f} ms, whole pass {net.forward_ms:.2f} ms)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return png_bytes(fig)


FIGURES: dict[str, Callable[[Analysis], bytes]] = {
    "a_accuracy_vs_macs": figure_accuracy_vs_macs,
    "b_latency_vs_batch": figure_latency_vs_batch,
    "c_memory_vs_batch": figure_memory_vs_batch,
    "d_latency_vs_macs": figure_latency_vs_macs,
    "e_density": figure_density,
    "f_accuracy_vs_speed": figure_accuracy_vs_speed,
}


def network_rows(a: Analysis) -> list[dict]:
    return [{"network": n.label, "name": n.name, "params": n.params, "macs": n.macs,
             "top1": None if n.top1 is None else round(100 * n.top1, 2), "top1_kind": n.top1_kind,
             "latency_ms_p50": round(n.latency_ms, 4), "images_per_s_batch1": round(1000 / n.latency_ms, 1),
             "best_images_per_s": round(max(p.images_per_s for p in n.batches), 1),
             "forward_ms_p50": round(n.forward_ms, 4), "layers_ms_sum": round(n.layers_ms, 4),
             "layers_ratio": round(n.layers_ratio, 3),
             "density": None if n.density is None else round(n.density, 2)} for n in a.networks]


def csv_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue().encode()


class ReportError(OSError):
    """The report cannot go where it was asked to; the message is one line."""


def check_out(out: str | Path) -> Path:
    """``out`` as a folder a report may be written into: new, empty, or an earlier report's (it
    holds ``analysis.json``), whose files are replaced. Anything else is refused (:class:`ReportError`),
    so that no file of the user's is overwritten."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "analysis.json").is_file():
        raise ReportError(f"{out}: the folder has other files in it; choose a new or empty folder "
                          "(or one an earlier report was written into)")
    return out


def write_report(a: Analysis, out: str | Path) -> list[Path]:
    """Write the figures (PNG), ``networks.csv``, ``batches.csv``, ``layers.csv``, ``analysis.json``
    and ``report.html`` into ``out`` (see :func:`check_out`; created if needed, each file replaced
    atomically). Returns the paths written."""
    out = check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for key, draw in FIGURES.items():
        files[f"{key}.png"] = draw(a)
    for n in a.networks:
        files[f"g_layers_{n.name}.png"] = figure_layers(a, n)
    files["networks.csv"] = csv_bytes(network_rows(a))
    files["batches.csv"] = csv_bytes([{"network": n.label, "batch": p.batch, "ms_per_image_p50": p.ms_per_image_p50,
                                  "ms_per_image_p95": p.ms_per_image_p95, "images_per_s": p.images_per_s,
                                  "runs": p.runs, "activation_mb": p.activation_mb, "process_mb": p.peak_mb}
                                 for n in a.networks for p in n.batches])
    files["layers.csv"] = csv_bytes([{"network": n.label, "layer": x.name, "kind": x.kind, "ms_p50": x.ms,
                                 "macs": x.macs, "params": x.params} for n in a.networks for x in n.layers])
    files["analysis.json"] = json.dumps(a.to_dict(), indent=1, allow_nan=True).encode()
    files["report.html"] = html_report(a, {k: v for k, v in files.items() if k.endswith(".png")}).encode()
    return write_files(out, files)


def write_files(out: Path, files: dict[str, bytes]) -> list[Path]:
    """``files`` (name -> bytes) into ``out``, each replaced atomically; the paths written."""
    written = []
    for name, data in files.items():
        path = out / name
        atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
        written.append(path)
    return written


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def html_report(a: Analysis, pngs: dict[str, bytes]) -> str:
    """One HTML page, figures embedded as data URIs, that needs nothing else to open."""
    def img(name: str, caption: str) -> str:
        data = base64.b64encode(pngs[name]).decode()
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    verdicts = "".join(
        f'<li class="{"holds" if v.holds else "fails" if v.holds is False else "open"}"><b>'
        f'{"Holds" if v.holds else "Does not hold" if v.holds is False else "Not judged"}:</b> '
        f"{html.escape(v.text)}</li>" for v in a.verdicts)
    for view in a.backends:  # the claims on time, judged again on each other backend
        verdicts += "".join(
            f'<li class="{"holds" if v.holds else "fails" if v.holds is False else "open"}">On '
            f'{html.escape(backend_label(view.backend))}: <b>'
            f'{"Holds" if v.holds else "Does not hold" if v.holds is False else "Not judged"}:</b> '
            f"{html.escape(v.text)}</li>" for v in view.verdicts[:2])
        verdicts += "".join(f"<li>On {html.escape(backend_label(view.backend))}: {html.escape(n)}</li>"
                            for n in view.notes)
    head = ["network", "params", "MACs", "top-1 %", "batch-1 ms p50", "images/s (batch 1)", "best images/s",
            "layers / whole", "top-1 per M params"]
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            r["network"], _fmt(r["params"]), _fmt(r["macs"]),
            (_fmt(r["top1"]) + (" (published)" if r["top1_kind"] == "published" else "")) if r["top1"] is not None
            else "no accuracy", _fmt(r["latency_ms_p50"], 3), _fmt(r["images_per_s_batch1"], 0),
            _fmt(r["best_images_per_s"], 0), _fmt(r["layers_ratio"], 2), _fmt(r["density"], 0))) + "</tr>"
        for r in network_rows(a))
    figures = "".join(img(f"{key}.png", CAPTIONS[key]) for key in FIGURES)
    figures += "".join(img(f"g_layers_{n.name}.png", CAPTIONS["g_layers"]) for n in a.networks)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in a.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CNN Arena analysis: {html.escape(a.profile)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5em; }} table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
li.holds b {{ color: #17804f; }} li.fails b {{ color: #b3261e; }} li.open b {{ color: #8a6d00; }}
li {{ margin: .5em 0; line-height: 1.4; }}
figure {{ display: inline-block; vertical-align: top; margin: 1em 1em 1em 0; max-width: 100%; }}
figure img {{ max-width: 100%; }} figcaption {{ font-size: .85em; color: #555; max-width: 600px; }}
.meta {{ color: #555; font-size: .9em; }}
</style></head><body>
<h1>Do the survey's claims hold on this machine?</h1>
<p class="meta">Profile {html.escape(a.profile)}, {html.escape(a.device)} with {a.threads} threads,
{html.escape(a.precision)}, torch {html.escape(a.torch_version)}; {html.escape(a.machine)}; measured
{html.escape(a.created)} in {a.seconds:.0f} s, batch sizes 1 to {a.max_batch}. Claims from Canziani, Paszke and
Culurciello 2016 (arXiv 1605.07678), measured there on a Jetson TX1.</p>
<h2>Verdicts</h2><ul>{verdicts}</ul>
<h2>Networks</h2>
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>
<p class="meta">Latency: the network alone on a random batch-1 input, warm, p50. "Layers / whole": the layers'
times inside whole forward passes, summed, against the pass without hooks. Top-1: the weights' own test figure
(this project's CIFAR-10 weights: the test set with flip TTA) or torchvision's published ImageNet figure.</p>
{f'<ul class="meta">{notes}</ul>' if notes else ''}
<h2>Figures</h2>{figures}
</body></html>
"""
