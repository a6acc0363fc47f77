"""Grad-CAM (engine.probes.gradcam) and ``python main.py explain``.

The map is checked where the truth is known: a tiny network trained in a second on 32x32 noise
images, where the class "square" is a bright square near one corner (any of the four) and the class
"plain" has none, must put most of its Grad-CAM mass for "square" in that corner's quadrant.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.models.adapter import ModelAdapter
from engine.models.registry import ModelSpec, list_specs
from engine.probes import GradCam, GradCamError, GradCamResult, run_probe
from engine.probes.gradcam import METHODS, explain
from main import main

pytest.importorskip("torchcam")

CLASSES = ("plain", "square")
SQUARE = 1


def corner_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, corners): dark noise, and for label 1 a bright 7x7 square near corner
    0..3 (top-left, top-right, bottom-left, bottom-right), its place jittered."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    corners = rng.integers(0, 4, size=n)
    for image, label, corner in zip(images, labels, corners):
        if label == SQUARE:
            top = rng.integers(1, 6) if corner in (0, 1) else 32 - 7 - rng.integers(1, 6)
            left = rng.integers(1, 6) if corner in (0, 2) else 32 - 7 - rng.integers(1, 6)
            image[top:top + 7, left:left + 7] = rng.integers(200, 256, size=3, dtype=np.uint8)
    return images, labels, corners


class CornerNet(nn.Module):
    """Two convolutions, global average pooling, a linear head: the layout Grad-CAM assumes."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(8, 16, 3, padding=1)), ("relu2", nn.ReLU()),
        ]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


SPEC = ModelSpec(name="corners", family="test", paper="", year=0, profile="cifar10",
                 builder=lambda num_classes: CornerNet(num_classes), input_size=(3, 32, 32), resize=32,
                 mean=(0.2, 0.2, 0.2), std=(0.25, 0.25, 0.25), class_names=CLASSES,
                 gradcam_layer="features.relu2")


def to_batch(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - 0.2) / 0.25


@pytest.fixture(scope="module")
def corner_net() -> ModelAdapter:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: one thread is fastest, and fair to a busy machine
    try:
        torch.manual_seed(0)
        model = CornerNet()
        images, labels, _ = corner_images(256, seed=1)
        x, y = to_batch(images), torch.as_tensor(labels)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(60):
            i = torch.randint(0, len(y), (32,), generator=torch.Generator().manual_seed(step))
            loss = nn.functional.cross_entropy(model(x[i]), y[i])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    finally:
        torch.set_num_threads(threads)
    return ModelAdapter(SPEC, model.eval())


def quadrant_mass(heat: np.ndarray, corner: int) -> float:
    rows = slice(0, 16) if corner in (0, 1) else slice(16, 32)
    cols = slice(0, 16) if corner in (0, 2) else slice(16, 32)
    return float(heat[rows, cols].sum() / heat.sum())


@pytest.mark.parametrize("method", METHODS)
def test_the_map_finds_the_evidence_in_its_corner(corner_net, method):
    images, labels, corners = corner_images(16, seed=7)
    squares = labels == SQUARE
    for image, corner in zip(images[squares], corners[squares]):
        result = explain(corner_net, to_batch(image[None]), GradCam(method=method))
        assert isinstance(result, GradCamResult)
        assert result.target == SQUARE and result.label == "square"  # the network learnt the task
        assert result.map.shape == (32, 32) and result.map.dtype == np.float32
        assert not result.map.flags.writeable
        assert result.map.min() >= 0 and result.map.max() == pytest.approx(1.0)
        assert quadrant_mass(result.map, corner) > 0.6, (method, corner)
        assert result.layer == "features.relu2" and result.grid == (16, 16) and result.method == method
        assert 0.5 < result.probability <= 1 and result.ms > 0


def test_a_named_class_is_explained_and_a_batch_from_inference_mode_works(corner_net):
    """The probe as the engine calls it: after the frame's pass, on an input made in inference mode."""
    image = corner_images(2, seed=11)[0][1]
    with torch.inference_mode():
        x = to_batch(image[None])
    other = 0
    result = run_probe(GradCam(target=other), corner_net, x)
    assert result.target == other and result.map.shape == (32, 32)
    with torch.inference_mode():  # called from inside inference mode too
        again = run_probe(GradCam(target=other), corner_net, x)
    np.testing.assert_array_equal(again.map, result.map)
    assert all(p.grad is None for p in corner_net.model.parameters())  # nothing kept in the network


def test_a_bf16_network_is_explained_in_float32(corner_net):
    import copy

    x = to_batch(corner_images(2, seed=3)[0][1:])
    fp32 = explain(corner_net, x, GradCam())
    bf16 = ModelAdapter(SPEC, copy.deepcopy(corner_net.model).to(torch.bfloat16))
    result = explain(bf16, x.to(torch.bfloat16), GradCam())
    assert result.map.dtype == np.float32 and result.target == fp32.target
    assert np.corrcoef(result.map.ravel(), fp32.map.ravel())[0, 1] > 0.98
    assert next(bf16.model.parameters()).dtype == torch.bfloat16  # the network itself is untouched


def test_gradcam_pp_uses_the_papers_weights(corner_net):
    """w_k = sum_ij alpha_ij relu(g_ij), alpha_ij = g^2 / (2 g^2 + g^3 sum_ab A_ab): recomputed here
    from the layer's output and gradient, the map must be the same."""
    x = to_batch(corner_images(2, seed=5)[0][1:])
    result = explain(corner_net, x, GradCam(method="gradcam++"))
    kept = {}
    layer = corner_net.layer("features.relu2")
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out))
    score = corner_net.logits(x.requires_grad_(True))[0, result.target]
    handle.remove()
    a = kept["a"]
    g = torch.autograd.grad(score, a)[0]
    alpha = torch.where(g > 0, g ** 2 / (2 * g ** 2 + g ** 3 * a.sum((2, 3), keepdim=True) + 1e-8), 0.0)
    cam = ((alpha * g.relu()).sum((2, 3), keepdim=True) * a).sum(1).relu()
    cam = nn.functional.interpolate(cam[:, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    np.testing.assert_allclose(result.map, cam.detach().numpy(), atol=1e-4)


def test_requests_a_network_cannot_answer_are_one_line_errors(corner_net):
    x = to_batch(corner_images(2, seed=2)[0][1:])
    with pytest.raises(GradCamError, match="corners has no layer 'features.conv9'"):
        explain(corner_net, x, GradCam("features.conv9"))
    with pytest.raises(GradCamError, match="no spatial map"):
        explain(corner_net, x, GradCam("classifier"))
    with pytest.raises(GradCamError, match=r"2 classes \(0..1\), not 7"):
        explain(corner_net, x, GradCam(target=7))
    with pytest.raises(GradCamError, match="one image at a time"):
        explain(corner_net, torch.cat([x, x]), GradCam())
    with pytest.raises(ValueError, match="unknown Grad-CAM method 'cam'"):
        GradCam(method="cam")


def test_every_registered_network_has_a_default_layer_with_a_map():
    with torch.device("meta"):
        for spec in list_specs():
            module = spec.build().get_submodule(spec.gradcam_layer)  # raises for a wrong name
            assert not isinstance(module, nn.Linear), spec.key


def test_explain_cli_bad_input_is_one_line(tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("x")
    cases = [
        (["explain", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")], "missing.png: no such file"),
        (["explain", str(tmp_path / "missing.png"), "--out", str(file)], "is a file, not a folder"),
        (["explain", str(file), "--out", str(tmp_path / "o"), "--layer", "vgg16"], "expected MODEL=LAYER"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()  # nothing made for a command that failed
