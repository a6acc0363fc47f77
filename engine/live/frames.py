"""One frame through the networks: perturbed first where a perturbation is set (with the clean
answers beside, so that a flip shows), and a frame that cannot run becomes a result that says why."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import torch

from engine.common.errors import error_line
from engine.live.sources import Frame
from engine.probes.perturb import Perturbation, PerturbError
from engine.probes.perturb import apply as perturb
from engine.runtime.session import FrameResult, InferenceSession


def run_frame(session: InferenceSession, frame: Frame, perturbation: Perturbation | None) -> FrameResult:
    """Every network of ``session`` on ``frame``; ``result.error`` is set when it could not run.
    A device out of memory is raised: the engine moves to the CPU."""
    if frame.image is None:
        return FrameResult(frame.frame_id, frame.source, frame.label, None, {}, frame.error or "unreadable frame",
                           generation=session.generation)
    try:
        if perturbation is None or perturbation.severity == 0:
            return session.run(frame.image, frame.frame_id, frame.source, frame.label)
        clean = MappingProxyType(session.top1(frame.image))  # forward passes only
        shown = perturb(frame.image, perturbation)
        return dataclasses.replace(session.run(shown, frame.frame_id, frame.source, frame.label),
                                   perturbation=perturbation.label, clean_top1=clean, original=frame.image)
    except PerturbError as e:
        line = str(e)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as e:  # e.g. an input a network cannot take
        line = error_line(e)
    return FrameResult(frame.frame_id, frame.source, frame.label, frame.image, {}, f"{frame.source}: {line}",
                       generation=session.generation)
