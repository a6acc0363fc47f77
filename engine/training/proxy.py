"""A recipe change measured on a short proxy: a subset of the training split, a few epochs, scored
on held-out images of the training split (never the test set), with no test evaluation at the end.

``python -m engine.training.proxy --model vgg16 --data PATH --limit 7000 --val 2000 --epochs 6
--set dropout=0`` trains ``--limit`` images of the training split less ``--val`` held out (the same
subset and split as ``python main.py train --limit --val``), checkpointing every epoch under the
runs folder so that a stopped proxy continues with the same command, and prints one JSON line: the
change, the validation top-1 after the last epoch (plain, the raw weights) and the run's own final
figure (flip TTA, EMA where it is better), each epoch's training time, the CPU's features and the
precision it trained in. ``--json FILE`` writes the same record.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from engine.training.recipes import RecipeError, parse_overrides, recipe_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.training.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, metavar="PATH")
    parser.add_argument("--limit", type=int, default=7000, help="images of the training split used in all")
    parser.add_argument("--val", type=int, default=2000, help="of those, held out for validation")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--set", action="append", dest="changes", metavar="FIELD=VALUE", default=[])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        record = run(args)
    except (ProxyError, RecipeError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the runs folder cannot be written
        print(f"error: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped; the last checkpoint is kept and the same command continues it", file=sys.stderr)
        return 130
    line = json.dumps(record)
    print(line, flush=True)
    if args.json:
        from engine.common.files import atomic_write
        atomic_write(Path(args.json), lambda tmp: tmp.write_text(line + "\n", encoding="utf-8"))
    return 0


class ProxyError(ValueError):
    """Bad input to a proxy run; one line."""


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from engine.cli.train import TerminalProgress, runs_dir
    from engine.data.datasets import DataError, load_cifar10, train_val_split
    from engine.models.registry import RegistryError, get_spec
    from engine.studies.evaluation import sample_indices
    from engine.training.checkpoint import FILE_NAME, CheckpointError, identity_mismatch, load_checkpoint
    from engine.training.loop import CheckpointPlan, precision_for, train
    from engine.training.machine import precision_line

    if args.limit <= 0 or args.epochs <= 0 or not 0 < args.val < args.limit:
        raise ProxyError("--limit and --epochs must be positive and --val between 1 and --limit - 1")
    try:
        spec = get_spec(args.model, "cifar10")
    except RegistryError as e:
        raise ProxyError(str(e)) from None
    changes = parse_overrides(args.changes)
    recipe = replace(recipe_for(spec, epochs=args.epochs), **changes)
    device = torch.device("cpu")
    print(precision_line(device, precision_for(device, recipe)), file=sys.stderr, flush=True)
    try:
        images, labels = load_cifar10(args.data, "train")
    except DataError as e:
        raise ProxyError(str(e)) from None
    keep = sample_indices(len(labels), args.limit, seed=args.seed)
    images, labels = images[keep], labels[keep]
    if args.val >= len(labels):
        raise ProxyError(f"--val {args.val} leaves no training images out of {len(labels)}")
    fit, val = train_val_split(len(labels), args.val, args.seed)
    identity = {"proxy": True, "model": spec.name, "recipe": asdict(recipe), "limit": args.limit,
                "val_images": args.val, "seed": args.seed, "train_images": int(len(fit))}
    tag = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    path = runs_dir() / f"proxy-{spec.name}-{tag}" / FILE_NAME
    saved = None
    if path.exists():
        try:
            saved = load_checkpoint(path)
        except CheckpointError:
            saved = None  # a proxy's own unreadable checkpoint: start it again
        if saved is not None and identity_mismatch(saved.get("identity", {}), identity):
            saved = None
    _, metrics = train(spec, images[fit], labels[fit], recipe, device=device, seed=args.seed,
                       val=(images[val], labels[val]), progress=TerminalProgress(spec.name),
                       checkpoint=CheckpointPlan(path, identity, saved))
    times = [e["train_s"] for e in metrics["history"] if "train_s" in e]
    return {
        "model": spec.name, "change": ", ".join(args.changes) or "the shipped recipe",
        "train_images": int(len(fit)), "val_images": args.val, "epochs": recipe.epochs, "seed": args.seed,
        "val_top1_last_epoch": metrics["history"][-1].get("val_top1"),
        "val_top1_final": metrics.get("val_top1"), "final_tta_flip": recipe.tta_flip, "ema_used": metrics["ema_used"],
        "epoch_train_s_median": round(statistics.median(times), 3) if times else None,
        "images_per_s": metrics["images_per_s"], "cpu": metrics["cpu"], "precision": metrics["precision"],
        "recipe": metrics["recipe"], "date": _dt.date.today().isoformat(),
    }


if __name__ == "__main__":
    sys.exit(main())
