"""Receptive fields: which input pixels one position of a layer's feature map can see.

Along each axis a position ``i`` of a layer's map depends on the input pixels
``offset + i * jump .. offset + i * jump + size - 1``: ``size`` is the field's extent, ``jump`` the
distance in input pixels between neighbouring positions (the product of the strides so far), and
``offset`` the first input pixel of position 0's field (negative where padding reaches past the
image's edge). A convolution or pool with kernel ``k``, stride ``s``, padding ``p`` and dilation
``d`` after a field ``(size, jump, offset)`` gives ``(size + (k - 1) * d * jump, s * jump,
offset - p * jump)``; batch norm, activations, dropout and other per-position operations leave
the field as it is.

How the path is found: one forward pass of a zero image at the network's input size, with a forward
hook on the layer asked for and a torch function mode that sees every operation as it runs (the
convolutions and pools inside each module, and the ``torch.cat`` and ``+`` that join branches,
which module hooks alone cannot see). Each tensor made in the pass carries the field of its
positions, so containers, ENet's named blocks and their branches need no special case:

- branches that join (ENet's initial block concatenates a 3x3 stride-2 conv and a 2x2 pool; every
  bottleneck adds its side branch to its input) get the union of their fields, which is exact for
  the extent (the largest span any branch reaches) at the branches' common jump;
- upsampling (ENet's decoder: max-unpool and transposed convolution) divides the jump, which may
  then be a fraction of a pixel; its field is a bound that contains every pixel that can
  contribute (which unpooled position got a value depends on the data);
- an operation that changes the map's size in a way not described here (an interpolation, a global
  pool kept 4-D) makes the fields after it unknown: asking for one is a
  :class:`ReceptiveFieldError` naming the layer, never a wrong number.

The field is the theoretical one (every pixel that can influence the position); the pixels that
matter most cluster near its centre.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from engine.models.adapter import ModelAdapter
from engine.models.registry import ModelSpec


class ReceptiveFieldError(ValueError):
    """A layer whose receptive field cannot be given; ``str(e)`` is one line."""


Number = int | float


@dataclass(frozen=True)
class ReceptiveField:
    """The field of one position of ``layer``'s map, per axis as ``(rows, cols)`` (module docs).

    ``size`` and ``jump`` are in input pixels; ``offset`` is the input (row, col) of the first
    pixel of position (0, 0)'s field. Whole numbers are ints; after upsampling (ENet's decoder) a
    jump or offset may be a fraction, given as a float. ``map_shape`` is the layer's (H, W) and
    ``input_shape`` the network's input (H, W) the field was traced at.
    """

    layer: str
    size: tuple[Number, Number]
    jump: tuple[Number, Number]
    offset: tuple[Number, Number]
    map_shape: tuple[int, int]
    input_shape: tuple[int, int]

    def box(self, row: int, col: int) -> tuple[Number, Number, Number, Number]:
        """``(top, left, bottom, right)`` of position (row, col)'s field in input pixels, not
        clipped to the image; bottom and right are one past the last pixel, as in slicing."""
        top = self.offset[0] + row * self.jump[0]
        left = self.offset[1] + col * self.jump[1]
        return top, left, top + self.size[0], left + self.size[1]

    def centre(self, row: int, col: int) -> tuple[float, float]:
        """The input (row, col) at the middle of position (row, col)'s field."""
        top, left, bottom, right = self.box(row, col)
        return (top + bottom - 1) / 2, (left + right - 1) / 2

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "size": list(self.size), "jump": list(self.jump), "offset": list(self.offset),
                "map_shape": list(self.map_shape), "input_shape": list(self.input_shape)}


