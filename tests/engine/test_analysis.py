"""The Analysis: per-layer times that add up, and verdicts that follow the numbers."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine.models.registry import comparison_specs
from engine.studies.analysis import (
    Analysis,
    BackendView,
    BatchPoint,
    LayerTime,
    NetworkAnalysis,
    batch_sizes,
    judge,
    layer_times,
    pareto_front,
)
from tests.waiting import wait_until


def net(name: str, label: str, macs: float, ms: float, top1: float | None, params: float,
        layers: tuple[LayerTime, ...] = ()) -> NetworkAnalysis:
    return NetworkAnalysis(name, label, int(macs), int(params), top1, "test" if top1 is not None else "none",
                           "bundled", ms, (BatchPoint(1, ms, ms * 1.1, 20, 1.0, 2.0),), layers)


def test_verdicts_follow_made_up_measurements():
    # time exactly proportional to operations; accuracy gains that cost ever more time; ENet densest
    proportional = (net("lenet5", "LeNet-5", 1e6, 0.01, 0.65, 6e4), net("enet", "ENet", 8e6, 0.08, 0.80, 3.6e5),
                    net("alexnet", "AlexNet", 1.8e8, 1.8, 0.84, 5.9e6), net("vgg16", "VGG-16", 3.1e8, 3.1, 0.85, 1.5e7))
    fit, _layers, verdicts = judge(proportional)
    ops, tradeoff, density = verdicts
    assert fit.r2 == pytest.approx(1.0) and ops.holds is True and "predict time" in ops.text
    assert tradeoff.holds is True and "LeNet-5 \u2192 ENet" in tradeoff.text
    assert density.holds is True and "ENet uses its parameters best" in density.text
    assert "LeNet-5, which the survey did not include" in density.text  # denser still, and said so
    # ENet as slow as AlexNet with 24 times fewer operations: operations do not predict time
    slow_enet = tuple(n if n.name != "enet" else net("enet", "ENet", 8e6, 4.0, 0.80, 3.6e5) for n in proportional)
    ops = judge(slow_enet)[2][0]
    assert ops.holds is False and "do not predict" in ops.text
    assert "ENet spends 50\u00d7 more time per MAC than LeNet-5" in ops.text
    # a network that is both slower and less accurate than another is off the front, and a cheap
    # last step (more accuracy for less extra time per point) breaks the hyperbola
    flat = (net("a", "A", 1e6, 1.0, 0.50, 1e6), net("b", "B", 2e6, 3.0, 0.60, 1e6),
            net("c", "C", 3e6, 3.5, 0.90, 1e6), net("d", "D", 4e6, 5.0, 0.55, 1e6))
    assert [n.name for n in pareto_front(flat)] == ["a", "b", "c"]
    tradeoff = judge(flat)[2][1]
    assert tradeoff.holds is False and "Off the front" in tradeoff.text and "D" in tradeoff.text
    # without ENet's accuracy (imagenet: no weights), the density claim is not judged
    untrained = tuple(n if n.name != "enet" else net("enet", "ENet", 8e6, 0.08, None, 3.6e5) for n in proportional)
    assert judge(untrained)[2][2].holds is None
    assert judge(proportional[:2])[2][0].holds is None  # two networks: too few to judge


def test_analysis_round_trips_through_json():
    layers = (LayerTime("features.c1", "Conv2d", 0.1, 1000, 10),)
    networks = (net("lenet5", "LeNet-5", 1e6, 0.3, 0.66, 6e4, layers), net("enet", "ENet", 8e6, 3.0, 0.8, 3.6e5),
                net("vgg16", "VGG-16", 3e8, 9.0, 0.84, 1.5e7))
    fit, layer_fit, verdicts = judge(networks)
    a = Analysis("cifar10", "cpu", 2, "fp32", "2", "cpu", "now", 1.0, 8, networks, fit, layer_fit, verdicts)
    back = Analysis.from_dict(json.loads(json.dumps(a.to_dict())))
    assert back == a
    assert a.to_dict()["networks"][0]["layers_ratio"] == pytest.approx(0.1 / 0.3)
    # another backend's view: its own networks, fit and verdicts survive the trip too
    faster = tuple(dataclasses.replace(n, forward_ms=n.forward_ms / 3, layers=(),
                                       batches=(BatchPoint(1, n.latency_ms / 3, n.latency_ms / 2, 20, 1.0, 2.0),))
                   for n in networks)
    view_fit, _, view_verdicts = judge(faster)
    with_view = dataclasses.replace(a, backends=(BackendView("onnxruntime", faster, view_fit, view_verdicts,
                                                             ("x: left out",)),))
    back = Analysis.from_dict(json.loads(json.dumps(with_view.to_dict())))
    assert back == with_view and back.backends[0].networks[1].latency_ms == pytest.approx(1.0)


def test_batch_sizes_double_up_to_the_largest():
    assert batch_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]
    with pytest.raises(ValueError):
        batch_sizes(0)


def _layer_times(spec, quick: bool):
    model = spec.build().eval().to(memory_format=torch.channels_last)
    x = torch.randn((1, *spec.input_size)).contiguous(memory_format=torch.channels_last)
    layers, whole = layer_times(spec, model, x, torch.device("cpu"), quick=quick)
    assert len(layers) >= 8 and all(layer.ms > 0 for layer in layers)
    assert sum(layer.macs for layer in layers) > 0
    return sum(layer.ms for layer in layers), whole


@pytest.mark.parametrize("spec", comparison_specs("cifar10"), ids=lambda s: s.name)
def test_every_layer_is_timed_and_counted(spec):
    total, whole = _layer_times(spec, quick=True)
    assert total > 0 and whole > 0


@pytest.mark.slow  # timed: a shared machine moves a quick measurement of LeNet-5's 0.3 ms by half
@pytest.mark.parametrize("spec", comparison_specs("cifar10"), ids=lambda s: s.name)
def test_layer_times_add_up_to_the_whole_forward_pass(spec):
    """Each layer timed alone on its recorded input: the sum is the whole pass within a third (enough
    to catch a layer counted twice or missed)."""
    total, whole = _layer_times(spec, quick=False)
    assert total == pytest.approx(whole, rel=0.33), f"layers {total:.3f} ms, whole pass {whole:.3f} ms"


@pytest.mark.slow  # a whole measurement
def test_the_engine_measures_as_a_job_then_answers_from_its_cache(tmp_path, monkeypatch):
    from engine.api import AnalysisJob, Engine, JobEnded, JobOutcome, JobProgress, ReportJob, cached_analysis

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path))
    events = []
    engine = Engine("cifar10", models=["lenet5"], on_event=events.append).start()
    try:
        assert engine.start_job(AnalysisJob(max_batch=2, fresh=True))  # batches 1 and 2: the doubling
        ended = _wait_for(events, lambda e: isinstance(e, JobEnded) and isinstance(e.job, AnalysisJob))
        assert ended.outcome == JobOutcome.DONE, ended.text
        result = ended.result
        assert [n.name for n in result.networks] == ["lenet5"] and not result.cached
        assert [p.batch for p in result.networks[0].batches] == [1, 2]
        assert result.networks[0].layers and result.networks[0].top1 is not None
        steps = [e for e in events if isinstance(e, JobProgress) and e.job == "analyze"]
        assert steps and steps[-1].done == steps[-1].total == 3 and steps[-1].unit == "steps"
        events.clear()
        assert cached_analysis(engine.job_context(), max_batch=2) == dataclasses.replace(result, cached=True)
        assert engine.start_job(AnalysisJob(max_batch=2))  # not fresh: the cache answers at once
        again = _wait_for(events, lambda e: isinstance(e, JobEnded) and isinstance(e.job, AnalysisJob)).result
        assert again.cached and again.networks == result.networks
        assert not any(isinstance(e, JobProgress) for e in events)
        # the report: figures, data and one self-contained page, never over a user's files
        out = tmp_path / "report"
        assert engine.start_job(ReportJob(result, str(out)))
        done = _wait_for(events, lambda e: isinstance(e, JobEnded) and isinstance(e.job, ReportJob))
        assert done.outcome == JobOutcome.DONE and done.result == str(out / "report.html")
        page = (out / "report.html").read_text()
        assert "data:image/png;base64," in page and result.verdicts[0].text[:40] in page
        assert {p.name for p in out.iterdir()} >= {"a_accuracy_vs_macs.png", "g_layers_lenet5.png",
                                                    "networks.csv", "analysis.json"}
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "notes.txt").write_text("keep")
        assert engine.start_job(ReportJob(result, str(mine)))
        refused = _wait_for(events, lambda e: isinstance(e, JobEnded) and isinstance(e.job, ReportJob)
                            and e is not done)
        assert refused.outcome == JobOutcome.FAILED and "other files" in refused.text
        assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    finally:
        engine.stop(2.0)


def _wait_for(events, predicate, timeout: float = 60.0):
    assert wait_until(lambda: any(predicate(e) for e in list(events)), timeout), \
        f"no such event within {timeout} s: {events[-5:]}"
    return [e for e in list(events) if predicate(e)][-1]


def test_a_new_export_form_measures_onnx_runtime_again(monkeypatch):
    """The analysis cache's key changes with the ONNX export's format where other backends were
    measured (ENet's export form made ONNX Runtime 15% faster), and only there."""
    import engine.studies.analysis as analysis

    def keys() -> tuple[str, str]:
        return (analysis.cache_key("cifar10", "cpu", "fp32", 256, ["lenet5"]),
                analysis.cache_key("cifar10", "cpu", "fp32", 256, ["lenet5"], ("torch", "onnxruntime")))

    torch_only, with_ort = keys()
    monkeypatch.setattr(analysis, "EXPORT_FORMAT", analysis.EXPORT_FORMAT + 1)
    assert keys()[0] == torch_only and keys()[1] != with_ort


def test_analyze_refuses_a_folder_with_other_files_before_measuring(tmp_path, capsys):
    from main import main

    (tmp_path / "thesis.tex").write_text("mine")
    assert main(["analyze", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "other files" in err and err.count("\n") == 1
