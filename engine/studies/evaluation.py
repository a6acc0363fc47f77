"""Top-1/top-5 accuracy and throughput of trained networks on a labelled set.

:func:`prepare_batch` is the one way a ``uint8`` NHWC batch becomes the normalised float NCHW input
a CIFAR network sees; training uses the same function, so what is evaluated is what was trained.
:func:`evaluate` is the plain-function API; ``python main.py eval`` (:mod:`engine.cli.evaluate`) prints it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from engine.jobs import JobProgress, JobState
from engine.models.adapter import ModelAdapter
from engine.models.preprocess import normalise, normaliser
from engine.models.registry import ModelSpec
from engine.runtime.backends import Runner, make_runner
from engine.runtime.device import synchronize
from engine.runtime.precision import dtype_of

EVAL_BATCH = 256
TTA_MODES = ("flip", "flip+shift")  # what ``tta`` may name (True is "flip")


def tta_mode(tta: bool | str | None) -> str | None:
    """``tta`` as one of :data:`TTA_MODES`, or None for no test-time augmentation."""
    if tta is None or tta is False or tta == "":
        return None
    mode = "flip" if tta is True else tta
    if mode not in TTA_MODES:
        raise ValueError(f"test-time augmentation {tta!r}: expected one of {', '.join(TTA_MODES)}")
    return mode


def _augmented_logits(spec: ModelSpec, model: nn.Module, x: torch.Tensor, plain: torch.Tensor,
                      mode: str) -> torch.Tensor:
    """``plain`` (the logits of ``x``) averaged with those of the views ``mode`` names.

    "flip": the mirror image. "flip+shift", as airbench (arXiv 2404.00498) evaluates: half that,
    half the same pair for the image moved by one pixel up-left and one down-right (reflected at
    the edge), averaged; six passes in all.
    """
    def mirrored(view: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        if logits is None:
            logits = image_logits(spec, model, view).float()
        return 0.5 * (logits + image_logits(spec, model, view.flip(3)).float())

    both = mirrored(x, plain)
    if mode == "flip":
        return both
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * (mirrored(padded[..., :h, :w]) + mirrored(padded[..., 2:, 2:]))
    return 0.5 * (both + shifted)


class EvalError(ValueError):
    """Images and labels that cannot be evaluated; ``str(e)`` is one line."""


def check_labels(labels: np.ndarray | torch.Tensor, images: int, num_classes: int) -> None:
    """Refuse labels that would make the accuracy meaningless: not one integer per image, or a class
    index the networks cannot answer (every such image would count as a silent miss)."""
    labels_t = torch.as_tensor(labels)
    if labels_t.dtype.is_floating_point or labels_t.dtype.is_complex or labels_t.dtype == torch.bool:
        raise EvalError(f"labels are {str(labels_t.dtype).removeprefix('torch.')}, not class indices")
    if labels_t.dim() != 1 or labels_t.shape[0] != images:
        raise EvalError(f"{tuple(labels_t.shape)} labels for {images} images; expected one label per image")
    if labels_t.numel():
        low, high = int(labels_t.min()), int(labels_t.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            count = int(((labels_t < 0) | (labels_t >= num_classes)).sum())
            raise EvalError(f"label {bad} is outside the {num_classes} classes (0..{num_classes - 1}); "
                            f"{count} of {images} labels are")


def missing_classes(labels: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> list[str]:
    """The classes of ``class_names`` that no label names: a set without them is evaluated on the
    others only, which a reader of its accuracy should be told."""
    present = set(torch.as_tensor(labels).reshape(-1).tolist())
    return [name for i, name in enumerate(class_names) if i not in present]


def image_logits(spec: ModelSpec, model: nn.Module | Runner, x: torch.Tensor) -> torch.Tensor:
    """``model``'s image logits for the batch ``x``; ``model`` may be a backend's runner
    (:mod:`engine.runtime.backends`) instead of the torch module."""
    if isinstance(model, Runner):
        return model.logits(x)
    return ModelAdapter(spec, model).logits(x)


@torch.inference_mode()
def predict_logits(spec: ModelSpec, model: nn.Module, images: torch.Tensor | np.ndarray, *,
                   device: torch.device, batch_size: int = EVAL_BATCH, tta: bool | str = False,
                   autocast: bool | None = None, dtype: torch.dtype = torch.float32,
                   on_batch: Callable[[int], None] | None = None,
                   batch_times: list[tuple[int, float]] | None = None) -> torch.Tensor:
    """Float32 image logits ``(N, C)`` on the CPU for ``uint8 (N, H, W, 3)`` images.

    ``tta`` (True or "flip") averages the logits of each image and its mirror image; "flip+shift"
    adds the pair moved by a pixel (:func:`_augmented_logits`). ``autocast`` (default: on CUDA
    only) runs the network in bf16; ``dtype`` is that of ``model``'s weights (bf16 for a network
    converted as :mod:`engine.runtime.precision` does), to which the input is cast. ``on_batch(images)``
    is called before each batch with the number of images done so far (a job's progress and cancel point).
    ``batch_times`` receives (images, seconds) for each batch, synchronised on CUDA.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    images = images.to(device)
    if isinstance(model, nn.Module):
        model.eval()
    norm = normaliser(spec.mean, spec.std, device)
    mode = tta_mode(tta)
    use_autocast = (device.type == "cuda") if autocast is None else autocast
    out = []
    for start in range(0, images.shape[0], batch_size):
        if on_batch is not None:
            on_batch(start)
        t0 = time.perf_counter()
        x = normalise(images[start:start + batch_size], norm).to(dtype)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
            logits = image_logits(spec, model, x).float()
            if mode is not None:
                logits = _augmented_logits(spec, model, x, logits, mode)
        out.append(logits.cpu())
        if batch_times is not None:
            synchronize(device)
            batch_times.append((int(x.shape[0]), time.perf_counter() - t0))
    if not out:
        return torch.zeros((0, spec.num_classes))
    return torch.cat(out)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor | np.ndarray, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Fractions (0..1) of rows whose label is among the ``k`` largest logits, for each ``k``."""
    labels = torch.as_tensor(labels).to(logits.device).long()
    n = labels.shape[0]
    if n == 0:
        return [0.0 for _ in ks]
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == labels[:, None]
    return [hits[:, :min(k, kmax)].any(dim=1).sum().item() / n for k in ks]


@dataclass(frozen=True)
class EvalResult:
    name: str
    top1: float
    top5: float
    images: int
    seconds: float
    weights_status: str
    weights_source: str = ""
    batch_images_per_s: tuple[float, ...] = ()  # each full batch's rate, warm (preprocessing on the tensor in)
    backend: str = "torch"  # what ran the network (engine.runtime.backends)

    @property
    def images_per_s(self) -> float:
        """The median over the full batches of their images per second (one slow batch, when the
        machine was busy for a moment, does not move it); the whole pass's mean if there is none."""
        if self.batch_images_per_s:
            return float(np.median(self.batch_images_per_s))
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "images": self.images,
                "images_per_s": round(self.images_per_s, 1), "timed_batches": len(self.batch_images_per_s),
                "seconds": round(self.seconds, 3),
                "weights_status": self.weights_status, "weights_source": self.weights_source,
                "backend": self.backend}


