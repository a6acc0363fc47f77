"""Downloading torchvision's ImageNet weights as a job: progress, cancel, a checked hash, no partial file.

torchvision's own loader (``torch.hub.load_state_dict_from_url``) downloads the same files into the same
cache, but it reports progress only to a terminal bar and cannot be cancelled: a window needs both.
So the file is streamed here, the sha256 prefix that torchvision puts in every file name is checked,
and the finished file is renamed into torch hub's cache, where torchvision's weights API finds it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from engine.common.errors import error_line
from engine.jobs.state import JobProgress, JobState
from engine.models.registry import ModelSpec

CHUNK = 1 << 16
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # alexnet-owt-7be5be79.pth


class DownloadError(Exception):
    """A download that failed; ``str(e)`` is one line."""


def download_file(url: str, dest: Path, job: JobState, *, label: str = "", timeout: float = 30.0,
                  md5: str | None = None) -> Path:
    """Stream ``url`` into ``dest`` (atomically), reporting bytes as progress and checking the sha256
    prefix in the file name when there is one, or the given ``md5``. Raises :class:`DownloadError`
    or, on a cancel, :class:`~engine.jobs.Cancelled`; either way nothing is left at ``dest``."""
    label = label or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    check = hashlib.md5(usedforsecurity=False) if md5 else None
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - the weights' own https URL
            except urllib.error.HTTPError as e:
                raise DownloadError(f"{label}: the weights server answered {e.code} ({_reason(e)})") from None
            except (urllib.error.URLError, OSError) as e:
                raise DownloadError(f"{label}: cannot reach the weights server ({_reason(e)}); check the "
                                    "connection, or use a local weights file") from None
            except ValueError as e:
                raise DownloadError(f"{label}: cannot download ({_reason(e)})") from None
            with response:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                job.report(JobProgress("download", done, total, label))
                while True:
                    job.check()
                    try:
                        block = response.read(CHUNK)
                    except (OSError, ValueError) as e:
                        raise DownloadError(f"{label}: the download broke off ({_reason(e)})") from None
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    if check is not None:
                        check.update(block)
                    done += len(block)
                    job.report(JobProgress("download", done, total, label))
        if total and done != total:
            raise DownloadError(f"{label}: the download broke off ({done} of {total} bytes)")
        match = _HASH_IN_NAME.search(dest.name)
        if match and not digest.hexdigest().startswith(match.group(1)):
            raise DownloadError(f"{label}: the file is corrupt (sha256 does not match {match.group(1)})")
        if check is not None and check.hexdigest() != md5:
            raise DownloadError(f"{label}: the file is corrupt (md5 does not match the published {md5})")
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def download_weights(specs: Iterable[ModelSpec], job: JobState) -> list[str]:
    """Download the torchvision weights of every spec that has them and whose file is not cached
    yet; returns the names of the networks downloaded. Finished files stay if a later one fails."""
    from engine.models.weights import hub_cache_path, hub_weights

    done = []
    for spec in specs:
        hub, path = hub_weights(spec), hub_cache_path(spec)
        if hub is None or path is None or path.is_file():
            continue
        download_file(hub.url, path, job, label=f"{spec.name} ({path.name})")
        done.append(spec.name)
        job.partial["downloaded"] = list(done)
    return done


def _reason(e: BaseException) -> str:
    return error_line(getattr(e, "reason", None) or e, 120)


# The official CIFAR-10 archive and its published md5 (the checksum torchvision checks too).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BYTES = 170_498_071


def cifar10_archive_path(cache: Path | None = None) -> Path:
    """Where the official archive is kept once downloaded: the data folder of the cache."""
    from engine.common.settings import cache_dir as default_cache_dir

    return (cache or default_cache_dir()) / "data" / "cifar-10-python.tar.gz"


def download_cifar10(job: JobState, cache: Path | None = None, url: str = CIFAR10_URL,
                     md5: str = CIFAR10_MD5) -> Path:
    """The official CIFAR-10 archive (170 MB), downloaded once with progress and cancel, its md5
    checked; returns its path (at once when it is already there)."""
    dest = cifar10_archive_path(cache)
    if dest.is_file():
        return dest
    return download_file(url, dest, job, label="CIFAR-10 (cifar-10-python.tar.gz)", md5=md5)

