"""The headless command line: ``python main.py <command>``.

Every number the window shows can be printed from here. Commands print a table for a person or
``--json`` for a script; a user's mistake is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.output import CliError, format_table, print_json, terminal_text
from engine.cli.parser import build_parser
from engine.common.text import human_count
from engine.models.registry import PROFILES

__all__ = ["CliError", "build_parser", "run_command"]


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed headless command; returns the exit status."""
    try:
        return _handler(args.command)(args)
    except CliError as e:
        print(f"error: {terminal_text(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as other tools do
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _handler(command: str):
    """The command's function, imported only when it runs (each pulls in what it needs: torch,
    OpenCV, the data loaders), so that ``--help`` and ``info`` start fast."""
    if command == "info":
        return cmd_info
    if command == "predict":
        from engine.cli.predict import cmd_predict
        return cmd_predict
    if command == "eval":
        from engine.cli.evaluate import cmd_eval
        return cmd_eval
    if command == "bench":
        from engine.cli.bench import cmd_bench
        return cmd_bench
    if command == "train":
        from engine.cli.train import cmd_train
        return cmd_train
    if command == "analyze":
        from engine.cli.analyze import cmd_analyze
        return cmd_analyze
    if command == "explain":
        from engine.cli.explain import cmd_explain
        return cmd_explain
    if command == "robustness":
        from engine.cli.robustness import cmd_robustness
        return cmd_robustness
    if command == "top-images":
        from engine.cli.top_images import cmd_top_images
        return cmd_top_images
    raise ValueError(f"unknown command {command!r}")


def info_rows(profile: str | None) -> list[dict[str, Any]]:
    from engine.models.complexity import complexity
    from engine.models.registry import list_specs
    from engine.models.weights import published_accuracy, resolve

    rows = []
    for spec in list_specs(profile):
        c = complexity(spec.name, spec.profile)
        w = resolve(spec)
        metrics = w.metrics or {}
        rows.append({
            "name": spec.name, "family": spec.family, "year": spec.year, "profile": spec.profile,
            "params": c.params, "macs": c.macs, "size_mb": round(c.size_mb, 3),
            "activation_mb": round(c.activation_mb, 3), "input_size": list(spec.input_size),
            "weights": str(w.path) if w.path else None, "weights_status": w.status,
            "weights_source": w.source, "downloadable": w.downloadable,
            "top1": metrics.get("test_top1"), "top5": metrics.get("test_top5"),
            "published_top1": (published_accuracy(spec) or (None, None))[0],
            "published_top5": (published_accuracy(spec) or (None, None))[1],
            "comparison": spec in _comparison(spec.profile),
        })
    return rows


def _comparison(profile: str):
    from engine.models.registry import comparison_specs
    return comparison_specs(profile)


def cmd_info(args: argparse.Namespace) -> int:
    if getattr(args, "lineup", None):
        from engine.cli.lineup import cmd_info_lineup
        return cmd_info_lineup(args)
    rows = info_rows(args.profile)
    if args.json:
        print_json(rows)
        return 0
    for profile in [args.profile] if args.profile else PROFILES:
        mine = [r for r in rows if r["profile"] == profile]
        table = [[r["name"], r["family"], r["year"], human_count(r["params"]), human_count(r["macs"]),
                  f"{r['size_mb']:.1f}", f"{r['activation_mb']:.2f}", "x".join(map(str, r["input_size"])),
                  _top1_text(r), _weights_label(r)]
                 for r in mine]
        print(f"profile {profile}  (MACs: multiply-accumulates for one image, 1 MAC = 2 FLOPs; "
              "size: fp32 MB; memory: activations MB)")
        print(format_table(["model", "family", "year", "params", "MACs", "size", "memory", "input",
                            "top-1", "weights"], table, right={2, 3, 4, 5, 6, 8}))
        if any(r["top1"] is None and r.get("published_top1") is not None for r in mine):
            print("  pub.: torchvision's published ImageNet-1K validation top-1, not measured here")
        for note in dict.fromkeys(_weights_note(r) for r in mine):
            if note:
                print(f"  {note}")
        print()
    return 0


def _top1_text(row: dict[str, Any]) -> str:
    """Measured test top-1, else torchvision's published ImageNet-1K figure marked "pub."."""
    if row["top1"] is not None:
        return f"{100 * row['top1']:.1f}%"
    if row.get("published_top1") is not None:
        return f"{100 * row['published_top1']:.1f}% pub."
    return "-"


def _weights_label(row: dict[str, Any]) -> str:
    if row["weights_status"] != "untrained":
        return row["weights_status"]
    return "not downloaded" if row["downloadable"] else "UNTRAINED"


def _weights_note(row: dict[str, Any]) -> str:
    label = _weights_label(row)
    if label == "not downloaded":
        return "not downloaded: torchvision's ImageNet weights are fetched only when you ask (predict --download)"
    if label == "UNTRAINED":
        if row["profile"] != "cifar10":
            return f"UNTRAINED: {row['weights_source']}"
        return "UNTRAINED: random weights; python main.py train --model NAME --data PATH trains them"
    return ""
