"""Grad-CAM: where in the picture a network found the evidence for a class.

A class-activation map weighs the channels of one convolutional layer's output by how much each
raises the class's score, sums them and keeps the positive part: a coarse (h, w) map of the layer's
grid, upsampled here to the network's input size and scaled to [0, 1].

- ``gradcam`` (Selvaraju et al. 2017, arXiv 1610.02391): channel weights are the spatial mean of
  the score's gradient. One forward and one backward pass.
- ``gradcam++`` (Chattopadhyay et al. 2018, arXiv 1710.11063): weights from positive gradients,
  with per-location coefficients from higher-order terms; sharper when a class appears more than
  once. The same cost as ``gradcam``.
- ``scorecam`` (Wang et al. 2020, arXiv 1910.01279): no gradients; each channel, upsampled and
  scaled to [0, 1], masks the input, and the class score of the masked input weighs it. One extra
  forward pass per channel of the layer (512 for VGG-16's default layer): seconds, not milliseconds.

The maps are computed by ``torchcam`` (``torchcam.methods``), which hooks the layer by name and
takes the class scores of a pass the caller runs. The pass here is the adapter's
``forward_features`` then ``forward_head``: the image logits the app shows, without ENet's decoder,
which the logits do not read. A network held in bf16 (:mod:`engine.runtime.precision`) is explained through
a float32 copy of its weights (bf16 values are exact in float32), made once and kept while that
network lives, so the map is computed in float32 and never suffers bf16's 8-bit mantissa in the
gradients; the network's own pass is unchanged.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.models.adapter import ModelAdapter
from engine.models.registry import ModelSpec
from engine.probes.base import ProbeContext
from engine.runtime.device import synchronize

METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "scorecam")
SCORECAM_BATCH = 32  # masked inputs per forward pass in Score-CAM


class GradCamError(RuntimeError):
    """A Grad-CAM request a network cannot answer (no such layer, a layer the class scores do not
    depend on, a class out of range, torchcam missing); ``str(e)`` is one line."""


@dataclass(frozen=True)
class GradCam:
    """Explain one class of one network on the frame.

    ``layer``: the layer whose output is weighed ("" for the network's default,
    :func:`default_layer`); ``target``: the class index to explain (None for the network's own
    top-1 on this input); ``method``: one of :data:`METHODS`.
    """

    layer: str = ""
    target: int | None = None
    method: str = "gradcam"
    name: str = "gradcam"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown Grad-CAM method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.target is not None and (isinstance(self.target, bool) or not isinstance(self.target, int)
                                        or self.target < 0):
            raise ValueError(f"the class to explain must be an index of 0 or more, not {self.target!r}")

    @property
    def layers(self) -> tuple[str, ...]:
        """None of the frame's own outputs: the probe runs a pass of its own, with gradients."""
        return ()


@dataclass(frozen=True, eq=False)  # holds an array: equal only to itself
class GradCamResult:
    """One class-activation map of one network on one input.

    ``map``: (H, W) float32 in [0, 1] at the network's input size (the image it was given, see
    ``ModelResult.view``), read-only; 1 is the location that raised the class's score most, and the
    map is all zeros when no location raised it. ``target`` and ``label``: the class explained.
    ``probability``: its softmax probability in the probe's pass. ``layer``: the layer weighed, and
    ``grid``: that layer's (h, w), the map's true resolution before upsampling. ``ms``: wall time of
    the whole probe (its passes, the backward pass or the masked passes, upsampling), synchronised on
    a GPU; the first call on a bf16 network includes making its float32 copy.
    """

    map: np.ndarray
    target: int
    label: str
    probability: float
    layer: str
    grid: tuple[int, int]
    method: str
    ms: float


def default_layer(spec: ModelSpec) -> str:
    """The layer Grad-CAM explains when none is named: the spec's ``gradcam_layer`` (the end of the
    last convolution stage with a spatial map; the end of the encoder for ENet)."""
    if not spec.gradcam_layer:
        raise GradCamError(f"{spec.name} has no default Grad-CAM layer; name one")
    return spec.gradcam_layer


def deeper_layer(layers, current: str) -> str | None:
    """The layer to offer when Grad-CAM finds no positive evidence at ``current``: the deepest later
    layer of the same kind with a spatial map (VGG-16-BN's relu4_3 -> relu5_3). Measured on 101
    CIFAR-10 test images: relu4_3's map was all zero for 16, relu5_3's for none; relu5_1's, the
    next one, for 98. None when ``current`` is the deepest."""
    names = [layer.name for layer in layers]
    if current not in names:
        return None
    here = layers[names.index(current)]
    later = [layer.name for layer in layers[names.index(current) + 1:]
             if layer.kind == here.kind and len(layer.shape) == 3 and layer.shape[1] * layer.shape[2] > 1]
    return later[-1] if later else None


def run(adapter: ModelAdapter, batch: torch.Tensor, context: ProbeContext) -> GradCamResult:
    """The map asked for by ``context.request`` (a :class:`GradCam`) on a batch of one image."""
    return explain(adapter, batch, context.request)


