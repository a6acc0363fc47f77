"""The backends that run a network's forward pass, as plug-ins, and the registry that lists them.

Each backend is one module here defining ``BACKEND``, a :class:`~engine.runtime.backends.base.Backend`
(name, label, marker, availability, precisions, ``make_runner``). Adding one is that module plus
one line in :data:`BUILT_IN`; the window's picker, the CLI's choices, bench, analysis, the report
and auto's tuner (:mod:`engine.runtime.tuner`) read names, labels and markers from here.

- ``torch``: torch eager, the reference, run by the session itself (gradients, bf16 weights).
- ``onnxruntime``: the network exported to ONNX, run by ONNX Runtime's CPU provider.
- ``compile``: the same graph through ``torch.compile`` (seconds to compile; not tried by auto).
- ``openvino``: the same ONNX export, compiled by OpenVINO for the CPU.
"""

from __future__ import annotations

import importlib

from engine.runtime.backends.base import Backend, BackendError, BuildContext, GraphRunner, Runner

__all__ = ["AUTO", "BUILT_IN", "Backend", "BackendError", "BuildContext", "GraphRunner", "Runner", "backend",
           "backends", "check_backend", "choices", "glyph", "label", "make_runner", "marker", "names", "register",
           "short", "unregister"]

AUTO = "auto"  # not a backend: the tuner's choice among them, per network
BUILT_IN = (  # one line per backend, in the order pickers and tables list them
    "engine.runtime.backends.torch_eager",
    "engine.runtime.backends.ort",
    "engine.runtime.backends.compiled",
    "engine.runtime.backends.openvino",
)
_registry: dict[str, Backend] = {}
_loaded = False


def _load() -> dict[str, Backend]:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILT_IN:
            register(importlib.import_module(module).BACKEND)
    return _registry


def register(entry: Backend) -> Backend:
    """Add ``entry`` (or replace the backend of that name); returns it."""
    _load()
    _registry[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    _load()
    _registry.pop(name, None)


def backends() -> tuple[Backend, ...]:
    return tuple(_load().values())


def names() -> tuple[str, ...]:
    return tuple(_load())


def choices() -> tuple[str, ...]:
    """What ``--backend`` takes: auto, then every registered backend."""
    return (AUTO, *names())


def backend(name: str) -> Backend:
    """The registered backend ``name``, else :class:`BackendError` (one line)."""
    found = _load().get(name)
    if found is None:
        raise BackendError(f"unknown backend {name!r}; expected {', '.join(choices())}")
    return found


def label(name: str) -> str:
    """The backend as a person reads it: ``ONNX Runtime`` (auto and unknown names as they are)."""
    found = _load().get(name)
    return found.label if found is not None else name


# Each marker letter (matplotlib's) as a character for legends and captions.
GLYPHS = {"o": "\u25cf", "^": "\u25b2", "v": "\u25bc", "s": "\u25a0", "D": "\u25c6", "x": "\u2715",
          "+": "+", "*": "\u2605", "p": "\u2b1f", "h": "\u2b22"}


def short(name: str) -> str:
    """The backend's word in the window's picker and cost lines: ``ORT``."""
    found = _load().get(name)
    return found.short if found is not None else name


def marker(name: str) -> str:
    """The backend's plot marker (a matplotlib marker letter; torch eager's circle for unknown names)."""
    found = _load().get(name)
    return found.marker if found is not None else "o"


def glyph(name: str) -> str:
    """The backend's marker as a character: ``\u25b2`` for ONNX Runtime's triangle."""
    return GLYPHS.get(marker(name), "\u25cf")


def check_backend(name: str, device) -> str:
    """``name`` if it is auto or a backend that runs on ``device``'s kind, else :class:`BackendError`
    (one line). One that is not installed passes: the session says so and runs on torch eager."""
    if name == AUTO:
        return name
    entry = backend(name)
    if device.type not in entry.devices:
        where = "the CPU" if entry.devices == ("cpu",) else "the CPU or a GPU"
        raise BackendError(f"{entry.label} runs on {where} here; use --device cpu or --backend torch")
    return name


def make_runner(name: str, adapter, *, device, precision: str = "fp32", threads: int | None = None,
                cache: bool = True, taps=()) -> Runner | None:
    """A runner for ``adapter`` on backend ``name`` (None: torch eager, which the caller runs), for
    evaluation and analysis; ``cache`` False keeps an export out of the disk cache (random weights).
    Raises :class:`BackendError` (one line) where it cannot be built."""
    import torch

    entry = backend(name)
    why = entry.refusal(device, precision)
    if why is not None:
        raise BackendError(why)
    if cache:
        from engine.runtime.onnx_cache import OnnxCache

        store = OnnxCache()
    else:
        store = None
    threads = threads or torch.get_num_threads()
    return entry.make_runner(adapter, precision, threads, tuple(taps), BuildContext(device, threads, store))
