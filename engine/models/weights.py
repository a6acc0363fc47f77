"""Where a network's weights come from, and loading them safely.

Three kinds of weights:

- our own, trained by ``python main.py train``: ``assets/weights/<name>_<profile>.safetensors`` with a
  metrics JSON of the same stem beside it. Floats are stored as fp16, or, for a network whose fp16
  file would pass :data:`FILE_BUDGET_BYTES`, its convolution and linear weights as int8 with one
  fp32 scale per output channel (``<key>:scale``); either way they load as fp32;
- torchvision's ImageNet weights for AlexNet and VGG, named by their weights enum; they come from
  torchvision's cache (``TORCH_HOME``) and are downloaded only when the caller allows it;
- a user's checkpoint: safetensors, or a ``.pth``/``.pt`` read with ``torch.load(weights_only=True)``
  so that a malicious pickle is refused, never executed.

A checkpoint is checked before its data is read: the names, shapes and dtypes in its header against
the model's (safetensors' header; a ``.pth`` mapped with ``mmap=True``, after its zip directory shows
no compressed record, which could inflate to any size), so that a file that does not fit costs no
memory. The values are checked as they are loaded: a weight must be finite in the model's dtype, since
one NaN makes every answer NaN.

A network without weights is built with random ones and reported as untrained, never silently.
Every failure is a :class:`WeightsError` whose text is one line a person can act on.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torchvision
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.common.errors import error_line
from engine.common.files import atomic_write
from engine.common.text import one_line
from engine.data.imageio import display_name
from engine.models.adapter import translate_checkpoint
from engine.models.registry import ModelSpec

ROOT = Path(__file__).resolve().parents[2]  # the checkout: engine/models/weights.py -> .
WEIGHTS_DIR = ROOT / "assets" / "weights"

class WeightsKind(str, Enum):
    """Where a network's weights came from (a str, so that JSON and comparisons read it plainly)."""

    BUNDLED = "bundled"  # the project's own, shipped in assets/weights, with measured accuracy
    DOWNLOADED = "downloaded"  # torchvision's ImageNet weights, from its cache
    CUSTOM = "custom"  # a user's checkpoint
    UNTRAINED = "untrained"  # random weights

    def __str__(self) -> str:
        return self.value


BUNDLED, DOWNLOADED, CUSTOM, UNTRAINED = WeightsKind.BUNDLED, WeightsKind.DOWNLOADED, WeightsKind.CUSTOM, \
    WeightsKind.UNTRAINED


class WeightsError(Exception):
    """Weights that cannot be used; ``str(e)`` is one line."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a spec's weights are, before anything is loaded."""

    status: WeightsKind  # BUNDLED, DOWNLOADED, or UNTRAINED when no usable file is there
    path: Path | None  # the file, when it is on this machine
    source: str  # one line: where they come from or why there are none
    metrics: Mapping[str, Any] | None = None  # the metrics JSON beside our own weights
    downloadable: bool = False  # torchvision's weights exist but are not in its cache yet


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    model: nn.Module
    status: WeightsKind
    source: str  # one line for the status bar / CLI
    metrics: Mapping[str, Any] | None = None
    downloadable: bool = False


def hub_weights(spec: ModelSpec):
    enum_name, _, member = (spec.weights or "").partition(".")
    enum = getattr(torchvision.models, enum_name, None)
    return getattr(enum, member, None) if enum is not None else None


def published_accuracy(spec: ModelSpec) -> tuple[float, float] | None:
    """(top-1, top-5) as fractions that torchvision publishes for the spec's hub weights on the
    ImageNet-1K validation set (from its metadata, known offline); None when there are none. Not
    measured here: say "published" wherever it is shown."""
    hub = hub_weights(spec)
    metrics = (hub.meta.get("_metrics") or {}).get("ImageNet-1K") if hub is not None else None
    if not metrics or "acc@1" not in metrics:
        return None
    return metrics["acc@1"] / 100.0, metrics.get("acc@5", float("nan")) / 100.0


def hub_download_bytes(spec: ModelSpec) -> int | None:
    """The size of the spec's torchvision weights file, from torchvision's own metadata (known
    offline); None when it has none."""
    hub = hub_weights(spec)
    size_mb = hub.meta.get("_file_size") if hub is not None else None
    return int(size_mb * 1024 * 1024) if size_mb else None


def hub_cache_path(spec: ModelSpec) -> Path | None:
    """Where torchvision keeps (or would keep) this spec's hub weights."""
    hub = hub_weights(spec)
    if hub is None:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(hub.url)


