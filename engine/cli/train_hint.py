"""What a stopped training says: which checkpoint is on disk, truly, and the exact command to
paste that goes on from there (this interpreter, absolute paths, every flag given, shell-quoted)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def train_command(args: argparse.Namespace, mode: str | None) -> list[str]:
    """The command line that runs ``args`` again, every flag given, paths absolute, with ``mode``
    ("--resume", "--restart" or None) in place of the one given."""
    main_py = Path(__file__).resolve().parents[2] / "main.py"
    argv = [sys.executable, str(main_py), "train", "--model", args.model,
            "--data", args.data if args.data == "download" else str(Path(args.data).resolve())]
    if args.out:
        argv += ["--out", str(Path(args.out).resolve())]
    defaults = build_train_defaults()
    for flag, attr in (("--epochs", "epochs"), ("--device", "device"), ("--batch-size", "batch_size"),
                       ("--lr", "lr"), ("--val", "val"), ("--limit", "limit"), ("--seed", "seed"),
                       ("--dist-timeout", "dist_timeout")):
        value = getattr(args, attr, None)
        if value is not None and value != defaults.get(attr):
            argv += [flag, str(value)]
    for change in getattr(args, "recipe_set", None) or ():
        argv += ["--set", change]
    if getattr(args, "nice", False):
        argv.append("--nice")
    if mode:
        argv.append(mode)
    return argv


def build_train_defaults() -> dict[str, Any]:
    """The values the parser gives a flag left out: such a flag is left out of the hint too."""
    from engine.cli.parser import build_parser

    return vars(build_parser().parse_args(["train", "--model", "-", "--data", "-"]))


def stop_hint(args: argparse.Namespace, ckpt_path: Path, before: tuple[int, int] | None, resumed: bool,
              world: int) -> str:
    """What a stop leaves on disk, said truly, and the command to paste that goes on from there.

    A checkpoint this run has not written (a --restart stopped before its first epoch ended) belongs
    to the run before: --resume would continue that one, so the hint repeats the --restart."""
    import shlex

    run_dir = ckpt_path.parent
    after = file_stamp(ckpt_path)
    if after is not None and (after != before or resumed):
        text, mode = f"stopped; this run's checkpoint in {run_dir} is kept. Continue with", "--resume"
    elif after is not None:
        text, mode = (f"stopped before this run's first checkpoint; the one in {run_dir} is the previous run's, "
                      "left as it was. Start this run again with"), "--restart"
    else:
        text, mode = "stopped before the first epoch ended; nothing was saved. Start again with", None
    argv = train_command(args, mode)
    command = shlex.join(argv) if world == 1 else \
        f"the same torchrun launch ({world} processes) of {shlex.join(argv[1:])}"
    return f"{text}: {command}"
