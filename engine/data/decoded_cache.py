"""Decoded data sets on disk: one ``.npz`` per source and split, keyed by the source's fingerprint,
read back only after its records, sizes and shapes are checked."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from engine.common.files import atomic_write, cache_rebuilt, open_regular
from engine.common.text import one_line
from engine.data.cifar_batches import IMAGE_SIZE
from engine.models.registry import CIFAR10_CLASSES

CACHE_GLOB = "cifar10-*.npz"
MAX_CACHE_BYTES = 1 << 30  # a split of 50,000 images is 154 MB



def cache_path(cache: Path, fingerprint: str, split: str) -> Path:
    return cache / f"cifar10-{fingerprint}-{split or 'all'}.npz"


def read_cache(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(images, labels, notes)`` from a cache file, or None when it is missing or is not what
    :func:`write_cache` writes. Its headers are checked before any array is read, so a damaged
    file, or one that declares arrays larger than itself, costs no memory: it is rebuilt."""
    try:
        with open_regular(path, MAX_CACHE_BYTES) as f, zipfile.ZipFile(f) as z:
            records = cache_records(z, os.fstat(f.fileno()).st_size)
            if records is None:
                cache_rebuilt("data", path, "not the arrays this version writes")
                return None
            arrays = {}
            for key, record in records.items():
                with z.open(record) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - a cache is only a copy: whatever is wrong with it, decode again
        cache_rebuilt("data", path, e)
        return None
    labels = arrays["labels"]
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        return None
    notes = [one_line(str(n), 400) for n in arrays["notes"]] if "notes" in arrays else []
    return np.ascontiguousarray(arrays["images"]), labels.astype(np.int64, copy=False), notes


def cache_usable(path: Path) -> bool:
    """Whether a cache file's headers are what :func:`write_cache` writes (no array is read)."""
    try:
        with open_regular(path, MAX_CACHE_BYTES) as f, zipfile.ZipFile(f) as z:
            return cache_records(z, os.fstat(f.fileno()).st_size) is not None
    except Exception:  # as in read_cache
        return False


def cache_records(z: zipfile.ZipFile, file_size: int) -> dict[str, zipfile.ZipInfo] | None:
    """The cache's arrays by name, when each is stored uncompressed within the file and its header
    declares the dtype, shape and byte count that :func:`write_cache` writes; None otherwise."""
    records: dict[str, zipfile.ZipInfo] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for key in ("images", "labels", "notes"):
        try:
            record = z.getinfo(f"{key}.npy")
        except KeyError:
            if key == "notes":  # caches written before notes were kept have none
                continue
            return None
        if record.compress_type != zipfile.ZIP_STORED or record.header_offset + record.file_size > file_size:
            return None
        with z.open(record) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                return None
            header_bytes = member.tell()
        if dtype.hasobject or header_bytes + math.prod(shape) * dtype.itemsize != record.file_size:
            return None
        records[key], shapes[key] = record, shape
        kind_ok = {"images": dtype == np.uint8, "labels": dtype.kind in "iu", "notes": dtype.kind == "U"}[key]
        if not kind_ok:
            return None
    n = shapes["images"][0] if len(shapes["images"]) == 4 else -1
    if shapes["images"] != (n, IMAGE_SIZE, IMAGE_SIZE, 3) or shapes["labels"] != (n,) \
            or len(shapes.get("notes", (0,))) != 1:
        return None
    return records


def write_cache(path: Path, arrays: tuple[np.ndarray, np.ndarray], notes: list[str]) -> None:
    images, labels = arrays

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels, notes=np.array(notes, dtype=str))

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write, cache=True)
    except OSError:
        pass  # a read-only or full cache folder costs only speed
