"""What runs each network: one policy over every candidate (backend x precision x threads).

The session asks :class:`Tuner` for a network's candidates, builds each (a backend that cannot run
it is left out, with the reason), and the tuner times them all in turn at batch 1 (medians, after
warm-up passes) and chooses. Its decision and the evidence for it are one :class:`Decision` per
network, which the panel's tooltip, the report's ``why`` and bench all print.

The rule: torch eager in fp32 on the session's threads is the reference. Another candidate is
kept only where its outputs agree with the reference's and it is faster by a clear margin for each
way it differs (another backend: 5%; bf16 or int8: 15%; more threads, which take the frame
decoder's core: 20%; fewer: 5%), and of those the fastest wins. Where the runner-up measured within
:data:`RECHECK_RATIO`, live frames time the two again (:class:`LiveCheck`), because at load the
window may be drawing on the other core.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from engine.common.timing import interleaved_runs
from engine.runtime import backends
from engine.runtime.backends import BackendError

BACKEND_GAIN = 0.95  # another backend is kept where its median is at most this fraction of the other's
PRECISION_GAIN = 0.85  # bf16 or int8: at most this fraction of fp32's
MANY_THREADS_GAIN = 0.8  # every core for a torch network: at most this fraction (the decoder needs one)
FEW_THREADS_GAIN = 0.95  # one pool thread rather than every one
# The live engine leaves a core to the frame decoder; a torch network at least HEAVY_MS a frame is
# tried on every core too, and a runtime's graph under HEAVY_MS on every thread is tried on one: many
# small operators (ENet's 200) cost more to hand to a pool than a second core saves.
HEAVY_MS = 25.0
PRUNE_RATIO = 3.0  # a candidate whose first passes took over this many times the fastest's is not timed
AGREE_P = 0.05  # a candidate agrees with the reference where no probability differs by more on the probe
RECHECK_RATIO = 2.0  # a runner-up within this ratio of the chosen one is timed again on live frames
# Live checks: the two alternate in blocks of TRIAL_BLOCK frames, TRIAL_BLOCKS each, the first frame of
# a block not counted (a pass right after the other's is slowed while its threads wake up), from
# LIVE_DELAY_S after the first live frame (the window's first draws keep the other core busy). A check
# that disagrees with load's choice switches it only when a second check agrees.
TRIAL_BLOCK = 5
TRIAL_BLOCKS = 3
LIVE_DELAY_S = 2.0
LOAD_RUNS = 7


@dataclass(frozen=True, order=True)
class Candidate:
    """One way to run a network. ``threads`` None: torch's threads as the session has them."""

    backend: str
    precision: str = "fp32"
    threads: int | None = None

    def text(self) -> str:
        """``ONNX Runtime fp32, 1 thread``."""
        threads = "" if self.threads is None else f", {self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"{backends.label(self.backend)} {self.precision}{threads}"


@dataclass(frozen=True)
class Measured:
    """What the tuner found of one candidate: its median time, or why it was left out."""

    candidate: Candidate
    ms: float | None = None  # the whole answer at batch 1, median
    left_out: str = ""  # why it could not be kept (does not build, disagrees, slower than its margin)


@dataclass(frozen=True)
class Decision:
    """What runs one network, and the evidence: the one record every display prints."""

    network: str
    chosen: Candidate
    asked: str  # the backend asked for: auto or a name
    measured: tuple[Measured, ...] = ()
    how: str = ""  # how the times were taken
    why: str = ""  # a fallback's reason, or what live frames found

    def ms(self, candidate: Candidate) -> float | None:
        return next((m.ms for m in self.measured if m.candidate == candidate), None)

    def text(self) -> str:
        """One line: the chosen candidate with its time, the others with theirs or why not, how."""
        if not self.measured:
            return f"{self.chosen.text()}{f': {self.why}' if self.why else ''}"
        parts = [f"{m.candidate.text()} {_ms(m.ms)} ms" if m.ms is not None and not m.left_out
                 else f"{m.candidate.text()}{f' {_ms(m.ms)} ms' if m.ms is not None else ''} ({m.left_out})"
                 for m in self.measured if m.candidate != self.chosen]
        mine = self.ms(self.chosen)
        head = f"{self.chosen.text()}" + (f": {_ms(mine)} ms" if mine is not None else "")
        tail = f" ({self.how})" if self.how else ""
        against = f" against {'; '.join(parts)}" if parts else ""
        return f"{head}{against}{tail}{f'; {self.why}' if self.why else ''}"

    def as_dict(self) -> dict:
        return {"network": self.network, "asked": self.asked, "chosen": _candidate_dict(self.chosen),
                "how": self.how, "why": self.why, "text": self.text(),
                "measured": [{**_candidate_dict(m.candidate), "ms": m.ms, "left_out": m.left_out}
                             for m in self.measured]}


