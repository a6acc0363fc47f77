"""OpenVINO: the same ONNX export as ONNX Runtime's (:mod:`engine.runtime.onnx_graphs`), compiled by
OpenVINO for the CPU at batch 1, with the tapped layers as extra outputs. fp32 everywhere; bf16
(OpenVINO's inference-precision hint) only where the CPU has native bf16. Compiled models are
cached in ``<cache>/openvino`` (OpenVINO's CACHE_DIR, keyed by the graph, the device and the
settings), beside the ONNX exports they come from."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from engine.common.errors import error_line
from engine.models.adapter import ModelAdapter
from engine.runtime.backends.base import Backend, BackendError, BuildContext, Runner
from engine.runtime.graph import output_names
from engine.runtime.onnx_export import cut_outputs
from engine.runtime.onnx_graphs import ExportedGraphs, float32_input
from engine.runtime.precision import bf16_native

HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoRunner(Runner):
    backend = "openvino"
    MAX_MODELS = 4  # tap sets kept compiled, most recent first

    def __init__(self, adapter: ModelAdapter, with_map: bool, *, threads: int, precision: str = "fp32",
                 full_layers: Sequence[str] = (), cache=None, graphs: ExportedGraphs | None = None) -> None:
        super().__init__(adapter, with_map, precision, threads)
        openvino = _openvino()
        if openvino is None:
            raise BackendError("OpenVINO is not installed (pip install openvino)")
        self._core = openvino.Core()
        if cache is not None:
            folder = cache.folder.parent / "openvino"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self._core.set_property({"CACHE_DIR": str(folder)})
            except (OSError, RuntimeError):
                pass  # compiled each time: slower to load, as fast to run
        self._config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_PRECISION_HINT": HINTS[precision]}
        self._compiled: OrderedDict[tuple[str, ...], tuple[object, object]] = OrderedDict()
        self._batch: tuple[int, object, int] | None = None
        # the check compiles at batch 1 as the engine runs; reduced precision is checked in fp32
        # here (its own agreement is the tuner's to measure)
        self.graphs = graphs or ExportedGraphs(adapter, with_map, self._probe_run, full_layers=full_layers,
                                               cache=cache)
        self.set_taps(())

    def _compile(self, data: bytes, config: dict, batch: int = 1):
        try:
            model = self._core.read_model(data, b"")
            model.reshape({0: [batch, *self.spec.input_size]})
            return self._core.compile_model(model, "CPU", config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own kinds
            raise BackendError(f"{self.spec.name}: OpenVINO cannot compile the export: {error_line(e, 200)}") from None

    def _probe_run(self, data: bytes, x: np.ndarray) -> Sequence[np.ndarray]:
        compiled = self._compile(data, {**self._config, "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        request.infer({0: x})
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    def set_taps(self, layers: Sequence[str]) -> None:
        layers = tuple(dict.fromkeys(layers))
        if layers in self._compiled:
            self._compiled.move_to_end(layers)
        else:
            compiled = self._compile(self.graphs.for_taps(layers), self._config)
            self._compiled[layers] = (compiled, compiled.create_infer_request())
            while len(self._compiled) > self.MAX_MODELS:
                self._compiled.popitem(last=False)
        self.layers = layers
        compiled, self._request = self._compiled[layers]
        self._count = len(compiled.outputs)
        names = [output.get_any_name() for output in compiled.outputs]
        self._taps_at([name[4:] for name in names if name.startswith("tap/")])

    def run_raw(self, x: torch.Tensor) -> object:
        return self._request.infer({0: float32_input(x)})

    def run_batch(self, x: torch.Tensor) -> object:
        """A batch runs on a model compiled for its size, kept for the next batch of that size."""
        if int(x.shape[0]) == 1:
            return self.run_raw(x)
        return self._batch_request(int(x.shape[0]))[0].infer({0: float32_input(x)})

    def outputs(self, x: torch.Tensor) -> Sequence[np.ndarray]:
        n = int(x.shape[0])
        request = self._request if n == 1 else self._batch_request(n)[0]
        # infer copies the outputs out of the request's buffers, which its next call reuses
        return request.infer({0: float32_input(x)}).to_tuple()

    def _batch_request(self, n: int) -> tuple[object, int]:
        """(an infer request, its output count) for the bare graph at batch ``n``."""
        if self._batch is None or self._batch[0] != n:
            data = cut_outputs(self.graphs.full(), output_names((), self.with_map))
            compiled = self._compile(data, self._config, n)
            self._batch = (n, compiled.create_infer_request(), len(compiled.outputs))
        return self._batch[1], self._batch[2]

    def close(self) -> None:
        self._compiled.clear()
        self._batch = None


def _openvino():
    """The openvino module, or None where it is not installed. Its model converter, imported with
    it, starts a telemetry sender thread at import unless its telemetry package is missing; the app
    converts nothing with it and sends nothing, so that package is kept out (its stub is used)."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def _available() -> str | None:
    return None if _openvino() is not None else "OpenVINO is not installed (pip install openvino)"


def _precisions(device: torch.device) -> tuple[str, ...]:
    return ("fp32", "bf16") if device.type == "cpu" and bf16_native(device) else ("fp32",)


def _make(adapter: ModelAdapter, precision: str, threads: int, taps: Sequence[str], context: BuildContext) -> Runner:
    runner = OpenVinoRunner(adapter, adapter.spec.has_class_map, threads=threads, precision=precision,
                            full_layers=context.full_layers, cache=context.cache,
                            graphs=context.shared.get("openvino"))
    context.shared["openvino"] = runner.graphs  # another thread count or precision reuses the exports
    if taps:
        runner.set_taps(taps)
    return runner


BACKEND = Backend("openvino", "OpenVINO", "OpenVINO", "D", _make, available=_available, precisions=_precisions,
                  pool=True)
