"""Backends other than torch eager (engine.runtime.backends): ONNX Runtime answers as torch does,
taps and ENet's class map included; its exports are cached, checked and rebuilt; without it the
app runs on torch and says so once."""

from __future__ import annotations

import io
import json
import sys
import warnings

import numpy as np
import pytest
import torch

import engine.runtime.backends as backend_module
from engine.models.adapter import ModelAdapter, without_in_place_ops
from engine.models.registry import get_spec
from engine.models.weights import load_model
from engine.runtime.backends import BackendError, OnnxCache, OrtRunner, check_backend
from engine.runtime.session import InferenceSession, feature_layers

pytest.importorskip("onnxruntime")


def adapter_for(name: str, seed: int = 0) -> ModelAdapter:
    torch.manual_seed(seed)
    spec = get_spec(name, "cifar10")
    model = spec.build().eval()
    without_in_place_ops(model)
    return ModelAdapter(spec, model)


def bundled_runner(name: str, cache: OnnxCache) -> tuple[OrtRunner, ModelAdapter]:
    """The bundled network on ONNX Runtime as the app exports and caches it, every layer an output,
    and the network on torch."""
    spec = get_spec(name, "cifar10")
    model = load_model(spec).model.eval()
    without_in_place_ops(model)
    adapter = ModelAdapter(spec, model)
    layers = [info.name for info in feature_layers(adapter)]
    return OrtRunner(adapter, spec.has_class_map, threads=1, full_layers=layers, cache=cache), adapter


@pytest.fixture
def cache(_onnx_exports) -> OnnxCache:
    """The run's shared export folder (tests/conftest.py): the bundled networks' exports are made
    once per run, whichever test needs them first."""
    return OnnxCache(_onnx_exports)


@pytest.mark.parametrize("name, layer", [("lenet5", "features.c3"), ("enet", "stage2.bottleneck2_1")])
def test_onnx_runtime_matches_torch_on_random_inputs(name, layer, cache):
    runner, adapter = bundled_runner(name, cache)
    runner.set_taps((layer,))  # cut from the export with every layer as an output
    x = torch.randn(3, *adapter.spec.input_size)  # a batch: the exported batch axis is dynamic
    store: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), adapter.tapped([layer], store):
        expected = adapter(x)
    got = runner(x)
    np.testing.assert_allclose(got.logits, expected.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.taps[layer], store[layer].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.probs, expected.logits.softmax(1).numpy(), atol=1e-5, rtol=0)
    assert (got.top[:, 0] == expected.logits.argmax(1).numpy()).all() and got.top.shape == got.probs.shape
    if adapter.spec.has_class_map:
        confidence, pixel_class = expected.pixel_logits.softmax(1).max(1)
        np.testing.assert_allclose(got.confidence, confidence.numpy(), atol=1e-4, rtol=0)
        # the class map agrees wherever the top two classes are not a hair apart
        second = expected.pixel_logits.softmax(1).topk(2, dim=1).values
        clear = (second[:, 0] - second[:, 1] > 1e-4).numpy()
        assert (got.class_map[clear] == pixel_class.numpy().astype(np.uint8)[clear]).all()
        assert got.class_map.dtype == np.uint8
    runner.set_taps(())  # cut from the same export: no tap outputs left
    assert runner(x).taps == {}


def test_a_cache_hit_skips_the_export_and_a_damaged_file_is_rebuilt(tmp_path, monkeypatch):
    cache = OnnxCache(tmp_path)  # its own folder: this test damages files
    adapter = adapter_for("lenet5")
    first = OrtRunner(adapter, False, threads=1, full_layers=("features.c1",), cache=cache)
    files = sorted(cache.folder.glob("*-lenet5-*.onnx"))
    assert files
    real_export = backend_module.export_onnx
    calls = []

    def counting_export(*args, **kwargs):
        calls.append(args[1])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(backend_module, "export_onnx", counting_export)
    again = OrtRunner(adapter, False, threads=1, full_layers=("features.c1",), cache=cache)
    assert calls == [] and again.exported == 0
    x = torch.randn(1, *adapter.spec.input_size)
    np.testing.assert_array_equal(again(x).logits, first(x).logits)
    path = cache.path(adapter, cache.key(adapter, backend_module.weights_digest(adapter.model), ("features.c1",),
                                         False))
    # 1) bytes changed behind the sidecar's back: the digest does not match, so it is exported again
    path.write_bytes(path.read_bytes()[:-100] + b"\0" * 100)
    rebuilt = OrtRunner(adapter, False, threads=1, full_layers=("features.c1",), cache=cache)
    assert len(calls) == 1 and rebuilt.exported == 1
    # 2) an intact file (matching sidecar) of other weights: ONNX Runtime loads it, but its logits
    # differ from torch's, so it is not trusted either
    other = adapter_for("lenet5", seed=1)
    other_runner = OrtRunner(other, False, threads=1, full_layers=("features.c1",), cache=cache)
    other_path = cache.path(other, cache.key(other, backend_module.weights_digest(other.model), ("features.c1",),
                                             False))
    path.write_bytes(other_path.read_bytes())
    path.with_suffix(".json").write_text(other_path.with_suffix(".json").read_text())
    assert json.loads(path.with_suffix(".json").read_text())["bytes"] == path.stat().st_size
    del other_runner
    checked = OrtRunner(adapter, False, threads=1, full_layers=("features.c1",), cache=cache)
    assert len(calls) == 3 and checked.exported == 1  # other's export, then this one again
    np.testing.assert_allclose(checked(x).logits, first(x).logits, atol=1e-5)


