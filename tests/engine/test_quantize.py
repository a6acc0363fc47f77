"""int8 on ONNX Runtime: the quantized graph, its cache and record."""

from __future__ import annotations

import dataclasses
import json
import logging

import cv2
import numpy as np
import pytest
import torch

from engine.models.adapter import ModelAdapter
from engine.models.registry import get_spec
from engine.models.weights import load_model
from engine.runtime.backends import make_runner
from engine.runtime.quantize import (
    DEFAULT_CONFIG,
    Int8Cache,
    Int8OrtRunner,
    Int8Record,
    QuantConfig,
    calibration_inputs,
    holds,
    int8_graph,
)
from engine.studies.evaluation import predict_logits

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


@pytest.fixture(scope="module")
def lenet():
    spec = get_spec("lenet5")
    return ModelAdapter(spec, load_model(spec).model.eval())


def test_the_int8_graph_keeps_the_engines_outputs_and_agrees_with_fp32(lenet):
    spec = lenet.spec
    calibration = calibration_inputs(spec, smooth_images(200, 0), 200, 0)
    graph = int8_graph(lenet, calibration, dataclasses.replace(DEFAULT_CONFIG, images=200))
    runner = Int8OrtRunner(lenet, graph, threads=2)
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
    runner = Int8OrtRunner(lenet, graph, threads=1, layers=layers)
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
