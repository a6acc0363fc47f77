"""What a backend plug-in declares, and the one interface its runners have.

A backend is one module in this package that defines ``BACKEND``, a :class:`Backend`: its name,
label and plot marker, whether it can run here (``available``), the precisions it runs on a device,
and ``make_runner``, which returns a :class:`Runner` for one network, or None for torch eager, which
the session runs itself (it is the reference, and the only backend with gradients).

A runner runs the whole answer to a frame as one graph (:class:`~engine.runtime.graph.Graph`):
logits, softmax, the classes ranked, ENet's class map and confidence, and the tapped layers. So
what the engine does after a call is reading arrays, whatever ran them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.models.adapter import ModelAdapter
from engine.runtime.graph import BackendError, Graph, GraphOutputs, graph_outputs, private_copy

__all__ = ["Backend", "BackendError", "BuildContext", "GraphRunner", "Runner"]


@dataclass(frozen=True)
class BuildContext:
    """What a runner is built for, besides the network: the device, the threads it may use, the
    export cache (None: exports stay in memory, as for random weights) and the layers the window
    can show, which a first export has as outputs so that any tap set can be cut from it."""

    device: torch.device
    threads: int
    cache: object | None = None  # an engine.runtime.onnx_cache.OnnxCache
    full_layers: tuple[str, ...] = ()
    shared: dict = field(default_factory=dict)  # what one network's candidates share (its exports)


@dataclass(frozen=True)
class Backend:
    """One backend as the registry lists it (:mod:`engine.runtime.backends`)."""

    name: str  # what --backend takes
    label: str  # what a person reads: "ONNX Runtime"
    short: str  # the window's picker word, short enough for a 1366-pixel window
    marker: str  # its points in plots (matplotlib's marker letters)
    make_runner: Callable[[ModelAdapter, str, int, Sequence[str], BuildContext], Runner | None]
    available: Callable[[], str | None] = lambda: None  # None, or why it cannot run here (one line)
    precisions: Callable[[torch.device], tuple[str, ...]] = lambda device: ("fp32",)
    devices: tuple[str, ...] = ("cpu",)  # the device types it runs on
    tuned: bool = True  # whether auto's tuner tries it (torch.compile's seconds per network: not)
    pool: bool = False  # whether it runs on a thread pool of its own, whose size is then a candidate
    reference: bool = False  # torch eager: what every other candidate is compared with

    def refusal(self, device: torch.device, precision: str | None = None) -> str | None:
        """Why this backend cannot run on ``device`` (in ``precision``), or None."""
        why = self.available()
        if why is not None:
            return why
        if device.type not in self.devices:
            return f"{self.label} does not run on {'a GPU' if device.type == 'cuda' else device.type} here"
        if precision is not None and precision not in self.precisions(device):
            return f"{self.label} does not run {precision} here (it runs {', '.join(self.precisions(device))})"
        return None


class Runner:
    """One network on a backend other than torch eager: ``runner(x)`` -> :class:`GraphOutputs`.

    A subclass sets :attr:`backend`, implements :meth:`set_taps`, :meth:`outputs` and
    :meth:`run_raw`, and may free what it holds in :meth:`close`. ``dtype`` and ``channels_last``
    say how it wants its input prepared.
    """

    backend = ""
    dtype = torch.float32
    channels_last = False

    def __init__(self, adapter: ModelAdapter, with_map: bool, precision: str = "fp32",
                 threads: int | None = None) -> None:
        self.spec = adapter.spec
        self.with_map = with_map
        self.precision = precision
        self.threads = threads  # the threads its own pool runs on (None: torch's)
        self.note = ""  # anything its build measured or chose, in words
        self.layers: tuple[str, ...] = ()
        self.tap_index: dict[str, int] = {}  # each tapped layer's place in outputs()

    def set_taps(self, layers: Sequence[str]) -> None:
        raise NotImplementedError

    def _taps_at(self, order: Sequence[str]) -> None:
        """The tapped layers come after logits, probabilities, top classes (and the class map and
        its confidence) in ``order``."""
        first = 5 if self.with_map else 3
        self.tap_index = {layer: first + i for i, layer in enumerate(order)}

    def outputs(self, x: torch.Tensor) -> Sequence[np.ndarray]:
        """One pass, as numpy arrays in the graph's order: logits, probabilities, top classes, with
        a class map its classes and confidence, then the taps (:attr:`tap_index`). The engine reads
        these directly: building a :class:`GraphOutputs` was 3 of LeNet-5's 50 µs."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> GraphOutputs:
        return graph_outputs(self.outputs(x), list(self.tap_index), self.with_map)

    def run_raw(self, x: torch.Tensor) -> object:
        """The runtime's own call on a prepared input, nothing read back: the floor of its latency."""
        raise NotImplementedError

    def run_batch(self, x: torch.Tensor) -> object:
        """The bare pass on a batch (throughput), on every thread the runner may use."""
        return self.run_raw(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Image logits for a batch (evaluation), as a float32 CPU tensor."""
        return torch.from_numpy(np.ascontiguousarray(self(x).logits, np.float32))

    def warm_up(self, runs: int = 2) -> float:
        """A few passes on a blank input (kernels built, memory taken); the last one's time in ms."""
        x = torch.zeros((1, *self.spec.input_size), dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ms = 0.0
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            self.outputs(x)
            ms = (time.perf_counter() - t0) * 1000
        return ms

    def close(self) -> None:
        """Free what the runner holds (sessions, compiled code); it is not used again."""


class GraphRunner(Runner):
    """The graph on torch itself, eagerly: a private copy of the network with its taps kept in place,
    one copy per tap set (the last few kept). :class:`~engine.runtime.backends.compiled.CompiledRunner`
    compiles the same graph; a plug-in that wraps torch starts from here."""

    backend = "torch-graph"
    MAX_GRAPHS = 4

    def __init__(self, adapter: ModelAdapter, with_map: bool, *, device: torch.device,
                 precision: str = "fp32", dtype: torch.dtype = torch.float32) -> None:
        super().__init__(adapter, with_map, precision)
        self.device, self.dtype = device, dtype
        self.channels_last = device.type == "cpu"
        self._graphs: OrderedDict[tuple[str, ...], tuple[Callable, dict]] = OrderedDict()
        self._source = private_copy(adapter)
        self.set_taps(())

    def build(self, graph: Graph, x: torch.Tensor) -> Callable:
        """What runs ``graph`` (a subclass compiles it); ``x`` is an input of the right form."""
        return graph

    def set_taps(self, layers: Sequence[str]) -> None:
        layers = tuple(dict.fromkeys(layers))
        if layers not in self._graphs:
            # Taps placed inside a compiled function would be traced as attribute changes; on a
            # copy of its own (sharing the weights' storage) each tap set keeps its taps in place.
            copy = private_copy(self._source)
            copy.model.to(device=self.device, dtype=self.dtype)
            if self.channels_last:
                copy.model.to(memory_format=torch.channels_last)
            store: dict[str, torch.Tensor] = {}
            copy.tap(layers, store)
            x = torch.zeros((1, *self.spec.input_size), device=self.device, dtype=self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            self._graphs[layers] = (self.build(Graph(copy, layers, self.with_map, store).eval(), x), store)
            while len(self._graphs) > self.MAX_GRAPHS:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(layers)
        self.layers = layers
        self._taps_at(layers)
        self._graph, self._store = self._graphs[layers]

    def _fn(self, x: torch.Tensor):
        # the store is emptied after every call, so compiled code's guards see it empty on every entry
        try:
            with torch.inference_mode():
                return self._graph(x.to(self.dtype))
        finally:
            self._store.clear()

    def run_raw(self, x: torch.Tensor) -> object:
        return self._fn(x)

    def outputs(self, x: torch.Tensor) -> Sequence[np.ndarray]:
        return [v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for v in self._fn(x)]

    def close(self) -> None:
        self._graphs.clear()

