"""``python main.py robustness``: each network's top-1 under perturbed images (engine.studies.robustness).

Prints a table (or ``--json``); with ``--out DIR``, also writes ``robustness.csv`` and one plot per
perturbation, ``robustness_<kind>.png`` (top-1 against severity, a line per network), into DIR.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.cli.evaluate import networks_and_test_set
from engine.cli.output import (
    CliError,
    JobProgressBar,
    format_table,
    pil_font,
    print_json,
    stop_on_signals,
    terminal_text,
)
from engine.common.files import atomic_write
from engine.data.imageio import display_name
from engine.jobs import Cancelled, JobState
from engine.models.registry import RegistryError, comparison_specs, get_spec
from engine.models.weights import UNTRAINED
from engine.probes.perturb import LABELS, PerturbError
from engine.runtime.device import device_label, resolve_device
from engine.runtime.precision import PrecisionError, check_precision
from engine.studies.evaluation import EvalError, sample_indices
from engine.studies.robustness import RobustnessResult, robustness

DEFAULT_LIMIT = 1000
# The window's colours for the networks, in line-up order (gui.style.MODEL_COLORS)
LINE_COLORS = ("#56b4e9", "#e69f00", "#2fc79a", "#d88fc0", "#b8a800", "#e86a3a")


def cmd_robustness(args: argparse.Namespace) -> int:
    out_dir = output_folder(args.out) if args.out else None
    try:
        device = resolve_device(args.device, strict=True)
        check_precision(args.precision, device)
    except (ValueError, PrecisionError) as e:
        raise CliError(str(e)) from None
    try:
        specs = [get_spec(n, "cifar10") for n in args.models] if args.models else comparison_specs("cifar10")
    except RegistryError as e:
        raise CliError(str(e)) from None
    loaded, images, labels = networks_and_test_set(specs, args.weights, args.data, "measured")
    idx = sample_indices(len(labels), args.limit)
    images, labels = images[idx], labels[idx]
    job = JobState(on_progress=JobProgressBar())
    status = 0
    with stop_on_signals(job):
        try:
            result = robustness(loaded, images, labels, device=device, precision=args.precision, seed=args.seed,
                                job=job)
        except Cancelled:
            result, status = job.partial["result"], 130
            print("robustness stopped: the table holds what was measured", file=sys.stderr)
        except (PerturbError, EvalError) as e:
            raise CliError(str(e)) from None
    written = write_outputs(result, out_dir) if out_dir is not None else []
    if args.json:
        report = result.as_dict()
        report.update(device=device_label(device), precision=args.precision,
                      data="torchvision CIFAR-10" if args.data == "download" else display_name(args.data),
                      files=[str(p) for p in written])
        print_json(report)
        return status
    _print_human(result, args, device)
    for path in written:
        print(f"wrote {terminal_text(str(path))}")
    return status


def output_folder(text: str) -> Path:
    """``--out DIR`` checked before any work: a file there is refused (nothing is written over it).
    The folder itself is made by :func:`make_folder` when there is something to write."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise CliError(f"--out {display_name(text)}: is a file, not a folder")
    return path


def make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"--out {display_name(str(path))}: cannot make the folder ({e.strerror or e})") from None


