"""Long work as plain functions: each takes a :class:`JobState` (progress, cancel, partial results).

The command line and the window drive the same functions; neither runs them on the inference thread.
"""

from engine.jobs.state import Cancelled, JobProgress, JobState

__all__ = ["Cancelled", "JobProgress", "JobState"]
