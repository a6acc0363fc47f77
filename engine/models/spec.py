"""What a network is, as data: a frozen :class:`ModelSpec` (name, family, paper, builder, input,
normalisation, classes, weights) and the profiles' constants. Model files and the catalogue import
this; the registry (:mod:`engine.models.registry`) holds the specs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PROFILES: tuple[str, ...] = ("cifar10", "imagenet")


@dataclass(frozen=True)
class ModelSpec:
    """What the app knows about one network in one profile.

    ``weights`` is a file name under ``assets/weights`` for our own trained weights, or the name of
    a torchvision weights enum member (``"AlexNet_Weights.IMAGENET1K_V1"``) for hub weights that
    are downloaded only when the user asks; ``None`` means no trained weights exist at all.
    """

    name: str
    family: str
    paper: str
    year: int
    profile: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    input_size: tuple[int, int, int]  # (C, H, W) the network consumes
    resize: int  # the shorter side is resized to this before the centre crop to (H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(repr=False)
    weights: str | None = None
    default_layer: str = ""
    has_class_map: bool = False  # per-pixel class logits next to the image logits (ENet)
    note: str = ""
    # The builder whose state-dict names a user's checkpoint may use (torchvision's own alexnet or
    # vgg16, before this project renamed the layers): see engine.models.adapter.translate_checkpoint.
    reference_builder: Callable[..., nn.Module] | None = field(default=None, repr=False, compare=False)
    label: str = ""  # the name a person reads, with the depth: "VGG-16-BN" (default: the family)
    # The layer Grad-CAM explains by default (engine.probes.gradcam): the end of the last
    # convolution stage that still has a spatial map worth showing; a caller may name any other.
    gradcam_layer: str = ""

    @property
    def display(self) -> str:
        return self.label or self.family

    @property
    def key(self) -> tuple[str, str]:
        return (self.profile, self.name)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def title(self) -> str:
        return f"{self.display} ({self.name})"

    def build(self) -> nn.Module:
        """A fresh module with random weights, in eval mode."""
        return self.builder(num_classes=self.num_classes).eval()


class RegistryError(KeyError):
    """An unknown or duplicated model name."""

    def __str__(self) -> str:  # KeyError quotes its message; a user should see it plainly
        return str(self.args[0]) if self.args else ""