def _candidate_dict(c: Candidate) -> dict:
    return {"backend": c.backend, "precision": c.precision, "threads": c.threads}


def _ms(ms: float | None) -> str:
    """A time in ms with the digits that matter: 0.47, 4.52, 94.0."""
    return "?" if ms is None else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"


def margin(a: Candidate, b: Candidate, session_threads: int | None = None) -> float:
    """The fraction of ``a``'s time ``b`` must take at most to be chosen over it. Pairwise
    consistent: more torch threads must be MANY_THREADS_GAIN of the time, so fewer may take up to
    its inverse (they leave the frame decoder its core); one pool thread must be FEW_THREADS_GAIN."""
    gain = 1.0
    if a.backend != b.backend:
        gain *= BACKEND_GAIN
    if a.precision != b.precision:
        gain *= PRECISION_GAIN
    if a.threads != b.threads and a.backend == b.backend:
        more = (b.threads or session_threads or 1) > (a.threads or session_threads or 1)
        step = MANY_THREADS_GAIN if b.backend == "torch" else 1 / FEW_THREADS_GAIN
        gain *= step if more else 1 / max(step, 1e-9)
    return gain


@dataclass
class Tuner:
    """The policy: which candidates a network has here, and which one runs it.

    ``backend`` and ``precision`` are what was asked (auto, or one); ``threads`` is the pool a
    runtime may use, ``torch_threads`` the session's torch threads and ``cores`` every core.
    """

    backend: str
    precision: str
    device: object
    threads: int
    torch_threads: int
    cores: int
    runs: int = LOAD_RUNS

    def candidates(self, name: str, *, untrained: bool = False, int8: bool = False,
                   ) -> tuple[list[Candidate], list[Measured]]:
        """(the candidates to build and time, the ones left out with why), reference first. ``int8``:
        whether the network has an int8 graph that held its accuracy (engine.runtime.quantize)."""
        names = [b.name for b in backends.backends() if b.tuned] if self.backend == backends.AUTO else [self.backend]
        if self.backend == backends.AUTO and (untrained or self.device.type != "cpu"):
            # random weights are new at every start: nothing to export and keep; a GPU runs torch
            names = [n for n in names if backends.backend(n).reference]
        found, left = [], []
        for backend_name in names:
            entry = backends.backend(backend_name)
            why = entry.refusal(self.device)
            if why is not None:
                left.append(Measured(Candidate(backend_name), left_out=why))
                continue
            offered = [p for p in entry.precisions(self.device) if p != "int8" or int8]
            wanted = offered if self.precision == "auto" else [p for p in offered if p == self.precision]
            found += [Candidate(backend_name, p, t) for p in wanted for t in self._threads(entry)]
        if not found and self.precision not in ("auto", "fp32"):  # asked for a format nothing here runs
            offers = [b.label for b in backends.backends() if self.precision in b.precisions(self.device)]
            asked = backends.label(self.backend) if self.backend != backends.AUTO else "any backend"
            if self.precision == "int8" and (self.backend == backends.AUTO or backends.label(self.backend) in offers):
                why = (f"{name}: no int8 graph here that holds its accuracy (python main.py eval --precision int8 "
                       f"--data DIR quantizes and measures one)")
            else:
                why = f"{self.precision} does not run on {asked} here" + (f" ({', '.join(offers)} runs it)"
                                                                          if offers else "")
            plain = replace(self, precision="fp32").candidates(name, untrained=untrained)
            return plain[0], [*plain[1], Measured(Candidate(self.backend, self.precision), left_out=why)]
        return found, left

    def _threads(self, entry: backends.Backend) -> list[int | None]:
        if self.device.type != "cpu":
            return [None]
        if entry.reference:
            return [None, self.cores] if self.torch_threads < self.cores else [None]
        if not entry.pool:  # it runs on torch's threads (torch.compile)
            return [None]
        return [self.threads, 1] if self.threads > 1 else [self.threads]

    def reference(self, candidates: list[Candidate]) -> Candidate:
        for c in candidates:
            if c.backend == "torch" and c.precision == "fp32" and c.threads is None:
                return c
        return candidates[0]

    def choose(self, name: str, passes: Mapping[Candidate, Callable[[], object]], left: list[Measured],
               agreement: Callable[[Candidate], str], *, asked: str | None = None) -> Decision:
        """Time ``passes`` (one whole answer each), drop what disagrees (``agreement`` returns why,
        or ""), and choose by the rule in the module docs."""
        order = list(passes)
        asked = asked or self.backend
        if not order:
            raise BackendError(f"{name}: no backend can run it here")
        if len(order) == 1:
            return Decision(name, order[0], asked, tuple(left), why="")
        ref = self.reference(order)
        warm: dict[Candidate, float] = {}
        failed: dict[Candidate, str] = {}
        for c in order:  # in order: a thread variant is tried where its sibling's first passes call for it
            if c != ref and not self._worth_trying(c, warm):
                continue
            try:
                warm[c] = _warm_ms(passes[c])
            except BackendError as e:  # it cannot be built or run: left out, with the backend's reason
                if c == ref:
                    raise
                failed[c] = str(e)
        if len(warm) == 1:  # nothing else to weigh it against: no timing
            return Decision(name, ref, asked, (*left, *(Measured(c, left_out=why) for c, why in failed.items())))
        fastest = min(warm.values())
        keep = [c for c in warm if c == ref or warm[c] <= PRUNE_RATIO * fastest]
        times = time_candidates({c: passes[c] for c in keep}, self.runs)
        measured = [*left]
        eligible = []
        for c in order:
            ms = times.get(c)
            if c in failed:
                measured.append(Measured(c, left_out=failed[c]))
                continue
            if c not in warm:
                continue  # not tried: its sibling's first passes said it would not help
            if ms is None:
                measured.append(Measured(c, warm[c], f"its first passes were over {PRUNE_RATIO:g} times the fastest's"))
                continue
            why = agreement(c) if c != ref else ""
            for other in ([ref] if c != ref else []) + self._siblings(c):  # the reference, then its own kind
                if not why and other in times and ms > margin(other, c, self.torch_threads) * times[other]:
                    gain = round(100 * (1 - margin(other, c, self.torch_threads)))
                    why = f"not {gain}% faster" + ("" if other == ref else f" than {other.text()}")
            measured.append(Measured(c, ms, why))
            if not why:
                eligible.append(c)
        chosen = min(eligible, key=lambda c: times[c])
        how = f"batch 1, medians of {self.runs} timed in turn, measured at load"
        return Decision(name, chosen, asked, tuple(sorted(measured, key=_by_time)), how)

    def _siblings(self, c: Candidate) -> list[Candidate]:
        """The same backend with one of ``c``'s departures undone: in fp32, on its default threads.
        A departure must pay for itself against them: int8 is kept only where it beats the same
        runtime's fp32, one pool thread only where it beats the whole pool."""
        default = None if backends.backend(c.backend).reference or c.threads is None else self.threads
        found = [replace(c, precision="fp32")] if c.precision != "fp32" else []
        return found + ([replace(c, threads=default)] if c.threads != default else [])

    def _worth_trying(self, c: Candidate, warm: Mapping[Candidate, float]) -> bool:
        """Every core only for a heavy torch network; one pool thread only for a graph that is not
        (a big graph's convolutions split well, and its second session would hold its weights again);
        nothing more of a backend whose first candidate was already over PRUNE_RATIO times the fastest
        (building it costs the load a session or a compile)."""
        siblings = [warm[s] for s in self._siblings(c) if s in warm]
        if siblings and min(siblings) > PRUNE_RATIO * min(warm.values()):
            return False
        if c.backend == "torch" and c.threads is not None:
            few = warm.get(replace(c, threads=None))
            return few is None or few >= HEAVY_MS
        if c.threads == 1 and self.threads > 1:
            many = warm.get(replace(c, threads=self.threads))
            return many is None or many < HEAVY_MS
        return True

    def challenger(self, decision: Decision) -> Candidate | None:
        """The runner-up to time again on live frames: the fastest other candidate that agrees and
        measured within RECHECK_RATIO of the chosen one, if any."""
        mine = decision.ms(decision.chosen)
        if mine is None:
            return None
        close = [m for m in decision.measured if m.candidate != decision.chosen and m.ms is not None
                 and (not m.left_out or m.left_out.startswith("not ")) and m.ms <= RECHECK_RATIO * mine]
        return min(close, key=lambda m: m.ms).candidate if close else None