def test_the_session_runs_on_onnx_runtime_and_grad_cam_on_torch(cache):
    from engine.probes import Activations, GradCam

    ort_session = InferenceSession("cifar10", "cpu", models=["lenet5"], backend="onnxruntime", onnx_cache=cache)
    torch_session = InferenceSession("cifar10", "cpu", models=["lenet5"])
    assert ort_session.backend_of("lenet5")[0] == "onnxruntime" and not ort_session.messages
    for session in (ort_session, torch_session):
        session.set_probes({"lenet5": (Activations(("features.c1",)), GradCam("features.c3"))})
    frame = np.random.default_rng(3).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    got, expected = ort_session.run(frame).results["lenet5"], torch_session.run(frame).results["lenet5"]
    assert got.backend == "onnxruntime" and expected.backend == "torch"
    np.testing.assert_allclose(got.probs, expected.probs, atol=1e-5)
    np.testing.assert_allclose(got.activations["features.c1"], expected.activations["features.c1"], atol=1e-4)
    assert not got.probs.flags.writeable and not got.activations["features.c1"].flags.writeable
    cam, cam_torch = got.probes["gradcam"], expected.probes["gradcam"]
    np.testing.assert_allclose(cam.map, cam_torch.map, atol=1e-4)  # the gradients come from torch
    assert ort_session.top1(frame) == torch_session.top1(frame)


def test_without_onnx_runtime_the_app_runs_on_torch_and_says_so_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    session = InferenceSession("cifar10", "cpu", models=["lenet5", "enet"], backend="auto")
    assert [session.backend_of(n)[0] for n in session.names] == ["torch", "torch"]
    assert len([m for m in session.messages if "ONNX Runtime" in m]) == 1
    with pytest.raises(BackendError, match="not installed"):
        OrtRunner(adapter_for("lenet5"), False, threads=1)


def test_backend_names_are_checked():
    with pytest.raises(BackendError, match="unknown backend"):
        check_backend("tensorrt", torch.device("cpu"))
    with pytest.raises(BackendError, match="CPU"):
        check_backend("onnxruntime", torch.device("cuda"))
    assert check_backend("auto", torch.device("cuda")) == "auto"


def test_eval_on_onnx_runtime_takes_a_bf16_request_as_float32(tmp_path, monkeypatch):
    """``eval --precision bf16 --backend onnxruntime``: ONNX Runtime runs the float32 export of the
    float32 weights, so the answers are torch's in fp32."""
    from engine.runtime.precision import bf16_native
    from engine.studies.evaluation import evaluate_results

    if not bf16_native(torch.device("cpu")):
        pytest.skip("no native bf16 on this CPU")
    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path))
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(6) % 10
    spec = get_spec("lenet5", "cifar10")
    ort = evaluate_results([load_model(spec)], images, labels, precision="bf16", backend="onnxruntime")[0]
    fp32 = evaluate_results([load_model(spec)], images, labels)[0]
    assert ort.backend == "onnxruntime" and ort.top1 == fp32.top1 and ort.top5 == fp32.top5


