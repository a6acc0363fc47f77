"""What a session answers for one frame: immutable, numpy-only results that may cross threads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import numpy as np


def frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only: results cross threads and must not change under a reader."""
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str  # the module's class name: Conv2d, ReLU, RegularBottleneck...
    shape: tuple[int, int, int]  # (C, H, W) of its output at the network's input size
    macs: int = 0  # multiply-accumulates of this layer alone for one image (engine.models.complexity's convention)


class ModelResult(NamedTuple):
    """One network's answer to one frame. A named tuple rather than a frozen dataclass: it is made
    for every network on every frame, and building a frozen dataclass costs as much as the rest of
    LeNet-5's post-processing."""

    model: str
    top_indices: np.ndarray  # (k,) int64, best first
    class_names: tuple[str, ...]  # the network's vocabulary (shared, not copied): see top_labels
    probs: np.ndarray  # (classes,) float32 softmax
    preprocess_ms: float
    forward_ms: float  # input tensor to finished result: forward, capture, softmax (synced on CUDA)
    view: np.ndarray  # (H, W, 3) uint8: the input as this network sees it
    activations: Mapping[str, np.ndarray]  # layer name -> (C, H, W) float32
    class_map: np.ndarray | None = None  # (H, W) uint8 argmax of per-pixel logits (ENet)
    class_map_confidence: np.ndarray | None = None  # (H, W) float32 softmax max of the same
    probes: Mapping[str, object] = MappingProxyType({})  # probe name -> result, for probes other
    # than activations (engine.probes); not included in forward_ms. Gradient probes run on torch.
    backend: str = "torch"  # what ran the forward pass: a backend of engine.runtime.backends

    @property
    def top_probs(self) -> np.ndarray:
        """(k,) float32: the probabilities of :attr:`top_indices` (read from :attr:`probs`)."""
        return frozen(self.probs[self.top_indices])

    @property
    def top_labels(self) -> tuple[str, ...]:
        return tuple([self.class_names[i] for i in self.top_indices.tolist()])

    @property
    def top1(self) -> int:
        return int(self.top_indices[0])

    @property
    def latency_ms(self) -> float:
        return self.preprocess_ms + self.forward_ms


@dataclass(frozen=True)
class FrameResult:
    frame_id: int
    source: str  # e.g. the file name, "camera 0"
    label: int | None  # ground truth when the source has one
    frame: np.ndarray | None  # the original RGB frame
    results: Mapping[str, ModelResult] = field(default_factory=dict)
    error: str | None = None  # one line, when the frame itself could not be read
    started: float = 0.0  # time.perf_counter() when inference began
    finished: float = 0.0
    generation: int = 0  # the capture request (engine.live.events.RunRequest) this result answers
    perturbation: str = ""  # what was done to the frame before the networks saw it ("Gaussian blur 3"), if anything
    clean_top1: Mapping[str, int] | None = None  # with a perturbation: each network's top-1 on the clean frame
    original: np.ndarray | None = None  # with a perturbation: the clean frame (``frame`` is the perturbed one)

    @property
    def ok(self) -> bool:
        return self.error is None
