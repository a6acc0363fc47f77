"""Training on several processes at once (``torchrun``): the process group and what each rank does.

- :func:`launch_from_env` reads what torchrun gives each process (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :meth:`Launch.join` starts the process group:
  NCCL with each rank on ``cuda:LOCAL_RANK``, gloo on the CPU, both with a timeout, so that a rank
  that dies or stops answering makes the others fail with an error instead of waiting forever.
  A world of one process is no distributed run at all: the plain single-process loop runs.
- The recipe keeps its meaning at any world size: the global batch and the learning-rate schedule are
  those of one process; rank ``r`` trains on its contiguous slice of every global batch
  (:meth:`Ranks.batch_share`), and validation is split the same way, its hits summed over the ranks.
- Batch norm must see the whole global batch, as it would in one process: every batch norm becomes a
  synchronised one (:func:`synchronise_batchnorm`). On CUDA that is ``torch.nn.SyncBatchNorm``;
  torch's only runs on GPUs, so on the CPU :class:`CrossRankBatchNorm` gathers each rank's count,
  mean and sum of squared deviations in one collective (combined in float64 with the parallel-variance
  formula)
  and sums the two gradient reductions in one more on the way back.
"""

from __future__ import annotations

import datetime
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from engine.common.text import one_line

DEFAULT_TIMEOUT_S = 600.0  # the longest one rank may wait for another (data loading, a checkpoint)


class DistributedError(Exception):
    """A distributed run that cannot start or go on; ``str(e)`` is one line."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a run started by torchrun, before the process group exists."""

    rank: int
    world_size: int
    local_rank: int

    def device_for(self, device: torch.device) -> torch.device:
        """The device this rank trains on: ``cuda:LOCAL_RANK`` for CUDA, else ``device``."""
        if device.type != "cuda":
            return device
        if device.index is not None:
            raise DistributedError(f"under torchrun each process takes the GPU of its LOCAL_RANK: pass --device cuda, "
                                   f"not {device}")
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise DistributedError(f"LOCAL_RANK {self.local_rank} has no GPU: this machine has {count}; start at most "
                                   f"{count} processes on it (torchrun --nproc_per_node)")
        return torch.device("cuda", self.local_rank)

    def join(self, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Ranks:
        """Start the process group (every rank must call this); DistributedError when it cannot."""
        backend = "nccl" if device.type == "cuda" else "gloo"
        options: dict[str, Any] = {}
        if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
            options["device_id"] = device  # binds the group to this rank's GPU (torch 2.3 and later)
        try:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **options)
        except (RuntimeError, ValueError, OSError) as e:
            raise DistributedError(f"cannot join the other {self.world_size - 1} process(es) of the run within "
                                   f"{timeout_s:g} s ({failure_text(e)})") from None
        return Ranks(self.rank, self.world_size, self.local_rank, device, backend)


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """This process's :class:`Launch` when torchrun started it with more than one process, else None."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DistributedError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers, as torchrun sets them") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(f"RANK {rank}, WORLD_SIZE {world}, LOCAL_RANK {local} do not make a run "
                               "(0 <= RANK < WORLD_SIZE); start it with torchrun")
    if world == 1:
        return None
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise DistributedError(f"WORLD_SIZE {world} but no {' or '.join(missing)}: start the run with torchrun")
    return Launch(rank, world, local)


@dataclass(frozen=True)
class Ranks:
    """A joined process group: who this process is, and the few collectives training needs."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports progress and writes checkpoints, weights and metrics."""
        return self.rank == 0

    def batch_share(self, batch_size: int) -> slice:
        """This rank's contiguous slice of a global batch of ``batch_size`` (a multiple of the world size)."""
        if batch_size % self.world_size:
            raise ValueError(f"a batch of {batch_size} does not split evenly over {self.world_size} processes")
        per = batch_size // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def share(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items, the parts as even as they can be (some may be empty)."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over all ranks (float64, so counts of images stay exact)."""
        where = self.device if self.backend == "nccl" else torch.device("cpu")
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=where)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled: only for what this run itself made)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream (dropout), distinct for every rank; rank 0 keeps ``seed``."""
    return seed + 1_000_003 * rank


_SOURCE_PREFIX = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h|hpp|py):\d+\]\s*")


def failure_text(e: BaseException) -> str:
    """The first line of a collective's error, without the C++ source location and the advice gloo appends."""
    lines = str(e).strip().splitlines()
    text = _SOURCE_PREFIX.sub("", lines[0].strip()) if lines else type(e).__name__
    text = text.split(". This is typically caused")[0]
    return one_line(text or type(e).__name__, 160)


# --- batch norm over the whole global batch ---------------------------------------------------------

def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.ndim)]


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (x.ndim - 2)))


