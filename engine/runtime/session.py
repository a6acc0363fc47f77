"""All networks of a profile on one frame, in lockstep.

An :class:`InferenceSession` owns the loaded networks and runs every one of them on the same frame,
each through its own preprocessing, and returns one immutable :class:`FrameResult`: per network the
top-k answer, the full probability vector, the latency split into preprocessing and forward, the
activations of the layers the caller asked for, ENet's per-pixel class map, and the results of any
other probe (:mod:`engine.probes`) asked for. It is plain,
single-threaded code: :mod:`engine.live.worker` runs it on a background thread, the CLI calls it directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from types import MappingProxyType

import numpy as np
import torch
import torch.nn as nn

from engine.common.errors import error_line
from engine.models.adapter import ModelAdapter, without_in_place_ops
from engine.models.preprocess import Preprocess
from engine.models.registry import ModelSpec, comparison_specs, get_spec
from engine.models.weights import UNTRAINED, LoadedModel, WeightsError, load_model
from engine.probes import Activations, ProbeRequest, run_probe
from engine.probes.base import ProbeFailed, read_only
from engine.runtime import trials
from engine.runtime.backends import (
    BackendError,
    OnnxCache,
    Runner,
    check_backend,
    onnxruntime_version,
    top_class,
)
from engine.runtime.device import resolve_device, share_cpu_with_opencv, synchronize
from engine.runtime.layers import CONTAINERS, feature_layers, is_container  # noqa: F401  (part of the session's API)
from engine.runtime.network import Network
from engine.runtime.precision import check_precision, dtype_of
from engine.runtime.results import FrameResult, LayerInfo, ModelResult, frozen  # noqa: F401  (likewise)
from engine.runtime.trials import BackendTrial, ThreadTrial, torch_threads
from engine.runtime.tuning import LoadTimeChoices


class InferenceSession(LoadTimeChoices):
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
        self._nets: dict[str, Network] = {}
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
            net = Network(LoadedModel(spec, model, loaded.status, loaded.source, loaded.metrics, loaded.downloadable),
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

    def _input(self, net: Network, view: np.ndarray) -> torch.Tensor:
        """``view`` as the network's input tensor: on its device, in its dtype and layout
        (channels-last for torch on the CPU, plain NCHW for ONNX Runtime)."""
        preprocess, dtype, channels_last = net.input_key
        x = preprocess.tensor(view, self.device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x if dtype == torch.float32 else x.to(dtype)

    def _order(self) -> tuple[str, ...]:
        return tuple(sorted(self._nets, key=lambda name: not self._leaves_a_core(self._nets[name])))

    def _leaves_a_core(self, net: Network) -> bool:
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

    def _forward_runner(self, net: Network, x: torch.Tensor, view: np.ndarray, pre_ms: float) -> ModelResult:
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

    def _forward(self, net: Network, x: torch.Tensor, view: np.ndarray, pre_ms: float) -> ModelResult:
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


def _probe(request: ProbeRequest, net: Network, x: torch.Tensor) -> object:
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
