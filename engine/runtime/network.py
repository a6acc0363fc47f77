"""One loaded network as a session holds it: the model and its adapter, how its input is prepared,
what it is asked on each frame, and what runs it (precision, backend, threads) with why."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.models.adapter import ModelAdapter, Tap
from engine.models.preprocess import Preprocess
from engine.models.weights import LoadedModel
from engine.probes import ProbeRequest
from engine.runtime.backends import Runner
from engine.runtime.trials import BackendTrial, ThreadTrial


@dataclass
class Network:
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
