"""Training: augmentation, the schedule, a loss that falls, weights that round-trip, the command."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.cli import build_parser, run_command
from engine.evaluation import predict_logits
from engine.models.registry import get_spec
from engine.preprocess import normalise, normaliser
from engine.training import RECIPES, Recipe, augment, lr_factor, recipe_for, train, training_loss
from engine.weights import TRAINED, load_model, read_metrics, save_weights
from tests.test_data import class_image, make_tiny_archive


def tiny_set(n_per_class: int = 16, classes=(0, 3, 9), seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array(classes, dtype=np.int64), n_per_class)
    images = np.stack([class_image(int(c), rng) for c in labels])
    return images, labels


def mean_loss(spec, model, images, labels, recipe) -> float:
    model.eval()
    with torch.no_grad():
        x = normalise(torch.from_numpy(images), normaliser(spec.mean, spec.std, torch.device("cpu")))
        return training_loss(spec, model, x, torch.from_numpy(labels), replace(recipe, label_smoothing=0.0)).item()


def test_augment_crops_and_flips_each_image_independently():
    rng = np.random.default_rng(1)
    batch = torch.from_numpy(rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    recipe = Recipe(epochs=1, batch_size=12, lr=0.1)
    gen = torch.Generator().manual_seed(0)
    out = augment(batch, recipe, gen)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    padded = F.pad(batch.permute(0, 3, 1, 2).float(), (4, 4, 4, 4), mode="reflect").permute(0, 2, 3, 1)
    offsets = set()
    for i in range(batch.shape[0]):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal(out[i].float(), (lambda c: c.flip(1) if f else c)(padded[i, dy:dy + 32, dx:dx + 32]))]
        assert matches, f"image {i} is not a (flipped) crop of its padded original"
        offsets.add(matches[0])
    assert len(offsets) > 3  # per-image draws, not one offset for the batch
    again = augment(batch, recipe, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded


def test_lr_schedule_warms_up_then_decays():
    r = Recipe(epochs=1, batch_size=1, lr=1.0, warmup=0.2, start_lr_frac=0.1, final_lr_frac=0.0)
    factors = [lr_factor(s, 100, r) for s in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == 20
    assert factors[-1] < 0.02 and all(a >= b for a, b in zip(factors[20:], factors[21:], strict=False))


def test_recipes_cover_the_comparison_and_overrides_apply():
    for name in ("lenet5", "alexnet", "vgg16", "enet"):
        assert isinstance(RECIPES[name], Recipe)
    assert RECIPES["enet"].aux_weight > 0
    r = recipe_for(get_spec("lenet5"), epochs=3, lr=None)
    assert r.epochs == 3 and r.lr == RECIPES["lenet5"].lr


def test_a_few_steps_lower_the_loss_of_lenet():
    spec = get_spec("lenet5")
    images, labels = tiny_set()
    recipe = replace(RECIPES["lenet5"], epochs=6, batch_size=16, lr=0.05, cpu_bf16=False, crop_pad=0)
    torch.manual_seed(0)
    model = spec.build()
    before = mean_loss(spec, model, images, labels, recipe)
    trained, metrics = train(spec, images, labels, recipe, device="cpu", model=model, seed=0)
    after = mean_loss(spec, trained, images, labels, recipe)
    assert after < before - 0.05, (before, after)
    assert metrics["steps"] == 6 * 3 and metrics["epochs"] == 6 and np.isfinite(metrics["final_loss"])


def test_training_is_reproducible():
    spec = get_spec("lenet5")
    images, labels = tiny_set(8)
    recipe = replace(RECIPES["lenet5"], epochs=1, batch_size=8, cpu_bf16=False)
    a, _ = train(spec, images, labels, recipe, seed=5)
    b, _ = train(spec, images, labels, recipe, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_enet_trains_with_its_class_map_loss():
    spec = get_spec("enet")
    images, labels = tiny_set(4)
    seen = []
    recipe = replace(RECIPES["enet"], epochs=1, batch_size=12, ema=0.9)
    model, metrics = train(spec, images, labels, recipe, progress=seen.append, val=(images[:6], labels[:6]))
    assert seen and seen[-1].step == seen[-1].steps == 1
    assert 0.0 <= metrics["val_top1"] <= 1.0 and "val_top1_ema" in metrics
    assert next(model.parameters()).device.type == "cpu" and not model.training


def test_weights_round_trip_in_fp16(tmp_path):
    spec = get_spec("lenet5")
    images, _ = tiny_set(4)
    torch.manual_seed(0)
    model = spec.build()
    save_weights(model, tmp_path / spec.weights, {"test_top1": 0.5, "test_top5": 0.9})
    loaded = load_model(spec, weights_dir=tmp_path)
    assert loaded.status == TRAINED
    ref = predict_logits(spec, model, images, device=torch.device("cpu"))
    got = predict_logits(spec, loaded.model, images, device=torch.device("cpu"))
    assert torch.allclose(ref, got, atol=2e-2, rtol=1e-2)
    assert read_metrics(tmp_path / spec.weights)["test_top1"] == 0.5


def test_cmd_train_end_to_end(tmp_path, capsys):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=30, test_per_class=4)
    out = tmp_path / "weights"
    args = build_parser().parse_args(["train", "--model", "lenet5", "--data", str(archive), "--epochs", "1",
                                      "--limit", "64", "--val", "16", "--device", "cpu", "--out", str(out),
                                      "--batch-size", "16"])
    assert run_command(args) == 0
    weights = out / "lenet5_cifar10.safetensors"
    assert weights.is_file()
    metrics = json.loads(weights.with_suffix(".json").read_text())
    for key in ("test_top1", "test_top5", "val_top1", "epochs", "wall_time_s", "device", "torch", "recipe",
                "seed", "date", "data", "tta_flip"):
        assert key in metrics, key
    assert 0.0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1.0
    assert metrics["train_images"] == 48 and metrics["val_images"] == 16 and metrics["test_images"] == 12
    assert metrics["data"]["name"] == "tiny.tar.gz" and len(metrics["data"]["sha256"]) == 64
    assert metrics["recipe"]["epochs"] == 1 and metrics["recipe"]["batch_size"] == 16
    assert metrics["storage"] == "fp16"  # LeNet-5 is far under the file budget
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "test top-1" in captured.out


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet50"], "no model 'resnet50'"),
    (["--model", "lenet5", "--epochs", "0"], "--epochs must be positive"),
    (["--model", "lenet5", "--val", "1000"], "leaves no training images"),
])
def test_cmd_train_user_errors(tmp_path, capsys, argv, message):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=4, test_per_class=1)
    args = build_parser().parse_args(["train", "--data", str(archive), "--device", "cpu",
                                      "--out", str(tmp_path / "w"), *argv])
    assert run_command(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_cmd_train_bad_data(tmp_path, capsys):
    args = build_parser().parse_args(["train", "--model", "lenet5", "--data", str(tmp_path / "missing.tar.gz"),
                                      "--device", "cpu", "--out", str(tmp_path / "w")])
    assert run_command(args) == 2
    assert "missing.tar.gz: no such file" in capsys.readouterr().err
