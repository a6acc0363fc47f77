"""Giving a loaded network its runtime: each candidate the tuner offers (:mod:`engine.runtime.tuner`)
built on its backend when it is first timed, checked against torch fp32 on a probe image, and the
choice installed with a live check of a close runner-up."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from engine.models.adapter import ModelAdapter, without_in_place_ops
from engine.models.preprocess import Preprocess
from engine.models.weights import UNTRAINED, LoadedModel
from engine.runtime import backends
from engine.runtime.backends import BackendError, BuildContext
from engine.runtime.device import torch_threads
from engine.runtime.network import Network, Setup
from engine.runtime.precision import dtype_of
from engine.runtime.tuner import AGREE_P, Candidate, Decision, LiveCheck, Measured, Tuner


class NetworkBuilder:
    """Builds :class:`Network` objects for one session: its tuner, device, export cache and
    messages (a backend that cannot run a network is one line there)."""

    def __init__(self, tuner: Tuner, device: torch.device, *, top_k: int, cache: object | None,
                 messages: list[str], layer_names: Callable[[ModelAdapter], tuple[str, ...]]) -> None:
        self.tuner, self.device, self.top_k, self.cache = tuner, device, top_k, cache
        self.messages, self.layer_names = messages, layer_names

    def build(self, loaded: LoadedModel) -> Network:
        spec = loaded.spec
        model = loaded.model.to(self.device)
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # oneDNN's fast path for convolutions
        without_in_place_ops(model)
        model.eval()
        loaded = LoadedModel(spec, model, loaded.status, loaded.source, loaded.metrics, loaded.downloadable)
        net = Network(loaded, Preprocess.for_spec(spec), self.device, top_k=min(self.top_k, spec.num_classes))
        untrained = loaded.status == UNTRAINED
        context = BuildContext(self.device, self.tuner.threads, None if untrained else self.cache)
        int8 = self._has_int8(net, untrained, context.shared)
        candidates, left = self.tuner.candidates(spec.name, untrained=untrained, int8=int8)
        for m in left:  # a backend missing here is said once per session, not per network
            if m.candidate.precision != "fp32":  # a number format asked for that does not run here
                who = "it runs" if m.left_out.startswith(f"{spec.name}:") else "the networks run"
                line = f"{m.left_out}; {who} in fp32"
            else:  # a backend that is not installed
                line = f"{m.left_out}: the networks run without it"
            if line not in self.messages:
                self.messages.append(line)
        probe = probe_image(spec.input_size[1:])

        def setup(c: Candidate) -> Setup:
            if c not in net.setups:
                net.setups[c] = self._setup(net, c, context, sole=len(candidates) == 1)
            return net.setups[c]

        def one_pass(c: Candidate, frame: np.ndarray | None = None):
            s = setup(c)
            view = net.preprocess.view(frame) if frame is not None else np.zeros(
                (*spec.input_size[1:], 3), np.uint8)
            x = _input(net, s, view, self.device)
            with torch.inference_mode(), torch_threads(c.threads if s.runner is None else None):
                return net.answer(s, x, view, 0.0)

        reference = Candidate("torch") if Candidate("torch") in candidates else None

        def agreement(c: Candidate) -> str:
            """The same probabilities as torch fp32 on the probe image. int8's agreement is its record:
            top-1 on the test set within 0.5 point (one image says little of a rounding's cost)."""
            if reference is None or c.precision == "int8":
                return ""
            diff = float(np.abs(one_pass(c, probe).probs - one_pass(reference, probe).probs).max())
            return "" if diff <= AGREE_P else f"disagrees with torch fp32 (probabilities {diff:.2f} apart)"

        if not candidates:  # the backend asked for is not installed (said once, above)
            candidates = [Candidate("torch")]
        try:
            if len(candidates) == 1:
                setup(candidates[0])
            decision = self.tuner.choose(spec.name, {c: lambda c=c: one_pass(c) for c in candidates}, left,
                                         agreement)
        except BackendError as e:  # the only candidate, or every one, cannot run it: torch eager
            decision = Decision(spec.name, Candidate("torch"), self.tuner.backend, why=f"torch eager: {e}")
            self.messages.append(f"{e}; {spec.name} runs on torch eager")
            setup(decision.chosen)
        for m in decision.measured:
            # a build failure, as the backend said it (what was left out before building is said above)
            if m.left_out.startswith(f"{spec.name}:") and not any(m.left_out in line for line in self.messages):
                self.messages.append(f"{m.left_out}; {spec.name} runs on {decision.chosen.text()}")
        net.setup, net.decision = net.setups[decision.chosen], decision
        other = self.tuner.challenger(decision)
        if other is not None and other in net.setups:
            net.check = LiveCheck(decision.chosen, other, self.tuner.torch_threads)
        net.keep_only(decision.chosen, *([other] if net.check is not None else []))
        return net

    def _has_int8(self, net: Network, untrained: bool, shared: dict) -> bool:
        """Whether the network has an int8 graph whose accuracy held (only looked for where int8 may run);
        what was found goes in ``shared`` for the int8 runners (engine.runtime.backends.ort)."""
        if untrained or self.tuner.precision not in ("auto", "int8") or self.device.type != "cpu" or \
                not any("int8" in b.precisions(self.device) for b in backends.backends()):
            return False
        from engine.runtime.quantize import find_int8

        adapter = ModelAdapter(net.spec, net.loaded.model)
        shared["int8"] = find_int8(adapter, self.layer_names(adapter))
        return shared["int8"] is not None

    def _setup(self, net: Network, c: Candidate, context: BuildContext, *, sole: bool) -> Setup:
        spec, model = net.spec, net.loaded.model
        entry = backends.backend(c.backend)
        if entry.reference:
            if c.precision != "fp32":  # a copy where fp32 is timed beside it, else in place
                model = model.to(dtype_of(c.precision)) if sole else copy.deepcopy(model).to(dtype_of(c.precision))
                if sole:
                    net.loaded = LoadedModel(spec, model, net.loaded.status, net.loaded.source,
                                             net.loaded.metrics, net.loaded.downloadable)
            return Setup(c, ModelAdapter(spec, model), channels_last=self.device.type == "cpu")
        adapter = ModelAdapter(spec, model)
        if not context.full_layers:
            context = BuildContext(context.device, context.threads, context.cache, self.layer_names(adapter),
                                   context.shared)
        runner = entry.make_runner(adapter, c.precision, c.threads or context.threads, (), context)
        return Setup(c, adapter, runner)


def probe_image(size: tuple[int, int], seed: int = 1) -> np.ndarray:
    """A fixed picture-like image (broad colour fields, smoothly blended) to compare answers on:
    on uniform noise every class is a near tie, and any rounding flips the ranking."""
    import cv2

    small = np.random.default_rng(seed).uniform(0, 255, (4, 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _input(net: Network, setup: Setup, view: np.ndarray, device: torch.device) -> torch.Tensor:
    """``view`` as ``setup``'s input tensor: on the device, in its dtype and layout."""
    dtype, channels_last = setup.input_key
    x = net.preprocess.tensor(view, device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x if dtype == torch.float32 else x.to(dtype)


__all__ = ["Measured", "NetworkBuilder"]
