"""``analyze --lineup paper|modern`` and ``info --lineup``: the survey's claims on a reference
line-up (:mod:`engine.studies.lineup_analysis`), as a table and three verdicts with their intervals, JSON,
or a folder with report.html."""

from __future__ import annotations

import argparse
import sys
import textwrap

from engine.cli.output import CliError, JobProgressBar, format_table, print_json, stop_on_signals, terminal_text
from engine.jobs import Cancelled, JobState


def cmd_analyze_lineup(args: argparse.Namespace) -> int:
    from engine.runtime.precision import PrecisionError
    from engine.studies.lineup_analysis import run_lineup

    if args.profile != "imagenet":
        raise CliError(f"--lineup {args.lineup}: the line-ups are ImageNet networks; add --profile imagenet")
    if args.backend.strip() not in ("torch", ""):
        raise CliError("--lineup: a line-up is measured on torch eager only; leave out --backend")
    job = JobState(on_progress=None if args.json else JobProgressBar())

    def line(text: str) -> None:
        print(terminal_text(text), file=sys.stderr, flush=True)

    with stop_on_signals(job):
        try:
            result = run_lineup(args.lineup, args.device, max_batch=args.max_batch, quick=args.quick,
                                precision=args.precision, threads=args.threads, fresh=args.fresh, job=job,
                                on_line=line)
        except Cancelled:
            print("analyze stopped: the networks measured so far are cached; nothing else is reported",
                  file=sys.stderr)
            return 130
        except (PrecisionError, ValueError) as e:
            raise CliError(str(e)) from None
    written = []
    if args.out:
        from engine.studies.lineup_report import write_lineup_report

        try:
            written = write_lineup_report(result, args.out)
        except OSError as e:
            raise CliError(f"--out {args.out}: {e.strerror or e}") from None
    if args.json:
        print_json(result.to_dict())
        return 0
    print_lineup(result)
    if written:
        print(f"\nwrote {len(written)} files into {terminal_text(str(args.out))}: open report.html")
    return 0


def print_lineup(result) -> None:
    how = "all cached" if result.cached else f"{result.seconds:.0f} s"
    print(f"line-up {result.lineup}: {len(result.entries)} networks on {result.device} ({result.threads} "
          f"thread{'s' if result.threads != 1 else ''}), {result.precision}, batch 1 to {result.max_batch}; {how}")
    rows = []
    for e in result.entries:
        n = e.network
        top1 = "-" if n.top1 is None else f"{100 * n.top1:.1f}%" + (" pub." if n.top1_kind == "published" else "")
        peak = n.batches[0].peak_mb
        rows.append([n.label, e.group, e.year, f"{n.macs / 1e9:.2f}", f"{n.params / 1e6:.1f}", top1,
                     f"{n.latency_ms:.1f}", f"{n.batches[0].ms_per_image_p95:.1f}",
                     "-" if peak is None else f"{peak:.0f}", f"{n.layers_ratio:.2f}",
                     "cached" if e.cached else ("BROKEN: " + "; ".join(e.problems) if e.problems else "sound")])
    print(format_table(["network", "group", "year", "G MACs", "M params", "top-1", "ms b=1", "p95",
                        "MB b=1", "layers/whole", "timing"], rows, right={2, 3, 4, 5, 6, 7, 8, 9}))
    print("  ms: p50 of batch 1, warm, the network alone, random weights (the time does not depend on them); "
          "MB: what the process took while batch 1 ran; top-1 pub.: torchvision's published ImageNet-1K "
          "validation figure for its weights, not measured here; ENet and LeNet-5: none published")
    print(f"  not measured: {', '.join(result.not_measured)} (the survey's, not built by torchvision)")
    print()
    for v in result.verdicts:
        head = {True: "HOLDS", False: "DOES NOT HOLD", None: "NOT JUDGED"}[v.holds]
        weak = " (weak)" if v.weak else ""
        stat = "-" if v.value is None else (f"{v.value:.0f}" if v.claim == "density" else f"{v.value:.2f}")
        print(textwrap.fill(f"{head}{weak}: {v.text}", width=100, subsequent_indent="  "))
        print(f"  statistic: {v.statistic} = {stat}; {v.interval_text}; {v.n} networks")


def cmd_info_lineup(args: argparse.Namespace) -> int:
    from engine.studies.lineup import NOT_IN_TORCHVISION, lineup_specs, published_of
    from engine.studies.lineup_analysis import cost_of

    if args.profile not in (None, "imagenet"):
        raise CliError(f"--lineup {args.lineup}: the line-ups are ImageNet networks; use --profile imagenet")
    rows = []
    for spec, group in lineup_specs(args.lineup):
        cost, pub = cost_of(spec, group), published_of(spec)
        rows.append({"name": spec.name, "label": spec.display, "group": group, "year": spec.year,
                     "input_size": list(spec.input_size), "params": cost.params, "macs": cost.macs,
                     "published_weights": pub.weights if pub else None,
                     "published_top1": pub.top1 if pub else None, "published_top5": pub.top5 if pub else None,
                     "published_gops": pub.gops if pub else None, "published_params": pub.params if pub else None})
    if args.json:
        print_json({"lineup": args.lineup, "networks": rows, "not_measured": list(NOT_IN_TORCHVISION)})
        return 0
    table = [[r["label"], r["group"], r["year"], "x".join(map(str, r["input_size"])), f"{r['params'] / 1e6:.1f}",
              "-" if r["published_params"] is None else f"{r['published_params'] / 1e6:.1f}",
              f"{r['macs'] / 1e9:.2f}", "-" if r["published_gops"] is None else f"{r['published_gops']:.2f}",
              "-" if r["published_top1"] is None else f"{100 * r['published_top1']:.1f}%",
              r["published_weights"] or "none published"] for r in rows]
    print(f"line-up {args.lineup} (imagenet): the four of the comparison and the networks it adds")
    print(format_table(["network", "group", "year", "input", "M params", "pub. M params", "G MACs", "pub. G ops",
                        "pub. top-1", "published for"], table, right={2, 4, 5, 6, 7, 8}))
    print("  M params, G MACs: counted here on the network as it runs (no auxiliary heads); pub.: torchvision's "
          "weights metadata (its 'GFLOPS' count multiply-adds), offline")
    print(f"  not measured: {', '.join(NOT_IN_TORCHVISION)} (the survey's, not built by torchvision)")
    return 0