class _CrossRankBatchNormFn(torch.autograd.Function):
    """Batch norm whose statistics are those of every rank's batch together (training mode).

    Forward: one all-reduce of each rank's (count, mean, sum of squared deviations) in its own slot,
    combined with the parallel-variance formula. Backward: the local sums of ``dy`` and ``dy * xhat``
    are summed over the ranks in one all-reduce; the weight and bias gradients stay local, since DDP
    averages them over the ranks like every other parameter's.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, rank, world_size):
        dims = _reduce_dims(x)
        xf = x.float()
        count = xf.numel() // xf.shape[1]
        mean = xf.mean(dims)
        m2 = (xf - _per_channel(mean, xf)).square().sum(dims)
        slots = torch.zeros((world_size, 3, xf.shape[1]), dtype=torch.float64, device=x.device)
        slots[rank, 0] = count
        slots[rank, 1] = mean
        slots[rank, 2] = m2
        dist.all_reduce(slots)  # every other slot is zero: this gathers, exactly
        counts, means, m2s = slots.unbind(1)
        total = counts.sum(0)
        mean64 = (counts * means).sum(0) / total
        m2_64 = (m2s + counts * (means - mean64).square()).sum(0)
        global_mean = mean64.float()
        invstd = torch.rsqrt((m2_64 / total).float() + eps)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.lerp_(global_mean.to(running_mean.dtype), momentum)
                unbiased = (m2_64 / (total - 1).clamp(min=1)).to(running_var.dtype)
                running_var.lerp_(unbiased, momentum)
        total = total.float()
        xhat = (xf - _per_channel(global_mean, xf)) * _per_channel(invstd, xf)
        y = xhat * _per_channel(weight.float(), xf) + _per_channel(bias.float(), xf) if weight is not None else xhat
        ctx.save_for_backward(xhat, weight, invstd, total)
        ctx.x_dtype = x.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xhat, weight, invstd, total = ctx.saved_tensors
        g = grad_out.float()
        dims = _reduce_dims(g)
        sum_dy = g.sum(dims)
        sum_dy_xhat = (g * xhat).sum(dims)
        grad_weight = sum_dy_xhat.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy.to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = torch.stack([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums)
            mean_dy, mean_dy_xhat = sums[0] / total, sums[1] / total
            scale = invstd * weight.float() if weight is not None else invstd
            grad_x = ((g - _per_channel(mean_dy, g) - xhat * _per_channel(mean_dy_xhat, g))
                      * _per_channel(scale, g)).to(ctx.x_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


class CrossRankBatchNorm(_BatchNorm):
    """A batch norm (any of 1d/2d/3d) that, in training, normalises with the statistics of the batches
    of every rank together, on any device; in eval mode, or outside a process group, a plain one."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as torch's batch norm does
                momentum = 1.0 / float(self.num_batches_tracked)
        running = self.track_running_stats
        return _CrossRankBatchNormFn.apply(input, self.weight, self.bias,
                                           self.running_mean if running else None,
                                           self.running_var if running else None,
                                           self.eps, momentum, dist.get_rank(), dist.get_world_size())


def _swap_batchnorm(module: nn.Module, make) -> int:
    count = 0
    for name, child in module.named_children():
        replacement = make(child)
        if replacement is not None:
            setattr(module, name, replacement)
            count += 1
        else:
            count += _swap_batchnorm(child, make)
    return count


def _moved_to(new: _BatchNorm, old: _BatchNorm) -> _BatchNorm:
    """``new`` holding ``old``'s very parameters and buffers (an optimiser built on them still works)."""
    new.weight, new.bias = old.weight, old.bias
    new.running_mean, new.running_var, new.num_batches_tracked = old.running_mean, old.running_var, \
        old.num_batches_tracked
    new.train(old.training)
    return new


def synchronise_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Replace, in place, every batch norm of ``model`` by one synchronised over the ranks (module docs);
    returns how many. :func:`plain_batchnorm` undoes it."""

    def make(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, _BatchNorm) or isinstance(m, (nn.SyncBatchNorm, CrossRankBatchNorm)):
            return None
        args = (m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        new = nn.SyncBatchNorm(*args) if device.type == "cuda" else CrossRankBatchNorm(*args)
        new.plain_type = type(m)  # what plain_batchnorm turns it back into
        return _moved_to(new, m)

    return _swap_batchnorm(model, make)


def plain_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every batch norm that :func:`synchronise_batchnorm` made turned back into the
    original kind, sharing its parameters and buffers; returns ``model``."""

    def make(m: nn.Module) -> nn.Module | None:
        plain = getattr(m, "plain_type", None)
        if plain is None or not isinstance(m, (nn.SyncBatchNorm, CrossRankBatchNorm)):
            return None
        return _moved_to(plain(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats), m)

    _swap_batchnorm(model, make)
    return model
