from __future__ import annotations

import pytest

from engine.models.complexity import complexity


def test_torchvision_published_macs():
    # torchvision's weights metadata: AlexNet 0.714 GFLOPs, VGG-16 15.47 GFLOPs (its "GFLOPS" are MACs).
    alex = complexity("alexnet", "imagenet")
    vgg = complexity("vgg16", "imagenet")
    assert alex.params == 61_100_840 and vgg.params == 138_357_544
    assert alex.macs == pytest.approx(0.714e9, rel=0.02)
    assert vgg.macs == pytest.approx(15.47e9, rel=0.02)


def test_lenet5_macs_by_hand():
    # C1 28*28*6*75 + C3 10*10*16*150 + C5 120*400 + F6 120*84 + output 84*10
    expected = 28 * 28 * 6 * 75 + 10 * 10 * 16 * 150 + 120 * 400 + 120 * 84 + 84 * 10
    assert complexity("lenet5", "cifar10").macs == expected


def test_size_is_four_bytes_per_parameter_without_buffers():
    c = complexity("lenet5", "cifar10")
    assert c.size_mb == pytest.approx(62_006 * 4 / 1e6)
    assert c.activation_mb > 0


def test_enet_counts_its_decoder():
    c = complexity("enet", "cifar10")
    assert 0.33e6 <= c.params <= 0.38e6
    assert c.macs > 0
