"""The survey's claims on a line-up: bootstrap intervals, the weak-verdict rule, timings that fail
their own checks (never judged, never cached), the per-network cache and the report."""

from __future__ import annotations

import dataclasses
import json

import pytest

from engine.studies.analysis import BatchPoint, LayerTime, NetworkAnalysis
from engine.studies.busy import Busy, busy_of
from engine.studies.lineup import Published
from engine.studies.verdict_stats import bootstrap, fit_hyperbola, judge_lineup, judge_operations


def net(name: str, macs: float, ms: float, top1: float | None = None, params: float = 1e6, *,
        p95: float | None = None, ratio: float = 1.0) -> NetworkAnalysis:
    layers = (LayerTime("body", "Conv2d", ms * ratio, int(macs), int(params)),)
    return NetworkAnalysis(name, name.upper(), int(macs), int(params), top1, "published" if top1 else "none",
                           "untrained", ms, (BatchPoint(1, ms, p95 if p95 is not None else ms * 1.1, 5, 1.0, 2.0),),
                           layers)


def proportional(n: int) -> list[NetworkAnalysis]:
    """Time exactly proportional to operations; accuracy on a hyperbola of time."""
    return [net(f"n{i}", 1e9 * (i + 1), 10.0 * (i + 1), (80 - 100 / (10.0 * (i + 1))) / 100) for i in range(n)]


def test_bootstrap_interval_is_over_networks_and_repeatable():
    nets = proportional(8)
    ops = judge_operations(nets)
    assert ops.holds is True and ops.value == pytest.approx(1.0) and ops.n == 8 and not ops.weak
    assert ops.low == pytest.approx(1.0) and ops.high == pytest.approx(1.0)  # every resample on the line
    # scatter around the line: the interval widens and still holds the statistic; the seed fixes it
    noisy = [dataclasses.replace(n, batches=(dataclasses.replace(n.batches[0], ms_per_image_p50=ms),))
             for n, ms in zip(nets, (14, 12, 41, 33, 40, 80, 62, 95))]
    first, again = judge_operations(noisy), judge_operations(noisy)
    assert first.low < first.value < first.high <= 1.0 and (first.low, first.high) == (again.low, again.high)
    assert "bootstrap interval over networks" in first.text and f"{first.low:.2f} to {first.high:.2f}" in first.text
    # too few distinct networks for any line: no interval, never a made-up one
    assert bootstrap([1.0], lambda s: None) == (None, None)


def test_a_verdict_on_fewer_than_six_networks_says_it_is_weak():
    five, six = judge_lineup(proportional(5)), judge_lineup(proportional(6))
    assert all(v.weak and "Weak: it stands on 5 networks" in v.text for v in five[:2])
    assert not any(v.weak for v in six[:2]) and "Weak" not in six[0].text
    assert [v.n for v in six[:2]] == [6, 6]


def test_the_hyperbola_is_fitted_on_the_front():
    nets = proportional(7) + [net("slow", 5e9, 90.0, 0.5)]  # slower and worse than others: off the front
    tradeoff = judge_lineup(nets)[1]
    assert tradeoff.holds is True and tradeoff.value == pytest.approx(1.0) and "SLOW" not in tradeoff.text.split(":")[1]
    fit = fit_hyperbola([10, 20, 40], [70, 75, 77.5])
    assert fit.a == pytest.approx(80) and fit.k == pytest.approx(100)
    # accuracy that rises faster the slower the network: no diminishing returns, not a hyperbola
    convex = [net(f"c{i}", 1e9, t, acc / 100) for i, (t, acc) in enumerate([(1, 50), (2, 51), (4, 54), (8, 70)])]
    assert judge_lineup(convex)[1].holds is False


def test_enet_density_rank_with_its_interval():
    nets = [net("enet", 3e8, 5, 0.6, 3.6e5)] + [net(f"o{i}", 1e9, 10, 0.7, 5e6 * (i + 1)) for i in range(6)]
    density = judge_lineup(nets)[2]
    assert density.holds is True and density.value == 1 and (density.low, density.high) == (1, 1)
    bigger = nets + [net("tiny", 1e8, 1, 0.5, 1e5)]
    density = judge_lineup(bigger)[2]
    assert density.holds is False and density.value == 2 and density.low >= 1 and density.high <= 2
    unpublished = [dataclasses.replace(nets[0], top1=None)] + nets[1:]
    assert judge_lineup(unpublished)[2].holds is None and "no top-1 is published for ENet" in judge_lineup(
        unpublished)[2].text


def test_a_busy_machine_gives_no_verdict_on_time():
    nets = proportional(8)
    nets[2] = dataclasses.replace(nets[2], layers=(dataclasses.replace(nets[2].layers[0], ms=2.4),))  # 0.08
    assert busy_of(nets, None, 2) == Busy(("N2",), None, 2)
    assert busy_of(nets, 3.8, 2).networks == tuple(n.label for n in nets)  # a load above the cores: all
    busy = Busy(("N2",), 3.8, 2)
    ops, tradeoff, density = judge_lineup(nets, busy)
    for v in (ops, tradeoff):
        assert v.holds is None and v.busy and v.value is None and v.low is None
        assert v.text.startswith("the machine was busy (load 3.8 on 2 cores)") and "N2" in v.text
    assert density.busy is False  # accuracy per parameter does not depend on time


def _entry(name: str, problems=(), group="paper"):
    from engine.studies.lineup_analysis import LineupNetwork

    n = net(name, 1e9, 10.0, 0.7) if not problems else net(name, 1e9, 10.0, 0.7, ratio=0.3)
    return LineupNetwork(n, group, 2015, Published("X_Weights.V1", 0.7, 0.9, 1.0, 1000000), 1, 1.0,
                         tuple(problems), 3.0)


