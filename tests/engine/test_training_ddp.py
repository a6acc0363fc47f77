"""Training on two processes (DistributedDataParallel, gloo, CPU), as ``torchrun --nproc_per_node=2`` runs it.

The ranks are forked from this process with the variables torchrun gives its workers (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT on 127.0.0.1), so that no process has to import torch
again: a launch costs well under a second instead of several. Every launched process is joined with a
timeout, and killed if it is still there.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.cli import build_parser, run_command
from engine.models.registry import get_spec
from engine.training import RECIPES, load_checkpoint, train
from engine.training.distributed import launch_from_env, shutdown
from tests.engine.test_data import make_tiny_archive
from tests.engine.test_training import tiny_set

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(), reason="needs fork and gloo")

WORLD = 2
JOIN_S = 60.0  # no launched process may outlive this
DIST_TIMEOUT_S = 20  # --dist-timeout of the command-line runs: a lost peer must be noticed long before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Rank:
    process: multiprocessing.Process
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def _rank_main(rank: int, port: int, env: dict[str, str], out: str, err: str, target, args) -> None:
    """A forked rank: torchrun's variables, its own stdout/stderr files, one thread; exits with target's status."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **env})
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # pytest captured the old ones
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    torch.set_num_threads(1)  # as torchrun sets OMP_NUM_THREADS=1
    code = 99
    try:
        code = target(*args)
    except BaseException:  # reported in the rank's stderr, and as its exit status
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def launch(tmp: Path, target, args: tuple, env_of=lambda rank: {}) -> list[Rank]:
    port = free_port()
    # forkserver: the ranks fork from a clean, single-threaded server process, not from this one,
    # whose earlier tests left thread pools (torch's, ONNX Runtime's, the engine's) that a forked
    # child cannot use ("Invalid thread pool!", "autograd's threading ... fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "engine.training.distributed"])
    ranks = []
    for rank in range(WORLD):
        out, err = tmp / f"rank{rank}.out", tmp / f"rank{rank}.err"
        p = ctx.Process(target=_rank_main, args=(rank, port, env_of(rank), str(out), str(err), target, args))
        p.start()
        ranks.append(Rank(p, out, err))
    return ranks


def join(ranks: list[Rank], timeout: float = JOIN_S) -> None:
    deadline = time.monotonic() + timeout
    try:
        for r in ranks:
            r.process.join(max(0.0, deadline - time.monotonic()))
        assert all(r.process.exitcode is not None for r in ranks), "a rank was still running after the timeout"
    finally:
        for r in ranks:
            if r.process.is_alive():
                r.process.kill()
                r.process.join(5)


def _cli(argv: list[str]) -> int:
    return run_command(build_parser().parse_args(argv))


# --- a rank that stops answering ----------------------------------------------------------------

STOPPED_TIMEOUT_S = 3.0  # short, yet long enough for the first collectives on a busy machine


def _wait_for_a_stopped_peer(path: str) -> int:
    from engine.training.distributed import failure_text

    ranks = launch_from_env().join(torch.device("cpu"), timeout_s=STOPPED_TIMEOUT_S)
    assert ranks.all_sum([1.0]) == [2.0]  # the group works
    if ranks.rank == 1:
        os.kill(os.getpid(), signal.SIGSTOP)  # alive, its sockets open, never answering again
        return 0
    start = time.monotonic()
    try:
        ranks.all_sum([1.0])
        text = "no error"
    except RuntimeError as e:
        text = failure_text(e)
    Path(path).write_text(json.dumps({"waited_s": time.monotonic() - start, "text": text}))
    return 0


@pytest.mark.slow
def test_a_rank_that_stops_answering_fails_the_others_after_the_timeout(tmp_path):
    ranks = launch(tmp_path, _wait_for_a_stopped_peer, (str(tmp_path / "r0.json"),))
    try:
        ranks[0].process.join(JOIN_S)
        assert ranks[0].process.exitcode == 0, ranks[0].stderr()
    finally:
        ranks[1].process.kill()  # the stopped rank
        join(ranks, 10)
    got = json.loads((tmp_path / "r0.json").read_text())
    assert STOPPED_TIMEOUT_S / 2 < got["waited_s"] < 30, got  # the process-group timeout, not forever
    assert "Timed out" in got["text"] and "\n" not in got["text"] and not got["text"].startswith("["), got


