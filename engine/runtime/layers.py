"""The layers of a network worth showing: their names, output shapes and operations."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from engine.models.adapter import ModelAdapter
from engine.runtime.results import LayerInfo

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_container(module: nn.Module) -> bool:
    """A module that only groups named layers (a model may mark its own with ``groups_layers``)."""
    return isinstance(module, CONTAINERS) or getattr(type(module), "groups_layers", False)


def feature_layers(adapter: ModelAdapter, device: torch.device | str = "cpu") -> tuple[LayerInfo, ...]:
    """Layers with a (C, H, W) output worth showing, found with one forward pass.

    Leaves inside plain containers (``features.conv1``) are listed; a composite block (ENet's
    ``stage2.bottleneck2_4``) is listed as one layer, its insides are not.
    """
    spec, model = adapter.spec, adapter.model
    parents = {name: module for name, module in model.named_modules()}
    chosen: list[str] = []
    for name, module in model.named_modules():
        if not name:
            continue
        parent = parents[name.rpartition(".")[0]]
        inside_block = any(not is_container(parents[p]) for p in _ancestors(name))
        if inside_block or is_container(module) or isinstance(module, (nn.Dropout, nn.Dropout2d)):
            continue
        if parent is model or is_container(parent):
            chosen.append(name)
    shapes: dict[str, tuple[int, ...]] = {}
    inputs: dict[str, tuple[tuple, dict]] = {}
    order: list[str] = []

    def keep_input(layer: str):
        def hook(_m, args, kwargs) -> None:
            if layer not in inputs:  # lists copied: ENet's blocks push to and pop from a shared stack
                inputs[layer] = (tuple(list(a) if isinstance(a, list) else a for a in args), dict(kwargs))
        return hook

    def record(layer: str):
        def hook(_m, _i, output) -> None:
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor) and out.dim() == 4 and layer not in shapes:
                shapes[layer] = tuple(out.shape[1:])
                order.append(layer)
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(record(n)) for n in chosen]
    hooks += [model.get_submodule(n).register_forward_pre_hook(keep_input(n), with_kwargs=True) for n in chosen]
    try:
        with torch.inference_mode():
            x = torch.zeros((1, *spec.input_size), device=device, dtype=next(model.parameters()).dtype)
            adapter(x)
    finally:
        for h in hooks:
            h.remove()
    macs = {}
    with torch.inference_mode():
        for layer in order:  # each layer alone on the input it had: its own multiply-accumulates
            args, kwargs = inputs[layer]
            counter = FlopCounterMode(display=False)
            with counter:
                model.get_submodule(layer)(*(list(a) if isinstance(a, list) else a for a in args), **kwargs)
            macs[layer] = counter.get_total_flops() // 2
    return tuple(LayerInfo(n, type(model.get_submodule(n)).__name__, shapes[n], macs[n])  # type: ignore[arg-type]
                 for n in order)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]
