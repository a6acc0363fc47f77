"""Training: augmentation, the schedule, a loss that falls, weights that round-trip, the command."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.cli import build_parser, run_command
from engine.jobs import Cancelled, JobState
from engine.models.preprocess import normalise, normaliser
from engine.models.registry import get_spec
from engine.models.weights import BUNDLED, load_model, read_metrics, save_weights
from engine.studies.evaluation import predict_logits
from engine.training import (
    RECIPES,
    CheckpointPlan,
    Recipe,
    RecipeError,
    alternating_flips,
    augment,
    flip_coins,
    load_checkpoint,
    lr_factor,
    parse_overrides,
    recipe_for,
    train,
    training_loss,
)
from tests.engine.test_data import class_image, make_tiny_archive


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


def test_recipe_overrides_parse_to_the_field_types():
    changes = parse_overrides(["grad_clip=none", "lr=0.1", "epochs=7", "alternate-flip=false", "ema=None"])
    assert changes == {"grad_clip": None, "lr": 0.1, "epochs": 7, "alternate_flip": False, "ema": None}
    assert isinstance(changes["epochs"], int)
    for bad in ("lr", "epochs=2.5", "weight_decay=-1", "lr=nan", "batch_size=none", "flip=2"):
        with pytest.raises(RecipeError):
            parse_overrides([bad])
    assert parse_overrides(None) == {}


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
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 7)) and metrics["sittings"] == 1


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
    assert loaded.status == BUNDLED
    ref = predict_logits(spec, model, images, device=torch.device("cpu"))
    got = predict_logits(spec, loaded.model, images, device=torch.device("cpu"))
    assert torch.allclose(ref, got, atol=2e-2, rtol=1e-2)
    assert read_metrics(tmp_path / spec.weights)["test_top1"] == 0.5
    if os.name == "posix":  # readable by everyone, like any other file a user shares
        assert (tmp_path / spec.weights).stat().st_mode & 0o777 == 0o644


def argv_of(args) -> list[str]:
    return ["train", "--model", args.model, "--data", args.data, "--epochs", str(args.epochs), "--limit",
            str(args.limit), "--val", str(args.val), "--device", args.device, "--out", args.out,
            "--batch-size", str(args.batch_size)]


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
                "seed", "date", "data", "tta_flip", "test_top1_no_tta", "test_top1_flip_shift"):
        assert key in metrics, key
    assert 0.0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1.0 and 0.0 <= metrics["test_top1_flip_shift"] <= 1.0
    assert metrics["train_images"] == 48 and metrics["val_images"] == 16 and metrics["test_images"] == 12
    assert metrics["data"]["name"] == "tiny.tar.gz" and len(metrics["data"]["sha256"]) == 64
    assert metrics["recipe"]["epochs"] == 1 and metrics["recipe"]["batch_size"] == 16
    assert metrics["storage"] == "fp16"  # LeNet-5 is far under the file budget
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "test top-1" in captured.out
    # Again into the same folder: the first file is kept as a dated backup, not overwritten.
    first = weights.read_bytes()
    assert run_command(build_parser().parse_args([*argv_of(args), "--restart"])) == 0
    backups = sorted(out.glob("lenet5_cifar10.bak-*.safetensors"))
    assert len(backups) == 1 and backups[0].read_bytes() == first and backups[0].with_suffix(".json").is_file()
    assert weights.is_file()


def test_cmd_train_with_a_changed_recipe_keeps_its_own_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path / "cache"))
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=8, test_per_class=2)
    argv = ["train", "--model", "lenet5", "--data", str(archive), "--epochs", "1", "--val", "16",
            "--device", "cpu", "--batch-size", "16"]
    assert run_command(build_parser().parse_args([*argv, "--set", "grad_clip=none", "--set", "label_smoothing=0"])) == 0
    runs = tmp_path / "cache" / "runs"
    changed = [d for d in runs.iterdir() if d.name.startswith("lenet5_cifar10-set-")]
    assert len(changed) == 1 and not (runs / "lenet5_cifar10").exists()
    metrics = json.loads((changed[0] / "lenet5_cifar10.json").read_text())
    assert metrics["recipe"]["grad_clip"] is None and metrics["recipe"]["label_smoothing"] == 0.0
    assert metrics["recipe"]["lr"] == RECIPES["lenet5"].lr  # fields not named keep the shipped recipe's value
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet50"], "no model 'resnet50'"),
    (["--model", "lenet5", "--batch-size", "0"], "--batch-size must be positive"),
    (["--model", "lenet5", "--val", "1000"], "leaves no training images"),
    (["--model", "lenet5", "--set", "grad_clp=1"], "expected FIELD=VALUE with FIELD one of"),
    (["--model", "lenet5", "--set", "lr=0"], "--set lr=0: must be positive"),
    (["--model", "lenet5", "--set", "nesterov=maybe"], "nesterov takes bool"),
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


# --- resumable runs ----------------------------------------------------------------------------

def _states_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["lenet5", "enet"])
@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_a_stopped_and_resumed_run_ends_with_the_same_weights(tmp_path, name):
    """Stopped mid-epoch 2 of 3, resumed from the checkpoint after epoch 1: bit-identical weights
    (dropout, EMA, alternating flip, translation and bf16 autocast included)."""
    spec = get_spec(name)
    images, labels = tiny_set(8)
    recipe = replace(RECIPES[name], epochs=3, batch_size=8, ema=0.9)
    val = (images[::4], labels[::4])
    identity = {"model": name}
    straight, m1 = train(spec, images, labels, recipe, seed=3, val=val,
                         checkpoint=CheckpointPlan(tmp_path / "a.pt", identity))

    job = JobState()

    def stop_in_epoch_2(status):
        if status.epoch == 2 and status.step == 2:
            job.cancel()

    with pytest.raises(Cancelled):
        train(spec, images, labels, recipe, seed=3, val=val, progress=stop_in_epoch_2, job=job,
              checkpoint=CheckpointPlan(tmp_path / "b.pt", identity))
    saved = load_checkpoint(tmp_path / "b.pt")
    assert saved["epoch"] == 1 and saved["step"] == 3 and saved["identity"] == identity
    resumed, m2 = train(spec, images, labels, recipe, seed=3, val=val,
                        checkpoint=CheckpointPlan(tmp_path / "b.pt", identity, saved))
    assert _states_equal(straight, resumed)
    assert m2["sittings"] == 2 and m1["sittings"] == 1
    assert [h["loss"] for h in m1["history"]] == [h["loss"] for h in m2["history"]]
    assert m1["val_top1"] == m2["val_top1"] and m1["ema_used"] == m2["ema_used"]


def test_alternating_flip_mirrors_each_image_on_exactly_every_other_epoch():
    coins = flip_coins(1000, seed=7)
    assert 400 < int(coins.sum()) < 600  # a fair coin per image
    assert torch.equal(coins, flip_coins(1000, seed=7)) and not torch.equal(coins, flip_coins(1000, seed=8))
    epochs = torch.stack([alternating_flips(coins, e) for e in range(6)])  # (epochs, images)
    assert torch.all(epochs[1:] != epochs[:-1])  # every image changes side every epoch
    assert torch.all(epochs.sum(0) == 3)  # mirrored in exactly 3 of 6 epochs
    # and augment obeys the mask it is given: no crop, so a flipped image is exactly its mirror
    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    mask = torch.tensor([True, False, True, False])
    out = augment(batch, Recipe(epochs=1, batch_size=4, lr=0.1, crop_pad=0), torch.Generator(), mask)
    for i in range(4):
        assert torch.equal(out[i], batch[i].flip(1) if mask[i] else batch[i])


def _train_argv(archive, *extra: str) -> list[str]:
    return ["train", "--model", "lenet5", "--data", str(archive), "--limit", "48", "--val", "12",
            "--device", "cpu", "--batch-size", "12", *extra]


def test_a_resume_of_a_different_run_is_refused_in_one_line(tmp_path, capsys):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=20, test_per_class=2)
    assert run_command(build_parser().parse_args(_train_argv(archive, "--epochs", "1"))) == 0
    run_dir = Path(os.environ["CNN_ARENA_CACHE"]) / "runs" / "lenet5_cifar10"  # conftest's private cache
    assert (run_dir / "lenet5_cifar10.safetensors").is_file()  # the default output: the runs folder
    capsys.readouterr()
    # a second run without --resume or --restart would discard the saved one: refused
    assert run_command(build_parser().parse_args(_train_argv(archive, "--epochs", "2"))) == 2
    assert "--resume continues it" in capsys.readouterr().err
    # --resume with another recipe: refused, naming what differs
    assert run_command(build_parser().parse_args(_train_argv(archive, "--epochs", "2", "--lr", "0.01",
                                                             "--resume"))) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: lenet5: the saved run (epoch 1/1) is a different run")
    assert "recipe.lr 0.05 -> 0.01" in err and "recipe.epochs 1 -> 2" in err
    # --resume of the same, finished run: nothing to do
    assert run_command(build_parser().parse_args(_train_argv(archive, "--epochs", "1", "--resume"))) == 0
    assert "already trained" in capsys.readouterr().err
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1  # untouched by the refusals


@pytest.mark.slow
def test_sigint_during_training_exits_130_and_leaves_a_loadable_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=20, test_per_class=2)
    env = {**os.environ, "CNN_ARENA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    argv = [sys.executable, str(root / "main.py"), *_train_argv(archive, "--epochs", "400")]
    ckpt = tmp_path / "cache" / "runs" / "lenet5_cifar10" / "checkpoint.pt"
    proc = subprocess.Popen(argv, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ckpt.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in 120 s"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err.strip().splitlines()[-1]
    saved = load_checkpoint(ckpt)
    assert 1 <= saved["epoch"] < 400 and saved["identity"]["recipe"]["epochs"] == 400
