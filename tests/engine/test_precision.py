"""bf16 inference: converted once, float32 results, refused where the hardware cannot run it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.registry import get_spec
from engine.models.weights import load_model
from engine.runtime.precision import PrecisionError, bf16_native, check_precision
from engine.runtime.session import InferenceSession
from engine.studies.evaluation import evaluate_results

needs_bf16 = pytest.mark.skipif(not bf16_native(torch.device("cpu")), reason="this CPU has no native bf16")


@needs_bf16
def test_bf16_session_returns_float32_results_close_to_fp32():
    frame = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    models = ["alexnet", "enet"]
    fp32 = InferenceSession("cifar10", models=models, precision="fp32")
    bf16 = InferenceSession("cifar10", models=models, precision="bf16")
    for s in (fp32, bf16):
        s.set_capture({"alexnet": ["features.conv1", "features.conv2"], "enet": ["initial"]})
    a, b = fp32.run(frame).results, bf16.run(frame).results
    for name in models:
        assert bf16.precision_of(name)[0] == "bf16" and bf16.dtype(name) == torch.bfloat16
        assert next(bf16.model(name).parameters()).dtype == torch.bfloat16
        r = b[name]
        assert r.probs.dtype == np.float32 and not r.probs.flags.writeable
        assert r.probs.sum() == pytest.approx(1.0, abs=1e-3)
        np.testing.assert_allclose(r.probs, a[name].probs, atol=0.03)  # bf16 keeps 8 bits of mantissa
        for layer, act in r.activations.items():
            assert act.dtype == np.float32 and act.shape == a[name].activations[layer].shape
    assert b["enet"].class_map_confidence.dtype == np.float32


def test_auto_says_what_it_chose_and_why():
    s = InferenceSession("cifar10", models=["lenet5"], precision="auto")
    chosen, note = s.precision_of("lenet5")
    record = s.decision("lenet5")
    assert chosen == record.chosen.precision and chosen in ("fp32", "bf16")
    if bf16_native(torch.device("cpu")):  # both were timed, and the record says so
        assert {m.candidate.precision for m in record.measured} == {"fp32", "bf16"}
        assert s.backend_of("lenet5")[1] == record.text() and "medians of 7" in record.text()
    else:
        assert note == "fp32: no native bf16 here" and record.measured == ()
    assert s.dtype("lenet5") == (torch.bfloat16 if chosen == "bf16" else torch.float32)
    assert next(s.model("lenet5").parameters()).dtype == s.dtype("lenet5")


def test_bf16_without_native_support_is_refused_and_auto_stays_fp32(monkeypatch):
    monkeypatch.setattr("engine.runtime.backends.torch_eager.bf16_native", lambda device: False)
    monkeypatch.setattr("engine.runtime.session.bf16_native", lambda device: False)
    monkeypatch.setattr("engine.runtime.precision.bf16_native", lambda device: False)
    with pytest.raises(PrecisionError, match="no native bf16"):
        check_precision("bf16", torch.device("cpu"))
    with pytest.raises(PrecisionError, match="unknown precision"):
        check_precision("fp8", torch.device("cpu"))
    s = InferenceSession("cifar10", models=["lenet5"], precision="auto")
    assert s.precision_of("lenet5") == ("fp32", "fp32: no native bf16 here")


@needs_bf16
def test_eval_in_bf16_leaves_the_callers_network_in_fp32():
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(16) % 10
    loaded = load_model(get_spec("lenet5"))
    fp32, = evaluate_results([loaded], images, labels)
    bf16, = evaluate_results([loaded], images, labels, precision="bf16")
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert abs(bf16.top1 - fp32.top1) <= 2 / 16  # two near-ties may flip