def read_metrics(weights_path: Path) -> dict[str, Any] | None:
    path = weights_path.with_suffix(".json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def resolve(spec: ModelSpec, weights_dir: Path | None = None) -> WeightsInfo:
    if spec.weights is None:
        return WeightsInfo(UNTRAINED, None, spec.note or "no trained weights exist for this network")
    if spec.weights.endswith(".safetensors"):
        path = (weights_dir or WEIGHTS_DIR) / spec.weights
        if path.is_file():
            return WeightsInfo(BUNDLED, path, f"assets/weights/{path.name}", read_metrics(path))
        return WeightsInfo(UNTRAINED, None, f"not trained yet: {path.name} is missing (python main.py train)")
    cached = hub_cache_path(spec)
    if cached is None:
        return WeightsInfo(UNTRAINED, None, f"unknown weights {spec.weights!r}")
    if cached.is_file():
        return WeightsInfo(DOWNLOADED, cached, f"torchvision {spec.weights}")
    return WeightsInfo(UNTRAINED, None, f"torchvision {spec.weights} not downloaded (download on request)",
                       downloadable=True)


FILE_BUDGET_BYTES = 20_000_000  # a shipped weights file above this is stored as int8 (see encode_state)
SCALE_SUFFIX = ":scale"  # "<key>:scale" holds the per-output-channel scales of an int8 "<key>"
STORAGES = ("fp32", "fp16", "int8")


def storage_for(model: nn.Module) -> str:
    """fp16, or int8 where the fp16 file would pass :data:`FILE_BUDGET_BYTES`."""
    fp16_bytes = sum(2 * v.numel() for v in model.state_dict().values() if v.is_floating_point())
    return "int8" if fp16_bytes > FILE_BUDGET_BYTES else "fp16"


def encode_state(state: Mapping[str, torch.Tensor], storage: str = "fp16") -> dict[str, torch.Tensor]:
    """A state dict as it is written: fp32 as it is, fp16 floats, or int8 weights (symmetric, one
    scale per output channel; only tensors of two or more dimensions, the rest fp16)."""
    if storage not in STORAGES:
        raise ValueError(f"storage is one of {', '.join(STORAGES)}, not {storage!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.detach().cpu()
        if not value.is_floating_point() or storage == "fp32":
            out[key] = value.contiguous()
        elif storage == "int8" and value.dim() >= 2:
            w = value.float()
            scale = w.abs().amax(dim=tuple(range(1, w.dim()))).clamp_min(1e-12) / 127
            out[key] = (w / scale.view(-1, *[1] * (w.dim() - 1))).round().clamp(-127, 127).to(torch.int8).contiguous()
            out[key + SCALE_SUFFIX] = scale.contiguous()
        else:
            out[key] = value.half().contiguous()
    return out


def decode_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`encode_state`: int8 weights times their scales; other tensors as they are."""
    out = {k: v for k, v in tensors.items() if not k.endswith(SCALE_SUFFIX)}
    for key in list(out):
        scale = tensors.get(key + SCALE_SUFFIX)
        if scale is not None and out[key].dtype == torch.int8:
            out[key] = out[key].float() * scale.float().view(-1, *[1] * (out[key].dim() - 1))
    return out


def as_stored(model: nn.Module, storage: str) -> nn.Module:
    """``model`` with its weights replaced by what a file of ``storage`` gives back when loaded."""
    model.load_state_dict(decode_state(encode_state(model.state_dict(), storage)))  # copied in its dtypes
    return model


# safetensors' dtype names; a tensor of any other dtype is refused from the header
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool, "C64": torch.complex64}


@dataclass(frozen=True)
class _Checkpoint:
    """A checkpoint opened but not read: ``header`` holds every tensor's shape and dtype (``meta``
    tensors, or tensors mapped from the file and not yet read); ``read()`` gives the tensors."""

    header: dict[str, torch.Tensor]
    read: Callable[[], dict[str, torch.Tensor]]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a ``.pth``/``.pt`` file, without running any pickled code."""
    return _open_checkpoint(Path(path)).read()


def _open_checkpoint(path: Path) -> _Checkpoint:
    name = display_name(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise WeightsError(f"{name}: no such file") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise WeightsError(f"{name}: cannot be read ({error_line(e, os_reason=True)})") from None
    if not stat.S_ISREG(info.st_mode):  # a folder, or a FIFO that would wait forever for a writer
        raise WeightsError(f"{name}: not a regular file")
    if info.st_size == 0:
        raise WeightsError(f"{name}: empty file (0 bytes)")
    if path.suffix == ".safetensors":
        return _open_safetensors(path, name)
    return _open_torch(path, name, info.st_size)


def _open_safetensors(path: Path, name: str) -> _Checkpoint:
    """The header (safetensors checks its offsets against the file's size), int8 weights with scales
    shown as the fp32 tensors they decode to; the data is read only by ``read()``."""
    def corrupt(e: BaseException) -> WeightsError:
        return WeightsError(f"{name}: corrupt or truncated safetensors file ({error_line(e)})")

    try:
        with safe_open(str(path), framework="pt") as f:
            declared = {key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise corrupt(e) from None
    header: dict[str, torch.Tensor] = {}
    for key, (shape, dtype_name) in declared.items():
        dtype = _SAFETENSORS_DTYPES.get(dtype_name)
        if dtype is None:
            raise WeightsError(f"{name}: {one_line(key, 80)} has dtype {one_line(dtype_name, 20)}, "
                               "which no network here uses")
        header[key] = torch.empty(shape, dtype=dtype, device="meta")
    for key in [k for k in header if k.endswith(SCALE_SUFFIX)]:
        scale = header.pop(key)
        weight = header.get(key[:-len(SCALE_SUFFIX)])
        if weight is None or weight.dtype != torch.int8:
            continue  # decode_state ignores it too
        if not scale.is_floating_point() or weight.dim() == 0 or tuple(scale.shape) != (weight.shape[0],):
            raise WeightsError(f"{name}: {one_line(key, 80)} has shape {tuple(scale.shape)} and dtype {_dtype(scale)}, "
                               f"not one floating-point scale per output channel ({weight.shape[0]})")
        header[key[:-len(SCALE_SUFFIX)]] = torch.empty(weight.shape, dtype=torch.float32, device="meta")

    def read() -> dict[str, torch.Tensor]:
        try:
            with safe_open(str(path), framework="pt") as f:
                return decode_state({key: f.get_tensor(key) for key in f.keys()})
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise corrupt(e) from None

    return _Checkpoint(header, read)


def _open_torch(path: Path, name: str, size: int) -> _Checkpoint:
    """A ``.pth``/``.pt`` file: torch.save's zip is mapped (``mmap=True``), so shapes are known
    before any data is read; the old pickle format is read whole (its data is as large as the file)."""
    mapped = check_torch_zip(path, name, size)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except pickle.UnpicklingError as e:
        raise WeightsError(f"{name}: refused, the checkpoint holds code or objects that are not plain "
                           f"tensors ({error_line(e)})") from None
    except (RuntimeError, OSError, EOFError, ValueError, MemoryError, zipfile.BadZipFile) as e:
        raise WeightsError(f"{name}: not a readable PyTorch checkpoint ({error_line(e)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a training checkpoint
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{name}: holds no state dict of tensors")
    state = {str(k): v for k, v in obj.items()}
    return _Checkpoint(state, lambda: state)


MAX_HUB_BYTES = 2 << 30  # the largest of torchvision's files used here (VGG-19-BN) is 0.55 GB


def _check_hub_file(path: Path) -> None:
    """torch.load would block on a FIFO, read a device without end, or inflate a deflated record:
    torchvision's cached file is checked as any other weights file first."""
    from engine.common.files import open_regular

    with open_regular(path, MAX_HUB_BYTES) as f:
        size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise WeightsError("an empty file")
    check_torch_zip(path, path.name, size)


def check_torch_zip(path: Path, name: str, size: int) -> bool:
    """Whether ``path`` is torch.save's zip format, after refusing any record that could inflate
    beyond the file: torch.save stores records uncompressed, so a compressed one is a bomb or a
    file rewritten by another tool, and a stored one cannot be larger than the file."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            records = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(f"{name}: not a readable PyTorch checkpoint ({error_line(e)})") from None
    compressed = [record for record in records if record.compress_type != zipfile.ZIP_STORED]
    if compressed:
        inflated = sum(record.file_size for record in compressed)
        raise WeightsError(f"{name}: refused, compressed records (e.g. {compressed[0].filename!r}) "
                           f"would inflate to {inflated / 1e6:.1f} MB from a {size / 1e6:.1f} MB file; "
                           "torch.save writes records uncompressed")
    for record in records:
        if record.header_offset + record.file_size > size:
            raise WeightsError(f"{name}: record {record.filename!r} declares {record.file_size / 1e6:.1f} MB, "
                               f"more than the {size / 1e6:.1f} MB file holds")
    return True


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "floating-point"
    if dtype.is_complex:
        return "complex"
    return "bool" if dtype == torch.bool else "integer"


def _fit(spec: ModelSpec, own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
         name: str) -> dict[str, torch.Tensor]:
    """``state`` under the model's names after checking its keys, shapes and kinds of dtype against
    ``own``; it reads only shapes and dtypes, so it works on a header before any data is loaded."""
    if set(state) != set(own):
        translated = translate_checkpoint(spec, state)  # torchvision's names for the same layers
        if translated is not None:
            state = translated
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        hint = f"{len(missing)} missing, {len(unexpected)} unexpected keys"
        example = (missing or unexpected)[0]
        raise WeightsError(f"{name}: not weights for {spec.name} ({spec.profile}): {hint}, e.g. {example!r}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            hint = ""
            if value.dim() >= 1 and own[key].shape[0] == spec.num_classes != value.shape[0]:
                hint = f" (a {value.shape[0]}-class head: weights for another profile?)"
            raise WeightsError(f"{name}: {key} has shape {tuple(value.shape)}, {spec.name} ({spec.profile}) "
                               f"needs {tuple(own[key].shape)}{hint}")
        # a buffer such as num_batches_tracked is int64 and must stay an integer; a weight must be a float
        if _kind(value.dtype) != _kind(own[key].dtype):
            raise WeightsError(f"{name}: {key} is {_dtype(value)}, {spec.name} ({spec.profile}) needs "
                               f"{_kind(own[key].dtype)} values there")
    return dict(state)


def _converted(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
               name: str) -> dict[str, torch.Tensor]:
    """``state`` in the model's dtypes, refusing the first floating-point tensor that is not finite
    there (NaN, infinity, or a float64 too large for float32)."""
    out = {}
    for key, value in state.items():
        converted = value.to(own[key].dtype)
        if converted.is_floating_point() and not bool(torch.isfinite(converted).all()):
            if bool(torch.isnan(value).any()):
                problem = "NaN values"
            elif bool(torch.isinf(value).any()):
                problem = "infinite values"
            else:
                problem = f"values too large for {_dtype(converted)}"
            raise WeightsError(f"{name}: {key} holds {problem}")
        out[key] = converted
    return out


def apply_state_dict(spec: ModelSpec, model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    """Load ``state`` into ``model`` (fp32), or explain in one line why it does not fit."""
    own = model.state_dict()
    model.load_state_dict(_converted(_fit(spec, own, state, name), own, name))


def load_state_file(spec: ModelSpec, model: nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint file into ``model``: its header is checked against the model before any of
    its data is read (see the module docs), then its values as they are loaded."""
    path = Path(path)
    name = display_name(path)
    checkpoint = _open_checkpoint(path)
    _fit(spec, model.state_dict(), checkpoint.header, name)
    apply_state_dict(spec, model, checkpoint.read(), name)


def load_model(spec: ModelSpec, weights_path: str | os.PathLike | None = None, *,
               allow_download: bool = False, weights_dir: Path | None = None) -> LoadedModel:
    """The network of ``spec`` in eval mode on the CPU, with the best weights available.

    With ``weights_path`` the user's file is loaded and any problem raises :class:`WeightsError`.
    Without it, missing default weights give an untrained model (status says so), never an error.
    """
    if weights_path is not None:
        model = spec.build()
        load_state_file(spec, model, weights_path)
        # the metrics JSON the training command wrote beside it, if any: checked before use (model_card)
        return LoadedModel(spec, model, CUSTOM, f"custom weights {display_name(weights_path)}",
                           read_metrics(Path(weights_path)))
    info = resolve(spec, weights_dir)
    hub = hub_weights(spec)
    if hub is not None and (info.status == DOWNLOADED or allow_download):
        cached = hub_cache_path(spec)
        try:
            if cached is not None and os.path.lexists(cached):
                _check_hub_file(cached)
            model = spec.builder(weights=hub, progress=allow_download).eval()
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
                WeightsError) as e:  # network down, a damaged or foreign file in torch's hub cache
            fix = f"; delete {one_line(str(cached), 200)} or download it again" if cached is not None and \
                os.path.lexists(cached) else ""
            raise WeightsError(f"{spec.weights}: could not load torchvision weights ({error_line(e)}){fix}") from None
        return LoadedModel(spec, model, DOWNLOADED, f"torchvision {spec.weights}")
    model = spec.build()
    if info.status == BUNDLED and info.path is not None:
        load_state_file(spec, model, info.path)
        return LoadedModel(spec, model, BUNDLED, info.source, info.metrics)
    return LoadedModel(spec, model, UNTRAINED, info.source, downloadable=info.downloadable)


def save_weights(model: nn.Module, path: str | os.PathLike, metrics: Mapping[str, Any] | None = None,
                 *, storage: str = "fp16") -> Path:
    """Write safetensors (see :func:`encode_state`) and the metrics JSON beside it, atomically."""
    path = Path(path)
    tensors = encode_state(model.state_dict(), storage)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp))
        except SafetensorError as e:  # how safetensors reports a full disk: as the OSError it is
            raise OSError(errno.EIO, error_line(e)) from None

    atomic_write(path, write)
    if metrics is not None:
        text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
        atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path




def parse_weights_args(items: list[str]) -> dict[str, str]:
    """``["vgg16=my.pth", ...]`` (the ``--weights MODEL=PATH`` options) -> ``{"vgg16": "my.pth"}``."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise WeightsError(f"--weights {item!r}: expected MODEL=PATH, e.g. vgg16=checkpoint.safetensors")
        out[name.strip()] = path
    return out