def write_outputs(result: RobustnessResult, folder: Path) -> list[Path]:
    """``robustness.csv`` (model, perturbation, severity, top1; severity 0 is the clean set) and one
    ``robustness_<kind>.png`` per perturbation, each written whole or not at all."""
    make_folder(folder)
    written = []
    csv_path = folder / "robustness.csv"

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["model", "perturbation", "severity", "top1", "images"])
            for m in result.models:
                if m in result.clean:
                    w.writerow([m, "clean", 0, f"{result.clean[m]:.6f}", result.images])
                for kind in result.kinds:
                    for s in result.severities:
                        value = result.accuracy(m, kind, s)
                        w.writerow([m, kind, s, "" if math.isnan(value) else f"{value:.6f}", result.images])

    try:
        atomic_write(csv_path, write_csv)
        written.append(csv_path)
        for kind in result.kinds:
            png = folder / f"robustness_{kind}.png"
            series = [(m, result.curve(m, kind) if m in result.clean else []) for m in result.models]
            name = LABELS[kind][:1].upper() + LABELS[kind][1:]
            image = line_plot(f"{name}: top-1 against severity ({result.images:,} CIFAR-10 test images)",
                              ["clean", *[str(s) for s in result.severities]], series)
            atomic_write(png, lambda tmp, image=image: image.save(tmp, format="PNG"))
            written.append(png)
    except OSError as e:
        raise CliError(f"{display_name(str(folder))}: cannot write ({e.strerror or e})") from None
    return written


def line_plot(title: str, x_labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
              size: tuple[int, int] = (720, 440)):
    """A line chart of fractions (0..1, shown as %) as a Pillow image: one line per named series,
    NaN points left out, gridlines every 20%, a legend at the lower left."""
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = pil_font(14)
    small = pil_font(12)
    left, right, top, bottom = 64, width - 24, 44, height - 52
    draw.text((left, 14), title, fill="black", font=font)
    for pct in range(0, 101, 20):
        y = bottom - (bottom - top) * pct / 100
        draw.line([(left, y), (right, y)], fill="#dddddd", width=1)
        draw.text((left - 8, y), f"{pct}%", fill="#444444", font=small, anchor="rm")
    steps = max(1, len(x_labels) - 1)

    def x_at(i: int) -> float:
        return left + (right - left) * i / steps

    for i, label in enumerate(x_labels):
        draw.line([(x_at(i), bottom), (x_at(i), bottom + 4)], fill="#444444")
        draw.text((x_at(i), bottom + 8), label, fill="#444444", font=small, anchor="ma")
    draw.text(((left + right) / 2, height - 20), "severity", fill="black", font=small, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline="#888888")
    for n, (name, values) in enumerate(series):
        color = LINE_COLORS[n % len(LINE_COLORS)]
        points = [(x_at(i), bottom - (bottom - top) * min(max(v, 0.0), 1.0))
                  for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=color, width=3, joint="curve")
        for x, y in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        ly = bottom - 18 - 18 * (len(series) - 1 - n)
        draw.line([(left + 12, ly), (left + 36, ly)], fill=color, width=3)
        draw.text((left + 42, ly), name, fill="black", font=small, anchor="lm")
    return image



def _print_human(result: RobustnessResult, args: argparse.Namespace, device) -> None:
    data = "torchvision CIFAR-10" if args.data == "download" else display_name(args.data)
    print(f"{data}, test split: {result.images:,} images, device {device_label(device)}, {args.precision}, "
          f"{result.seconds:.1f} s")
    rows = []
    for m in result.models:
        clean = result.clean.get(m, float("nan"))
        weights = "UNTRAINED" if result.weights_status.get(m) == str(UNTRAINED) else result.weights_status.get(m, "")
        rows.append([m, _pct(clean), _pct(result.mean_top1(m)), _ratio(result.relative(m)), weights])
    print(format_table(["model", "clean top-1", "mean perturbed", "relative", "weights"], rows, right={1, 2, 3}))
    print("  mean perturbed: top-1 averaged over every perturbation and severity; relative: that over clean")
    print()
    header = ["perturbation", *[f"{m} s{result.severities[0]}..s{result.severities[-1]}" for m in result.models]]
    table = [[LABELS[kind], *[" ".join(_pct(result.accuracy(m, kind, s), sign=False) for s in result.severities)
                              for m in result.models]] for kind in result.kinds]
    print(format_table(header, table))
    print("  top-1 % at each severity, 1 (mild) to 5 (strong)")


def _pct(value: float, sign: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%" if sign else f"{100 * value:.1f}"


def _ratio(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"

