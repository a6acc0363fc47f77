"""The survey's three claims judged from measurements alone (pure functions, so made-up
measurements test them): operations against time, the accuracy-time front, accuracy per parameter."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from engine.studies.analysis_results import PREDICTS_R2, Fit, NetworkAnalysis, Verdict


def fit_line(xs: Iterable[float], ys: Iterable[float]) -> Fit | None:
    """Least-squares line and R² (1 - residual / total variance); None for fewer than 2 points or
    no spread in x."""
    x, y = np.asarray(list(xs), float), np.asarray(list(ys), float)
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    total = float(((y - y.mean()) ** 2).sum())
    residual = float(((y - (slope * x + intercept)) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return Fit(float(slope), float(intercept), r2, len(x))


def pareto_front(networks: Iterable[NetworkAnalysis]) -> list[NetworkAnalysis]:
    """The networks with an accuracy that no other beats while also being faster, fastest first."""
    scored = sorted((n for n in networks if n.top1 is not None), key=lambda n: (n.latency_ms, -n.top1))
    front: list[NetworkAnalysis] = []
    for n in scored:
        if not front or n.top1 > front[-1].top1:
            front.append(n)
    return front


def judge(networks: tuple[NetworkAnalysis, ...]) -> tuple[Fit | None, Fit | None, tuple[Verdict, ...]]:
    """(networks' fit, layers' fit, one verdict per claim) from the measurements alone."""
    nets = [n for n in networks if n.macs > 0 and n.latency_ms > 0]
    network_fit = fit_line([n.macs for n in nets], [n.latency_ms for n in nets])
    layers = [layer for n in networks for layer in n.layers if layer.macs > 0]
    layer_fit = fit_line([layer.macs for layer in layers], [layer.ms for layer in layers])
    return network_fit, layer_fit, (_operations(nets, network_fit, layer_fit), _tradeoff(networks),
                                    _density(networks))


def _times(x: float) -> str:
    return f"{x:.0f}\u00d7" if x >= 10 else f"{x:.1f}\u00d7"


def _operations(nets: list[NetworkAnalysis], fit: Fit | None, layer_fit: Fit | None) -> Verdict:
    if fit is None or len(nets) < 3:
        return Verdict("operations", None, f"Operations against time cannot be judged from {len(nets)} "
                                           "network(s) with a measured time: at least 3 are needed.")
    # Time per MAC, against the network that does the most work per millisecond
    per_mac = {n.name: n.latency_ms / n.macs for n in nets}
    best = min(nets, key=lambda n: per_mac[n.name])
    worst = max(nets, key=lambda n: per_mac[n.name])
    holds = fit.r2 >= PREDICTS_R2
    r2 = f"{fit.r2:.3f}" if abs(fit.r2 - PREDICTS_R2) < 0.01 else f"{fit.r2:.2f}"  # never "0.80 < 0.8"
    text = (f"Operations {'predict' if holds else 'do not predict'} time on this machine: R\u00b2 = {r2} "
            f"over {fit.n} networks (batch-1 latency against MACs; the claim is taken to hold from "
            f"R\u00b2 {PREDICTS_R2}).")
    if worst is not best:
        text += (f" {worst.label} spends {_times(per_mac[worst.name] / per_mac[best.name])} more time per MAC "
                 f"than {best.label} ({worst.latency_ms:.2f} ms for {worst.macs / 1e6:.1f} M MACs, against "
                 f"{best.latency_ms:.2f} ms for {best.macs / 1e6:.1f} M).")
    if layer_fit is not None:
        text += f" Per layer, over {layer_fit.n} layers: R\u00b2 = {layer_fit.r2:.2f}."
    return Verdict("operations", holds, text)


def _tradeoff(networks: tuple[NetworkAnalysis, ...]) -> Verdict:
    scored = [n for n in networks if n.top1 is not None]
    front = pareto_front(scored)
    if len(front) < 3:
        missing = [n.label for n in networks if n.top1 is None]
        why = f" ({', '.join(missing)}: no accuracy here)" if missing else ""
        beaten = [f"{n.label} ({100 * n.top1:.1f}% in {n.latency_ms:.2f} ms)" for n in scored if n not in front]
        on_front = ", ".join(f"{n.label} ({100 * n.top1:.1f}% in {n.latency_ms:.2f} ms)" for n in front)
        text = (f"The accuracy-time trade-off cannot be judged: it needs 3 networks on the front of best accuracy "
                f"for their time, and there are {len(front)}{why}: {on_front}.")
        if beaten:
            text += f" Another network is both faster and more accurate than {', '.join(beaten)}."
        return Verdict("tradeoff", None, text)
    steps = []  # (from, to, extra ms per extra point of top-1, time ratio, points)
    for a, b in zip(front, front[1:]):
        points = 100 * (b.top1 - a.top1)
        steps.append((a, b, (b.latency_ms - a.latency_ms) / points, b.latency_ms / a.latency_ms, points))
    costs = [s[2] for s in steps]
    holds = all(later > earlier for earlier, later in zip(costs, costs[1:]))
    parts = "; ".join(f"{a.label} \u2192 {b.label}: +{pts:.1f} points for {_times(ratio)} the time "
                      f"({cost:.2f} ms a point)" for a, b, cost, ratio, pts in steps)
    dominated = [n.label for n in scored if n not in front]
    text = (f"Accuracy against time{' is' if holds else ' is not'} hyperbolic here: along the front of best "
            f"accuracy for the time, {parts}. Each further point of top-1 costs "
            f"{'more' if holds else 'not always more'} time than the one before.")
    if dominated:
        text += f" Off the front (another network is both faster and more accurate): {', '.join(dominated)}."
    close = [f"{a.label} and {b.label} ({a.latency_ms:.2f} and {b.latency_ms:.2f} ms)"
             for a, b, _cost, ratio, _pts in steps if ratio < 1.15]
    if close:
        text += (f" Careful: {'; '.join(close)} take about the same time, so this verdict rests on a difference "
                 "a busier moment could reverse.")
    return Verdict("tradeoff", holds, text)


SURVEYED = ("alexnet", "vgg", "enet")  # the families the survey compared (LeNet-5 was not among them)


def _density(networks: tuple[NetworkAnalysis, ...]) -> Verdict:
    enet = next((n for n in networks if n.name == "enet"), None)
    scored = [n for n in networks if n.density is not None]
    if enet is None or enet.density is None:
        return Verdict("density", None, "Accuracy per parameter cannot be checked for ENet here: "
                                        "it has no accuracy in this profile (no trained weights).")
    surveyed = [n for n in scored if n is not enet and n.name.startswith(SURVEYED)]
    others = [n for n in scored if n is not enet and n not in surveyed]
    if not surveyed:
        return Verdict("density", None, "Accuracy per parameter: none of the survey's other networks "
                                        "(AlexNet, VGG) has an accuracy here to compare ENet with.")
    holds = all(enet.density > n.density for n in surveyed)
    ratios = ", ".join(f"{_times(enet.density / n.density)} {n.label}" for n in surveyed)
    text = (f"Accuracy per parameter: ENet {enet.density:.0f} top-1 points per million parameters, {ratios} "
            f"(the survey: 13\u00d7 AlexNet, 24\u00d7 VGG-19). ")
    best = max(surveyed + [enet], key=lambda n: n.density)
    text += ("Among the survey's networks ENet uses its parameters best here: the claim holds." if holds else
             f"Among the survey's networks {best.label} uses its parameters best here: the claim does not hold.")
    for n in others:
        text += f" {n.label}, which the survey did not include, reaches {n.density:.0f} points per million"
        text += (f", {_times(n.density / enet.density)} ENet's, with {100 * n.top1:.1f}% top-1."
                 if n.density > enet.density else ".")
    return Verdict("density", holds, text)


# -- measuring -------------------------------------------------------------------------------------
