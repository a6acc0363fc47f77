"""Runs the engine's jobs: one at a time, each on a thread of its own, never on the inference
thread; every job ends with exactly one ``JobEnded`` (and an ``Error`` when it failed)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from engine.common.errors import error_line
from engine.jobs import Cancelled, Job, JobContext, JobEnded, JobFailed, JobOutcome, JobState
from engine.live.events import EngineEvent, Error


class JobRunner:
    def __init__(self, emit: Callable[[EngineEvent], None], context: Callable[[], JobContext],
                 reload: Callable[[], None], stopping: Callable[[], bool]) -> None:
        self._emit = emit
        self._context = context
        self._reload = reload
        self._stopping = stopping
        self._lock = threading.Lock()
        self._state: JobState | None = None
        self.thread: threading.Thread | None = None

    def start(self, job: Job) -> bool:
        """Run ``job``; False (and nothing started) while another job runs."""
        with self._lock:
            if self.thread is not None and self.thread.is_alive():
                return False
            self._state = state = JobState(on_progress=self._emit)
            context = self._context()
            self.thread = threading.Thread(target=self._run, args=(job, state, context),
                                           name=f"engine job {job.name}", daemon=True)
            self.thread.start()
        return True

    def cancel(self) -> None:
        state = self._state
        if state is not None:
            state.cancel()

    def _run(self, job: Job, state: JobState, context: JobContext) -> None:
        reload = False
        try:
            done = job.run(state, context)
        except Cancelled:
            self._emit(JobEnded(job, JobOutcome.CANCELLED, job.cancelled))
        except JobFailed as e:
            code = e.code or job.failure
            self._emit(JobEnded(job, JobOutcome.FAILED, str(e), code=code))
            self._emit(Error(code, str(e)))
            reload = e.reload
        except Exception as e:  # noqa: BLE001 - a job thread ends with an event, never silently
            text = f"{job.failed}: {error_line(e, typed=True)}"
            self._emit(JobEnded(job, JobOutcome.FAILED, text, code=job.failure))
            self._emit(Error(job.failure, text))
        else:
            self._emit(JobEnded(job, JobOutcome.DONE, done.text, done.result))
            reload = done.reload
        if reload and not self._stopping():
            self._reload()
