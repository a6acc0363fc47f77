"""torch.compile: the session's graph compiled by inductor (C++ from the system's compiler; on a GPU
too). Each new tap set compiles again, seconds a network, so auto's tuner does not try it."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from engine.common.errors import error_line
from engine.models.adapter import ModelAdapter
from engine.runtime.backends.base import Backend, BackendError, BuildContext, GraphRunner, Runner
from engine.runtime.backends.torch_eager import torch_precisions
from engine.runtime.graph import Graph
from engine.runtime.onnx_export import EXPORTING, quiet_loggers
from engine.runtime.precision import dtype_of


class CompiledRunner(GraphRunner):
    backend = "compile"

    def __init__(self, adapter: ModelAdapter, with_map: bool, *, device: torch.device, precision: str = "fp32",
                 dtype: torch.dtype | None = None) -> None:
        # every tap set of every network is a graph of its own for the same forward code, and dynamo
        # keeps 8 per code by default before it gives up compiling it
        import torch._dynamo

        config = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, name):
                setattr(config, name, max(getattr(config, name), 64))
        super().__init__(adapter, with_map, device=device, precision=precision,
                         dtype=dtype if dtype is not None else dtype_of(precision))

    def build(self, graph: Graph, x: torch.Tensor) -> Callable:
        try:
            compiled = torch.compile(graph, dynamic=False)
            with EXPORTING, torch.inference_mode(), warnings.catch_warnings(), quiet_loggers():
                warnings.simplefilter("ignore")
                compiled(x)  # compile now, not on the first frame
                graph.store.clear()
        except Exception as e:  # noqa: BLE001 - inductor raises many kinds (no compiler, ...)
            raise BackendError(f"{self.spec.name}: torch.compile failed: {error_line(e, 200)}") from None
        return compiled


def _make(adapter: ModelAdapter, precision: str, threads: int, taps: Sequence[str], context: BuildContext) -> Runner:
    runner = CompiledRunner(adapter, adapter.spec.has_class_map, device=context.device, precision=precision)
    if taps:
        runner.set_taps(taps)
    return runner


BACKEND = Backend("compile", "torch.compile", "compiled", "s", _make, precisions=torch_precisions,
                  devices=("cpu", "cuda"), tuned=False)
