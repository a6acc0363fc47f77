"""When a timing cannot be trusted: the machine's other work while a measurement ran, and the
measurement's own checks.

A timing is broken when any of these holds (:func:`timing_problems`, pure):

- the layers' times inside whole passes, summed, are more than 15% off the whole pass without
  hooks (each unit then waited for the CPU at a different moment);
- the p95 of batch 1 is more than twice its p50 (the runs were interrupted);
- the load while measuring was above the core count: this measurement's torch threads plus the
  cores the other programs used meanwhile (:class:`CpuShare`).

A broken timing is never judged and never cached: the verdicts on time are "not judged: the
machine was busy (load X on N cores)" and a second run measures it again.

The load is counted from the processor's own accounting rather than the load average: the
average lags by a minute and counts this measurement's own threads, which on two cores alone
reach the core count.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

LAYERS_TOLERANCE = 0.15  # |sum of the layers / whole pass - 1| above this: broken
P95_OVER_P50 = 2.0  # batch 1's p95 / p50 above this: broken
LOAD_SLACK = 0.25  # cores of other work tolerated above the core count (daemons, the sampler)


def cores() -> int:
    return os.cpu_count() or 1


class CpuShare:
    """The cores other programs used while inside: the whole machine's busy CPU time less this
    process's own, over the wall time (``psutil``), lower-priority programs not counted.
    ``load(threads)`` adds this measurement's threads: above the core count, the measurement
    shared cores with other work."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self.others = 0.0

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        # programs at a lower priority (nice) than this one get little of a core it wants (1.5% at
        # nice 19): counted only when this process is niced itself
        return busy - getattr(t, "nice", 0.0) if _priority() <= 0 else busy

    def __enter__(self) -> CpuShare:
        self._wall, self._all, self._own = time.perf_counter(), self._busy(), sum(self._process.cpu_times()[:2])
        return self

    def __exit__(self, *_exc) -> None:
        wall = time.perf_counter() - self._wall
        own = sum(self._process.cpu_times()[:2]) - self._own
        if wall > 0:
            self.others = max(0.0, (self._busy() - self._all - own) / wall)

    def start(self) -> CpuShare:
        return self.__enter__()

    def stop(self) -> CpuShare:
        self.__exit__(None, None, None)
        return self

    def load(self, threads: int) -> float:
        return threads + self.others


def _priority() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):  # not on every system
        return 0


def others_now(seconds: float = 0.5) -> float:
    """The cores other programs use now, over ``seconds``."""
    with CpuShare() as share:
        time.sleep(seconds)
    return share.others


def quiet_threads(wanted: int, others: float, n_cores: int | None = None) -> int:
    """The threads a measurement may use without sharing a core: ``wanted``, less the cores the
    other programs use (rounded up once they pass a quarter core), at least one. Torch's threads
    wait for each other at every layer, so one thread that loses its core stalls them all."""
    n_cores = n_cores or cores()
    free = n_cores - math.ceil(max(0.0, others - LOAD_SLACK))
    return max(1, min(wanted, free))


def wait_for_quiet(threads: int, timeout: float, step: float = 1.0, check: Callable[[], None] | None = None) -> float:
    """Wait until the other programs leave ``threads`` cores free, at most ``timeout`` seconds;
    returns the load last seen (threads + others). ``check`` runs every step (a job's cancel)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        load = threads + others_now(step)
        if not busy_load(load) or time.monotonic() >= deadline:
            return load


def busy_load(load: float | None, n_cores: int | None = None) -> bool:
    return load is not None and load > (n_cores or cores()) + LOAD_SLACK


@dataclass(frozen=True)
class Busy:
    """Why timings were not judged: the networks whose timings broke, and the highest load seen."""

    networks: tuple[str, ...]  # labels
    load: float | None
    cores: int

    @property
    def text(self) -> str:
        """'the machine was busy (load X on N cores)' where the load passed the cores; otherwise the
        timings broke at a load within them (the layers' sum or the p95), and it says so."""
        load = f"load {self.load:.1f} on {self.cores} cores" if self.load is not None else \
            f"on {self.cores} cores"
        if busy_load(self.load, self.cores):
            return f"the machine was busy ({load})"
        return f"timings failed their own checks ({load}, within the cores)"

    @property
    def lead(self) -> str:
        """The verdict's first clause: the state of the machine and the networks whose timings broke."""
        names = ", ".join(self.networks)
        if busy_load(self.load, self.cores):
            return f"{self.text}: the timings of {names} fail their own checks"
        return f"the timings of {names} fail their own checks ({self.text.partition('(')[2]}"


def timing_problems(layers_ratio: float | None, p50: float, p95: float, load: float | None,
                    n_cores: int | None = None) -> tuple[str, ...]:
    """The checks a timing fails, each as a short phrase; empty when it is sound. ``layers_ratio``
    is None where no layer was timed (another backend)."""
    problems = []
    if layers_ratio is not None and not abs(layers_ratio - 1) <= LAYERS_TOLERANCE:  # nan fails too
        problems.append(f"layers sum to {layers_ratio:.2f} of the whole pass")
    if p50 > 0 and p95 > P95_OVER_P50 * p50:
        problems.append(f"p95 {p95 / p50:.1f}\u00d7 the p50")
    if busy_load(load, n_cores):
        problems.append(f"load {load:.1f} on {n_cores or cores()} cores")
    return tuple(problems)


def network_problems(net, load: float | None = None, n_cores: int | None = None) -> tuple[str, ...]:
    """:func:`timing_problems` of a :class:`~engine.studies.analysis.NetworkAnalysis`."""
    if not net.batches:
        return ("no batch was timed",)
    first = net.batches[0]
    return timing_problems(net.layers_ratio if net.layers else None, first.ms_per_image_p50,
                           first.ms_per_image_p95, load, n_cores)


def busy_of(networks: Iterable, load: float | None = None, n_cores: int | None = None) -> Busy | None:
    """A :class:`Busy` naming the networks whose timings fail their checks, or None."""
    broken = tuple(n.label for n in networks if network_problems(n, load, n_cores))
    return Busy(broken, load, n_cores or cores()) if broken else None


def busy_sentence(busy: Busy) -> str:
    return (f"{busy.lead} (layers summed against the whole pass, p95 against p50, the load), so this claim on "
            "time is not judged, and nothing of this measurement is cached. Measure again when the machine is "
            "quieter.")


def judged(analysis):
    """``analysis`` (an :class:`~engine.studies.analysis.Analysis`) with its verdicts on time, and each
    backend's, replaced by "not judged" where a timing fails its checks; unchanged otherwise."""
    def fix(verdicts, busy):
        return tuple(replace(v, holds=None, text=busy_sentence(busy)) if v.claim != "density" else v
                     for v in verdicts)

    busy = busy_of(analysis.networks, analysis.load)
    views = tuple(replace(v, verdicts=fix(v.verdicts, b)) if (b := busy_of(v.networks, analysis.load)) else v
                  for v in analysis.backends)
    return replace(analysis, verdicts=fix(analysis.verdicts, busy) if busy else analysis.verdicts, backends=views)


def sound(analysis) -> bool:
    """Whether every timing of ``analysis`` passes its checks (only then is it cached or served)."""
    return busy_of(analysis.networks, analysis.load) is None and not any(
        busy_of(v.networks, analysis.load) for v in analysis.backends)
