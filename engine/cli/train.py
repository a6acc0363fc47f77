"""``python main.py train``: one network or all four, checkpointed every epoch, resumable, stoppable.

- Output goes to the user's runs folder (``<cache>/runs/<model>_cifar10/``) unless ``--out`` names
  another folder; a weights file already there is renamed to a dated backup, never overwritten.
- ``--resume`` continues the run whose identity (model, recipe, data hash, split, seed) matches;
  any other is refused with one line that names what differs. Without it, an unfinished run is
  never discarded silently: ``--restart`` says so explicitly.
- Ctrl-C or SIGTERM stops before the next step; the last checkpoint stays as it was.
- Under ``torchrun`` (more than one process) it trains with DistributedDataParallel
  (:mod:`engine.training.distributed`): rank 0 decides about the saved run, reports and writes;
  the others train their share and stay quiet, except about failures of their own (their data,
  their device, losing the others), which they report with their rank. A resume is refused unless
  the world size is the one the checkpoint was written by.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from engine.cli.output import CliError, stop_on_signals
from engine.cli.train_hint import file_stamp, stop_hint
from engine.cli.train_identity import (
    check_recipe_ranges,
    data_identity,
    folder_digest,
    same_identity_everywhere,
    same_options_everywhere,
)
from engine.common.files import atomic_write
from engine.data.imageio import display_name
from engine.jobs import Cancelled, JobState
from engine.models.registry import ModelSpec
from engine.runtime.device import device_label, resolve_device
from engine.studies.evaluation import predict_logits, sample_indices, topk_accuracy
from engine.training import RecipeError, parse_overrides, recipe_for
from engine.training.checkpoint import (
    FILE_NAME,
    CheckpointError,
    CheckpointWriteError,
    identity_mismatch,
    load_checkpoint,
)
from engine.training.distributed import (
    DEFAULT_TIMEOUT_S,
    DistributedError,
    Launch,
    Ranks,
    failure_text,
    launch_from_env,
)
from engine.training.loop import CheckpointPlan, TrainStatus, precision_for, train
from engine.training.machine import precision_line
from engine.training.runlock import RunLock, RunLocked

ALL = "all"
DONE_FILE = "done.json"
FINISHED = "finished"  # what rank 0 decides about a saved run that has nothing left to do


class RankError(CliError):
    """A failure of one process of a distributed run (its data, its device, its link to the others):
    every rank that meets one reports it, naming itself."""


class TerminalProgress:
    """A one-line progress bar on stderr (``\\r`` on a terminal; a full line every 30 s in a log),
    and one line per finished epoch with its validation accuracy."""

    def __init__(self, name: str, stream=None, log_interval_s: float = 30.0) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else log_interval_s
        self.last = 0.0

    def __call__(self, s: TrainStatus) -> None:
        end_of_epoch = s.epoch_done
        if s.step == s.steps and not end_of_epoch:
            return  # the epoch's line follows once validation and the checkpoint are done
        now = time.monotonic()
        if now - self.last < self.interval and not end_of_epoch:
            return
        self.last = now
        if end_of_epoch:
            val = f" val top-1 {100 * s.val_top1:.2f}%" if s.val_top1 is not None else ""
            line = (f"{self.name} epoch {s.epoch}/{s.epochs} done: loss {s.loss:.4f}{val} "
                    f"{s.images_per_s:.0f} img/s ETA {clock(s.eta_s)}")
        else:
            width = 20
            filled = int(width * s.step / s.steps)
            bar = "#" * filled + "." * (width - filled)
            line = (f"{self.name} epoch {s.epoch}/{s.epochs} [{bar}] step {s.step}/{s.steps} "
                    f"loss {s.loss:.4f} lr {s.lr:.4f} {s.images_per_s:.0f} img/s ETA {clock(s.eta_s)}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100) + ("\n" if end_of_epoch else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def describe_source(source: str) -> dict[str, Any]:
    """Name (never the full path), size and, for a file under 1 GB, its sha256; for a folder, the
    sha256 of what a load reads from it (``files_sha256``: every file's relative name and size), so
    that a folder whose classes were swapped is another data set."""
    if source == "download":
        return {"name": "torchvision CIFAR-10", "size": None, "sha256": None}
    path = Path(source)
    info: dict[str, Any] = {"name": path.name, "size": None, "sha256": None}
    if path.is_dir():
        info["size"], info["files_sha256"] = folder_digest(path)
    if path.is_file():
        info["size"] = path.stat().st_size
        if info["size"] < 1 << 30:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            info["sha256"] = h.hexdigest()
    return info


def runs_dir() -> Path:
    """The user's own training runs: ``<cache>/runs`` (``$CNN_ARENA_CACHE`` or ``~/.cache/cnn-arena``)."""
    from engine.common.settings import cache_dir as default_cache_dir
    return default_cache_dir() / "runs"


def backup_existing(path: Path) -> Path | None:
    """Rename ``path`` (and its metrics JSON) to a dated backup beside it; returns the backup's path."""
    if not path.exists():
        return None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.stem}.bak-{stamp}{path.suffix}")
    n = 1
    while backup.exists() or backup.with_suffix(".json").exists():
        backup = path.with_name(f"{path.stem}.bak-{stamp}-{n}{path.suffix}")
        n += 1
    os.replace(path, backup)
    if path.with_suffix(".json").exists():
        os.replace(path.with_suffix(".json"), backup.with_suffix(".json"))
    return backup