def explain(adapter: ModelAdapter, batch: torch.Tensor, request: GradCam) -> GradCamResult:
    """Grad-CAM of ``request`` for the one image of ``batch`` (1, C, H, W), as the network is given
    it (normalised, in the network's dtype). Works inside or outside ``torch.inference_mode``;
    leaves the network as it was (its hooks removed, no gradients kept in its parameters)."""
    methods = _torchcam_methods()
    spec = adapter.spec
    started = time.perf_counter()
    if batch.dim() != 4 or batch.shape[0] != 1:
        raise GradCamError(f"Grad-CAM explains one image at a time, got a batch of shape {tuple(batch.shape)}")
    layer = request.layer or default_layer(spec)
    target = request.target
    if target is not None and target >= spec.num_classes:
        raise GradCamError(f"{spec.name} has {spec.num_classes} classes (0..{spec.num_classes - 1}), not {target}")
    adapter = _float32(adapter)
    try:
        module = adapter.layer(layer)
    except AttributeError:
        raise GradCamError(f"{spec.name} has no layer {layer!r}") from None
    scores_of = _Scores(adapter)
    with torch.inference_mode(False), torch.enable_grad():
        x = batch.detach().clone().float()  # a normal tensor, even when the batch was made in inference mode
        if request.method == "scorecam":
            extractor = methods.ScoreCAM(scores_of, module, batch_size=SCORECAM_BATCH, input_shape=spec.input_size)
        else:
            kind = methods.GradCAM if request.method == "gradcam" else _grad_cam_pp(methods)
            extractor = kind(scores_of, module, input_shape=spec.input_size)
            x.requires_grad_(True)  # the graph must reach the layer even if the weights are frozen
        with extractor:
            with torch.no_grad() if request.method == "scorecam" else torch.enable_grad():
                scores = scores_of(x)
            activation = extractor.hook_a[0]
            if activation is None:
                raise GradCamError(f"{spec.name}: layer {layer!r} is not on the way to the class scores")
            if activation.dim() != 4:
                raise GradCamError(f"{spec.name}: layer {layer!r} has no spatial map "
                                   f"(output shape {tuple(activation.shape)}); choose a convolutional layer")
            if target is None:
                target = int(scores[0].argmax())
            try:
                cam = extractor(class_idx=target, scores=scores, normalized=False)[0]
            except RuntimeError as e:  # torchcam: the score does not depend on the hooked output
                raise GradCamError(f"{spec.name}: the class scores do not depend on layer {layer!r}") from e
        probability = float(scores.detach()[0].float().softmax(0)[target])
    grid = (int(cam.shape[-2]), int(cam.shape[-1]))
    heat = _to_unit(cam.detach()[:1].float(), spec.input_size[1:])
    synchronize(heat.device)
    ms = (time.perf_counter() - started) * 1000
    out = heat.cpu().numpy()
    out.flags.writeable = False
    return GradCamResult(out, target, spec.class_names[target], probability, layer, grid, request.method, ms)


class _Scores(nn.Module):
    """The network's image logits as a module (torchcam hooks it and, for Score-CAM, calls it)."""

    def __init__(self, adapter: ModelAdapter) -> None:
        super().__init__()
        self.net = adapter.model
        self._adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._adapter.forward_head(self._adapter.forward_features(x))


def _to_unit(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, h, w) map -> (H, W) float32 in [0, 1]: bilinear upsampling, negatives cut, then scaled
    by its maximum after subtracting its minimum (all zeros for a flat map)."""
    heat = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[0, 0].clamp_(min=0)
    low, high = heat.min(), heat.max()
    span = float(high - low)
    if not np.isfinite(span) or span <= 1e-12:
        return torch.zeros(size, dtype=torch.float32, device=heat.device)
    return (heat - low) / span


_copies: weakref.WeakKeyDictionary[nn.Module, tuple[int, ModelAdapter]] = weakref.WeakKeyDictionary()
_copies_lock = threading.Lock()


def _float32(adapter: ModelAdapter) -> ModelAdapter:
    """``adapter`` itself for a float32 network; otherwise an adapter over a float32 copy, kept while
    the network lives and made again if its weights changed in place (a load of new weights)."""
    params = list(adapter.model.parameters())
    if all(p.dtype == torch.float32 for p in params):
        return adapter
    version = sum(p._version for p in params)
    with _copies_lock:
        kept = _copies.get(adapter.model)
        if kept is not None and kept[0] == version:
            return kept[1]
        copy32 = copy.deepcopy(adapter.model).float()
        made = ModelAdapter(adapter.spec, copy32)
        _copies[adapter.model] = (version, made)
        return made


_pp_class: type | None = None


def _grad_cam_pp(methods) -> type:
    """torchcam's Grad-CAM++ with the paper's channel weights: ``w = sum_ij alpha_ij relu(g_ij)``,
    ``alpha_ij = g_ij^2 / (2 g_ij^2 + g_ij^3 sum_ab A_ab)`` (arXiv 1710.11063, eq. 19 with the
    exponential's derivatives; ``g`` the score's gradient, ``A`` the layer's output, per channel),
    as torchcam's own docstring states it. torchcam 0.5.0 divides with ``alpha[mask].div_(...)``,
    which divides a copy, so its weights come out as ``sum g^2 relu(g)``. Everything else (hooks,
    the backward pass, the map) is torchcam's."""
    global _pp_class
    if _pp_class is None:
        class GradCAMppPaper(methods.GradCAMpp):
            def _get_weights(self, class_idx, scores, eps: float = 1e-8, **kwargs) -> list[torch.Tensor]:
                self._backprop(scores, class_idx, **kwargs)
                weights = []
                for activation, grad in zip(self.hook_a, self.hook_g):
                    grad_2 = grad.pow(2)
                    activation_sum = activation.flatten(2).sum(-1)[..., None, None]
                    alpha = torch.where(grad_2 > 0, grad_2 / (2 * grad_2 + grad_2 * grad * activation_sum + eps), 0.0)
                    weights.append((alpha * grad.relu()).flatten(2).sum(-1))
                return weights

        _pp_class = GradCAMppPaper
    return _pp_class


def _torchcam_methods():
    try:
        from torchcam import methods
    except ImportError:
        raise GradCamError("Grad-CAM needs the torchcam package (Python 3.11 or newer): "
                           "pip install torchcam") from None
    return methods
