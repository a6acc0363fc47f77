"""What the engine tells whoever drives it: typed, immutable events and model cards.

Every event is a frozen value that holds plain data and numpy arrays only (never a module, a tensor
or anything mutable), so it may cross from the engine's threads to the window's. State is a type or
an enum, never a sentence to search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from engine.common.errors import ErrorCode  # noqa: F401  (part of the events' vocabulary)
from engine.jobs import JobEnded, JobOutcome, JobProgress  # noqa: F401  (events too)
from engine.live.metrics import MetricsSnapshot
from engine.models.complexity import Complexity
from engine.models.weights import WeightsKind
from engine.probes import Activations, ProbeRequest
from engine.runtime.session import FrameResult, LayerInfo
from engine.runtime.tuner import Decision


@dataclass(frozen=True)
class ModelCard:
    """One network of a session, as a person sees it."""

    name: str
    title: str  # e.g. "VGG (vgg16)"
    family: str
    year: int
    paper: str
    weights: WeightsKind
    weights_source: str  # one line: where the weights came from, or why there are none
    downloadable: bool  # no weights here, but torchvision's can be downloaded on request
    layers: tuple[LayerInfo, ...]
    default_layer: str
    has_class_map: bool
    class_names: tuple[str, ...] = field(repr=False)
    test_top1: float | None  # from the metrics JSON beside bundled weights
    complexity: Complexity | None  # None where it cannot be counted
    download_bytes: int | None = None  # the size of the download, where there is one
    published_top1: float | None = None  # torchvision's published ImageNet-1K figures (not measured here)
    published_top5: float | None = None
    label: str = ""  # the name with the depth, "VGG-16-BN"; see display
    precision: str = "fp32"  # what it runs in: fp32, or bf16 weights and inputs (engine.runtime.precision)
    precision_note: str = ""  # why, when the session's precision was auto: the two times measured
    gradcam_layer: str = ""  # the layer Grad-CAM explains by default (engine.probes.gradcam)
    backend: str = "torch"  # what runs its forward pass: a backend of engine.runtime.backends
    # why, when the session's backend was auto (the two times) or fell back; then threads_note, if any
    backend_note: str = ""
    threads: int | None = None  # torch's threads for its forward pass on the CPU (None: not torch on the CPU)
    threads_note: str = ""  # why, when they were measured (at load, then again on live frames)
    runtime: Decision | None = None  # what runs it and the evidence: the tuner's record (backend_note's words)

    @property
    def display(self) -> str:
        """What a person reads: the label, or the family for networks with one form."""
        return self.label or self.family


@dataclass(frozen=True)
class SessionReady:
    """The networks are loaded (again, after a profile, device or weights change)."""

    profile: str
    device: str
    models: tuple[ModelCard, ...]
    messages: tuple[str, ...] = ()
    precision: str = ""  # the settings it was built with (auto, fp32, bf16): what a refused change kept
    backend: str = ""

    def card(self, name: str) -> ModelCard | None:
        return next((m for m in self.models if m.name == name), None)

    def with_card(self, card: ModelCard) -> SessionReady:
        """The same session with ``card`` in place of its network's card (a :class:`ModelUpdated`)."""
        return dataclasses.replace(self, models=tuple(card if m.name == card.name else m for m in self.models))


@dataclass(frozen=True)
class SourceStarted:
    name: str
    total: int | None = None  # frames in the source when known up front (a list of files, a data set)


@dataclass(frozen=True)
class SourceEnded:
    text: str


@dataclass(frozen=True)
class Notice:
    """Something a person should read that is not a failure (a download starting, ...)."""

    text: str


@dataclass(frozen=True)
class ModelUpdated:
    """One network's card changed while it runs: a choice made at load was timed again on live
    frames (a heavy network's torch threads, or auto's backend where the two were close). ``text``
    says what came of it, in one line."""

    card: ModelCard
    text: str


@dataclass(frozen=True)
class Error:
    code: ErrorCode
    text: str  # one line


class FrameReady(NamedTuple):
    """One frame's results and the metrics after it (a named tuple: made for every frame)."""

    result: FrameResult
    metrics: MetricsSnapshot


@dataclass(frozen=True)
class RunRequest:
    """What to compute besides the predictions: per network, a tuple of probe requests
    (:mod:`engine.probes`; ``Activations(layers)`` for the feature maps). Immutable; each change is
    a new request with a higher ``generation``, and every :class:`FrameResult` says which generation
    it answers, so a reader drops results of older ones by rule."""

    generation: int = 0
    probes: Mapping[str, tuple[ProbeRequest, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def with_probes(self, changes: Mapping[str, tuple[ProbeRequest, ...]]) -> RunRequest:
        return RunRequest(self.generation + 1, MappingProxyType({**self.probes, **changes}))

    def layers(self, model: str) -> tuple[str, ...] | None:
        """The layers whose activations ``model`` returns; None when nothing was asked for it."""
        probes = self.probes.get(model)
        if probes is None:
            return None
        return tuple(layer for p in probes if isinstance(p, Activations) for layer in p.layers)


EngineEvent = SessionReady | SourceStarted | SourceEnded | Notice | ModelUpdated | Error | JobProgress | JobEnded
