"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is written atomically at the end of every epoch: the model, the optimiser, the weight
average, every random state, the epoch and step, the history so far, and the run's identity (the
model, the whole recipe, the data's hash, the split and the seed). A run resumes only from a
checkpoint whose identity matches its own; anything else is refused with one line that names what
differs. Checkpoints are read with ``torch.load(weights_only=True)``: a tampered file is refused,
never executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from engine.files import atomic_write

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


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path.name}: no such file") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path.name}: not a readable checkpoint ({first[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: not a checkpoint of this version of CNN Arena")
    return payload
