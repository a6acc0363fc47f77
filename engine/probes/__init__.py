"""Probes: what the engine computes about a network's pass besides its answer.

A probe is a frozen request (which layers, which class, ...) and a plain function::

    run(adapter, batch, context) -> frozen numpy result

``adapter`` is the network (:class:`~engine.models.adapter.ModelAdapter`), ``batch`` the input
tensor (N, C, H, W) as the network takes it, and ``context`` a :class:`ProbeContext`: the request,
and what the frame's own forward pass already kept (its tapped layer outputs), so a probe that only
reads the pass (activations) costs no second pass. A probe that needs its own pass (gradients,
timing, perturbations) runs it itself. Results hold numpy arrays made read-only, and may cross
threads.

To add a probe: a module here with a frozen request class (a ``name`` and the ``layers`` the
frame's pass should keep for it, often none) and its ``run``, and one line in :data:`RUNNERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from engine.models.adapter import ModelAdapter
from engine.probes import activations, gradcam, overview
from engine.probes.activations import ActivationMaps, Activations
from engine.probes.base import EMPTY_TAPS, ProbeContext, ProbeRequest
from engine.probes.gradcam import METHODS as GRADCAM_METHODS
from engine.probes.gradcam import GradCam, GradCamError, GradCamResult
from engine.probes.overview import LayerGlance, LayerOverview

Runner = Callable[[ModelAdapter, torch.Tensor, ProbeContext], Any]

RUNNERS: dict[type, Runner] = {
    Activations: activations.run,
    GradCam: gradcam.run,
    LayerOverview: overview.run,
}


def register(request_type: type, runner: Runner) -> None:
    """Add a probe kind (a frozen request class with ``name`` and ``layers``) and its function."""
    RUNNERS[request_type] = runner


def run_probe(request: ProbeRequest, adapter: ModelAdapter, batch: torch.Tensor,
              taps: Mapping[str, torch.Tensor] = EMPTY_TAPS) -> Any:
    """``request`` on ``adapter`` and ``batch``; ``taps``: layer outputs a pass already kept."""
    try:
        runner = RUNNERS[type(request)]
    except KeyError:
        raise TypeError(f"no probe runs a {type(request).__name__}") from None
    return runner(adapter, batch, ProbeContext(request, batch.device, taps))


__all__ = ["GRADCAM_METHODS", "RUNNERS", "ActivationMaps", "Activations", "GradCam", "GradCamError", "GradCamResult",
           "LayerGlance", "LayerOverview", "ProbeContext", "ProbeRequest", "register", "run_probe"]
