"""Activations: the outputs of chosen layers, the feature maps a panel shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch

from engine.models.adapter import ModelAdapter
from engine.probes.base import ProbeContext, read_only

ActivationMaps = Mapping[str, np.ndarray]  # layer -> (N, C, H, W) float32, read-only


@dataclass(frozen=True)
class Activations:
    layers: tuple[str, ...]
    name: str = "activations"


def run(adapter: ModelAdapter, batch: torch.Tensor, context: ProbeContext) -> ActivationMaps:
    """The requested layers' outputs for the whole batch. Read from the frame's own pass when it
    kept them (``context.taps``); otherwise one pass of its own, without gradients."""
    layers = context.request.layers
    taps = context.taps
    if any(layer not in taps for layer in layers):
        store: dict[str, torch.Tensor] = {}
        with adapter.tapped(layers, store), torch.inference_mode():
            adapter(batch)
        taps = store
    return MappingProxyType({layer: read_only(taps[layer]) for layer in layers})
