"""Loading the networks for the engine: a new session for a configuration, with every failure
turned into one ``Error`` event and a fallback where one makes sense (the default weights, fp32,
torch eager), so that a first session starts rather than not at all and a running one is kept."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.common.errors import error_line
from engine.live.events import EngineEvent, Error, ErrorCode, RunRequest
from engine.models.registry import RegistryError
from engine.models.weights import WeightsError
from engine.probes import ProbeRequest
from engine.runtime.backends import BackendError
from engine.runtime.device import resolve_device
from engine.runtime.precision import PrecisionError
from engine.runtime.session import InferenceSession, activation_probes


@dataclass(frozen=True)
class EngineConfig:
    """What the engine is asked to run: a profile's networks on a device, with weights files,
    precision and backend."""

    profile: str
    device: str
    models: tuple[str, ...] | None
    weights: tuple[tuple[str, str], ...]
    precision: str = "fp32"
    backend: str = "torch"
    runtimes: tuple[tuple[str, str, str], ...] = ()  # (network, backend, precision) of its own

    def runtime_of(self, name: str) -> tuple[str, str]:
        """(backend, precision) one network is asked to run on: its own, else the session's."""
        return next(((b, p) for n, b, p in self.runtimes if n == name), (self.backend, self.precision))

    def weights_of(self, name: str) -> str | None:
        return dict(self.weights).get(name)


def kept_networks(running: InferenceSession | None, before: EngineConfig | None, after: EngineConfig) -> dict:
    """The running session's networks that ``after`` asks for unchanged (same profile, device,
    weights, backend and precision): a new session takes them as they are, so a change to one
    network rebuilds that network only."""
    if running is None or before is None or (before.profile, before.device) != (after.profile, after.device):
        return {}
    return {name: running.network(name) for name in running.names
            if before.weights_of(name) == after.weights_of(name) and before.runtime_of(name) == after.runtime_of(name)}


def build_session(config: EngineConfig, *, running: bool, top_k: int, ort_threads: int,
                  emit: Callable[[EngineEvent], None], keep: dict | None = None,
                  ) -> tuple[InferenceSession, EngineConfig, torch.device] | None:
    """A session for ``config`` (or for the fallback it had to take, which is returned with it),
    or None after an ``Error``; ``running``: whether a session runs now, which is then kept;
    ``keep``: its networks to take as they are (:func:`kept_networks`)."""
    try:
        device = resolve_device(config.device)
    except ValueError as e:
        emit(Error(ErrorCode.DEVICE, f"{e}{'; the networks stay where they were' if running else '; choose cpu'}"))
        return None
    if config.device not in ("cpu", "auto") and device.type == "cpu":
        emit(Error(ErrorCode.DEVICE, f"{config.device} is not available here: running on the CPU"))
    try:
        session = InferenceSession(config.profile, str(device), config.models, dict(config.weights), top_k=top_k,
                                   precision=config.precision, backend=config.backend, ort_threads=ort_threads,
                                   runtimes={n: (b, p) for n, b, p in config.runtimes}, keep=keep)
    except WeightsError as e:
        if running:
            emit(Error(ErrorCode.WEIGHTS, f"{e}; the networks keep the weights they had"))
            return None
        emit(Error(ErrorCode.WEIGHTS, f"{e}; starting on the default weights"))
        return build_session(dataclasses.replace(config, weights=()), running=running, top_k=top_k,
                             ort_threads=ort_threads, emit=emit)
    except (PrecisionError, BackendError) as e:
        # a setting this machine cannot run: the running networks keep theirs, or the first
        # session starts on the default one (fp32, torch eager)
        setting, default, how = (("precision", "fp32", "in fp32") if isinstance(e, PrecisionError)
                                 else ("backend", "torch", "on torch eager"))
        if running:
            emit(Error(ErrorCode.SESSION, f"{e}; the networks keep the {setting} they had"))
            return None
        emit(Error(ErrorCode.SESSION, f"{e}; starting {how}"))
        return build_session(dataclasses.replace(config, **{setting: default}), running=running, top_k=top_k,
                             ort_threads=ort_threads, emit=emit)
    except (RegistryError, ValueError, RuntimeError) as e:
        emit(Error(ErrorCode.SESSION, f"cannot load the networks: {error_line(e, typed=True)}"))
        return None
    return session, config, device


def carried_probes(current: RunRequest, session: InferenceSession,
                   default_layers: bool) -> dict[str, tuple[ProbeRequest, ...]]:
    """What a new session runs on each frame: what was asked for carries over where the layers
    still exist; elsewhere each network's default layer (``default_layers``) or nothing."""
    probes = {}
    for name in session.names:
        wanted = current.probes.get(name)
        known = {layer.name for layer in session.layers(name)}
        if wanted is not None and all(layer in known for p in wanted for layer in p.layers):
            probes[name] = wanted
        elif default_layers:
            probes[name] = activation_probes((session.spec(name).default_layer,))
    return probes
