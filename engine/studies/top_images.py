"""What a channel looks for: the images of a labelled set that excite it most.

:func:`top_images` runs one network over a set of images (by default 2,000 CIFAR-10 test pictures
spread over the classes: :func:`sample_test_set`) up to one layer, and for every channel of that
layer keeps the ``top_k`` (9) images whose maximum over the channel's map is highest: the score,
the map position of the maximum, the image, its class, and the box of input pixels under that
position's receptive field (:mod:`engine.probes.receptive`), which is the crop a person looks at. The
pass stops at the layer (nothing after it runs), in batches, with the job's progress in images and
a cancel between batches. ``python main.py top-images`` (:mod:`engine.cli.top_images`) writes one
PNG grid per channel.

Results are cached under the user's cache folder (``top-images/``), keyed by the network and its
weights (a sha256 over the loaded state dict: names, dtypes, shapes and bytes, so a file changed
in place, a custom checkpoint or torchvision's download each get their own entry, whatever path
they came from), the layer, the image set (its count and a sha256 over its pixels, labels and ids)
and ``top_k``. A second call with the same inputs reads the file back (``cached`` is then True).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.jobs import JobProgress, JobState
from engine.models.adapter import ModelAdapter
from engine.models.preprocess import normalise, normaliser
from engine.models.registry import ModelSpec
from engine.probes.receptive import ReceptiveField, ReceptiveFieldError, crop_box, trace_own
from engine.runtime.onnx_cache import weights_digest
from engine.studies.evaluation import EVAL_BATCH, EvalError, check_labels, sample_indices

TOP_K = 9
DEFAULT_IMAGES = 2000
CACHE_VERSION = 1
_CACHE_GLOB = "*.npz"
MAX_CACHE_BYTES = 4 << 30  # the largest result (VGG-19's 512 channels of crops) is far smaller


class TopImagesError(ValueError):
    """Images, a layer or a network that top images cannot be found for; ``str(e)`` is one line."""


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)  # holds arrays: equal only to itself
class TopImages:
    """The ``top_k`` images of each channel of ``layer``, best first (module docs).

    Per channel ``c`` and rank ``r`` (arrays of shape (C, k, ...), read-only):

    - ``image_ids[c, r]``: the image's id (its index in the set given, or the id the caller gave it,
      e.g. its index in the CIFAR-10 test split);
    - ``scores[c, r]``: the channel's maximum over its map on that image;
    - ``positions[c, r]``: (row, col) of that maximum in the layer's map;
    - ``labels[c, r]``: the image's class index (``class_names``);
    - ``boxes[c, r]``: (top, left, bottom, right) of the input pixels under the position's
      receptive field, clipped to the image (bottom and right exclusive): :meth:`crop`;
    - ``picture_of[c, r]``: the image's row in ``pictures``, the distinct images that appear.

    ``images`` is the size of the set searched, ``map_shape`` the layer's (C, H, W) and
    ``receptive`` its field; ``seconds`` is the time the search took when it ran, ``cached``
    whether this result was read back from the cache.
    """

    model: str
    profile: str
    layer: str
    class_names: tuple[str, ...]
    images: int
    map_shape: tuple[int, int, int]
    receptive: ReceptiveField
    image_ids: np.ndarray
    scores: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    pictures: np.ndarray
    picture_of: np.ndarray
    seconds: float
    cached: bool = False

    @property
    def channels(self) -> int:
        return int(self.scores.shape[0])

    @property
    def top_k(self) -> int:
        return int(self.scores.shape[1])

    def picture(self, channel: int, rank: int) -> np.ndarray:
        """The whole image at ``rank`` for ``channel`` (H, W, 3) uint8, read-only."""
        return self.pictures[self.picture_of[channel, rank]]

    def crop(self, channel: int, rank: int) -> np.ndarray:
        """The pixels under the receptive field of the channel's maximum on the image at ``rank``
        (a read-only view of :meth:`picture`)."""
        top, left, bottom, right = (int(v) for v in self.boxes[channel, rank])
        return self.picture(channel, rank)[top:bottom, left:right]

    def crops(self, channel: int) -> tuple[np.ndarray, ...]:
        return tuple(self.crop(channel, r) for r in range(self.top_k))

    def class_name(self, channel: int, rank: int) -> str:
        return self.class_names[int(self.labels[channel, rank])]

    @property
    def silent_channels(self) -> tuple[int, ...]:
        """Channels whose best score is <= 0: they fired on none of the images (after a ReLU, their
        "top" images are ties at zero and say nothing)."""
        return tuple(int(c) for c in np.flatnonzero(~(self.scores[:, 0] > 0)))

    def dominant_class(self, channel: int) -> tuple[str, int]:
        """The class most of the channel's images belong to, and how many of them do."""
        counts = np.bincount(self.labels[channel], minlength=len(self.class_names))
        best = int(counts.argmax())
        return self.class_names[best], int(counts[best])

    def channel_dict(self, channel: int) -> dict[str, Any]:
        return {"images": [int(v) for v in self.image_ids[channel]],
                "scores": [float(v) for v in self.scores[channel]],
                "classes": [self.class_name(channel, r) for r in range(self.top_k)],
                "labels": [int(v) for v in self.labels[channel]],
                "positions": [[int(v) for v in p] for p in self.positions[channel]],
                "boxes": [[int(v) for v in b] for b in self.boxes[channel]]}

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "profile": self.profile, "layer": self.layer, "images": self.images,
                "top_k": self.top_k, "map_shape": list(self.map_shape), "receptive_field": self.receptive.as_dict(),
                "class_names": list(self.class_names), "seconds": round(self.seconds, 3), "cached": self.cached,
                "silent_channels": list(self.silent_channels),
                "channels": {str(c): self.channel_dict(c) for c in range(self.channels)}}


