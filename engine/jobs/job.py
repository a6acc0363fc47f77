"""A job as a small typed object: what it computes (:meth:`Job.run`), its progress (through the
:class:`JobState` it is given), a typed result, and a typed failure with its own ``ErrorCode``.

A study adds a job by subclassing :class:`Job` beside its code; the engine runs any job the same
way (one at a time, on a thread of its own, cancellable) and ends it with one :class:`JobEnded`,
which carries the job itself, so a window routes the end by the job's type and never by a name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from engine.common.errors import ErrorCode
from engine.jobs.state import JobState


@dataclass(frozen=True)
class JobContext:
    """What the engine gives a job: the networks asked for last, and ``quiet()``, a context in
    which the live source is paused (two measurements on a small CPU would measure each other);
    it plays on afterwards if it was playing."""

    profile: str
    device: str
    models: tuple[str, ...] | None
    weights: tuple[tuple[str, str], ...]
    quiet: Callable[[], AbstractContextManager[None]]


@dataclass(frozen=True)
class JobDone:
    text: str  # one line: what was done
    result: object = None  # the job's typed result
    reload: bool = False  # load the networks again afterwards (new weights on disk)


class JobFailed(Exception):
    """A job that cannot finish, in one line; ``code`` says what kind of failure it is.
    ``reload``: it finished part of its work, which the networks should load all the same."""

    def __init__(self, text: str, code: ErrorCode | None = None, *, reload: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.reload = reload


class Job(ABC):
    """Subclasses are frozen dataclasses holding their inputs, and set the class variables."""

    name: ClassVar[str]  # what its JobProgress events are called ("analyze", "top-images", ...)
    failure: ClassVar[ErrorCode] = ErrorCode.STUDY  # the kind of an unexpected failure
    failed: ClassVar[str] = "failed"  # an unexpected failure's line starts with this
    cancelled: ClassVar[str] = "cancelled; nothing was kept"

    @abstractmethod
    def run(self, state: JobState, context: JobContext) -> JobDone:
        """Do the work on the job's thread; raise :class:`JobFailed` (or any exception, reported
        in one line) or :class:`~engine.jobs.state.Cancelled`, or return what was done."""


class JobOutcome(str, Enum):
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class JobEnded:
    """A job is over; ``text`` says how, in one line. Comes after its last ``JobProgress`` and
    before whatever the job then sets off (a reload). A failure also comes as an ``Error``."""

    job: Job
    outcome: JobOutcome
    text: str
    result: object = None  # what a finished job made (an Analysis, a TopImages, a path, ...)
    code: ErrorCode | None = None  # a failure's kind

    @property
    def name(self) -> str:
        return self.job.name
