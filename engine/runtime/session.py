"""All networks of a profile on one frame, in lockstep: an :class:`InferenceSession` loads them,
runs each on the same frame through its own preprocessing and runtime, and returns one immutable
:class:`FrameResult` (top-k, probabilities, latency, activations, ENet's class map, other probes).
What runs each network is the tuner's choice (:mod:`engine.runtime.tuner`), made as the network is
built (:mod:`engine.runtime.assemble`). Plain single-threaded code: :mod:`engine.live.worker` runs it
on a background thread, the CLI calls it directly."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from types import MappingProxyType

import numpy as np
import torch
import torch.nn as nn

from engine.models.adapter import ModelAdapter
from engine.models.registry import ModelSpec, comparison_specs, get_spec
from engine.models.weights import UNTRAINED, LoadedModel, WeightsError, load_model
from engine.probes import Activations, ProbeRequest
from engine.runtime import backends
from engine.runtime.assemble import NetworkBuilder, _input
from engine.runtime.backends import BackendError, Runner
from engine.runtime.device import cores, resolve_device, share_cpu_with_opencv, torch_threads
from engine.runtime.layers import CONTAINERS, feature_layers, is_container  # noqa: F401  (part of the session's API)
from engine.runtime.network import Network
from engine.runtime.precision import bf16_native, check_precision, dtype_of
from engine.runtime.results import FrameResult, LayerInfo, ModelResult, frozen  # noqa: F401  (likewise)
from engine.runtime.tuner import Decision, Tuner


class InferenceSession:
    """The networks of one profile on one device, ready to run frame after frame.

    ``models`` defaults to the comparison line-up of the profile; ``weights`` maps a model name to a
    user's checkpoint; ``runtimes`` maps a model name to its own (backend, precision). A checkpoint
    that cannot be read or does not fit raises :class:`WeightsError` (one line): a session never
    runs on other weights than the ones asked for. Missing default weights are not an error: that
    network runs untrained, and :attr:`messages` says so. ``keep`` holds networks of a running
    session to take as they are (the others are loaded and tuned).
    """

    def __init__(self, profile: str = "cifar10", device: str = "cpu", models: Iterable[str] | None = None,
                 weights: Mapping[str, str] | None = None, *, top_k: int = 5, precision: str = "fp32",
                 backend: str = "torch", onnx_cache=None, ort_threads: int | None = None,
                 runtimes: Mapping[str, tuple[str, str]] | None = None,
                 keep: Mapping[str, Network] | None = None) -> None:
        share_cpu_with_opencv()
        self.profile, self.top_k = profile, top_k
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)  # PrecisionError (a ValueError): one line
        self.backend = backends.check_backend(backend, self.device)  # BackendError (a ValueError): one line
        self.ort_threads = ort_threads or torch.get_num_threads()  # a runtime's own pool (engine_ort_threads)
        self.messages: list[str] = []
        specs = [get_spec(n, profile) for n in models] if models is not None else comparison_specs(profile)
        self._nets: dict[str, Network] = {}
        self._layers: dict[str, tuple[LayerInfo, ...]] = {}
        self._probe_lock = threading.Lock()
        self._pending_probes: dict[str, tuple[ProbeRequest, ...]] | None = None
        self._pending_generation = 0
        self.generation = 0  # of the probe request (engine.live.events.RunRequest) the next frame answers
        self._rechecked: list[tuple[str, str]] = []  # choices live frames settled (take_rechecked)
        weights = dict(weights or {})
        unknown = [name for name in weights if name not in {s.name for s in specs}]
        if unknown:
            raise WeightsError(f"--weights {unknown[0]}: no such model in the {profile} line-up "
                               f"({', '.join(s.name for s in specs)})")
        tuner = Tuner(self.backend, self.precision, self.device, self.ort_threads, torch.get_num_threads(), cores())
        cache = onnx_cache
        if cache is None and self.device.type == "cpu":
            from engine.runtime.onnx_cache import OnnxCache

            cache = OnnxCache()
        for spec in specs:
            kept = (keep or {}).get(spec.name)
            if kept is not None:
                self._nets[spec.name] = kept
                continue
            own = (runtimes or {}).get(spec.name)
            network_tuner = tuner if own is None else dataclasses.replace(
                tuner, backend=backends.check_backend(own[0], self.device),
                precision=check_precision(own[1], self.device))
            builder = NetworkBuilder(network_tuner, self.device, top_k=top_k, cache=cache, messages=self.messages,
                                     layer_names=lambda adapter: tuple(layer.name for layer in self.layers_of(adapter)))
            self._nets[spec.name] = builder.build(self._load(spec, weights.pop(spec.name, None)))
        # The order the networks run in on a frame (results keep the line-up's order). The engine's
        # feeder decodes the next frame while this one runs: a network on one runtime thread leaves it
        # a core, a network on every thread would be pre-empted at each of its barriers.
        self._run_order = self._order()

    def _load(self, spec: ModelSpec, path: str | None) -> LoadedModel:
        if path is not None:
            return load_model(spec, path)  # a user's file that does not fit is an error, not a fallback
        try:
            return load_model(spec)  # downloads are a job of their own (engine.data.download)
        except WeightsError as e:
            self.messages.append(f"{spec.name}: {e}")
            return LoadedModel(spec, spec.build(), UNTRAINED, str(e))

    # -- what is loaded, and what runs it --------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._nets)

    def network(self, name: str) -> Network:  # the network and its runtime (bench, a rebuild keeps it)
        return self._nets[name]

    def spec(self, name: str) -> ModelSpec:
        return self._nets[name].spec

    def loaded(self, name: str) -> LoadedModel:
        return self._nets[name].loaded

    def model(self, name: str) -> nn.Module:
        return self._nets[name].loaded.model

    def adapter(self, name: str) -> ModelAdapter:
        return self._nets[name].adapter

    def runner(self, name: str) -> Runner | None:
        """The network's runner on a backend other than torch eager, or None."""
        return self._nets[name].runner

    def decision(self, name: str) -> Decision:
        """What runs ``name`` and the evidence (the tuner's record, after any live check)."""
        return self._nets[name].decision

    def dtype(self, name: str) -> torch.dtype:
        """The dtype of the input ``name``'s torch module takes (probes run on it)."""
        net = self._nets[name]
        return dtype_of(net.candidate.precision) if net.runner is None else torch.float32

    def precision_of(self, name: str) -> tuple[str, str]:
        """(fp32, bf16 or int8; why, where auto had nothing else to time) for one network."""
        chosen = self._nets[name].candidate.precision
        alone = self.precision == "auto" and chosen == "fp32" and not bf16_native(self.device)
        return chosen, "fp32: no native bf16 here" if alone else ""

    def backend_of(self, name: str) -> tuple[str, str]:
        """(the backend's name, the tuner's record in words where it measured or fell back) for one network."""
        decision = self._nets[name].decision
        return self._nets[name].backend, decision.text() if decision.measured or decision.why else ""

    def threads_of(self, name: str) -> tuple[int | None, str]:
        """(the threads its forward pass runs on, their pool's kind); None on a GPU. Why: backend_of."""
        net = self._nets[name]
        if self.device.type != "cpu":
            return None, ""
        threads = net.candidate.threads
        if threads is None:
            threads = torch.get_num_threads() if net.runner is None else self.ort_threads
        return threads, ""

    def take_rechecked(self) -> list[tuple[str, str]]:
        """The networks whose choice live frames settled (or a fallback changed) since the last call."""
        settled, self._rechecked = self._rechecked, []
        return settled

    def layers(self, name: str) -> tuple[LayerInfo, ...]:
        """The layers a person can look inside, in forward order, with their output shapes."""
        if name not in self._layers:
            self._layers[name] = self.layers_of(self._nets[name].adapter)
        return self._layers[name]

    def layers_of(self, adapter: ModelAdapter) -> tuple[LayerInfo, ...]:
        if adapter.spec.name not in self._layers:
            self._layers[adapter.spec.name] = feature_layers(adapter, self.device)
        return self._layers[adapter.spec.name]

    # -- probes ----------------------------------------------------------------------------------

    def set_probes(self, probes: Mapping[str, Iterable[ProbeRequest]], generation: int | None = None) -> None:
        """What to compute besides the predictions, per model (replacing that model's probes); takes
        effect at the next frame (thread-safe), whose result carries ``generation`` (default: one
        more than the last). A layer a network does not have raises ``KeyError`` at once."""
        request = {name: tuple(wanted) for name, wanted in probes.items()}
        for name, wanted in request.items():
            if name not in self._nets:
                raise KeyError(f"no model {name!r} in this session")
            self._nets[name].check_layers(wanted)
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
            if self._nets[name].set_probes(probes) is not None:  # a runner could not take the taps
                self._rechecked.append((name, self._nets[name].decision.text()))

    @contextmanager
    def bare(self, name: str):
        """The network with its taps removed (:meth:`Network.bare`)."""
        self._apply_probes()
        with self._nets[name].bare() as forward:
            yield forward

    def warm_up(self, runs: int = 2) -> None:
        """Every network on blank frames: the first passes build kernels (seconds for ENet)."""
        _, h, w = self.spec(self.names[0]).input_size
        blank = np.zeros((h, w, 3), np.uint8)
        self._apply_probes()  # with the checks in place: both sides of a live check get the taps
        checks = {name: net.check for name, net in self._nets.items()}
        for net in self._nets.values():
            net.check = None  # a live check times live frames, not these
        try:
            for _ in range(runs):
                self.run(blank)
        finally:
            for name, check in checks.items():
                self._nets[name].check = check

    # -- running -------------------------------------------------------------------------------

    def top1(self, frame: np.ndarray) -> dict[str, int]:
        """Each network's top-1 class on ``frame``, from the forward pass alone (no activations, no
        probes): the clean answer a perturbed frame is compared with."""
        out = {}
        with torch.inference_mode():
            for name, net in self._nets.items():
                x = _input(net, net.setup, net.preprocess.view(frame), self.device)
                with self.bare(name) as forward:
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
                x = inputs[name].to(self.dtype(name))
                results[name] = results[name]._replace(probes=MappingProxyType(
                    {p.name: net.probe(p, x) for p in net.extra}))
        return FrameResult(frame_id, source, label, frame if not frame.flags.writeable else frozen(frame.copy()),
                           MappingProxyType(results), None, started, time.perf_counter(), self.generation)

    def input_for(self, name: str, view: np.ndarray) -> torch.Tensor:
        """A prepared view as the input tensor of what runs ``name`` now."""
        return _input(self._nets[name], self._nets[name].setup, view, self.device)

    def _order(self) -> tuple[str, ...]:
        def leaves_a_core(net: Network) -> bool:
            threads = net.runner.threads if net.runner is not None else None
            return threads is not None and threads < self.ort_threads

        return tuple(sorted(self._nets, key=lambda name: not leaves_a_core(self._nets[name])))

    def _run(self, frame: np.ndarray) -> tuple[dict[str, ModelResult], dict[str, torch.Tensor]]:
        views: dict[tuple, tuple[np.ndarray, torch.Tensor, float]] = {}
        results, inputs = {}, {}
        for name in self._run_order:
            net = self._nets[name]
            setup = net.next_setup()  # what load chose, or a live check's turn
            t0 = time.perf_counter()
            key = (net.preprocess, *setup.input_key)
            if key not in views:  # networks with the same recipe, dtype and layout share it
                view = net.preprocess.view(frame)
                x = _input(net, setup, view, self.device)
                views[key] = (frozen(view), x, (time.perf_counter() - t0) * 1000)
            view, x, pre_ms = views[key]
            inputs[name] = x
            t0 = time.perf_counter()
            with torch_threads(setup.candidate.threads if setup.runner is None else None):
                results[name] = net.answer(setup, x, view, pre_ms)
            if net.checked(setup, (time.perf_counter() - t0) * 1000):  # a live check settled
                self._run_order = self._order()
                self._rechecked.append((name, net.decision.text()))
        return {name: results[name] for name in self._nets}, inputs


def activation_probes(layers: Iterable[str]) -> tuple[ProbeRequest, ...]:
    layers = tuple(layers)
    return (Activations(layers),) if layers else ()


__all__ = ["BackendError", "FrameResult", "InferenceSession", "LayerInfo", "ModelResult", "activation_probes"]
