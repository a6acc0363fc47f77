"""CIFAR-10's official batches: the python version's pickles, read with an unpickler that admits
only numpy arrays and plain values, and the binary version's records."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np

from engine.common.errors import error_line
from engine.common.text import one_line
from engine.data.errors import DataError
from engine.models.registry import CIFAR10_CLASSES

IMAGE_SIZE = 32  # CIFAR-10's pictures are 32x32

BATCH_FILE = re.compile(r"(?:^|/)(data_batch_[1-5]|test_batch)(\.bin)?$")  # python (pickles) or binary version
MAX_BATCH_BYTES = 64 << 20  # a batch of 10,000 images is 31 MB pickled


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 batch holds: a dict of bytes, str, int lists and numpy arrays."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how protocol 2 stores bytes from Python 3: a codec, no code

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {one_line(module, 40)}.{one_line(name, 40)}")


def read_batch(data: bytes, name: str, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    return read_binary_batch(data, name) if binary else read_python_batch(data, name)


def read_binary_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch of the binary version: records of one label byte and 3072 pixel bytes."""
    record = 1 + 3 * IMAGE_SIZE * IMAGE_SIZE
    if len(data) == 0 or len(data) % record:
        raise DataError(f"{one_line(name, 80)}: not a CIFAR-10 binary batch ({len(data)} bytes is not "
                        f"a whole number of {record}-byte records)")
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    labels = rows[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise DataError(f"{one_line(name, 80)}: a label is outside the {len(CIFAR10_CLASSES)} classes")
    images = rows[:, 1:].reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def batch_files(folder: Path) -> dict[str, tuple[Path, bool]]:
    """The batch files of an extracted official archive in ``folder`` or its one sub-folder
    (``cifar-10-batches-py/``, ``cifar-10-batches-bin/``): name -> (path, binary)."""
    found: dict[str, tuple[Path, bool]] = {}
    for where in (folder, *sorted(p for p in folder.glob("cifar-10-batches-*") if p.is_dir())):
        try:
            entries = sorted(where.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = BATCH_FILE.search(entry.name)
            if match is not None and entry.is_file():
                found.setdefault(match.group(1), (entry, bool(match.group(2))))
        if found:
            break
    return found


def read_python_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch of the official archive as ``(images (N,32,32,3) RGB, labels (N,))``."""
    shown = one_line(name, 80)
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise DataError(f"{shown}: not a CIFAR-10 batch ({error_line(e)})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{shown}: not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    pixels, labels = batch.get("data"), batch.get("labels")
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or not isinstance(labels, list) \
            or len(labels) != pixels.shape[0]:
        raise DataError(f"{shown}: not a CIFAR-10 batch (expected 'data' uint8 (N, 3072) and N 'labels')")
    labels_array = np.asarray(labels, dtype=np.int64)
    if labels_array.size and (labels_array.min() < 0 or labels_array.max() >= len(CIFAR10_CLASSES)):
        raise DataError(f"{shown}: a label is outside the {len(CIFAR10_CLASSES)} classes")
    # each row: 1024 red, then 1024 green, then 1024 blue values, row by row
    images = pixels.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels_array
