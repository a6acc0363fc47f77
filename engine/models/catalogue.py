"""The built-in line-up: which networks exist in which profile.

Registration order is display order. The first network of each family in a profile is the one the
side-by-side comparison shows (``registry.comparison_specs``). This module only lists them;
:mod:`engine.models.registry` registers them; further VGG depths are there for the
command line and the model menu.
"""

from __future__ import annotations

from functools import partial

import torchvision

from engine.models.alexnet import alexnet_cifar, alexnet_imagenet
from engine.models.enet import enet
from engine.models.lenet import lenet5
from engine.models.spec import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
)
from engine.models.vgg import feature_names, vgg_cifar, vgg_imagenet

_LENET = dict(family="LeNet-5", paper="LeCun et al., Gradient-based learning applied to document recognition",
              year=1998, default_layer="features.c1")
_ALEXNET = dict(family="AlexNet", paper="Krizhevsky et al., ImageNet classification with deep CNNs",
                year=2012, default_layer="features.conv1", gradcam_layer="features.relu5")
_VGG = dict(family="VGG", paper="Simonyan & Zisserman, Very deep convolutional networks", year=2014,
            default_layer="features.conv1_1")
_ENET = dict(family="ENet", paper="Paszke et al., ENet: a deep neural network architecture for "
             "real-time semantic segmentation", year=2016, default_layer="initial", has_class_map=True,
             gradcam_layer="stage3.bottleneck3_8")  # the end of the encoder, which the image logits read

_CIFAR = dict(profile="cifar10", input_size=(3, 32, 32), resize=32, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              class_names=CIFAR10_CLASSES)
# The class names ship with torchvision (the weights' metadata): no download needed.
IMAGENET_CLASSES = tuple(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
_IMAGENET = dict(profile="imagenet", input_size=(3, 224, 224), resize=256, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, class_names=IMAGENET_CLASSES)
BUILT_IN: list[ModelSpec] = []  # in display order; the registry registers them
register = BUILT_IN.append

_NO_IMAGENET_WEIGHTS = "no ImageNet weights exist for this network: random weights, for timing and feature maps only"


def _vgg_gradcam_layer(depth: int, batch_norm: bool, block: int) -> str:
    """The last ReLU of ``block``: Grad-CAM's default layer for VGG. At 32x32 block 5 ends at 2x2,
    a map of four values, so the CIFAR form uses block 4 (4x4); at 224x224 block 5 ends at 14x14."""
    return "features." + [n for n in feature_names(depth, batch_norm) if n.startswith(f"relu{block}_")][-1]


def _register_cifar10() -> None:
    # LeNet-5's C5 is 1x1 at 32x32 (a fully connected layer in effect): Grad-CAM reads C3 (10x10)
    register(ModelSpec(name="lenet5", builder=lenet5, weights="lenet5_cifar10.safetensors",
                       gradcam_layer="features.tanh3", **_LENET, **_CIFAR))
    register(ModelSpec(name="alexnet", builder=alexnet_cifar, weights="alexnet_cifar10.safetensors",
                       **_ALEXNET, **_CIFAR))
    register(ModelSpec(name="vgg16", builder=partial(vgg_cifar, 16), weights="vgg16_cifar10.safetensors",
                       label="VGG-16-BN", gradcam_layer=_vgg_gradcam_layer(16, True, 4), **_VGG, **_CIFAR))
    register(ModelSpec(name="enet", builder=enet, weights="enet_cifar10.safetensors", **_ENET, **_CIFAR))
    for depth in (11, 13, 19):
        register(ModelSpec(name=f"vgg{depth}", builder=partial(vgg_cifar, depth),
                           weights=f"vgg{depth}_cifar10.safetensors", label=f"VGG-{depth}-BN",
                           gradcam_layer=_vgg_gradcam_layer(depth, True, 4), **_VGG, **_CIFAR))


def _register_imagenet() -> None:
    register(ModelSpec(name="lenet5", builder=lenet5, weights=None, note=_NO_IMAGENET_WEIGHTS,
                       gradcam_layer="features.tanh5", **_LENET, **_IMAGENET))
    register(ModelSpec(name="alexnet", builder=alexnet_imagenet, weights="AlexNet_Weights.IMAGENET1K_V1",
                       reference_builder=torchvision.models.alexnet, **_ALEXNET, **_IMAGENET))
    for depth in (16, 11, 13, 19):
        for bn in (False, True):
            suffix = "_bn" if bn else ""
            register(ModelSpec(name=f"vgg{depth}{suffix}", builder=partial(vgg_imagenet, depth, bn),
                               weights=f"VGG{depth}{suffix.upper()}_Weights.IMAGENET1K_V1",
                               label=f"VGG-{depth}{'-BN' if bn else ''}",
                               gradcam_layer=_vgg_gradcam_layer(depth, bn, 5),
                           reference_builder=getattr(torchvision.models, f"vgg{depth}{suffix}"), **_VGG, **_IMAGENET))
        if depth == 16:  # ENet sits right after the comparison's VGG so display order stays by year
            # Untrained, a 1000-class per-pixel map would cost 200 MB and seconds per frame and
            # mean nothing: at this size ENet runs as a classifier only.
            register(ModelSpec(name="enet", builder=enet, weights=None, note=_NO_IMAGENET_WEIGHTS,
                               **{**_ENET, "has_class_map": False}, **_IMAGENET))


_register_cifar10()
_register_imagenet()