@pytest.mark.parametrize("one_ms, many_ms, expected", [(0.4, 0.6, 1), (0.6, 0.4, 2), (0.58, 0.6, 2), (30, 25, 2)])
def test_one_thread_is_kept_only_where_it_measures_clearly_faster(cache, monkeypatch, one_ms, many_ms, expected):
    """The load-time choice between one ONNX Runtime thread and every thread, on a clock that only
    the sessions' runs move: one thread where it takes at most AUTO_GAIN of the time, and a graph
    slower than THREADS_PROBE_MS on every thread is not tried on one."""
    now = [0.0]
    monkeypatch.setattr(backend_module.time, "perf_counter", lambda: now[0])

    class Timed:
        def __init__(self, ms):
            self.ms, self.runs = ms, 0

        def run(self, outputs, feed):
            self.runs += 1
            now[0] += self.ms / 1000

    made = {}

    def session(self, data, threads=None):
        made[threads] = made.get(threads) or Timed(one_ms if threads == 1 else many_ms)
        return made[threads]

    runner = OrtRunner(adapter_for("lenet5"), False, threads=2, cache=cache)
    monkeypatch.setattr(OrtRunner, "_session", session)
    runner._pick_threads(runner._full_graph())
    assert runner.threads == expected
    assert (runner.threads_note != "") == (expected == 1)
    if many_ms > backend_module.THREADS_PROBE_MS:
        assert 1 not in made  # stopped after the warm-up, before making a second session


@pytest.mark.parametrize("channels, low, high, first_form", [
    (1, -0.5, 0.5, True), (16, -0.5, 0.5, True), (16, 0.0, 0.0, True), (16, -0.5, 1.0, False),
    (16, 0.5, 1.5, False)])
def test_the_export_form_of_prelu_gives_prelus_numbers(channels, low, high, first_form):
    """PReLU is exported as x + relu((a - 1) * x) where every slope is below 1, else as
    relu(x) + (-a) * relu(-x), the slopes as depthwise convolutions (operators ONNX Runtime keeps in
    its blocked layout, unlike PRelu, Max, Mul or Clip): in torch and through ONNX Runtime, the
    first form within its rounding bound of nn.PReLU's values (+inf and zeros exact), the second
    exactly, infinities included; the parameter stays under the same name."""
    torch.manual_seed(0)
    prelu = torch.nn.PReLU(channels)
    with torch.no_grad():
        prelu.weight.uniform_(low, high)
        if high == 1.0:
            prelu.weight[0] = 1.0  # the bound itself
    model = torch.nn.Sequential(prelu).eval()
    x = torch.randn(4, 16, 9, 9) * 3
    x[0, :, 0, :3] = torch.tensor([0.0, -0.0, float("inf")])
    if not first_form:
        x[0, :, 0, 3] = float("-inf")
    with torch.no_grad():
        expected = model(x)
    slopes = prelu.weight.detach().expand(16).view(1, -1, 1, 1)
    bound = (1 + 2 * slopes.abs()) * x.abs() * 2.0 ** -23  # four roundings at worst, PReLU's own counted
    names = list(model.state_dict())
    backend_module.for_export(model)
    swapped = [m for m in model.modules() if isinstance(m, backend_module.PReLUForExport)]
    assert len(swapped) == 1 and swapped[0].below_one == first_form
    assert not any(isinstance(m, torch.nn.PReLU) for m in model.modules())
    assert list(model.state_dict()) == names

    def check(got: torch.Tensor) -> None:
        if first_form:
            finite = x.isfinite()
            assert ((got - expected).abs()[finite] <= bound[finite]).all()
            assert torch.equal(got[0, :, 0, :3].abs(), expected[0, :, 0, :3].abs())
        else:
            assert torch.equal(got, expected)

    with torch.no_grad():
        check(model(x))
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"], output_names=["y"])
    onnx = pytest.importorskip("onnx")
    ops = {node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node}
    assert "Conv" in ops and not ops & {"PRelu", "Max", "Clip"}
    if channels > 1:  # (a shared slope is expanded to the channels by shape operators)
        assert not ops & {"Mul", "Shape", "Expand"}
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    check(torch.from_numpy(session.run(None, {"x": x.numpy()})[0]))


