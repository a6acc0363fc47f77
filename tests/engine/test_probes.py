from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from engine.models.adapter import ModelAdapter
from engine.models.preprocess import Preprocess
from engine.models.registry import get_spec
from engine.probes import RUNNERS, Activations, register, run_probe
from engine.probes.base import ProbeContext, read_only
from engine.runtime.session import InferenceSession


@pytest.fixture(scope="module")
def session():
    return InferenceSession("cifar10", models=["lenet5", "enet"])


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_activations_probe_on_a_batch_matches_the_live_session(session):
    frames = [_frame(s) for s in range(3)]
    pre = Preprocess.for_spec(session.spec("lenet5"))
    batch = torch.cat([pre.tensor(f) for f in frames])
    adapter = session.adapter("lenet5")
    maps = run_probe(Activations(("features.c1", "features.tanh3")), adapter, batch)
    assert {layer: a.shape for layer, a in maps.items()} == \
        {"features.c1": (3, 6, 28, 28), "features.tanh3": (3, 16, 10, 10)}
    assert not any(a.flags.writeable for a in maps.values())

    session.set_capture({"lenet5": ["features.tanh3"]})
    for i, frame in enumerate(frames):
        live = session.run(frame).results["lenet5"].activations["features.tanh3"]
        np.testing.assert_allclose(live, maps["features.tanh3"][i], atol=1e-5)


def test_taps_leave_no_hook_and_come_off_cleanly(session):
    module = session.adapter("enet").layer("initial")
    session.set_capture({"enet": ["initial"]})
    session.run(_frame(4))
    assert "forward" in module.__dict__  # the tap shadows forward on the instance ...
    assert not module._forward_hooks and not module._forward_pre_hooks  # ... and registers no hook
    session.set_capture({"enet": []})
    result = session.run(_frame(4)).results["enet"]
    assert "forward" not in module.__dict__ and result.activations == {}
    with session.bare("lenet5") as model:  # the floor the bench measures has no tap either
        assert all("forward" not in m.__dict__ for m in model.modules())


@dataclass(frozen=True)
class InputSaliency:
    """A test probe that needs gradients: |d top-1 logit / d input|, max over colour."""

    layers: tuple[str, ...] = ()
    name: str = "saliency"


def _saliency(adapter: ModelAdapter, batch: torch.Tensor, context: ProbeContext) -> np.ndarray:
    x = batch.clone().requires_grad_(True)
    logits = adapter.logits(x)
    top = logits[0].argmax()
    (grad,) = torch.autograd.grad(logits[0, top], x)
    return read_only(grad.abs().amax(1))[0]


def test_a_new_probe_is_one_function_and_its_result_says_its_generation(session):
    register(InputSaliency, _saliency)
    try:
        session.set_probes({"lenet5": (Activations(("features.c3",)), InputSaliency())}, generation=41)
        result = session.run(_frame(5))
        r = result.results["lenet5"]
        assert result.generation == 41
        assert list(r.activations) == ["features.c3"]  # activations still come back as before
        saliency = r.probes["saliency"]
        assert saliency.shape == (32, 32) and not saliency.flags.writeable and saliency.max() > 0
        assert result.results["enet"].probes == {}
        with pytest.raises(KeyError, match="no layer"):
            session.set_probes({"lenet5": (Activations(("features.c9",)),)})
    finally:
        del RUNNERS[InputSaliency]
        session.set_capture({"lenet5": []})
    with pytest.raises(TypeError, match="no probe runs a InputSaliency"):
        spec = get_spec("lenet5")
        run_probe(InputSaliency(), ModelAdapter(spec, spec.build()), torch.zeros(1, 3, 32, 32))
