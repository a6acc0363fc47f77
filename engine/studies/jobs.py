"""The studies as the engine's jobs (:class:`~engine.jobs.Job`): the window starts them with
``Engine.start_job(AnalysisJob(...))`` and routes their end by type. Each holds its inputs, reads
the networks asked for from the job's context, and returns a typed result."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.common.errors import ErrorCode
from engine.data.datasets import DataError
from engine.data.imageio import display_name
from engine.jobs import Job, JobContext, JobDone, JobFailed, JobProgress, JobState


@dataclass(frozen=True)
class AnalysisJob(Job):
    """The survey's claims measured on the context's networks (:mod:`engine.studies.analysis`);
    result: an ``Analysis``. A cached one for this machine and set-up answers at once, unless
    ``fresh``. The source is quiet while it measures."""

    max_batch: int = 64
    precision: str = "fp32"
    fresh: bool = False
    backends: tuple[str, ...] = ()

    name = "analyze"
    failed = "analysis failed"

    def run(self, state: JobState, context: JobContext) -> JobDone:
        from engine.studies.analysis import analyze, cache_key, load_cached, save_cached

        key = cache_key(context.profile, context.device, self.precision, self.max_batch, context.models,
                        self.backends)
        result = None if self.fresh else load_cached(key)
        if result is None:
            with context.quiet():
                result = analyze(context.profile, context.device, max_batch=self.max_batch,
                                 precision=self.precision, models=context.models, job=state, backends=self.backends)
            save_cached(key, result)
        how = "cached" if result.cached else f"measured in {result.seconds:.0f} s"
        return JobDone(f"analysis of the {context.profile} networks: {how}", result)


@dataclass(frozen=True)
class LineupJob(Job):
    """The survey's claims on a reference line-up of ImageNet networks (``paper`` or ``modern``,
    :mod:`engine.studies.lineup_analysis`); result: a ``LineupAnalysis``. Each network measured is
    cached at once, so a cancel keeps them. The source is quiet while it measures."""

    lineup: str
    fresh: bool = False

    name = "analyze"
    failed = "analysis failed"
    cancelled = "analysis cancelled; the networks measured are cached"

    def run(self, state: JobState, context: JobContext) -> JobDone:
        from engine.studies.lineup_analysis import run_lineup

        if context.profile != "imagenet":
            raise JobFailed("the line-ups are ImageNet networks: switch to the imagenet profile")
        with context.quiet():
            result = run_lineup(self.lineup, context.device, fresh=self.fresh, job=state)
        return JobDone(f"the {self.lineup} line-up: {len(result.entries)} networks in {result.seconds:.0f} s",
                       result)


def cached_analysis(context: JobContext, max_batch: int = 64, precision: str = "fp32",
                    backends: tuple[str, ...] = (), lineup: str = "four"):
    """The cached ``Analysis`` of the context's networks, or None; reads one small file (a line-up:
    one per network, and None unless every one is cached)."""
    from engine.models.registry import RegistryError
    from engine.studies.analysis import cache_key, load_cached

    if lineup != "four":
        from engine.studies.lineup_analysis import run_lineup

        return run_lineup(lineup, context.device, cached_only=True) if context.profile == "imagenet" else None
    try:
        return load_cached(cache_key(context.profile, context.device, precision, max_batch, context.models,
                                     tuple(backends)))
    except (RegistryError, ValueError):
        return None


@dataclass(frozen=True)
class ReportJob(Job):
    """An Analysis's figures, data and report.html written into ``folder`` (matplotlib takes a
    second or two: never on the window's thread); result: the path of report.html."""

    analysis: object
    folder: str

    name = "report"
    failed = "report failed"

    def run(self, state: JobState, context: JobContext) -> JobDone:
        from engine.studies.analysis_report import ReportError, write_report
        from engine.studies.lineup_analysis import LineupAnalysis

        if isinstance(self.analysis, LineupAnalysis):
            from engine.studies.lineup_report import write_lineup_report as write_report
        state.report(JobProgress(self.name, 0, 0, "drawing the figures", "files"))
        try:
            paths = write_report(self.analysis, self.folder)
        except ReportError as e:  # its message is the whole line
            raise JobFailed(f"cannot write the report: {e}") from None
        except OSError as e:
            raise JobFailed(f"cannot write the report into {display_name(os.fspath(self.folder))}: "
                            f"{e.strerror or e}") from None
        html = next(p for p in paths if p.name == "report.html")
        return JobDone(f"wrote {len(paths)} files: {display_name(str(html))}", str(html))


@dataclass(frozen=True)
class RobustnessJob(Job):
    """The robustness bench (:mod:`engine.studies.robustness`) of the context's cifar10 networks on
    ``limit`` test images of ``data``; result: a ``RobustnessResult``. The source is quiet meanwhile."""

    data: str
    limit: int = 1000
    precision: str = "fp32"

    name = "robustness"
    failed = "robustness bench failed"
    cancelled = "robustness bench cancelled"

    def run(self, state: JobState, context: JobContext) -> JobDone:
        from engine.data.datasets import load_cifar10
        from engine.models.registry import comparison_specs, get_spec
        from engine.studies.evaluation import sample_indices
        from engine.studies.robustness import robustness

        if context.profile != "cifar10":
            raise JobFailed(f"{self.failed}: it needs the cifar10 profile (its networks read 32x32 pictures)",
                            ErrorCode.DATA)
        state.report(JobProgress(self.name, 0, 0, "reading the test set", "images"))
        try:
            images, labels = load_cifar10(self.data, "test")
        except DataError as e:
            raise JobFailed(f"{self.failed}: {e}", ErrorCode.DATA) from None
        idx = sample_indices(len(labels), self.limit)
        specs = [get_spec(n, context.profile) for n in context.models] if context.models else \
            comparison_specs(context.profile)
        with context.quiet():
            result = robustness(specs, images[idx], labels[idx], precision=self.precision, job=state)
        return JobDone(f"robustness of {len(result.models)} networks on {result.images} images in "
                       f"{result.seconds:.0f} s", result)


@dataclass(frozen=True)
class TopImagesJob(Job):
    """What each channel of ``layer`` of ``model`` looks for (:mod:`engine.studies.top_images`): the
    test images of ``data`` that excite it most, over ``limit`` of them, on the weights the
    context's networks use (a user's file included); result: a ``TopImages``."""

    model: str
    layer: str
    data: str
    limit: int = 2000

    name = "top-images"
    failed = "top images failed"

    def run(self, state: JobState, context: JobContext) -> JobDone:
        from engine.models.registry import get_spec
        from engine.models.weights import load_model
        from engine.studies.top_images import sample_test_set, top_images

        state.report(JobProgress(self.name, 0, 0, "reading the test set", "images"))
        spec = get_spec(self.model, context.profile)
        loaded = load_model(spec, dict(context.weights).get(self.model))
        try:
            images, labels, ids = sample_test_set(self.data, self.limit)
        except DataError as e:
            raise JobFailed(f"{self.failed}: {e}", ErrorCode.DATA) from None
        result = top_images(loaded, self.layer, images, labels, image_ids=ids, job=state)
        how = "cached" if result.cached else f"{result.images} images in {result.seconds:.0f} s"
        return JobDone(f"{self.model} {self.layer}: top images per channel ({how})", result)