def test_enets_export_keeps_onnx_runtime_in_its_blocked_layout(cache, tmp_path):
    """ENet's export form (PReLU as depthwise convolutions and Add, the down- and upsampling blocks'
    main branches joined by a 1x1 convolution) leaves ONNX Runtime few layout reorders: 18 in the
    bundled ENet's graph with its class map, against 194 for the export before it, whose PReLU was
    max(x, a * x) and whose blocks sliced, concatenated and scattered (a quarter of ENet's time).
    Where ONNX Runtime has no blocked kernels for the CPU there are none at all."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    runner, _ = bundled_runner("enet", cache)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    graph = backend_module.cut_outputs(runner._full_graph(), backend_module.output_names((), True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "PRelu" not in ops and "Max" not in ops
    assert ops.count("ReorderInput") + ops.count("ReorderOutput") <= 30


def test_a_big_graph_is_cut_from_its_cached_file_and_exported_again_when_it_went(tmp_path, monkeypatch):
    """Over BIG_GRAPH, the full export is not held in memory: a new tap set is cut from the cached
    file, and from a fresh export when that file was pruned or damaged; two sessions are kept."""
    monkeypatch.setattr(OrtRunner, "BIG_GRAPH", 0)
    cache = OnnxCache(tmp_path)
    adapter = adapter_for("lenet5")
    layers = ("features.c1", "features.c3", "features.c5")
    runner = OrtRunner(adapter, False, threads=1, full_layers=layers, cache=cache)
    assert runner._full is None and runner.exported == 1
    x = torch.randn(2, *adapter.spec.input_size)
    with torch.inference_mode():
        expected = adapter.logits(x).numpy()
    runner.set_taps(["features.c3"])
    assert runner.exported == 1 and list(runner(x).taps) == ["features.c3"]
    for path in tmp_path.glob("*.onnx"):
        path.write_bytes(b"gone")
    runner.set_taps(["features.c5"])
    assert runner.exported == 2 and list(runner(x).taps) == ["features.c5"]
    np.testing.assert_allclose(runner(x).logits, expected, rtol=1e-4, atol=1e-5)
    assert len(runner._sessions) == 2


def test_a_wrong_export_form_of_prelu_would_be_refused(monkeypatch):
    """The logits check compares with the network as loaded, before the PReLU swap: a swap that
    changed the numbers could not pass it."""
    monkeypatch.setattr(backend_module.PReLUForExport, "forward", lambda self, x: torch.relu(x))
    with pytest.raises(BackendError, match="differ from torch's"):
        OrtRunner(adapter_for("enet"), False, threads=1, cache=None)


def test_bounded_spinning_only_where_onnx_runtime_honours_it():
    assert backend_module._spin_bounded("1.32.0") and backend_module._spin_bounded("1.40.1")
    assert not backend_module._spin_bounded("1.17.3") and not backend_module._spin_bounded("1.31.0")
    assert not backend_module._spin_bounded("unknown")


def test_the_thread_choice_is_measured_once_per_process_and_weights(cache, monkeypatch):
    """Loading the same network again (a runtime switched back, a reload) reuses the measured
    thread count; other weights are measured for themselves."""
    monkeypatch.setattr(backend_module, "_THREADS_PICKED", {})
    calls = []

    def fake_pick(self, full, rounds=15):
        calls.append(self._digest)
        self.threads, self.threads_note = 1, "1 ONNX Runtime thread: measured"

    monkeypatch.setattr(OrtRunner, "_pick_threads", fake_pick)
    first = OrtRunner(adapter_for("lenet5"), False, threads=2, cache=cache, pick_threads=True)
    again = OrtRunner(adapter_for("lenet5"), False, threads=2, cache=cache, pick_threads=True)
    other = OrtRunner(adapter_for("lenet5", seed=1), False, threads=2, cache=cache, pick_threads=True)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert first.threads == again.threads == other.threads == 1
    assert again.threads_note == first.threads_note == "1 ONNX Runtime thread: measured"
    assert again.max_threads == 2  # batches still use every thread


def test_networks_on_one_thread_run_first_and_results_keep_the_line_up_order(cache, monkeypatch):
    """The feeder decodes the next frame while the first network runs: a one-thread graph leaves it a core."""
    monkeypatch.setattr(backend_module, "_THREADS_PICKED", {})

    def pick(self, graph):
        self.threads = 1 if self.spec.name == "enet" else self.threads

    monkeypatch.setattr(OrtRunner, "_pick_threads", pick)
    session = InferenceSession("cifar10", "cpu", models=["lenet5", "enet"], backend="onnxruntime",
                               onnx_cache=cache, ort_threads=2)
    assert session.runner("enet").threads == 1 and session.runner("lenet5").threads == 2
    assert session._run_order == ("enet", "lenet5")
    ran = []
    original = OrtRunner.outputs

    def call(self, x):
        ran.append(self.spec.name)
        return original(self, x)

    monkeypatch.setattr(OrtRunner, "outputs", call)
    result = session.run(np.zeros((32, 32, 3), np.uint8))
    assert ran == ["enet", "lenet5"] and list(result.results) == ["lenet5", "enet"]


@pytest.mark.parametrize("gains, kept, said", [
    ((100.0, 100.0), "onnxruntime", "; a first trial agreed"),
    ((0.0,), "torch", "what load chose stays"),
    ((100.0, 0.0), "torch", "what load chose stays; a first trial that found otherwise (")])
def test_autos_close_backend_choice_is_timed_again_on_live_frames(cache, monkeypatch, gains, kept, said):
    """At load the window may be drawing on the other core: where torch and ONNX Runtime measured
    close, live frames alternate the two in blocks once LIVE_DELAY_S have passed (ONNX Runtime
    first, the first frame of a block not counted) and what they measure is kept, said and listed
    once; both answer with the same taps. A trial that disagrees with load changes the backend only
    when a second trial agrees (``gains``: BACKEND_GAIN in each trial; 100 finds ONNX Runtime faster,
    0 finds the two within it of each other)."""
    import engine.runtime.trials as trials
    import engine.runtime.tuning as tuning

    monkeypatch.setattr(trials, "TRIAL_BLOCK", 2)
    monkeypatch.setattr(trials, "TRIAL_BLOCKS", 2)
    monkeypatch.setattr(tuning, "paired_medians_ms", lambda *a, **k: (4.52, 4.44))  # (torch, ORT) at load
    s = InferenceSession("cifar10", "cpu", models=["lenet5"], backend="auto", precision="fp32", onnx_cache=cache)
    assert s.backend_of("lenet5")[0] == "torch" and "4.44 ms on ONNX Runtime against 4.52" in s.backend_of("lenet5")[1]
    s.set_capture({"lenet5": ["features.c1"]})  # before the warm-up, as the engine asks
    s.warm_up()  # the engine's blank frames are not live frames
    frame = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    monkeypatch.setattr(trials, "LIVE_DELAY_S", 3600.0)
    assert [s.run(frame).results["lenet5"].backend for _ in range(3)] == ["torch"] * 3  # the window settling
    monkeypatch.setattr(trials, "LIVE_DELAY_S", 0.0)
    for trial, gain in enumerate(gains):
        monkeypatch.setattr(trials, "BACKEND_GAIN", gain)
        seen = []
        for _ in range(7):
            seen.append(s.run(frame).results["lenet5"])
            assert s.take_rechecked() == [] and s.backend_of("lenet5")[0] == "torch"  # load's choice between frames
        seen.append(s.run(frame).results["lenet5"])  # the second block of each: this trial ends
        assert [r.backend for r in seen] == ["onnxruntime", "onnxruntime", "torch", "torch"] * 2
        ort, eager = seen[0], seen[2]
        np.testing.assert_allclose(ort.probs, eager.probs, atol=1e-5)
        np.testing.assert_allclose(ort.activations["features.c1"], eager.activations["features.c1"], atol=1e-4)
        if trial < len(gains) - 1:  # it disagreed with load: nothing settled, a second trial follows
            assert s.take_rechecked() == [] and s.backend_of("lenet5")[0] == "torch"
            monkeypatch.setattr(trials, "LIVE_DELAY_S", 3600.0)  # which waits its LIVE_DELAY_S too
            assert [s.run(frame).results["lenet5"].backend for _ in range(3)] == ["torch"] * 3
            monkeypatch.setattr(trials, "LIVE_DELAY_S", 0.0)
    backend, note = s.backend_of("lenet5")
    assert backend == kept and "(medians of 2 live frames each, in blocks of 2 alternated)" in note and said in note
    assert note.endswith(" ms on torch eager) was not confirmed") == (len(gains) == 2 and kept == "torch")
    assert s.take_rechecked() == [("lenet5", note)] and s.take_rechecked() == []
    after = s.run(frame).results["lenet5"]
    assert after.backend == kept and "features.c1" in after.activations
    assert (s._nets["lenet5"].taps == []) == (kept == "onnxruntime")  # torch's hooks go with torch


def test_live_frames_change_the_loads_backend_only_where_they_clearly_disagree():
    """Within BACKEND_GAIN of each other, what load chose stays (a busy window once made a trial keep
    torch for AlexNet at 4.55 ms against 4.62, where ONNX Runtime runs it in 3.0-3.2)."""
    from types import SimpleNamespace

    from engine.runtime.trials import BACKEND_GAIN, BackendTrial

    assert BACKEND_GAIN == 0.95
    ort = SimpleNamespace(threads_note="")
    on_ort, on_torch = BackendTrial(ort, ort, None, ""), BackendTrial(ort, None, None, "")
    for trial, torch_ms, ort_ms, kept, stays in [
            (on_ort, 4.55, 4.62, ort, True),  # close: load's ONNX Runtime stays, and the note says why
            (on_ort, 4.40, 4.62, ort, True),
            (on_ort, 4.38, 4.62, None, False),  # torch 5% faster: torch
            (on_ort, 4.62, 4.30, ort, False),
            (on_torch, 4.55, 4.62, None, True),  # close: load's torch stays
            (on_torch, 4.50, 4.40, None, True),
            (on_torch, 4.62, 4.38, ort, False)]:  # ONNX Runtime 5% faster: ONNX Runtime
        runner, note = trial.choose(torch_ms, ort_ms, "live")
        assert runner is kept, (torch_ms, ort_ms)
        assert ("within 5% of each other, what load chose stays" in note) == stays
        assert note.startswith("ONNX Runtime: " if kept is ort else "torch eager: ")
        assert f"{ort_ms:.2f} ms on ONNX Runtime against {torch_ms:.2f} ms on torch eager (live)" in note
    # at load, torch eager unless ONNX Runtime is 5% faster, and a close call says so
    assert on_torch.choose(4.50, 4.40, "load", at_load=True) == (
        None, "torch eager: 4.40 ms on ONNX Runtime against 4.50 ms on torch eager (load); "
              "ONNX Runtime is not 5% faster")
    assert on_torch.choose(4.62, 4.38, "load", at_load=True)[0] is ort


def test_a_clear_backend_choice_is_not_timed_again(cache, monkeypatch):
    import engine.runtime.tuning as tuning

    monkeypatch.setattr(tuning, "paired_medians_ms", lambda *a, **k: (5.0, 0.6))  # ENet-like: 8 times apart
    s = InferenceSession("cifar10", "cpu", models=["lenet5"], backend="auto", precision="fp32", onnx_cache=cache)
    assert s.backend_of("lenet5")[0] == "onnxruntime" and s._nets["lenet5"].trial is None
    assert s.run(np.zeros((32, 32, 3), np.uint8)).results["lenet5"].backend == "onnxruntime"


def test_a_backend_trial_that_fails_ends_after_one_frame(cache, monkeypatch):
    """A side of the trial that cannot answer costs one frame, not every other frame: load's choice stays."""
    import engine.runtime.trials as trials
    import engine.runtime.tuning as tuning

    monkeypatch.setattr(tuning, "paired_medians_ms", lambda *a, **k: (4.52, 4.44))
    s = InferenceSession("cifar10", "cpu", models=["lenet5"], backend="auto", precision="fp32", onnx_cache=cache)
    s.warm_up()
    monkeypatch.setattr(trials, "LIVE_DELAY_S", 0.0)

    def broken(self, x):
        raise RuntimeError("ONNX Runtime cannot run this frame")

    monkeypatch.setattr(OrtRunner, "outputs", broken)
    frame = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(RuntimeError, match="cannot run"):
        s.run(frame)
    assert s._nets["lenet5"].trial is None
    assert [s.run(frame).results["lenet5"].backend for _ in range(3)] == ["torch"] * 3


