"""Evaluation: accuracy arithmetic, the shared preprocessing, and ``python main.py eval``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.cli import build_parser, run_command
from engine.jobs import Cancelled, JobProgress, JobState
from engine.models.preprocess import normalise, normaliser
from engine.models.registry import get_spec
from engine.models.weights import UNTRAINED, LoadedModel
from engine.runtime.device import resolve_device
from engine.studies.evaluation import EvalError, evaluate, evaluate_results, sample_indices, topk_accuracy
from tests.engine.test_data import call_with_fifo_guard, dataset_files, make_archive, make_tiny_archive


class FixedLogits(nn.Module):
    """Ignores its input: every image gets logits 0, 1, ..., 9 (so the ranking is 9, 8, 7, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(10, dtype=torch.float32).expand(x.shape[0], 10) + 0 * self.dummy


def test_topk_accuracy_on_a_constructed_case():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1, 0, 2])
    top1, top2 = topk_accuracy(logits, labels, ks=(1, 2))
    assert top1 == pytest.approx(0.25) and top2 == pytest.approx(0.5)
    assert topk_accuracy(torch.zeros((0, 3)), torch.zeros(0, dtype=torch.long)) == [0.0, 0.0]


def test_evaluate_fixed_model():
    spec = get_spec("lenet5")
    loaded = LoadedModel(spec, FixedLogits(), UNTRAINED, "test model")
    images = np.zeros((4, 32, 32, 3), np.uint8)
    labels = np.array([9, 5, 4, 0])  # top-1 hits only the 9; top-5 (9..5) hits the 9 and the 5
    result = evaluate([loaded], images, labels, device="cpu", batch_size=3)
    row = result["lenet5"]
    assert row["top1"] == pytest.approx(0.25) and row["top5"] == pytest.approx(0.5)
    assert row["images"] == 4 and row["images_per_s"] > 0 and row["weights_status"] == UNTRAINED
    assert row["timed_batches"] == 1  # batches 3 + 1: only the full one is a rate worth a median
    with_tta = evaluate([loaded], images, labels, device="cpu", tta=True)["lenet5"]
    assert with_tta["top1"] == pytest.approx(0.25)


def test_evaluate_as_a_job_reports_images_and_keeps_finished_networks_on_cancel():
    first = LoadedModel(get_spec("lenet5"), FixedLogits(), UNTRAINED, "test model")
    second = LoadedModel(get_spec("alexnet"), FixedLogits(), UNTRAINED, "test model")
    images, labels = np.zeros((5, 32, 32, 3), np.uint8), np.array([9, 9, 9, 0, 0])
    seen = []
    job = JobState(on_progress=seen.append)
    evaluate_results([first, second], images, labels, batch_size=2, job=job)
    assert [(p.done, p.text) for p in seen] == [
        (0, "lenet5"), (0, "lenet5"), (2, "lenet5"), (4, "lenet5"),
        (5, "alexnet"), (5, "alexnet"), (7, "alexnet"), (9, "alexnet"), (10, "done")]
    assert {(p.total, p.unit) for p in seen} == {(10, "images")}

    def cancel_at_second(p: JobProgress) -> None:
        if p.text == "alexnet":
            job.cancel()

    job = JobState(on_progress=cancel_at_second)
    with pytest.raises(Cancelled):
        evaluate_results([first, second], images, labels, batch_size=2, job=job)
    assert [(r.name, r.top1) for r in job.partial["results"]] == [("lenet5", pytest.approx(0.6))]


def test_prepare_batch_matches_the_definition():
    spec = get_spec("vgg16")
    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    x = normalise(batch, normaliser(spec.mean, spec.std, torch.device("cpu")))
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    expected = (batch.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x, expected, atol=1e-5)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_sample_indices_spread_and_fixed():
    idx = sample_indices(100, 10)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10 and idx.max() > 50
    assert np.array_equal(idx, sample_indices(100, 10))
    assert np.array_equal(sample_indices(5, None), np.arange(5))


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu", strict=True)


def test_cmd_eval_json(tmp_path, capsys):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=1, test_per_class=3)
    args = build_parser().parse_args(["eval", "--data", str(archive), "--models", "lenet5", "enet",
                                      "--limit", "6", "--json"])
    assert run_command(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["lenet5", "enet"]
    for row in result.values():
        assert {"top1", "top5", "images", "images_per_s", "weights_status"} <= set(row)
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0 and row["images"] == 6


def test_cmd_eval_table_flags_untrained(tmp_path, capsys, monkeypatch):
    import engine.models.weights as weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "no-weights")
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=1, test_per_class=2)
    from engine.cli.args import TTA_MODES
    from engine.studies.evaluation import TTA_MODES as EVAL_TTA_MODES

    assert TTA_MODES == EVAL_TTA_MODES
    assert build_parser().parse_args(["eval", "--data", str(archive), "--tta"]).tta == "flip"
    args = build_parser().parse_args(["eval", "--data", str(archive), "--models", "lenet5", "--tta", "flip+shift"])
    assert run_command(args) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "UNTRAINED" in out and "top-1" in out and "flip+shift TTA" in out