def time_candidates(passes: Mapping[Candidate, Callable[[], object]], runs: int) -> dict[Candidate, float]:
    """Each candidate's median time in ms over ``runs`` passes, all timed in turn after a warm-up
    pass each, so that a burst of other work slows them alike."""
    order = list(passes)
    times = interleaved_runs([passes[c] for c in order], warmup=1, min_runs=runs)
    return {c: statistics.median(t) for c, t in zip(order, times)}


def _by_time(m: Measured) -> tuple:
    return (m.ms is None, m.ms or 0.0)


def _warm_ms(run: Callable[[], object]) -> float:
    """The second of two passes, in ms: the first builds kernels."""
    run()
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1000


@dataclass
class LiveCheck:
    """Load's choice (``load``) and a close runner-up (``other``) timed again on live frames, in
    blocks (the runner-up first), from LIVE_DELAY_S after the first live frame."""

    load: Candidate
    other: Candidate
    torch_threads: int | None = None
    confirms: str | None = None  # a first check's times, where it disagreed with load
    times: dict = field(default_factory=dict)
    passes: int = 0
    since: float | None = None

    def due(self) -> bool:
        now = time.perf_counter()
        if self.since is None:
            self.since = now
        return now - self.since >= LIVE_DELAY_S

    def next(self) -> Candidate:
        return self.load if self.passes // TRIAL_BLOCK % 2 else self.other

    def add(self, candidate: Candidate, ms: float) -> bool:
        """Count one pass (not the first of a block); True once both have all their blocks."""
        if self.passes % TRIAL_BLOCK:
            self.times.setdefault(candidate, []).append(ms)
        self.passes += 1
        return self.passes >= 2 * TRIAL_BLOCKS * TRIAL_BLOCK

    @staticmethod
    def how() -> str:
        return (f"medians of {TRIAL_BLOCKS * (TRIAL_BLOCK - 1)} live frames each, in blocks of {TRIAL_BLOCK} "
                f"alternated")

    def settle(self, decision: Decision) -> tuple[Decision, LiveCheck | None]:
        """The decision live frames support, and a second check where this one disagreed with load."""
        load_ms = statistics.median(self.times.get(self.load, [0.0]))
        other_ms = statistics.median(self.times.get(self.other, [0.0]))
        switch = other_ms <= margin(self.load, self.other, self.torch_threads) * load_ms
        times = f"{self.other.text()} {_ms(other_ms)} ms against {self.load.text()} {_ms(load_ms)} ms"
        if switch and self.confirms is None:
            return decision, LiveCheck(self.load, self.other, self.torch_threads, confirms=times)
        if switch:
            why = "a first check agreed"
        else:
            why = "what load chose stays"
            if self.confirms is not None:
                why += f"; a first check that found otherwise ({self.confirms}) was not confirmed"
        measured = tuple(Measured(c, ms) for c, ms in ((self.load, load_ms), (self.other, other_ms)))
        chosen = self.other if switch else self.load
        return Decision(decision.network, chosen, decision.asked, measured, f"{self.how()}, on live frames", why), None
