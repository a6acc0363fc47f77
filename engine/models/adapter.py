"""Every network behind one interface: :class:`ModelAdapter`.

The rest of the engine never asks which family a network belongs to. It calls:

- ``adapter(x)``: the forward pass the app runs, as :class:`NetOutput` (image logits, and for a
  network with a class map, ENet, its per-pixel logits from the same pass);
- ``forward_features(x)`` / ``forward_head(features)``: the backbone's last feature map and the
  classifier on top of it (timm's split; Grad-CAM and embeddings start here);
- ``forward_map(x)``: ``(image logits, per-pixel logits)``, for networks that have a class map;
- ``layer(name)``: a module by its readable name (``features.conv3``, ``stage2.bottleneck2_4``);
- ``tap(layers, store)``: named taps that keep those layers' outputs in ``store`` on every pass
  until removed (``tapped`` is the same as a context manager);
- :func:`translate_checkpoint`: a state dict in torchvision's names, renamed to this project's.

A new network is a model file plus one registry entry; a model class may define
``forward_features`` and ``forward_head`` itself, otherwise the torchvision layout
(``features`` -> ``avgpool``/``pool`` -> flatten -> ``classifier``) is assumed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn as nn

from engine.models.registry import ModelSpec


class NetOutput(NamedTuple):
    logits: torch.Tensor  # (N, classes)
    pixel_logits: torch.Tensor | None = None  # (N, classes, H, W) for a network with a class map


class ModelAdapter:
    __slots__ = ("spec", "model", "has_class_map")

    def __init__(self, spec: ModelSpec, model: nn.Module) -> None:
        self.spec = spec
        self.model = model
        self.has_class_map = spec.has_class_map

    def __call__(self, x: torch.Tensor) -> NetOutput:
        if self.has_class_map:
            return NetOutput(*self.model.forward_with_map(x))
        return NetOutput(self.model(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Image logits from the pass the app runs (ENet's decoder included)."""
        return self(x).logits

    def forward_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_class_map:
            raise TypeError(f"{self.spec.name} has no per-pixel class map")
        return self.model.forward_with_map(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        own = getattr(self.model, "forward_features", None)
        return own(x) if own is not None else self.model.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        own = getattr(self.model, "forward_head", None)
        if own is not None:
            return own(features)
        pool = getattr(self.model, "avgpool", None) or getattr(self.model, "pool", None)
        pooled = pool(features) if pool is not None else features
        return self.model.classifier(torch.flatten(pooled, 1))

    def layer(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def tap(self, layers: Iterable[str], store: dict[str, torch.Tensor]) -> list[Tap]:
        """Keep the output of each of ``layers`` in ``store`` (by layer name) on every forward pass,
        until each returned :class:`Tap` is removed. An unknown layer raises ``AttributeError``
        before any tap is placed."""
        modules = [(name, self.model.get_submodule(name)) for name in layers]
        return [Tap(module, store, name) for name, module in modules]

    @contextmanager
    def tapped(self, layers: Iterable[str], store: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        taps = self.tap(layers, store)
        try:
            yield store
        finally:
            for t in taps:
                t.remove()


class Tap:
    """Keeps one module's output, like a forward hook, at a fraction of the cost.

    Why not ``register_forward_hook``: a registered hook sends every call of its module down
    torch's slow path, which at batch 1 costs about as long as all of LeNet-5's convolutions, and
    the live engine keeps a tap on every network on every frame. Instead the tap shadows the
    module's ``forward`` with this object (an instance attribute; the class is untouched), which
    keeps the fast path and adds one Python call. ``remove()`` restores the class's forward.

    Nothing is copied: outputs are kept as made. The engine's networks run without in-place
    operations (:func:`without_in_place_ops`), so nothing overwrites them later.
    """

    __slots__ = ("module", "store", "layer", "inner")

    def __init__(self, module: nn.Module, store: dict[str, torch.Tensor], layer: str) -> None:
        self.module, self.store, self.layer = module, store, layer
        self.inner = module.forward
        module.forward = self

    def __call__(self, *args, **kwargs):
        output = self.inner(*args, **kwargs)
        self.store[self.layer] = output[0] if isinstance(output, tuple) else output
        return output

    def remove(self) -> None:
        if self.module.__dict__.get("forward") is self:
            del self.module.forward


def translate_checkpoint(spec: ModelSpec, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``state`` renamed from the layout of the spec's reference builder (torchvision's, for the
    ImageNet forms of AlexNet and VGG) to this project's names; None when the spec has no reference
    or ``state`` is not in the reference's names.

    The two layouts hold the same tensors in the same order under other names (``features.0`` is
    ``features.conv1``), so the map pairs the two state dicts entry by entry, checking shapes.
    """
    if spec.reference_builder is None:
        return None
    with torch.device("meta"):
        reference = spec.reference_builder(num_classes=spec.num_classes).state_dict()
        own = spec.build().state_dict()
    if set(state) != set(reference) or len(reference) != len(own):
        return None
    key_map = {}
    for (ref_key, ref_value), (own_key, own_value) in zip(reference.items(), own.items()):
        if ref_value.shape != own_value.shape:
            return None
        key_map[ref_key] = own_key
    return {key_map[k]: v for k, v in state.items()}


def without_in_place_ops(model: nn.Module) -> int:
    """Make in-place layers (ReLU(inplace=True), ...) write new tensors; returns how many changed.

    At batch 1 the memory an in-place ReLU saves is a few kilobytes, while keeping a captured
    activation safe from it would cost a copy on every frame.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
            changed += 1
    return changed
