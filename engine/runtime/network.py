"""One loaded network and its runtime: the ways it can run (:class:`Setup`, one per candidate the
tuner kept), the one that runs it now, what it is asked on each frame, and its answer to an input.

Each network owns its runtime, so a change to one network's weights, backend or precision rebuilds
that network alone (:class:`~engine.runtime.session.InferenceSession` keeps the others).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from engine.common.errors import error_line
from engine.models.adapter import ModelAdapter, Tap
from engine.models.preprocess import Preprocess
from engine.models.weights import LoadedModel
from engine.probes import Activations, ProbeRequest, run_probe
from engine.probes.base import ProbeFailed, read_only
from engine.runtime.backends import BackendError, Runner
from engine.runtime.device import synchronize
from engine.runtime.graph import top_class
from engine.runtime.precision import dtype_of
from engine.runtime.results import ModelResult, frozen
from engine.runtime.tuner import Candidate, Decision, LiveCheck

NO_ACTIVATIONS = MappingProxyType({})


@dataclass
class Setup:
    """One way to run the network: a backend's runner, or (``runner`` None) torch eager on ``adapter``."""

    candidate: Candidate
    adapter: ModelAdapter  # the torch module (in the candidate's precision where it is torch's)
    runner: Runner | None = None
    channels_last: bool = False  # torch eager's input layout (channels-last on the CPU)
    taps: list[Tap] = field(default_factory=list)  # torch eager's, on adapter

    @property
    def input_key(self) -> tuple:
        """How its input is prepared (dtype, channels-last): networks alike share one tensor."""
        if self.runner is not None:
            return self.runner.dtype, self.runner.channels_last
        return dtype_of(self.candidate.precision), self.channels_last


