"""int8 on ONNX Runtime: the quantized graph, its cache and record, and ``eval --precision int8``."""

from __future__ import annotations

import dataclasses
import json
import logging

import cv2
import numpy as np
import pytest
import torch

from engine.cli import build_parser, run_command
from engine.models.adapter import ModelAdapter
from engine.models.registry import get_spec
from engine.models.weights import load_model
from engine.runtime.backends import make_runner
from engine.runtime.backends.ort import OrtRunner
from engine.runtime.quantize import (
    DEFAULT_CONFIG,
    Int8Cache,
    Int8Graphs,
    Int8Record,
    QuantConfig,
    calibration_inputs,
    holds,
    int8_graph,
)
from engine.studies.evaluation import predict_logits
from tests.engine.test_data import dataset_files, make_archive

CPU = torch.device("cpu")


def smooth_images(n: int, seed: int) -> np.ndarray:
    """Images with the broad colour fields of photos (a 4x4 grid of random colours, smoothly
    enlarged, with a little noise): plain colour patches leave too few classes in play."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        small = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        big = cv2.resize(small, (32, 32), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 10, (32, 32, 3))
        out[i] = np.clip(big, 0, 255)
    return out


def int8_runner(adapter, graph, threads=1, layers=()):
    return OrtRunner(adapter, adapter.spec.has_class_map, threads=threads, precision="int8",
                     graphs=Int8Graphs(graph, layers, adapter.spec.has_class_map))


@pytest.fixture(scope="module")
def lenet():
    spec = get_spec("lenet5")
    return ModelAdapter(spec, load_model(spec).model.eval())


def test_the_int8_graph_keeps_the_engines_outputs_and_agrees_with_fp32(lenet):
    spec = lenet.spec
    calibration = calibration_inputs(spec, smooth_images(200, 0), 200, 0)
    graph = int8_graph(lenet, calibration, dataclasses.replace(DEFAULT_CONFIG, images=200))
    runner = int8_runner(lenet, graph, threads=2)
    test = smooth_images(300, 1)
    fp32 = predict_logits(spec, make_runner("onnxruntime", lenet, device=CPU, cache=False), test, device=CPU)
    int8 = predict_logits(spec, runner, test, device=CPU)
    assert int8.shape == (300, 10)
    # the s8 per-channel graph without the saturation guard agrees on about 65% of these
    assert (int8.argmax(1) == fp32.argmax(1)).float().mean() >= 0.9
    out = runner(torch.from_numpy(calibration[:1]))  # batch 1: the batch stays dynamic
    assert out.logits.shape == out.probs.shape == out.top.shape == (1, 10)
    assert np.allclose(out.probs.sum(1), 1.0, atol=1e-5)  # the head stays float: a true softmax
    assert out.top[0, 0] == out.logits[0].argmax() and sorted(out.top[0].tolist()) == list(range(10))


def test_taps_are_cut_from_a_graph_quantized_with_them(lenet):
    calibration = calibration_inputs(lenet.spec, smooth_images(32, 0), 32, 0)
    layers = ("features.c1", "features.c3")
    graph = int8_graph(lenet, calibration, dataclasses.replace(DEFAULT_CONFIG, images=32), layers=layers)
    runner = int8_runner(lenet, graph, layers=layers)
    runner.set_taps(["features.c3"])
    out = runner(torch.from_numpy(calibration[:2]))
    assert list(out.taps) == ["features.c3"] and out.taps["features.c3"].shape == (2, 16, 10, 10)


def test_the_config_key_names_every_choice():
    keys = {QuantConfig(method=m, per_channel=pc, ends_float=e).key()
            for m in ("minmax", "entropy") for pc in (False, True) for e in (False, True)}
    keys |= {QuantConfig(method="percentile", percentile=p).key() for p in (99.99, 99.999)}
    assert len(keys) == 10
    with pytest.raises(ValueError):
        QuantConfig(method="mse")


def _record(**change) -> Int8Record:
    fields = dict(network="lenet5", profile="cifar10", weights_digest="a" * 64, config_key=DEFAULT_CONFIG.key(),
                  calibration="b" * 64, test_set="c" * 64, images=10000, fp32_top1=0.6661, int8_top1=0.6646,
                  date="2026-12-07T08:00:00+00:00")
    return Int8Record(**{**fields, **change})


def test_a_record_round_trips_and_a_damaged_or_foreign_one_is_ignored(tmp_path, caplog):
    cache = Int8Cache(tmp_path / "int8")
    path = tmp_path / "int8" / "cifar10-lenet5-x.record.json"
    record = _record()
    assert cache.write_record(path, record)
    assert cache.read_record(path, {"weights_digest": "a" * 64}) == record
    assert holds(record) and not holds(_record(int8_top1=0.6600))  # 0.15 and 0.61 points
    good = json.loads(path.read_text())
    for damage in ({**good, "int8_top1": "0.66"}, {**good, "int8_top1": 1.5}, {**good, "extra": 1},
                   {k: v for k, v in good.items() if k != "date"}, {**good, "images": True}, {**good, "format": 99}):
        path.write_text(json.dumps(damage))
        with caplog.at_level(logging.WARNING, "engine.runtime.quantize"):
            caplog.clear()
            assert cache.read_record(path) is None
        assert "int8 record" in caplog.text
    path.write_text(path.read_text()[:40])  # cut short
    assert cache.read_record(path) is None
    cache.write_record(path, record)
    assert cache.read_record(path, {"weights_digest": "d" * 64}) is None  # another network's weights


def test_a_tampered_int8_graph_is_quantized_again(tmp_path, lenet):
    cache = Int8Cache(tmp_path / "int8")
    calibration = calibration_inputs(lenet.spec, smooth_images(16, 0), 16, 0)
    config = dataclasses.replace(DEFAULT_CONFIG, images=16)
    first = int8_graph(lenet, calibration, config, cache=cache)
    again = int8_graph(lenet, calibration, config, cache=cache)
    assert first.seconds > 0 and again.seconds == 0 and again.data == first.data  # read from the cache
    path = cache.graph_path(lenet.spec, first.key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    redone = int8_graph(lenet, calibration, config, cache=cache)
    assert redone.seconds > 0 and redone.data == first.data
    other = int8_graph(lenet, calibration[:8], config, cache=cache)  # other calibration images: another key
    assert other.key != first.key


def test_int8_on_another_backend_is_one_line_and_exit_2(tmp_path, capsys):
    args = build_parser().parse_args(["eval", "--data", str(tmp_path / "x.tar.gz"), "--precision", "int8",
                                      "--backend", "torch"])
    assert run_command(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "int8 runs on ONNX Runtime only" in err


def test_int8_needs_a_training_split(tmp_path, capsys):
    folder = tmp_path / "one-split"
    for name, blob in dataset_files(0, 1).items():  # class folders only: one split
        (folder / name.split("/", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        (folder / name.split("/", 1)[1]).write_bytes(blob)
    args = build_parser().parse_args(["eval", "--data", str(folder), "--precision", "int8", "--models", "lenet5"])
    assert run_command(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no training split" in err


def test_eval_int8_calibrates_on_the_training_split_only(tmp_path, capsys, monkeypatch):
    import engine.cli.evaluate as cli_eval
    import engine.runtime.quantize as quantize
    from engine.data.datasets import load_cifar10

    archive = make_archive(tmp_path / "tiny.tar.gz", dataset_files(2, 3))
    splits, calibrated = [], []

    def spy_load(source, split="train", **kw):
        splits.append(split)
        return load_cifar10(source, split, **kw)

    def spy_calibration(spec, images, n, seed):
        calibrated.append(images.copy())
        return real_calibration(spec, images, n, seed)

    real_calibration = quantize.calibration_inputs
    monkeypatch.setattr(cli_eval, "load_cifar10", spy_load)
    monkeypatch.setattr(quantize, "calibration_inputs", spy_calibration)
    args = build_parser().parse_args(["eval", "--data", str(archive), "--precision", "int8", "--models", "lenet5",
                                      "--json"])
    assert run_command(args) == 0
    result = json.loads(capsys.readouterr().out)["lenet5"]
    assert sorted(splits) == ["test", "train"]
    train, test = load_cifar10(archive, "train")[0], load_cifar10(archive, "test")[0]
    assert len(calibrated) == 1 and np.array_equal(calibrated[0], train) and len(train) != len(test)
    assert result["fp32"]["images"] == result["int8"]["images"] == len(test)
    assert result["fp32"]["backend"] == result["int8"]["backend"] == "onnxruntime"
    assert result["config"] == DEFAULT_CONFIG.key() and isinstance(result["holds"], bool)
    records = list(Int8Cache().folder.glob("*.record.json"))
    assert len(records) == 1
    record = Int8Cache().read_record(records[0])
    assert record.images == len(test) and record.int8_top1 == result["int8"]["top1"]
    fewer = build_parser().parse_args(["eval", "--data", str(archive), "--precision", "int8", "--models", "lenet5",
                                       "--limit", "4", "--json"])
    assert run_command(fewer) == 0 and json.loads(capsys.readouterr().out)["lenet5"]["int8"]["images"] == 4
    assert Int8Cache().read_record(records[0]) == record  # the fuller measurement is kept


@pytest.mark.parametrize("drop, runs_int8", [(0.3, True), (1.2, False)])
def test_a_session_runs_int8_only_where_its_record_holds(lenet, drop, runs_int8):
    """int8 asked for runs on the network's int8 graph where its record says top-1 held within 0.5
    point; elsewhere the network runs in fp32 and a line says how to make one."""
    from engine.runtime.layers import feature_layers
    from engine.runtime.quantize import Int8Cache, Int8Record, fingerprint, now_utc
    from engine.runtime.session import InferenceSession

    calibration = calibration_inputs(lenet.spec, smooth_images(32, 0), 32, 0)
    layers = tuple(layer.name for layer in feature_layers(lenet, CPU))
    cache = Int8Cache()
    graph = int8_graph(lenet, calibration, dataclasses.replace(DEFAULT_CONFIG, images=32), cache=cache, layers=layers)
    config = dataclasses.replace(DEFAULT_CONFIG, images=32)
    record = Int8Record("lenet5", "cifar10", graph.weights_digest, config.key(), graph.calibration,
                        fingerprint(calibration), 32, 0.70, 0.70 - drop / 100, now_utc())
    assert cache.write_record(cache.record_path(lenet.spec, graph.key), record)
    import engine.runtime.quantize as quantize

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantize, "DEFAULT_CONFIG", config)
        s = InferenceSession("cifar10", "cpu", models=["lenet5"], backend="onnxruntime", precision="int8")
    assert (s.precision_of("lenet5")[0] == "int8") == runs_int8
    if runs_int8:
        assert s.runner("lenet5").precision == "int8" and s.decision("lenet5").chosen.precision == "int8"
        s.set_capture({"lenet5": ["features.c3"]})
        out = s.run(smooth_images(1, 3)[0]).results["lenet5"]
        assert out.activations["features.c3"].shape == (16, 10, 10)  # taps cut from the int8 graph
    else:
        assert any("no int8 graph here that holds" in m for m in s.messages)
