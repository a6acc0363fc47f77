"""What makes a training run the run it is, and checks that every process of one agrees.

A run's identity (model, recipe, data, split, seed) decides whether a checkpoint may be resumed; the
data of a folder are identified by what a load reads from it, not by its name. Under torchrun every
rank checks its options, then its whole identity, against rank 0's before it trains: a rank with
other options would otherwise train another split, or wait in a collective the others never reach.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Any

from engine.cli.output import CliError
from engine.training.checkpoint import identity_mismatch
from engine.training.distributed import Ranks

# The fields of a recipe whose values have an upper bound as well as a lower one: (low, high, what).
_RANGES = {
    "label_smoothing": (0.0, 1.0, "between 0 and 1"),
    "momentum": (0.0, 1.0, "between 0 and 1"),
    "warmup": (0.0, 1.0, "between 0 and 1 (a fraction of all steps)"),
    "start_lr_frac": (0.0, 1.0, "between 0 and 1"),
    "final_lr_frac": (0.0, 1.0, "between 0 and 1"),
    "ema": (0.0, 1.0, "between 0 and 1"),
    # reflection padding must stay inside the 32-pixel image it mirrors
    "crop_pad": (0, 31, "between 0 and 31 pixels (a CIFAR-10 image is 32 pixels wide)"),
}


def check_recipe_ranges(changes: dict[str, Any]) -> None:
    """CliError (one line) for a ``--set`` value the training loop cannot use."""
    for key, value in changes.items():
        if key in _RANGES and value is not None:
            low, high, what = _RANGES[key]
            if not low <= value <= high:
                raise CliError(f"--set {key}={value}: must be {what}")


def folder_digest(root: Path) -> tuple[int, str]:
    """(total bytes, sha256) over the relative name and size of every file below ``root``, in name
    order (links to folders are not followed, as a load does not follow them twice)."""
    h = hashlib.sha256()
    total = 0
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            try:
                size = path.stat().st_size
            except OSError:
                size = -1  # unreadable: the load skips it, and says so
            total += max(0, size)
            h.update(f"{path.relative_to(root).as_posix()}\0{size}\n".encode("utf-8", "surrogateescape"))
    return total, h.hexdigest()


def data_identity(source: dict[str, Any]) -> str:
    """What identifies a run's data: the file's sha256, the folder's listing digest, else its name."""
    return source["sha256"] or source.get("files_sha256") or source["name"]


# The options that make a run what it is (--data is a path, which may differ between machines: the
# data themselves are compared once read; --out and --device are each process's own).
_RUN_OPTIONS = ("model", "epochs", "batch_size", "lr", "recipe_set", "val", "limit", "seed", "resume", "restart")


def same_options_everywhere(ranks: Ranks, args: argparse.Namespace) -> None:
    """Before anything is read: every process was started with the run's options of rank 0 (a rank
    with other --epochs would wait in a collective the others never reach)."""
    mine = {key: getattr(args, key, None) for key in _RUN_OPTIONS}
    every = ranks.all_gather(mine)
    for rank, theirs in enumerate(every):
        for key in _RUN_OPTIONS:
            if theirs.get(key) != every[0].get(key):
                flag = "--set" if key == "recipe_set" else f"--{key.replace('_', '-')}"
                raise CliError(f"the processes were started with different options: rank {rank} has {flag} "
                               f"{_option_text(theirs.get(key))}, rank 0 {_option_text(every[0].get(key))}; "
                               "start every process with the same command")


def _option_text(value: Any) -> str:
    if value is None or value is False:
        return "(not given)" if value is None else "off"
    if value is True:
        return "on"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def same_identity_everywhere(ranks: Ranks, name: str, identity: dict[str, Any]) -> None:
    every = ranks.all_gather(identity)
    for rank, theirs in enumerate(every):
        mismatch = identity_mismatch(every[0], theirs)
        if mismatch:
            raise CliError(f"{name}: rank {rank} would train another run than rank 0 ({mismatch}); start every "
                           "process with the same command and data")
