"""The training loop: :func:`train`, a plain function that checkpoints every epoch and resumes.

- The whole training set lives on the device as one ``uint8`` tensor; every batch is augmented
  there (:mod:`engine.training.augment`).
- Channels-last memory layout; bf16 autocast on CUDA, and on the CPU where the recipe says so and
  the CPU runs bf16 natively (:mod:`engine.training.machine`; batch norm and the loss stay in fp32).
- SGD with Nesterov momentum, weight decay on weights only, the recipe's per-step learning rate,
  label smoothing, an exponential moving average of the weights.
- ENet's loss adds ``aux_weight`` times the cross-entropy of its per-pixel class map averaged over
  the image, which is what makes the map the window overlays light up on the object.
- The metrics record the run whole (:func:`run_record`): every recipe field, the schedule as
  steps, the seed, the epochs planned and done, and for each sitting its device, CPU features and
  precision, which every epoch's time in the history names.
- After every epoch: accuracy on the validation split (no test-time augmentation), then a
  checkpoint (:mod:`engine.training.checkpoint`). A run stopped at any step and resumed from its
  last checkpoint ends with exactly the weights of a run that never stopped (on the CPU): every
  random state is saved, and the per-image flip coins are a function of the seed.
- With ``ranks`` (several processes, :mod:`engine.training.distributed`), every rank draws the same
  order, crops and flips for the whole global batch and trains on its own slice of it, in a
  DistributedDataParallel model whose batch norms are synchronised; each keeps the same weight
  average; validation is split over the ranks and its hits summed; only rank 0 writes checkpoints,
  which then also hold the world size and every rank's random state.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.jobs import JobState
from engine.models.adapter import ModelAdapter
from engine.models.preprocess import normalise, normaliser
from engine.models.registry import ModelSpec
from engine.runtime.device import device_label, synchronize
from engine.studies.evaluation import predict_logits, topk_accuracy
from engine.training.augment import alternating_flips, augment, flip_coins
from engine.training.checkpoint import CheckpointError, save_checkpoint
from engine.training.distributed import Ranks, plain_batchnorm, rank_seed, synchronise_batchnorm
from engine.training.machine import Precision, cpu_features, training_precision
from engine.training.recipes import Recipe, lr_factor


@dataclass(frozen=True)
class TrainStatus:
    """One progress report: after every optimiser step, and once more after each epoch's validation."""

    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based within the epoch
    steps: int  # per epoch
    loss: float  # running mean over the epoch so far
    images_per_s: float  # training throughput in this epoch
    eta_s: float  # seconds until training (not the final evaluation) ends, at this sitting's pace
    lr: float
    val_top1: float | None = None  # set on the report that ends an epoch, when there is a validation split
    epoch_done: bool = False  # the report after the epoch's validation and checkpoint


Progress = Callable[[TrainStatus], None]


@dataclass(frozen=True)
class CheckpointPlan:
    """Where a run checkpoints, what identifies it, and the checkpoint it continues from (if any)."""

    path: Path
    identity: dict[str, Any]
    resume_from: dict[str, Any] | None = None


