"""The types every probe shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np
import torch

EMPTY_TAPS: Mapping[str, torch.Tensor] = MappingProxyType({})


class ProbeRequest(Protocol):
    """A frozen, hashable description of what to compute."""

    @property
    def name(self) -> str: ...  # the key of its result in ModelResult.probes

    @property
    def layers(self) -> tuple[str, ...]: ...  # outputs the frame's forward pass should keep for it


@dataclass(frozen=True)
class ProbeContext:
    request: ProbeRequest
    device: torch.device
    # layer -> output (N, ...) kept by the frame's own forward pass
    taps: Mapping[str, torch.Tensor] = field(default_factory=lambda: EMPTY_TAPS)


@dataclass(frozen=True)
class ProbeFailed:
    """In ``ModelResult.probes`` where a probe could not answer on this frame (a layer its method
    cannot use, ...): the frame's predictions stand, and ``text`` says why in one line."""

    text: str


def read_only(t: torch.Tensor) -> np.ndarray:
    """A tensor as a read-only float32 numpy array (no copy for a float32 CPU tensor)."""
    if t.dtype != torch.float32 or not t.is_cpu:
        t = t.float().cpu()
    a = t.detach().numpy()
    a.flags.writeable = False
    return a
