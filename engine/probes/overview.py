"""The whole network at a glance: one small picture per layer, and how much of it is silent.

For each requested layer the frame's own pass kept (taps), the probe returns, at most
``size`` x ``size`` (average-pooled down when the layer's map is larger):

- ``mean``: the mean over the layer's channels;
- ``strongest``: the channel with the highest peak on this frame, and its index;
- ``zero_fraction``: the share of the layer's outputs that are exactly 0 (what a ReLU silences);
- ``silent``: how many channels have no positive value anywhere on this frame.

It reads the pass the frame already ran (no pass of its own); its cost is one reduction per layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

from engine.models.adapter import ModelAdapter
from engine.probes.base import ProbeContext, read_only


@dataclass(frozen=True)
class LayerOverview:
    layers: tuple[str, ...]
    size: int = 32  # the longest side of each small picture
    name: str = "overview"


@dataclass(frozen=True, eq=False)  # holds arrays: equal only to itself
class LayerGlance:
    mean: np.ndarray  # (h, w) float32, read-only
    strongest: np.ndarray  # (h, w) float32, read-only
    strongest_channel: int
    zero_fraction: float
    silent: int  # channels with no positive value on this frame
    channels: int


def _small(t: torch.Tensor, size: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    if max(h, w) <= size:
        return t
    scale = size / max(h, w)
    return F.adaptive_avg_pool2d(t[None, None], (max(1, round(h * scale)), max(1, round(w * scale))))[0, 0]


def glance(activation: torch.Tensor, size: int = 32) -> LayerGlance:
    """One layer's (C, H, W) output, summarised."""
    a = activation.detach().float()
    peaks = a.amax(dim=(1, 2))
    k = int(peaks.argmax())
    return LayerGlance(read_only(_small(a.mean(0), size)), read_only(_small(a[k], size)), k,
                       float((a == 0).float().mean()), int((peaks <= 0).sum()), int(a.shape[0]))


def run(adapter: ModelAdapter, batch: torch.Tensor, context: ProbeContext) -> Mapping[str, LayerGlance]:
    """Every requested layer the frame's pass kept that has a (C, H, W) map, image 0 of the batch."""
    request = context.request
    taps = context.taps
    if any(layer not in taps for layer in request.layers):
        store: dict[str, torch.Tensor] = {}
        with adapter.tapped(request.layers, store), torch.inference_mode():
            adapter(batch)
        taps = store
    out = {}
    with torch.inference_mode():
        for layer in request.layers:
            t = taps.get(layer)
            if isinstance(t, torch.Tensor) and t.dim() == 4:
                out[layer] = glance(t[0], request.size)
    return MappingProxyType(out)


def array_glance(activation: np.ndarray, size: int = 32) -> LayerGlance:
    """:func:`glance` of a (C, H, W) numpy array (a captured activation)."""
    return glance(torch.from_numpy(np.ascontiguousarray(activation)), size)
