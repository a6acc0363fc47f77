"""The line a stopped ``train`` prints: a command that can be pasted from any folder, true about
which checkpoint exists."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from engine.cli import build_parser
from engine.cli.train_hint import file_stamp, stop_hint


def _args(*argv: str):
    return build_parser().parse_args(["train", *argv])


def _pasted(hint: str):
    """The hint's command as the shell would split it, parsed again: (executable, main.py, args)."""
    command = hint.split(": ", 2)[-1]
    words = shlex.split(command)
    return words[0], words[1], build_parser().parse_args(words[2:])


def test_the_hint_is_the_whole_command_with_absolute_quoted_paths(tmp_path, monkeypatch):
    data = tmp_path / "my data" / "cifar10-jpg.tar.gz"
    monkeypatch.chdir(tmp_path)
    args = _args("--model", "lenet5", "--data", "my data/cifar10-jpg.tar.gz", "--epochs", "7", "--out", "w",
                 "--batch-size", "12", "--lr", "0.02", "--val", "12", "--limit", "48", "--seed", "3",
                 "--set", "grad_clip=none", "--device", "cpu", "--nice")
    ckpt = tmp_path / "runs" / "checkpoint.pt"
    ckpt.parent.mkdir()
    before = file_stamp(ckpt)
    ckpt.write_bytes(b"written by this run")
    hint = stop_hint(args, ckpt, before, resumed=False, world=1)
    assert "this run's checkpoint" in hint and "is kept" in hint
    exe, main_py, again = _pasted(hint)
    assert exe == sys.executable and Path(main_py).is_absolute() and Path(main_py).name == "main.py"
    assert again.resume and not again.restart
    assert again.data == str(data) and again.out == str(tmp_path / "w")
    for field in ("model", "epochs", "batch_size", "lr", "val", "limit", "seed", "recipe_set", "device", "nice"):
        assert getattr(again, field) == getattr(args, field), field


def test_a_restart_stopped_before_its_first_checkpoint_does_not_claim_the_old_one(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"the previous run's")
    args = _args("--model", "lenet5", "--data", str(tmp_path / "d.tar.gz"), "--restart")
    hint = stop_hint(args, ckpt, file_stamp(ckpt), resumed=False, world=1)
    assert "previous run's" in hint and "is kept" not in hint
    _, _, again = _pasted(hint)
    assert again.restart and not again.resume  # --resume would continue the run the person discarded


def test_a_run_stopped_before_any_checkpoint_says_nothing_was_saved(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    args = _args("--model", "lenet5", "--data", str(tmp_path / "d.tar.gz"))
    hint = stop_hint(args, ckpt, None, resumed=False, world=1)
    assert "nothing was saved" in hint
    _, _, again = _pasted(hint)
    assert not again.resume and not again.restart and os.path.isabs(again.data)


def test_a_resumed_run_keeps_its_checkpoint_even_before_writing_a_new_one(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"the run this one continues")
    args = _args("--model", "lenet5", "--data", str(tmp_path / "d.tar.gz"), "--resume")
    hint = stop_hint(args, ckpt, file_stamp(ckpt), resumed=True, world=1)
    assert "is kept" in hint and _pasted(hint)[2].resume
