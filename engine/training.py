"""Training one CIFAR-10 network: ``python main.py train`` and the plain function :func:`train`.

The recipe follows the fast CIFAR-10 trainers (airbench, hlb-CIFAR10) as far as these classic
networks allow:

- the whole training set lives on the device as one ``uint8`` tensor; every batch is augmented
  there, vectorised: a random horizontal flip and a random crop of the image padded by 4 pixels
  (reflection), with its own offset per image;
- channels-last memory layout; bf16 autocast on CUDA, and on the CPU where the recipe says so
  (batch norm and the loss stay in fp32);
- SGD with Nesterov momentum 0.9, weight decay on weights only (not on batch-norm parameters or
  biases), a per-step learning rate that rises linearly for the warm-up fraction and then falls
  linearly to zero, label smoothing 0.1, an optional exponential moving average of the weights;
- ENet's loss adds ``aux_weight`` times the cross-entropy of its per-pixel class map averaged over
  the image, which is what makes the map the window overlays light up on the object;
- evaluation averages each image with its mirror image when ``tta_flip`` is set (recorded in the
  metrics).

A validation split is held out of ``train/``; ``test/`` is only ever evaluated, after training.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.device import device_label, resolve_device, synchronize
from engine.evaluation import predict_logits, sample_indices, topk_accuracy
from engine.models.registry import ModelSpec
from engine.preprocess import normalise, normaliser


@dataclass(frozen=True)
class Recipe:
    """Every hyperparameter of a run; the metrics JSON records all of them."""

    epochs: int
    batch_size: int
    lr: float  # the peak learning rate, reached at the end of the warm-up
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.15  # fraction of all steps spent rising linearly from lr * start_lr_frac
    start_lr_frac: float = 0.1
    final_lr_frac: float = 0.0  # the learning rate falls linearly to lr * final_lr_frac
    ema: float | None = None  # per-step decay of a weight average; the better one on val is kept
    aux_weight: float = 0.0  # ENet: weight of the per-pixel class map's image-level loss
    flip: bool = True
    crop_pad: int = 4
    tta_flip: bool = True
    grad_clip: float | None = None
    kaiming_init: bool = False  # He-normal conv/linear weights, zero biases (nets without batch norm)
    zero_init_residual: bool = False  # residual branches start at zero (their last BN's scale), for depth
    cpu_bf16: bool = False  # bf16 autocast on the CPU (CUDA always uses it)
    channels_last: bool = True
    compile: bool = False  # torch.compile, CUDA only


# The defaults of ``python main.py train`` (command-line flags override epochs, batch size and lr).
# Epoch counts suit a GPU; the CPU runs in runs/ pass --epochs explicitly.
RECIPES: dict[str, Recipe] = {
    # tanh and no batch norm; hardly any weight decay on a 62k-parameter network.
    "lenet5": Recipe(epochs=30, batch_size=256, lr=0.05, weight_decay=5e-5, warmup=0.1, cpu_bf16=True),
    # No batch norm: He initialisation (PyTorch's default leaves it at chance for hundreds of steps),
    # a lower peak and gradient clipping against the early spikes.
    "alexnet": Recipe(epochs=40, batch_size=256, lr=0.03, warmup=0.15, kaiming_init=True, grad_clip=5.0,
                      cpu_bf16=True),
    # Batch norm, but a peak of 0.1 still spiked the loss in the first steps: 0.05 with clipping.
    **{f"vgg{d}": Recipe(epochs=40, batch_size=256, lr=0.05, warmup=0.15, grad_clip=2.0, cpu_bf16=True)
       for d in (11, 13, 16, 19)},
    # ENet's residual stacks diverge in the first steps at this learning rate unless every
    # bottleneck starts as the identity.
    "enet": Recipe(epochs=40, batch_size=256, lr=0.1, weight_decay=2e-4, warmup=0.15, aux_weight=0.5,
                   zero_init_residual=True, cpu_bf16=True),
}


@dataclass(frozen=True)
class TrainStatus:
    """One progress report, made after every optimiser step."""

    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based within the epoch
    steps: int  # per epoch
    loss: float  # running mean over the epoch so far
    images_per_s: float
    eta_s: float  # seconds until training (not the final evaluation) ends
    lr: float


Progress = Callable[[TrainStatus], None]


def recipe_for(spec: ModelSpec, **overrides: Any) -> Recipe:
    """The model's default recipe, with any non-None ``overrides`` (epochs, batch_size, lr, ...)."""
    base = RECIPES.get(spec.name)
    if base is None:
        base = RECIPES["vgg16"] if spec.family == "VGG" else Recipe(epochs=30, batch_size=256, lr=0.05)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **changes) if changes else base


