"""The survey's three claims, measured on this machine (Canziani, Paszke and Culurciello 2016,
"An Analysis of Deep Neural Network Models for Practical Applications", arXiv 1605.07678):

1. the number of operations predicts inference time;
2. accuracy and inference time trade off hyperbolically: a little more accuracy costs ever more time;
3. ENet uses its parameters best (accuracy per parameter, "information density").

:func:`analyze` measures, for every network of a profile on one device:

- latency per image (p50, p95 of the batch's time divided by its size) at batch sizes 1, 2, 4, ...
  up to ``max_batch``, warm, on the bare network (no preprocessing, no activation capture);
- memory per batch size: the activations of one image as the engine counts them
  (:mod:`engine.models.complexity`: every layer's output, held at once) times the batch, and what the
  process really took: the growth of its resident memory while the batch ran, sampled every
  millisecond, after the C allocator has returned its free memory to the system (CPU), or
  ``torch.cuda.max_memory_allocated`` (CUDA). Inference frees each output once the next layer has
  read it, so the second is far below the first for deep networks;
- the time of every layer at batch 1 inside whole forward passes (a clock read in hooks before and
  after each layer on the CPU, CUDA events on a GPU: nothing synchronises inside the pass), median
  of many passes; the sum of the layers is checked against the whole pass measured without hooks
  (``layers_ratio``, 1.00 when they add up exactly; see :func:`layer_times`).

:func:`judge` turns the measurements into one sentence per claim, from the numbers alone; it is
pure, so made-up measurements test it. Nothing here imports Qt: the window, the CLI and the report
(:mod:`engine.studies.analysis_report`) all read the same immutable :class:`Analysis`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.common.timing import timed_runs
from engine.jobs import JobProgress, JobState
from engine.models.adapter import ModelAdapter
from engine.models.complexity import complexity
from engine.models.registry import ModelSpec, comparison_specs, get_spec
from engine.runtime.backends import EXPORT_FORMAT, BackendError, make_runner, onnxruntime_version
from engine.runtime.device import resolve_device, synchronize
from engine.runtime.precision import check_precision, dtype_of
from engine.studies.busy import CpuShare, judged, others_now, quiet_threads, sound

DEFAULT_MAX_BATCH = 64
PREDICTS_R2 = 0.8  # R² from which "operations predict time" is said to hold
CACHE_VERSION = 1


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPoint:
    batch: int
    ms_per_image_p50: float  # the batch's p50 time / batch
    ms_per_image_p95: float
    runs: int
    activation_mb: float  # the engine's count of one image's layer outputs (fp32), times the batch
    peak_mb: float | None  # the process's memory growth while the batch ran; None where not measured

    @property
    def images_per_s(self) -> float:
        return 1000.0 / self.ms_per_image_p50 if self.ms_per_image_p50 > 0 else 0.0


@dataclass(frozen=True)
class LayerTime:
    name: str
    kind: str  # the module's class name
    ms: float  # alone on its recorded batch-1 input, p50
    macs: int
    params: int


@dataclass(frozen=True)
class NetworkAnalysis:
    name: str
    label: str  # "VGG-16-BN"
    macs: int
    params: int
    top1: float | None  # 0..1
    top1_kind: str  # "test" (this project's CIFAR-10 test set), "published" (torchvision's ImageNet), "none"
    weights: str  # trained, bundled, downloaded, untrained, ...
    forward_ms: float  # the whole batch-1 forward pass, p50 (measured around the layer timings)
    batches: tuple[BatchPoint, ...]
    layers: tuple[LayerTime, ...]

    @property
    def latency_ms(self) -> float:
        """Batch-1 latency p50: the figure the claims are judged on."""
        return self.batches[0].ms_per_image_p50 if self.batches else self.forward_ms

    @property
    def layers_ms(self) -> float:
        return sum(layer.ms for layer in self.layers)

    @property
    def layers_ratio(self) -> float:
        """Sum of the layers' times / the whole pass's."""
        return self.layers_ms / self.forward_ms if self.forward_ms > 0 else float("nan")

    @property
    def density(self) -> float | None:
        """Top-1 (percent) per million parameters."""
        return 100 * self.top1 / (self.params / 1e6) if self.top1 is not None and self.params else None


@dataclass(frozen=True)
class Fit:
    """``ms = slope * MACs + intercept``, least squares, over ``n`` points."""

    slope: float  # ms per MAC
    intercept: float  # ms
    r2: float
    n: int

    def predict(self, macs: float) -> float:
        return self.slope * macs + self.intercept


@dataclass(frozen=True)
class Verdict:
    claim: str  # "operations", "tradeoff", "density"
    holds: bool | None  # None: cannot be judged here (the sentence says why)
    text: str


@dataclass(frozen=True)
class BackendView:
    """The same networks on another backend (engine.runtime.backends): batch latencies and memory
    (no per-layer times: the runtime has no hooks), and the verdicts judged on them."""

    backend: str  # onnxruntime, compile
    networks: tuple[NetworkAnalysis, ...]
    network_fit: Fit | None
    verdicts: tuple[Verdict, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    profile: str
    device: str
    threads: int
    precision: str
    torch_version: str
    machine: str
    created: str  # ISO time
    seconds: float  # the measuring took
    max_batch: int
    networks: tuple[NetworkAnalysis, ...]
    network_fit: Fit | None
    layer_fit: Fit | None
    verdicts: tuple[Verdict, ...]
    cached: bool = False  # read back from the cache, not measured just now
    notes: tuple[str, ...] = field(default=())
    backends: tuple[BackendView, ...] = ()  # the other backends measured besides torch eager (above)
    load: float | None = None  # threads + the cores other programs used while measuring (engine.studies.busy)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for nets, dicts in [(self.networks, out["networks"])] + [
                (view.networks, d["networks"]) for view, d in zip(self.backends, out["backends"])]:
            for net, d in zip(nets, dicts):
                d.update(latency_ms=net.latency_ms, layers_ms=net.layers_ms, layers_ratio=net.layers_ratio,
                         density=net.density)
                for point, pd in zip(net.batches, d["batches"]):
                    pd["images_per_s"] = point.images_per_s
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Analysis:
        def build(kind, data):
            names = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in data.items() if k in names})

        def nets(items):
            return tuple(
                build(NetworkAnalysis, {**n, "batches": tuple(build(BatchPoint, b) for b in n["batches"]),
                                        "layers": tuple(build(LayerTime, x) for x in n["layers"])})
                for n in items)

        networks = nets(d["networks"])
        backends = tuple(build(BackendView, {**v, "networks": nets(v["networks"]),
                                             "network_fit": build(Fit, v["network_fit"]) if v.get("network_fit")
                                             else None, "verdicts": tuple(build(Verdict, x) for x in v["verdicts"]),
                                             "notes": tuple(v.get("notes", ()))})
                         for v in d.get("backends", ()))
        return build(cls, {**d, "networks": networks, "backends": backends,
                           "network_fit": build(Fit, d["network_fit"]) if d.get("network_fit") else None,
                           "layer_fit": build(Fit, d["layer_fit"]) if d.get("layer_fit") else None,
                           "verdicts": tuple(build(Verdict, v) for v in d["verdicts"]),
                           "notes": tuple(d.get("notes", ()))})


# -- the verdicts (pure) ---------------------------------------------------------------------------


def fit_line(xs: Iterable[float], ys: Iterable[float]) -> Fit | None:
    """Least-squares line and R² (1 - residual / total variance); None for fewer than 2 points or
    no spread in x."""
    x, y = np.asarray(list(xs), float), np.asarray(list(ys), float)
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    total = float(((y - y.mean()) ** 2).sum())
    residual = float(((y - (slope * x + intercept)) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return Fit(float(slope), float(intercept), r2, len(x))


def pareto_front(networks: Iterable[NetworkAnalysis]) -> list[NetworkAnalysis]:
    """The networks with an accuracy that no other beats while also being faster, fastest first."""
    scored = sorted((n for n in networks if n.top1 is not None), key=lambda n: (n.latency_ms, -n.top1))
    front: list[NetworkAnalysis] = []
    for n in scored:
        if not front or n.top1 > front[-1].top1:
            front.append(n)
    return front


def judge(networks: tuple[NetworkAnalysis, ...]) -> tuple[Fit | None, Fit | None, tuple[Verdict, ...]]:
    """(networks' fit, layers' fit, one verdict per claim) from the measurements alone."""
    nets = [n for n in networks if n.macs > 0 and n.latency_ms > 0]
    network_fit = fit_line([n.macs for n in nets], [n.latency_ms for n in nets])
    layers = [layer for n in networks for layer in n.layers if layer.macs > 0]
    layer_fit = fit_line([layer.macs for layer in layers], [layer.ms for layer in layers])
    return network_fit, layer_fit, (_operations(nets, network_fit, layer_fit), _tradeoff(networks),
                                    _density(networks))


def _times(x: float) -> str:
    return f"{x:.0f}\u00d7" if x >= 10 else f"{x:.1f}\u00d7"


def _operations(nets: list[NetworkAnalysis], fit: Fit | None, layer_fit: Fit | None) -> Verdict:
    if fit is None or len(nets) < 3:
        return Verdict("operations", None, f"Operations against time cannot be judged from {len(nets)} "
                                           "network(s) with a measured time: at least 3 are needed.")
    # Time per MAC, against the network that does the most work per millisecond
    per_mac = {n.name: n.latency_ms / n.macs for n in nets}
    best = min(nets, key=lambda n: per_mac[n.name])
    worst = max(nets, key=lambda n: per_mac[n.name])
    holds = fit.r2 >= PREDICTS_R2
    r2 = f"{fit.r2:.3f}" if abs(fit.r2 - PREDICTS_R2) < 0.01 else f"{fit.r2:.2f}"  # never "0.80 < 0.8"
    text = (f"Operations {'predict' if holds else 'do not predict'} time on this machine: R\u00b2 = {r2} "
            f"over {fit.n} networks (batch-1 latency against MACs; the claim is taken to hold from "
            f"R\u00b2 {PREDICTS_R2}).")
    if worst is not best:
        text += (f" {worst.label} spends {_times(per_mac[worst.name] / per_mac[best.name])} more time per MAC "
                 f"than {best.label} ({worst.latency_ms:.2f} ms for {worst.macs / 1e6:.1f} M MACs, against "
                 f"{best.latency_ms:.2f} ms for {best.macs / 1e6:.1f} M).")
    if layer_fit is not None:
        text += f" Per layer, over {layer_fit.n} layers: R\u00b2 = {layer_fit.r2:.2f}."
    return Verdict("operations", holds, text)


def _tradeoff(networks: tuple[NetworkAnalysis, ...]) -> Verdict:
    scored = [n for n in networks if n.top1 is not None]
    front = pareto_front(scored)
    if len(front) < 3:
        missing = [n.label for n in networks if n.top1 is None]
        why = f" ({', '.join(missing)}: no accuracy here)" if missing else ""
        beaten = [f"{n.label} ({100 * n.top1:.1f}% in {n.latency_ms:.2f} ms)" for n in scored if n not in front]
        on_front = ", ".join(f"{n.label} ({100 * n.top1:.1f}% in {n.latency_ms:.2f} ms)" for n in front)
        text = (f"The accuracy-time trade-off cannot be judged: it needs 3 networks on the front of best accuracy "
                f"for their time, and there are {len(front)}{why}: {on_front}.")
        if beaten:
            text += f" Another network is both faster and more accurate than {', '.join(beaten)}."
        return Verdict("tradeoff", None, text)
    steps = []  # (from, to, extra ms per extra point of top-1, time ratio, points)
    for a, b in zip(front, front[1:]):
        points = 100 * (b.top1 - a.top1)
        steps.append((a, b, (b.latency_ms - a.latency_ms) / points, b.latency_ms / a.latency_ms, points))
    costs = [s[2] for s in steps]
    holds = all(later > earlier for earlier, later in zip(costs, costs[1:]))
    parts = "; ".join(f"{a.label} \u2192 {b.label}: +{pts:.1f} points for {_times(ratio)} the time "
                      f"({cost:.2f} ms a point)" for a, b, cost, ratio, pts in steps)
    dominated = [n.label for n in scored if n not in front]
    text = (f"Accuracy against time{' is' if holds else ' is not'} hyperbolic here: along the front of best "
            f"accuracy for the time, {parts}. Each further point of top-1 costs "
            f"{'more' if holds else 'not always more'} time than the one before.")
    if dominated:
        text += f" Off the front (another network is both faster and more accurate): {', '.join(dominated)}."
    close = [f"{a.label} and {b.label} ({a.latency_ms:.2f} and {b.latency_ms:.2f} ms)"
             for a, b, _cost, ratio, _pts in steps if ratio < 1.15]
    if close:
        text += (f" Careful: {'; '.join(close)} take about the same time, so this verdict rests on a difference "
                 "a busier moment could reverse.")
    return Verdict("tradeoff", holds, text)


SURVEYED = ("alexnet", "vgg", "enet")  # the families the survey compared (LeNet-5 was not among them)


def _density(networks: tuple[NetworkAnalysis, ...]) -> Verdict:
    enet = next((n for n in networks if n.name == "enet"), None)
    scored = [n for n in networks if n.density is not None]
    if enet is None or enet.density is None:
        return Verdict("density", None, "Accuracy per parameter cannot be checked for ENet here: "
                                        "it has no accuracy in this profile (no trained weights).")
    surveyed = [n for n in scored if n is not enet and n.name.startswith(SURVEYED)]
    others = [n for n in scored if n is not enet and n not in surveyed]
    if not surveyed:
        return Verdict("density", None, "Accuracy per parameter: none of the survey's other networks "
                                        "(AlexNet, VGG) has an accuracy here to compare ENet with.")
    holds = all(enet.density > n.density for n in surveyed)
    ratios = ", ".join(f"{_times(enet.density / n.density)} {n.label}" for n in surveyed)
    text = (f"Accuracy per parameter: ENet {enet.density:.0f} top-1 points per million parameters, {ratios} "
            f"(the survey: 13\u00d7 AlexNet, 24\u00d7 VGG-19). ")
    best = max(surveyed + [enet], key=lambda n: n.density)
    text += ("Among the survey's networks ENet uses its parameters best here: the claim holds." if holds else
             f"Among the survey's networks {best.label} uses its parameters best here: the claim does not hold.")
    for n in others:
        text += f" {n.label}, which the survey did not include, reaches {n.density:.0f} points per million"
        text += (f", {_times(n.density / enet.density)} ENet's, with {100 * n.top1:.1f}% top-1."
                 if n.density > enet.density else ".")
    return Verdict("density", holds, text)


# -- measuring -------------------------------------------------------------------------------------


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
    _trim_heap()  # freed memory goes back to the system, so what the pass needs shows as growth
    with _RssPeak() as rss:
        forward(x)
    return rss.grown_mb


def _trim_heap() -> None:
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
    runner = make_runner(backend, ModelAdapter(spec, model), device=device, dtype=dtype, cache=weights != "untrained")
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


def analyze(profile: str = "cifar10", device: str = "cpu", *, max_batch: int = DEFAULT_MAX_BATCH,
            precision: str = "fp32", models: Iterable[str] | None = None,
            job: JobState | None = None, backends: Iterable[str] = ()) -> Analysis:
    """Measure every network of ``profile`` (default: its comparison line-up) and judge the claims.
    Progress is in steps (one per batch size and one per layer pass, per network); a cancel stops
    at the next run (:class:`~engine.jobs.Cancelled`). Torch eager is always measured; each of
    ``backends`` other than torch (onnxruntime, compile) is measured again as a
    :class:`BackendView` with its own fit and verdicts. A network a backend cannot run is left out
    of that view, with a note."""
    from engine.models.weights import UNTRAINED, load_model, published_accuracy

    dev = resolve_device(device)
    check_precision(precision if precision != "auto" else "fp32", dev)
    torch.set_num_threads(quiet_threads(analysis_threads(), others_now()))  # fewer where other work has cores
    dtype = dtype_of(precision)
    specs = [get_spec(n, profile) for n in models] if models is not None else comparison_specs(profile)
    others = [b for b in dict.fromkeys(backends) if b != "torch"]
    steps_each = len(batch_sizes(max_batch)) + 1
    total, done = (steps_each + (steps_each - 1) * len(others)) * len(specs), 0
    started = time.perf_counter()
    networks = []
    notes = []
    share = CpuShare().start()

    def on_step(text: str) -> None:
        nonlocal done
        if job is not None:
            job.check()
            job.report(JobProgress("analyze", done, total, text, "steps"))
        done += 1

    loaded_all = []
    for spec in specs:
        loaded = load_model(spec)
        loaded_all.append(loaded)
        top1 = (loaded.metrics or {}).get("test_top1") if loaded.status != UNTRAINED else None
        kind = "test" if top1 is not None else "none"
        if top1 is None and (published := published_accuracy(spec)) is not None:
            top1, kind = published[0], "published"
        if loaded.status == UNTRAINED and kind == "published":
            notes.append(f"{spec.display}: torchvision's published top-1; its weights are not downloaded here "
                         "(the timings do not depend on them)")
        networks.append(measure_network(spec, loaded.model, dev, max_batch, dtype=dtype, top1=top1,
                                        top1_kind=kind, weights=str(loaded.status), job=job, on_step=on_step))
        if job is not None:
            job.partial["networks"] = tuple(networks)
    views = []
    for backend in others:
        measured, view_notes = [], []
        for spec, loaded, torch_net in zip(specs, loaded_all, networks):
            try:
                measured.append(measure_network(spec, loaded.model, dev, max_batch, dtype=dtype, top1=torch_net.top1,
                                                top1_kind=torch_net.top1_kind, weights=torch_net.weights, job=job,
                                                on_step=lambda text, b=backend: on_step(f"{text} ({b})"),
                                                backend=backend))
            except BackendError as e:
                view_notes.append(f"{e}: left out of this backend's fit")
        network_fit, _, verdicts = judge(tuple(measured))
        views.append(BackendView(backend, tuple(measured), network_fit, verdicts, tuple(view_notes)))
    if job is not None:
        job.report(JobProgress("analyze", total, total, "done", "steps"))
    network_fit, layer_fit, verdicts = judge(tuple(networks))
    load = share.stop().load(torch.get_num_threads()) if dev.type == "cpu" else None
    return judged(Analysis(profile, str(dev), torch.get_num_threads(), precision, torch.__version__, machine_name(),
                           time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter() - started, max_batch,
                           tuple(networks), network_fit, layer_fit, verdicts, False, tuple(notes), tuple(views), load))


# -- the cache -------------------------------------------------------------------------------------


def cache_dir() -> Path:
    from engine.common.settings import cache_dir as default_cache_dir

    return default_cache_dir() / "analysis"


def cache_key(profile: str, device: str, precision: str, max_batch: int, models: Iterable[str] | None = None,
              backends: Iterable[str] = ()) -> str:
    """Machine, profile, device, precision, largest batch, torch version, threads, the networks'
    weights files and the other backends measured (with ONNX Runtime's version and the export's
    format): anything that changes a measurement changes the key."""
    from engine.models.weights import resolve

    specs = [get_spec(n, profile) for n in models] if models is not None else comparison_specs(profile)
    weights = []
    for spec in specs:
        info = resolve(spec)
        path = getattr(info, "path", None)
        stamp = ""
        if path is not None and os.path.exists(path):
            st = os.stat(path)
            stamp = f"{st.st_size}:{int(st.st_mtime)}"
        weights.append(f"{spec.name}={info.status}:{stamp}")
    text = "|".join([str(CACHE_VERSION), platform.node(), machine_name(), profile, str(resolve_device(device)),
                     precision, str(max_batch), torch.__version__, str(analysis_threads()), *weights])
    others = [b for b in dict.fromkeys(backends) if b != "torch"]
    if others:  # a new form of the ONNX export changes ONNX Runtime's times
        text += "|" + ",".join(others) + "|" + (onnxruntime_version() or "") + f"|export {EXPORT_FORMAT}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


MAX_CACHE_BYTES = 64 << 20  # an analysis of every network is well under a megabyte


def load_cached(key: str) -> Analysis | None:
    """The cached analysis for ``key``, or None (none, or unreadable: measured again; a damaged one
    is one line on stderr)."""
    from engine.common.files import cache_rebuilt, read_regular
    from engine.common.schema import check_fields

    path = cache_dir() / f"{key}.json"
    try:
        data = json.loads(read_regular(path, MAX_CACHE_BYTES).decode("utf-8"))
        cached = Analysis.from_dict({**data, "cached": True})
        check_fields(cached)
        # the measurements are kept; the verdicts are judged again, by this version's rules (which
        # also finds a field of the wrong type that from_dict let through)
        network_fit, layer_fit, verdicts = judge(cached.networks)
        views = tuple(dataclasses.replace(v, network_fit=fit, verdicts=vs) for v in cached.backends
                      for fit, _, vs in [judge(v.networks)])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, ArithmeticError) as e:
        cache_rebuilt("analysis", path, e)
        return None
    if not sound(cached):  # a broken timing is never served, whoever wrote it
        return None
    # the measurements are kept; the verdicts are judged again, by this version's rules
    network_fit, layer_fit, verdicts = judge(cached.networks)
    views = tuple(dataclasses.replace(v, network_fit=fit, verdicts=vs) for v in cached.backends
                  for fit, _, vs in [judge(v.networks)])
    return dataclasses.replace(cached, network_fit=network_fit, layer_fit=layer_fit, verdicts=verdicts,
                               backends=views)


def save_cached(key: str, analysis: Analysis) -> None:
    from engine.common.files import atomic_write

    folder = cache_dir()
    if not sound(analysis):  # measured again next time: a busy moment is not kept
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(analysis.to_dict(), allow_nan=True)
        atomic_write(folder / f"{key}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError:
        pass  # a cache that cannot be written only costs a measurement next time


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
