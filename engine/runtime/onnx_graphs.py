"""One network's ONNX exports, as the runtimes that read ONNX (ONNX Runtime, OpenVINO) get them.

ONNX Runtime has no hooks, and a graph output is the one way to get an intermediate tensor out of
a runtime. A layer that is an output cannot be fused with the next one, so each set of tapped
layers gets its own graph. Exporting one can take seconds (ENet's: about 5 s here), so the first
export of a network has every layer the app can show as an output, and a tap set within those is
cut from it: its other outputs are dropped, and the runtime removes the nodes nothing reads any more.
A tap set outside those layers is exported for itself.

Every graph, exported now or read from the cache (:mod:`engine.runtime.onnx_cache`), is checked
by the runtime that will run it: its outputs on a fixed random input must agree with torch's
(:func:`~engine.runtime.graph.first_difference`). A graph that does not is exported again, never trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from engine.models.adapter import ModelAdapter
from engine.runtime.graph import (
    BackendError,
    Graph,
    GraphOutputs,
    first_difference,
    graph_outputs,
    output_names,
    private_copy,
)
from engine.runtime.onnx_cache import OnnxCache, weights_digest
from engine.runtime.onnx_export import cut_outputs, export_onnx, for_export

log = logging.getLogger(__name__)

# A graph bigger than this (VGG-16 and AlexNet on ImageNet: 527 and 233 MB) is not held in memory
# between tap sets when the cache has it: each runtime session holds its own copy of the weights.
BIG_GRAPH = 64 << 20
KEPT_CUTS = 2  # tap sets whose cut graph is kept (the bare pass and the layer on screen)

Check = Callable[[bytes, np.ndarray], Sequence[np.ndarray]]  # a runtime's outputs of a graph on an input


class ExportedGraphs:
    """``adapter``'s exports for one runtime, whose ``run_probe(data, x)`` runs a graph on an input.

    ``full_layers`` are the layers the first export has as outputs; ``cache`` None keeps exports in
    memory only. Raises :class:`BackendError` when the export fails or its outputs differ from torch's.
    """

    def __init__(self, adapter: ModelAdapter, with_map: bool, run_probe: Check, *,
                 full_layers: Sequence[str] = (), cache: OnnxCache | None = None) -> None:
        self.spec, self.with_map, self.cache, self._run_probe = adapter.spec, with_map, cache, run_probe
        self.copy = private_copy(adapter)
        # Checked against torch's logits on this fixed input, taken from the network as loaded:
        # before the export form below, so that a wrong rewrite could not pass the check.
        self.probe = np.random.default_rng(0).standard_normal((1, *self.spec.input_size), np.float32)
        with torch.inference_mode():
            self._expected = self.copy.logits(torch.from_numpy(self.probe)).numpy()
        for_export(self.copy.model)
        self.digest = weights_digest(self.copy.model)  # the export form keeps every parameter's name and bytes
        self.full_layers = tuple(full_layers)
        self.exported = 0  # graphs exported here (rather than read from the cache)
        self._cuts: dict[tuple[str, ...], bytes] = {}
        self._on_disk: Path | None = None
        self._full: bytes | None = self.graph(self.full_layers)
        self.big = len(self._full) > BIG_GRAPH
        if self.big and self._on_disk is not None:
            self._full = None  # read back from the cache for the next tap set

    def full(self) -> bytes:
        """The full export: held in memory, or read back from the cache (exported again if it went)."""
        if self._full is not None:
            return self._full
        data = self.cache.read(self._on_disk) if self.cache is not None and self._on_disk is not None else None
        if data is None:  # pruned or damaged since: export again, and hold it if it cannot be cached
            self._on_disk = None
            data = self.graph(self.full_layers)
            if self._on_disk is None:
                self._full = data
        return data

    def for_taps(self, layers: tuple[str, ...]) -> bytes:
        """The graph whose outputs are the answer and ``layers``: cut from the full export where it
        has them, else exported for itself. The last cuts are kept: each thread count's session and
        each runtime ask for the same ones (a cut of VGG-16 takes 0.1 s)."""
        if layers in self._cuts:
            return self._cuts[layers]
        if set(layers) <= set(self.full_layers):
            data = cut_outputs(self.full(), output_names(layers, self.with_map))
        else:
            data = self.graph(layers)
        if not self.big:
            self._cuts[layers] = data
            while len(self._cuts) > KEPT_CUTS:
                self._cuts.pop(next(iter(self._cuts)))
        return data

    def graph(self, layers: tuple[str, ...]) -> bytes:
        """The exported model for ``layers``: from the cache when it is intact and agrees with torch,
        else exported now (and cached)."""
        path = None
        if self.cache is not None:
            path = self.cache.path(self.copy, self.cache.key(self.copy, self.digest, layers, self.with_map))
            data = self.cache.read(path)
            if data is not None:
                try:
                    self.check(data, layers)
                    if layers == self.full_layers:
                        self._on_disk = path
                    return data
                except BackendError as e:  # a damaged or stale file: export again
                    log.warning("%s; exporting again", e)
        data = export_onnx(self.copy, layers, self.with_map)
        self.exported += 1
        self.check(data, layers)
        if self.cache is not None and path is not None:
            self.cache.exports += 1
            if self.cache.write(path, data) and layers == self.full_layers:
                self._on_disk = path
        return data

    def check(self, data: bytes, layers: tuple[str, ...]) -> None:
        """Refuse a graph whose outputs on the probe differ from torch's: every output the engine
        reads, so that a graph edited anywhere (a TopK turned to smallest-first) cannot pass."""
        try:
            got = graph_outputs(self._run_probe(data, self.probe), layers, self.with_map)
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 - each runtime raises its own kinds
            raise BackendError(f"{self.spec.name}: the ONNX export does not run: {str(e)[:200]}") from None
        wrong = first_difference(got, self._expected, self.torch_outputs(layers), layers)
        if wrong:
            raise BackendError(f"{self.spec.name}: the ONNX export's {wrong} differ from torch's")

    def torch_outputs(self, layers: tuple[str, ...]) -> GraphOutputs:
        """What torch computes for every output of the graph on the probe."""
        with torch.inference_mode():
            values = Graph(self.copy, layers, self.with_map).eval()(torch.from_numpy(self.probe))
        return graph_outputs([v.numpy() for v in values], layers, self.with_map)


def float32_input(x: torch.Tensor) -> np.ndarray:
    """The input as the ONNX runtimes take it: a contiguous float32 array (a bf16 batch is converted)."""
    return (x if x.dtype == torch.float32 else x.float()).contiguous().numpy()
