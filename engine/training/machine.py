"""What a training run computes in, and on what: its precision, and the CPU's features beside every time.

bf16 autocast halves a step's cost on a CPU with native bf16 (AVX512-BF16, AMX), but where bf16 is
only emulated (AVX2) it is far slower than fp32. So a recipe's ``cpu_bf16`` is a wish the machine
may refuse: training asks inference's precision policy (:func:`engine.runtime.precision.bf16_native`), and
falls back to fp32 there, saying why. A run may be resumed on another machine, so each sitting
records its own machine and precision.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

import torch

import engine.runtime.precision as _precision

# The /proc/cpuinfo flags that decide how fast training runs here.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Precision:
    """The number format a run trains in on one device, and why."""

    autocast: bool  # bf16 autocast around the forward pass and the loss
    compute: str  # "bf16" or "fp32"
    reason: str

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def training_precision(device: torch.device, cpu_bf16: bool) -> Precision:
    """bf16 autocast on CUDA; on the CPU where the recipe asks for it and the CPU has native bf16."""
    if device.type == "cuda":
        return Precision(True, "bf16", "bf16 autocast on CUDA")
    if not cpu_bf16:
        return Precision(False, "fp32", "the recipe asks for fp32 on the CPU")
    if not _precision.bf16_native(device):
        return Precision(False, "fp32", "this CPU has no native bf16 (it would be emulated, slower than fp32)")
    return Precision(True, "bf16", "the recipe asks for bf16 and this CPU runs it natively")


def cpu_features() -> dict[str, Any]:
    """The CPU's model name, core count, torch's kernel level and the flags in :data:`FLAGS`
    (each True/False; None where /proc/cpuinfo cannot be read)."""
    model: str | None = None
    flags: set[str] | None = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    return {"model": model or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch_capability": capability,
            **{flag: (None if flags is None else flag in flags) for flag in FLAGS}}


def machine_text(features: dict[str, Any]) -> str:
    """The features in a few words, for the first line of a run: ``AMD EPYC, 2 cores, avx2``."""
    flags = [flag for flag in FLAGS if features.get(flag)]
    return f"{features.get('model')}, {features.get('cores')} cores, {' '.join(flags) or 'no AVX2'}"


def precision_line(device: torch.device, precision: Precision, features: dict[str, Any] | None = None) -> str:
    """The first line of a training run: where it runs and in what, and why."""
    from engine.runtime.device import device_label

    where = device_label(device)
    if device.type == "cpu":
        where += f", {machine_text(features or cpu_features())}"
    return f"training in {precision.compute} on {where}: {precision.reason}"
