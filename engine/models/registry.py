"""The one registry of model specs.

Every part of the app (CLI, engine, window) learns which networks exist from here and nowhere
else. A spec is frozen: it describes a network, it does not hold one. ``spec.build()`` makes a fresh
module with random weights; loading weights is the job of :mod:`engine.weights`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


_REGISTRY: dict[tuple[str, str], ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.profile not in PROFILES:
        raise ValueError(f"unknown profile {spec.profile!r}; expected one of {', '.join(PROFILES)}")
    if spec.key in _REGISTRY:
        raise RegistryError(f"model {spec.name!r} is already registered in profile {spec.profile!r}")
    _REGISTRY[spec.key] = spec
    return spec


def get_spec(name: str, profile: str = "cifar10") -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[(profile, name)]
    except KeyError:
        known = ", ".join(s.name for s in list_specs(profile)) or "none"
        raise RegistryError(f"no model {name!r} in profile {profile!r} (known: {known})") from None


def list_specs(profile: str | None = None) -> list[ModelSpec]:
    """Specs in registration order (the order the window shows them), optionally one profile."""
    _ensure_loaded()
    return [s for s in _REGISTRY.values() if profile is None or s.profile == profile]


def comparison_specs(profile: str) -> list[ModelSpec]:
    """The side-by-side line-up of a profile: one network per family (the first registered)."""
    seen: set[str] = set()
    out = []
    for spec in list_specs(profile):
        if spec.family not in seen:
            seen.add(spec.family)
            out.append(spec)
    return out


def lineup(profile: str, choices: Iterable[str] = ()) -> list[ModelSpec]:
    """The comparison line-up of ``profile`` with a network of the same family swapped in for each
    name in ``choices`` (``["vgg19_bn"]`` puts VGG-19-BN in VGG's place). A name that is not in the
    profile is ignored: a choice remembered for one profile may not exist in the other."""
    chosen = {}
    for name in choices:
        try:
            spec = get_spec(name, profile)
        except RegistryError:
            continue
        chosen[spec.family] = spec
    return [chosen.get(spec.family, spec) for spec in comparison_specs(profile)]


def family_members(profile: str, family: str) -> list[ModelSpec]:
    """Every network of ``family`` in ``profile``, in registration order (the model picker)."""
    return [spec for spec in list_specs(profile) if spec.family == family]


def _ensure_loaded() -> None:
    # The catalogue registers the built-in specs on import; importing it lazily keeps this module
    # free of import cycles (model files import nothing from here but constants).
    from engine.models import catalogue  # noqa: F401
