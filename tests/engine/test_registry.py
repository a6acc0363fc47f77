from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.models.lenet import lenet5
from engine.models.registry import (
    CIFAR10_CLASSES,
    ModelSpec,
    RegistryError,
    comparison_specs,
    get_spec,
    list_specs,
    register,
)


def test_both_profiles_have_the_four_families_in_order():
    for profile in ("cifar10", "imagenet"):
        assert [s.name for s in comparison_specs(profile)] == ["lenet5", "alexnet", "vgg16", "enet"]


def test_specs_are_frozen():
    spec = get_spec("vgg16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_registering_a_name_twice_raises():
    spec = get_spec("lenet5", "cifar10")
    with pytest.raises(RegistryError, match="already registered"):
        register(spec)
    assert len([s for s in list_specs("cifar10") if s.name == "lenet5"]) == 1


def test_unknown_name_and_profile_are_clear():
    with pytest.raises(RegistryError, match="no model 'resnet50'"):
        get_spec("resnet50", "cifar10")
    with pytest.raises(ValueError, match="unknown profile"):
        register(ModelSpec(name="x", family="x", paper="", year=0, profile="mnist", builder=lenet5,
                           input_size=(3, 32, 32), resize=32, mean=(0,) * 3, std=(1,) * 3,
                           class_names=CIFAR10_CLASSES))


def test_profiles_carry_class_names_and_sizes():
    assert get_spec("vgg16", "cifar10").class_names == CIFAR10_CLASSES
    imagenet = get_spec("vgg16", "imagenet")
    assert imagenet.num_classes == 1000 and imagenet.input_size == (3, 224, 224)
    assert imagenet.class_names[0] == "tench"


def test_networks_without_imagenet_weights_say_so():
    for name in ("lenet5", "enet"):
        spec = get_spec(name, "imagenet")
        assert spec.weights is None
        assert "no ImageNet weights" in spec.note


def test_only_enet_has_a_class_map():
    assert [s.name for s in list_specs("cifar10") if s.has_class_map] == ["enet"]


def test_default_layers_exist():
    for spec in list_specs():
        if spec.profile == "imagenet" and spec.name.startswith("vgg") and spec.name != "vgg16":
            continue  # same builders as vgg16; building all eight 500 MB models is slow
        with torch.device("meta"):  # names only
            names = dict(spec.build().named_modules())
        assert spec.default_layer in names, (spec.name, spec.profile)
