"""What executes a network's forward pass: torch eager, ONNX Runtime or torch.compile.

The engine runs every network through :class:`~engine.models.adapter.ModelAdapter`. This module adds
the other two runtimes behind one small interface, :class:`Runner`: ``runner(x)`` returns a
:class:`GraphOutputs` of numpy arrays for one prepared input. The graph is the whole answer, not
only the network: logits, softmax, the classes ranked, ENet's per-pixel class map and confidence, and
the output of each tapped layer. So what the engine does after the call is reading arrays.

- ``torch``: eager PyTorch, the reference, the only backend with gradients (Grad-CAM) and the only
  one that runs bf16 weights. :class:`~engine.runtime.session.InferenceSession` runs it itself.
- ``onnxruntime`` (:class:`OrtRunner`): the network exported with ``torch.onnx.export`` from the
  same module and weights (:func:`export_onnx`), run by ONNX Runtime's CPU provider. Exports are
  cached (below).
- ``compile`` (:class:`CompiledRunner`): the same graph through ``torch.compile`` (inductor, which
  compiles C++ with the system's compiler: seconds per network, again for each new tap set).

Why export the tapped layers as graph outputs rather than read them some other way: ONNX Runtime
has no hooks, and a graph output is the one way to get an intermediate tensor out of it. A layer
that is an output cannot be fused with the next one, so each set of tapped layers gets its own
graph. Making one can take seconds (ENet's: about 5 s here), so the first export of
a network has every layer the app can show (:func:`~engine.runtime.session.feature_layers`) as an output,
and a tap set within those is cut from it: its other outputs are dropped, and ONNX Runtime removes
the nodes nothing reads any more. A tap set outside those layers is exported for itself.

The cache lives in ``<cache>/onnx`` (``$CNN_ARENA_CACHE`` or ``~/.cache/cnn-arena``). A file's key
covers the network, its input size, a digest of its weights as loaded, the tapped layers, and the
versions of torch, onnx, onnxscript and onnxruntime. Beside each ``.onnx`` is a ``.json`` with its
sha256; a file whose digest does not match, that ONNX Runtime cannot load, or whose logits on a
fixed random input differ from torch's is exported again, never trusted.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine.common.errors import error_line
from engine.models.adapter import ModelAdapter
from engine.runtime.graph import (  # noqa: F401  (the backends' vocabulary, re-exported)
    PARITY,
    BackendError,
    Graph,
    GraphOutputs,
    first_difference,
    graph_outputs,
    output_names,
    private_copy,
    top_class,
)
from engine.runtime.onnx_cache import OnnxCache, onnxruntime_version, weights_digest  # noqa: F401
from engine.runtime.onnx_export import (  # noqa: F401
    EXPORT_FORMAT,
    EXPORTING,
    PReLUForExport,
    cut_outputs,
    export_onnx,
    for_export,
    quiet_loggers,
)

BACKENDS = ("torch", "onnxruntime", "compile")
BACKEND_CHOICES = ("auto", *BACKENDS)
LABELS = {"torch": "torch eager", "onnxruntime": "ONNX Runtime", "compile": "torch.compile"}
AUTO_GAIN = 0.95  # auto keeps ONNX Runtime only where its median time is at most this fraction of torch's
# How long ONNX Runtime's pool threads spin for the next piece of work before they sleep. Between two
# operators of a graph the wait is microseconds: sleeping there costs a wake-up per operator (LeNet-5
# at batch 1, 2 threads: 0.066 ms without spinning, 0.039 with). Spinning without a bound keeps a
# core busy long after the call returns (measured: 1.99 cores busy against 1.14 for a 0.4 ms graph
# run every 2 ms), which the engine's frame decoder needs; 50 µs gets the speed at 1.2.
SPIN_US = 50
SPIN_BOUND_FROM = (1, 32)  # the oldest ONNX Runtime measured to honour the bound (older ones ignore the
# key and would spin unbounded, so they do not spin at all: 2 threads, four networks, 83 frames/s)
THREADS_PROBE_MS = 3.0  # a graph slower than this on every thread is not tried on one: its convolutions
# split well (AlexNet, 2 ms on two threads, takes 4 on one), and trying costs the load 15 runs of each

log = logging.getLogger(__name__)


def label(backend: str) -> str:
    """The backend as a person reads it: ``ONNX Runtime``."""
    return LABELS.get(backend, backend)


def check_backend(backend: str, device: torch.device) -> str:
    """``backend`` if it names one (``auto`` included), else :class:`BackendError` (one line).

    ONNX Runtime runs on the CPU here (its CPU provider): asked for on a GPU it is an error.
    """
    if backend not in BACKEND_CHOICES:
        raise BackendError(f"unknown backend {backend!r}; expected {', '.join(BACKEND_CHOICES)}")
    if backend == "onnxruntime" and device.type != "cpu":
        raise BackendError("ONNX Runtime runs on the CPU here; use --device cpu or --backend torch")
    return backend


def make_runner(backend: str, adapter: ModelAdapter, *, device: torch.device,
                with_map: bool | None = None, dtype: torch.dtype = torch.float32, cache: bool = True) -> Runner | None:
    """A runner for ``adapter`` on ``backend`` with no taps (evaluation, analysis), or None for
    torch eager; ``cache`` False keeps an ONNX export out of the cache (random weights). ONNX
    Runtime runs float32 whatever ``dtype`` says. Raises :class:`BackendError` (one line) when it
    cannot be built."""
    with_map = adapter.spec.has_class_map if with_map is None else with_map
    if backend == "torch":
        return None
    if backend == "onnxruntime":
        check_backend(backend, device)
        return OrtRunner(adapter, with_map, threads=torch.get_num_threads(), cache=OnnxCache() if cache else None)
    if backend == "compile":
        return CompiledRunner(adapter, with_map, device=device, dtype=dtype)
    raise BackendError(f"unknown backend {backend!r}; expected {', '.join(BACKENDS)}")


class Runner:
    """One network on one backend other than torch eager: ``runner(x)`` -> :class:`GraphOutputs`."""

    backend = ""

    def __init__(self, adapter: ModelAdapter, with_map: bool) -> None:
        self.spec = adapter.spec
        self.with_map = with_map
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
        values = self.outputs(x)
        return graph_outputs(values, list(self.tap_index), self.with_map)

    def run_raw(self, x: torch.Tensor) -> object:
        """The runtime's own call on a prepared input, nothing read back: the floor of its latency."""
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Image logits for a batch (evaluation), as a float32 CPU tensor."""
        return torch.from_numpy(self(x).logits)


class OrtRunner(Runner):
    """The network exported to ONNX and run by ONNX Runtime on ``threads`` threads (module docs).

    ``full_layers`` are the layers the first export has as outputs (the layers the app shows);
    ``cache`` None keeps exports in memory only. Raises :class:`BackendError` when ONNX Runtime is
    missing, the export fails, or the export's logits differ from torch's.
    """

    backend = "onnxruntime"
    MAX_SESSIONS = 4  # tap sets kept ready in memory, most recent first
    # A graph bigger than this (VGG-16 and AlexNet on ImageNet: 527 and 233 MB) keeps the 2 most recent
    # sessions (usually the bare pass and the layers on screen), and its full export stays on disk rather than in memory
    # between tap sets. Each ONNX Runtime session holds its own copy of the weights: VGG-16 on
    # ImageNet took 4.2 GB with two sessions and the export held, against 1.5 GB on torch.
    BIG_GRAPH = 64 << 20

    def __init__(self, adapter: ModelAdapter, with_map: bool, *, threads: int,
                 full_layers: Sequence[str] = (), cache: OnnxCache | None = None,
                 pick_threads: bool = False) -> None:
        super().__init__(adapter, with_map)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("ONNX Runtime is not installed (pip install onnxruntime)") from None
        self._ort, self.threads, self.cache = ort, threads, cache
        self.threads_note = ""  # how the thread count was chosen, when it was measured
        self.max_threads = threads  # threads may drop to 1 at load (pick_threads); batches use these
        self._copy = private_copy(adapter)
        # Every export is checked against torch's logits on this fixed input, taken from the network
        # as loaded: before the PReLU swap below, so that a wrong swap could not pass the check.
        self._probe = np.random.default_rng(0).standard_normal((1, *self.spec.input_size), np.float32)
        with torch.inference_mode():
            self._expected = self._copy.logits(torch.from_numpy(self._probe)).numpy()
        for_export(self._copy.model)
        self._digest = weights_digest(self._copy.model)  # the swap keeps every parameter's name and bytes
        self.full_layers = tuple(full_layers)
        self.exported = 0  # graphs this runner exported (rather than read from the cache)
        self._on_disk: Path | None = None  # where the full export is cached, when it is
        self._full: bytes | None = self._graph(self.full_layers)
        self._big = len(self._full) > self.BIG_GRAPH
        if pick_threads and threads > 1:
            key = (self._digest, self.spec.input_size, with_map, threads)
            if key not in _THREADS_PICKED:  # measured once per process: a reload reuses it
                self._pick_threads(self._full)
                _THREADS_PICKED[key] = (self.threads, self.threads_note)
            self.threads, self.threads_note = _THREADS_PICKED[key]
        self._sessions: OrderedDict[tuple[str, ...], object] = OrderedDict()
        self._batch_session = None
        self.set_taps(())
        if self._big and self._on_disk is not None:
            self._full = None  # read back from the cache for the next tap set

    def _full_graph(self) -> bytes:
        """The full export: held in memory, or read back from the cache (exported again if it went)."""
        if self._full is not None:
            return self._full
        data = self.cache.read(self._on_disk) if self.cache is not None and self._on_disk is not None else None
        if data is None:  # pruned or damaged since: export again, and hold it if it cannot be cached
            self._on_disk = None
            data = self._graph(self.full_layers)
            if self._on_disk is None:
                self._full = data
        return data

    def _pick_threads(self, full: bytes, rounds: int = 15) -> None:
        """Run on one thread where that is measured faster at batch 1 than on ``threads``.

        A network of many small operators (ENet: over 200, most on 2x2 to 16x16 maps) spends more
        time handing each one to the pool and waiting for it than the second core saves: on this
        2-core CPU ENet takes 0.45 ms on one thread against 0.56 on two. The two sessions run in
        turn, ``rounds`` times after a warm-up, so a burst of load elsewhere hits both; one thread is
        kept only where its median is at most AUTO_GAIN of the other's.
        """
        data = cut_outputs(full, output_names((), self.with_map))
        feed = {"x": self._probe}
        many = self._session(data, self.threads)
        for _ in range(2):
            many.run(None, feed)
        t0 = time.perf_counter()
        many.run(None, feed)
        if (time.perf_counter() - t0) * 1000 > THREADS_PROBE_MS:
            return  # a heavy graph: its convolutions split well over every thread (and no second session)
        one = self._session(data, 1)
        times: dict[int, list[float]] = {1: [], self.threads: []}
        for run in range(rounds + 1):
            for n, session in ((self.threads, many), (1, one)):
                t0 = time.perf_counter()
                session.run(None, feed)
                if run >= 1:  # the first round warms the one-thread session up
                    times[n].append((time.perf_counter() - t0) * 1000)
        ms = {n: float(np.median(t)) for n, t in times.items()}
        if ms[1] <= AUTO_GAIN * ms[self.threads]:
            self.threads_note = (f"1 ONNX Runtime thread: {ms[1]:.3g} ms against {ms[self.threads]:.3g} on "
                                 f"{self.threads} (batch 1, median of {rounds}, measured at the first load)")
            self.threads = 1

    def _graph(self, layers: tuple[str, ...]) -> bytes:
        """The exported model for ``layers``: from the cache when it is intact and agrees with torch,
        else exported now (and cached)."""
        key = path = None
        if self.cache is not None:
            key = self.cache.key(self._copy, self._digest, layers, self.with_map)
            path = self.cache.path(self._copy, key)
            data = self.cache.read(path)
            if data is not None:
                try:
                    self._check(self._session(data), layers)
                    if layers == self.full_layers:
                        self._on_disk = path
                    return data
                except BackendError as e:  # a damaged or stale file: export again
                    log.warning("%s; exporting again", e)
        data = export_onnx(self._copy, layers, self.with_map)
        self.exported += 1
        self._check(self._session(data), layers)
        if self.cache is not None and path is not None:
            self.cache.exports += 1
            if self.cache.write(path, data) and layers == self.full_layers:
                self._on_disk = path
        return data

    def _session(self, data: bytes, threads: int | None = None):
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if _spin_bounded(ort.__version__):
            options.add_session_config_entry("session.intra_op.allow_spinning", "1")  # briefly: SPIN_US
            options.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_US))
        else:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad models
            raise BackendError(f"{self.spec.name}: ONNX Runtime cannot load the export: {error_line(e, 200)}") from None

    def _check(self, session, layers: tuple[str, ...]) -> None:
        """Refuse a graph whose outputs on a fixed random input differ from torch's: every output
        the engine reads (logits, probabilities, the ranking, the class map and its confidence, the
        taps), so that a graph edited anywhere (a TopK turned to smallest-first) cannot pass."""
        expected = self._expected
        try:
            got = graph_outputs(session.run(None, {"x": self._probe}), layers, self.with_map)
        except Exception as e:  # noqa: BLE001
            raise BackendError(f"{self.spec.name}: the ONNX export does not run: {str(e)[:200]}") from None
        wrong = first_difference(got, expected, self._torch_outputs(layers), layers)
        if wrong:
            raise BackendError(f"{self.spec.name}: the ONNX export's {wrong} differ from torch's")

    def _torch_outputs(self, layers: tuple[str, ...]) -> GraphOutputs:
        """What torch computes for every output of the graph on the probe (the logits are checked
        against the network as loaded, :attr:`_expected`; these come from the copy that is exported)."""
        with torch.inference_mode():
            values = Graph(self._copy, layers, self.with_map).eval()(torch.from_numpy(self._probe))
        return graph_outputs([v.numpy() for v in values], layers, self.with_map)

    def set_taps(self, layers: Sequence[str]) -> None:
        layers = tuple(dict.fromkeys(layers))
        if layers in self._sessions:
            self._sessions.move_to_end(layers)
        else:
            if set(layers) <= set(self.full_layers):
                names = output_names(layers, self.with_map)
                session = self._session(cut_outputs(self._full_graph(), names))
            else:  # a layer the first export does not have: its own graph
                session = self._session(self._graph(layers))
            self._sessions[layers] = session
            while len(self._sessions) > (2 if self._big else self.MAX_SESSIONS):
                self._sessions.popitem(last=False)
        self.layers = layers
        self._run = self._sessions[layers].run
        # ONNX Runtime returns the outputs in the graph's order, which cut_outputs keeps.
        graph_order = [o.name for o in self._sessions[layers].get_outputs()]
        self._taps_at([name[4:] for name in graph_order if name.startswith("tap/")])

    def run_raw(self, x: torch.Tensor) -> list[np.ndarray]:
        return self._run(None, {"x": _float32(x)})

    def run_batch(self, x: torch.Tensor) -> list[np.ndarray]:
        """The bare pass on a batch, on every thread the runner was given: the thread count picked at
        load is for batch 1 (ENet's 1 thread would halve its images/s at batch 256)."""
        if self.threads == self.max_threads:
            return self.run_raw(x)
        if self._batch_session is None:
            self._batch_session = self._session(cut_outputs(self._full_graph(), output_names((), self.with_map)),
                                                self.max_threads)
        return self._batch_session.run(None, {"x": _float32(x)})

    def outputs(self, x: torch.Tensor) -> Sequence[np.ndarray]:
        return self._run(None, {"x": _float32(x)})


# (weights digest, input size, class map, threads) -> (threads, note): OrtRunner._pick_threads's answer
_THREADS_PICKED: dict[tuple, tuple[int, str]] = {}


def _spin_bounded(version: str) -> bool:
    """Whether this ONNX Runtime honours ``session.intra_op.spin_duration_us`` (SPIN_BOUND_FROM on)."""
    try:
        return tuple(int(part) for part in version.split(".")[:2]) >= SPIN_BOUND_FROM
    except ValueError:
        return False


def _float32(x: torch.Tensor) -> np.ndarray:
    """The input as ONNX Runtime takes it: a contiguous float32 array (a bf16 batch is converted)."""
    return (x if x.dtype == torch.float32 else x.float()).contiguous().numpy()


class CompiledRunner(Runner):
    """The same graph through ``torch.compile`` (inductor; on a GPU too). Each new tap set compiles
    again (seconds); the last few stay ready."""

    backend = "compile"
    MAX_GRAPHS = 4

    def __init__(self, adapter: ModelAdapter, with_map: bool, *, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(adapter, with_map)
        self.device, self.dtype = device, dtype
        self._graphs: OrderedDict[tuple[str, ...], object] = OrderedDict()
        self._source = private_copy(adapter)
        # Every tap set of every network is a graph of its own for the same forward code, and
        # dynamo keeps 8 per code by default before it gives up compiling it.
        import torch._dynamo

        config = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, name):
                setattr(config, name, max(getattr(config, name), 64))
        self.set_taps(())

    def set_taps(self, layers: Sequence[str]) -> None:
        layers = tuple(dict.fromkeys(layers))
        if layers not in self._graphs:
            # Taps placed inside a compiled function would be traced as attribute changes; on a
            # copy of its own (sharing the weights' storage) each tap set keeps its taps in place.
            copy = private_copy(self._source)
            copy.model.to(device=self.device, dtype=self.dtype)
            if self.device.type == "cpu":
                copy.model.to(memory_format=torch.channels_last)
            store: dict[str, torch.Tensor] = {}
            copy.tap(layers, store)
            graph = Graph(copy, layers, self.with_map, store).eval()
            try:
                compiled = torch.compile(graph, dynamic=False)
                x = torch.zeros((1, *self.spec.input_size), device=self.device, dtype=self.dtype)
                if self.device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                with EXPORTING, torch.inference_mode(), warnings.catch_warnings(), quiet_loggers():
                    warnings.simplefilter("ignore")
                    compiled(x)  # compile now, not on the first frame
            except Exception as e:  # noqa: BLE001 - inductor raises many kinds (no compiler, ...)
                raise BackendError(f"{self.spec.name}: torch.compile failed: {error_line(e, 200)}") from None
            store.clear()
            self._graphs[layers] = (compiled, store)
            while len(self._graphs) > self.MAX_GRAPHS:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(layers)
        self.layers = layers
        self._taps_at(layers)
        self._compiled, self._store = self._graphs[layers]

    def _fn(self, x: torch.Tensor):
        # the store is emptied after every call, so the compiled code's guards see it empty on
        # every entry (otherwise the second call would compile again)
        try:
            return self._compiled(x)
        finally:
            self._store.clear()

    def run_raw(self, x: torch.Tensor) -> object:
        return self._fn(x)

    def outputs(self, x: torch.Tensor) -> Sequence[np.ndarray]:
        return [v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for v in self._fn(x)]
