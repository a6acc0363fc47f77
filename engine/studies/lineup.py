"""Reference line-ups for the imagenet analysis: the networks Canziani, Paszke and Culurciello
(2016) measured, and networks from after the paper, beside the comparison's four.

Every network here is built by torchvision with random weights: a network with random weights
takes the same time and memory as a trained one, so nothing is downloaded. What is known of the
trained network (top-1, top-5, torchvision's operation count, its parameters, the input size) comes
from torchvision's weights metadata, which ships with it: it is the *published* figure, labelled
as such wherever it is shown. These specs are not registered (:mod:`engine.models.registry`): the
line-up networks are not in the live window's panels, only in the analysis, its report and
``info --lineup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, partial

import torch
import torchvision

from engine.models.complexity import Complexity, measure
from engine.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, comparison_specs

LINEUPS = ("four", "paper", "modern")

# The paper's networks that torchvision does not build: listed as not measured.
NOT_IN_TORCHVISION = ("Inception-v4", "BN-AlexNet", "BN-NIN")


@dataclass(frozen=True)
class Entry:
    name: str  # torchvision's builder
    label: str
    year: int
    weights: str  # the torchvision weights whose metadata gives the published figures
    group: str  # paper, modern
    options: tuple[tuple[str, object], ...] = ()  # builder options (no auxiliary heads: inference only)


# The ResNets' first weights (IMAGENET1K_V1) are the 2016 training the paper measured; torchvision's
# later V2 weights train the same network with a 2021 recipe.
PAPER = (
    Entry("googlenet", "GoogLeNet", 2014, "GoogLeNet_Weights.IMAGENET1K_V1", "paper",
          (("aux_logits", False), ("init_weights", True))),
    Entry("inception_v3", "Inception-v3", 2015, "Inception_V3_Weights.IMAGENET1K_V1", "paper",
          (("aux_logits", False), ("init_weights", True))),
    Entry("resnet18", "ResNet-18", 2015, "ResNet18_Weights.IMAGENET1K_V1", "paper"),
    Entry("resnet34", "ResNet-34", 2015, "ResNet34_Weights.IMAGENET1K_V1", "paper"),
    Entry("resnet50", "ResNet-50", 2015, "ResNet50_Weights.IMAGENET1K_V1", "paper"),
    Entry("resnet101", "ResNet-101", 2015, "ResNet101_Weights.IMAGENET1K_V1", "paper"),
    Entry("resnet152", "ResNet-152", 2015, "ResNet152_Weights.IMAGENET1K_V1", "paper"),
    Entry("vgg19", "VGG-19", 2014, "VGG19_Weights.IMAGENET1K_V1", "paper"),
)
MODERN = (
    Entry("mobilenet_v2", "MobileNetV2", 2018, "MobileNet_V2_Weights.IMAGENET1K_V2", "modern"),
    Entry("mobilenet_v3_large", "MobileNetV3-L", 2019, "MobileNet_V3_Large_Weights.IMAGENET1K_V2", "modern"),
    Entry("shufflenet_v2_x1_0", "ShuffleNetV2", 2018, "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1", "modern"),
    Entry("efficientnet_b0", "EfficientNet-B0", 2019, "EfficientNet_B0_Weights.IMAGENET1K_V1", "modern"),
    Entry("regnet_y_400mf", "RegNetY-400MF", 2020, "RegNet_Y_400MF_Weights.IMAGENET1K_V2", "modern"),
    Entry("convnext_tiny", "ConvNeXt-T", 2022, "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", "modern"),
)


@dataclass(frozen=True)
class Published:
    """torchvision's figures for the trained network (not measured here)."""

    weights: str
    top1: float | None  # 0..1, ImageNet-1K validation
    top5: float | None
    gops: float | None  # torchvision's "GFLOPS" field: its count of multiply-adds, in billions
    params: int | None


def hub(weights: str):
    enum_name, _, member = weights.partition(".")
    return getattr(getattr(torchvision.models, enum_name, None), member, None)


def published(weights: str | None) -> Published | None:
    """The metadata of torchvision's ``weights`` (offline), or None when there is none."""
    w = hub(weights) if weights else None
    if w is None:
        return None
    metrics = (w.meta.get("_metrics") or {}).get("ImageNet-1K") or {}
    top1, top5 = metrics.get("acc@1"), metrics.get("acc@5")
    return Published(weights, None if top1 is None else top1 / 100, None if top5 is None else top5 / 100,
                     w.meta.get("_ops"), w.meta.get("num_params"))


def _build(name: str, options: tuple[tuple[str, object], ...], num_classes: int = 1000):
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **dict(options))


def spec_of(entry: Entry) -> ModelSpec:
    """An unregistered imagenet spec for ``entry``, at the input size its weights were trained for."""
    w = hub(entry.weights)
    crop = int(getattr(w.transforms, "keywords", {}).get("crop_size", 224)) if w is not None else 224
    first = comparison_specs("imagenet")[0]
    return ModelSpec(name=entry.name, family=entry.label, paper="", year=entry.year, profile="imagenet",
                     builder=partial(_build, entry.name, entry.options), input_size=(3, crop, crop),
                     resize=crop * 256 // 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     class_names=first.class_names, weights=entry.weights, label=entry.label)


def entries(lineup: str) -> tuple[Entry, ...]:
    """The networks ``lineup`` adds to the four (none for "four")."""
    if lineup not in LINEUPS:
        raise ValueError(f"unknown line-up {lineup!r}; expected one of {', '.join(LINEUPS)}")
    return {"four": (), "paper": PAPER, "modern": MODERN}[lineup]


def lineup_specs(lineup: str) -> list[tuple[ModelSpec, str]]:
    """(spec, group) of every network of ``lineup``: the four of the imagenet comparison first
    (group "four"), then the line-up's own."""
    return [(s, "four") for s in comparison_specs("imagenet")] + [(spec_of(e), e.group) for e in entries(lineup)]


@cache
def lineup_cost(name: str, lineup: str) -> Complexity:
    """Parameters, MACs and activations of a line-up network, counted on the meta device where
    the network builds there."""
    spec = next(s for s, _ in lineup_specs(lineup) if s.name == name)
    try:
        with torch.device("meta"):
            model = spec.build()
    except (NotImplementedError, RuntimeError):  # RegNet works out its widths from tensor values
        model = spec.build()
    return measure(spec, model)


def published_of(spec: ModelSpec) -> Published | None:
    return published(spec.weights) if spec.weights and not spec.weights.endswith(".safetensors") else None
