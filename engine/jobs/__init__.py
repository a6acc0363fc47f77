"""Long work with progress, cancel and a typed result: :class:`Job` (what it computes),
:class:`JobState` (progress out, cancel in, partial results out) and :class:`JobEnded`.

The command line and the window drive the same functions; neither runs them on the inference thread.
"""

from engine.jobs.job import Job, JobContext, JobDone, JobEnded, JobFailed, JobOutcome
from engine.jobs.state import Cancelled, JobProgress, JobState

__all__ = ["Cancelled", "Job", "JobContext", "JobDone", "JobEnded", "JobFailed", "JobOutcome", "JobProgress",
           "JobState"]
