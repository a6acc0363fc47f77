"""The whole answer of one pass as one graph: the network, softmax, the classes ranked, ENet's class
map and confidence, and the tapped layers as outputs; what every non-eager backend runs, and how
its outputs are compared with torch's."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn

from engine.models.adapter import ModelAdapter, without_in_place_ops

PARITY = 1e-3  # an export whose logits differ from torch's by more (relative to their size) is refused


class BackendError(ValueError):
    """A backend that cannot run here or cannot run this network; the message is one line."""


class GraphOutputs(NamedTuple):
    """One pass through a runner's graph, as numpy arrays (batch first)."""

    logits: np.ndarray  # (N, classes) float32
    probs: np.ndarray  # (N, classes) float32 softmax
    top: np.ndarray  # (N, classes) int64: every class, best first (a caller keeps the first k)
    class_map: np.ndarray | None  # (N, H, W) uint8 argmax of the per-pixel logits (ENet)
    confidence: np.ndarray | None  # (N, H, W) float32 softmax max of the same
    taps: dict[str, np.ndarray]  # layer name -> (N, C, H, W) float32


class Graph(nn.Module):
    """The network plus everything the engine reads from a pass, as one traceable module.

    Taps are placed for the duration of each call (on a private copy of the network: see
    :func:`private_copy`), so tracing sees them as plain tensors flowing to outputs.
    """

    def __init__(self, adapter: ModelAdapter, layers: Sequence[str], with_map: bool,
                 store: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.net = adapter.model
        self.adapter, self.layers, self.with_map = adapter, tuple(layers), with_map
        self.store = store  # given: the taps are already in place and fill it (torch.compile)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # a change here: bump EXPORT_FORMAT
        store: dict[str, torch.Tensor] = {} if self.store is None else self.store
        store.clear()  # empty at every entry: torch.compile's guards see the same state each call
        with contextlib.ExitStack() as stack:
            if self.store is None:
                stack.enter_context(self.adapter.tapped(self.layers, store))
            if self.with_map:
                logits, pixel_logits = self.adapter.forward_map(x)
            else:
                logits = self.adapter.model(x)
        probs = logits.softmax(1)
        # every class ranked, not the first k: one graph serves any k (a sort of 10 or 1000 numbers)
        outputs = [logits, probs, probs.topk(self.adapter.spec.num_classes, dim=1).indices]
        if self.with_map:
            confidence, pixel_class = top_class(pixel_logits, 1)
            outputs += [pixel_class.to(torch.uint8), confidence]
        return tuple(outputs + [store[layer] for layer in self.layers])


def top_class(logits: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability, index) of the top class along ``dim``, the probability as 1 / sum(exp(l - l_top)):
    the same number as ``softmax(dim).max(dim)`` without a softmax across channels, which ONNX Runtime
    runs as a transpose, a softmax and a transpose back (6 of ENet's 36 ms at batch 64). Every
    backend computes ENet's class-map confidence this way, so that ``auto`` compares like with like."""
    top_logit, index = logits.max(dim)
    return (logits - top_logit.unsqueeze(dim)).exp().sum(dim).reciprocal(), index


def output_names(layers: Sequence[str], with_map: bool) -> list[str]:
    return ["logits", "probs", "top"] + (["class_map", "confidence"] if with_map else []) + \
        [f"tap/{layer}" for layer in layers]


def graph_outputs(values: Sequence[np.ndarray], layers: Sequence[str], with_map: bool) -> GraphOutputs:
    n = 5 if with_map else 3
    return GraphOutputs(values[0], values[1], values[2], values[3] if with_map else None,
                        values[4] if with_map else None, dict(zip(layers, values[n:])))


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    return got.shape == want.shape and float(np.abs(got.astype(np.float64) - want).max(initial=0.0)) <= PARITY * scale


def first_difference(got: GraphOutputs, logits: np.ndarray, want: GraphOutputs, layers: Sequence[str]) -> str | None:
    """The first output of ``got`` that disagrees with torch's (``logits`` and ``want``), or None.

    The ranking is checked by what it ranks, not index by index: two classes whose probabilities
    tie within the parity may come in either order."""
    if not _close(got.logits, logits):
        return "logits"
    if not _close(got.probs, want.probs):
        return "probabilities"
    n = want.probs.shape[1]
    if got.top.shape != want.top.shape or any(sorted(row.tolist()) != list(range(n)) for row in got.top):
        return "class rankings"
    ranked = np.take_along_axis(want.probs, got.top.astype(np.int64), axis=1)
    if (np.diff(ranked, axis=1) > PARITY).any():
        return "class rankings"
    if want.class_map is not None:
        if got.class_map is None or got.class_map.shape != want.class_map.shape:
            return "class maps"
        if (got.class_map != want.class_map).mean() > 0.01:  # near-ties may flip a few pixels
            return "class maps"
        if got.confidence is None or not _close(got.confidence, want.confidence):
            return "class-map confidences"
    for layer in layers:
        if layer not in got.taps or not _close(got.taps[layer], want.taps[layer]):
            return f"taps at {layer}"
    return None


def private_copy(adapter: ModelAdapter) -> ModelAdapter:
    """The network again, float32 on the CPU, in eval mode, sharing no module with ``adapter``.

    Export and compilation place taps for their own graph; on the live network they would collide
    with the engine's taps. Built on the meta device and filled with the loaded tensors (float32
    copies where the live network runs bf16), so it costs no random initialisation.
    """

    spec = adapter.spec
    with torch.device("meta"):
        model = spec.build()
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in adapter.model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    without_in_place_ops(model)
    return ModelAdapter(spec, model.eval())
