"""Static cost of a network: parameters, multiply-accumulates, size and activation memory.

Convention: one multiply-accumulate (MAC) is two FLOPs. ``torch.utils.flop_counter`` counts the
FLOPs of convolutions, transposed convolutions and matrix products (the work that dominates a CNN);
pooling, normalisation and activations are not counted, as in the papers' and torchvision's figures.
The counts run on the ``meta`` device, so even VGG-19 at 224x224 costs no memory and no compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.models.adapter import ModelAdapter
from engine.models.registry import ModelSpec, get_spec


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int  # at the spec's input size, batch 1
    size_mb: float  # fp32 parameters and buffers, 1 MB = 10**6 bytes
    activation_mb: float  # fp32 outputs of every leaf layer for one input, held at once


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(spec: ModelSpec, model: nn.Module, input_size: tuple[int, int, int] | None = None) -> Complexity:
    """Counts for ``model`` (any device; run on ``meta`` for free) at ``input_size`` (C, H, W)."""
    device = next(model.parameters()).device
    x = torch.zeros((1, *(input_size or spec.input_size)), device=device)
    outputs_bytes = 0

    def count_output(module, _inputs, output) -> None:
        nonlocal outputs_bytes
        if getattr(module, "inplace", False):  # writes over its input: no new memory
            return
        for t in output if isinstance(output, tuple) else (output,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                outputs_bytes += t.numel() * 4

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count_output) for m in leaves]
    try:
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            ModelAdapter(spec, model.eval())(x)  # the pass the app runs: ENet's decoder included
    finally:
        for h in handles:
            h.remove()
    size_bytes = sum(t.numel() * 4 for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
    return Complexity(params=count_params(model), macs=counter.get_total_flops() // 2,
                      size_mb=size_bytes / 1e6, activation_mb=outputs_bytes / 1e6)


@cache
def complexity(name: str, profile: str) -> Complexity:
    """Counts for a registered network at its own input size (cached: a spec never changes)."""
    spec = get_spec(name, profile)
    with torch.device("meta"):
        model = spec.build()
    return measure(spec, model)
