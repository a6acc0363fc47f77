"""``python main.py bench``: latency against the floor, throughput, and the whole pipeline (see
:mod:`engine.studies.bench` for what each number covers)."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from engine.cli.args import parse_backends, parse_weights
from engine.cli.output import CliError, JobProgressBar, format_table, print_json, stop_on_signals
from engine.data.imageio import InputError
from engine.jobs import Cancelled, JobProgress, JobState
from engine.models.complexity import complexity
from engine.models.registry import RegistryError
from engine.models.weights import WeightsError
from engine.runtime.backends import BackendError, label
from engine.runtime.device import clamp_threads, cpu_features, device_label, machine_load
from engine.runtime.onnx_cache import onnxruntime_version
from engine.runtime.precision import PrecisionError
from engine.runtime.session import InferenceSession
from engine.studies.bench import bench_latency, bench_pipeline, bench_throughput, machine_peak


def cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        args.threads = clamp_threads(args.threads, "--threads")  # also the engine's, with --source
        torch.set_num_threads(args.threads)
    if args.source and not (args.source.isdigit() or "://" in args.source or os.path.exists(args.source)):
        raise CliError(f"{args.source}: no such file or folder")
    # --runs N means N runs; without it, 200 runs and more until --min-seconds (2 s) have passed
    runs = args.runs or 200
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.0 if args.runs else 2.0)
    if not min_seconds >= 0:
        raise CliError("--min-seconds must be 0 or more")
    weights = parse_weights(args.weights)
    backends = parse_backends(args.backend)
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    busy = machine_load()
    if busy is not None:
        print(f"warning: {busy}: the figures will be slower and noisier than on an idle machine",
              file=sys.stderr, flush=True)
    job = JobState(on_progress=None if args.json else JobProgressBar())
    runs_by_backend: dict[str, dict] = {}
    device = None
    for backend in backends:
        name, _, precision = backend.partition(":")  # onnxruntime:fp32 - its own number format
        try:
            session = InferenceSession(args.profile, args.device, weights=weights,
                                       precision=precision or args.precision, backend=name)
        except (RegistryError, WeightsError, PrecisionError, BackendError) as e:
            raise CliError(str(e)) from None
        for message in session.messages:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        if device is None:
            device = session.device
            if args.device not in ("cpu", "auto") and device.type == "cpu":
                print(f"warning: {args.device} is not available: measuring on the CPU", flush=True)
            threads = torch.get_num_threads()
            log(f"CPU: {cpu_features()}" if device.type == "cpu" else f"device: {device_label(device)}")
            log(f"latency on {device}, {threads} thread{'s' if threads != 1 else ''}, "
                f"{runs} runs per network{'' if args.runs else ' or more'}, backends: {', '.join(backends)} ...")
        session.set_capture({n: (session.spec(n).default_layer,) for n in session.names})
        default_batch = args.batch or (256 if session.device.type == "cuda" or args.profile == "cifar10" else 16)
        with stop_on_signals(job):
            try:
                models = bench_latency(session, runs=runs, min_seconds=min_seconds, job=job)
                for name in session.names:
                    models[name]["precision"], models[name]["precision_note"] = session.precision_of(name)
                    models[name]["backend_note"] = session.backend_of(name)[1]
                    models[name]["runtime"] = session.decision(name).as_dict()
                    # the runtime's own threads at batch 1 (ONNX Runtime may pick 1 at load; batches use all)
                    models[name]["runtime_threads"] = getattr(session.runner(name), "threads", torch.get_num_threads())
                for i, name in enumerate(session.names):
                    job.report(JobProgress("bench", i, len(session.names), f"throughput {name} ({backend})",
                                           "networks"))
                    rate, batch = bench_throughput(session, name, default_batch, seconds=min_seconds, job=job)
                    models[name]["images_per_s"], models[name]["batch"] = rate, batch
            except BackendError as e:  # a tap set torch.compile could not compile
                raise CliError(str(e)) from None
            except Cancelled:  # Ctrl-C: a bench's numbers are only comparable when all are taken
                measured = ", ".join(job.partial.get("latency", {})) or "none"
                print(f"bench stopped; latency measured for: {measured} on {backend} (not reported: incomplete)",
                      file=sys.stderr)
                return 130
        runs_by_backend[backend] = models
        del session
    peak = machine_peak(device)
    peaks = {"fp32": peak}  # each network against the peak of the number format it ran in
    if any(m["precision"] == "bf16" for models in runs_by_backend.values() for m in models.values()):
        peaks["bf16"] = machine_peak(device, dtype=torch.bfloat16)
    for models in runs_by_backend.values():
        for name, m in models.items():
            macs = _macs(name, args.profile)
            m["macs"] = macs
            m["gflops"] = 2 * macs / (m["raw_ms_p50"] / 1000) / 1e9 if macs and m["raw_ms_p50"] > 0 else None
            # int8 against the fp32 peak: no kept library measures this CPU's int8 matmul rate
            peak_of = peaks.get(m["precision"], peaks["fp32"])
            m["peak_fraction"] = m["gflops"] / peak_of["gflops"] if m["gflops"] else None
    first = runs_by_backend[backends[0]]
    report = {"device": str(device), "threads": torch.get_num_threads(), "profile": args.profile,
              "torch": torch.__version__, "onnxruntime": onnxruntime_version(), "backends": list(backends),
              "cpu": cpu_features(),
              "peak": peak, "peaks": peaks, "by_backend": runs_by_backend, "models": first, "pipeline_fps": None,
              "frames": 0, "rss_start_mb": None, "rss_end_mb": None}
    if args.source:
        report["pipelines"] = {}
        for backend in backends:
            log(f"pipeline: {args.frames} frames of {args.source} through the engine on {backend} ...")
            try:
                pipeline = bench_pipeline({"profile": args.profile, "device": args.device, "threads": args.threads,
                                           "weights": weights,
                                           "precision": backend.partition(":")[2] or args.precision,
                                           "backend": backend.partition(":")[0]},
                                          args.source, args.frames)
            except InputError as e:
                raise CliError(str(e)) from None
            report["pipelines"][backend] = pipeline
        report.update(report["pipelines"][backends[0]])
    if args.json:
        print_json(report)
        return 0
    rows = []
    for backend, models in runs_by_backend.items():
        for n, m in models.items():
            graph = f"{m['graph_ms_p50']:.3f}" if "graph_ms_p50" in m else ""
            overhead = f"{m['overhead']:.2f}" if "overhead" in m else ""
            rows.append([n, label(m["backend"]) + ("" if m["backend"] == backend.partition(":")[0]
                                                   else f" (asked {backend})"),
                         m["precision"], f"{m['raw_ms_p50']:.3f}", f"{m['raw_ms_p95']:.3f}", graph,
                         f"{m['engine_ms_p50']:.3f}", f"{m['ratio']:.2f}", overhead,
                         f"{m['gflops']:.1f}" if m["gflops"] else "", f"{100 * m['peak_fraction']:.0f}%"
                         if m["peak_fraction"] else "", f"{m['images_per_s']:.0f} (batch {m['batch']})"])
    print(format_table(["model", "backend", "precision", "raw p50", "raw p95", "graph p50", "engine p50",
                        "engine/raw", "engine/graph", "GFLOP/s", "of matmul", "images/s"], rows,
                       right={3, 4, 5, 6, 7, 8, 9, 10}))
    print(f"ms, batch 1, warm; raw: the bare pass without taps; graph: the backend's own call of the graph the "
          f"engine runs (with the tap on {', '.join(sorted({c for m in first.values() for c in m['captured']}))}); "
          "engine: input tensor to finished result. GFLOP/s: 2 x MACs / raw p50; of matmul: against the machine's "
          "peak as the best large matmul in the network's number format measures it, " +
          ", ".join(f"{p['gflops']:.0f} GFLOP/s ({p['what']})" for p in peaks.values()) +
          ("; int8 networks against the fp32 peak" if any(m["precision"] == "int8" for models in
                                                         runs_by_backend.values() for m in models.values()) else "") +
          "; a network's convolutions can beat it (over 100%).")
    for backend, models in runs_by_backend.items():
        for n, m in models.items():
            for note in (m["precision_note"], m["backend_note"]):
                if note:
                    print(f"  {n} ({backend}): {note}")
    for backend, pipeline in report.get("pipelines", {}).items():
        name, _, precision = backend.partition(":")
        print(f"pipeline on {label(name)}{' ' + precision if precision else ''}: {pipeline['pipeline_fps']:.1f} "
              f"frames/s over {pipeline['frames']} frames ({pipeline['dropped']} dropped); resident memory "
              f"{pipeline['rss_start_mb']:.0f} MB -> {pipeline['rss_end_mb']:.0f} MB "
              f"({pipeline['rss_end_mb'] - pipeline['rss_start_mb']:+.1f} MB); "
              f"threads left: {pipeline['threads_left']}")
        print("  per-network latency in the pipeline (p50 ms): " +
              ", ".join(f"{n} {v:.2f}" for n, v in pipeline["latency_ms_p50"].items()))
        print(f"  torch threads in the engine: {pipeline['torch_threads']} of {os.cpu_count() or 1} cores" +
              "".join(f"; {n}: {card['threads_note']}" for n, card in pipeline["networks"].items()
                      if card["threads_note"]))
    return 0


def _macs(name: str, profile: str) -> int | None:
    try:
        return complexity(name, profile).macs
    except (RegistryError, RuntimeError, ValueError):
        return None