def sample_test_set(data: str, limit: int | None = DEFAULT_IMAGES, *,
                    warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images, labels, ids)``: ``limit`` images of the CIFAR-10 test split of ``data`` (any
    source :func:`engine.data.datasets.load_cifar10` reads) spread over the classes, with their indices in
    the split as ids. Raises :class:`engine.data.datasets.DataError` (one line) for data that cannot be read."""
    from engine.data.datasets import load_cifar10

    images, labels = load_cifar10(data, "test", warn=warn)
    ids = sample_indices(len(labels), limit)
    return images[ids], labels[ids], ids


def top_images(network: Any, layer: str, images: np.ndarray, labels: np.ndarray | torch.Tensor, *,
               image_ids: np.ndarray | None = None, top_k: int = TOP_K, device: torch.device | str = "cpu",
               batch_size: int = EVAL_BATCH, job: JobState | None = None, cache: bool = True,
               cache_dir: Path | None = None) -> TopImages:
    """The ``top_k`` images of each channel of ``layer`` among ``images`` (uint8 (N, H, W, 3) RGB;
    resized to the network's input when their size differs, and the boxes mapped back) with
    ``labels`` (one class index per image). ``network`` is an :class:`engine.models.weights.LoadedModel`,
    a :class:`ModelAdapter`, or a :class:`ModelSpec` (loaded with its default weights); it runs as
    a private copy on ``device`` (the caller's module gets no hook and is not moved or changed).

    With a ``job``: progress in images and a cancel between batches (:class:`~engine.jobs.Cancelled`).
    ``cache`` reads and writes the cache (module docs) in ``cache_dir`` (default: the user's cache
    folder's ``top-images``). Raises :class:`TopImagesError` (one line) for an unknown layer, one
    without a spatial map, or images or labels that do not fit.
    """
    started = time.perf_counter()
    adapter = _adapter(network)
    spec = adapter.spec
    device = torch.device(device) if isinstance(device, str) else device
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise TopImagesError(f"expected uint8 images (N, H, W, 3), got {getattr(images, 'shape', None)}")
    n = int(images.shape[0])
    if n == 0:
        raise TopImagesError("no images to search")
    try:
        check_labels(labels, n, spec.num_classes)
    except EvalError as e:
        raise TopImagesError(str(e)) from None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise TopImagesError(f"top_k must be a positive whole number, got {top_k!r}")
    labels_np = np.asarray(torch.as_tensor(labels).long().cpu().numpy(), dtype=np.int64)
    ids = np.arange(n, dtype=np.int64) if image_ids is None else np.asarray(image_ids, dtype=np.int64).reshape(-1)
    if ids.shape[0] != n:
        raise TopImagesError(f"{ids.shape[0]} image ids for {n} images")
    k = min(top_k, n)
    _layer_module(adapter, layer)

    key = cache_key(adapter, layer, images, labels_np, ids, k) if cache else ""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_folder()
    path = folder / f"{_safe(spec.name)}-{_safe(layer)}-{key}.npz" if cache else None
    if path is not None:
        found = _load_cached(path, spec, layer, n, k)
        if found is not None:
            if job is not None:
                job.report(JobProgress("top-images", n, n, "cached", "images"))
            return found

    # A private copy gets the hooks (the caller's network may be running in a live session), on the
    # device, with channels-last weights to match the channels-last input: ~20% faster on a CPU.
    net = copy.deepcopy(adapter.model).to(device).to(memory_format=torch.channels_last).eval()
    run = ModelAdapter(spec, net)
    try:
        rf = trace_own(run, layer)
    except ReceptiveFieldError as e:
        raise TopImagesError(str(e)) from None
    channels_in, height, width = spec.input_size
    dtype = next(net.parameters()).dtype
    norm = normaliser(spec.mean, spec.std, device)
    module = net.get_submodule(layer)
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Reached

    best_scores = best_rows = best_pos = None
    map_shape: tuple[int, int, int] | None = None
    handle = module.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                if job is not None:
                    job.check()
                    job.report(JobProgress("top-images", start, n, f"{spec.name} {layer}", "images"))
                chunk = images[start:start + batch_size]
                if not chunk.flags.writeable or not chunk.flags.c_contiguous:
                    chunk = np.array(chunk)  # torch wants writable memory; a result's arrays are read-only
                batch = torch.from_numpy(chunk).to(device)
                x = _network_input(batch, norm, (height, width), channels_in).to(dtype)
                captured.clear()
                try:
                    run(x)
                except _Reached:
                    pass
                act = captured[0].float()  # (B, C, H, W)
                if map_shape is None:
                    map_shape = tuple(int(s) for s in act.shape[1:])  # type: ignore[assignment]
                flat = torch.nan_to_num(act.flatten(2), nan=-math.inf)
                values, where = flat.max(dim=2)  # (B, C)
                rows = torch.arange(start, start + act.shape[0], device=act.device)
                cand_scores = values.T
                cand_rows = rows.expand(act.shape[1], -1)
                cand_pos = where.T
                if best_scores is not None:
                    cand_scores = torch.cat([best_scores, cand_scores], 1)
                    cand_rows = torch.cat([best_rows, cand_rows], 1)
                    cand_pos = torch.cat([best_pos, cand_pos], 1)
                # a stable sort: among equal scores the earlier image stays first, run after run
                order = cand_scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
                best_scores = cand_scores.gather(1, order)
                best_rows = cand_rows.gather(1, order)
                best_pos = cand_pos.gather(1, order)
    finally:
        handle.remove()
    assert best_scores is not None and map_shape is not None
    scores = best_scores.cpu().numpy().astype(np.float32)
    rows_np = best_rows.cpu().numpy().astype(np.int64)
    flat_pos = best_pos.cpu().numpy().astype(np.int64)
    map_w = map_shape[2]
    positions = np.stack([flat_pos // map_w, flat_pos % map_w], axis=-1).astype(np.int32)
    image_hw = (int(images.shape[1]), int(images.shape[2]))
    boxes = np.zeros((*scores.shape, 4), dtype=np.int32)
    for c in range(scores.shape[0]):
        for r in range(k):
            row, col = int(positions[c, r, 0]), int(positions[c, r, 1])
            boxes[c, r] = _image_box(crop_box(rf, row, col, (height, width)), (height, width), image_hw)
    distinct, picture_of = np.unique(rows_np, return_inverse=True)
    result = TopImages(spec.name, spec.profile, layer, tuple(spec.class_names), n, map_shape, rf,
                       _frozen(ids[rows_np]), _frozen(scores), _frozen(positions), _frozen(labels_np[rows_np]),
                       _frozen(boxes), _frozen(images[distinct]),
                       _frozen(picture_of.reshape(rows_np.shape).astype(np.int32)),
                       time.perf_counter() - started)
    if job is not None:
        job.report(JobProgress("top-images", n, n, "done", "images"))
    if path is not None:
        _save_cached(path, result)
    return result


class _Reached(Exception):
    """Stops the pass once the layer has run: nothing after it is needed."""


def _adapter(network: Any) -> ModelAdapter:
    from engine.models.weights import LoadedModel, load_model

    if isinstance(network, ModelAdapter):
        return network
    if isinstance(network, ModelSpec):
        network = load_model(network)
    if isinstance(network, LoadedModel):
        return ModelAdapter(network.spec, network.model)
    raise TypeError(f"expected a LoadedModel, ModelAdapter or ModelSpec, got {type(network).__name__}")


def _layer_module(adapter: ModelAdapter, layer: str) -> torch.nn.Module:
    try:
        module = adapter.model.get_submodule(layer) if layer else None
    except AttributeError:
        module = None
    if module is None or module is adapter.model:
        raise TopImagesError(f"{adapter.spec.name} has no layer {layer!r}")
    return module


def _network_input(batch: torch.Tensor, norm, size: tuple[int, int], channels: int) -> torch.Tensor:
    """uint8 NHWC on the device -> the normalised NCHW input (channels-last) at the network's size."""
    if tuple(batch.shape[1:3]) != size:
        shrinking = batch.shape[1] > size[0] or batch.shape[2] > size[1]
        x = F.interpolate(batch.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False,
                          antialias=shrinking)
        batch = x.clamp(0, 255).permute(0, 2, 3, 1)
    if channels == 1:
        batch = (batch.float() * torch.tensor([0.299, 0.587, 0.114], device=batch.device)).sum(-1, keepdim=True)
    return normalise(batch, norm)


def _image_box(box: tuple[int, int, int, int], net_hw: tuple[int, int],
               image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box in the network's input pixels as a box in the image's own (rounded outwards)."""
    if net_hw == image_hw:
        return box
    sy, sx = image_hw[0] / net_hw[0], image_hw[1] / net_hw[1]
    top, left, bottom, right = box
    return (min(math.floor(top * sy), image_hw[0]), min(math.floor(left * sx), image_hw[1]),
            min(math.ceil(bottom * sy), image_hw[0]), min(math.ceil(right * sx), image_hw[1]))


# -- the cache -------------------------------------------------------------------------------------


def default_cache_folder() -> Path:
    from engine.common.settings import cache_dir as default_cache_dir

    return default_cache_dir() / "top-images"


def images_digest(images: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> str:
    """sha256 over the set: its shape, pixels, labels and ids."""
    h = hashlib.sha256(f"{images.shape}|".encode())
    h.update(np.ascontiguousarray(images).data)
    h.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    h.update(np.ascontiguousarray(ids, dtype=np.int64).data)
    return h.hexdigest()


def cache_key(adapter: ModelAdapter, layer: str, images: np.ndarray, labels: np.ndarray, ids: np.ndarray,
              top_k: int) -> str:
    spec = adapter.spec
    text = json.dumps({"version": CACHE_VERSION, "model": spec.name, "profile": spec.profile,
                       "input": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std),
                       "layer": layer, "top_k": top_k, "weights": weights_digest(adapter.model),
                       "count": int(images.shape[0]), "images": images_digest(images, labels, ids)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80]


_ARRAYS = ("image_ids", "scores", "positions", "labels", "boxes", "pictures", "picture_of")


def _save_cached(path: Path, result: TopImages) -> None:
    from engine.common.files import atomic_write, remove_stale_temps

    meta = {"model": result.model, "profile": result.profile, "layer": result.layer, "images": result.images,
            "map_shape": list(result.map_shape), "receptive": result.receptive.as_dict(),
            "class_names": list(result.class_names), "seconds": result.seconds}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **{name: getattr(result, name) for name in _ARRAYS})

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, _CACHE_GLOB)
        atomic_write(path, write, cache=True)
    except OSError:
        pass  # a cache that cannot be written costs only the search next time


def _load_cached(path: Path, spec: ModelSpec, layer: str, images: int, k: int) -> TopImages | None:
    """The cached result at ``path``, or None (none, unreadable or not what was asked: searched again;
    a damaged one is one line on stderr)."""
    from engine.common.files import cache_rebuilt, open_regular

    try:
        with open_regular(path, MAX_CACHE_BYTES) as f:
            size = os.fstat(f.fileno()).st_size
            with zipfile.ZipFile(f) as z:  # stored arrays within the file, as np.savez writes them
                if any(i.compress_type != zipfile.ZIP_STORED or i.header_offset + i.file_size > size
                       for i in z.infolist()):
                    raise ValueError("not an uncompressed .npz")
            f.seek(0)
            with np.load(f, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in _ARRAYS}
        rf = meta["receptive"]
        receptive = ReceptiveField(rf["layer"], tuple(rf["size"]), tuple(rf["jump"]), tuple(rf["offset"]),
                                   tuple(rf["map_shape"]), tuple(rf["input_shape"]))
        result = TopImages(meta["model"], meta["profile"], meta["layer"], tuple(meta["class_names"]),
                           int(meta["images"]), tuple(int(v) for v in meta["map_shape"]), receptive,
                           **{name: _frozen(a) for name, a in arrays.items()}, seconds=float(meta["seconds"]),
                           cached=True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile) as e:
        cache_rebuilt("top-images", path, e)
        return None
    channels = result.map_shape[0]
    shapes_ok = (result.scores.shape == (channels, k) and result.image_ids.shape == (channels, k)
                 and result.positions.shape == (channels, k, 2) and result.boxes.shape == (channels, k, 4)
                 and result.labels.shape == (channels, k) and result.picture_of.shape == (channels, k)
                 and result.pictures.ndim == 4 and result.picture_of.size
                 and 0 <= int(result.picture_of.min()) and int(result.picture_of.max()) < result.pictures.shape[0])
    if not shapes_ok or (result.model, result.layer, result.images) != (spec.name, layer, images):
        return None
    return result
