"""The survey's three claims, measured on this machine (Canziani, Paszke and Culurciello 2016,
"An Analysis of Deep Neural Network Models for Practical Applications", arXiv 1605.07678):

1. the number of operations predicts inference time;
2. accuracy and inference time trade off hyperbolically: a little more accuracy costs ever more time;
3. ENet uses its parameters best (accuracy per parameter, "information density").

:func:`analyze` measures, for every network of a profile on one device:

- latency per image (p50, p95 of the batch's time divided by its size) at batch sizes 1, 2, 4, ...
  up to ``max_batch``, warm, on the bare network (no preprocessing, no activation capture);
- memory per batch size: the activations of one image as the engine counts them
  (:mod:`engine.models.complexity`: every layer's output, held at once) times the batch, and what the
  process really took: the growth of its resident memory while the batch ran, sampled every
  millisecond, after the C allocator has returned its free memory to the system (CPU), or
  ``torch.cuda.max_memory_allocated`` (CUDA). Inference frees each output once the next layer has
  read it, so the second is far below the first for deep networks;
- the time of every layer at batch 1 inside whole forward passes (a clock read in hooks before and
  after each layer on the CPU, CUDA events on a GPU: nothing synchronises inside the pass), median
  of many passes; the sum of the layers is checked against the whole pass measured without hooks
  (``layers_ratio``, 1.00 when they add up exactly; see :func:`layer_times`).

:func:`judge` turns the measurements into one sentence per claim, from the numbers alone; it is
pure, so made-up measurements test it. Nothing here imports Qt: the window, the CLI and the report
(:mod:`engine.studies.analysis_report`) all read the same immutable :class:`Analysis`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from engine.jobs import JobProgress, JobState
from engine.models.registry import comparison_specs, get_spec
from engine.runtime.backends import BackendError
from engine.runtime.device import resolve_device
from engine.runtime.onnx_cache import onnxruntime_version
from engine.runtime.onnx_export import EXPORT_FORMAT
from engine.runtime.precision import check_precision, dtype_of
from engine.studies.analysis_results import (  # noqa: F401  (re-exported: the Analysis's vocabulary)
    CACHE_VERSION,
    DEFAULT_MAX_BATCH,
    PREDICTS_R2,
    Analysis,
    BackendView,
    BatchPoint,
    Fit,
    LayerTime,
    NetworkAnalysis,
    Verdict,
)
from engine.studies.busy import CpuShare, judged, others_now, quiet_threads, sound
from engine.studies.measure import (  # noqa: F401
    analysis_threads,
    batch_sizes,
    layer_times,
    machine_name,
    measure_network,
)
from engine.studies.verdicts import fit_line, judge, pareto_front  # noqa: F401


def analyze(profile: str = "cifar10", device: str = "cpu", *, max_batch: int = DEFAULT_MAX_BATCH,
            precision: str = "fp32", models: Iterable[str] | None = None,
            job: JobState | None = None, backends: Iterable[str] = ()) -> Analysis:
    """Measure every network of ``profile`` (default: its comparison line-up) and judge the claims.
    Progress is in steps (one per batch size and one per layer pass, per network); a cancel stops
    at the next run (:class:`~engine.jobs.Cancelled`). Torch eager is always measured; each of
    ``backends`` other than torch (onnxruntime, compile) is measured again as a
    :class:`BackendView` with its own fit and verdicts. A network a backend cannot run is left out
    of that view, with a note."""
    from engine.models.weights import UNTRAINED, load_model, published_accuracy

    dev = resolve_device(device)
    check_precision(precision if precision != "auto" else "fp32", dev)
    torch.set_num_threads(quiet_threads(analysis_threads(), others_now()))  # fewer where other work has cores
    dtype = dtype_of(precision)
    specs = [get_spec(n, profile) for n in models] if models is not None else comparison_specs(profile)
    others = [b for b in dict.fromkeys(backends) if b != "torch"]
    steps_each = len(batch_sizes(max_batch)) + 1
    total, done = (steps_each + (steps_each - 1) * len(others)) * len(specs), 0
    started = time.perf_counter()
    networks = []
    notes = []
    share = CpuShare().start()

    def on_step(text: str) -> None:
        nonlocal done
        if job is not None:
            job.check()
            job.report(JobProgress("analyze", done, total, text, "steps"))
        done += 1

    loaded_all = []
    for spec in specs:
        loaded = load_model(spec)
        loaded_all.append(loaded)
        top1 = (loaded.metrics or {}).get("test_top1") if loaded.status != UNTRAINED else None
        kind = "test" if top1 is not None else "none"
        if top1 is None and (published := published_accuracy(spec)) is not None:
            top1, kind = published[0], "published"
        if loaded.status == UNTRAINED and kind == "published":
            notes.append(f"{spec.display}: torchvision's published top-1; its weights are not downloaded here "
                         "(the timings do not depend on them)")
        networks.append(measure_network(spec, loaded.model, dev, max_batch, dtype=dtype, top1=top1,
                                        top1_kind=kind, weights=str(loaded.status), job=job, on_step=on_step))
        if job is not None:
            job.partial["networks"] = tuple(networks)
    views = []
    for backend in others:
        measured, view_notes = [], []
        for spec, loaded, torch_net in zip(specs, loaded_all, networks):
            try:
                measured.append(measure_network(spec, loaded.model, dev, max_batch, dtype=dtype, top1=torch_net.top1,
                                                top1_kind=torch_net.top1_kind, weights=torch_net.weights, job=job,
                                                on_step=lambda text, b=backend: on_step(f"{text} ({b})"),
                                                backend=backend))
            except BackendError as e:
                view_notes.append(f"{e}: left out of this backend's fit")
        network_fit, _, verdicts = judge(tuple(measured))
        views.append(BackendView(backend, tuple(measured), network_fit, verdicts, tuple(view_notes)))
    if job is not None:
        job.report(JobProgress("analyze", total, total, "done", "steps"))
    network_fit, layer_fit, verdicts = judge(tuple(networks))
    load = share.stop().load(torch.get_num_threads()) if dev.type == "cpu" else None
    return judged(Analysis(profile, str(dev), torch.get_num_threads(), precision, torch.__version__, machine_name(),
                           time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter() - started, max_batch,
                           tuple(networks), network_fit, layer_fit, verdicts, False, tuple(notes), tuple(views), load))


# -- the cache -------------------------------------------------------------------------------------


def cache_dir() -> Path:
    from engine.common.settings import cache_dir as default_cache_dir

    return default_cache_dir() / "analysis"


def cache_key(profile: str, device: str, precision: str, max_batch: int, models: Iterable[str] | None = None,
              backends: Iterable[str] = ()) -> str:
    """Machine, profile, device, precision, largest batch, torch version, threads, the networks'
    weights files and the other backends measured (with ONNX Runtime's version and the export's
    format): anything that changes a measurement changes the key."""
    from engine.models.weights import resolve

    specs = [get_spec(n, profile) for n in models] if models is not None else comparison_specs(profile)
    weights = []
    for spec in specs:
        info = resolve(spec)
        path = getattr(info, "path", None)
        stamp = ""
        if path is not None and os.path.exists(path):
            st = os.stat(path)
            stamp = f"{st.st_size}:{int(st.st_mtime)}"
        weights.append(f"{spec.name}={info.status}:{stamp}")
    text = "|".join([str(CACHE_VERSION), platform.node(), machine_name(), profile, str(resolve_device(device)),
                     precision, str(max_batch), torch.__version__, str(analysis_threads()), *weights])
    others = [b for b in dict.fromkeys(backends) if b != "torch"]
    if others:  # a new form of the ONNX export changes ONNX Runtime's times
        text += "|" + ",".join(others) + "|" + (onnxruntime_version() or "") + f"|export {EXPORT_FORMAT}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


MAX_CACHE_BYTES = 64 << 20  # an analysis of every network is well under a megabyte


def load_cached(key: str) -> Analysis | None:
    """The cached analysis for ``key``, or None (none, or unreadable: measured again; a damaged one
    is one line on stderr)."""
    from engine.common.files import cache_rebuilt, read_regular
    from engine.common.schema import check_fields

    path = cache_dir() / f"{key}.json"
    try:
        data = json.loads(read_regular(path, MAX_CACHE_BYTES).decode("utf-8"))
        cached = Analysis.from_dict({**data, "cached": True})
        check_fields(cached)
        # the measurements are kept; the verdicts are judged again, by this version's rules (which
        # also finds a field of the wrong type that from_dict let through)
        network_fit, layer_fit, verdicts = judge(cached.networks)
        views = tuple(dataclasses.replace(v, network_fit=fit, verdicts=vs) for v in cached.backends
                      for fit, _, vs in [judge(v.networks)])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, ArithmeticError) as e:
        cache_rebuilt("analysis", path, e)
        return None
    if not sound(cached):  # a broken timing is never served, whoever wrote it
        return None
    # the measurements are kept; the verdicts are judged again, by this version's rules
    network_fit, layer_fit, verdicts = judge(cached.networks)
    views = tuple(dataclasses.replace(v, network_fit=fit, verdicts=vs) for v in cached.backends
                  for fit, _, vs in [judge(v.networks)])
    return dataclasses.replace(cached, network_fit=network_fit, layer_fit=layer_fit, verdicts=verdicts,
                               backends=views)


def save_cached(key: str, analysis: Analysis) -> None:
    from engine.common.files import atomic_write

    folder = cache_dir()
    if not sound(analysis):  # measured again next time: a busy moment is not kept
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(analysis.to_dict(), allow_nan=True)
        atomic_write(folder / f"{key}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"), cache=True)
    except OSError:
        pass  # a cache that cannot be written only costs a measurement next time


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
