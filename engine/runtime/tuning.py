"""The choices a session makes per network when it loads, and settles on live frames: the precision
(bf16 only where native and faster), torch's threads for a heavy network, and auto's backend
(ONNX Runtime where it agrees with torch and is faster). Each choice keeps a note of the times it
was made on, which the panel's tooltip, the report and bench print."""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import torch
import torch.nn as nn

from engine.common.timing import paired_medians_ms
from engine.models.adapter import ModelAdapter
from engine.models.registry import ModelSpec
from engine.models.weights import UNTRAINED
from engine.runtime import trials
from engine.runtime.backends import (
    BackendError,
    CompiledRunner,
    OnnxCache,
    OrtRunner,
    Runner,
)
from engine.runtime.device import synchronize
from engine.runtime.layers import feature_layers
from engine.runtime.network import Network
from engine.runtime.precision import AUTO_GAIN, bf16_native, dtype_of
from engine.runtime.trials import BackendTrial, ThreadTrial, ms_text, torch_threads


class LoadTimeChoices:
    """Mixed into :class:`~engine.runtime.session.InferenceSession`: its per-network choices."""

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

    def _with_backend(self, net: Network, ort_runner: OrtRunner | None) -> tuple[float | None, float | None]:
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

    def _use_runner(self, net: Network, runner: Runner | None) -> None:
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
