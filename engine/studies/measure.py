"""Measuring one network for the Analysis: time per image at each batch size, memory per batch,
and the time of every layer inside whole passes, checked against the whole pass."""

from __future__ import annotations

import copy
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.common.timing import timed_runs
from engine.jobs import JobState
from engine.models.adapter import ModelAdapter
from engine.models.complexity import complexity
from engine.models.registry import ModelSpec
from engine.runtime.backends import make_runner
from engine.runtime.device import synchronize
from engine.runtime.precision import precision_of_dtype
from engine.studies.analysis_results import BatchPoint, LayerTime, NetworkAnalysis


def batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch`` (which is included when it is not a power of two)."""
    if max_batch < 1:
        raise ValueError("the largest batch must be at least 1")
    sizes = [1]
    while sizes[-1] * 2 <= max_batch:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sizes


def _sync(device: torch.device):
    return (lambda: synchronize(device)) if device.type == "cuda" else None


class _RssPeak:
    """The process's resident memory, sampled every millisecond on a thread, while inside."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._stop = threading.Event()
        self.base = self.peak = 0

    def __enter__(self) -> _RssPeak:
        self.base = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, name="rss sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def grown_mb(self) -> float:
        return (self.peak - self.base) / 1e6


def _peak_memory_mb(forward: Callable[[torch.Tensor], object], x: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward(x)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 1e6
    trim_heap()  # freed memory goes back to the system, so what the pass needs shows as growth
    with _RssPeak() as rss:
        forward(x)
    return rss.grown_mb


def trim_heap() -> None:
    """glibc's ``malloc_trim``: the allocator keeps freed memory for reuse, and a pass that reuses
    it would show no growth at all. Elsewhere (macOS, musl) nothing is done."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def timed_units(model: nn.Module) -> list[str]:
    """The modules whose times add up to a forward pass: the first module below the root along each
    path that is not a plain container (a layer, or a composite block such as an ENet bottleneck)."""
    from engine.runtime.session import is_container

    units = []
    for name, module in model.named_modules():
        if not name or is_container(module):
            continue
        parent = name.rpartition(".")[0]
        parents_plain = all(is_container(model.get_submodule(p)) for p in _prefixes(parent))
        if parents_plain:
            units.append(name)
    return units


def _prefixes(name: str) -> list[str]:
    if not name:
        return []
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _fresh(value: Any) -> Any:
    """A recorded argument as a layer may take it again: lists (ENet's stack of pool indices, which
    its blocks push to and pop from) are copied for every call."""
    return list(value) if isinstance(value, list) else value


def layer_times(spec: ModelSpec, model: nn.Module, x: torch.Tensor, device: torch.device, *,
                check: Callable[[], None] | None = None, quick: bool = False,
                runs: int | None = None) -> tuple[list[LayerTime], float]:
    """The time of every timed unit inside whole batch-1 forward passes, and of the pass itself;
    returns (layers in forward order, whole pass p50 ms without any hook).

    Each unit's time runs from its pre-hook to its post-hook: the clock on the CPU (where every
    op has finished when it returns, so the hooks wait for nothing), CUDA events on a GPU (recorded
    in the stream, read after the pass: no synchronisation inside it). Timing each layer alone on a
    recorded input was tried first and rejected: alone, a layer finds its weights and input in the
    cache, and AlexNet's layers summed to 55% of the real pass. Here the layers run as they do in
    the pass; what the hooks cost lies between the units, not inside them. ``quick``: fewer passes
    (a test's budget), medians still over at least 10; ``runs``: the fewest passes of each series (a
    line-up of big networks). MACs are counted for each unit alone on the input it received."""
    adapter = ModelAdapter(spec, model)
    units = timed_units(model)
    on_gpu = device.type == "cuda"
    spans: dict[str, list[float]] = {n: [] for n in units}
    order: list[str] = []
    open_: dict[str, object] = {}
    recorded: dict[str, tuple[tuple, dict]] = {}

    def pre(name: str):
        def hook(_module, args, kwargs):
            if name not in recorded:
                recorded[name] = (tuple(_fresh(a) for a in args), {k: _fresh(v) for k, v in kwargs.items()})
                order.append(name)
            if on_gpu:
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                open_[name] = event
            else:
                open_[name] = time.perf_counter()
        return hook

    def post(name: str):
        def hook(_module, _args, _output):
            started = open_.pop(name)
            if on_gpu:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                spans[name].append((started, end))  # type: ignore[arg-type]
            else:
                spans[name].append((time.perf_counter() - started) * 1000)  # type: ignore[operator]
        return hook

    def whole() -> list[float]:
        return timed_runs(lambda: adapter(x), sync=_sync(device), min_runs=runs or (10 if quick else 20),
                          max_runs=400, min_seconds=0.05 if quick else 0.3, check=check, warmup=1 if runs else 2)

    with torch.inference_mode():
        before = whole()
        handles = []
        for name in units:
            module = model.get_submodule(name)
            handles.append(module.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(module.register_forward_hook(post(name)))
        try:
            timed_runs(lambda: adapter(x), sync=_sync(device), min_runs=runs or (10 if quick else 30), max_runs=400,
                       min_seconds=0.05 if quick else 0.3, check=check, warmup=1 if runs else 2)
        finally:
            for h in handles:
                h.remove()
        if on_gpu:
            torch.cuda.synchronize(device)
            for name, pairs in spans.items():
                spans[name] = [a.elapsed_time(b) for a, b in pairs]  # type: ignore[union-attr]
        after = whole()
        out = []
        for name in order:
            module = model.get_submodule(name)
            args, kwargs = recorded[name]
            counter = FlopCounterMode(display=False)
            with counter:
                module(*(_fresh(a) for a in args), **{k: _fresh(v) for k, v in kwargs.items()})
            times = spans[name][2:] or spans[name]  # the warm-up passes out
            out.append(LayerTime(name, type(module).__name__, statistics.median(times),
                                 counter.get_total_flops() // 2, sum(p.numel() for p in module.parameters())))
    return out, statistics.median(before + after)


def measure_network(spec: ModelSpec, model: nn.Module, device: torch.device, max_batch: int, *,
                    dtype: torch.dtype = torch.float32, top1: float | None = None, top1_kind: str = "none",
                    weights: str = "", job: JobState | None = None,
                    on_step: Callable[[str], None] | None = None, backend: str = "torch", cost=None,
                    runs: int | None = None) -> NetworkAnalysis:
    """Every measurement of one network (see the module's docstring). On a ``backend`` other than
    torch eager, the batches are timed on its runner (its graph without taps), and there are no
    per-layer times: ``forward_ms`` is then batch 1's p50. ``cost``: the network's Complexity where
    it is not registered; ``runs``: the fewest timed runs of each batch and of each layer series."""
    check = job.check if job is not None else None
    cost = cost or complexity(spec.name, spec.profile)
    model = model.to(device).eval()
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    # ONNX Runtime exports the float32 weights (it runs float32), before any bf16 copy; random
    # weights are not cached
    runner = make_runner(backend, ModelAdapter(spec, model), device=device, precision=precision_of_dtype(dtype),
                         cache=weights != "untrained")
    if dtype != torch.float32:
        model = copy.deepcopy(model).to(dtype)
    adapter = ModelAdapter(spec, model)
    forward = adapter if runner is None else runner.run_raw
    points = []
    for b in batch_sizes(max_batch):
        if on_step is not None:
            on_step(f"{spec.display}: batch {b}")
        x = torch.randn((b, *spec.input_size), device=device, generator=None).to(dtype)
        if device.type == "cpu" and backend != "onnxruntime":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if backend == "compile":  # its first call at a new size compiles: not what memory measures
                forward(x)
            peak = _peak_memory_mb(forward, x, device)  # first: nothing of this size cached yet
            # at least 5 runs, more for fast batches until 0.5 s; the largest batches of a big
            # network at 224x224 take seconds a run, so 3 of those
            slow = b * cost.macs > 5e10
            times = timed_runs(lambda x=x: forward(x), sync=_sync(device), min_runs=runs or (3 if slow else 5),
                               min_seconds=0.0 if slow else 0.5, max_runs=200, warmup=1, check=check)
        p50, p95 = float(np.percentile(times, 50)), float(np.percentile(times, 95))
        points.append(BatchPoint(b, p50 / b, p95 / b, len(times), cost.activation_mb * b, peak))
    if runner is not None:
        return NetworkAnalysis(spec.name, spec.display, cost.macs, cost.params, top1, top1_kind, weights,
                               points[0].ms_per_image_p50, tuple(points), ())
    if on_step is not None:
        on_step(f"{spec.display}: layer by layer")
    x1 = torch.randn((1, *spec.input_size), device=device).to(dtype)
    if device.type == "cpu":
        x1 = x1.contiguous(memory_format=torch.channels_last)
    layers, forward_ms = layer_times(spec, model, x1, device, check=check, runs=runs)
    return NetworkAnalysis(spec.name, spec.display, cost.macs, cost.params, top1, top1_kind, weights,
                           forward_ms, tuple(points), tuple(layers))


def analysis_threads() -> int:
    """The torch threads a measurement uses: one per physical core (torch's own default), whichever
    thread runs it (the window's engine keeps a core for decoding; the source is paused here)."""
    import psutil

    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def machine_name() -> str:
    """The processor and core count in words (what the cache is keyed by, with the host name)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"
