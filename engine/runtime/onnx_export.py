"""The ONNX export of a network's answer graph, in the forms ONNX Runtime keeps in its blocked channel
layout (PReLU as ``x + relu((a-1)x)`` with depthwise slopes, the down- and upsampling blocks joined
by a channel-copying 1x1 convolution), and cutting a graph down to a set of outputs."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn

from engine.models.adapter import ModelAdapter
from engine.runtime.graph import BackendError, Graph, output_names

MAX_EXPORT_BYTES = 2 << 30  # the largest export, VGG-19 for ImageNet in fp32, is 0.6 GB
EXPORT_FORMAT = 4  # bump when the exported graph's layout changes: old cache entries stop matching

log = logging.getLogger(__name__)


class PReLUForExport(nn.Module):  # a change here changes the exported graph: bump EXPORT_FORMAT
    """``nn.PReLU`` as a graph ONNX Runtime runs faster.

    ONNX Runtime runs convolutions in a blocked channel layout and keeps a tensor in it only through
    operators that have a blocked form: convolutions (with a Relu or an Add folded in), Add, Relu,
    pools. Its PRelu kernel has none, nor have Max, Mul by a per-channel slope or Clip: each of
    those made it reorder the tensor out of the blocked layout and back, a quarter of ENet's time.
    So the slope is a depthwise 1x1 convolution. Where every slope ``a`` is below 1 (all of the
    shipped ENet's but one layer's), PReLU is ``x + relu((a - 1) * x)``: two operators, the same
    value as ``a * x`` up to rounding (within ``(1 + 2|a|) * 2**-23 * |x|`` in float32: four
    roundings, counting PReLU's own ``a * x``; at most ``2 * (1 + 2|a|)`` units in the last place
    of x), and NaN for -inf. Otherwise it is ``relu(x) + (-a) * relu(-x)``: three operators,
    and the same values as PReLU, infinities included. ENet with its class map at batch 1 on one
    thread, with the downsampling blocks' export form (engine.models.enet), in three runs: 0.46-0.51
    ms with the first form where it applies, 0.50-0.54 with the second everywhere; the former
    ``max(x, a * x)`` took 0.55-0.56 with the blocks as written, ONNX's PRelu 0.78.
    Either way a zero's sign may differ from PReLU's. The parameter keeps PReLU's name and shape,
    so the weights digest is unchanged. Inputs that are not 4-D take ``relu(x) + a * min(x, 0)``:
    the same values for finite x (ONNX Runtime's Clip turns -inf into the lowest float)."""

    def __init__(self, prelu: nn.PReLU) -> None:
        super().__init__()
        self.weight = prelu.weight
        self.below_one = bool((prelu.weight.detach() < 1).all())  # a slope of 1 would turn +inf into NaN
        self.shared = prelu.weight.numel() == 1  # one slope for every channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return torch.relu(x) + self.weight.view(1, -1, *([1] * (x.dim() - 2))) * torch.clamp(x, max=0)
        channels = x.shape[1]
        slope = self.weight.view(-1, 1, 1, 1)
        if self.shared:
            slope = slope.expand(channels, 1, 1, 1)
        if self.below_one:
            return x + torch.relu(nn.functional.conv2d(x, slope - 1, groups=channels))
        negative = torch.relu(nn.functional.conv2d(x, -torch.ones_like(slope), groups=channels))
        return torch.relu(x) + nn.functional.conv2d(negative, -slope, groups=channels)


def for_export(model: nn.Module) -> None:
    """Put ``model`` (a private copy) in its export form, in place: every ``nn.PReLU`` becomes a
    :class:`PReLUForExport`, and every module with a ``prepare_export`` method (ENet's down- and
    upsampling bottlenecks) has it called. Parameters, buffers and their names stay as they were."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(parent, name, PReLUForExport(child))
    for module in model.modules():
        prepare = getattr(module, "prepare_export", None)
        if callable(prepare):
            prepare()


def export_onnx(adapter: ModelAdapter, layers: Sequence[str], with_map: bool) -> bytes:
    """The serialized ONNX model of :class:`Graph` on ``adapter`` (a private copy), batch dynamic.

    Two exporters, fastest first: torch's TorchScript-based one (a trace: a fraction of a second for
    LeNet-5, AlexNet and VGG) and, for what it cannot translate (ENet's ``max_unpool2d``), the
    ``torch.export``-based one (1-6 s a network on a 2-core CPU). The exporters' progress lines and
    warnings are kept off the terminal; a failure of both is a :class:`BackendError` with the first
    line of the last one's message.
    """
    graph = Graph(adapter, layers, with_map).eval()
    x = torch.zeros((2, *adapter.spec.input_size))
    names = output_names(layers, with_map)
    with EXPORTING:
        return _export(graph, x, names, adapter.spec.name)


# Exports and compilations redirect sys.stdout and set logger levels, which are the whole process's:
# one at a time (the engine's worker and a job thread may both build runners).
EXPORTING = threading.RLock()


def _export(graph: nn.Module, x: torch.Tensor, names: list[str], network: str) -> bytes:
    error: Exception | None = None
    for dynamo in (False, True):
        sink = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                    quiet_loggers():
                warnings.simplefilter("ignore")
                if dynamo:
                    program = torch.onnx.export(graph, (x,), dynamo=True, input_names=["x"], output_names=names,
                                                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), verbose=False)
                    return program.model_proto.SerializeToString()
                buffer = io.BytesIO()
                torch.onnx.export(graph, (x,), buffer, dynamo=False, input_names=["x"], output_names=names,
                                  dynamic_axes={name: {0: "n"} for name in ["x", *names]})
                return buffer.getvalue()
        except Exception as e:  # noqa: BLE001 - the exporters raise many kinds; the next one may work
            error = e
    first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    raise BackendError(f"{network}: the ONNX export failed: {first[:200]}") from None


@contextlib.contextmanager
def quiet_loggers():
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "torch._export",
             "torch._inductor", "torch.utils.cpp_extension")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def cut_outputs(model_bytes: bytes, keep: Iterable[str]) -> bytes:
    """The ONNX model with only the graph outputs named in ``keep`` (in the graph's own order)."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    wanted = set(keep)
    kept = [o for o in model.graph.output if o.name in wanted]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model.SerializeToString()
