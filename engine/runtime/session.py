"""All networks of a profile on one frame, in lockstep.

An :class:`InferenceSession` owns the loaded networks and runs every one of them on the same frame,
each through its own preprocessing, and returns one immutable :class:`FrameResult`: per network the
top-k answer, the full probability vector, the latency split into preprocessing and forward, the
activations of the layers the caller asked for, ENet's per-pixel class map, and the results of any
other probe (:mod:`engine.probes`) asked for. It is plain,
single-threaded code: :mod:`engine.live.worker` runs it on a background thread, the CLI calls it directly.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
import torch.nn as nn

from engine.common.errors import error_line
from engine.common.timing import paired_medians_ms
from engine.models.adapter import ModelAdapter, Tap, without_in_place_ops
from engine.models.preprocess import Preprocess
from engine.models.registry import ModelSpec, comparison_specs, get_spec
from engine.models.weights import UNTRAINED, LoadedModel, WeightsError, load_model
from engine.probes import Activations, ProbeRequest, run_probe
from engine.probes.base import ProbeFailed, read_only
from engine.runtime import trials
from engine.runtime.backends import (
    BackendError,
    CompiledRunner,
    OnnxCache,
    OrtRunner,
    Runner,
    check_backend,
    onnxruntime_version,
    top_class,
)
from engine.runtime.device import resolve_device, share_cpu_with_opencv, synchronize
from engine.runtime.layers import CONTAINERS, feature_layers, is_container  # noqa: F401  (part of the session's API)
from engine.runtime.precision import AUTO_GAIN, bf16_native, check_precision, dtype_of
from engine.runtime.results import FrameResult, LayerInfo, ModelResult, frozen  # noqa: F401  (likewise)
from engine.runtime.trials import BackendTrial, ThreadTrial, ms_text, torch_threads


@dataclass
class _Network:
    loaded: LoadedModel
    adapter: ModelAdapter
    preprocess: Preprocess
    probes: tuple[ProbeRequest, ...] = ()
    capture: tuple[str, ...] = ()  # the layers whose activations come back in ModelResult
    extra: tuple[ProbeRequest, ...] = ()  # the probes other than activations
    taps: list[Tap] = field(default_factory=list)
    captured: dict[str, torch.Tensor] = field(default_factory=dict)
    top_k: int = 5
    precision: str = "fp32"  # what the torch network runs in: fp32 or bf16 (weights and input)
    precision_note: str = ""  # why, in words, when it was chosen by measuring
    runner: Runner | None = None  # the forward pass on another backend than torch eager
    backend_note: str = ""  # why this backend, when it was chosen by measuring or fell back
    input_key: tuple = ()  # how its input is prepared (recipe, dtype, layout): networks alike share one
    threads: int | None = None  # torch's threads for this network when not the session's (trials.HEAVY_MS)
    threads_note: str = ""  # why, in words: the two times measured
    trial: ThreadTrial | BackendTrial | None = None  # a choice made at load, timed again on live frames

    @property
    def backend(self) -> str:
        return self.runner.backend if self.runner is not None else "torch"

    def tapped_layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer for probe in self.probes for layer in probe.layers))


class InferenceSession:
    """The networks of one profile on one device, ready to run frame after frame.

    ``models`` defaults to the comparison line-up of the profile; ``weights`` maps a model name to a
    user's checkpoint. A checkpoint that cannot be read or does not fit raises :class:`WeightsError`
    (one line): a session never runs on other weights than the ones asked for. Missing default
    weights are not an error: that network runs untrained, and :attr:`messages` says so.
    """

    def __init__(self, profile: str = "cifar10", device: str = "cpu", models: Iterable[str] | None = None,
                 weights: Mapping[str, str] | None = None, *, top_k: int = 5, precision: str = "fp32",
                 backend: str = "torch", onnx_cache: OnnxCache | None = None, ort_threads: int | None = None) -> None:
        share_cpu_with_opencv()
        self.profile = profile
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)  # PrecisionError (a ValueError): one line
        self.backend = check_backend(backend, self.device)  # BackendError (a ValueError): one line
        self.top_k = top_k
        self.ort_threads = ort_threads or torch.get_num_threads()  # ONNX Runtime's pool (engine_ort_threads)
        self.messages: list[str] = []
        specs = [get_spec(n, profile) for n in models] if models is not None else comparison_specs(profile)
        self._nets: dict[str, _Network] = {}
        self._layers: dict[str, tuple[LayerInfo, ...]] = {}
        self._probe_lock = threading.Lock()
        self._pending_probes: dict[str, tuple[ProbeRequest, ...]] | None = None
        self._pending_generation = 0
        self.generation = 0  # of the probe request (engine.live.events.RunRequest) the next frame answers
        weights = dict(weights or {})
        unknown = [name for name in weights if name not in {s.name for s in specs}]
        if unknown:
            raise WeightsError(f"--weights {unknown[0]}: no such model in the {profile} line-up "
                               f"({', '.join(s.name for s in specs)})")
        wants_ort = self.backend == "onnxruntime" or (self.backend == "auto" and self.device.type == "cpu")
        if wants_ort and onnxruntime_version() is None:
            self.messages.append("ONNX Runtime is not installed: every network runs on torch eager "
                                 "(pip install onnxruntime)")
            wants_ort = False
        cache = onnx_cache if onnx_cache is not None else OnnxCache() if wants_ort else None
        for spec in specs:
            loaded = self._load(spec, weights.pop(spec.name, None))
            model = loaded.model.to(self.device)
            if self.device.type == "cpu":
                model = model.to(memory_format=torch.channels_last)  # oneDNN's fast path for convolutions
            without_in_place_ops(model)
            k = min(top_k, spec.num_classes)
            # Random weights (a network without trained weights) are new at every start: auto does
            # not export them (nothing to keep), an explicit onnxruntime exports them uncached.
            untrained = loaded.status == UNTRAINED
            ort_runner = None
            if wants_ort and not (untrained and self.backend == "auto"):
                ort_runner = self._ort_runner(ModelAdapter(spec, model.eval()), None if untrained else cache)
            threads, threads_note, trial = self._with_threads(spec, model.eval())
            with torch_threads(threads):  # auto times each choice on the threads the network will run on
                model, chosen, note = self._with_precision(spec, model)
            net = _Network(LoadedModel(spec, model, loaded.status, loaded.source, loaded.metrics, loaded.downloadable),
                           ModelAdapter(spec, model), Preprocess.for_spec(spec), top_k=k, precision=chosen,
                           precision_note=note, threads=threads, threads_note=threads_note, trial=trial)
            self._nets[spec.name] = net
            with torch_threads(threads):
                ort_ms, torch_ms = self._with_backend(net, ort_runner)
            if ort_ms is not None and max(ort_ms, torch_ms) <= trials.RECHECK_RATIO * min(ort_ms, torch_ms) \
                    and (net.trial is None or net.backend == "onnxruntime"):  # a thread trial goes first
                net.trial = BackendTrial(ort_runner, net.runner, net.threads, net.threads_note)
            if net.backend == "onnxruntime":
                net.threads, net.threads_note = None, ""
                if not isinstance(net.trial, BackendTrial):
                    net.trial = None
            self._use_runner(net, net.runner)
        # The order the networks run in on a frame (results keep the line-up's order). The engine's
        # feeder decodes the next frame while this one runs: a network on one ONNX Runtime thread
        # leaves it a core, a network on every thread would be pre-empted at each of its barriers.
        self._run_order = self._order()
        self._rechecked: list[tuple[str, str]] = []  # choices live frames settled (take_rechecked)

    def _ort_runner(self, adapter: ModelAdapter, cache: OnnxCache | None) -> OrtRunner | None:
        """``adapter``'s network on ONNX Runtime (from its float32 weights, before any bf16
        conversion), or None with a message saying why it runs on torch."""
        name = adapter.spec.name
        try:
            layers = self._layers[name] = feature_layers(adapter, self.device)
            return OrtRunner(adapter, adapter.spec.has_class_map, threads=self.ort_threads,
                             full_layers=[layer.name for layer in layers], cache=cache, pick_threads=True)
        except BackendError as e:
            self.messages.append(f"{e}; {name} runs on torch eager")
            return None

    def _with_backend(self, net: _Network, ort_runner: OrtRunner | None) -> tuple[float | None, float | None]:
        """Give ``net`` its runner: ONNX Runtime's as built, torch.compile's now, or none (torch
        eager). ``auto`` times a batch-1 pass on torch (in the precision chosen) and on ONNX Runtime
        (medians of 7, timed in turn, after 2 warm-up passes of each) and keeps ONNX Runtime where
        it is at least 5% faster; its logits were checked against torch's when it was built.
        Returns the two times (ONNX Runtime's, torch's) when they were taken, else (None, None)."""
        spec = net.loaded.spec
        if self.backend == "compile":
            try:
                net.runner = CompiledRunner(net.adapter, spec.has_class_map, device=self.device,
                                            dtype=dtype_of(net.precision))
            except BackendError as e:
                self.messages.append(f"{e}; {spec.name} runs on torch eager")
            return None, None
        if ort_runner is None:
            if self.backend == "auto" and net.loaded.status == UNTRAINED and self.device.type == "cpu":
                net.backend_note = "torch eager: untrained (random weights), not exported"
            return None, None
        if self.backend == "onnxruntime":
            net.runner, net.backend_note = ort_runner, ort_runner.threads_note
            return None, None
        # Like with like: each side's whole answer to a frame (forward pass, softmax, ranking, ENet's
        # class map, numpy arrays), as _forward and _forward_runner make it.
        x = torch.zeros((1, *spec.input_size), device=self.device, dtype=dtype_of(net.precision))
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        x32 = torch.zeros((1, *spec.input_size))
        view = np.zeros((spec.input_size[1], spec.input_size[2], 3), np.uint8)
        def on_ort() -> None:
            net.runner = ort_runner
            try:
                self._forward_runner(net, x32, view, 0.0)
            finally:
                net.runner = None

        with torch.inference_mode():
            torch_ms, ort_ms = paired_medians_ms(lambda: self._forward(net, x, view, 0.0), on_ort)
        net.runner, net.backend_note = BackendTrial(ort_runner, None, None, "").choose(
            torch_ms, ort_ms, "batch 1, medians of 7 timed in turn, measured at load", at_load=True)
        return ort_ms, torch_ms

    def _use_runner(self, net: _Network, runner: Runner | None) -> None:
        """Run ``net`` on ``runner`` (None: torch eager), with its input prepared to match."""
        net.runner = runner
        ort = runner is not None and runner.backend == "onnxruntime"
        net.input_key = (net.preprocess, torch.float32 if ort else dtype_of(net.precision),
                         self.device.type == "cpu" and not ort)

    def _with_threads(self, spec: ModelSpec, model: nn.Module) -> tuple[int | None, str, ThreadTrial | None]:
        """Every core for a torch network that is slow on the session's threads when the session
        leaves cores unused (the live engine: trials.HEAVY_MS); None (the session's threads) otherwise.
        Returns the thread count, why (the two medians, float32, batch 1), and, where both were
        timed, the trial that times them again on live frames (:meth:`_settle`)."""
        mine, cores = torch.get_num_threads(), os.cpu_count() or 1
        if self.device.type != "cpu" or mine >= cores:
            return None, "", None
        x = torch.zeros((1, *spec.input_size)).contiguous(memory_format=torch.channels_last)

        def on_all_cores() -> None:
            with torch_threads(cores):
                model(x)

        with torch.inference_mode():
            for _ in range(2):  # a first pass (cold) under trials.HEAVY_MS says enough; the second is warm
                t0 = time.perf_counter()
                model(x)
                if (time.perf_counter() - t0) * 1000 < trials.HEAVY_MS:
                    return None, "", None
            few_ms, many_ms = paired_medians_ms(lambda: model(x), on_all_cores, runs=5, warmup=1)
        if few_ms < trials.HEAVY_MS:  # the first pass was slowed
            return None, "", None
        trial = ThreadTrial(mine, cores)
        threads, note = trial.choose(few_ms, many_ms, "fp32, batch 1, medians of 5 timed in turn, measured at load")
        return threads, note if threads is not None else "", trial  # the session's threads need no word at load

    def _settle(self, name: str) -> None:
        """Keep what live frames measured faster (the thread count, by trials.MANY_THREADS_GAIN for every
        core; the backend, by BACKEND_GAIN either way, and another than load's only when a second
        trial agrees), say why, and list the network and that reason for :meth:`take_rechecked`."""
        net = self._nets[name]
        trial, net.trial = net.trial, None
        assert trial is not None
        how = trial.how()
        if isinstance(trial, BackendTrial):
            medians = trial.medians()
            runner, note = trial.choose(*medians, how)
            if runner is not trial.load and trial.confirms is None:  # a second trial first (after trials.LIVE_DELAY_S)
                net.trial = trial.again(trial.describe(*medians))  # timed as the second will be
                return
            if trial.confirms is not None:
                note += ("; a first trial agreed" if runner is not trial.load else
                         f"; a first trial that found otherwise ({trial.confirms}) was not confirmed")
            net.backend_note = note
            self._use_runner(net, runner)
            if runner is None:  # torch eager, on the threads chosen for it
                net.threads, net.threads_note = trial.threads, trial.threads_note
            else:  # ONNX Runtime's graph has the taps: torch's hooks go
                for tap in net.taps:
                    tap.remove()
                net.taps = []
            self._run_order = self._order()
            self._rechecked.append((name, net.backend_note))
        else:
            net.threads, net.threads_note = trial.choose(*trial.medians(), how)
            self._rechecked.append((name, net.threads_note))

    def take_rechecked(self) -> list[tuple[str, str]]:
        """The networks whose choice live frames settled since the last call, each with what was
        kept and why (the two times); :meth:`backend_of` says the same."""
        settled, self._rechecked = self._rechecked, []
        return settled

    def _with_precision(self, spec: ModelSpec, model: nn.Module) -> tuple[nn.Module, str, str]:
        """The network in the session's precision: ``auto`` times a batch-1 pass in both (medians
        of 7, timed in turn, after 2 warm-up passes of each) and keeps bf16 only where the device has
        it natively and it is at least 15% faster (engine.runtime.precision).
        Returns the model, fp32 or bf16, and the reason."""
        if self.precision == "fp32" or (self.precision == "auto" and not bf16_native(self.device)):
            return model, "fp32", "" if self.precision == "fp32" else "fp32: no native bf16 here"
        bf16 = copy.deepcopy(model).to(torch.bfloat16) if self.precision == "auto" else model.to(torch.bfloat16)
        if self.precision == "bf16":
            return bf16, "bf16", ""
        x = torch.zeros((1, *spec.input_size), device=self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            fp32_ms, bf16_ms = paired_medians_ms(lambda: (model(x), synchronize(self.device)),
                                                 lambda: (bf16(x.to(torch.bfloat16)), synchronize(self.device)))
        times = (f"{ms_text(bf16_ms)} ms in bf16 against {ms_text(fp32_ms)} ms in fp32 "
                 f"(batch 1, medians of 7 timed in turn, measured at load)")
        if bf16_ms <= AUTO_GAIN * fp32_ms:
            return bf16, "bf16", f"bf16: {times}"
        return model, "fp32", f"fp32: {times}"

    def dtype(self, name: str) -> torch.dtype:
        """The dtype of ``name``'s weights, which its input must have."""
        return dtype_of(self._nets[name].precision)

    def precision_of(self, name: str) -> tuple[str, str]:
        """(``fp32`` or ``bf16``, the reason when ``auto`` chose it) for one network's forward pass
        (ONNX Runtime's graphs are float32, whatever the torch network runs in)."""
        net = self._nets[name]
        if net.backend == "onnxruntime":
            return "fp32", "fp32: ONNX Runtime runs the float32 graph" if net.precision != "fp32" else ""
        return net.precision, net.precision_note

    def backend_of(self, name: str) -> tuple[str, str]:
        """(``torch``, ``onnxruntime`` or ``compile``, why: the times when ``auto`` chose, and the
        torch threads' when they were measured) for one network."""
        net = self._nets[name]
        return net.backend, "; ".join(n for n in (net.backend_note, net.threads_note) if n)

    def threads_of(self, name: str) -> tuple[int | None, str]:
        """(torch's threads for one network's forward pass, why when that was measured); None
        where torch does not run it on the CPU (ONNX Runtime has its own pool, see backend_of)."""
        net = self._nets[name]
        if self.device.type != "cpu" or net.backend == "onnxruntime":
            return None, ""
        return net.threads or torch.get_num_threads(), net.threads_note

    def runner(self, name: str) -> Runner | None:
        """The network's runner on a backend other than torch eager, or None."""
        return self._nets[name].runner

    def _load(self, spec: ModelSpec, path: str | None) -> LoadedModel:
        if path is not None:
            return load_model(spec, path)  # a user's file that does not fit is an error, not a fallback
        try:
            loaded = load_model(spec)  # downloads are a job of their own (engine.data.download)
        except WeightsError as e:
            self.messages.append(f"{spec.name}: {e}")
            loaded = LoadedModel(spec, spec.build(), UNTRAINED, str(e))
        return loaded

    # -- what is loaded ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._nets)

    def spec(self, name: str) -> ModelSpec:
        return self._nets[name].loaded.spec

    def loaded(self, name: str) -> LoadedModel:
        return self._nets[name].loaded

    def model(self, name: str) -> nn.Module:
        return self._nets[name].loaded.model

    def adapter(self, name: str) -> ModelAdapter:
        return self._nets[name].adapter

    def layers(self, name: str) -> tuple[LayerInfo, ...]:
        """The layers a person can look inside, in forward order, with their output shapes."""
        if name not in self._layers:
            net = self._nets[name]
            self._layers[name] = feature_layers(net.adapter, self.device)
        return self._layers[name]

    # -- probes ----------------------------------------------------------------------------------

    def set_probes(self, probes: Mapping[str, Iterable[ProbeRequest]], generation: int | None = None) -> None:
        """What to compute besides the predictions, per model (replacing that model's probes); takes
        effect at the next frame (thread-safe), whose result carries ``generation`` (default: one
        more than the last). A layer a network does not have raises ``KeyError`` at once."""
        request = {name: tuple(wanted) for name, wanted in probes.items()}
        for name, wanted in request.items():
            if name not in self._nets:
                raise KeyError(f"no model {name!r} in this session")
            known = dict(self._nets[name].loaded.model.named_modules())
            unknown = [layer for probe in wanted for layer in probe.layers if layer not in known]
            if unknown:
                raise KeyError(f"{name} has no layer {unknown[0]!r}")
        with self._probe_lock:
            self._pending_probes = {**(self._pending_probes or {}), **request}
            self._pending_generation = generation if generation is not None else self._pending_generation + 1

    def set_capture(self, captures: Mapping[str, Iterable[str]], generation: int | None = None) -> None:
        """Which layers' activations to return, per model: :meth:`set_probes` with one
        :class:`~engine.probes.Activations` each (none for an empty list)."""
        self.set_probes({name: activation_probes(layers) for name, layers in captures.items()}, generation)

    def probes(self, name: str) -> tuple[ProbeRequest, ...]:
        """The probes the next frame runs on ``name`` (pending ones included)."""
        with self._probe_lock:
            pending = (self._pending_probes or {}).get(name)
        return pending if pending is not None else self._nets[name].probes

    def _apply_probes(self) -> None:
        with self._probe_lock:
            pending, self._pending_probes = self._pending_probes, None
            if pending is not None:
                self.generation = self._pending_generation
        for name, probes in (pending or {}).items():
            net = self._nets[name]
            for tap in net.taps:
                tap.remove()
            net.captured.clear()
            net.probes = probes
            net.capture = tuple(layer for p in probes if isinstance(p, Activations) for layer in p.layers)
            net.extra = tuple(p for p in probes if not isinstance(p, Activations))
            # Taps stay in place from frame to frame: placing and removing them per frame would
            # cost more than LeNet-5's whole forward pass. A runner's graph has them as outputs.
            if net.runner is not None:
                try:
                    net.runner.set_taps(net.tapped_layers())
                except BackendError as e:  # torch.compile of a new tap set failed: torch eager from now on
                    net.backend_note = f"torch eager: {e}"
                    self._use_runner(net, None)
            trial = net.trial
            if isinstance(trial, BackendTrial):  # both sides answer with the same taps until it settles
                if trial.runner is not net.runner:
                    try:
                        trial.runner.set_taps(net.tapped_layers())
                    except BackendError:  # the other side cannot take these taps: what load chose stays
                        net.trial = None
                net.taps = net.adapter.tap(net.tapped_layers(), net.captured)
            elif net.runner is None:
                net.taps = net.adapter.tap(net.tapped_layers(), net.captured)

    @contextmanager
    def bare(self, name: str):
        """The network with its taps removed: what a plain forward pass costs (its torch module, or
        its :class:`~engine.runtime.backends.Runner` with no tap outputs)."""
        self._apply_probes()
        net = self._nets[name]
        if net.runner is not None:
            net.runner.set_taps(())
            try:
                yield net.runner
            finally:
                net.runner.set_taps(net.tapped_layers())
            return
        for tap in net.taps:
            tap.remove()
        try:
            yield net.loaded.model
        finally:
            net.taps = net.adapter.tap(net.tapped_layers(), net.captured)

    def warm_up(self, runs: int = 2) -> None:
        """Run every network on a blank frame: the first passes build the CPU kernels for each
        layer shape (seconds for ENet), which should not be billed to the first real frame."""
        _, h, w = self.spec(self.names[0]).input_size
        blank = np.zeros((h, w, 3), np.uint8)
        self._apply_probes()  # with the trials in place: both sides of a backend trial get the taps
        trials = {name: net.trial for name, net in self._nets.items()}
        for net in self._nets.values():
            net.trial = None  # a thread trial times live frames, not these
        try:
            for _ in range(runs):
                self.run(blank)
        finally:
            for name, trial in trials.items():
                self._nets[name].trial = trial

    # -- running -------------------------------------------------------------------------------

    def top1(self, frame: np.ndarray) -> dict[str, int]:
        """Each network's top-1 class on ``frame``, from the forward pass alone (no activations, no
        probes): the clean answer a perturbed frame is compared with."""
        out = {}
        with torch.inference_mode():
            inputs: dict[tuple, torch.Tensor] = {}
            for name, net in self._nets.items():
                if net.input_key not in inputs:
                    inputs[net.input_key] = self._input(net, net.preprocess.view(frame))
                with self.bare(name) as forward:
                    x = inputs[net.input_key]
                    out[name] = int(forward(x).top[0, 0]) if net.runner is not None \
                        else int(net.adapter.logits(x).argmax(1)[0])
        return out

    def run(self, frame: np.ndarray, frame_id: int = 0, source: str = "", label: int | None = None) -> FrameResult:
        """Every network on ``frame`` (RGB uint8, H x W x 3), in registration order."""
        self._apply_probes()
        started = time.perf_counter()
        with torch.inference_mode():
            results, inputs = self._run(frame)
        for name, net in self._nets.items():
            if net.extra:  # outside inference mode: a probe may need gradients (torch's network)
                x = inputs[name].to(dtype_of(net.precision))  # torch's dtype (a runner's input is float32)
                results[name] = results[name]._replace(probes=MappingProxyType(
                    {p.name: _probe(p, net, x) for p in net.extra}))
        return FrameResult(frame_id, source, label, frame if not frame.flags.writeable else frozen(frame.copy()),
                           MappingProxyType(results), None, started, time.perf_counter(), self.generation)

    def _input(self, net: _Network, view: np.ndarray) -> torch.Tensor:
        """``view`` as the network's input tensor: on its device, in its dtype and layout
        (channels-last for torch on the CPU, plain NCHW for ONNX Runtime)."""
        preprocess, dtype, channels_last = net.input_key
        x = preprocess.tensor(view, self.device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x if dtype == torch.float32 else x.to(dtype)

    def _order(self) -> tuple[str, ...]:
        return tuple(sorted(self._nets, key=lambda name: not self._leaves_a_core(self._nets[name])))

    def _leaves_a_core(self, net: _Network) -> bool:
        threads = getattr(net.runner, "threads", None)
        return net.backend == "onnxruntime" and threads is not None and threads < self.ort_threads

    def _run(self, frame: np.ndarray) -> tuple[dict[str, ModelResult], dict[str, torch.Tensor]]:
        views: dict[tuple, tuple[np.ndarray, torch.Tensor, float]] = {}
        results, inputs = {}, {}
        nets = self._nets
        for name in self._run_order:
            net = nets[name]
            trial = net.trial
            if trial is not None and not trial.due():
                trial = None  # what load chose, until the window has settled
            if trial is not None:
                option = trial.next()
                if isinstance(trial, BackendTrial):  # this frame on one of the two, then back to load's
                    self._use_runner(net, trial.runner if option == "onnxruntime" else None)
            t0 = time.perf_counter()
            key = net.input_key
            if key not in views:  # networks with the same recipe, dtype and layout share it
                view = net.preprocess.view(frame)
                x = self._input(net, view)
                views[key] = (frozen(view), x, (time.perf_counter() - t0) * 1000)
            view, x, pre_ms = views[key]
            inputs[name] = x
            forward = self._forward if net.runner is None else self._forward_runner
            if trial is not None:
                threads = option if isinstance(trial, ThreadTrial) else trial.threads if option == "torch" else None
                t0 = time.perf_counter()
                try:
                    with torch_threads(threads):
                        results[name] = forward(net, x, view, pre_ms)
                except Exception:
                    if isinstance(trial, BackendTrial):  # one failed frame, then what load chose, untried
                        net.trial = None
                        self._use_runner(net, trial.load)
                    raise
                done = trial.add(option, (time.perf_counter() - t0) * 1000)
                if isinstance(trial, BackendTrial):
                    self._use_runner(net, trial.load)
                if done:
                    self._settle(name)
            elif net.threads is None:
                results[name] = forward(net, x, view, pre_ms)
            else:
                with torch_threads(net.threads):
                    results[name] = forward(net, x, view, pre_ms)
        return {name: results[name] for name in nets}, inputs

    def _forward_runner(self, net: _Network, x: torch.Tensor, view: np.ndarray, pre_ms: float) -> ModelResult:
        """:meth:`_forward` on a runner (ONNX Runtime, torch.compile): its graph already holds the
        softmax, top-k, class map and taps, so what is left is taking item 0 of each."""
        spec = net.loaded.spec
        if self.device.type != "cpu":
            synchronize(self.device)
        runner = net.runner
        t0 = time.perf_counter()
        out = runner.outputs(x)  # logits, probabilities, top classes, [class map, confidence], taps
        top, probs = out[2][0, :net.top_k], out[1][0]
        top.flags.writeable = probs.flags.writeable = False
        class_map = confidence = None
        if runner.with_map:
            class_map, confidence = out[3][0], out[4][0]
            class_map.flags.writeable = confidence.flags.writeable = False
        activations = NO_ACTIVATIONS
        capture = net.capture
        if len(capture) == 1:  # the usual case, written out (see _forward)
            layer = capture[0]
            activations = MappingProxyType({layer: _item(out[runner.tap_index[layer]])})
        elif capture:
            index = runner.tap_index
            activations = MappingProxyType({layer: _item(out[index[layer]]) for layer in capture})
        forward_ms = (time.perf_counter() - t0) * 1000
        if net.extra:  # probes other than activations read the taps as tensors
            net.captured.clear()
            net.captured.update({layer: torch.from_numpy(out[i]) for layer, i in runner.tap_index.items()})
        return ModelResult(spec.name, top, spec.class_names, probs, pre_ms, forward_ms, view,
                           activations, class_map, confidence, backend=runner.backend)

    def _forward(self, net: _Network, x: torch.Tensor, view: np.ndarray, pre_ms: float) -> ModelResult:
        """One network on one prepared input, under ``torch.inference_mode`` (which :meth:`run`
        enters once per frame). The time covers everything from the input tensor to the finished
        result: forward pass, activations, softmax, top-k and numpy arrays.

        Every line between the two clock readings counts: after a forward pass the processor's
        caches hold torch's kernels, not Python's, so each Python step costs several times its
        usual price. Hence torch for softmax and top-k (two calls, cheaper there than numpy or pure
        Python), the one-layer case written out, and nothing looked up that could be looked up
        before.
        """
        spec, adapter, captured, k = net.loaded.spec, net.adapter, net.captured, net.top_k
        fp32_cpu, has_class_map = self.device.type == "cpu" and net.precision == "fp32", spec.has_class_map
        captured.clear()
        class_map = confidence = None
        synchronize(self.device)
        t0 = time.perf_counter()
        if has_class_map:
            logits, pixel_logits = adapter.forward_map(x)
            pixel_confidence, pixel_class = top_class(pixel_logits[0].float(), 0)  # as the runners' graphs do
            class_map = frozen(pixel_class.to(torch.uint8).cpu().numpy())
            confidence = frozen(pixel_confidence.float().cpu().numpy())
        else:
            logits = adapter.model(x)
        p = logits.softmax(1)
        if not fp32_cpu:
            p = p.float().cpu()
        top = p.topk(k)[1].numpy()[0]
        top.flags.writeable = False
        probs = p.numpy()[0]
        probs.flags.writeable = False
        capture = net.capture
        if fp32_cpu and len(capture) == 1:  # the usual case, written out: a float32 network on the
            # CPU, whose outputs need no conversion
            layer = capture[0]
            a = captured[layer].numpy()[0]
            a.flags.writeable = False
            activations = MappingProxyType({layer: a})
        else:  # the activations probe's reading of the pass (engine.probes.activations), item 0
            activations = MappingProxyType({layer: _array(captured[layer]) for layer in capture}) if capture \
                else NO_ACTIVATIONS
        forward_ms = (time.perf_counter() - t0) * 1000
        return ModelResult(spec.name, top, spec.class_names, probs, pre_ms, forward_ms, view,
                           activations, class_map, confidence)


def _probe(request: ProbeRequest, net: _Network, x: torch.Tensor) -> object:
    """One probe's answer, or :class:`ProbeFailed` with its reason: a probe that cannot answer
    (a Grad-CAM layer the class scores do not read, ...) never costs the frame its predictions."""
    try:
        return run_probe(request, net.adapter, x, net.captured)
    except (RuntimeError, ValueError, KeyError) as e:
        return ProbeFailed(f"{request.name}: {error_line(e)}")


NO_ACTIVATIONS: Mapping[str, np.ndarray] = MappingProxyType({})


def _item(a: np.ndarray) -> np.ndarray:
    """Item 0 of a runner's (N, C, H, W) output, read-only and float32."""
    a = a[0] if a.dtype == np.float32 else a[0].astype(np.float32)
    a.flags.writeable = False
    return a


def _array(t: torch.Tensor) -> np.ndarray:
    """A captured (1, C, H, W) output as a read-only (C, H, W) float32 array (no copy on the CPU)."""
    return read_only(t)[0]


def activation_probes(layers: Iterable[str]) -> tuple[ProbeRequest, ...]:
    layers = tuple(layers)
    return (Activations(layers),) if layers else ()
