"""The survey's claims judged on a line-up of networks, each with its statistic, a bootstrap
interval over networks and the number of networks it stands on (pure: made-up line-ups test it).

- Operations predict time: R² of batch-1 latency against MACs (least squares), over every
  network with a sound time.
- Accuracy and time trade off hyperbolically: R² of ``top-1 = A - k / time`` fitted to the front
  of best accuracy for the time (no network both faster and more accurate); it holds where the
  fit rises with diminishing returns (k > 0) and explains the front (R² from 0.8).
- ENet uses its parameters best: ENet's rank by top-1 points per million parameters.

The interval resamples the networks with replacement (percentile bootstrap, seeded, so a line-up
gives the same interval every time) and computes the statistic again. A verdict on fewer than
:data:`WEAK_BELOW` networks says it is weak. A verdict on time is never given from timings that
fail their checks (:mod:`engine.studies.busy`): it says "not judged" and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.studies.analysis import PREDICTS_R2, NetworkAnalysis, fit_line, pareto_front
from engine.studies.busy import Busy

WEAK_BELOW = 6  # a verdict on fewer networks says it is weak
HYPERBOLA_R2 = 0.8  # R² of the front's hyperbola from which the trade-off is said to hold
RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class StatVerdict:
    claim: str  # operations, tradeoff, density
    holds: bool | None  # None: not judged (the text says why)
    text: str
    statistic: str  # what ``value`` is
    value: float | None
    low: float | None  # the bootstrap interval over networks (LEVEL), None where it cannot be drawn
    high: float | None
    n: int  # the networks the verdict stands on
    weak: bool  # fewer than WEAK_BELOW networks
    busy: bool = False  # not judged because timings failed their checks

    @property
    def interval_text(self) -> str:
        if self.low is None or self.high is None:
            return "no interval"
        digits = 0 if self.claim == "density" else 2
        return f"{100 * LEVEL:.0f}% interval {self.low:.{digits}f} to {self.high:.{digits}f} over networks"


@dataclass(frozen=True)
class Hyperbola:
    """``top-1 % = a - k / ms``, least squares in 1/ms."""

    a: float
    k: float
    r2: float
    n: int

    def predict(self, ms):
        return self.a - self.k / np.asarray(ms, float)


def fit_hyperbola(ms: Sequence[float], top1_percent: Sequence[float]) -> Hyperbola | None:
    u = 1.0 / np.asarray(ms, float)
    fit = fit_line(u, top1_percent)
    return None if fit is None or len(u) < 3 else Hyperbola(fit.intercept, -fit.slope, fit.r2, fit.n)


def bootstrap(items: Sequence, statistic: Callable[[list], float | None], *, resamples: int = RESAMPLES,
              seed: int = 0, level: float = LEVEL) -> tuple[float | None, float | None]:
    """Percentile interval of ``statistic`` over ``items`` resampled with replacement; (None, None)
    when fewer than half the resamples give a value (too few distinct items)."""
    if not items:
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        value = statistic([items[i] for i in rng.integers(0, len(items), len(items))])
        if value is not None and np.isfinite(value):
            values.append(value)
    if len(values) < resamples / 2:
        return None, None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _unique(nets: list[NetworkAnalysis]) -> list[NetworkAnalysis]:
    return list({n.name: n for n in nets}.values())


def _ops_r2(nets: list[NetworkAnalysis]) -> float | None:
    fit = fit_line([n.macs for n in nets], [n.latency_ms for n in nets])
    return fit.r2 if fit is not None else None


def _front_fit(nets: list[NetworkAnalysis]) -> Hyperbola | None:
    front = pareto_front(_unique(nets))
    return fit_hyperbola([n.latency_ms for n in front], [100 * n.top1 for n in front]) if len(front) >= 3 else None


def _enet_rank(enet: NetworkAnalysis, others: list[NetworkAnalysis]) -> int:
    return 1 + sum(1 for n in _unique(others) if n.density > enet.density)


def _weak(n: int) -> str:
    return f" Weak: it stands on {n} networks (fewer than {WEAK_BELOW})." if n < WEAK_BELOW else ""


def _settled(value: float, low: float | None, high: float | None, threshold: float) -> str:
    if low is None or high is None:
        return ""
    if low >= threshold or high < threshold:
        return f" The interval lies {'above' if low >= threshold else 'below'} {threshold}: settled."
    return f" The interval straddles {threshold}: the line-up does not settle it."


def _busy_verdict(claim: str, statistic: str, busy: Busy, n: int) -> StatVerdict:
    text = (f"{busy.lead}, so no verdict on time is given. Measure again when the machine is quieter: only "
            "those networks are measured again.")
    return StatVerdict(claim, None, text, statistic, None, None, None, n, n < WEAK_BELOW, True)


def judge_operations(networks: Sequence[NetworkAnalysis], busy: Busy | None = None) -> StatVerdict:
    nets = [n for n in networks if n.macs > 0 and n.latency_ms > 0]
    statistic = "R\u00b2 of batch-1 latency against MACs"
    if busy is not None:
        return _busy_verdict("operations", statistic, busy, len(nets))
    fit = fit_line([n.macs for n in nets], [n.latency_ms for n in nets])
    if fit is None or len(nets) < 3:
        return StatVerdict("operations", None, f"Operations against time cannot be judged from {len(nets)} "
                           "network(s) with a measured time: at least 3 are needed.", statistic, None, None, None,
                           len(nets), True)
    low, high = bootstrap(nets, _ops_r2)
    holds = fit.r2 >= PREDICTS_R2
    per_mac = sorted(nets, key=lambda n: n.latency_ms / n.macs)
    best, worst = per_mac[0], per_mac[-1]
    ratio = (worst.latency_ms / worst.macs) / (best.latency_ms / best.macs)
    text = (f"Operations {'predict' if holds else 'do not predict'} time here: R\u00b2 = {fit.r2:.2f} over "
            f"{len(nets)} networks ({100 * LEVEL:.0f}% bootstrap interval over networks "
            f"{'n/a' if low is None else f'{low:.2f} to {high:.2f}'}; the claim is taken to hold from "
            f"R\u00b2 {PREDICTS_R2}). {worst.label} spends {ratio:.1f}\u00d7 the time per MAC of {best.label}."
            + _settled(fit.r2, low, high, PREDICTS_R2) + _weak(len(nets)))
    return StatVerdict("operations", holds, text, statistic, fit.r2, low, high, len(nets), len(nets) < WEAK_BELOW)


def judge_tradeoff(networks: Sequence[NetworkAnalysis], busy: Busy | None = None) -> StatVerdict:
    scored = [n for n in networks if n.top1 is not None and n.latency_ms > 0]
    statistic = "R\u00b2 of top-1 = a - k / time on the accuracy-time front"
    if busy is not None:
        return _busy_verdict("tradeoff", statistic, busy, len(scored))
    front = pareto_front(scored)
    fit = _front_fit(scored)
    if fit is None:
        return StatVerdict("tradeoff", None, f"The accuracy-time trade-off cannot be judged: its front has "
                           f"{len(front)} network(s) of {len(scored)} with an accuracy; a hyperbola needs 3.",
                           statistic, None, None, None, len(scored), True)
    low, high = bootstrap(scored, lambda s: (f := _front_fit(s)) and f.r2)
    holds = fit.k > 0 and fit.r2 >= HYPERBOLA_R2
    shape = ("rises with diminishing returns" if fit.k > 0 else "does not rise with time")
    text = (f"Accuracy against time {'is' if holds else 'is not'} hyperbolic here: along the front of best "
            f"accuracy for the time ({', '.join(n.label for n in front)}: {len(front)} of {len(scored)} networks "
            f"with an accuracy), top-1 = {fit.a:.1f} - {fit.k:.1f} / ms {shape}, R\u00b2 = {fit.r2:.2f} "
            f"({100 * LEVEL:.0f}% bootstrap interval over networks "
            f"{'n/a' if low is None else f'{low:.2f} to {high:.2f}'}; held from R\u00b2 {HYPERBOLA_R2})."
            + _settled(fit.r2, low, high, HYPERBOLA_R2) + _weak(len(scored)))
    return StatVerdict("tradeoff", holds, text, statistic, fit.r2, low, high, len(scored), len(scored) < WEAK_BELOW)


def judge_density(networks: Sequence[NetworkAnalysis]) -> StatVerdict:
    scored = [n for n in networks if n.density is not None]
    statistic = "ENet's rank by top-1 points per million parameters (1: densest)"
    enet = next((n for n in networks if n.name == "enet"), None)
    densest = max(scored, key=lambda n: n.density, default=None)
    top = f" The densest here: {densest.label}, {densest.density:.1f} points per million." if densest else ""
    if enet is None or enet.density is None:
        return StatVerdict("density", None, "ENet's accuracy per parameter cannot be ranked: no top-1 is "
                           "published for ENet in this profile (torchvision has no ENet), and none was measured."
                           + top, statistic, None, None, None, len(scored), len(scored) < WEAK_BELOW)
    others = [n for n in scored if n is not enet]
    rank = _enet_rank(enet, others)
    low, high = bootstrap(others, lambda s: float(_enet_rank(enet, s))) if others else (None, None)
    holds = rank == 1
    text = (f"ENet {'uses' if holds else 'does not use'} its parameters best here: it ranks {rank} of "
            f"{len(scored)} by top-1 points per million parameters ({enet.density:.1f}; "
            f"{100 * LEVEL:.0f}% bootstrap interval of its rank over networks "
            f"{'n/a' if low is None else f'{low:.0f} to {high:.0f}'})." + ("" if holds else top)
            + _weak(len(scored)))
    return StatVerdict("density", holds, text, statistic, float(rank), low, high, len(scored),
                       len(scored) < WEAK_BELOW)


def judge_lineup(networks: Sequence[NetworkAnalysis], busy: Busy | None = None) -> tuple[StatVerdict, ...]:
    """The three claims on ``networks``; the two on time not judged where ``busy``."""
    return judge_operations(networks, busy), judge_tradeoff(networks, busy), judge_density(networks)
