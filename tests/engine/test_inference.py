from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.adapter import ModelAdapter
from engine.models.preprocess import Preprocess
from engine.models.registry import get_spec
from engine.models.weights import WeightsError
from engine.runtime.session import InferenceSession, feature_layers


@pytest.fixture(scope="module")
def session():
    return InferenceSession("cifar10")


def test_lockstep_results_for_one_frame(session):
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    result = session.run(frame, frame_id=7, source="f", label=3)
    assert result.frame_id == 7 and result.label == 3
    assert list(result.results) == ["lenet5", "alexnet", "vgg16", "enet"]
    for name, r in result.results.items():
        assert r.model == name
        assert r.view.shape == (32, 32, 3) and r.view.dtype == np.uint8
        assert r.probs.shape == (10,) and r.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert list(r.top_indices) == list(np.argsort(-r.probs, kind="stable")[:5])
        assert r.top_labels[0] == get_spec(name).class_names[r.top1]
        assert r.forward_ms > 0 and r.preprocess_ms >= 0
        for array in (r.probs, r.top_probs, r.view):
            assert not array.flags.writeable  # results cross threads: nobody may change them
    enet = result.results["enet"]
    assert enet.class_map.shape == (32, 32) and enet.class_map.max() < 10
    assert result.results["vgg16"].class_map is None


def test_same_preprocessing_is_shared(session):
    result = session.run(np.zeros((64, 64, 3), np.uint8))
    views = [r.view for r in result.results.values()]
    assert all(v is views[0] for v in views)


def test_probabilities_match_a_plain_forward(session):
    frame = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    result = session.run(frame)
    spec = session.spec("vgg16")
    x = Preprocess.for_spec(spec).tensor(frame)
    with torch.inference_mode():
        expected = session.model("vgg16")(x).softmax(1)[0].numpy()
    np.testing.assert_allclose(result.results["vgg16"].probs, expected, atol=1e-5)


def test_activation_capture_returns_the_layer_output(session):
    session.set_capture({"alexnet": ["features.conv1"], "lenet5": ["features.tanh3"]})
    frame = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    r = session.run(frame).results
    conv1 = r["alexnet"].activations["features.conv1"]
    assert conv1.shape == (64, 32, 32) and conv1.dtype == np.float32
    # conv1 is followed by an in-place ReLU: the capture must hold the values before it
    assert conv1.min() < 0
    assert r["lenet5"].activations["features.tanh3"].shape == (16, 10, 10)
    assert not conv1.flags.writeable
    session.set_capture({"lenet5": ["features.c3", "features.tanh3"]})  # more than one layer
    two = session.run(frame).results["lenet5"].activations
    assert [(layer, a.shape, a.flags.writeable) for layer, a in two.items()] == \
        [("features.c3", (16, 10, 10), False), ("features.tanh3", (16, 10, 10), False)]
    np.testing.assert_allclose(np.tanh(two["features.c3"]), two["features.tanh3"], atol=1e-6)
    session.set_capture({"alexnet": []})
    assert session.run(frame).results["alexnet"].activations == {}


def test_capturing_an_unknown_layer_is_refused(session):
    with pytest.raises(KeyError, match="no layer"):
        session.set_capture({"vgg16": ["features.conv9_9"]})


def test_feature_layers_are_readable_and_shaped():
    spec = get_spec("enet")
    model = spec.build()
    layers = {layer.name: layer for layer in feature_layers(ModelAdapter(spec, model))}
    assert layers["initial"].shape == (16, 16, 16)
    assert layers["stage2.bottleneck2_4"].shape == (128, 4, 4)
    assert layers["fullconv"].shape == (10, 32, 32)
    assert not any(".conv" in name.split("bottleneck")[-1] for name in layers)  # blocks, not their insides
    vgg = {layer.name for layer in feature_layers(ModelAdapter(get_spec("vgg16"), get_spec("vgg16").build()))}
    assert {"features.conv1_1", "features.relu5_3", "features.pool5"} <= vgg