def training_loss(spec: ModelSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    logits, pixel_logits = ModelAdapter(spec, model)(x)
    return _loss(logits, pixel_logits, y, recipe)


def _loss(logits: torch.Tensor, pixel_logits: torch.Tensor | None, y: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
    if pixel_logits is not None and recipe.aux_weight:
        pooled = pixel_logits.float().mean(dim=(2, 3))
        loss = loss + recipe.aux_weight * F.cross_entropy(pooled, y, label_smoothing=recipe.label_smoothing)
    return loss


def precision_for(device: torch.device, recipe: Recipe) -> Precision:
    """What ``recipe`` trains in on ``device``: bf16 on the CPU only where it is native."""
    return training_precision(device, recipe.cpu_bf16)


def uses_autocast(device: torch.device, recipe: Recipe) -> bool:
    return precision_for(device, recipe).autocast


def build_for_training(spec: ModelSpec, recipe: Recipe) -> nn.Module:
    model = spec.build()
    if recipe.dropout is not None:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = recipe.dropout
    if recipe.kaiming_init:
        kaiming_init(model)
    if recipe.zero_init_residual:
        zero_init_residual(model)
    return model


def train(spec: ModelSpec, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, recipe: Recipe, *,
          device: torch.device | str = "cpu", progress: Progress | None = None,
          val: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0,
          model: nn.Module | None = None, checkpoint: CheckpointPlan | None = None,
          job: JobState | None = None, ranks: Ranks | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``spec``'s network (or ``model``) on uint8 NHWC ``images``; returns it (CPU, eval mode)
    and metrics: final_loss, steps, epochs, wall_time_s, train_time_s, images_per_s, history (one
    entry per epoch), val_top1/val_top5 (with ``val``), ema_used, sittings, world_size (and
    batch_per_process with ``ranks``), and the run record (:func:`run_record`).

    With ``checkpoint``, a checkpoint is written after every epoch and, with ``resume_from``, training
    continues from it. ``job.cancel()`` stops the run before its next step (raising
    :class:`engine.jobs.Cancelled`); the last checkpoint is left as it was.

    With ``ranks``, every rank of the process group calls this with the same arguments (``device``:
    the rank's own); the batch size is the global batch, a multiple of the world size. Only rank 0
    writes the checkpoint; ``checkpoint.resume_from`` must reach every rank.
    """
    device = torch.device(device) if isinstance(device, str) else device
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    if model is None:
        model = build_for_training(spec, recipe)
    model = model.to(device).train()
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = torch.as_tensor(images).to(device)
    targets = torch.as_tensor(labels).long().to(device)
    n = data.shape[0]
    if n == 0:
        raise ValueError("no training images")
    batch_size = min(recipe.batch_size, n)
    world = 1 if ranks is None else ranks.world_size
    mine = None if ranks is None else ranks.batch_share(batch_size)  # ValueError when it does not split
    steps_per_epoch = n // batch_size  # drop the last partial batch: constant batch statistics
    total = steps_per_epoch * recipe.epochs
    norm = normaliser(spec.mean, spec.std, device)
    precision = precision_for(device, recipe)
    autocast = precision.autocast
    report_every = 1 if device.type == "cpu" else 20
    coins = flip_coins(n, seed, device) if recipe.flip and recipe.alternate_flip else None

    if ranks is not None:
        synchronise_batchnorm(model, device)
    optimiser = torch.optim.SGD(_param_groups(model, recipe.weight_decay), lr=recipe.lr,
                                momentum=recipe.momentum, nesterov=recipe.nesterov)
    ema_model = copy.deepcopy(model).eval() if recipe.ema else None
    step_fn = _make_step(spec, model, optimiser, recipe, device, autocast, ranks)
    if ranks is not None and ranks.rank:
        torch.manual_seed(rank_seed(seed, ranks.rank))  # dropout: each rank its own masks

    first_epoch, step, history, spent = 0, 0, [], {"wall_s": 0.0, "train_s": 0.0, "sittings": 0}
    if checkpoint is not None and checkpoint.resume_from is not None:
        first_epoch, step, history, spent = _restore(checkpoint.resume_from, model, optimiser, ema_model, gen, ranks)
    sittings = spent["sittings"] + 1
    # A checkpoint from before sittings were recorded has none: its epochs then name no sitting's machine.
    prior = spent.get("machines")
    machines = [*(prior if isinstance(prior, list) else []), {"sitting": sittings, "device": device_label(device),
                                             "cpu": cpu_features(), "precision": precision.as_record(),
                                             "torch": str(torch.__version__)}]
    writes = checkpoint is not None and (ranks is None or ranks.is_main)

    synchronize(device)
    sitting_start = time.perf_counter()
    wall_before, train_before = spent["wall_s"], spent["train_s"]
    train_s = 0.0
    steps_this_sitting = 0
    final_loss = history[-1]["loss"] if history else float("nan")
    for epoch in range(first_epoch, recipe.epochs):
        order = torch.randperm(n, device=device, generator=gen)
        flips = alternating_flips(coins, epoch) if coins is not None else None
        loss_sum = torch.zeros((), device=device)
        epoch_start = time.perf_counter()
        for i in range(steps_per_epoch):
            if job is not None:
                job.check()
            idx = order[i * batch_size:(i + 1) * batch_size]
            batch = augment(data[idx], recipe, gen, None if flips is None else flips[idx])
            y = targets[idx]
            if mine is not None:  # every rank drew the whole global batch's crops and flips; it trains on its slice
                batch, y = batch[mine], y[mine]
            x = normalise(batch, norm, channels_last=recipe.channels_last)
            lr = recipe.lr * lr_factor(step, total, recipe)
            for group in optimiser.param_groups:
                group["lr"] = lr
            loss = step_fn(x, y)
            loss_sum += loss.detach()
            step += 1
            steps_this_sitting += 1
            if ema_model is not None:
                _update_ema(ema_model, model, min(recipe.ema, (1 + step) / (10 + step)))
            # Reading the loss waits for the device: on a GPU only every few steps.
            if progress is not None and (report_every == 1 or step % report_every == 0 or i + 1 == steps_per_epoch):
                mean_loss = (loss_sum / (i + 1)).item()
                elapsed = time.perf_counter() - epoch_start
                ips = (i + 1) * batch_size / elapsed if elapsed > 0 else 0.0
                pace = (time.perf_counter() - sitting_start) / steps_this_sitting
                progress(TrainStatus(epoch + 1, recipe.epochs, i + 1, steps_per_epoch, mean_loss, ips,
                                     pace * (total - step), lr))
        synchronize(device)
        epoch_train_s = time.perf_counter() - epoch_start
        train_s += epoch_train_s
        if ranks is None:
            final_loss = (loss_sum / max(1, steps_per_epoch)).item()
        else:  # the mean of the ranks' means: the global batch's loss
            final_loss = ranks.all_sum([loss_sum.item()])[0] / world / max(1, steps_per_epoch)
        if not math.isfinite(final_loss):
            raise FloatingPointError(f"the loss became {final_loss} in epoch {epoch + 1}; try a lower --lr")
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": round(final_loss, 5), "lr_end": lr,
                                 "images_per_s": round(steps_per_epoch * batch_size / epoch_train_s, 1),
                                 "train_s": round(epoch_train_s, 3), "sitting": sittings}
        if val is not None and len(val[1]) > 0:
            entry["val_top1"] = _accuracy(spec, model, val, device, recipe, tta=False, ranks=ranks)[0]
            model.train()
        history.append(entry)
        wall = wall_before + time.perf_counter() - sitting_start
        rank_rng = None if ranks is None else ranks.all_gather(_rng_states(device))
        if writes:
            payload = {
                "identity": checkpoint.identity, "epoch": epoch + 1, "step": step, "history": history,
                "spent": {"wall_s": wall, "train_s": train_before + train_s, "sittings": sittings,
                          "machines": machines},
                "model": model.state_dict(), "optimiser": optimiser.state_dict(),
                "ema": ema_model.state_dict() if ema_model is not None else None,
                "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            }
            if rank_rng is not None:  # a single process's checkpoint has neither: it is world size 1
                payload["world_size"] = world
                payload["rank_rng"] = rank_rng
            save_checkpoint(checkpoint.path, payload)
        if progress is not None:
            pace = (time.perf_counter() - sitting_start) / max(1, steps_this_sitting)
            progress(TrainStatus(epoch + 1, recipe.epochs, steps_per_epoch, steps_per_epoch, final_loss,
                                 entry["images_per_s"], pace * (total - step), lr, entry.get("val_top1"), True))
    synchronize(device)
    wall = wall_before + time.perf_counter() - sitting_start
    train_total = train_before + train_s

    model.eval()
    metrics: dict[str, Any] = {"final_loss": final_loss, "steps": step, "epochs": recipe.epochs,
                               "wall_time_s": round(wall, 2), "train_time_s": round(train_total, 2),
                               "images_per_s": round(step * batch_size / train_total, 1) if train_total > 0 else 0.0,
                               "sittings": sittings, "history": history, "ema_used": False, "world_size": world,
                               **run_record(recipe, seed=seed, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                                            epochs_done=len(history), machines=machines)}
    if ranks is not None:
        metrics["batch_per_process"] = batch_size // world
        plain_batchnorm(model)
        if ema_model is not None:
            plain_batchnorm(ema_model)
    if val is not None and len(val[1]) > 0:
        chosen = model
        top1, top5 = _accuracy(spec, model, val, device, recipe, tta=recipe.tta_flip, ranks=ranks)
        if ema_model is not None:
            e1, e5 = _accuracy(spec, ema_model, val, device, recipe, tta=recipe.tta_flip, ranks=ranks)
            metrics["val_top1_raw"] = top1
            metrics["val_top1_ema"] = e1
            if e1 > top1:
                chosen, top1, top5 = ema_model, e1, e5
                metrics["ema_used"] = True
        model = chosen
        metrics["val_top1"], metrics["val_top5"] = top1, top5
    model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    return model, metrics


def run_record(recipe: Recipe, *, seed: int, batch_size: int, steps_per_epoch: int, epochs_done: int,
               machines: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whole, for its metrics JSON: every recipe field (hyper-parameters, augmentation, EMA
    decay, the precision asked for), the learning-rate schedule as it ran in steps, the seed, the
    epochs planned and done, and each sitting's device, CPU features and precision (the last one's
    also as ``device``/``precision``/``cpu``). :func:`engine.training.recipes.recipe_from_record`
    reads the recipe back."""
    total = steps_per_epoch * recipe.epochs
    warm = max(1, int(round(recipe.warmup * total)))
    last = machines[-1]
    return {
        "recipe": asdict(recipe), "seed": seed, "epochs_planned": recipe.epochs, "epochs_done": epochs_done,
        "batch_size": batch_size,
        "schedule": {"kind": "linear warm-up from lr*start_lr_frac to lr, then linear to lr*final_lr_frac",
                     "steps_per_epoch": steps_per_epoch, "total_steps": total, "warmup_steps": warm,
                     "start_lr": recipe.lr * recipe.start_lr_frac, "peak_lr": recipe.lr,
                     "final_lr": recipe.lr * recipe.final_lr_frac},
        "device": last["device"], "precision": last["precision"], "cpu": last["cpu"], "machines": machines,
    }


def _restore(payload: dict[str, Any], model: nn.Module, optimiser: torch.optim.Optimizer,
             ema_model: nn.Module | None, gen: torch.Generator,
             ranks: Ranks | None = None) -> tuple[int, int, list, dict[str, Any]]:
    saved_world, world = int(payload.get("world_size", 1)), 1 if ranks is None else ranks.world_size
    if saved_world != world:
        raise CheckpointError(f"the checkpoint was written by a run of {saved_world} process(es), this one has {world}")
    try:
        model.load_state_dict(payload["model"])
        optimiser.load_state_dict(payload["optimiser"])
        if ema_model is not None:
            ema_model.load_state_dict(payload["ema"])
        gen.set_state(payload["generator"])
        torch_rng, cuda_rng = (payload["torch_rng"], payload.get("cuda_rng")) if ranks is None else \
            payload["rank_rng"][ranks.rank]
        torch.set_rng_state(torch_rng)
        if cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda_rng)
        return int(payload["epoch"]), int(payload["step"]), list(payload["history"]), dict(payload["spent"])
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint does not fit this run ({str(e).splitlines()[0][:120]})") from None


def _rng_states(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This process's random states for dropout: the CPU's and, on CUDA, its GPU's."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def kaiming_init(model: nn.Module) -> None:
    """He-normal weights (fan-in, ReLU gain) for every conv and linear layer, zero biases.

    PyTorch's default initialisation shrinks the signal layer after layer; a deep ReLU network with
    no batch norm (AlexNet) then sits at chance for hundreds of steps before it starts to learn.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for module in layers:
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    if layers and isinstance(layers[-1], nn.Linear):  # the classifier starts near uniform outputs
        nn.init.normal_(layers[-1].weight, std=0.01)


def zero_init_residual(model: nn.Module) -> int:
    """Zero the scale of the batch norm that ends each residual branch (ENet's regular bottlenecks),
    so that every block starts as the identity: deep residual stacks then train stably at a high
    learning rate from the first step (Goyal et al. 2017). Returns how many were zeroed."""
    from engine.models.enet import Bottleneck

    count = 0
    for module in model.modules():
        if isinstance(module, Bottleneck):
            norms = [m for m in module.expand if isinstance(m, nn.BatchNorm2d)]
            if norms:
                nn.init.zeros_(norms[-1].weight)
                count += 1
    return count


class _Outputs(nn.Module):
    """The adapter's forward pass (image logits, and ENet's class map) as a module's own forward, so
    that DistributedDataParallel runs it and synchronises the gradients of all of it."""

    def __init__(self, spec: ModelSpec, model: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return tuple(ModelAdapter(self.spec, self.model)(x))


def _make_step(spec: ModelSpec, model: nn.Module, optimiser: torch.optim.Optimizer, recipe: Recipe,
               device: torch.device, autocast: bool,
               ranks: Ranks | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if ranks is None:
        forward = torch.compile(model) if recipe.compile else model
        outputs = ModelAdapter(spec, forward)
    else:
        # Batch norms are synchronised, so every rank's buffers stay equal (DDP still broadcasts rank
        # 0's before each forward pass). A class map the loss does not use leaves the decoder without gradients.
        ddp = nn.parallel.DistributedDataParallel(
            _Outputs(spec, model), device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=spec.has_class_map and not recipe.aux_weight)
        outputs = torch.compile(ddp) if recipe.compile else ddp

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits, pixel_logits = outputs(x)
            loss = _loss(logits, pixel_logits, y, recipe)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimiser.step()
        return loss

    return step


@torch.no_grad()
def _update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema_model.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def _accuracy(spec: ModelSpec, model: nn.Module, data: tuple[Any, Any], device: torch.device,
              recipe: Recipe, *, tta: bool, ranks: Ranks | None = None) -> tuple[float, float]:
    """Top-1 and top-5 on ``data``; with ``ranks``, each rank scores its share and the hits are summed."""
    images, labels = data
    if ranks is not None:
        part = ranks.share(len(labels))
        images, labels = images[part], labels[part]
    logits = predict_logits(spec, model, images, device=device, tta=tta, autocast=uses_autocast(device, recipe))
    top1, top5 = topk_accuracy(logits, labels)
    if ranks is None:
        return top1, top5
    n = len(labels)
    hits1, hits5, total = ranks.all_sum([round(top1 * n), round(top5 * n), n])
    return hits1 / total, hits5 / total
