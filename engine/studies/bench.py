"""``python main.py bench``: what the engine costs, measured against the floor, in one process.

Per network:

- ``raw_ms_p50``: a tight loop of the bare forward pass (same model object, same input tensor,
  ``inference_mode``): the floor no application can beat;
- ``engine_ms_p50``: the same network inside :class:`~engine.runtime.session.InferenceSession`, with one
  layer's activations captured, from the input tensor to the finished immutable result;
- ``ratio``: engine / raw, the engine's overhead (1.00 is none);
- ``images_per_s``: batch throughput (batch 256, or less when memory or time forbids).

Raw and engine runs are interleaved in short blocks so that a change in machine load hits both.
With ``--source`` the whole engine (all networks, activations on, the feeder and worker threads)
runs for ``--frames`` frames and reports the pipeline's frame rate, the process's resident memory
before and after, and the threads left behind.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from engine.common.timing import time_ms
from engine.data.imageio import InputError, display_name
from engine.jobs import JobProgress, JobState
from engine.live.events import Error, ModelCard, ModelUpdated, SessionReady
from engine.live.metrics import percentiles
from engine.live.sources import open_source
from engine.live.worker import Engine
from engine.runtime.device import engine_threads, synchronize
from engine.runtime.session import InferenceSession


def rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def bench_latency(session: InferenceSession, runs: int = 200, warmup: int = 20, block: int = 10,
                  min_seconds: float = 0.0, job: JobState | None = None) -> dict[str, dict]:
    """Raw versus engine latency for every network of ``session`` (activation capture as set), on
    the backend each network runs on.

    - ``raw``: the bare pass, no taps: torch's module call, or the runtime's own call of the graph
      without tap outputs (``session.run`` for ONNX Runtime);
    - ``graph`` (other backends only): the runtime's call of the very graph the engine runs, tap
      outputs included, so that ``engine / graph`` is the engine's own overhead;
    - ``engine``: :meth:`InferenceSession._forward` (or its runner form), input tensor to result.

    At least ``runs`` of each, and more for a fast network until ``min_seconds`` have passed: a
    median over a few hundred sub-millisecond runs moves with the machine's load. With a ``job``:
    progress by network, a cancel between blocks of runs, and the networks measured so far in
    ``job.partial["latency"]``.
    """
    out: dict[str, dict] = {}
    if job is not None:
        job.partial["latency"] = out
    for i, name in enumerate(session.names):
        if job is not None:
            job.check()
            job.report(JobProgress("bench", i, len(session.names), f"latency {name}", "networks"))
        # a few exact runs (--runs N) get as few warm-up runs, at least 3
        out[name] = _network_latency(session, name, runs, min(warmup, max(3, runs)), block, min_seconds, job)
    return out


def _network_latency(session: InferenceSession, name: str, runs: int, warmup: int, block: int, min_seconds: float,
                     job: JobState | None) -> dict:
    spec, net = session.spec(name), session.network(name)
    c, h, w = spec.input_size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    view = net.preprocess.view(frame)
    session._apply_probes()
    x = session.input_for(name, view)
    runner, setup = net.runner, net.setup
    if runner is None:
        forward = session.adapter(name)
    else:
        def forward(x):
            return runner.run_raw(x)

    def engine_run():
        return net.answer(setup, x, view, 0.0)
    raw, engine, graph = [], [], []
    sync = lambda: synchronize(session.device)  # noqa: E731
    with torch.inference_mode():
        for _ in range(warmup):
            engine_run()
            if runner is not None:
                forward(x)
        with session.bare(name):
            for _ in range(warmup):
                forward(x)
        started = time.perf_counter()
        while len(raw) < runs or time.perf_counter() - started < min_seconds:
            if job is not None:
                job.check()
            size = block if len(raw) + block <= runs or len(raw) >= runs else runs - len(raw)
            with session.bare(name):  # the floor runs without the taps
                for _ in range(size):
                    raw.append(time_ms(lambda: forward(x), sync))
            for _ in range(size):
                engine.append(engine_run().forward_ms)
            if runner is not None:
                for _ in range(size):
                    graph.append(time_ms(lambda: forward(x), sync))
    raw_p50, raw_p95, _ = percentiles(raw)
    eng_p50, eng_p95, _ = percentiles(engine)
    out = {"backend": net.backend, "raw_ms_p50": raw_p50, "raw_ms_p95": raw_p95, "engine_ms_p50": eng_p50,
                 "engine_ms_p95": eng_p95, "ratio": eng_p50 / raw_p50 if raw_p50 > 0 else float("nan"),
                 "captured": list(net.capture), "runs": len(raw)}
    if graph:
        graph_p50, graph_p95, _ = percentiles(graph)
        out.update({"graph_ms_p50": graph_p50, "graph_ms_p95": graph_p95,
                          "overhead": eng_p50 / graph_p50 if graph_p50 > 0 else float("nan")})
    return out


def bench_throughput(session: InferenceSession, name: str, batch: int, seconds: float = 3.0,
                     job: JobState | None = None) -> tuple[float, int]:
    """Images per second at the largest batch up to ``batch`` that fits; returns (rate, batch).
    A ``job`` can cancel it between batches."""
    spec, net = session.spec(name), session.network(name)
    # a runner's batch pass runs on every thread it was given (ONNX Runtime may run batch 1 on one)
    forward = session.adapter(name) if net.runner is None else net.runner.run_batch
    batch = min(batch, memory_bound_batch(session, name))
    while batch >= 1:
        try:
            _, dtype, channels_last = net.input_key
            try:
                x = torch.randn((batch, *spec.input_size), device=session.device, dtype=dtype)
            except RuntimeError:  # the allocator's refusal (the CPU's is a plain RuntimeError)
                batch //= 2
                continue
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), session.bare(name):
                forward(x)  # warm up (and find out whether it fits)
                synchronize(session.device)
                done, t0 = 0, time.perf_counter()
                while done == 0 or time.perf_counter() - t0 < seconds:
                    if job is not None:
                        job.check()
                    forward(x)
                    done += batch
                synchronize(session.device)
            return done / (time.perf_counter() - t0), batch
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch //= 2
    return 0.0, 0


def memory_bound_batch(session: InferenceSession, name: str, share: float = 0.5) -> int:
    """The largest batch whose input and activations (every layer's output held at once, fp32: an
    upper bound) take at most ``share`` of the memory free now on the session's device; at least 1.
    On the CPU, a batch past the memory is not refused at once: the system swaps, or kills the process."""
    import math

    import psutil

    from engine.models.complexity import complexity

    spec = session.spec(name)
    per_image = 4 * math.prod(spec.input_size)
    try:
        per_image += complexity(name, session.profile).activation_mb * 1e6
    except Exception:  # noqa: BLE001 - a network the counter cannot trace: its input alone bounds it
        pass
    if session.device.type == "cuda":
        free = torch.cuda.mem_get_info(session.device)[0]
    else:
        free = psutil.virtual_memory().available
    return max(1, int(free * share // per_image))


def machine_peak(device: torch.device, size: int = 2048, seconds: float = 0.5,
                 dtype: torch.dtype = torch.float32) -> dict:
    """The machine's matmul rate in GFLOP/s in ``dtype`` (a ``size`` x ``size`` matmul, best of the
    runs in ``seconds``, on torch's current threads): the ceiling the networks' rates in that dtype
    are compared with. Cached per device, CPU model, thread count, dtype and torch version under
    the user's cache folder."""
    import json
    import platform

    from engine.common.settings import cache_dir as default_cache_dir
    from engine.runtime.device import device_label

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    name = str(dtype).replace("torch.", "")
    key = f"{device_label(device)}|{cpu}|{torch.__version__}|{size}|{name}"
    path = default_cache_dir() / "peak.json"
    try:
        cached = json.loads(path.read_text())
        if isinstance(cached, dict) and isinstance(cached.get(key), dict):
            return cached[key]
    except (OSError, ValueError):
        cached = {}
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    with torch.inference_mode():
        a @ b
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or best == float("inf"):
            best = min(best, time_ms(lambda: a @ b, lambda: synchronize(device)))
    short = {"float32": "fp32", "bfloat16": "bf16"}.get(name, name)
    result = {"gflops": 2 * size**3 / (best / 1000) / 1e9, "what": f"{short} {size}x{size} matmul, best run",
              "device": device_label(device), "cpu": cpu}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**(cached if isinstance(cached, dict) else {}), key: result}))
    except OSError:
        pass
    return result