def evaluate(models: Iterable[Any], images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, *,
             device: torch.device | str = "cpu", batch_size: int = EVAL_BATCH,
             tta: bool | str = False, job: JobState | None = None, precision: str = "fp32",
             backend: str = "torch") -> dict[str, dict[str, Any]]:
    """Accuracy and speed of each model on ``images`` (uint8 NHWC) with ``labels``.

    ``models`` holds :class:`engine.models.weights.LoadedModel` objects or :class:`ModelSpec` objects (loaded
    with their default weights). Returns ``{name: {top1, top5, images, images_per_s, seconds,
    weights_status, weights_source}}`` in the order given. With a ``job``: progress in images over
    all the models, and a cancel between batches (:class:`~engine.jobs.Cancelled`); the networks
    finished by then are in ``job.partial["results"]``. Labels that are not one class index of the
    models per image raise :class:`EvalError` before anything runs.
    """
    return {r.name: r.as_dict() for r in evaluate_results(models, images, labels, device=device,
                                                         batch_size=batch_size, tta=tta, job=job,
                                                         precision=precision, backend=backend)}


def evaluate_results(models: Iterable[Any], images, labels, *, device: torch.device | str = "cpu",
                     batch_size: int = EVAL_BATCH, tta: bool | str = False, job: JobState | None = None,
                     precision: str = "fp32", backend: str = "torch") -> list[EvalResult]:
    """:func:`evaluate`'s results as :class:`EvalResult` objects. ``backend`` runs the networks on
    another backend than torch eager (:mod:`engine.runtime.backends`; a network it
    cannot run raises :class:`~engine.runtime.backends.BackendError`)."""
    from engine.models.weights import UNTRAINED, LoadedModel, load_model

    device = torch.device(device) if isinstance(device, str) else device
    images_t = torch.as_tensor(images).to(device)
    models = list(models)
    n = int(images_t.shape[0])
    for item in models:
        spec = item if isinstance(item, ModelSpec) else getattr(item, "spec", None)
        if spec is not None:
            check_labels(labels, n, spec.num_classes)
    labels_t = torch.as_tensor(labels).long()
    results: list[EvalResult] = []
    if job is not None:
        job.partial["results"] = results
    for i, item in enumerate(models):
        on_batch = None
        if job is not None:
            name = item.name if isinstance(item, ModelSpec) else item.spec.name

            def on_batch(done: int, offset: int = i * n, name: str = name) -> None:
                job.check()
                job.report(JobProgress("eval", offset + done, n * len(models), name, "images"))

            on_batch(0)
        loaded = load_model(item) if isinstance(item, ModelSpec) else item
        if not isinstance(loaded, LoadedModel):
            raise TypeError(f"expected a LoadedModel or ModelSpec, got {type(item).__name__}")
        dtype = dtype_of(precision)
        model = loaded.model.to(device).to(memory_format=torch.channels_last).eval()
        # ONNX Runtime exports the float32 weights (it runs float32), before any bf16 copy
        runner = make_runner(backend, ModelAdapter(loaded.spec, model), device=device,
                             precision=_runs_in(backend, precision, device), cache=loaded.status != UNTRAINED)
        if dtype != torch.float32:  # a copy: the caller's network stays as it was
            model = copy.deepcopy(model).to(dtype)
        if runner is not None:
            model = runner
        results.append(_measure(loaded, model, images_t, labels_t, device=device, batch_size=batch_size,
                                tta=tta, dtype=dtype, on_batch=on_batch, backend=backend))
    if job is not None:
        job.report(JobProgress("eval", n * len(models), n * len(models), "done", "images"))
    return results