def crop_box(rf: ReceptiveField, row: int, col: int, input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the pixels under position (row, col)'s field, clipped to an
    image of ``input_hw`` (H, W): ``image[top:bottom, left:right]`` is the crop. A fractional edge
    (after upsampling) is rounded outwards, so the crop never leaves out a pixel of the field."""
    h, w = input_hw
    top, left, bottom, right = rf.box(row, col)
    # bottom - 1 is the last pixel the field reaches: round it up, then step one past it
    t, b = math.floor(top), math.ceil(bottom - 1) + 1
    lf, r = math.floor(left), math.ceil(right - 1) + 1
    t, b = min(max(t, 0), h), min(max(b, 0), h)
    lf, r = min(max(lf, 0), w), min(max(r, 0), w)
    return t, lf, max(b, t), max(r, lf)


def receptive_field(network: ModelAdapter | ModelSpec, layer: str) -> ReceptiveField:
    """The receptive field of one position of ``layer`` (a name as the layer picker lists it:
    ``features.conv3_1``, ``stage2.bottleneck2_4``) at the network's input size.

    ``network`` is a spec (built on torch's meta device: shapes only, no weights, no arithmetic, a
    few milliseconds) or an adapter (a copy of its module runs once on a zero image: the caller's
    module, which a live session may be running, gets no hook; weights do not matter, so the spec
    is the cheaper way for a registered network). Raises :class:`ReceptiveFieldError` for an
    unknown layer, one that does not run in the network's forward pass, one without a spatial
    (C, H, W) map, or one after an operation whose geometry is not known (module docs).
    """
    if isinstance(network, ModelAdapter):
        return trace_own(ModelAdapter(network.spec, copy.deepcopy(network.model)), layer)
    try:
        with torch.device("meta"):
            model = network.build()
        return trace_own(ModelAdapter(network, model), layer)
    except (NotImplementedError, RuntimeError):  # an operation without a meta kernel: run it for real
        return trace_own(ModelAdapter(network, network.build()), layer)


# -- the trace -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    size: Fraction
    jump: Fraction
    offset: Fraction

    def then(self, kernel: int, stride: Fraction, padding: Fraction, dilation: int = 1) -> _Axis:
        return _Axis(self.size + (kernel - 1) * dilation * self.jump, stride * self.jump,
                     self.offset - padding * self.jump)

    def union(self, other: _Axis) -> _Axis:
        lo = min(self.offset, other.offset)
        hi = max(self.offset + self.size, other.offset + other.size)
        return _Axis(hi - lo, self.jump, lo)


_UNKNOWN = "unknown"  # a tensor after an operation of unknown geometry
_Field = tuple[_Axis, _Axis] | str


def _pair(value, default=None) -> tuple[int, int]:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        value = default
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1])) if len(value) in (1, 2) else (int(value[-2]), int(value[-1]))
    return int(value), int(value)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _conv(field, args, kwargs, out):
    weight = _arg(args, kwargs, 1, "weight")
    kernel = tuple(weight.shape[-2:])
    stride = _pair(_arg(args, kwargs, 3, "stride", 1))
    dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
    padding = _arg(args, kwargs, 4, "padding", 0)
    if padding == "valid":
        pad = (0, 0)
    elif padding == "same":  # torch puts the odd pixel of an even total on the far side
        pad = tuple(dilation[i] * (kernel[i] - 1) // 2 for i in range(2))
    else:
        pad = _pair(padding)
    return tuple(field[i].then(kernel[i], Fraction(stride[i]), Fraction(pad[i]), dilation[i]) for i in range(2))


def _max_pool(field, args, kwargs, out):
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size"))
    stride = _pair(_arg(args, kwargs, 2, "stride"), kernel)
    pad = _pair(_arg(args, kwargs, 3, "padding", 0))
    dilation = _pair(_arg(args, kwargs, 4, "dilation", 1))
    return tuple(field[i].then(kernel[i], Fraction(stride[i]), Fraction(pad[i]), dilation[i]) for i in range(2))


def _avg_pool(field, args, kwargs, out):
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size"))
    stride = _pair(_arg(args, kwargs, 2, "stride"), kernel)
    pad = _pair(_arg(args, kwargs, 3, "padding", 0))
    return tuple(field[i].then(kernel[i], Fraction(stride[i]), Fraction(pad[i])) for i in range(2))


def _adaptive_pool(field, args, kwargs, out):
    source = args[0]
    axes = []
    for i in range(2):
        n, m = int(source.shape[-2 + i]), int(out.shape[-2 + i])
        if n % m:  # uneven windows: no single kernel and stride describe them
            return _UNKNOWN
        axes.append(field[i].then(n // m, Fraction(n // m), Fraction(0)))
    return tuple(axes)


def _upsampled(field, kernel, stride, padding, dilation):
    """Output position o of a stride-s upsampling reads the inputs i with
    i*s - p + t*d == o for some tap t < k: i in [(o + p - (k-1)d) / s, (o + p) / s]."""
    axes = []
    for i in range(2):
        a = field[i]
        jump = a.jump / stride[i]
        start = a.offset + Fraction(padding[i] - (kernel[i] - 1) * dilation[i]) * a.jump / stride[i]
        size = a.size + Fraction((kernel[i] - 1) * dilation[i]) * a.jump / stride[i]
        axes.append(_Axis(size, jump, start))
    return tuple(axes)


def _conv_transpose(field, args, kwargs, out):
    weight = _arg(args, kwargs, 1, "weight")
    kernel = tuple(weight.shape[-2:])
    stride = _pair(_arg(args, kwargs, 3, "stride", 1))
    padding = _pair(_arg(args, kwargs, 4, "padding", 0))
    dilation = _pair(_arg(args, kwargs, 7, "dilation", 1))
    return _upsampled(field, kernel, stride, padding, dilation)


def _max_unpool(field, args, kwargs, out):
    kernel = _pair(_arg(args, kwargs, 2, "kernel_size"))
    stride = _pair(_arg(args, kwargs, 3, "stride"), kernel)
    padding = _pair(_arg(args, kwargs, 4, "padding", 0))
    return _upsampled(field, kernel, stride, padding, (1, 1))


def _pad(field, args, kwargs, out):
    pad = list(_arg(args, kwargs, 1, "pad"))
    left, top = (pad + [0, 0, 0, 0])[0], (pad + [0, 0, 0, 0])[2]
    return (_Axis(field[0].size, field[0].jump, field[0].offset - top * field[0].jump),
            _Axis(field[1].size, field[1].jump, field[1].offset - left * field[1].jump))


# Operations that change a map's geometry, by the function the torch function mode sees.
_GEOMETRY = {
    torch.conv2d: _conv,
    F.conv2d: _conv,
    F.max_pool2d: _max_pool,
    F.max_pool2d_with_indices: _max_pool,
    torch.max_pool2d: _max_pool,
    F.avg_pool2d: _avg_pool,
    F.adaptive_avg_pool2d: _adaptive_pool,
    F.adaptive_max_pool2d: _adaptive_pool,
    torch.conv_transpose2d: _conv_transpose,
    F.conv_transpose2d: _conv_transpose,
    F.max_unpool2d: _max_unpool,
    F.pad: _pad,
}


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class _FieldTracker(TorchFunctionMode):
    """Gives every 4-D tensor made in the pass the field of its positions (module docs)."""

    def __init__(self, source: torch.Tensor) -> None:
        super().__init__()
        one = _Axis(Fraction(1), Fraction(1), Fraction(0))
        # id -> (tensor, field); the tensor is kept so that its id is not reused in the pass
        self.fields: dict[int, tuple[torch.Tensor, _Field]] = {id(source): (source, (one, one))}

    def field_of(self, tensor: torch.Tensor) -> _Field | None:
        entry = self.fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        produced = [t for t in _tensors(out) if t.dim() == 4]
        if not produced:
            return out
        inputs = [(t, f) for t in _tensors(args) + _tensors(kwargs) if (f := self.field_of(t)) is not None]
        if not inputs:
            return out  # made from constants and weights only: no input pixel reaches it
        geometry = _GEOMETRY.get(func)
        first, field = inputs[0]
        if field == _UNKNOWN:
            result: _Field = _UNKNOWN
        elif geometry is not None:
            result = geometry(field, args, kwargs, produced[0])
        else:
            result = self._union(inputs, produced[0])
        for t in produced:
            self.fields[id(t)] = (t, result)
        return out

    @staticmethod
    def _union(inputs, out: torch.Tensor) -> _Field:
        """A per-position operation (or a join of branches): the union of its inputs' fields; an
        input whose map has another size than the output (a broadcast gate) or a field with
        another jump makes the geometry unknown."""
        result = None
        for t, field in inputs:
            if field == _UNKNOWN or t.dim() != 4 or t.shape[-2:] != out.shape[-2:]:
                return _UNKNOWN
            if result is None:
                result = field
            elif any(result[i].jump != field[i].jump for i in range(2)):
                return _UNKNOWN
            else:
                result = (result[0].union(field[0]), result[1].union(field[1]))
        return result if result is not None else _UNKNOWN


class _Reached(Exception):
    """Stops the pass once the layer asked for has run."""


def _number(value: Fraction) -> Number:
    return int(value) if value.denominator == 1 else float(value)


def trace_own(adapter: ModelAdapter, layer: str) -> ReceptiveField:
    """:func:`receptive_field` traced on ``adapter``'s own module (a forward hook on the layer for
    the length of one pass): for a module no other thread runs, such as a private copy."""
    spec, model = adapter.spec, adapter.model
    name = spec.name
    try:
        module = model.get_submodule(layer) if layer else None
    except AttributeError:
        module = None
    if module is None or module is model:
        raise ReceptiveFieldError(f"{name} has no layer {layer!r}")
    try:
        parameter = next(model.parameters())
        device, dtype = parameter.device, parameter.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    channels, height, width = spec.input_size
    seen: list[torch.Tensor] = []

    def hook(_module, _inputs, output) -> None:
        tensors = _tensors(output)
        seen.append(tensors[0] if tensors else output)
        raise _Reached

    x = torch.zeros((1, channels, height, width), device=device, dtype=dtype)
    handle = module.register_forward_hook(hook)
    tracker = _FieldTracker(x)
    try:
        with torch.inference_mode(), tracker:
            adapter(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not seen:
        raise ReceptiveFieldError(f"{name}: layer {layer!r} does not run in the network's forward pass")
    out = seen[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ReceptiveFieldError(f"{name}: layer {layer!r} has no spatial map (its output is {shape}, not C x H x W)")
    field = tracker.field_of(out)
    if field is None or field == _UNKNOWN:
        raise ReceptiveFieldError(f"{name}: the receptive field of {layer!r} is not known (it follows an operation "
                                  "whose geometry is not a convolution, pool or upsampling)")
    rows, cols = field
    return ReceptiveField(layer, (_number(rows.size), _number(cols.size)), (_number(rows.jump), _number(cols.jump)),
                          (_number(rows.offset), _number(cols.offset)), (int(out.shape[-2]), int(out.shape[-1])),
                          (height, width))
