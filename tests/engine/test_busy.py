"""Timings that fail their own checks (the layers' sum, p95 against p50, the load): named, never
judged and never cached."""

from __future__ import annotations

import json

from engine.studies.analysis import Analysis, BatchPoint, LayerTime, NetworkAnalysis, judge
from engine.studies.busy import judged, quiet_threads, sound, timing_problems


def net(name: str, macs: float, ms: float, top1: float | None = None, params: float = 1e6, *,
        ratio: float = 1.0) -> NetworkAnalysis:
    layers = (LayerTime("body", "Conv2d", ms * ratio, int(macs), int(params)),)
    return NetworkAnalysis(name, name.upper(), int(macs), int(params), top1, "test" if top1 else "none",
                           "bundled", ms, (BatchPoint(1, ms, ms * 1.1, 5, 1.0, 2.0),), layers)


def test_timings_that_fail_their_checks_are_named():
    assert timing_problems(1.0, 10, 12, 2.0, 2) == ()
    assert timing_problems(1.14, 10, 12, None, 2) == ()
    assert "layers sum to 0.80" in timing_problems(0.80, 10, 12, None, 2)[0]
    assert "p95 2.5\u00d7 the p50" in timing_problems(1.0, 10, 25, None, 2)[0]
    assert "load 3.8 on 2 cores" in timing_problems(1.0, 10, 12, 3.8, 2)[0]
    assert timing_problems(float("nan"), 10, 12, None, 2)  # no whole pass: not sound either
    assert timing_problems(None, 10, 12, None, 2) == ()  # another backend: no layers to sum
    assert quiet_threads(2, 0.1, 2) == 2 and quiet_threads(2, 1.0, 2) == 1 and quiet_threads(2, 3.0, 2) == 1


def _four(load: float | None, ratio: float = 1.0) -> Analysis:
    nets = tuple(net(n, m, t, a, p, ratio=ratio) for n, m, t, a, p in
                 [("lenet5", 1e6, 0.01, 0.65, 6e4), ("enet", 8e6, 0.08, 0.80, 3.6e5),
                  ("alexnet", 1.8e8, 1.8, 0.84, 5.9e6), ("vgg16", 3.1e8, 3.1, 0.85, 1.5e7)])
    fit, layer_fit, verdicts = judge(nets)
    return Analysis("cifar10", "cpu", 2, "fp32", "2", "cpu", "now", 1.0, 8, nets, fit, layer_fit, verdicts, load=load)


def test_the_four_network_analysis_is_not_judged_nor_cached_when_busy(tmp_path, monkeypatch):
    import engine.studies.analysis as analysis
    import engine.studies.busy

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path))
    monkeypatch.setattr(engine.studies.busy, "cores", lambda: 2)  # the loads below are on a 2-core machine
    quiet, broken = _four(1.0), _four(1.0, ratio=0.3)
    assert sound(quiet) and judged(quiet) == quiet
    marked = judged(broken)
    assert not sound(broken) and [v.holds for v in marked.verdicts[:2]] == [None, None]
    assert marked.verdicts[0].text.startswith("the timings of LENET5, ENET, ALEXNET, VGG16 fail their own checks "
                                              "(load 1.0 on 2 cores, within the cores)")
    assert not sound(_four(3.8))  # a load above the cores alone is enough
    busy = judged(_four(3.8)).verdicts
    assert busy[0].text.startswith("the machine was busy (load 3.8 on 2 cores)") and busy[2].holds is True
    analysis.save_cached("k", marked)
    assert not (analysis.cache_dir() / "k.json").exists()  # never kept
    analysis.save_cached("q", quiet)
    assert analysis.load_cached("q").networks == quiet.networks
    # a broken analysis written by an earlier version is never served
    (analysis.cache_dir() / "old.json").write_text(json.dumps(broken.to_dict()))
    assert analysis.load_cached("old") is None