def _runs_in(backend: str, precision: str, device: torch.device) -> str:
    """The precision ``backend`` runs a request for ``precision`` in: its own where it has it, else
    float32 (ONNX Runtime runs the float32 export of the float32 weights for a bf16 request)."""
    from engine.runtime.backends import backend as backend_entry

    return precision if precision in backend_entry(backend).precisions(device) else "fp32"


def _measure(loaded, model: nn.Module | Runner, images_t: torch.Tensor, labels_t: torch.Tensor, *,
             device: torch.device, batch_size: int, tta: bool | str, dtype: torch.dtype = torch.float32,
             on_batch: Callable[[int], None] | None = None, backend: str = "torch") -> EvalResult:
    """One network's accuracy and speed on the images (warm: a small batch runs first)."""
    # A small warm-up batch keeps one-off setup (kernel selection, allocation) out of the timing.
    predict_logits(loaded.spec, model, images_t[:min(8, images_t.shape[0])], device=device,
                   batch_size=batch_size, dtype=dtype)
    synchronize(device)
    start = time.perf_counter()
    batch_times: list[tuple[int, float]] = []
    logits = predict_logits(loaded.spec, model, images_t, device=device, batch_size=batch_size, tta=tta,
                            dtype=dtype, on_batch=on_batch, batch_times=batch_times)
    synchronize(device)
    seconds = time.perf_counter() - start
    top1, top5 = topk_accuracy(logits, labels_t)
    full = [k / t for k, t in batch_times if k == batch_size and t > 0]
    return EvalResult(loaded.spec.name, top1, top5, int(labels_t.shape[0]), seconds,
                      loaded.status, loaded.source, tuple(full), backend)


@dataclass(frozen=True)
class Int8Result:
    """One network in fp32 and int8 on ONNX Runtime, on the same test images."""

    fp32: EvalResult
    int8: EvalResult
    record: Any  # engine.runtime.quantize.Int8Record
    holds: bool  # int8 top-1 within HOLD_POINTS of fp32
    quantize_seconds: float  # 0 when the int8 graph came from the cache

    @property
    def name(self) -> str:
        return self.fp32.name

    def as_dict(self) -> dict[str, Any]:
        from engine.runtime.quantize import HOLD_POINTS

        return {"fp32": self.fp32.as_dict(), "int8": self.int8.as_dict(),
                "drop_points": round(self.record.drop_points, 3), "holds": self.holds,
                "limit_points": HOLD_POINTS, "config": self.record.config_key,
                "quantize_seconds": round(self.quantize_seconds, 2)}


