"""Training's precision on machines that differ, and the run record its metrics JSON keeps."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace

import pytest
import torch

from engine.cli import build_parser, run_command
from engine.jobs import Cancelled, JobState
from engine.models.registry import get_spec
from engine.training import RECIPES, CheckpointPlan, Recipe, RecipeError, build_for_training, load_checkpoint, train
from engine.training.loop import uses_autocast
from engine.training.machine import FLAGS, cpu_features
from engine.training.recipes import recipe_from_record
from tests.engine.test_data import make_tiny_archive
from tests.engine.test_training import tiny_set

CPU = torch.device("cpu")


def _autocast_seen(monkeypatch, native: bool) -> tuple[set[bool], dict]:
    """Train LeNet-5 one short epoch with ``cpu_bf16`` asked for and the CPU's native bf16 as given;
    returns whether autocast was on in each forward pass of training, and the metrics."""
    monkeypatch.setattr("engine.runtime.precision.bf16_native", lambda device: native)
    spec = get_spec("lenet5")
    recipe = replace(RECIPES["lenet5"], epochs=1, batch_size=8, cpu_bf16=True, ema=None)
    model = build_for_training(spec, recipe)
    seen: set[bool] = set()
    model.register_forward_hook(lambda m, i, o: seen.add(torch.is_autocast_enabled("cpu")) if m.training else None)
    images, labels = tiny_set(8)
    _, metrics = train(spec, images, labels, recipe, model=model)
    return seen, metrics


def test_a_cpu_without_native_bf16_trains_in_fp32_and_says_why(monkeypatch):
    seen, metrics = _autocast_seen(monkeypatch, native=False)
    assert seen == {False}
    assert metrics["precision"]["compute"] == "fp32" and not metrics["precision"]["autocast"]
    assert "no native bf16" in metrics["precision"]["reason"]
    assert metrics["recipe"]["cpu_bf16"] is True  # what the recipe asked for stays recorded


def test_a_cpu_with_native_bf16_trains_in_bf16_when_the_recipe_asks(monkeypatch):
    seen, metrics = _autocast_seen(monkeypatch, native=True)
    assert seen == {True} and metrics["precision"]["compute"] == "bf16"
    monkeypatch.setattr("engine.runtime.precision.bf16_native", lambda device: True)
    assert not uses_autocast(CPU, replace(RECIPES["lenet5"], cpu_bf16=False))


def test_train_says_its_precision_on_its_first_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("engine.runtime.precision.bf16_native", lambda device: False)
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=6, test_per_class=2)
    args = build_parser().parse_args(["train", "--model", "lenet5", "--data", str(archive), "--epochs", "1",
                                      "--val", "12", "--device", "cpu", "--batch-size", "16",
                                      "--out", str(tmp_path / "w")])
    assert run_command(args) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("training in fp32 on cpu") and "no native bf16" in first
    metrics = json.loads((tmp_path / "w" / "lenet5_cifar10.json").read_text())
    assert metrics["precision"]["compute"] == "fp32" and set(FLAGS) <= set(metrics["cpu"])


def test_the_metrics_record_the_recipe_whole_and_it_round_trips():
    spec = get_spec("lenet5")
    images, labels = tiny_set(8)  # 24 images
    recipe = replace(RECIPES["lenet5"], epochs=2, batch_size=8, ema=0.95, dropout=0.0)
    _, metrics = train(spec, images, labels, recipe, seed=5, val=(images[::3], labels[::3]))
    record = json.loads(json.dumps(metrics))  # as the metrics JSON holds it
    assert set(record["recipe"]) == {f.name for f in fields(Recipe)}
    assert recipe_from_record(record["recipe"]) == recipe
    assert record["seed"] == 5 and record["epochs_planned"] == record["epochs_done"] == 2
    assert record["batch_size"] == 8
    assert record["schedule"]["steps_per_epoch"] == 3 and record["schedule"]["total_steps"] == record["steps"] == 6
    assert record["schedule"]["peak_lr"] == recipe.lr and record["schedule"]["warmup_steps"] == 1
    assert record["device"].startswith("cpu") and record["precision"]["compute"] in ("fp32", "bf16")
    assert set(FLAGS) <= set(record["cpu"]) and record["cpu"]["model"]
    # every epoch's time names the sitting, and so the machine, that measured it
    machines = {m["sitting"]: m for m in record["machines"]}
    for entry in record["history"]:
        assert entry["train_s"] > 0 and entry["sitting"] in machines


def test_a_resumed_run_records_each_sittings_machine(tmp_path):
    spec = get_spec("lenet5")
    images, labels = tiny_set(8)
    recipe = replace(RECIPES["lenet5"], epochs=2, batch_size=8)
    job = JobState()

    def stop_in_epoch_2(status):
        if status.epoch == 2:
            job.cancel()

    plan = CheckpointPlan(tmp_path / "c.pt", {"model": "lenet5"})
    with pytest.raises(Cancelled):
        train(spec, images, labels, recipe, progress=stop_in_epoch_2, job=job, checkpoint=plan)
    saved = load_checkpoint(plan.path)
    _, metrics = train(spec, images, labels, recipe, checkpoint=replace(plan, resume_from=saved))
    assert [m["sitting"] for m in metrics["machines"]] == [1, 2]
    assert [h["sitting"] for h in metrics["history"]] == [1, 2]


def test_a_recorded_recipe_is_checked_before_it_is_trusted():
    good = asdict(RECIPES["vgg16"])
    old = {k: v for k, v in good.items() if k != "dropout"}  # written before the field existed
    assert recipe_from_record(old) == RECIPES["vgg16"]
    for bad in ({**good, "colour": 1}, {k: v for k, v in good.items() if k != "lr"}, {**good, "epochs": "30"},
                {**good, "flip": 1}, {**good, "ema": "high"}, [good]):
        with pytest.raises(RecipeError):
            recipe_from_record(bad)


def test_the_dropout_field_sets_every_dropout_layer():
    spec = get_spec("vgg16")
    model = build_for_training(spec, replace(RECIPES["vgg16"], dropout=0.0))
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.0 for m in drops)
    assert all(m.p > 0 for m in build_for_training(spec, RECIPES["vgg16"]).modules()
               if isinstance(m, torch.nn.Dropout))


def test_cpu_features_name_the_model_and_every_flag():
    features = cpu_features()
    assert features["model"] and features["cores"] >= 1
    assert all(features[flag] in (True, False, None) for flag in FLAGS)


def test_a_proxy_run_reports_its_validation_and_refuses_bad_input(tmp_path, monkeypatch, capsys):
    from engine.training.proxy import main

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path / "cache"))
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=20, test_per_class=1)
    argv = ["--model", "lenet5", "--data", str(archive), "--limit", "40", "--val", "10", "--epochs", "2",
            "--set", "batch_size=10", "--json", str(tmp_path / "p.json")]
    assert main(argv) == 0
    record = json.loads((tmp_path / "p.json").read_text())
    assert record["change"] == "batch_size=10" and record["train_images"] == 30 and record["epochs"] == 2
    assert 0.0 <= record["val_top1_last_epoch"] <= 1.0 and record["recipe"]["batch_size"] == 10
    assert record["epoch_train_s_median"] > 0 and "avx2" in record["cpu"]
    capsys.readouterr()
    assert main([*argv[:8], "--set", "colour=red"]) == 2
    assert main(["--model", "lenet5", "--data", str(archive), "--limit", "10", "--val", "10"]) == 2
    err = capsys.readouterr().err
    assert "colour" in err and "Traceback" not in err