@pytest.mark.slow  # inductor compiles each tap set: seconds
def test_torch_compile_answers_as_torch_and_the_engine_reads_its_taps_and_class_map():
    sessions = {b: InferenceSession("cifar10", "cpu", models=["enet"], backend=b, precision="fp32")
                for b in ("compile", "torch")}
    layers = ["stage2.bottleneck2_1", "initial"]
    for session in sessions.values():
        session.set_capture({"enet": layers})
        session.warm_up()
    runner = sessions["compile"].runner("enet")
    assert runner.backend == "compile" and runner.tap_index == {"stage2.bottleneck2_1": 5, "initial": 6}
    frame = np.random.default_rng(11).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    got, expected = (sessions[b].run(frame).results["enet"] for b in ("compile", "torch"))
    assert got.backend == "compile" and expected.backend == "torch"
    np.testing.assert_allclose(got.probs, expected.probs, atol=1e-5)
    assert list(got.top_indices) == list(expected.top_indices)
    for layer in layers:
        np.testing.assert_allclose(got.activations[layer], expected.activations[layer], atol=1e-4)
        assert not got.activations[layer].flags.writeable
    np.testing.assert_allclose(got.class_map_confidence, expected.class_map_confidence, atol=1e-4)
    assert (got.class_map == expected.class_map).mean() > 0.99 and got.class_map.dtype == np.uint8
