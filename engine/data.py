"""CIFAR-10 as two numpy arrays: images ``uint8 (N, 32, 32, 3)`` RGB and labels ``int64 (N,)``.

Three kinds of source:

- an archive (``.tar.gz``, ``.tgz``, ``.tar``) in the ImageFolder layout ``train/<class>/<image>`` and
  ``test/<class>/<image>``, possibly under one top-level folder. Members are streamed straight from the
  archive (nothing is unpacked to disk) and decoded by OpenCV on a small thread pool while the
  archive is still being read;
- a directory in the same layout, or a directory that is itself ``<class>/<image>`` (one split,
  served whichever split is asked for);
- the string ``"download"``: torchvision's CIFAR-10 (downloaded into the cache folder, with
  torchvision's own progress bar, only when a user asks for it).

The class index is the class name's position in :data:`CIFAR10_CLASSES` (alphabetical, as in
torchvision). Images within a split are ordered by (class, file name), so every load of the same
source gives the same arrays in the same order. Images that are not 32x32 are resized with area
interpolation.

Decoding 60,000 JPEGs takes a while, so decoded arrays are cached as uncompressed ``.npz`` files under
``cache_dir`` (``$CNN_ARENA_CACHE`` or ``~/.cache/cnn-arena``), keyed by the source's absolute path,
size and modification time and the split. One pass over an archive caches all of its splits. Cache
files are written atomically; a damaged one is ignored and rebuilt.

Every failure is a :class:`DataError` whose text is one line.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from engine.files import atomic_write
from engine.models.registry import CIFAR10_CLASSES

SPLITS = ("train", "test")
IMAGE_SIZE = 32
DOWNLOAD = "download"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CACHE_VERSION = 1
_DECODE_CHUNK = 512  # images per task handed to the decoding threads
_SINGLE = ""  # the split name of a layout without train/ and test/ folders

Progress = Callable[[int, int], None]


class DataError(Exception):
    """A data source that cannot be used; ``str(e)`` is one line."""


def default_cache_dir() -> Path:
    env = os.environ.get("CNN_ARENA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnn-arena"


def load_cifar10(source: str | os.PathLike, split: str = "train", *, cache_dir: Path | None = None,
                 progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N,32,32,3) RGB, labels int64 (N,))`` of one split of ``source`` (module docs)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if str(source) == DOWNLOAD:
        return _load_torchvision(split, Path(cache_dir) if cache_dir else default_cache_dir())
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path.name or source}: no such file or directory")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprint = source_fingerprint(path)
    for name in (split, _SINGLE):
        cached = _read_cache(_cache_path(cache, fingerprint, name))
        if cached is not None:
            return cached
    if path.is_dir():
        splits = _decode_directory(path, progress)
    elif path.name.lower().endswith(ARCHIVE_SUFFIXES):
        splits = _decode_archive(path, progress)
    else:
        raise DataError(f"{path.name}: not a .tar.gz/.tgz/.tar archive or a folder of class folders")
    for name, arrays in splits.items():
        _write_cache(_cache_path(cache, fingerprint, name), arrays)
    if split in splits:
        return splits[split]
    if _SINGLE in splits:
        return splits[_SINGLE]
    raise DataError(f"{path.name}: has no {split}/ folder of class folders")


def has_split_layout(source: str | os.PathLike, *, cache_dir: Path | None = None) -> bool:
    """Whether ``source`` has separate train and test splits (always true for ``"download"``).

    Reads the cache when it can, so it is cheap after the first load.
    """
    if str(source) == DOWNLOAD:
        return True
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path.name or source}: no such file or directory")
    if path.is_dir():
        return all((path / s).is_dir() for s in SPLITS)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprint = source_fingerprint(path)
    if all(_cache_path(cache, fingerprint, s).is_file() for s in SPLITS):
        return True
    if _cache_path(cache, fingerprint, _SINGLE).is_file():
        return False
    try:
        with tarfile.open(path) as tar:
            names = [m.name for m in tar if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path.name}: not a readable tar archive ({_first_line(e)})") from None
    return {split for split, _ in _resolve_layout(names, path.name).values()} >= set(SPLITS)


def source_fingerprint(path: Path) -> str:
    """A short key that changes when the file (or a directory's class folders) changes."""
    path = path.resolve()
    parts = [f"v{_CACHE_VERSION}", str(path)]
    try:
        st = path.stat()
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        if path.is_dir():  # adding or removing an image changes its folder's mtime
            for sub in sorted(p for p in path.rglob("*") if p.is_dir()):
                parts.append(f"{sub.relative_to(path)}:{sub.stat().st_mtime_ns}")
    except OSError as e:
        raise DataError(f"{path.name}: cannot be read ({_first_line(e)})") from None
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def train_val_split(n: int, val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic shuffle of ``range(n)`` cut into ``(train_idx, val_idx)``, each sorted."""
    if not 0 <= val < n:
        raise ValueError(f"validation size {val} must be at least 0 and below the {n} images")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    return np.sort(order[val:]), np.sort(order[:val])


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded image bytes to ``uint8 (32, 32, 3)`` RGB (resized with area interpolation if needed)."""
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{name}: not a decodable image")
    if bgr.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        bgr = cv2.resize(bgr, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --- archives and folders ----------------------------------------------------------------------

def _decode_archive(path: Path, progress: Progress | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    total = path.stat().st_size
    try:
        with open(path, "rb") as raw:
            def members() -> Iterator[tuple[str, bytes]]:
                # Stream mode ("r|*") reads the (compressed) file once, front to back.
                with tarfile.open(fileobj=raw, mode="r|*") as tar:
                    for member in tar:
                        if member.isfile() and _is_image(member.name):
                            handle = tar.extractfile(member)
                            if handle is not None:
                                yield member.name, handle.read()
                                if progress is not None:
                                    progress(raw.tell(), total)
            names, images = _decode_all(members())
    except (tarfile.TarError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path.name}: not a readable tar archive ({_first_line(e)})") from None
    except OSError as e:  # gzip's BadGzipFile is an OSError
        raise DataError(f"{path.name}: cannot be read ({_first_line(e)})") from None
    if progress is not None:
        progress(total, total)
    return _arrange(names, images, path.name)


def _decode_directory(path: Path, progress: Progress | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p.name))
    rel = [p.relative_to(path).as_posix() for p in files]
    total = len(files)

    def members() -> Iterator[tuple[str, bytes]]:
        for n, (file, name) in enumerate(zip(files, rel, strict=True), 1):
            try:
                data = file.read_bytes()
            except OSError as e:
                raise DataError(f"{name}: cannot be read ({_first_line(e)})") from None
            yield name, data
            if progress is not None and (n % 256 == 0 or n == total):
                progress(n, total)

    names, images = _decode_all(members())
    return _arrange(names, images, path.name)


def _decode_all(members: Iterable[tuple[str, bytes]]) -> tuple[list[str], np.ndarray]:
    """Decode ``(name, bytes)`` pairs on two threads (OpenCV releases the GIL) as they arrive."""
    names: list[str] = []
    futures: list[Future] = []
    chunk: list[tuple[str, bytes]] = []

    def decode_chunk(items: list[tuple[str, bytes]]) -> np.ndarray:
        return np.stack([decode_image(data, name) for name, data in items])

    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, data in members:
            names.append(name)
            chunk.append((name, data))
            if len(chunk) == _DECODE_CHUNK:
                futures.append(pool.submit(decode_chunk, chunk))
                chunk = []
        if chunk:
            futures.append(pool.submit(decode_chunk, chunk))
        parts = [f.result() for f in futures]
    if not parts:
        return names, np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return names, np.concatenate(parts)


def _resolve_layout(names: list[str], source_name: str) -> dict[str, tuple[str, str]]:
    """Map every image path to ``(split, class)``; split is ``""`` for a layout of class folders."""
    parts = [tuple(p for p in n.split("/") if p not in ("", ".")) for n in names]
    known = set(SPLITS) | set(CIFAR10_CLASSES)
    # One top-level folder around everything (e.g. cifar10/train/...) is skipped.
    firsts = {p[0] for p in parts if len(p) > 1}
    skip = 1 if len(firsts) == 1 and not firsts & known and all(len(p) > 2 for p in parts) else 0
    out: dict[str, tuple[str, str]] = {}
    for name, p in zip(names, parts, strict=True):
        p = p[skip:]
        if len(p) >= 3 and p[0] in SPLITS:
            split, cls = p[0], p[1]
        elif len(p) == 2:
            split, cls = _SINGLE, p[0]
        else:
            continue  # loose files (a README image, say) are not part of any class
        if cls not in CIFAR10_CLASSES:
            where = f"{split}/{cls}" if split else cls
            raise DataError(f"{source_name}: unknown class folder {where!r}; expected the CIFAR-10 classes "
                            f"({', '.join(CIFAR10_CLASSES)})")
        out[name] = (split, cls)
    return out


def _arrange(names: list[str], images: np.ndarray, source_name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    layout = _resolve_layout(names, source_name)
    if not layout:
        raise DataError(f"{source_name}: no images in train/<class>/ or test/<class>/ folders")
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    groups: dict[str, list[tuple[int, str, int]]] = {}
    for i, name in enumerate(names):
        if name in layout:
            split, cls = layout[name]
            groups.setdefault(split, []).append((class_index[cls], name, i))
    if _SINGLE in groups and len(groups) > 1:
        raise DataError(f"{source_name}: mixes class folders at the top with train/ and test/ folders")
    out = {}
    for split, rows in groups.items():
        rows.sort()
        order = np.fromiter((i for _, _, i in rows), dtype=np.int64, count=len(rows))
        labels = np.fromiter((c for c, _, _ in rows), dtype=np.int64, count=len(rows))
        out[split] = (np.ascontiguousarray(images[order]), labels)
    return out


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_SUFFIXES


# --- torchvision download ----------------------------------------------------------------------

def _load_torchvision(split: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    import torchvision

    try:
        ds = torchvision.datasets.CIFAR10(root=str(cache / "torchvision"), train=split == "train", download=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"CIFAR-10 download failed ({_first_line(e)})") from None
    if tuple(ds.classes) != CIFAR10_CLASSES:
        raise DataError("torchvision's CIFAR-10 class order differs from this app's")
    return np.ascontiguousarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


# --- cache -------------------------------------------------------------------------------------

def _cache_path(cache: Path, fingerprint: str, split: str) -> Path:
    return cache / f"cifar10-{fingerprint}-{split or 'all'}.npz"


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None  # damaged: decode again and overwrite
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) \
            or labels.shape != (images.shape[0],):
        return None
    return np.ascontiguousarray(images), labels.astype(np.int64, copy=False)


def _write_cache(path: Path, arrays: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = arrays

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError:
        pass  # a read-only or full cache folder costs only speed


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]
