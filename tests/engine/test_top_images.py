"""What a channel looks for (engine.studies.top_images), receptive fields (engine.probes.receptive), layer health
(engine.probes.layer_health) and ``python main.py top-images``."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.jobs import Cancelled, JobState
from engine.models.adapter import ModelAdapter
from engine.models.registry import CIFAR10_CLASSES, ModelSpec, get_spec
from engine.models.vgg import CONFIGS
from engine.probes.layer_health import HealthAccumulator, layer_health
from engine.probes.receptive import ReceptiveFieldError, crop_box, receptive_field
from engine.studies.top_images import TopImagesError, top_images
from main import main

EDGE_CHANNEL = 2


class EdgeNet(nn.Module):
    """One 3x3 "valid" convolution with four channels, all zero but channel EDGE_CHANNEL: a
    vertical-edge detector (dark on the left, bright on the right), then ReLU and a linear head."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 4, 3)), ("relu", nn.ReLU())]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4, num_classes)
        with torch.no_grad():
            self.features.conv.weight.zero_()
            self.features.conv.bias.zero_()
            sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
            self.features.conv.weight[EDGE_CHANNEL] = sobel_x  # the same on R, G and B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


EDGE_SPEC = ModelSpec(name="edgenet", family="EdgeNet", paper="a test", year=2024, profile="cifar10",
                      builder=lambda num_classes=2: EdgeNet(num_classes), input_size=(3, 32, 32), resize=32,
                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), class_names=("edge", "other"))


def edge_set() -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """24 images: 8 with a vertical edge (dark left, bright right, at a column given per image),
    8 with a horizontal edge, 8 flat; shuffled. Returns images, labels and {index: edge column}."""
    rng = np.random.default_rng(0)
    images, labels, columns = [], [], []
    for i in range(8):
        vertical = np.full((32, 32, 3), 40, np.uint8)
        col = 6 + 3 * i
        vertical[:, col:] = 200
        images.append(vertical)
        labels.append(0)
        columns.append(col)
        horizontal = np.full((32, 32, 3), 40, np.uint8)
        horizontal[6 + 3 * i:] = 200
        flat = np.full((32, 32, 3), 30 * i, np.uint8)
        images += [horizontal, flat]
        labels += [1, 1]
        columns += [-1, -1]
    order = rng.permutation(len(images))
    images_np = np.stack([images[j] for j in order])
    labels_np = np.array([labels[j] for j in order], dtype=np.int64)
    return images_np, labels_np, {k: columns[j] for k, j in enumerate(order) if columns[j] >= 0}


def test_a_hand_made_vertical_edge_channel_finds_the_vertical_edges():
    images, labels, edge_at = edge_set()
    adapter = ModelAdapter(EDGE_SPEC, EDGE_SPEC.build())
    ids = np.arange(100, 100 + len(images))
    seen = []
    result = top_images(adapter, "features.relu", images, labels, image_ids=ids, top_k=8, batch_size=10,
                        job=JobState(on_progress=seen.append))
    assert result.map_shape == (4, 30, 30) and result.scores.shape == (4, 8) and not result.cached
    found = set((result.image_ids[EDGE_CHANNEL] - 100).tolist())
    assert found == set(edge_at)  # exactly the eight images with a vertical edge
    assert (result.scores[EDGE_CHANNEL] > 0).all() and set(result.silent_channels) == {0, 1, 3}
    assert (result.labels[EDGE_CHANNEL] == 0).all() and result.class_name(EDGE_CHANNEL, 0) == "edge"
    for rank in range(8):
        col = edge_at[int(result.image_ids[EDGE_CHANNEL, rank]) - 100]
        top, left, bottom, right = result.boxes[EDGE_CHANNEL, rank]
        assert bottom - top == 3 and right - left == 3 and left < col <= right - 1  # the crop holds the edge
        crop = result.crop(EDGE_CHANNEL, rank)
        assert crop.shape == (3, 3, 3) and crop[:, 0].max() == 40 and crop[:, -1].min() == 200
    assert seen[-1].done == seen[-1].total == len(images) and seen[-1].unit == "images"
    # immutable, and a second call reads the cache
    assert not result.scores.flags.writeable and not result.pictures.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.layer = "x"  # type: ignore[misc]
    again = top_images(adapter, "features.relu", images, labels, image_ids=ids, top_k=8, batch_size=10)
    assert again.cached and np.array_equal(again.image_ids, result.image_ids)
    assert np.array_equal(again.boxes, result.boxes) and not again.boxes.flags.writeable
    other_set = top_images(adapter, "features.relu", images[::-1].copy(), labels[::-1].copy(), top_k=8,
                           batch_size=10)
    assert not other_set.cached  # another image set is another key
    job = JobState()
    job.cancel()
    with pytest.raises(Cancelled):
        top_images(adapter, "features.conv", images, labels, job=job, cache=False)
    with pytest.raises(TopImagesError, match="no layer"):
        top_images(adapter, "features.nope", images, labels, cache=False)
    with pytest.raises(TopImagesError, match="no spatial map"):
        top_images(adapter, "classifier", images, labels, cache=False)


def vgg_theory(layer: str) -> tuple[int, int, int]:
    """(size, jump, offset) of a CIFAR VGG-16 layer from its config: 3x3 convs with padding 1 and
    2x2 stride-2 pools, composed by hand."""
    size, jump, offset = 1, 1, 0
    block, conv = 1, 1
    for item in CONFIGS[16]:
        if item == "M":
            size, jump = size + jump, 2 * jump  # kernel 2, stride 2, no padding
            block, conv = block + 1, 1
            continue
        size, offset = size + 2 * jump, offset - jump  # kernel 3, stride 1, padding 1
        if f"features.conv{block}_{conv}" == layer:
            return size, jump, offset
        conv += 1
    raise AssertionError(layer)


