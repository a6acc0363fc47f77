"""``python main.py analyze``: the survey's claims measured on this machine (see
:mod:`engine.studies.analysis`), as a table and three verdicts, JSON, or a folder with report.html."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap

from engine.cli.args import parse_backends
from engine.cli.output import CliError, JobProgressBar, format_table, print_json, stop_on_signals, terminal_text
from engine.jobs import Cancelled, JobState
from engine.models.registry import RegistryError
from engine.runtime.backends import label
from engine.runtime.precision import PrecisionError
from engine.studies.analysis import analyze, cache_key, load_cached, save_cached
from engine.studies.verdict_stats import WEAK_BELOW


def cmd_analyze(args: argparse.Namespace) -> int:
    if args.out:  # before measuring: a folder that cannot take the report is said at once
        from engine.studies.analysis_report import ReportError, check_out

        try:
            check_out(args.out)
        except ReportError as e:
            raise CliError(f"--out {e}") from None
    if args.lineup != "four":
        from engine.cli.lineup import cmd_analyze_lineup

        return cmd_analyze_lineup(args)
    args.max_batch = args.max_batch or (8 if args.quick else 64)
    backends = [b for b in parse_backends(args.backend) if b != "auto"]
    if any(":" in b for b in backends):
        raise CliError("--backend: analyze measures every backend in --precision; a backend's own number format "
                       "(NAME:PRECISION) is for bench")
    try:
        key = cache_key(args.profile, args.device, args.precision, args.max_batch, backends=backends)
    except (RegistryError, ValueError) as e:
        raise CliError(str(e)) from None
    result = None if args.fresh else load_cached(key)
    if result is None:
        job = JobState(on_progress=None if args.json else JobProgressBar())
        with stop_on_signals(job):
            try:
                result = analyze(args.profile, args.device, max_batch=args.max_batch, precision=args.precision,
                                 job=job, backends=backends)
            except Cancelled:
                print("analyze stopped: nothing is reported from an incomplete measurement", file=sys.stderr)
                return 130
            except (PrecisionError, RegistryError, ValueError) as e:
                raise CliError(str(e)) from None
        save_cached(key, result)
    written = []
    if args.out:
        from engine.studies.analysis_report import write_report

        try:
            written = write_report(result, args.out)
        except OSError as e:
            raise CliError(f"--out {args.out}: {e.strerror or e}") from None
    stats = statistics(result)
    if args.json:
        print_json({**result.to_dict(), "statistics": [dataclasses.asdict(v) for v in stats]})
        return 0
    when = f"cached from {result.created} (--fresh measures again)" if result.cached else \
        f"measured in {result.seconds:.0f} s"
    print(f"profile {result.profile}, {result.device} ({result.threads} threads), {result.precision}, "
          f"batch 1 to {result.max_batch}; {when}")
    rows = [[n.label, f"{n.macs / 1e6:.1f}", f"{n.params / 1e6:.3f}",
             "-" if n.top1 is None else f"{100 * n.top1:.1f}%" + (" pub." if n.top1_kind == "published" else ""),
             f"{n.latency_ms:.3f}", f"{n.batches[-1].ms_per_image_p50:.3f}", f"{n.layers_ratio:.2f}",
             "-" if n.density is None else f"{n.density:.0f}"] for n in result.networks]
    print(format_table(["network", "M MACs", "M params", "top-1", "ms b=1", f"ms/img b={result.max_batch}",
                        "layers/whole", "top-1/M params"], rows, right={1, 2, 3, 4, 5, 6, 7}))
    print("  ms: p50, warm, the network alone; layers/whole: the layers' times inside whole passes, summed, "
          "against the pass; top-1: the weights' own test figure (CIFAR-10 with flip TTA) or torchvision's "
          "published one (pub.)")
    for note in result.notes:
        print(f"  {terminal_text(note)}")
    print()
    print_verdicts(result.verdicts)
    for v in stats:  # each claim's statistic over these networks: few networks make it weak
        value = "-" if v.value is None else f"{v.value:.0f}" if v.claim == "density" else f"{v.value:.2f}"
        print(f"  {v.claim}: {v.statistic} = {value}; {v.interval_text}; {v.n} networks"
              + (f" (weak: fewer than {WEAK_BELOW}; --profile imagenet --lineup paper judges on 12)" if v.weak else ""))
    for view in result.backends:
        print(f"\non {label(view.backend)} (the same networks, batch 1 to {result.max_batch}; no per-layer times):")
        rows = [[n.label, f"{n.macs / 1e6:.1f}", f"{n.latency_ms:.3f}", f"{n.batches[-1].ms_per_image_p50:.3f}",
                 f"{torch_ms / n.latency_ms:.2f}x" if (torch_ms := _torch_ms(result, n.name)) else "-",
                 f"{2 * n.macs / (n.latency_ms / 1000) / 1e9:.1f}" if n.latency_ms > 0 else "-"]
                for n in view.networks]
        print(format_table(["network", "M MACs", "ms b=1", f"ms/img b={result.max_batch}", "speed-up on torch",
                            "GFLOP/s b=1"], rows, right={1, 2, 3, 4, 5}))
        for note in view.notes:
            print(f"  {terminal_text(note)}")
        print_verdicts(view.verdicts[:2])  # the density verdict does not depend on time
    if written:
        print(f"\nwrote {len(written)} files into {terminal_text(str(args.out))}: open report.html")
    return 0


def statistics(result):
    """The claims' statistics on the analysis's networks with their bootstrap intervals
    (engine.studies.verdict_stats), none on time where a timing failed its checks."""
    from engine.studies.busy import busy_of
    from engine.studies.verdict_stats import judge_lineup

    return judge_lineup(result.networks, busy_of(result.networks, result.load))


def print_verdicts(verdicts) -> None:
    for verdict in verdicts:
        head = {True: "HOLDS", False: "DOES NOT HOLD", None: "NOT JUDGED"}[verdict.holds]
        print(textwrap.fill(f"{head}: {verdict.text}", width=100, subsequent_indent="  "))


def _torch_ms(result, name: str) -> float | None:
    return next((n.latency_ms for n in result.networks if n.name == name), None)
