"""One timing protocol for every measurement of the app (bench, analysis, the backend and precision
choices at load): untimed warm-up calls, then timed calls until both a count and a duration are
reached, and callables that are compared timed in turn, so that a burst of other work on the
machine slows them alike instead of deciding between them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

Sync = Callable[[], object]


def time_ms(run: Callable[[], object], sync: Sync | None = None) -> float:
    """The wall time of one ``run()`` in milliseconds; ``sync`` (a GPU's synchronise) is called
    before and after, so that the timer covers the work itself and not work queued before it."""
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    run()
    if sync is not None:
        sync()
    return (time.perf_counter() - t0) * 1000


def timed_runs(run: Callable[[], object], *, warmup: int = 2, min_runs: int = 1, min_seconds: float = 0.0,
               max_runs: int | None = None, sync: Sync | None = None,
               check: Callable[[], None] | None = None) -> list[float]:
    """Milliseconds of ``run()``: ``warmup`` untimed calls, then at least ``min_runs`` and more
    until ``min_seconds`` have passed, at most ``max_runs``. ``check`` (a job's cancel point) is
    called every 8 runs."""
    return interleaved_runs([run], warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, max_runs=max_runs,
                            sync=sync, check=check)[0]


def interleaved_runs(runs: Sequence[Callable[[], object]], *, warmup: int = 2, min_runs: int = 1,
                     min_seconds: float = 0.0, max_runs: int | None = None, sync: Sync | None = None,
                     check: Callable[[], None] | None = None) -> list[list[float]]:
    """Milliseconds of each of ``runs``, timed in turn (a, b, a, b, ...) after ``warmup`` untimed
    calls of each, with :func:`timed_runs`'s stopping rule on the count of rounds."""
    for _ in range(warmup):
        for run in runs:
            run()
    times: list[list[float]] = [[] for _ in runs]
    started = time.perf_counter()
    while True:
        done = len(times[0])
        enough = done >= min_runs and time.perf_counter() - started >= min_seconds
        if enough or (max_runs is not None and done >= max(max_runs, min_runs)):
            return times
        if check is not None and done % 8 == 0:
            check()
        for run, out in zip(runs, times):
            out.append(time_ms(run, sync))


def paired_medians_ms(first: Callable[[], object], second: Callable[[], object], runs: int = 7,
                      warmup: int = 2) -> tuple[float, float]:
    """The median times of ``first()`` and ``second()`` in milliseconds, timed in turn."""
    a, b = interleaved_runs([first, second], warmup=warmup, min_runs=runs)
    return statistics.median(a), statistics.median(b)
