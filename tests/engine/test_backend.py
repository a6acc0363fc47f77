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

import engine.runtime.backends.ort as backend_module
import engine.runtime.onnx_graphs as graphs_module
from engine.models.adapter import ModelAdapter, without_in_place_ops
from engine.models.registry import get_spec
from engine.models.weights import load_model
from engine.runtime.backends import BackendError, check_backend
from engine.runtime.backends.ort import OrtRunner
from engine.runtime.graph import output_names
from engine.runtime.onnx_cache import OnnxCache, weights_digest
from engine.runtime.onnx_export import PReLUForExport, cut_outputs, for_export
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
    real_export = graphs_module.export_onnx
    calls = []

    def counting_export(*args, **kwargs):
        calls.append(args[1])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(graphs_module, "export_onnx", counting_export)
    again = OrtRunner(adapter, False, threads=1, full_layers=("features.c1",), cache=cache)
    assert calls == [] and again.exported == 0
    x = torch.randn(1, *adapter.spec.input_size)
    np.testing.assert_array_equal(again(x).logits, first(x).logits)
    path = cache.path(adapter, cache.key(adapter, weights_digest(adapter.model), ("features.c1",),
                                         False))
    # 1) bytes changed behind the sidecar's back: the digest does not match, so it is exported again
    path.write_bytes(path.read_bytes()[:-100] + b"\0" * 100)
    rebuilt = OrtRunner(adapter, False, threads=1, full_layers=("features.c1",), cache=cache)
    assert len(calls) == 1 and rebuilt.exported == 1
    # 2) an intact file (matching sidecar) of other weights: ONNX Runtime loads it, but its logits
    # differ from torch's, so it is not trusted either
    other = adapter_for("lenet5", seed=1)
    other_runner = OrtRunner(other, False, threads=1, full_layers=("features.c1",), cache=cache)
    other_path = cache.path(other, cache.key(other, weights_digest(other.model), ("features.c1",),
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


def test_without_the_runtimes_the_app_runs_on_torch_and_says_so_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    monkeypatch.setitem(sys.modules, "openvino", None)
    session = InferenceSession("cifar10", "cpu", models=["lenet5", "enet"], backend="auto")
    assert [session.backend_of(n)[0] for n in session.names] == ["torch", "torch"]
    assert len([m for m in session.messages if "ONNX Runtime" in m]) == 1
    assert len([m for m in session.messages if "OpenVINO" in m]) == 1
    explicit = InferenceSession("cifar10", "cpu", models=["lenet5"], backend="openvino")
    assert explicit.backend_of("lenet5")[0] == "torch" and "OpenVINO is not installed" in explicit.messages[0]
    with pytest.raises(BackendError, match="not installed"):
        OrtRunner(adapter_for("lenet5"), False, threads=1)


def test_backend_names_are_checked():
    with pytest.raises(BackendError, match="unknown backend"):
        check_backend("tensorrt", torch.device("cpu"))
    with pytest.raises(BackendError, match="CPU"):
        check_backend("onnxruntime", torch.device("cuda"))
    with pytest.raises(BackendError, match="CPU"):
        check_backend("openvino", torch.device("cuda"))
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
    for_export(model)
    swapped = [m for m in model.modules() if isinstance(m, PReLUForExport)]
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
    graph = cut_outputs(runner.graphs.full(), output_names((), True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "PRelu" not in ops and "Max" not in ops
    assert ops.count("ReorderInput") + ops.count("ReorderOutput") <= 30


def test_a_big_graph_is_cut_from_its_cached_file_and_exported_again_when_it_went(tmp_path, monkeypatch):
    """Over BIG_GRAPH, the full export is not held in memory: a new tap set is cut from the cached
    file, and from a fresh export when that file was pruned or damaged; two sessions are kept."""
    monkeypatch.setattr(graphs_module, "BIG_GRAPH", 0)
    cache = OnnxCache(tmp_path)
    adapter = adapter_for("lenet5")
    layers = ("features.c1", "features.c3", "features.c5")
    runner = OrtRunner(adapter, False, threads=1, full_layers=layers, cache=cache)
    assert runner.graphs._full is None and runner.exported == 1
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
    monkeypatch.setattr(PReLUForExport, "forward", lambda self, x: torch.relu(x))
    with pytest.raises(BackendError, match="differ from torch's"):
        OrtRunner(adapter_for("enet"), False, threads=1, cache=None)


def test_bounded_spinning_only_where_onnx_runtime_honours_it():
    assert backend_module._spin_bounded("1.32.0") and backend_module._spin_bounded("1.40.1")
    assert not backend_module._spin_bounded("1.17.3") and not backend_module._spin_bounded("1.31.0")
    assert not backend_module._spin_bounded("unknown")


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


def test_openvino_answers_as_torch_with_its_taps_and_class_map(cache):
    """OpenVINO runs the same export as ONNX Runtime, compiled at batch 1: the engine reads its
    probabilities, ranking, tapped layers and ENet's class map as it reads torch's."""
    pytest.importorskip("openvino")
    sessions = {b: InferenceSession("cifar10", "cpu", models=["enet"], backend=b, precision="fp32", onnx_cache=cache)
                for b in ("openvino", "torch")}
    layers = ["stage2.bottleneck2_1", "initial"]
    for session in sessions.values():
        session.set_capture({"enet": layers})
    assert sessions["openvino"].runner("enet").backend == "openvino"
    frame = np.random.default_rng(11).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    got, expected = (sessions[b].run(frame).results["enet"] for b in ("openvino", "torch"))
    assert got.backend == "openvino" and expected.backend == "torch"
    np.testing.assert_allclose(got.probs, expected.probs, atol=1e-4)
    assert list(got.top_indices) == list(expected.top_indices)
    for layer in layers:
        np.testing.assert_allclose(got.activations[layer], expected.activations[layer], atol=1e-3)
        assert not got.activations[layer].flags.writeable
    assert (got.class_map == expected.class_map).mean() > 0.99
    again = sessions["openvino"].run(frame).results["enet"]  # the request's buffers are reused: the first stays
    np.testing.assert_array_equal(got.probs, again.probs)
    assert got.probs is not again.probs
