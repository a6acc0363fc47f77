"""Every network's forward shapes, parameter counts and readable layer names."""

from __future__ import annotations

import pytest
import torch

from engine.models.alexnet import alexnet_cifar, alexnet_imagenet
from engine.models.complexity import count_params
from engine.models.lenet import lenet5
from engine.models.registry import list_specs
from engine.models.vgg import CONFIGS, feature_names, vgg_cifar, vgg_imagenet


@pytest.mark.parametrize("spec", list_specs("cifar10"), ids=lambda s: s.name)
def test_cifar10_forward_shape(spec):
    model = spec.build()
    with torch.inference_mode():
        out = model(torch.randn(2, *spec.input_size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "enet"])
def test_imagenet_size_forward_shape(name):
    from engine.models.registry import get_spec
    spec = get_spec(name, "imagenet")
    model = spec.build()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)


def test_lenet5_parameter_count_matches_the_classic_figure():
    assert count_params(lenet5(num_classes=10)) == 62_006


def test_torchvision_parameter_counts_are_kept_after_renaming():
    with torch.device("meta"):  # shapes only: no 500 MB of random initialisation
        assert count_params(alexnet_imagenet()) == 61_100_840
        assert count_params(vgg_imagenet(16)) == 138_357_544
        assert count_params(vgg_imagenet(16, batch_norm=True)) == 138_365_992


def test_cifar_vgg16_and_alexnet_sizes():
    assert count_params(vgg_cifar(16)) == 14_724_042
    assert 5e6 < count_params(alexnet_cifar()) < 7e6


def test_layer_names_are_readable():
    with torch.device("meta"):
        names = dict(vgg_imagenet(16).named_modules())
    for expected in ("features.conv1_1", "features.relu3_3", "features.pool5", "classifier.fc8"):
        assert expected in names
    names = dict(alexnet_cifar().named_modules())
    assert {"features.conv1", "features.pool5", "classifier.fc8"} <= names.keys()
    assert "features.0" not in names


@pytest.mark.parametrize("depth", sorted(CONFIGS))
def test_vgg_feature_names_match_layers(depth):
    model = vgg_cifar(depth)
    assert [n for n, _ in model.features.named_children()] == feature_names(depth, True)
    convs = sum(1 for n in feature_names(depth, True) if n.startswith("conv"))
    assert convs + 3 == depth  # the paper's depth counts its three fully connected layers
    assert isinstance(model.features.get_submodule("conv1_1"), torch.nn.Conv2d)


def test_builders_refuse_weights_they_cannot_have():
    with pytest.raises(ValueError):
        lenet5(weights="anything")
    with pytest.raises(ValueError):
        vgg_cifar(16, weights="anything")


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg16", "enet"])
def test_the_adapter_splits_every_network_into_features_and_head(name):
    from engine.models.adapter import ModelAdapter
    from engine.models.registry import get_spec

    spec = get_spec(name)
    adapter = ModelAdapter(spec, spec.build())
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        features = adapter.forward_features(x)
        assert features.dim() == 4
        assert torch.allclose(adapter.forward_head(features), adapter.logits(x), atol=1e-5)
