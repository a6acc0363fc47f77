"""How much of each network's accuracy survives perturbed images: the robustness bench.

:func:`robustness` perturbs a labelled set with every perturbation of :mod:`engine.probes.perturb` at
severities 1..5 (each image once per perturbation and severity, shared by every network) and
measures each network's top-1 on the clean images and on each perturbed copy, batched through
:func:`engine.studies.evaluation.predict_logits` as ``eval`` is. ``python main.py robustness``
(:mod:`engine.cli.robustness`) prints and plots it.

What the numbers cover (all fractions 0..1 of the images given):

- ``clean[model]``: top-1 on the images as given;
- ``top1[model, kind, severity]``: top-1 on the images with that perturbation at that severity;
- ``mean_top1(model)``: the mean of ``top1`` over every kind and severity measured (the "mean
  corruption accuracy" of Hendrycks & Dietterich 2019, over this bench's perturbations, which
  include two geometric ones of this project: see :mod:`engine.probes.perturb`);
- ``relative(model)``: ``mean_top1 / clean``, the share of its clean accuracy a network keeps
  under perturbation on average (1.0: unaffected).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from engine.jobs import JobProgress, JobState
from engine.models.registry import ModelSpec
from engine.probes.perturb import KINDS, SEVERITIES, Perturbation, apply_all
from engine.runtime.precision import dtype_of
from engine.studies.evaluation import EVAL_BATCH, check_labels, predict_logits


@dataclass(frozen=True, eq=False)  # holds an array: equal only to itself
class RobustnessResult:
    """Top-1 accuracy of each network, clean and under each perturbation (module docs).

    ``top1`` is a read-only float64 array (models, kinds, severities), NaN where a cell was not
    measured (a cancelled run's partial result). ``weights_status[model]`` says whether the network
    ran on trained weights ("untrained" means random ones).
    """

    models: tuple[str, ...]
    kinds: tuple[str, ...]
    severities: tuple[int, ...]
    images: int
    clean: Mapping[str, float]
    top1: np.ndarray
    seconds: float
    weights_status: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    seed: int = 0

    def accuracy(self, model: str, kind: str, severity: int) -> float:
        """Top-1 (0..1) of ``model`` under ``kind`` at ``severity``; severity 0 is the clean top-1."""
        if severity == 0:
            return self.clean[model]
        return float(self.top1[self.models.index(model), self.kinds.index(kind), self.severities.index(severity)])

    def curve(self, model: str, kind: str) -> list[float]:
        """Top-1 at severity 0 (clean) then each of :attr:`severities`."""
        return [self.clean[model], *self.top1[self.models.index(model), self.kinds.index(kind)].tolist()]

    def mean_top1(self, model: str) -> float:
        """Mean top-1 over every perturbation and severity measured (NaN if none was)."""
        row = self.top1[self.models.index(model)]
        return float(np.nanmean(row)) if np.isfinite(row).any() else float("nan")

    def relative(self, model: str) -> float:
        """:meth:`mean_top1` over the clean top-1 (NaN when the clean top-1 is 0)."""
        clean = self.clean.get(model, float("nan"))
        return self.mean_top1(model) / clean if clean > 0 else float("nan")

    @property
    def complete(self) -> bool:
        return len(self.clean) == len(self.models) and bool(np.isfinite(self.top1).all())

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON: per model its clean and mean top-1, relative, and
        ``top1[kind]`` = [severity 1, ..., severity 5]."""
        return {
            "images": self.images, "seconds": round(self.seconds, 3), "seed": self.seed,
            "severities": list(self.severities), "perturbations": list(self.kinds),
            "models": {m: {
                "clean_top1": self.clean.get(m),
                "mean_top1": self.mean_top1(m),
                "relative": self.relative(m),
                "weights_status": self.weights_status.get(m, ""),
                "top1": {k: self.top1[i, j].tolist() for j, k in enumerate(self.kinds)},
            } for i, m in enumerate(self.models)},
        }


def robustness(models: Iterable[Any], images: np.ndarray, labels: np.ndarray | torch.Tensor, *,
               kinds: Sequence[str] = KINDS, severities: Sequence[int] = SEVERITIES, seed: int = 0,
               device: torch.device | str = "cpu", batch_size: int = EVAL_BATCH, precision: str = "fp32",
               job: JobState | None = None) -> RobustnessResult:
    """Top-1 of each of ``models`` (:class:`engine.models.weights.LoadedModel` or :class:`ModelSpec`,
    loaded with its default weights) on ``images`` (uint8, N x 32 x 32 x 3 for the CIFAR networks)
    and ``labels``, clean and under each of ``kinds`` at each of ``severities`` (noise seeded by
    ``seed``, per image).

    With a ``job``: progress in images over all the passes (each network's clean pass, then per
    perturbation and severity one pass per network), a cancel between batches
    (:class:`~engine.jobs.Cancelled`), and ``job.partial["result"]``: a :class:`RobustnessResult`
    with what was measured so far (NaN elsewhere). Labels that are not one class index per image
    raise :class:`~engine.studies.evaluation.EvalError` before anything runs.
    """
    from engine.models.weights import LoadedModel, load_model

    started = time.perf_counter()
    device = torch.device(device) if isinstance(device, str) else device
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {getattr(images, 'shape', None)}")
    items = list(models)
    n = int(images.shape[0])
    kinds, severities = tuple(kinds), tuple(severities)
    for kind in kinds:
        Perturbation(kind, 0)  # an unknown kind raises PerturbError now, not after the clean pass
    for s in severities:
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 5:
            raise ValueError(f"severities run from 1 to 5, not {s!r}")
    for item in items:
        spec = item if isinstance(item, ModelSpec) else item.spec
        check_labels(labels, n, spec.num_classes)
    labels_t = torch.as_tensor(labels).long()
    loaded = [load_model(item) if isinstance(item, ModelSpec) else item for item in items]
    for item in loaded:
        if not isinstance(item, LoadedModel):
            raise TypeError(f"expected a LoadedModel or ModelSpec, got {type(item).__name__}")
    names = tuple(m.spec.name for m in loaded)
    specs = [_image_logits_only(m.spec) for m in loaded]
    dtype = dtype_of(precision)
    nets = []
    for m in loaded:
        net = m.model.to(device).to(memory_format=torch.channels_last).eval()
        if dtype != torch.float32:  # a copy: the caller's network stays as it was
            net = copy.deepcopy(net).to(dtype)
        nets.append(net)

    top1 = np.full((len(names), len(kinds), len(severities)), np.nan)
    clean: dict[str, float] = {}
    status = MappingProxyType({m.spec.name: str(m.status) for m in loaded})
    total = n * len(nets) * (1 + len(kinds) * len(severities))
    done = 0

    def result() -> RobustnessResult:
        cells = top1.copy()
        cells.flags.writeable = False
        return RobustnessResult(names, kinds, severities, n, MappingProxyType(dict(clean)), cells,
                                time.perf_counter() - started, status, seed)

    def accuracy(i: int, batch: np.ndarray, what: str) -> float:
        nonlocal done
        on_batch = None
        if job is not None:
            def on_batch(k: int, offset: int = done) -> None:
                job.check()
                job.report(JobProgress("robustness", offset + k, total, f"{names[i]} {what}", "images"))
        logits = predict_logits(specs[i], nets[i], batch, device=device, batch_size=batch_size,
                                dtype=dtype, on_batch=on_batch)
        done += n
        return float((logits.argmax(1) == labels_t).double().mean()) if n else float("nan")

    if job is not None:
        job.partial["result"] = result()
    for i in range(len(nets)):
        clean[names[i]] = accuracy(i, images, "clean")
        if job is not None:
            job.partial["result"] = result()
    for j, kind in enumerate(kinds):
        for k, severity in enumerate(severities):
            if job is not None:
                job.check()
            perturbed = apply_all(images, Perturbation(kind, severity, seed))
            for i in range(len(nets)):
                top1[i, j, k] = accuracy(i, perturbed, f"{kind} {severity}")
            if job is not None:
                job.partial["result"] = result()
    if job is not None:
        job.report(JobProgress("robustness", total, total, "done", "images"))
    return result()


def _image_logits_only(spec: ModelSpec) -> ModelSpec:
    """``spec`` as a plain classifier for :func:`predict_logits`: a network with a per-pixel class
    map (ENet) then computes its image logits with its own ``forward`` (encoder and head), not the
    app's whole pass, whose decoder the image logits do not read. The same logits, for less work."""
    return replace(spec, has_class_map=False) if spec.has_class_map else spec
