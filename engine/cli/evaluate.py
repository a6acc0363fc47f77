"""``python main.py eval``: top-1/top-5 accuracy and throughput on a labelled test set."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from engine.cli.args import parse_weights
from engine.cli.output import CliError, JobProgressBar, format_table, print_json, stop_on_signals
from engine.data.datasets import DataError, has_split_layout, load_cifar10
from engine.data.imageio import display_name
from engine.jobs import Cancelled, JobState
from engine.models.registry import CIFAR10_CLASSES, RegistryError, comparison_specs, get_spec
from engine.models.weights import UNTRAINED, WeightsError, load_model
from engine.runtime.backends import BackendError, label
from engine.runtime.device import device_label, resolve_device
from engine.runtime.precision import PrecisionError, check_precision
from engine.runtime.quantize import DEFAULT_CONFIG, HOLD_POINTS
from engine.studies.evaluation import (
    EVAL_BATCH,
    EvalError,
    check_labels,
    evaluate_int8,
    evaluate_results,
    missing_classes,
    sample_indices,
)

TTA_VIEWS = {"flip": " of both images", "flip+shift": " of all six views"}


def cmd_eval(args: argparse.Namespace) -> int:
    profile = getattr(args, "profile", None) or "cifar10"
    try:
        device = resolve_device(args.device, strict=True)
    except ValueError as e:
        raise CliError(str(e)) from None
    backend = args.backend or "torch"
    if args.precision == "int8":
        if args.backend not in (None, "onnxruntime"):
            raise CliError(f"--precision int8 runs on ONNX Runtime only, not {args.backend}: "
                           f"use --backend onnxruntime or leave --backend out")
        if device.type != "cpu":
            raise CliError("--precision int8 runs on ONNX Runtime's CPU provider: use --device cpu")
        backend = "onnxruntime"
    else:
        try:
            check_precision(args.precision, device)
        except PrecisionError as e:
            raise CliError(str(e)) from None
    try:
        specs = [get_spec(n, profile) for n in args.models] if args.models else comparison_specs(profile)
    except RegistryError as e:
        raise CliError(str(e)) from None
    if args.limit is not None and args.limit <= 0:
        raise CliError("--limit must be a positive number of images")
    if args.precision == "int8":
        try:
            if not has_split_layout(args.data):
                raise CliError(f"{display_name(args.data)}: has no training split to calibrate int8 on "
                               f"(it needs train/ and test/ folders, or the official archive)")
        except DataError as e:
            raise CliError(str(e)) from None
    loaded, images, labels = networks_and_test_set(specs, args.weights, args.data, "evaluated")
    missing = missing_classes(labels, CIFAR10_CLASSES)
    if missing:
        _warn(f"{display_name(args.data)}: the test set has no images of {len(missing)} of the "
              f"{len(CIFAR10_CLASSES)} classes ({', '.join(missing)}); the accuracy is over the others only")
    idx = sample_indices(len(labels), args.limit)
    images, labels = images[idx], labels[idx]
    if args.precision == "int8":
        return _eval_int8(args, loaded, images, labels)
    results, status = _as_job(lambda job: evaluate_results(loaded, images, labels, device=device, tta=args.tta,
                                                           job=job, precision=args.precision, backend=backend))
    if args.json:
        print_json({r.name: r.as_dict() for r in results})
        return status
    rows = [[r.name, f"{100 * r.top1:.2f}%", f"{100 * r.top5:.2f}%", r.images, f"{r.images_per_s:.0f}",
             "UNTRAINED" if r.weights_status == UNTRAINED else r.weights_status] for r in results]
    data_name = "torchvision CIFAR-10" if args.data == "download" else display_name(args.data)
    print(f"{data_name}, test split: {len(labels)} images, device {device_label(device)}"
          f"{f', {args.tta} TTA' if args.tta else ''}{', bf16' if args.precision == 'bf16' else ''}, "
          f"backend {label(backend)}")
    print(format_table(["model", "top-1", "top-5", "images", "images/s", "weights"], rows, right={1, 2, 3, 4}))
    batches = {len(r.batch_images_per_s) for r in results}
    if batches and min(batches) > 0:
        print(f"  images/s: median over the full batches of {EVAL_BATCH} ({'/'.join(map(str, sorted(batches)))} "
              f"per network), warm, from the decoded image tensor to the logits{TTA_VIEWS.get(args.tta, '')}")
    else:
        print(f"  images/s: one pass over fewer than {EVAL_BATCH} images (no full batch to take a median of)")
    for r in results:
        if r.weights_status == UNTRAINED:
            print(f"  {r.name}: UNTRAINED (random weights): {r.weights_source}")
    return status


def _as_job(evaluate: Callable[[JobState], list]) -> tuple[list, int]:
    """``evaluate(job)`` with a progress bar, and Ctrl-C stopping it between batches: (its results,
    or the networks finished when it stopped, which are still worth printing; the exit status)."""
    job = JobState(on_progress=JobProgressBar())
    with stop_on_signals(job):
        try:
            return evaluate(job), 0
        except BackendError as e:
            raise CliError(str(e)) from None
        except Cancelled:
            results = job.partial["results"]
            print(f"eval stopped: finished networks: {', '.join(r.name for r in results) or 'none'}",
                  file=sys.stderr)
            return results, 130


def _eval_int8(args: argparse.Namespace, loaded, images, labels) -> int:
    """Each network in fp32 and int8 on ONNX Runtime, side by side (``--precision int8``)."""
    try:
        train, _ = load_cifar10(args.data, "train", warn=_warn)
    except DataError as e:
        raise CliError(str(e)) from None
    results, status = _as_job(lambda job: evaluate_int8(loaded, images, labels, train, tta=args.tta, job=job))
    if args.json:
        print_json({r.name: r.as_dict() for r in results})
        return status
    config = DEFAULT_CONFIG
    data_name = "torchvision CIFAR-10" if args.data == "download" else display_name(args.data)
    print(f"{data_name}, test split: {len(labels)} images, ONNX Runtime on the CPU, fp32 against int8"
          f"{f', {args.tta} TTA' if args.tta else ''}")
    print(f"  int8: static quantization ({config.key()}), calibrated on {min(config.images, len(train))} "
          f"images of the training split")
    rows = [[r.name, f"{100 * r.fp32.top1:.2f}%", f"{100 * r.int8.top1:.2f}%", f"{r.record.drop_points:+.2f}",
             f"{r.fp32.images_per_s:.0f}", f"{r.int8.images_per_s:.0f}", "yes" if r.holds else "no",
             "UNTRAINED" if r.fp32.weights_status == UNTRAINED else r.fp32.weights_status] for r in results]
    print(format_table(["model", "fp32 top-1", "int8 top-1", "drop (points)", "fp32 images/s", "int8 images/s",
                        f"holds (within {HOLD_POINTS:g})", "weights"], rows, right={1, 2, 3, 4, 5}))
    if results and all(r.fp32.batch_images_per_s and r.int8.batch_images_per_s for r in results):
        print(f"  images/s: median over the full batches of {EVAL_BATCH}, warm, from the decoded image tensor to "
              f"the logits{TTA_VIEWS.get(args.tta, '')}")
    else:
        print(f"  images/s: one pass over fewer than {EVAL_BATCH} images (no full batch to take a median of)")
    print(f"  holds: int8 top-1 within {HOLD_POINTS:g} point of fp32 on these images; drop = fp32 - int8")
    for r in results:
        if r.fp32.weights_status == UNTRAINED:
            print(f"  {r.name}: UNTRAINED (random weights): {r.fp32.weights_source}")
    return status


def networks_and_test_set(specs, weights_args: list[str], data: str, verb: str):
    """The networks (on their ``--weights``, if any) and the CIFAR-10 test split of ``data``, or a
    :class:`CliError` with one line; the networks first, before the data, which may take a while to
    decode the first time. ``verb`` says what the command does with them ("evaluated")."""
    weights = parse_weights(weights_args)
    unknown = [name for name in weights if name not in {s.name for s in specs}]
    if unknown:
        names = ", ".join(s.name for s in specs)
        raise CliError(f"--weights {unknown[0]}: not one of the networks {verb} ({names})")
    try:
        loaded = [load_model(spec, weights.get(spec.name)) for spec in specs]
    except WeightsError as e:
        raise CliError(str(e)) from None
    try:
        images, labels = load_cifar10(data, "test", warn=_warn)
    except DataError as e:
        raise CliError(str(e)) from None
    try:
        check_labels(labels, len(images), len(CIFAR10_CLASSES))
    except EvalError as e:
        raise CliError(f"{display_name(data)}: {e}") from None
    return loaded, images, labels


def _warn(line: str) -> None:
    """A problem with the data that does not stop the evaluation: one line on stderr."""
    print(f"warning: {line}", file=sys.stderr, flush=True)
