"""What the commands' arguments accept: argparse types, the choices (kept here as plain tuples so
that ``--help`` needs no torch), and the parsers of ``--backend`` and ``--weights``."""

from __future__ import annotations

import argparse

from engine.cli.output import CliError


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds a timer can hold (about 24 days at most)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= MAX_SECONDS:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SECONDS:,} seconds, not {text!r}")
    return value


MAX_SEED = 2**32 - 1  # numpy's legacy seeding and several samplers take no more


def seed_int(text: str) -> int:
    """An argparse type: a random seed, a whole number from 0 to :data:`MAX_SEED`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, not {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text!r}")
    return value


MAX_SECONDS = 2_000_000
PRECISIONS = ("auto", "fp32", "bf16", "int8")  # engine.runtime.precision.PRECISIONS, without importing torch for --help
GRADCAM_METHODS = ("gradcam", "gradcam++", "scorecam")  # engine.probes.gradcam.METHODS, likewise
TTA_MODES = ("flip", "flip+shift")  # engine.studies.evaluation.TTA_MODES, likewise
LINEUPS = ("four", "paper", "modern")  # engine.studies.lineup.LINEUPS, likewise


def backend_names(auto: bool = True) -> tuple[str, ...]:
    """The registered backends (engine.runtime.backends), with ``auto`` first where it is a choice."""
    from engine.runtime import backends

    return backends.choices() if auto else backends.names()


def default_backend() -> str:
    """The window's and predict's backend when none is given: ``$CNN_ARENA_BACKEND`` if it names
    one, else auto."""
    from engine.common.settings import current

    wanted = current().backend
    return wanted if wanted in backend_names() else "auto"


def backend_help() -> str:
    from engine.runtime import backends

    listed = ", ".join(f"{b.name} ({b.label})" for b in backends.backends())
    return (f"what runs the networks: auto (for each network, the fastest of the backends, thread counts and "
            f"number formats it measures at load that agree with torch), or one of {listed}; "
            f"default auto, or $CNN_ARENA_BACKEND")
PRECISION_HELP = ("number format of the networks: auto (default: for each network, bf16 where this machine runs "
                  "it natively, and int8 where its int8 graph measured within 0.5 point of fp32's top-1, each "
                  "only where it measures faster at load), fp32, bf16, or int8 (ONNX Runtime's int8 graphs, "
                  "made by eval --precision int8)")


def parse_backends(text: str) -> list[str]:
    """``--backend``: one name, a comma-separated list, or ``all``; unknown names are a CliError."""
    known = backend_names()
    names = list(known[1:]) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n.partition(":")[0] not in known or
               (":" in n and n.partition(":")[2] not in PRECISIONS)]
    if unknown or not names:
        raise CliError(f"--backend: unknown backend {unknown[0] if unknown else text!r}; expected "
                       f"{', '.join(known)} (each with :PRECISION if you like, e.g. onnxruntime:fp32), "
                       f"a comma-separated list, or all")
    return list(dict.fromkeys(names))


def device_name(text: str) -> str:
    """An argparse type: a device name torch knows (auto, cpu, cuda, cuda:N); whether it is here
    is the command's question."""
    from engine.runtime.device import resolve_device

    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def parse_weights(items: list[str]) -> dict[str, str]:
    """``--weights MODEL=PATH`` options as a mapping; a malformed one is a :class:`CliError`."""
    from engine.models.weights import WeightsError, parse_weights_args
    try:
        return parse_weights_args(items)
    except WeightsError as e:
        raise CliError(str(e)) from None
