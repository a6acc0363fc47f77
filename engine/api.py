"""The engine as the window (or a script, a notebook) sees it: the only engine module ``gui`` imports.

    from engine.api import Engine, SessionReady, Error

    engine = Engine("cifar10", on_result=show, on_event=handle).start()
    engine.set_source("clip.mp4")
    engine.load_weights("vgg16", "mine.pth")

Everything here is either the :class:`Engine` (which runs on its own threads and is driven from any
thread), a typed immutable event or result, or a small pure helper the window needs to describe
what it shows. No ``nn.Module``, tensor or mutable engine object crosses to the caller.
"""

from __future__ import annotations

from engine.analysis import Analysis, NetworkAnalysis, Verdict, judge, pareto_front
from engine.complexity import Complexity
from engine.events import (
    EngineEvent,
    Error,
    ErrorCode,
    FrameReady,
    JobEnded,
    JobOutcome,
    ModelCard,
    ModelUpdated,
    Notice,
    RunRequest,
    SessionReady,
    SourceEnded,
    SourceStarted,
)
from engine.files import atomic_write
from engine.imageio import IMAGE_SUFFIXES, InputError, display_name, is_image_path, one_line
from engine.inference import FrameResult, LayerInfo, ModelResult
from engine.jobs import Cancelled, JobProgress, JobState
from engine.jobs.download import CIFAR10_BYTES, cifar10_archive_path
from engine.layer_health import HealthAccumulator, HealthSnapshot, LayerHealth, layer_health
from engine.metrics import MetricsSnapshot, MetricsTracker
from engine.models.backend import BACKEND_CHOICES, BACKENDS, onnxruntime_version
from engine.models.backend import label as backend_label
from engine.models.registry import PROFILES, RegistryError, comparison_specs, family_members, get_spec, lineup
from engine.perturb import KINDS as PERTURBATION_KINDS
from engine.perturb import Perturbation, PerturbError
from engine.perturb import apply as apply_perturbation
from engine.precision import PRECISIONS
from engine.probes import (
    GRADCAM_METHODS,
    Activations,
    GradCam,
    GradCamError,
    GradCamResult,
    LayerGlance,
    LayerOverview,
    ProbeRequest,
)
from engine.probes.gradcam import deeper_layer
from engine.receptive import ReceptiveField, ReceptiveFieldError, crop_box, receptive_field
from engine.robustness import RobustnessResult, robustness
from engine.sources import VIDEO_SUFFIXES, Source, describe, open_source
from engine.streams import redact_url
from engine.text import human_count
from engine.top_images import DEFAULT_IMAGES as TOP_IMAGES_DEFAULT
from engine.top_images import TOP_K, TopImages, TopImagesError, sample_test_set, top_images
from engine.weights import WeightsError, WeightsKind, parse_weights_args
from engine.worker import Engine, source_error

__all__ = [
    "Activations", "LayerGlance", "LayerOverview", "Analysis", "NetworkAnalysis", "Verdict", "judge", "pareto_front",
    "CIFAR10_BYTES", "Cancelled", "Complexity", "Engine", "EngineEvent", "Error", "ErrorCode",
    "FrameReady", "FrameResult", "GRADCAM_METHODS", "GradCam", "GradCamError", "GradCamResult", "deeper_layer",
    "IMAGE_SUFFIXES", "InputError", "JobEnded", "JobOutcome", "JobProgress", "JobState",
    "LayerInfo", "MetricsSnapshot", "MetricsTracker", "ModelCard", "ModelResult", "ModelUpdated", "Notice", "PROFILES",
    "BACKENDS", "BACKEND_CHOICES", "backend_label", "onnxruntime_version",
    "PERTURBATION_KINDS", "PRECISIONS", "PerturbError", "Perturbation", "ProbeRequest", "RegistryError",
    "RobustnessResult", "RunRequest", "SessionReady", "Source", "SourceEnded", "SourceStarted",
    "apply_perturbation",
    "VIDEO_SUFFIXES", "WeightsError", "WeightsKind", "atomic_write", "cifar10_archive_path", "comparison_specs",
    "describe", "display_name", "family_members", "get_spec", "human_count", "is_image_path", "lineup",
    "lineup_choices", "one_line", "open_source", "parse_weights_args", "redact_url", "robustness", "source_error",
    "HealthAccumulator", "HealthSnapshot", "LayerHealth", "layer_health",
    "ReceptiveField", "ReceptiveFieldError", "crop_box", "receptive_field",
    "TOP_IMAGES_DEFAULT", "TOP_K", "TopImages", "TopImagesError", "sample_test_set", "top_images",
]


def lineup_choices(profile: str, family: str) -> list[tuple[str, str, bool]]:
    """The networks of ``family`` that can take its place in ``profile``'s line-up, as (name, label,
    has weights): weights here, or torchvision's to download. For the window's model picker."""
    from engine.weights import UNTRAINED, resolve

    out = []
    for spec in family_members(profile, family):
        info = resolve(spec)
        out.append((spec.name, spec.display, info.status != UNTRAINED or info.downloadable))
    return out