def evaluate_int8(models: Sequence[Any], images, labels, train_images: np.ndarray, *, config=None,
                  batch_size: int = EVAL_BATCH, tta: bool | str = False,
                  job: JobState | None = None) -> list[Int8Result]:
    """Each network on ONNX Runtime in fp32 and in int8 (:mod:`engine.runtime.quantize`), quantized
    with ``config`` (default: the quantize module's) and calibrated on ``train_images`` (uint8 NHWC,
    the training split), on the test ``images``; an :class:`~engine.runtime.quantize.Int8Record` of
    each trained network is written beside its int8 graph (without test-time augmentation only).
    ``models`` are LoadedModel objects."""
    from engine.models.weights import UNTRAINED
    from engine.runtime.backends.ort import OrtRunner
    from engine.runtime.layers import feature_layers
    from engine.runtime.quantize import (
        DEFAULT_CONFIG,
        Int8Cache,
        Int8Graphs,
        Int8Record,
        calibration_inputs,
        fingerprint,
        holds,
        int8_graph,
        now_utc,
    )

    config = config or DEFAULT_CONFIG
    cpu = torch.device("cpu")
    images_t, labels_t = torch.as_tensor(images), torch.as_tensor(labels).long()
    n, total = int(images_t.shape[0]), 2 * int(images_t.shape[0]) * len(models)
    for loaded in models:
        check_labels(labels_t, n, loaded.spec.num_classes)
    test_set = fingerprint(np.concatenate([images_t.numpy().reshape(-1), labels_t.numpy().view(np.uint8)]))
    results: list[Int8Result] = []
    if job is not None:
        job.partial["results"] = results
    for i, loaded in enumerate(models):
        spec, cache = loaded.spec, Int8Cache() if loaded.status != UNTRAINED else None
        adapter = ModelAdapter(spec, loaded.model.to(cpu).eval())
        calibration = calibration_inputs(spec, train_images, config.images, config.seed)
        # quantized with every layer the window shows as an output, as the live engine cuts its tap
        # sets from it (engine.runtime.backends.ort.int8_runner); measured with none
        layers = tuple(layer.name for layer in feature_layers(adapter, cpu))
        graph = int8_graph(adapter, calibration, config, cache=cache, layers=layers)
        int8_runner = OrtRunner(adapter, spec.has_class_map, threads=torch.get_num_threads(), precision="int8",
                                graphs=Int8Graphs(graph, layers, spec.has_class_map))
        measured = []
        for k, runner in enumerate((make_runner("onnxruntime", adapter, device=cpu, cache=cache is not None),
                                    int8_runner)):
            on_batch = None
            if job is not None:
                def on_batch(done: int, offset: int = (2 * i + k) * n, name: str = spec.name) -> None:
                    job.check()
                    job.report(JobProgress("eval", offset + done, total, name, "images"))
            measured.append(_measure(loaded, runner, images_t, labels_t, device=cpu, batch_size=batch_size,
                                     tta=tta, on_batch=on_batch, backend="onnxruntime"))
        fp32, int8 = measured
        record = Int8Record(spec.name, spec.profile, graph.weights_digest, graph.config_key, graph.calibration,
                            test_set, n, fp32.top1, int8.top1, now_utc())
        if cache is not None and tta_mode(tta) is None:  # a record is of the plain top-1s
            path = cache.record_path(spec, graph.key)
            known = cache.read_record(path, {"weights_digest": graph.weights_digest, "config_key": graph.config_key,
                                             "calibration": graph.calibration})
            if known is None or known.images <= n:  # a --limit run never replaces a fuller measurement
                cache.write_record(path, record)
        results.append(Int8Result(fp32, int8, record, holds(record), graph.seconds))
    if job is not None:
        job.report(JobProgress("eval", total, total, "done", "images"))
    return results


def sample_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """``limit`` indices of ``range(n)`` spread over the whole set (a fixed shuffle), sorted.

    The loaders order images by class, so "the first N" would be one class only.
    """
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    return np.sort(np.random.Generator(np.random.PCG64(seed)).permutation(n)[:limit])
