"""``python main.py bench``: latency against the floor, throughput, and the whole pipeline (see
:mod:`engine.bench` for what each number covers)."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from engine.bench import bench_latency, bench_pipeline, bench_throughput
from engine.cli import parse_weights
from engine.cli.output import CliError, JobProgressBar, format_table, print_json, stop_on_signals
from engine.device import machine_load
from engine.imageio import InputError
from engine.inference import InferenceSession
from engine.jobs import Cancelled, JobProgress, JobState
from engine.models.registry import RegistryError
from engine.precision import PrecisionError
from engine.weights import WeightsError


def cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.source and not (args.source.isdigit() or "://" in args.source or os.path.exists(args.source)):
        raise CliError(f"{args.source}: no such file or folder")
    # --runs N means N runs; without it, 200 runs and more until --min-seconds (2 s) have passed
    runs = args.runs or 200
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.0 if args.runs else 2.0)
    if not min_seconds >= 0:
        raise CliError("--min-seconds must be 0 or more")
    weights = parse_weights(args.weights)
    try:
        session = InferenceSession(args.profile, args.device, weights=weights, precision=args.precision)
    except (RegistryError, WeightsError, PrecisionError) as e:
        raise CliError(str(e)) from None
    if args.device not in ("cpu", "auto") and session.device.type == "cpu":
        print(f"warning: {args.device} is not available: measuring on the CPU", flush=True)
    session.set_capture({n: (session.spec(n).default_layer,) for n in session.names})
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    threads = torch.get_num_threads()
    log(f"latency on {session.device}, {threads} thread{'s' if threads != 1 else ''}, "
        f"{runs} runs per network{'' if args.runs else ' or more'} ...")
    busy = machine_load()
    if busy is not None:
        print(f"warning: {busy}: the figures will be slower and noisier than on an idle machine",
              file=sys.stderr, flush=True)
    job = JobState(on_progress=None if args.json else JobProgressBar())
    default_batch = args.batch or (256 if session.device.type == "cuda" or args.profile == "cifar10" else 16)
    with stop_on_signals(job):
        try:
            models = bench_latency(session, runs=runs, min_seconds=min_seconds, job=job)
            for name in session.names:
                models[name]["precision"], models[name]["precision_note"] = session.precision_of(name)
            for i, name in enumerate(session.names):
                job.report(JobProgress("bench", i, len(session.names), f"throughput {name}", "networks"))
                rate, batch = bench_throughput(session, name, default_batch, seconds=min_seconds, job=job)
                models[name]["images_per_s"], models[name]["batch"] = rate, batch
        except Cancelled:  # Ctrl-C: a bench's numbers are only comparable when all are taken
            measured = ", ".join(job.partial.get("latency", {})) or "none"
            print(f"bench stopped; latency measured for: {measured} (not reported: incomplete)", file=sys.stderr)
            return 130
    report = {"device": str(session.device), "threads": torch.get_num_threads(), "profile": args.profile,
              "torch": torch.__version__, "models": models, "pipeline_fps": None, "frames": 0,
              "rss_start_mb": None, "rss_end_mb": None}
    if args.source:
        log(f"pipeline: {args.frames} frames of {args.source} through the engine ...")
        del session
        try:
            report.update(bench_pipeline({"profile": args.profile, "device": args.device, "threads": args.threads,
                                          "weights": weights, "precision": args.precision}, args.source, args.frames))
        except InputError as e:
            raise CliError(str(e)) from None
        report["pipeline_threads"] = torch.get_num_threads()
    if args.json:
        print_json(report)
        return 0
    rows = [[n, m["precision"], f"{m['raw_ms_p50']:.3f}", f"{m['engine_ms_p50']:.3f}", f"{m['ratio']:.3f}",
             f"{m['images_per_s']:.0f} (batch {m['batch']})", ", ".join(m["captured"])] for n, m in models.items()]
    print(format_table(["model", "precision", "raw ms p50", "engine ms p50", "ratio", "images/s", "captured"], rows,
                       right={2, 3, 4}))
    for n, m in models.items():
        if m["precision_note"]:
            print(f"  {n}: {m['precision_note']}")
    if args.source:
        print(f"pipeline: {report['pipeline_fps']:.1f} frames/s over {report['frames']} frames "
              f"({report['dropped']} dropped); resident memory {report['rss_start_mb']:.0f} MB -> "
              f"{report['rss_end_mb']:.0f} MB ({report['rss_end_mb'] - report['rss_start_mb']:+.1f} MB); "
              f"threads left: {report['threads_left']}")
        print("per-network latency in the pipeline (p50 ms): " +
              ", ".join(f"{n} {v:.2f}" for n, v in report["latency_ms_p50"].items()))
    return 0