# --- the training loop on two ranks -------------------------------------------------------------

def _small_bn_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


_RECIPE = replace(RECIPES["lenet5"], epochs=2, batch_size=12, cpu_bf16=False, ema=0.9)


def _train_on_ranks(path: str) -> int:
    ranks = launch_from_env().join(torch.device("cpu"), timeout_s=DIST_TIMEOUT_S)
    try:
        images, labels = tiny_set(8)
        model, metrics = train(get_spec("lenet5"), images, labels, _RECIPE, seed=4, model=_small_bn_net(),
                               val=(images[::3], labels[::3]), ranks=ranks)
        if ranks.is_main:
            torch.save({"state": model.state_dict(), "metrics": metrics,
                        "types": sorted({type(m).__name__ for m in model.modules()})}, path)
        return 0
    finally:
        shutdown()


@pytest.mark.slow  # two processes training
def test_two_ranks_train_a_batch_norm_network_as_one_process_does(tmp_path):
    """Same global batch, order, crops and flips; batch norm over the whole global batch (synchronised
    across the ranks on the CPU too). In fp32 the two differ only by the order of float additions
    (two half-batch gradients summed instead of one whole), so they agree to ~1e-6 after 8 steps."""
    ranks = launch(tmp_path, _train_on_ranks, (str(tmp_path / "ddp.pt"),))
    join(ranks)
    assert [r.process.exitcode for r in ranks] == [0, 0], ranks[0].stderr() + ranks[1].stderr()
    got = torch.load(tmp_path / "ddp.pt", weights_only=False)
    images, labels = tiny_set(8)
    model, metrics = train(get_spec("lenet5"), images, labels, _RECIPE, seed=4, model=_small_bn_net(),
                           val=(images[::3], labels[::3]))
    assert "BatchNorm2d" in got["types"] and "CrossRankBatchNorm" not in got["types"]  # handed back plain
    want = model.state_dict()
    assert got["state"].keys() == want.keys()
    for key, value in want.items():
        torch.testing.assert_close(got["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert got["metrics"]["world_size"] == 2 and got["metrics"]["batch_per_process"] == 6
    assert got["metrics"]["steps"] == metrics["steps"] == 2 * 2
    assert [h["loss"] for h in got["metrics"]["history"]] == pytest.approx([h["loss"] for h in metrics["history"]],
                                                                            rel=1e-5)
    assert got["metrics"]["val_top1"] == metrics["val_top1"] and got["metrics"]["ema_used"] == metrics["ema_used"]


# --- the command on two ranks: a killed rank, a refused resume, a resume that finishes -----------

EPOCHS = 8  # of 2 steps: enough that rank 1 is killed long before the run could end


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return make_tiny_archive(tmp_path_factory.mktemp("data") / "tiny.tar.gz", train_per_class=20, test_per_class=2)


def _argv(archive: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "lenet5", "--data", str(archive), "--limit", "36", "--val", "12", "--epochs",
            str(EPOCHS), "--batch-size", "12", "--device", "cpu", "--out", str(out), "--dist-timeout",
            str(DIST_TIMEOUT_S), *extra]


def _caches(root: Path):
    return lambda rank: {"CNN_ARENA_CACHE": str(root / f"cache{rank}")}


@dataclass
class StoppedRun:
    root: Path
    ranks: list[Rank]
    waited_s: float  # from the kill to rank 0's exit

    @property
    def run_dir(self) -> Path:
        return self.root / "cache0" / "runs" / "lenet5_cifar10"


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, archive) -> StoppedRun:
    """Two ranks training; rank 1 killed (SIGKILL) once rank 0 has written its first checkpoint."""
    root = tmp_path_factory.mktemp("stopped")
    ranks = launch(root, _cli, (_argv(archive, root / "w"),), _caches(root))
    ckpt = root / "cache0" / "runs" / "lenet5_cifar10" / "checkpoint.pt"
    try:
        deadline = time.monotonic() + JOIN_S
        while not ckpt.exists() and ranks[0].process.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ckpt.exists(), ranks[0].stderr()
        killed = time.monotonic()
        os.kill(ranks[1].process.pid, signal.SIGKILL)
        ranks[0].process.join(DIST_TIMEOUT_S + 10)
        waited = time.monotonic() - killed
    finally:
        join(ranks, 10)
    return StoppedRun(root, ranks, waited)


@pytest.mark.slow  # two processes training, one killed
def test_a_killed_rank_makes_the_other_stop_with_one_line(stopped_run):
    rank0 = stopped_run.ranks[0]
    assert rank0.process.exitcode == 2, rank0.stderr()
    assert stopped_run.waited_s < DIST_TIMEOUT_S  # a dead peer is noticed at once, not after the timeout
    err = rank0.stderr()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: rank 0: stopped: ")
    assert "--resume continues it" in err.strip().splitlines()[-1]
    saved = load_checkpoint(stopped_run.run_dir / "checkpoint.pt")
    assert 1 <= saved["epoch"] < EPOCHS and saved["world_size"] == 2 and len(saved["rank_rng"]) == 2


@pytest.mark.slow  # needs the killed run above
def test_a_resume_at_another_world_size_is_refused_in_one_line(stopped_run, archive, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(stopped_run.root / "cache0", cache)
    monkeypatch.setenv("CNN_ARENA_CACHE", str(cache))
    before = (cache / "runs" / "lenet5_cifar10" / "checkpoint.pt").read_bytes()
    assert run_command(build_parser().parse_args(_argv(archive, tmp_path / "w", "--resume"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: lenet5: the saved run (epoch ") and "Traceback" not in "\n".join(err)
    assert "was trained by 2 process(es) and this one has 1: resume it with torchrun and 2 processes" in err[-1]
    assert (cache / "runs" / "lenet5_cifar10" / "checkpoint.pt").read_bytes() == before
    assert not list((tmp_path / "w").glob("*.safetensors"))


@pytest.mark.slow  # two processes training
def test_two_ranks_resume_finish_and_match_one_process(stopped_run, archive, tmp_path, monkeypatch):
    """The stopped run resumed on two ranks ends like a single process trained straight through with the
    same global batch. LeNet-5's recipe trains in bf16 autocast on the CPU, where the half-batch
    gradients' different float additions also round some activations differently: the weights agree
    to about 1e-3 of their size after 16 steps, not bit for bit."""
    root = tmp_path / "ddp"
    shutil.copytree(stopped_run.root / "cache0", root / "cache0")
    ranks = launch(tmp_path, _cli, (_argv(archive, root / "w", "--resume"),), _caches(root))
    join(ranks)
    assert [r.process.exitcode for r in ranks] == [0, 0], ranks[0].stderr() + ranks[1].stderr()

    # Only rank 0 reported and wrote: weights, metrics, checkpoint; rank 1 kept only its decoded-data cache.
    assert sorted(p.name for p in (root / "w").iterdir()) == ["lenet5_cifar10.json", "lenet5_cifar10.safetensors"]
    assert not (root / "cache1" / "runs").exists()
    assert "epoch" not in ranks[1].stderr() and ranks[1].out.read_text() == ""
    assert f"epoch {EPOCHS}/{EPOCHS} done" in ranks[0].stderr() and "resuming after epoch" in ranks[0].stderr()
    metrics = json.loads((root / "w" / "lenet5_cifar10.json").read_text())
    assert metrics["world_size"] == 2 and metrics["batch_per_process"] == 6 and metrics["sittings"] == 2
    ddp = load_checkpoint(root / "cache0" / "runs" / "lenet5_cifar10" / "checkpoint.pt")
    assert ddp["epoch"] == EPOCHS and ddp["world_size"] == 2

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path / "single"))
    assert run_command(build_parser().parse_args(_argv(archive, tmp_path / "single_w"))) == 0
    single = load_checkpoint(tmp_path / "single" / "runs" / "lenet5_cifar10" / "checkpoint.pt")
    assert "world_size" not in single and "rank_rng" not in single  # a single process's checkpoint as before
    assert single["step"] == ddp["step"] == EPOCHS * 2
    for key, value in single["model"].items():
        rel = (ddp["model"][key] - value).norm() / value.norm()
        assert rel < 5e-3, (key, rel.item())
    losses = np.array([[h["loss"] for h in run["history"]] for run in (single, ddp)])
    assert np.allclose(losses[0], losses[1], rtol=2e-3), losses
