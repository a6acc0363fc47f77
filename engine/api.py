"""The engine as the window (or a script, a notebook) sees it: the only engine module ``gui`` imports.

    from engine.api import Engine, AnalysisJob, SessionReady, Error

    engine = Engine("cifar10", on_result=show, on_event=handle).start()
    engine.set_source("clip.mp4")
    engine.load_weights("vgg16", "mine.pth")
    engine.start_job(AnalysisJob(max_batch=16))   # ends with JobEnded(job, outcome, text, result)

Everything here is the :class:`Engine` (which runs on its own threads and is driven from any
thread), a job to give it, a typed immutable event or result, or a small pure helper the window
needs to describe what it shows. No ``nn.Module``, tensor or mutable engine object crosses to the
caller. ``__all__`` lists the names in groups.
"""

from __future__ import annotations

from engine.common.errors import ErrorCode
from engine.common.files import atomic_write
from engine.common.settings import current as current_settings
from engine.common.text import human_count, one_line
from engine.data.download import CIFAR10_BYTES, cifar10_archive_path
from engine.data.imageio import IMAGE_SUFFIXES, display_name, is_image_path
from engine.data.jobs import DownloadCifar10Job, DownloadWeightsJob
from engine.jobs import Job, JobEnded, JobOutcome, JobProgress
from engine.live.events import (
    EngineEvent,
    Error,
    FrameReady,
    ModelCard,
    ModelUpdated,
    Notice,
    SessionReady,
    SourceEnded,
    SourceStarted,
)
from engine.live.metrics import MetricsSnapshot
from engine.live.sources import VIDEO_SUFFIXES, describe
from engine.live.streams import redact_url
from engine.live.worker import Engine
from engine.models.registry import PROFILES, comparison_specs, family_members, get_spec, lineup
from engine.models.weights import WeightsError, WeightsKind, parse_weights_args
from engine.probes import Activations, GradCam, LayerOverview
from engine.probes.gradcam import deeper_layer
from engine.probes.layer_health import HealthAccumulator
from engine.probes.perturb import KINDS as PERTURBATION_KINDS
from engine.probes.perturb import Perturbation
from engine.runtime.backends import Backend, backends
from engine.runtime.backends import choices as backend_choices
from engine.runtime.backends import glyph as backend_glyph
from engine.runtime.backends import label as backend_label
from engine.runtime.backends import marker as backend_marker
from engine.runtime.backends import short as backend_short
from engine.runtime.device import configure_threads
from engine.runtime.precision import PRECISIONS
from engine.runtime.session import LayerInfo, ModelResult
from engine.runtime.tuner import Candidate, Decision
from engine.studies.analysis import Analysis, NetworkAnalysis, pareto_front
from engine.studies.jobs import AnalysisJob, LineupJob, ReportJob, RobustnessJob, TopImagesJob, cached_analysis
from engine.studies.lineup_analysis import LineupAnalysis
from engine.studies.robustness import RobustnessResult
from engine.studies.top_images import TopImages

__all__ = [
    # the engine and its events
    "Engine", "EngineEvent", "Error", "ErrorCode", "FrameReady", "ModelCard", "ModelUpdated", "Notice",
    "SessionReady", "SourceEnded", "SourceStarted", "MetricsSnapshot",
    # jobs: what the engine runs beside the live frames, each ending in one JobEnded, and their results
    "Job", "JobEnded", "JobOutcome", "JobProgress", "AnalysisJob", "ReportJob", "RobustnessJob", "TopImagesJob",
    "DownloadWeightsJob", "DownloadCifar10Job", "cached_analysis", "Analysis", "NetworkAnalysis", "pareto_front",
    "RobustnessResult", "TopImages", "LineupJob", "LineupAnalysis",
    # what to ask of a frame, and what its result holds
    "Activations", "GradCam", "deeper_layer", "LayerOverview", "LayerInfo", "ModelResult", "HealthAccumulator",
    "PERTURBATION_KINDS", "Perturbation",
    # the networks: profiles, specs, weights
    "PROFILES", "comparison_specs", "family_members", "get_spec", "lineup", "lineup_choices", "WeightsError",
    "WeightsKind", "parse_weights_args",
    # how the networks run
    "Backend", "backends", "backend_choices", "backend_glyph", "backend_label", "backend_marker", "backend_short",
    "Candidate", "Decision", "PRECISIONS", "configure_threads", "current_settings",
    # small helpers to describe what is shown
    "atomic_write", "human_count", "one_line", "CIFAR10_BYTES", "cifar10_archive_path", "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES", "describe", "display_name", "is_image_path", "redact_url",
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