# --- augmentation ------------------------------------------------------------------------------

def augment(batch: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """Random flip and pad-and-crop of a ``uint8 (N, H, W, C)`` batch, one draw per image."""
    n, h, w, _ = batch.shape
    device = batch.device
    if recipe.crop_pad > 0:
        p = recipe.crop_pad
        # reflection pad works on float NCHW; uint8 NHWC is padded by indexing instead (same result)
        rows = (torch.arange(-p, h + p, device=device).abs())
        rows = torch.where(rows >= h, 2 * (h - 1) - rows, rows)
        cols = (torch.arange(-p, w + p, device=device).abs())
        cols = torch.where(cols >= w, 2 * (w - 1) - cols, cols)
        dy = torch.randint(0, 2 * p + 1, (n,), device=device, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n,), device=device, generator=generator)
        r = rows[dy[:, None] + torch.arange(h, device=device)]  # (N, H) source rows
        c = cols[dx[:, None] + torch.arange(w, device=device)]  # (N, W) source columns
        if recipe.flip:
            flip = torch.rand(n, device=device, generator=generator) < 0.5
            c = torch.where(flip[:, None], c.flip(1), c)
        idx = torch.arange(n, device=device)
        return batch[idx[:, None, None], r[:, :, None], c[:, None, :]]
    if recipe.flip:
        flip = torch.rand(n, device=device, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], batch.flip(2), batch)
    return batch


# --- the training loop -------------------------------------------------------------------------

def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total: int, recipe: Recipe) -> float:
    """The learning rate multiplier at optimiser step ``step`` (0-based) of ``total``."""
    warm = max(1, int(round(recipe.warmup * total)))
    if step < warm:
        return recipe.start_lr_frac + (1.0 - recipe.start_lr_frac) * step / warm
    frac = (step - warm) / max(1, total - warm)
    return 1.0 + (recipe.final_lr_frac - 1.0) * min(1.0, frac)


