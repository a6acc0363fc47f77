"""Number formats for inference: float32, bfloat16, or whichever is faster per network here.

bf16 on a CPU means the network's weights converted once and its input cast to bf16: oneDNN then
runs bf16 kernels on CPUs that have them (AVX512-BF16, AMX). ``torch.autocast`` is not used on the
CPU because it re-casts every weight on every forward pass, which at batch 1 costs more than it
saves (docs/benchmarks.md has the figures).

So the gain depends on the network and the CPU, and ``auto`` measures it when the networks load:
bf16 for a network only where the CPU runs bf16 natively and it is clearly faster there. Results
leave the engine as float32 either way.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16", "int8")
AUTO_GAIN = 0.85  # auto picks bf16 only when its median time is at most this fraction of fp32's


class PrecisionError(ValueError):
    """A precision this device cannot run; the message is one line."""


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 arithmetic in hardware (not emulated, which is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if ``device`` can run it, else :class:`PrecisionError` (one line)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; expected {', '.join(PRECISIONS)}")
    if precision == "int8" and device.type != "cpu":
        raise PrecisionError("int8 runs on the CPU here (ONNX Runtime's int8 graphs); use --device cpu")
    if precision == "bf16" and not bf16_native(device):
        raise PrecisionError(f"this {'GPU' if device.type == 'cuda' else 'CPU'} has no native bf16 "
                             f"arithmetic; use --precision fp32")
    return precision


def dtype_of(precision: str) -> torch.dtype:
    """The dtype of torch weights and inputs in ``precision`` (int8 graphs take float32 inputs)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def precision_of_dtype(dtype: torch.dtype) -> str:
    return "bf16" if dtype == torch.bfloat16 else "fp32"
