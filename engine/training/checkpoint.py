"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is written atomically at the end of every epoch: the model, the optimiser, the weight
average, every random state, the epoch and step, the history so far, and the run's identity (the
model, the whole recipe, the data's hash, the split and the seed). A run resumes only from a
checkpoint whose identity matches its own; anything else is refused with one line that names what
differs. Checkpoints are read with ``torch.load(weights_only=True)``: a tampered file is refused,
never executed.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from engine.common.errors import error_line
from engine.common.files import atomic_write

FORMAT = 1
FILE_NAME = "checkpoint.pt"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; ``str(e)`` is one line."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (a full disk, a folder gone); the one written before it
    is kept."""


def identity_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """None when two run identities match, else a short text naming the first differences."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    diffs.append(f"{key}.{sub} {a.get(sub)!r} -> {b.get(sub)!r}")
        elif a != b:
            diffs.append(f"{key} {_short(a)} -> {_short(b)}")
    if not diffs:
        return None
    more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return ", ".join(diffs[:3]) + more


def _short(value: Any) -> str:
    return f"{value[:12]}..." if isinstance(value, str) and len(value) > 16 else repr(value)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **payload}, tmp))
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        raise CheckpointWriteError(f"{path.name}: cannot be written ({_reason(e)})") from None


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__


MAX_BYTES = 8 << 30  # VGG-19's checkpoint (weights, their average and the optimiser's momenta) is ~0.6 GB


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, after its file, its zip records and then every field were checked;
    CheckpointError (one line naming the file) for anything else."""
    from engine.common.files import open_regular
    from engine.models.weights import WeightsError, check_torch_zip

    try:
        with open_regular(path, MAX_BYTES) as f:
            size = os.fstat(f.fileno()).st_size
            # a deflated record could inflate to gigabytes from a small file (the weights loader's check)
            if not check_torch_zip(path, path.name, size):
                raise CheckpointError(f"{path.name}: not a checkpoint of this version of CNN Arena (not torch.save's "
                                      "zip format)")
            payload = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path.name}: no such file") from None
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError, zipfile.BadZipFile) as e:
        why = error_line(e, 120, os_reason=True)
        raise CheckpointError(f"{path.name}: not a readable checkpoint ({why})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not a checkpoint of this version of CNN Arena")
    problem = _field_problem(payload)
    if problem:
        raise CheckpointError(f"{path.name}: a damaged checkpoint ({problem})")
    return payload


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _field_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with the fields the training loop reads back, or None: each has the type and
    range that the loop writes."""
    identity = payload.get("identity")
    if not isinstance(identity, dict):
        return f"identity is a {type(identity).__name__}, not a run's identity"
    recipe = identity.get("recipe", {})  # what train records; the loop itself needs none
    epochs = recipe.get("epochs") if isinstance(recipe, dict) else None
    if "recipe" in identity and not _is_count(epochs):
        return "identity.recipe.epochs is not a whole number"
    if not _is_count(payload.get("epoch")) or (epochs is not None and payload["epoch"] > epochs):
        return f"epoch {payload.get('epoch')!r} is not one of 0..{epochs if epochs is not None else 'the epochs'}"
    if not _is_count(payload.get("step")):
        return f"step {payload.get('step')!r} is not a whole number of 0 or more"
    history = payload.get("history")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        return "history is not a list of epochs"
    spent = payload.get("spent")
    if not isinstance(spent, dict) or not _is_seconds(spent.get("wall_s")) or not _is_seconds(spent.get("train_s")) \
            or not _is_count(spent.get("sittings")):
        return "spent is not wall_s and train_s in seconds and a count of sittings"
    for key in ("model", "optimiser"):
        if not isinstance(payload.get(key), dict):
            return f"{key} is not a state dict"
    if payload.get("ema") is not None and not isinstance(payload["ema"], dict):
        return "ema is not a state dict"
    for key in ("generator", "torch_rng"):
        if not isinstance(payload.get(key), torch.Tensor):
            return f"{key} is not a random state"
    if "world_size" in payload and (not _is_count(payload["world_size"]) or payload["world_size"] < 1):
        return f"world_size {payload['world_size']!r} is not a number of processes"
    return None