def training_loss(spec: ModelSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    if spec.has_class_map:
        logits, pixel_logits = model.forward_with_map(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
        if recipe.aux_weight:
            pooled = pixel_logits.float().mean(dim=(2, 3))
            loss = loss + recipe.aux_weight * F.cross_entropy(pooled, y, label_smoothing=recipe.label_smoothing)
        return loss
    return F.cross_entropy(model(x).float(), y, label_smoothing=recipe.label_smoothing)


def _uses_autocast(device: torch.device, recipe: Recipe) -> bool:
    return device.type == "cuda" or recipe.cpu_bf16


def train(spec: ModelSpec, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, recipe: Recipe, *,
          device: torch.device | str = "cpu", progress: Progress | None = None,
          val: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0,
          model: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``spec``'s network (or ``model``) on uint8 NHWC ``images``; returns it (CPU, eval mode)
    and metrics: final_loss, steps, epochs, wall_time_s, images_per_s, val_top1/val_top5 (with
    ``val``), ema_used."""
    device = torch.device(device) if isinstance(device, str) else device
    torch.manual_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    if model is None:
        model = spec.build()
        if recipe.kaiming_init:
            kaiming_init(model)
        if recipe.zero_init_residual:
            zero_init_residual(model)
    model = model.to(device).train()
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = torch.as_tensor(images).to(device)
    targets = torch.as_tensor(labels).long().to(device)
    n = data.shape[0]
    if n == 0:
        raise ValueError("no training images")
    batch_size = min(recipe.batch_size, n)
    steps_per_epoch = n // batch_size  # drop the last partial batch: constant batch statistics
    total = steps_per_epoch * recipe.epochs
    norm = normaliser(spec.mean, spec.std, device)
    autocast = _uses_autocast(device, recipe)
    report_every = 1 if device.type == "cpu" else 20

    optimiser = torch.optim.SGD(_param_groups(model, recipe.weight_decay), lr=recipe.lr,
                                momentum=recipe.momentum, nesterov=recipe.nesterov)
    ema_model = copy.deepcopy(model).eval() if recipe.ema else None
    step_fn = _make_step(spec, model, optimiser, recipe, device, autocast)

    synchronize(device)
    start = time.perf_counter()
    step = 0
    final_loss = float("nan")
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, device=device, generator=gen)
        loss_sum = torch.zeros((), device=device)
        epoch_start = time.perf_counter()
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = normalise(augment(data[idx], recipe, gen), norm, channels_last=recipe.channels_last)
            lr = recipe.lr * lr_factor(step, total, recipe)
            for group in optimiser.param_groups:
                group["lr"] = lr
            loss = step_fn(x, targets[idx])
            loss_sum += loss.detach()
            step += 1
            if ema_model is not None:
                _update_ema(ema_model, model, min(recipe.ema, (1 + step) / (10 + step)))
            # Reading the loss waits for the device: on a GPU only every few steps.
            if progress is not None and (report_every == 1 or step % report_every == 0 or i + 1 == steps_per_epoch):
                mean_loss = (loss_sum / (i + 1)).item()
                elapsed = time.perf_counter() - epoch_start
                ips = (i + 1) * batch_size / elapsed if elapsed > 0 else 0.0
                done_s = time.perf_counter() - start
                eta = done_s / step * (total - step)
                progress(TrainStatus(epoch + 1, recipe.epochs, i + 1, steps_per_epoch, mean_loss, ips, eta, lr))
        final_loss = (loss_sum / max(1, steps_per_epoch)).item()
        if not math.isfinite(final_loss):
            raise FloatingPointError(f"the loss became {final_loss} in epoch {epoch + 1}; try a lower --lr")
    synchronize(device)
    wall = time.perf_counter() - start

    model.eval()
    metrics: dict[str, Any] = {"final_loss": final_loss, "steps": step, "epochs": recipe.epochs,
                               "wall_time_s": round(wall, 2),
                               "images_per_s": round(step * batch_size / wall, 1) if wall > 0 else 0.0,
                               "ema_used": False}
    if val is not None and len(val[1]) > 0:
        chosen = model
        top1, top5 = _accuracy(spec, model, val, device, recipe)
        if ema_model is not None:
            e1, e5 = _accuracy(spec, ema_model, val, device, recipe)
            metrics["val_top1_raw"] = top1
            metrics["val_top1_ema"] = e1
            if e1 > top1:
                chosen, top1, top5 = ema_model, e1, e5
                metrics["ema_used"] = True
        model = chosen
        metrics["val_top1"], metrics["val_top5"] = top1, top5
    model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    return model, metrics


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


def _make_step(spec: ModelSpec, model: nn.Module, optimiser: torch.optim.Optimizer, recipe: Recipe,
               device: torch.device, autocast: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    forward = model
    if recipe.compile and device.type == "cuda":
        forward = torch.compile(model)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = training_loss(spec, forward, x, y, recipe)
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
              recipe: Recipe) -> tuple[float, float]:
    logits = predict_logits(spec, model, data[0], device=device, tta=recipe.tta_flip,
                            autocast=_uses_autocast(device, recipe))
    top1, top5 = topk_accuracy(logits, data[1])
    return top1, top5


# --- the command -------------------------------------------------------------------------------

class TerminalProgress:
    """A one-line progress bar on stderr (``\\r`` on a terminal; a full line every 30 s in a log)."""

    def __init__(self, name: str, stream=None, log_interval_s: float = 30.0) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else log_interval_s
        self.last = 0.0

    def __call__(self, s: TrainStatus) -> None:
        now = time.monotonic()
        last_step = s.step == s.steps
        if now - self.last < self.interval and not last_step:
            return
        self.last = now
        width = 20
        filled = int(width * s.step / s.steps)
        bar = "#" * filled + "." * (width - filled)
        line = (f"{self.name} epoch {s.epoch}/{s.epochs} [{bar}] step {s.step}/{s.steps} "
                f"loss {s.loss:.4f} lr {s.lr:.4f} {s.images_per_s:.0f} img/s ETA {_clock(s.eta_s)}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100) + ("\n" if last_step else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def describe_source(source: str) -> dict[str, Any]:
    """Name (never the full path), size and, for a file under 1 GB, its sha256."""
    if source == "download":
        return {"name": "torchvision CIFAR-10", "size": None, "sha256": None}
    path = Path(source)
    info: dict[str, Any] = {"name": path.name, "size": None, "sha256": None}
    if path.is_file():
        info["size"] = path.stat().st_size
        if info["size"] < 1 << 30:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            info["sha256"] = h.hexdigest()
    return info


def cmd_train(args: argparse.Namespace) -> int:
    from engine.cli import CliError
    from engine.complexity import count_params
    from engine.data import DataError, has_split_layout, load_cifar10, train_val_split
    from engine.models.registry import RegistryError, get_spec
    from engine.weights import as_stored, save_weights, storage_for

    try:
        spec = get_spec(args.model, "cifar10")
    except RegistryError as e:
        raise CliError(f"{e}; train trains cifar10 networks only") from None
    try:
        device = resolve_device(args.device, strict=True)
    except ValueError as e:
        raise CliError(str(e)) from None
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--limit", args.limit)):
        if value is not None and value <= 0:
            raise CliError(f"{flag} must be positive")
    if args.lr is not None and not args.lr > 0:
        raise CliError("--lr must be positive")
    if args.val < 0:
        raise CliError("--val must be 0 or more")
    recipe = recipe_for(spec, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)

    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    say(f"loading {Path(args.data).name if args.data != 'download' else 'torchvision CIFAR-10'} ...")
    t0 = time.perf_counter()
    try:
        if not has_split_layout(args.data):
            raise CliError(f"{Path(args.data).name}: training needs separate train/ and test/ folders")
        train_images, train_labels = load_cifar10(args.data, "train", progress=_load_progress(say))
        test_images, test_labels = load_cifar10(args.data, "test")
    except DataError as e:
        raise CliError(str(e)) from None
    say(f"loaded {len(train_labels)} train and {len(test_labels)} test images in {time.perf_counter() - t0:.1f} s")

    if args.limit is not None:
        keep = sample_indices(len(train_labels), args.limit, seed=args.seed)
        train_images, train_labels = train_images[keep], train_labels[keep]
    if args.val >= len(train_labels):
        raise CliError(f"--val {args.val} leaves no training images out of {len(train_labels)}")
    fit_idx, val_idx = train_val_split(len(train_labels), args.val, args.seed)
    val = (train_images[val_idx], train_labels[val_idx]) if args.val else None

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    say(f"training {spec.name} on {device_label(device)}: {len(fit_idx)} images, {args.val} held out for "
        f"validation, {recipe.epochs} epochs of batch {min(recipe.batch_size, len(fit_idx))}, peak lr {recipe.lr}")
    try:
        model, metrics = train(spec, train_images[fit_idx], train_labels[fit_idx], recipe, device=device,
                               progress=TerminalProgress(spec.name), val=val, seed=args.seed)
    except FloatingPointError as e:
        raise CliError(str(e)) from None

    say("evaluating on the test set ...")
    # Measured on the weights as they are shipped (fp16, or int8 for a large network) and the way
    # `python main.py eval` runs them.
    storage = storage_for(model)
    model = as_stored(model.cpu(), storage)
    logits = predict_logits(spec, model.to(device), test_images, device=device, tta=recipe.tta_flip)
    test_top1, test_top5 = topk_accuracy(logits, test_labels)
    model = model.to("cpu")
    metrics.update({
        "model": spec.name, "profile": spec.profile, "params": count_params(model),
        "test_top1": test_top1, "test_top5": test_top5, "test_images": int(len(test_labels)),
        "train_images": int(len(fit_idx)), "val_images": int(args.val),
        "device": device_label(device), "torch": torch.__version__, "recipe": asdict(recipe),
        "seed": args.seed, "tta_flip": recipe.tta_flip,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "data": describe_source(str(args.data)), "limit": args.limit, "storage": storage,
    })
    out = Path(args.out) / (spec.weights or f"{spec.name}_{spec.profile}.safetensors")
    try:
        save_weights(model, out, metrics, storage=storage)
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or e}") from None
    val_text = f"val top-1 {100 * metrics['val_top1']:.2f}%, " if "val_top1" in metrics else ""
    print(f"{spec.name}: {val_text}test top-1 {100 * test_top1:.2f}%, top-5 {100 * test_top5:.2f}% "
          f"after {recipe.epochs} epochs in {_clock(metrics['wall_time_s'])}; "
          f"wrote {out} and {out.with_suffix('.json').name}")
    return 0


def _load_progress(say: Callable[[str], None]) -> Callable[[int, int], None]:
    last = [-1]

    def report(done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if pct // 10 != last[0] // 10:
            last[0] = pct
            say(f"  decoding: {pct}%")

    return report