def sweep_runs() -> list[Path]:
    """Remove what a training killed while writing left in the runs folders (a half-written
    checkpoint or weights file whose writer is gone); returns what was removed."""
    from engine.common.files import remove_stale_temps

    removed = []
    try:
        folders = [p for p in runs_dir().iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed  # no runs yet
    for folder in folders:
        removed += remove_stale_temps(folder, "*")
    return removed


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and write (then remove) a file in it; CliError when it cannot."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        raise CliError(f"cannot write to {display_name(folder)}: {e.strerror or e}") from None


def cmd_train(args: argparse.Namespace) -> int:
    """The command; under torchrun, every process runs it (module docs)."""
    from engine.training.distributed import shutdown

    try:
        launch = launch_from_env()
    except DistributedError as e:
        raise CliError(str(e)) from None
    job = JobState()
    if launch is None:
        return _cmd_train(args, job, None)
    try:
        return _cmd_train(args, job, launch)
    except RankError as e:
        raise RankError(f"rank {launch.rank}: {e}") from None
    except CliError:
        if launch.rank:
            return 2  # a mistake every process meets alike: rank 0 reports it
        raise
    except RuntimeError as e:  # a collective failed: another process died or stopped answering
        if job.cancelled:
            if launch.rank == 0:
                print("stopped; the last checkpoint is kept (the same torchrun command with --resume continues it)",
                      file=sys.stderr, flush=True)
            return 130
        raise RankError(f"rank {launch.rank}: stopped: {failure_text(e)} (if another process of the run failed or "
                        "stopped answering, its own message says why); the last checkpoint written, if any, is kept "
                        "and --resume continues it") from None
    finally:
        shutdown()


def _cmd_train(args: argparse.Namespace, job: JobState, launch: Launch | None) -> int:
    from engine.data.datasets import DataError, has_split_layout, load_cifar10, train_val_split
    from engine.models.registry import RegistryError, comparison_specs, get_spec

    if args.model == ALL:
        specs = list(comparison_specs("cifar10"))
    else:
        try:
            specs = [get_spec(args.model, "cifar10")]
        except RegistryError as e:
            raise CliError(f"{e}; train trains cifar10 networks only (or 'all')") from None
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
    if args.resume and args.restart:
        raise CliError("--resume and --restart exclude each other")
    try:
        args.recipe_changes = parse_overrides(getattr(args, "recipe_set", None))
    except RecipeError as e:
        raise CliError(str(e)) from None
    check_recipe_ranges(args.recipe_changes)
    timeout_s = getattr(args, "dist_timeout", DEFAULT_TIMEOUT_S)
    if not timeout_s > 0:
        raise CliError("--dist-timeout must be positive")
    ranks = None
    if launch is not None:
        try:
            device = launch.device_for(device)
            ranks = launch.join(device, timeout_s)
        except DistributedError as e:
            raise RankError(str(e)) from None
        same_options_everywhere(ranks, args)
    if args.nice:
        try:
            os.nice(19)
        except (OSError, AttributeError):
            pass  # not every system lets a process lower its own priority; training still runs

    # Before any data is read: a folder that cannot be written would otherwise be found out only
    # when the weights are saved, hours later. Only rank 0 writes.
    def writable() -> None:
        for folder in {runs_dir(), *([Path(args.out)] if args.out else [])}:
            check_writable(folder)

    _on_main(ranks, writable)
    _on_main(ranks, sweep_runs)

    main = ranks is None or ranks.is_main
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if main else (lambda text: None)
    # First, before hours of work: bf16 asked for on a CPU that only emulates it trains in fp32.
    first = replace(recipe_for(specs[0], epochs=args.epochs, batch_size=args.batch_size, lr=args.lr),
                    **args.recipe_changes)
    say(precision_line(device, precision_for(device, first)))
    data_name = "torchvision CIFAR-10" if args.data == "download" else display_name(args.data)
    say(f"loading {data_name} ...")
    t0 = time.perf_counter()
    # On each machine its first process decodes the set (and caches it) before the others read it.
    first_here = ranks is None or ranks.local_rank == 0
    if not first_here:
        ranks.barrier()
    own = CliError if ranks is None else RankError  # on several machines, each reads its own copy
    try:
        if not has_split_layout(args.data):
            raise own(f"{data_name}: training needs separate train/ and test/ folders")
        train_images, train_labels = load_cifar10(args.data, "train", progress=_load_progress(say))
        test_images, test_labels = load_cifar10(args.data, "test")
    except DataError as e:
        raise own(str(e)) from None
    if ranks is not None and first_here:
        ranks.barrier()
    say(f"loaded {len(train_labels)} train and {len(test_labels)} test images in {time.perf_counter() - t0:.1f} s")
    if args.limit is not None:
        keep = sample_indices(len(train_labels), args.limit, seed=args.seed)
        train_images, train_labels = train_images[keep], train_labels[keep]
    if args.val >= len(train_labels):
        raise CliError(f"--val {args.val} leaves no training images out of {len(train_labels)}")
    fit_idx, val_idx = train_val_split(len(train_labels), args.val, args.seed)
    data = {"fit": (train_images[fit_idx], train_labels[fit_idx]),
            "val": (train_images[val_idx], train_labels[val_idx]) if args.val else None,
            "test": (test_images, test_labels), "source": describe_source(str(args.data))}
    if ranks is not None:
        _same_data_everywhere(ranks, data)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    with stop_on_signals(job):
        for spec in specs:
            try:
                _train_one(spec, args, device, data, job, say, ranks)
            except Cancelled:
                return 130
    return 0


def _on_main(ranks: Ranks | None, decide: Callable[[], Any]) -> Any:
    """``decide()`` on rank 0 only (all of it when there are no ranks); its result, or the one line of
    its CliError, reaches every rank."""
    if ranks is None:
        return decide()
    outcome = None
    if ranks.is_main:
        try:
            outcome = (True, decide())
        except CliError as e:
            outcome = (False, str(e))
    ok, value = ranks.broadcast(outcome)
    if not ok:
        raise CliError(value)
    return value


def _same_data_everywhere(ranks: Ranks, data: dict[str, Any]) -> None:
    source = data["source"]
    here = (data_identity(source), len(data["fit"][1]), len(data["test"][1]))
    every = ranks.all_gather(here)
    for rank, there in enumerate(every):
        if there != every[0]:
            raise CliError(f"the processes read different data: rank {rank} has {_data_text(there)}, rank 0 "
                           f"{_data_text(every[0])}; give every process the same --data")


def _data_text(summary: tuple[str, int, int]) -> str:
    name, fit, test = summary
    short = f"{name[:12]}..." if len(name) > 16 else name
    return f"{short} ({fit} training, {test} test images)"


def _train_one(spec: ModelSpec, args: argparse.Namespace, device: torch.device, data: dict[str, Any],
               job: JobState, say: Callable[[str], None], ranks: Ranks | None = None) -> None:

    recipe = recipe_for(spec, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if getattr(args, "recipe_changes", None):
        recipe = replace(recipe, **args.recipe_changes)
    fit_labels = data["fit"][1]
    source = data["source"]
    identity = {"model": spec.name, "profile": spec.profile, "recipe": asdict(recipe),
                "data": data_identity(source), "train_images": int(len(fit_labels)),
                "val_images": int(args.val), "limit": args.limit, "seed": args.seed}
    run_dir = runs_dir() / f"{spec.name}_{spec.profile}"
    if getattr(args, "recipe_changes", None):
        # a run with changed fields keeps its own folder, so that it never meets (or --restart
        # discards) a run of the shipped recipe
        tag = hashlib.sha256(json.dumps(args.recipe_changes, sort_keys=True).encode()).hexdigest()[:8]
        run_dir = run_dir.with_name(f"{run_dir.name}-set-{tag}")
    out_dir = Path(args.out) if args.out else run_dir
    out = out_dir / (spec.weights or f"{spec.name}_{spec.profile}.safetensors")

    if ranks is not None:
        same_identity_everywhere(ranks, spec.name, identity)
    world = 1 if ranks is None else ranks.world_size
    batch = min(recipe.batch_size, len(fit_labels))
    if batch % world:
        raise CliError(f"{spec.name}: a global batch of {batch} images does not split over {world} processes; "
                       f"give --batch-size a multiple of {world}")
    # Only rank 0 writes the run: it alone holds the folder's lock, until this network is done.
    lock = RunLock(run_dir)

    def take_lock() -> None:
        try:
            lock.acquire()
        except RunLocked as e:
            raise CliError(f"{spec.name}: {e}") from None
        except OSError as e:
            raise CliError(f"{spec.name}: cannot lock {run_dir}: {e.strerror or e}") from None

    _on_main(ranks, take_lock)
    try:
        _train_locked(spec, args, device, data, job, say, ranks, recipe, identity, run_dir, out, batch, world)
    finally:
        lock.release()


def _train_locked(spec: ModelSpec, args: argparse.Namespace, device: torch.device, data: dict[str, Any],
                  job: JobState, say: Callable[[str], None], ranks: Ranks | None, recipe: Any,
                  identity: dict[str, Any], run_dir: Path, out: Path, batch: int, world: int) -> None:
    from engine.models.complexity import count_params
    from engine.models.weights import as_stored, save_weights, storage_for

    fit_images, fit_labels = data["fit"]
    source = data["source"]
    ckpt_path = run_dir / FILE_NAME
    out_dir = out.parent
    if ranks is not None and args.resume:
        # Rank 0 resumes from its own runs folder: on several machines, that is only the right one when
        # it is on the machine that wrote the checkpoint (or the folder is shared).
        saved_on = ranks.all_gather(ckpt_path.exists())
        if not saved_on[0] and any(saved_on):
            raise CliError(f"{spec.name}: rank {saved_on.index(True)} has the saved run in its runs folder but rank 0, "
                           "which resumes it, has none: share the runs folder ($CNN_ARENA_CACHE) between the machines, "
                           "or give the machine that has it rank 0 (--rdzv_backend=static --node_rank=0)")
    saved_run = _on_main(ranks, lambda: _saved_run(spec, args, identity, run_dir, out, world, say))
    if saved_run == FINISHED:
        return
    where = device_label(device) if ranks is None else \
        f"{world} processes ({ranks.backend}; {device_label(device)} each, {batch // world} images of every batch)"
    say(f"training {spec.name} on {where}: {len(fit_labels)} images, {args.val} held out for "
        f"validation, {recipe.epochs} epochs of batch {batch}, peak lr {recipe.lr}; "
        f"checkpoints in {run_dir}")
    plan = CheckpointPlan(ckpt_path, identity, saved_run)
    before = file_stamp(ckpt_path)  # tells, on a stop, whether this run has written a checkpoint yet
    try:
        model, metrics = train(spec, fit_images, fit_labels, recipe, device=device,
                               progress=TerminalProgress(spec.name) if ranks is None or ranks.is_main else None,
                               val=data["val"], seed=args.seed, checkpoint=plan, job=job, ranks=ranks)
    except FloatingPointError as e:
        raise CliError(str(e)) from None
    except CheckpointWriteError as e:
        raise CliError(f"{spec.name}: {e}; the last checkpoint written is kept, and --resume continues "
                       "from it once there is room") from None
    except CheckpointError as e:
        raise CliError(f"{spec.name}: {e}; --restart starts a new run") from None
    except Cancelled:
        say(f"{spec.name}: {stop_hint(args, ckpt_path, before, saved_run is not None, world)}")
        raise
    if ranks is not None and not ranks.is_main:
        return  # rank 0 evaluates and writes

    say("evaluating on the test set ...")
    # Measured on the weights as they are shipped (fp16, or int8 for a large network) and the way
    # `python main.py eval` runs them.
    storage = storage_for(model)
    model = as_stored(model.cpu(), storage)
    test_images, test_labels = data["test"]
    logits = predict_logits(spec, model.to(device), test_images, device=device, tta=recipe.tta_flip)
    test_top1, test_top5 = topk_accuracy(logits, test_labels)
    plain_top1, _ = topk_accuracy(predict_logits(spec, model, test_images, device=device), test_labels)
    # airbench's evaluation (the mirror image and one-pixel shifts), beside the recipe's own figure
    shift_logits = predict_logits(spec, model, test_images, device=device, tta="flip+shift")
    shift_top1, _ = topk_accuracy(shift_logits, test_labels)
    model = model.to("cpu")
    metrics.update({
        "model": spec.name, "profile": spec.profile, "params": count_params(model),
        "test_top1": test_top1, "test_top5": test_top5, "test_top1_no_tta": plain_top1,
        "test_top1_flip_shift": shift_top1,
        "test_images": int(len(test_labels)), "train_images": int(len(fit_labels)), "val_images": int(args.val),
        "device": device_label(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "recipe": asdict(recipe), "seed": args.seed, "tta_flip": recipe.tta_flip,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "data": source, "limit": args.limit, "storage": storage,
    })
    # The new files are complete before the old ones move aside: a full disk leaves the previous
    # weights where they were. Staged under atomic_write's temporary names, so that a crash leaves
    # nothing the next start does not sweep away.
    metrics_out = out.with_suffix(".json")
    staged = {out: out.with_name(f".{out.name}.pid{os.getpid()}.new.tmp"),
              metrics_out: out.with_name(f".{metrics_out.name}.pid{os.getpid()}.new.tmp")}
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_weights(model, staged[out], storage=storage)
        atomic_write(staged[metrics_out], lambda tmp: tmp.write_text(text, encoding="utf-8"))
        backup = backup_existing(out)
        for final, new in staged.items():
            os.replace(new, final)
        atomic_write(run_dir / DONE_FILE, lambda tmp: tmp.write_text(
            json.dumps({"identity": identity, "weights": str(out)}, indent=2), encoding="utf-8"))
    except OSError as e:
        raise CliError(f"cannot write {display_name(out)}: {e.strerror or e}; "
                       "the previous weights, if any, are where they were") from None
    finally:
        for new in staged.values():
            new.unlink(missing_ok=True)
    if backup is not None:
        say(f"kept the previous {out.name} as {backup.name}")
    val_text = f"val top-1 {100 * metrics['val_top1']:.2f}%, " if "val_top1" in metrics else ""
    tta_text = "flip TTA" if recipe.tta_flip else "no TTA"
    print(f"{spec.name}: {val_text}test top-1 {100 * test_top1:.2f}% ({tta_text}; {100 * plain_top1:.2f}% without, "
          f"{100 * shift_top1:.2f}% with flip+shift), "
          f"top-5 {100 * test_top5:.2f}% after {recipe.epochs} epochs in {clock(metrics['wall_time_s'])}; "
          f"wrote {out} and {out.with_suffix('.json').name}", flush=True)


def _saved_run(spec: ModelSpec, args: argparse.Namespace, identity: dict[str, Any], run_dir: Path, out: Path,
               world: int, say: Callable[[str], None]) -> dict[str, Any] | str | None:
    """What to do about the run saved in ``run_dir``: the checkpoint to resume from, None to start a new
    run, or FINISHED; CliError (one line) when it must be refused."""
    ckpt_path = run_dir / FILE_NAME
    if not ckpt_path.exists():
        if args.resume:
            say(f"{spec.name}: no saved run; starting one")
        return None
    try:
        saved = load_checkpoint(ckpt_path)
    except CheckpointError as e:
        raise CliError(f"{spec.name}: {e}; --restart starts a new run") from None
    done_at = f"epoch {saved.get('epoch')}/{saved.get('identity', {}).get('recipe', {}).get('epochs')}"
    if not args.resume:
        if args.restart:
            return None
        raise CliError(f"{spec.name}: a run is saved in {run_dir} ({done_at}); --resume continues it, "
                       "--restart starts over")
    mismatch = identity_mismatch(saved.get("identity", {}), identity)
    if mismatch:
        raise CliError(f"{spec.name}: the saved run ({done_at}) is a different run: {mismatch}; "
                       "--restart starts a new one")
    if _finished(run_dir, identity, out):
        say(f"{spec.name}: already trained to {done_at}; {out} is its result (skipped)")
        return FINISHED
    saved_world = saved.get("world_size", 1)  # a checkpoint without one was written by a single process
    if saved_world != world:
        how = "without torchrun" if saved_world == 1 else \
            f"with torchrun and {saved_world} processes in all (--nnodes x --nproc_per_node)"
        raise CliError(f"{spec.name}: the saved run ({done_at}) was trained by {saved_world} process(es) and this one "
                       f"has {world}: resume it {how}, or --restart starts a new one")
    say(f"{spec.name}: resuming after {done_at}")
    return saved


def _finished(run_dir: Path, identity: dict[str, Any], out: Path) -> bool:
    try:
        done = json.loads((run_dir / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return done.get("identity") == identity and Path(done.get("weights", "")) == out and out.exists()


def _load_progress(say: Callable[[str], None]) -> Callable[[int, int], None]:
    last = [-1]

    def report(done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if pct // 10 != last[0] // 10:
            last[0] = pct
            say(f"  decoding: {pct}%")

    return report