@pytest.mark.parametrize("argv, message", [
    (["--data", "/nowhere/cifar.tar.gz"], "cifar.tar.gz: no such file"),
    (["--models", "resnet50"], "no model 'resnet50'"),
])
def test_cmd_eval_user_errors(tmp_path, capsys, argv, message):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=1, test_per_class=1)
    args = build_parser().parse_args(["eval", "--data", str(archive), *argv])
    assert run_command(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_cmd_eval_warns_about_skipped_images_and_missing_classes(tmp_path, capsys):
    files = dataset_files(1, 2)  # three classes of the ten
    files["test/cat/zero.jpg"] = b""
    archive = make_archive(tmp_path / "tiny.tar.gz", files)
    args = build_parser().parse_args(["eval", "--data", str(archive), "--models", "lenet5", "--json"])
    assert run_command(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["lenet5"]["images"] == 6
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: tiny.tar.gz: skipped 1 test image that could not be decoded, e.g. test/cat/zero.jpg (empty file)",
        "warning: tiny.tar.gz: the test set has no images of 7 of the 10 classes (automobile, bird, deer, dog, "
        "frog, horse, ship); the accuracy is over the others only"]


def test_labels_outside_the_classes_are_refused(tmp_path, capsys, monkeypatch):
    loaded = LoadedModel(get_spec("lenet5"), FixedLogits(), UNTRAINED, "test model")
    images, labels = np.zeros((4, 32, 32, 3), np.uint8), np.array([9, 42, 0, 42])
    with pytest.raises(EvalError, match=r"^label 42 is outside the 10 classes \(0..9\); 2 of 4 labels are$"):
        evaluate_results([loaded], images, labels)
    with pytest.raises(EvalError, match="one label per image"):
        evaluate_results([loaded], images, labels[:3])

    import engine.cli.evaluate as cli_eval

    monkeypatch.setattr(cli_eval, "load_cifar10", lambda *_args, **_kwargs: (images, labels))
    args = build_parser().parse_args(["eval", "--data", str(tmp_path / "set.tar.gz"), "--models", "lenet5"])
    assert run_command(args) == 2
    err = capsys.readouterr().err
    assert err == "error: set.tar.gz: label 42 is outside the 10 classes (0..9); 2 of 4 labels are\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_cmd_eval_refuses_a_fifo(tmp_path, capsys):
    fifo = tmp_path / "fifo.tar.gz"
    os.mkfifo(fifo)
    args = build_parser().parse_args(["eval", "--data", str(fifo), "--models", "lenet5"])
    assert call_with_fifo_guard(lambda: run_command(args), fifo) == 2
    assert capsys.readouterr().err == "error: fifo.tar.gz: not a regular file or a folder\n"


def test_flip_shift_tta_averages_the_mirror_and_the_one_pixel_shifts():
    from engine.studies.evaluation import predict_logits, tta_mode

    assert tta_mode(True) == "flip" and tta_mode(False) is None and tta_mode("flip+shift") == "flip+shift"
    with pytest.raises(ValueError, match="expected one of"):
        tta_mode("rotate")
    torch.manual_seed(0)
    spec = get_spec("lenet5")
    model = spec.build().eval()
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = normalise(torch.from_numpy(images), normaliser(spec.mean, spec.std, torch.device("cpu")))
    # the views built by indexing, edges reflected: content moved down-right, and up-left, by a pixel
    down_right = torch.tensor([1, *range(31)])
    up_left = torch.tensor([*range(1, 32), 30])

    def both(view):
        with torch.inference_mode():
            return 0.5 * (model(view) + model(view.flip(3)))

    shifted = 0.5 * (both(x[:, :, down_right][:, :, :, down_right]) + both(x[:, :, up_left][:, :, :, up_left]))
    expected = 0.5 * both(x) + 0.5 * shifted
    got = predict_logits(spec, model, images, device=torch.device("cpu"), tta="flip+shift")
    assert torch.allclose(got, expected, atol=1e-5)
    flip_only = predict_logits(spec, model, images, device=torch.device("cpu"), tta="flip")
    assert torch.allclose(flip_only, both(x), atol=1e-5) and not torch.allclose(flip_only, got, atol=1e-4)
