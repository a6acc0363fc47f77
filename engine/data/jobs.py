"""Downloads as the engine's jobs: torchvision's weights for the networks (then loaded), and the
official CIFAR-10 archive. Nothing partial is ever kept."""

from __future__ import annotations

from dataclasses import dataclass

from engine.common.errors import ErrorCode
from engine.jobs import Job, JobContext, JobDone, JobFailed, JobState


@dataclass(frozen=True)
class DownloadWeightsJob(Job):
    """The context profile's missing torchvision weights (of ``models``, default all); the networks
    load them afterwards, even when a later download failed."""

    models: tuple[str, ...] | None = None

    name = "download"
    failure = ErrorCode.DOWNLOAD
    failed = "download failed"
    cancelled = "download cancelled; nothing partial was kept"

    def run(self, state: JobState, context: JobContext) -> JobDone:
        from engine.data.download import DownloadError, download_weights
        from engine.models.registry import list_specs

        specs = [s for s in list_specs(context.profile) if self.models is None or s.name in self.models]
        try:
            done = download_weights(specs, state)
        except DownloadError as e:
            raise JobFailed(str(e), ErrorCode.DOWNLOAD, reload=bool(state.partial.get("downloaded"))) from None
        text = f"downloaded {', '.join(done)}; loading ..." if done else "every download is cached"
        return JobDone(text, tuple(done), reload=bool(done))


@dataclass(frozen=True)
class DownloadCifar10Job(Job):
    """The official CIFAR-10 archive (170 MB, md5 checked) into the cache's data folder, unless it
    is there; result: its path."""

    name = "dataset"
    failure = ErrorCode.DOWNLOAD
    failed = "download failed"
    cancelled = "download cancelled; nothing partial was kept"

    def run(self, state: JobState, context: JobContext) -> JobDone:
        from engine.data.download import DownloadError, download_cifar10

        try:
            path = download_cifar10(state)
        except DownloadError as e:
            raise JobFailed(str(e), ErrorCode.DOWNLOAD) from None
        return JobDone(f"CIFAR-10 is in {path.parent}", str(path))