def test_each_network_is_cached_alone_and_a_broken_one_never(tmp_path, monkeypatch):
    import engine.studies.lineup_analysis as la

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path))
    good, bad = _entry("resnet18"), _entry("resnet34", ("layers sum to 0.30 of the whole pass",))
    la.save_network("a", good)
    la.save_network("b", bad)
    assert la.load_network("a", "resnet18") == dataclasses.replace(good, cached=True)
    assert la.load_network("b", "resnet34") is None and not la._cache_path("b").exists()
    assert la.load_network("a", "resnet50") is None  # another network's file
    la._cache_path("c").write_text("{not json")
    assert la.load_network("c", "resnet18") is None
    # a broken timing someone wrote by hand is refused on reading too
    la._cache_path("d").write_text(json.dumps(dataclasses.asdict(dataclasses.replace(bad, problems=()))))
    assert la.load_network("d", "resnet34") is None


def _lineup(entries):
    from engine.studies.lineup_analysis import LineupAnalysis

    nets = tuple(e.network for e in entries)
    busy = busy_of(nets, None, 2)
    return LineupAnalysis("paper", "cpu", 1, "fp32", "2", "0.2", "cpu", 2, "now", 1.0, 4, 5, tuple(entries),
                          judge_lineup(nets, busy))


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_lineup_round_trips_and_reports_six_figures(tmp_path):
    from engine.studies.lineup_analysis import LineupAnalysis
    from engine.studies.lineup_report import FIGURES, write_lineup_report

    entries = [_entry("enet", group="four")] + [
        dataclasses.replace(_entry(f"n{i}"), network=n) for i, n in enumerate(proportional(7))]
    entries[1] = dataclasses.replace(entries[1], network=dataclasses.replace(entries[1].network,
                                                                             label="<b>Net</b>"))
    r = _lineup(entries)
    back = LineupAnalysis.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and r.to_dict()["verdicts"][0]["interval"].startswith("95% interval")
    written = write_lineup_report(r, tmp_path / "out")
    assert {p.name for p in written} >= {f"{k}.png" for k in FIGURES} | {"report.html", "analysis.json"}
    assert len(FIGURES) == 6
    page = (tmp_path / "out" / "report.html").read_text()
    assert "&lt;b&gt;Net&lt;/b&gt;" in page and "<b>Net</b>" not in page  # escaped
    assert page.count("data:image/png;base64,") == 6 and "8 networks" in page


def test_analyze_lineup_needs_the_imagenet_profile(capsys):
    from main import main

    assert main(["analyze", "--lineup", "paper"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --lineup paper") and err.count("\n") == 1


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_info_lists_the_paper_lineup_with_published_figures(capsys):
    from main import main

    assert main(["info", "--lineup", "paper", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    nets = {n["name"]: n for n in out["networks"]}
    assert len(nets) == 12 and {"googlenet", "inception_v3", "resnet152", "vgg19"} <= set(nets)
    assert nets["enet"]["published_top1"] is None and nets["resnet50"]["published_top1"] == pytest.approx(0.7613)
    assert nets["resnet50"]["macs"] == pytest.approx(nets["resnet50"]["published_gops"] * 1e9, rel=0.01)
    assert nets["inception_v3"]["input_size"] == [3, 299, 299]
    assert "Inception-v4" in out["not_measured"]


@pytest.mark.slow  # measures real ImageNet networks
def test_a_lineup_is_measured_once_then_read_from_its_cache(tmp_path, monkeypatch):
    from engine.studies import lineup, lineup_analysis

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path))
    monkeypatch.setattr(lineup, "MODERN", lineup.MODERN[2:3])  # ShuffleNetV2: small
    monkeypatch.setattr(lineup_analysis, "QUIET_WAIT_S", 1.0)
    lines = []
    first = lineup_analysis.run_lineup("modern", quick=True, on_line=lines.append)
    assert [e.network.name for e in first.entries] == ["lenet5", "alexnet", "vgg16", "enet", "shufflenet_v2_x1_0"]
    assert all(e.network.latency_ms > 0 and e.network.batches[0].peak_mb is not None for e in first.entries)
    assert sum(line.startswith("[") and "left" in line for line in lines) == 5
    sound_ones = {e.network.name for e in first.entries if not e.problems}
    monkeypatch.setattr(lineup, "MODERN", lineup.MODERN + (lineup.Entry(
        "mobilenet_v3_small", "MobileNetV3-S", 2019, "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "modern"),))
    lineup_analysis.lineup_cost.cache_clear()
    second = lineup_analysis.run_lineup("modern", quick=True)
    assert {e.network.name for e in second.entries if e.cached} == sound_ones  # only the rest measured


def test_the_four_network_analysis_says_its_verdicts_are_weak(tmp_path, monkeypatch, capsys):
    import engine.studies.analysis as analysis
    from engine.studies.analysis import Analysis, judge
    from main import main

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path))
    nets = tuple(dataclasses.replace(n, name=name) for n, name in zip(proportional(4),
                                                                      ("lenet5", "alexnet", "vgg16", "enet")))
    made_up = Analysis("cifar10", "cpu", 2, "fp32", "2", "cpu", "now", 1.0, 64, nets, *judge(nets))
    analysis.save_cached(analysis.cache_key("cifar10", "cpu", "fp32", 64), made_up)  # read back, not measured
    assert main(["analyze"]) == 0
    out = capsys.readouterr().out
    assert "operations: R\u00b2 of batch-1 latency against MACs = 1.00; 95% interval 1.00 to 1.00 over networks; " \
           "4 networks (weak: fewer than 6" in out
    assert main(["analyze", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["statistics"]
    assert [(s["claim"], s["n"], s["weak"]) for s in stats][:2] == [("operations", 4, True), ("tradeoff", 4, True)]