@dataclass
class Network:
    loaded: LoadedModel  # the network as loaded, float32 (the reference)
    preprocess: Preprocess
    device: torch.device
    top_k: int = 5
    setups: dict[Candidate, Setup] = field(default_factory=dict)
    setup: Setup | None = None  # what runs it now
    decision: Decision | None = None
    check: LiveCheck | None = None  # a close runner-up, timed again on live frames
    probes: tuple[ProbeRequest, ...] = ()
    capture: tuple[str, ...] = ()  # the layers whose activations come back in ModelResult
    extra: tuple[ProbeRequest, ...] = ()  # the probes other than activations
    captured: dict[str, torch.Tensor] = field(default_factory=dict)
    in_check: bool = False  # whether the pass under way is a live check's turn

    @property
    def spec(self):
        return self.loaded.spec

    @property
    def runner(self) -> Runner | None:
        return self.setup.runner

    @property
    def candidate(self) -> Candidate:
        return self.setup.candidate

    @property
    def backend(self) -> str:
        return self.setup.candidate.backend

    @property
    def adapter(self) -> ModelAdapter:
        """The torch module probes run on: the chosen setup's where it is torch's, else float32."""
        return self.setup.adapter

    @property
    def input_key(self) -> tuple:
        return (self.preprocess, *self.setup.input_key)

    def tapped_layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer for probe in self.probes for layer in probe.layers))

    def active(self) -> list[Setup]:
        """The setups that answer frames: the chosen one, and a live check's runner-up."""
        found = [self.setup]
        if self.check is not None:
            other = self.setups.get(self.check.other if self.check.load == self.setup.candidate else self.check.load)
            if other is not None and other is not self.setup:
                found.append(other)
        return found

    # -- probes ---------------------------------------------------------------------------------

    def check_layers(self, probes: tuple[ProbeRequest, ...]) -> None:
        """``KeyError`` for the first layer ``probes`` name that the network does not have."""
        known = dict(self.loaded.model.named_modules())
        unknown = [layer for probe in probes for layer in probe.layers if layer not in known]
        if unknown:
            raise KeyError(f"{self.spec.name} has no layer {unknown[0]!r}")

    def probe(self, request: ProbeRequest, x: torch.Tensor) -> object:
        """One probe's answer on torch's module, or :class:`ProbeFailed` with its reason: a probe
        that cannot answer (a Grad-CAM layer the class scores do not read) never costs the frame."""
        try:
            return run_probe(request, self.adapter, x, self.captured)
        except (RuntimeError, ValueError, KeyError) as e:
            return ProbeFailed(f"{request.name}: {error_line(e)}")

    def set_probes(self, probes: tuple[ProbeRequest, ...]) -> None:
        """Ask ``probes`` from the next frame on, with taps placed on every active setup. Taps stay
        in place from frame to frame: placing them per frame would cost more than LeNet-5's pass."""
        self.probes = probes
        self.capture = tuple(layer for p in probes if isinstance(p, Activations) for layer in p.layers)
        self.extra = tuple(p for p in probes if not isinstance(p, Activations))
        self.place_taps()

    def place_taps(self) -> str | None:
        """Taps on every active setup; a runner that cannot take them ends the live check or, where
        it runs the network, hands it to torch eager. Returns what changed, in words, or None."""
        for setup in self.setups.values():
            for tap in setup.taps:
                tap.remove()
            setup.taps = []
        self.captured.clear()
        layers, said = self.tapped_layers(), None
        for setup in self.active():
            if setup.runner is None:
                setup.taps = setup.adapter.tap(layers, self.captured)
                continue
            try:
                setup.runner.set_taps(layers)
            except BackendError as e:
                if setup is self.setup:
                    said = f"torch eager: {e}"
                    self.setup = self.torch_setup()
                    self.decision = Decision(self.spec.name, self.setup.candidate, self.decision.asked, why=said)
                self.check = None
                return self.place_taps() or said
        return said

    def torch_setup(self) -> Setup:
        found = next((s for s in self.setups.values() if s.runner is None), None)
        if found is None:
            found = Setup(Candidate("torch"), ModelAdapter(self.spec, self.loaded.model),
                          channels_last=self.device.type == "cpu")
            self.setups[found.candidate] = found
        return found

    @contextmanager
    def bare(self) -> Iterator[Runner | torch.nn.Module]:
        """The network with its taps removed: what a plain forward pass costs."""
        runner = self.setup.runner
        if runner is not None:
            runner.set_taps(())
            try:
                yield runner
            finally:
                runner.set_taps(self.tapped_layers())
            return
        for tap in self.setup.taps:
            tap.remove()
        try:
            yield self.setup.adapter.model
        finally:
            self.setup.taps = self.setup.adapter.tap(self.tapped_layers(), self.captured)

    def keep_only(self, *candidates: Candidate) -> None:
        """Close and drop every setup but ``candidates`` (and torch eager's, which probes use)."""
        for c, setup in list(self.setups.items()):
            if c not in candidates and setup.runner is not None:
                setup.runner.close()
                del self.setups[c]

    # -- live checks ----------------------------------------------------------------------------

    def next_setup(self) -> Setup:
        """The setup that answers the next frame: what load chose, or, once a live check is due,
        its turn (a setup that fails there ends the check: :meth:`answer`)."""
        check = self.check
        self.in_check = check is not None and check.due()
        return self.setups[check.next()] if self.in_check else self.setup

    def checked(self, setup: Setup, ms: float) -> bool:
        """Count a live check's pass (when ``setup`` ran as its turn); True when the check settled
        (a change only when a second check agrees), with :attr:`decision` saying what and why."""
        check = self.check
        if check is None or not self.in_check or not check.add(setup.candidate, ms):
            return False
        decision, self.check = check.settle(self.decision)
        if self.check is not None:
            return False
        self.decision, self.setup = decision, self.setups[decision.chosen]
        self.keep_only(decision.chosen)
        self.place_taps()  # torch's hooks go with torch
        return True

    # -- one answer -----------------------------------------------------------------------------

    def answer(self, setup: Setup, x: torch.Tensor, view: np.ndarray, pre_ms: float) -> ModelResult:
        """The network's answer to one prepared input on ``setup``. A live check's side that fails
        ends the check: one failed frame, then what load chose, unchecked."""
        try:
            if setup.runner is not None:
                return self._runner_answer(setup.runner, x, view, pre_ms)
            return self._torch_answer(setup, x, view, pre_ms)
        except Exception:
            if self.in_check:
                self.check = None
                self.place_taps()
            raise

    def _runner_answer(self, runner: Runner, x: torch.Tensor, view: np.ndarray, pre_ms: float) -> ModelResult:
        """A runner's graph already holds the softmax, top-k, class map and taps: what is left is
        taking item 0 of each."""
        spec = self.loaded.spec
        if self.device.type != "cpu":
            synchronize(self.device)
        t0 = time.perf_counter()
        out = runner.outputs(x)  # logits, probabilities, top classes, [class map, confidence], taps
        top, probs = out[2][0, :self.top_k], out[1][0]
        top.flags.writeable = probs.flags.writeable = False
        class_map = confidence = None
        if runner.with_map:
            class_map, confidence = out[3][0], out[4][0]
            class_map.flags.writeable = confidence.flags.writeable = False
        activations = NO_ACTIVATIONS
        capture = self.capture
        if len(capture) == 1:  # the usual case, written out (see _torch_answer)
            layer = capture[0]
            activations = MappingProxyType({layer: _item(out[runner.tap_index[layer]])})
        elif capture:
            index = runner.tap_index
            activations = MappingProxyType({layer: _item(out[index[layer]]) for layer in capture})
        forward_ms = (time.perf_counter() - t0) * 1000
        if self.extra:  # probes other than activations read the taps as tensors
            self.captured.clear()
            self.captured.update({layer: torch.from_numpy(out[i]) for layer, i in runner.tap_index.items()})
        return ModelResult(spec.name, top, spec.class_names, probs, pre_ms, forward_ms, view,
                           activations, class_map, confidence, backend=runner.backend)

    def _torch_answer(self, setup: Setup, x: torch.Tensor, view: np.ndarray, pre_ms: float) -> ModelResult:
        """Torch eager under ``torch.inference_mode`` (which the session enters once per frame). The
        time covers everything from the input tensor to the finished result: forward pass,
        activations, softmax, top-k and numpy arrays.

        Every line between the two clock readings counts: after a forward pass the processor's
        caches hold torch's kernels, not Python's, so each Python step costs several times its
        usual price. Hence torch for softmax and top-k, the one-layer case written out, and nothing
        looked up that could be looked up before.
        """
        spec, adapter, captured, k = self.loaded.spec, setup.adapter, self.captured, self.top_k
        fp32_cpu = self.device.type == "cpu" and setup.candidate.precision == "fp32"
        has_class_map = spec.has_class_map
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
        capture = self.capture
        if fp32_cpu and len(capture) == 1:  # the usual case: a float32 network on the CPU
            layer = capture[0]
            a = captured[layer].numpy()[0]
            a.flags.writeable = False
            activations = MappingProxyType({layer: a})
        else:  # the activations probe's reading of the pass (engine.probes.activations), item 0
            activations = MappingProxyType({layer: read_only(captured[layer])[0] for layer in capture}) \
                if capture else NO_ACTIVATIONS
        forward_ms = (time.perf_counter() - t0) * 1000
        return ModelResult(spec.name, top, spec.class_names, probs, pre_ms, forward_ms, view,
                           activations, class_map, confidence)


def _item(a: np.ndarray) -> np.ndarray:
    """Item 0 of a runner's (N, C, H, W) output, read-only and float32."""
    a = a[0] if a.dtype == np.float32 else a[0].astype(np.float32)
    a.flags.writeable = False
    return a
