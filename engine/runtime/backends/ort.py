"""ONNX Runtime: the network exported to ONNX (:mod:`engine.runtime.onnx_graphs`), run by ONNX
Runtime's CPU provider, each tap set a session of its own (the last few kept ready)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from engine.common.errors import error_line
from engine.models.adapter import ModelAdapter
from engine.runtime.backends.base import Backend, BackendError, BuildContext, Runner
from engine.runtime.graph import output_names
from engine.runtime.onnx_cache import onnxruntime_version
from engine.runtime.onnx_export import cut_outputs
from engine.runtime.onnx_graphs import ExportedGraphs, float32_input

# How long ONNX Runtime's pool threads spin for the next piece of work before they sleep: between two
# operators the wait is microseconds, and sleeping there costs a wake-up per operator; unbounded
# spinning keeps a core busy long after the call returns, which the frame decoder needs.
SPIN_US = 50
SPIN_BOUND_FROM = (1, 32)  # the oldest ONNX Runtime measured to honour the bound (older ones: no spinning)


class OrtRunner(Runner):
    """The network on ONNX Runtime on ``threads`` threads. Raises :class:`BackendError` when ONNX
    Runtime is missing, the export fails, or the export's outputs differ from torch's."""

    backend = "onnxruntime"
    MAX_SESSIONS = 4  # tap sets kept ready in memory, most recent first (2 for a big graph)

    def __init__(self, adapter: ModelAdapter, with_map: bool, *, threads: int, max_threads: int | None = None,
                 full_layers: Sequence[str] = (), cache=None, graphs=None, precision: str = "fp32") -> None:
        super().__init__(adapter, with_map, precision, threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("ONNX Runtime is not installed (pip install onnxruntime)") from None
        self._ort = ort
        self.max_threads = max(threads, max_threads or threads)  # batches run on these
        # the float32 exports (ExportedGraphs), or an int8 graph cut the same way (quantize.Int8Graphs)
        self.graphs = graphs or ExportedGraphs(adapter, with_map, self._probe_run, full_layers=full_layers, cache=cache)
        self._sessions: OrderedDict[tuple[str, ...], object] = OrderedDict()
        self._batch_session = None
        self.set_taps(())

    @property
    def exported(self) -> int:
        return self.graphs.exported

    def _probe_run(self, data: bytes, x: np.ndarray) -> Sequence[np.ndarray]:
        return self._session(data).run(None, {"x": x})

    def _session(self, data: bytes, threads: int | None = None):
        return ort_session(data, threads or self.threads, self.spec.name)

    def set_taps(self, layers: Sequence[str]) -> None:
        layers = tuple(dict.fromkeys(layers))
        if layers in self._sessions:
            self._sessions.move_to_end(layers)
        else:
            self._sessions[layers] = self._session(self.graphs.for_taps(layers))
            while len(self._sessions) > (2 if self.graphs.big else self.MAX_SESSIONS):
                self._sessions.popitem(last=False)
        self.layers = layers
        self._run = self._sessions[layers].run
        # ONNX Runtime returns the outputs in the graph's order, which cut_outputs keeps.
        graph_order = [o.name for o in self._sessions[layers].get_outputs()]
        self._taps_at([name[4:] for name in graph_order if name.startswith("tap/")])

    def run_raw(self, x: torch.Tensor) -> list[np.ndarray]:
        return self._run(None, {"x": float32_input(x)})

    def run_batch(self, x: torch.Tensor) -> list[np.ndarray]:
        """The bare pass on a batch, on every thread the runner may use: a count chosen for batch 1
        (ENet's 1 thread) would halve its images/s at batch 256."""
        if self.threads == self.max_threads:
            return self.run_raw(x)
        if self._batch_session is None:
            self._batch_session = self._session(cut_outputs(self.graphs.full(), output_names((), self.with_map)),
                                                self.max_threads)
        return self._batch_session.run(None, {"x": float32_input(x)})

    def outputs(self, x: torch.Tensor) -> Sequence[np.ndarray]:
        return self._run(None, {"x": float32_input(x)})

    def close(self) -> None:
        self._sessions.clear()
        self._batch_session = None


def ort_session(data: bytes, threads: int, network: str):
    """An ONNX Runtime CPU session: sequential, every graph optimisation, pool threads spinning
    briefly between operators (SPIN_US)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
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
        raise BackendError(f"{network}: ONNX Runtime cannot load the graph: {error_line(e, 200)}") from None


def _spin_bounded(version: str) -> bool:
    """Whether this ONNX Runtime honours ``session.intra_op.spin_duration_us`` (SPIN_BOUND_FROM on)."""
    try:
        return tuple(int(part) for part in version.split(".")[:2]) >= SPIN_BOUND_FROM
    except ValueError:
        return False


def _available() -> str | None:
    return None if onnxruntime_version() is not None else "ONNX Runtime is not installed (pip install onnxruntime)"


def _make(adapter: ModelAdapter, precision: str, threads: int, taps: Sequence[str], context: BuildContext) -> Runner:
    if precision == "int8":
        runner = int8_runner(adapter, threads, context.full_layers, context.shared.get("int8"))
        if taps:
            runner.set_taps(taps)
        return runner
    runner = OrtRunner(adapter, adapter.spec.has_class_map, threads=threads, max_threads=context.threads,
                       full_layers=context.full_layers, cache=context.cache, graphs=context.shared.get(BACKEND_NAME))
    context.shared[BACKEND_NAME] = runner.graphs  # another thread count reuses the exports
    if taps:
        runner.set_taps(taps)
    return runner


def int8_runner(adapter: ModelAdapter, threads: int, layers: Sequence[str], found=None) -> OrtRunner:
    """``adapter``'s int8 graph on ONNX Runtime: the one quantized with ``layers`` tapped whose record
    holds (engine.runtime.quantize; ``found``, where it was looked up already), else
    :class:`BackendError` saying how to make one."""
    from engine.runtime.quantize import Int8Graphs, find_int8

    found = found or find_int8(adapter, layers)
    if found is None:
        raise BackendError(f"{adapter.spec.name}: no int8 graph here that holds its accuracy (python main.py eval "
                           f"--precision int8 --data DIR quantizes and measures one)")
    return OrtRunner(adapter, adapter.spec.has_class_map, threads=threads, precision="int8",
                     graphs=Int8Graphs(found[0], layers, adapter.spec.has_class_map))


def _precisions(device: torch.device) -> tuple[str, ...]:
    return ("fp32", "int8") if device.type == "cpu" else ("fp32",)


BACKEND_NAME = "onnxruntime"
BACKEND = Backend(BACKEND_NAME, "ONNX Runtime", "ORT", "^", _make, available=_available, precisions=_precisions,
                  pool=True)
