"""torch eager: the reference every other backend is checked against, and the only one with
gradients (Grad-CAM) and bf16 weights. The session runs the module itself, with hooks for its taps,
so its ``make_runner`` returns None."""

from __future__ import annotations

import torch

from engine.runtime.backends.base import Backend
from engine.runtime.precision import bf16_native


def torch_precisions(device: torch.device) -> tuple[str, ...]:
    return ("fp32", "bf16") if bf16_native(device) else ("fp32",)


BACKEND = Backend("torch", "torch eager", "torch", "o", lambda adapter, precision, threads, taps, context: None,
                  precisions=torch_precisions, devices=("cpu", "cuda"), reference=True)
