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

from engine.common.files import atomic_write
from engine.common.settings import current as current_settings
from engine.common.text import human_count, one_line
from engine.data.download import CIFAR10_BYTES, cifar10_archive_path
from engine.data.imageio import IMAGE_SUFFIXES, InputError, display_name, is_image_path
from engine.jobs import Cancelled, JobProgress, JobState
from engine.live.events import (
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
from engine.live.metrics import MetricsSnapshot, MetricsTracker
from engine.live.sources import VIDEO_SUFFIXES, Source, describe, open_source
from engine.live.streams import redact_url
from engine.live.worker import Engine, source_error
from engine.models.complexity import Complexity
from engine.models.registry import PROFILES, RegistryError, comparison_specs, family_members, get_spec, lineup
from engine.models.weights import WeightsError, WeightsKind, parse_weights_args
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
from engine.probes.layer_health import HealthAccumulator, HealthSnapshot, LayerHealth, layer_health
from engine.probes.perturb import KINDS as PERTURBATION_KINDS
from engine.probes.perturb import Perturbation, PerturbError
from engine.probes.perturb import apply as apply_perturbation
from engine.probes.receptive import ReceptiveField, ReceptiveFieldError, crop_box, receptive_field
from engine.runtime.backends import BACKEND_CHOICES, BACKENDS, onnxruntime_version
from engine.runtime.backends import label as backend_label
from engine.runtime.device import configure_threads
from engine.runtime.precision import PRECISIONS
from engine.runtime.session import FrameResult, LayerInfo, ModelResult
from engine.studies.analysis import Analysis, NetworkAnalysis, Verdict, judge, pareto_front
from engine.studies.robustness import RobustnessResult, robustness
from engine.studies.top_images import DEFAULT_IMAGES as TOP_IMAGES_DEFAULT
from engine.studies.top_images import TOP_K, TopImages, TopImagesError, sample_test_set, top_images

__all__ = [
    "Activations", "LayerGlance", "LayerOverview", "Analysis", "NetworkAnalysis", "Verdict", "judge", "pareto_front",
    "CIFAR10_BYTES", "Cancelled", "Complexity", "Engine", "EngineEvent", "Error", "ErrorCode",
    "FrameReady", "FrameResult", "GRADCAM_METHODS", "GradCam", "GradCamError", "GradCamResult",
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
    "configure_threads", "current_settings",
    "TOP_IMAGES_DEFAULT", "TOP_K", "TopImages", "TopImagesError", "sample_test_set", "top_images",
]


def lineup_choices(profile: str, family: str) -> list[tuple[str, str, bool]]:
    """The networks of ``family`` that can take its place in ``profile``'s line-up, as (name, label,
    has weights): weights here, or torchvision's to download. For the window's model picker."""
    from engine.models.weights import UNTRAINED, resolve

    out = []
    for spec in family_members(profile, family):
        info = resolve(spec)
        out.append((spec.name, spec.display, info.status != UNTRAINED or info.downloadable))
    return out