def test_imagenet_preprocessing_crops_the_centre():
    pre = Preprocess.for_spec(get_spec("vgg16", "imagenet"))
    assert pre.crop_box(480, 640) == (30, 110, 420, 420)  # 480 * 224/256 = 420
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :110] = 255  # outside the crop: must not show
    assert pre.view(frame).max() == 0 and pre.view(frame).shape == (224, 224, 3)


def test_custom_weights_that_do_not_fit_are_refused_in_one_line(tmp_path):
    """A session never runs on other weights than the ones asked for: no silent fallback."""
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 7)
    with pytest.raises(WeightsError, match=r"^bad.safetensors: corrupt or truncated") as e:
        InferenceSession("cifar10", models=["lenet5"], weights={"lenet5": str(bad)})
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match=r"--weights resnet: no such model in the cifar10 line-up \(lenet5\)"):
        InferenceSession("cifar10", models=["lenet5"], weights={"resnet": "x.pth"})


def test_cuda_request_without_cuda_runs_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert InferenceSession("cifar10", "cuda", models=["lenet5"]).device.type == "cpu"


@pytest.mark.parametrize("profile", ["cifar10", "imagenet"])
def test_probabilities_and_top_k_match_torch(profile):
    """The session's softmax and top-k agree with torch's on the network's own logits."""
    s = InferenceSession(profile, "cpu", models=["lenet5"])
    frame = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    r = s.run(frame).results["lenet5"]
    net = s._nets["lenet5"]
    with torch.inference_mode():
        x = net.preprocess.tensor(net.preprocess.view(frame), s.device)
        expected = s.model("lenet5")(x)[0].softmax(0)
    np.testing.assert_allclose(r.probs, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert list(r.top_indices) == expected.topk(5).indices.tolist()
    np.testing.assert_allclose(r.top_probs, expected.topk(5).values.numpy(), rtol=1e-6)
    assert r.top_labels == tuple(s.spec("lenet5").class_names[i] for i in r.top_indices)
    assert r.probs.dtype == np.float32 and r.top_indices.dtype == np.int64
    assert not r.probs.flags.writeable and not r.top_indices.flags.writeable and not r.top_probs.flags.writeable


@pytest.fixture
def one_torch_thread():
    """Torch on one thread, as the live engine's worker sets it on a 2-core machine."""
    if (__import__("os").cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def slower_alone(monkeypatch):
    """The load's timing, faked: every core measures twice as fast as the session's threads (each
    candidate still runs once, so hooks see it)."""
    import engine.runtime.tuner as tuner

    def timed(passes, runs):
        return {c: 10.0 if c.threads is None else 5.0 for c in passes if passes[c]() is not None}

    monkeypatch.setattr(tuner, "time_candidates", timed)


@pytest.mark.parametrize("gain, heavy", [(100.0, 0.0), (0.0, 0.0), (100.0, 1e9)])
def test_a_heavy_network_runs_on_every_core_only_where_measured_faster(one_torch_thread, monkeypatch, gain, heavy):
    """A network at least HEAVY_MS slow on the engine's threads is timed on every core too, and runs
    there when that is measured at most MANY_THREADS_GAIN of its time; the record says so, live
    frames time the two again, and torch's threads are the engine's again after every frame."""
    import os

    import engine.runtime.tuner as tuner
    monkeypatch.setattr(tuner, "HEAVY_MS", heavy)
    monkeypatch.setattr(tuner, "MANY_THREADS_GAIN", gain)
    monkeypatch.setattr(tuner, "RECHECK_RATIO", 1e9)
    monkeypatch.setattr(tuner, "PRUNE_RATIO", 1e9)
    monkeypatch.setattr(tuner, "LIVE_DELAY_S", 0.0)
    slower_alone(monkeypatch)
    s = InferenceSession("cifar10", "cpu", models=["lenet5", "alexnet"], precision="fp32", backend="torch")
    seen: list[int] = []
    s.model("alexnet").register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    record = s.decision("alexnet")
    s.run(np.zeros((32, 32, 3), np.uint8))
    assert torch.get_num_threads() == 1
    timed = heavy == 0.0
    assert {m.candidate.threads for m in record.measured} == ({None, os.cpu_count()} if timed else set())
    if gain == 100.0 and timed:
        assert record.chosen.threads == os.cpu_count() and s.threads_of("alexnet") == (os.cpu_count(), "")
        assert record.text().startswith(f"torch eager fp32, {os.cpu_count()} threads: ")
    else:
        assert record.chosen.threads is None and s.threads_of("alexnet") == (1, "")
    # timed at load: its first live frame tries the other count, whatever was chosen
    assert (s._nets["alexnet"].check is not None) == timed
    assert seen[-1] == ((1 if record.chosen.threads else os.cpu_count()) if timed else 1)
    assert (s._nets["lenet5"].check is not None) == timed  # HEAVY_MS 0: even LeNet-5 is timed


@pytest.mark.parametrize("live_gain", [100.0, 0.0])
def test_live_frames_settle_a_heavy_networks_threads(one_torch_thread, monkeypatch, live_gain):
    """The thread choice made at load is timed again on live frames, the two counts alternated in
    blocks (the runner-up first); a change needs a second check to agree; what they measure is
    kept, said, and listed once by take_rechecked."""
    import os

    import engine.runtime.tuner as tuner
    cores = os.cpu_count()
    monkeypatch.setattr(tuner, "HEAVY_MS", 0.0)
    monkeypatch.setattr(tuner, "MANY_THREADS_GAIN", 100.0)
    monkeypatch.setattr(tuner, "RECHECK_RATIO", 1e9)
    monkeypatch.setattr(tuner, "PRUNE_RATIO", 1e9)
    monkeypatch.setattr(tuner, "TRIAL_BLOCK", 2)
    monkeypatch.setattr(tuner, "TRIAL_BLOCKS", 2)
    monkeypatch.setattr(tuner, "LIVE_DELAY_S", 0.0)
    slower_alone(monkeypatch)
    s = InferenceSession("cifar10", "cpu", models=["alexnet"], precision="fp32", backend="torch")
    assert s.decision("alexnet").chosen.threads == cores  # every core at load
    monkeypatch.setattr(tuner, "MANY_THREADS_GAIN", live_gain)
    s.warm_up()  # as the engine does: its blank frames are not live frames
    seen: list[int] = []
    s.model("alexnet").register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    frame = np.zeros((32, 32, 3), np.uint8)
    checks = 1 if live_gain == 100.0 else 2  # a check that disagrees with load waits for a second
    for _ in range(8 * checks - 1):
        s.run(frame)
        assert s.take_rechecked() == []
    s.run(frame)  # the second block of the last check: settled
    assert seen == [1, 1, cores, cores] * 2 * checks and torch.get_num_threads() == 1
    assert [name for name, _ in s.take_rechecked()] == ["alexnet"] and s.take_rechecked() == []
    kept = cores if live_gain == 100.0 else 1
    assert s.threads_of("alexnet") == (kept, "") and s._nets["alexnet"].check is None
    note = s.backend_of("alexnet")[1]
    assert "(medians of 2 live frames each, in blocks of 2 alternated, on live frames)" in note
    assert note.endswith("what load chose stays") if kept == cores else note.endswith("a first check agreed")
    s.run(frame)
    assert seen[-1] == kept and s.take_rechecked() == []


def test_every_core_changes_nothing_when_the_session_already_has_them(monkeypatch):
    """The command line runs on every core already: no network is timed for more."""
    import os

    import engine.runtime.tuner as tuner
    monkeypatch.setattr(tuner, "HEAVY_MS", 0.0)
    monkeypatch.setattr(tuner, "MANY_THREADS_GAIN", 100.0)
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        s = InferenceSession("cifar10", "cpu", models=["lenet5"], backend="torch")
        assert s.decision("lenet5").chosen.threads is None and s.decision("lenet5").measured == ()
    finally:
        torch.set_num_threads(before)