def test_vgg16_conv3_1_receptive_field_matches_theory():
    size, jump, offset = vgg_theory("features.conv3_1")
    assert (size, jump, offset) == (24, 4, -10)
    rf = receptive_field(get_spec("vgg16"), "features.conv3_1")
    assert rf.size == (size, size) and rf.jump == (jump, jump) and rf.offset == (offset, offset)
    assert rf.map_shape == (8, 8) and rf.input_shape == (32, 32)
    # position (3, 5): rows 2..25, columns 10..33, clipped to 32
    assert rf.box(3, 5) == (2, 10, 26, 34)
    assert crop_box(rf, 3, 5, (32, 32)) == (2, 10, 26, 32)
    assert crop_box(rf, 0, 0, (32, 32)) == (0, 0, 14, 14)
    assert crop_box(rf, 7, 7, (32, 32)) == (18, 18, 32, 32)
    assert receptive_field(get_spec("vgg16"), "features.relu3_1") == dataclasses.replace(rf, layer="features.relu3_1")
    with pytest.raises(ReceptiveFieldError, match="no layer"):
        receptive_field(get_spec("vgg16"), "features.conv9_9")


class Branches(nn.Module):
    """ENet's initial block in small: a 3x3 stride-2 conv beside a 2x2 pool, joined, then a 3x3 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.after = nn.Conv2d(2, 1, 3, padding=1, bias=False)
        for m in (self.conv, self.after):
            nn.init.constant_(m.weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(torch.cat((self.conv(x), self.pool(x)), dim=1)).mean((2, 3))


def test_receptive_field_of_joined_branches_is_where_the_gradient_reaches():
    spec = dataclasses.replace(EDGE_SPEC, name="branches", builder=lambda num_classes=2: Branches(),
                               input_size=(1, 16, 16))
    adapter = ModelAdapter(spec, Branches())
    rf = receptive_field(adapter, "after")
    assert (rf.size, rf.jump, rf.offset) == ((7, 7), (2, 2), (-3, -3))
    store = {}
    with adapter.tapped(["after"], store):
        x = torch.rand(1, 1, 16, 16, requires_grad=True)
        adapter.model(x)
        store["after"][0, 0, 3, 4].backward()
    rows, cols = np.nonzero(x.grad[0, 0].numpy())
    assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == crop_box(rf, 3, 4, (16, 16))


def test_layer_health_of_a_hand_made_activation():
    a = np.zeros((3, 2, 2), np.float32)
    a[0] = [[0.0, 1.5], [0.0, 0.0]]  # fires once
    a[1] = 0.0  # never fires
    a[2] = [[-1.0, -2.0], [0.0, 0.0]]  # negative only: does not fire, two zeros
    h = layer_health(a)
    assert h.zeros == 9 and h.values == 12 and h.zero_fraction == 0.75
    assert h.channel_zero_fraction.tolist() == [0.75, 1.0, 0.5]
    assert h.dead_channels == (1, 2) and h.channel_max.tolist() == [1.5, 0.0, 0.0]
    assert not h.dead.flags.writeable

    acc = HealthAccumulator()
    acc.add(a)
    b = np.zeros_like(a)
    b[2, 1, 1] = 0.5  # channel 2 fires on the second frame; no zeros there but three
    b[0] = 1.0
    acc.add(b)
    snap = acc.snapshot()
    assert snap.frames == 2 and snap.never_fired == (1,) and snap.ever_fired.tolist() == [True, False, True]
    assert snap.zero_fraction == pytest.approx((9 + 7) / 24)
    assert snap.channel_max.tolist() == [1.5, 0.0, 0.5] and snap.last is not None
    assert not snap.ever_fired.flags.writeable
    acc.add(np.full_like(a, 2.0))
    assert snap.frames == 2 and snap.never_fired == (1,)  # a snapshot does not change afterwards
    with pytest.raises(ValueError, match="channels"):
        acc.add(np.zeros((4, 2, 2), np.float32))


def test_cli_refuses_a_bad_layer_and_a_used_folder_in_one_line(tmp_path, capsys):
    root = tmp_path / "set"
    for label, name in enumerate(CIFAR10_CLASSES):
        (root / "test" / name).mkdir(parents=True)
        cv2.imwrite(str(root / "test" / name / "0.png"), np.full((32, 32, 3), 20 * label, np.uint8))
    out = tmp_path / "out"
    assert main(["top-images", "--data", str(root), "--model", "lenet5", "--layer", "features.nope",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no layer 'features.nope'" in err and not out.exists()
    assert main(["top-images", "--data", str(root), "--model", "lenet5", "--layer", "classifier.f6",
                 "--out", str(out)]) == 2
    assert "no spatial map" in capsys.readouterr().err

    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    assert main(["top-images", "--data", str(root), "--model", "lenet5", "--layer", "features.c3",
                 "--out", str(used)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "other files" in err and (used / "notes.txt").read_text() == "mine"

    # a good run writes a grid per channel and the index; a second run may replace its own output
    for _ in range(2):
        assert main(["top-images", "--data", str(root), "--model", "lenet5", "--layer", "features.c3",
                     "--out", str(out), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["map_shape"] == [16, 10, 10] and report["images"] == 10 and report["files"] == 17
    index = json.loads((out / "index.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.json", *(f"channel_{c:03d}.png" for c in range(16))])
    entry = index["channels"]["5"]
    assert len(entry["images"]) == 9 and set(entry["classes"]) <= set(CIFAR10_CLASSES)
    assert len(entry["positions"]) == 9 and all(len(p) == 2 for p in entry["positions"])
    assert entry["file"] == "channel_005.png" and index["receptive_field"]["size"] == [14, 14]
