"""The one registry of model specs.

Every part of the app (CLI, engine, window) learns which networks exist from here and nowhere
else. A spec is frozen: it describes a network, it does not hold one. ``spec.build()`` makes a fresh
module with random weights; loading weights is the job of :mod:`engine.models.weights`.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.models.catalogue import BUILT_IN
from engine.models.spec import (  # noqa: F401  (re-exported: callers learn everything about specs here)
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PROFILES,
    ModelSpec,
    RegistryError,
)

_REGISTRY: dict[tuple[str, str], ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.profile not in PROFILES:
        raise ValueError(f"unknown profile {spec.profile!r}; expected one of {', '.join(PROFILES)}")
    if spec.key in _REGISTRY:
        raise RegistryError(f"model {spec.name!r} is already registered in profile {spec.profile!r}")
    _REGISTRY[spec.key] = spec
    return spec


def get_spec(name: str, profile: str = "cifar10") -> ModelSpec:
    try:
        return _REGISTRY[(profile, name)]
    except KeyError:
        known = ", ".join(s.name for s in list_specs(profile)) or "none"
        raise RegistryError(f"no model {name!r} in profile {profile!r} (known: {known})") from None


def list_specs(profile: str | None = None) -> list[ModelSpec]:
    """Specs in registration order (the order the window shows them), optionally one profile."""
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


for _spec in BUILT_IN:
    register(_spec)