def card_fields(card: ModelCard) -> dict:
    """What runs one network in a pipeline, and why (the times measured at load or on live frames)."""
    return {"backend": card.backend, "precision": card.precision, "backend_note": card.backend_note,
            "precision_note": card.precision_note, "threads": card.threads, "threads_note": card.threads_note}


def bench_pipeline(session_args: dict, target: str, frames: int) -> dict:
    """The whole engine on a source (looped until ``frames`` frames) with all activations on.
    Only frames the networks answered count; a source that cannot be read, or yields no readable
    frame in a whole pass, raises :class:`~engine.data.imageio.InputError`."""
    threads_before = threading.active_count()
    rss_before_load = rss_mb()
    rss_start: list[float] = []  # at the first result: networks loaded, buffers allocated
    done = threading.Event()
    count = 0
    errors: list[str] = []
    first: list[float] = []

    def on_result(result, snapshot) -> None:
        nonlocal count
        if not result.ok or not result.results:  # an unreadable frame is not a frame per second
            return
        count += 1
        if count == 1:
            first.append(time.perf_counter())
            rss_start.append(rss_mb())
        if count >= frames:
            done.set()

    cards: dict[str, dict] = {}

    def on_event(event) -> None:
        if isinstance(event, Error):
            errors.append(event.text)
        elif isinstance(event, SessionReady):  # what runs each network, and why (the times auto measured)
            cards.clear()
            cards.update({m.name: card_fields(m) for m in event.models})
        elif isinstance(event, ModelUpdated):  # a choice timed again on the first frames
            cards[event.card.name] = card_fields(event.card)

    engine = Engine(on_result=on_result, on_event=on_event, **session_args).start()
    try:
        probe = open_source(target)  # fail early, with the source's own message
        probe.close()
        while not done.is_set():
            engine.set_source(target, realtime=False)
            while not done.is_set() and not engine.wait_idle(timeout=0.5):
                pass
            if count == 0:
                raise InputError(errors[0] if errors else f"{display_name(target)}: no frame could be read")
        elapsed = time.perf_counter() - first[0]
        snapshot = engine.last[1] if engine.last else None
    finally:
        stopped = engine.stop(timeout=2.0)
    time.sleep(0.2)  # let finished threads leave threading's table
    return {"pipeline_fps": (count - 1) / elapsed if count > 1 and elapsed > 0 else None, "frames": count,
            "rss_before_load_mb": rss_before_load, "rss_start_mb": rss_start[0] if rss_start else None,
            "rss_end_mb": rss_mb(), "dropped": engine.dropped,
            "engine_stopped": stopped, "threads_left": threading.active_count() - threads_before,
            "latency_ms_p50": {n: s.p50_ms for n, s in snapshot.models.items()} if snapshot else {},
            "torch_threads": engine.threads or engine_threads(), "networks": cards}
