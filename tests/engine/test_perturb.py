"""Perturbations (engine.probes.perturb), the robustness bench (engine.studies.robustness) and its command."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.jobs import Cancelled, JobState
from engine.models.registry import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, ModelSpec, get_spec
from engine.models.weights import LoadedModel, load_model
from engine.probes.perturb import KINDS, Perturbation, PerturbError, all_perturbations, apply, apply_all
from engine.studies.robustness import RobustnessResult, robustness
from main import main


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A stand-in for a photograph: smooth shading, a wave, flat discs with edges, faint grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    image = np.stack([160 * x + 40, 150 * y + 50, 120 * (1 - x) + 60], axis=-1)
    image += 25 * np.sin(2 * np.pi * (3 * x + 2 * y))[..., None]
    rows, cols = np.mgrid[0:h, 0:w]
    for _ in range(6):
        cy, cx, r = rng.random() * h, rng.random() * w, (0.08 + 0.2 * rng.random()) * min(h, w)
        image[(rows - cy) ** 2 + (cols - cx) ** 2 < r * r] = rng.integers(0, 256, size=3)
    image += rng.normal(0, 2, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(32, 32), (72, 96)])
def test_severity_zero_is_the_input_and_the_change_grows_with_severity(shape):
    """Over a set of pictures, as the bench measures: on one picture, pixelation and JPEG can change
    it a little less at a higher severity when their blocks happen to fit its edges better."""
    pictures = [picture(*shape, seed=i) for i in range(6)]
    originals = [p.copy() for p in pictures]
    for kind in KINDS:
        changes = []
        for severity in range(0, 6):
            diffs = []
            for image in pictures:
                out = apply(image, Perturbation(kind, severity))
                if severity == 0:
                    assert out is image  # bit for bit: the very input
                assert out.dtype == np.uint8 and out.shape == image.shape
                diffs.append(np.abs(out.astype(np.int16) - image).mean())
            changes.append(np.mean(diffs))
        assert changes[0] == 0 and all(b > a for a, b in zip(changes, changes[1:])), (kind, changes)
    for image, original in zip(pictures, originals):
        np.testing.assert_array_equal(image, original)  # the input is never written to


def test_noise_is_fixed_by_its_seed_and_differs_per_image():
    image = picture(32, 32)
    noisy = apply(image, Perturbation("gaussian_noise", 3, seed=5))
    np.testing.assert_array_equal(noisy, apply(image, Perturbation("gaussian_noise", 3, seed=5)))
    assert not np.array_equal(noisy, apply(image, Perturbation("gaussian_noise", 3, seed=6)))
    batch = apply_all(np.stack([image, image]), Perturbation("gaussian_noise", 3, seed=5))
    assert not np.array_equal(batch[0], batch[1])
    np.testing.assert_array_equal(batch, apply_all(np.stack([image, image]), Perturbation("gaussian_noise", 3, seed=5)))
    # CIFAR-10-C's severity 3: sigma 0.08 of the range, about 20 levels
    assert np.std(noisy.astype(float) - image) == pytest.approx(0.08 * 255, rel=0.15)


def test_brightness_is_an_hsv_value_shift():
    image = picture(32, 32, seed=3)
    image[0, 0] = 0  # black: no hue, becomes grey
    out = apply(image, Perturbation("brightness", 5))  # V + 0.3
    for (r, c) in [(0, 0), (5, 7), (20, 30), (31, 2)]:
        h, s, v = colorsys.rgb_to_hsv(*(image[r, c] / 255.0))
        expected = np.array(colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0))) * 255
        np.testing.assert_allclose(out[r, c], expected, atol=1)


def test_bad_perturbations_and_images_are_one_line_errors():
    with pytest.raises(PerturbError, match="unknown perturbation 'fog'"):
        Perturbation("fog", 1)
    with pytest.raises(PerturbError, match="severity must be a whole number from 0 to 5"):
        Perturbation("contrast", 6)
    with pytest.raises(PerturbError, match="center must be two fractions"):
        Perturbation("occlude", 2, center=(1.5, 0.5))
    with pytest.raises(PerturbError, match="expected a uint8 RGB image"):
        apply(np.zeros((8, 8, 3), np.float32), Perturbation("contrast", 1))
    assert len(all_perturbations()) == len(KINDS) * 5


class Tiny(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


TINY = ModelSpec(name="tiny", family="test", paper="", year=0, profile="cifar10",
                 builder=lambda num_classes: Tiny(num_classes), input_size=(3, 32, 32), resize=32,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, class_names=CIFAR10_CLASSES)


@pytest.fixture(scope="module")
def two_models() -> list[LoadedModel]:
    torch.manual_seed(0)
    return [load_model(get_spec("lenet5")), LoadedModel(TINY, TINY.build(), "untrained", "random weights")]


def test_robustness_measures_every_cell_with_progress(two_models):
    images = np.stack([picture(32, 32, seed=i) for i in range(6)])
    labels = np.arange(6) % 10
    seen = []
    result = robustness(two_models, images, labels, batch_size=4, job=JobState(on_progress=seen.append))
    assert isinstance(result, RobustnessResult) and result.complete
    assert result.models == ("lenet5", "tiny") and result.kinds == KINDS and result.severities == (1, 2, 3, 4, 5)
    assert result.top1.shape == (2, len(KINDS), 5) and not result.top1.flags.writeable
    assert ((result.top1 >= 0) & (result.top1 <= 1)).all() and result.images == 6
    for m in result.models:
        assert result.mean_top1(m) == pytest.approx(result.top1[result.models.index(m)].mean())
        if result.clean[m] > 0:
            assert result.relative(m) == pytest.approx(result.mean_top1(m) / result.clean[m])
        assert result.curve(m, "jpeg")[0] == result.clean[m] and len(result.curve(m, "jpeg")) == 6
    total = 6 * 2 * (1 + len(KINDS) * 5)
    done = [p.done for p in seen]
    assert done == sorted(done) and seen[-1].done == seen[-1].total == total and seen[-1].unit == "images"
    assert result.weights_status["tiny"] == "untrained"
    report = result.as_dict()
    assert set(report["models"]["lenet5"]["top1"]) == set(KINDS)
    assert len(report["models"]["tiny"]["top1"]["rotate"]) == 5


def test_robustness_cancels_between_batches_and_keeps_what_it_measured(two_models):
    images = np.stack([picture(32, 32, seed=i) for i in range(4)])

    def on_progress(p):
        if "contrast" in p.text:
            job.cancel()

    job = JobState(on_progress=on_progress)
    with pytest.raises(Cancelled):
        robustness(two_models, images, np.zeros(4, np.int64), job=job)
    partial = job.partial["result"]
    assert not partial.complete and set(partial.clean) == {"lenet5", "tiny"}
    assert np.isfinite(partial.top1[:, :KINDS.index("contrast")]).all()
    assert np.isnan(partial.top1[:, KINDS.index("contrast") + 1:]).all()


@pytest.mark.parametrize("argv, message", [
    (["--data", "/no/such/cifar.tar.gz"], "cifar.tar.gz"),
    (["--data", "DATA", "--out", "FILE"], "is a file, not a folder"),
    (["--data", "DATA", "--models", "resnet50"], "no model 'resnet50'"),
    (["--data", "DATA", "--weights", "lenet5"], "--weights 'lenet5'"),
])
def test_robustness_cli_bad_input_is_one_line(tmp_path, capsys, argv, message):
    file = tmp_path / "a-file"
    file.write_text("x")
    argv = [str(file) if a == "FILE" else str(tmp_path / "none") if a == "DATA" else a for a in argv]
    assert main(["robustness", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
