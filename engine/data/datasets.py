"""CIFAR-10 as two numpy arrays: images ``uint8 (N, 32, 32, 3)`` RGB and labels ``int64 (N,)``.

Three kinds of source:

- an archive (``.tar.gz``, ``.tgz``, ``.tar``) in the ImageFolder layout ``train/<class>/<image>`` and
  ``test/<class>/<image>``, possibly under one top-level folder. Members are streamed straight from the
  archive (nothing is unpacked to disk) and decoded by OpenCV on a small thread pool while the
  archive is still being read;
- a directory in the same layout, or a directory that is itself ``<class>/<image>`` (one split,
  served whichever split is asked for);
- the official python archive ``cifar-10-python.tar.gz`` (``data_batch_1`` … ``data_batch_5`` and
  ``test_batch``, pickled), read with an unpickler that admits nothing but numpy arrays and plain
  values, so a doctored archive cannot run code;
- the string ``"download"``: torchvision's CIFAR-10 (downloaded into the cache folder, with
  torchvision's own progress bar, only when a user asks for it).

The class index is the class name's position in :data:`CIFAR10_CLASSES` (alphabetical, as in
torchvision). Images within a split are ordered by (class, file name), so every load of the same
source gives the same arrays in the same order. Images that are not 32x32 are resized with area
interpolation.

Decoding 60,000 JPEGs takes a while, so decoded arrays are cached as uncompressed ``.npz`` files under
``cache_dir`` (``$CNN_ARENA_CACHE`` or ``~/.cache/cnn-arena``), keyed by what was read: an archive's
absolute path, size and modification time, or a folder's path and the name, size and modification
time of every image in it (an image overwritten in place changes the key). One pass over an archive
caches all of its splits. Cache files are written atomically; one that cannot be read, or whose
headers do not describe what this module writes, is ignored and rebuilt without being loaded, and
temporary files left by a writer that died are removed on the next load.

A bad image does not stop a load: an image that cannot be decoded (empty, damaged, too large) is
skipped and counted, a file or class folder that cannot be read is skipped, and each kind of skip is
one line passed to ``warn``. A load that could not read a file or folder is not cached, so that the
whole set is read once the permissions are fixed.

Only a regular file or a folder is opened (a FIFO would wait forever for a writer). Every failure is
a :class:`DataError` whose text is one line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from engine.common.errors import error_line
from engine.common.files import remove_stale_temps
from engine.common.settings import cache_dir as default_cache_dir
from engine.common.text import one_line
from engine.data.cifar_batches import (  # noqa: F401  (read_python_batch is part of this module's API)
    BATCH_FILE,
    IMAGE_SIZE,
    MAX_BATCH_BYTES,
    batch_files,
    read_batch,
    read_python_batch,
)
from engine.data.decoded_cache import CACHE_GLOB, cache_path, cache_usable, read_cache, write_cache
from engine.data.errors import DataError  # noqa: F401  (the room's error, raised from here)
from engine.data.imageio import display_name
from engine.data.shared import SharedWork, Stopped
from engine.models.registry import CIFAR10_CLASSES

SPLITS = ("train", "test")
DOWNLOAD = "download"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CACHE_VERSION = 1
_DECODE_CHUNK = 512  # images per task handed to the decoding threads
_SINGLE = ""  # the split name of a layout without train/ and test/ folders
MAX_IMAGE_BYTES = 64 << 20  # a larger "image" is skipped unread: a CIFAR-10 image is a few kB

Progress = Callable[[int, int], None]
Warn = Callable[[str], None]

_log = logging.getLogger(__name__)
_DECODES: SharedWork[_Decoded] = SharedWork()  # by cache folder and source fingerprint


def load_cifar10(source: str | os.PathLike, split: str = "train", *, cache_dir: Path | None = None,
                 progress: Progress | None = None, warn: Warn | None = None,
                 stop: threading.Event | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N,32,32,3) RGB, labels int64 (N,))`` of one split of ``source`` (module docs).

    Each line about skipped images, files or folders goes to ``warn``; by default it is a warning
    on this module's logger, which Python prints on stderr when logging is not set up.

    A source being decoded is decoded once: a second load of it at the same time waits for the
    first and gets the same arrays (to be read, not written). Setting ``stop`` gives the load up (:class:`Stopped`)
    within a fraction of a second; the decode itself stops once no load waits for it.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    warn = warn or _log.warning
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if str(source) == DOWNLOAD:
        return _load_torchvision(split, cache)
    path = Path(source).expanduser()
    name = display_name(source)
    is_folder = _check_source(path)
    batches = batch_files(path) if is_folder else {}
    if batches:  # an extracted official archive: a few files, read in a fraction of a second
        decoded = _load_batch_folder(batches, name)
        if split not in decoded.splits:
            raise DataError(f"{name}: has no {'test_batch' if split == 'test' else 'data_batch_*'} file")
        for line in decoded.notes.get(split, []):
            warn(line)
        return decoded.splits[split]
    listing = _scan_directory(path) if is_folder else None
    if listing is None and not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{name}: not a .tar.gz/.tgz/.tar archive or a folder of class folders")
    remove_stale_temps(cache, CACHE_GLOB)
    fingerprint = _fingerprint(path, listing)
    if listing is None or not listing.unreadable:
        for key in (split, _SINGLE):
            cached = read_cache(cache_path(cache, fingerprint, key))
            if cached is not None:
                images, labels, notes = cached
                for line in notes:
                    warn(line)
                return images, labels

    def decode(stopped: Callable[[], bool]) -> _Decoded:
        if listing is not None:
            decoded = _decode_directory(path, listing, progress, stopped)
        else:
            decoded = _decode_archive(path, progress, stopped)
        if not decoded.problems:  # a load that skipped unreadable files is not what the source holds
            for key, arrays in decoded.splits.items():
                write_cache(cache_path(cache, fingerprint, key), arrays, decoded.notes.get(key, []))
        return decoded

    decoded = _DECODES.run((str(cache), fingerprint), decode, stop)
    for line in decoded.problems:
        warn(line)
    key = split if split in decoded.splits else _SINGLE if _SINGLE in decoded.splits else None
    if key is None:
        raise DataError(f"{name}: has no {split}/ folder of class folders")
    for line in decoded.notes.get(key, []):
        warn(line)
    images, labels = decoded.splits[key]
    if len(labels) == 0:
        raise DataError(f"{name}: no image of the {split} split could be decoded")
    return images, labels


def has_split_layout(source: str | os.PathLike, *, cache_dir: Path | None = None) -> bool:
    """Whether ``source`` has separate train and test splits (always true for ``"download"``).

    Reads the cache when it can, so it is cheap after the first load.
    """
    if str(source) == DOWNLOAD:
        return True
    path = Path(source).expanduser()
    if _check_source(path):
        batches = batch_files(path)
        if batches:
            return "test_batch" in batches and any(b.startswith("data_batch_") for b in batches)
        return all((path / s).is_dir() for s in SPLITS)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprint = source_fingerprint(path)
    if all(cache_usable(cache_path(cache, fingerprint, s)) for s in SPLITS):
        return True
    if cache_usable(cache_path(cache, fingerprint, _SINGLE)):
        return False
    try:
        with _open_regular(path) as raw, tarfile.open(fileobj=raw) as tar:
            names = [m.name for m in tar if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{display_name(path)}: not a readable tar archive ({error_line(e)})") from None
    batches = {m.group(1) for m in map(BATCH_FILE.search, names) if m is not None}
    if batches:
        return "test_batch" in batches and any(b.startswith("data_batch_") for b in batches)
    return {split for split, _ in _resolve_layout(names, display_name(path)).values()} >= set(SPLITS)


def source_fingerprint(path: Path) -> str:
    """A short key that changes when what a load reads changes (see the module docs)."""
    return _fingerprint(path, _scan_directory(path) if _check_source(path) else None)


def _fingerprint(path: Path, listing: _Listing | None) -> str:
    path = path.resolve()
    parts = [f"v{_CACHE_VERSION}", str(path)]
    if listing is not None:
        parts.append("files")
        parts.extend(f"{rel}:{size}:{mtime}" for rel, _, size, mtime in listing.files)
    else:
        try:
            st = path.stat()
        except OSError as e:
            raise DataError(f"{display_name(path)}: cannot be read ({_reason(e)})") from None
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:20]


def _check_source(path: Path) -> bool:
    """Whether ``path`` is a folder (else a regular file); anything else is refused before it is
    opened: opening a FIFO waits for a writer, a device reads forever."""
    name = display_name(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{name}: no such file or directory") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise DataError(f"{name}: cannot be read ({_reason(e)})") from None
    if stat.S_ISDIR(info.st_mode):
        return True
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{name}: not a regular file or a folder")
    return False


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is still a regular file once open (without waiting, should
    it have become a FIFO since it was looked at)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{display_name(path)} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def train_val_split(n: int, val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic shuffle of ``range(n)`` cut into ``(train_idx, val_idx)``, each sorted."""
    if not 0 <= val < n:
        raise ValueError(f"validation size {val} must be at least 0 and below the {n} images")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    return np.sort(order[val:]), np.sort(order[:val])


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded image bytes to ``uint8 (32, 32, 3)`` RGB (resized with area interpolation if needed)."""
    rgb = _decode(data)
    if isinstance(rgb, str):
        raise DataError(f"{one_line(name, 80)}: {rgb}")
    return rgb


def _decode(data: bytes) -> np.ndarray | str:
    """The image, or why it cannot be decoded (OpenCV raises on empty input, returns None on junk)."""
    if len(data) == 0:
        return "empty file"
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            return "not a decodable image"
        if bgr.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
            bgr = cv2.resize(bgr, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except cv2.error as e:
        return f"not a decodable image ({error_line(e)})"


# --- archives and folders ----------------------------------------------------------------------

@dataclass
class _Listing:
    """The images of a folder as they were found: ``files`` are ``(relative name, path, size,
    mtime_ns)`` sorted by name; ``unreadable`` are ``(relative name, why, is_folder)``."""

    files: list[tuple[str, Path, int, int]] = field(default_factory=list)
    unreadable: list[tuple[str, str, bool]] = field(default_factory=list)


@dataclass
class _Decoded:
    """One pass over a source: ``splits`` by name; ``notes``, per split, one line per kind of image
    skipped (kept with the split's cache); ``problems``, lines about files or folders that could not
    be read (such a pass is not cached)."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    notes: dict[str, list[str]]
    problems: list[str]


def _scan_directory(root: Path) -> _Listing:
    listing = _Listing()

    def rel(p: str | os.PathLike) -> str:
        return Path(p).relative_to(root).as_posix()

    def unreadable_folder(e: OSError) -> None:
        listing.unreadable.append((rel(e.filename) if e.filename else ".", _reason(e), True))

    for folder, subfolders, names in os.walk(root, onerror=unreadable_folder):
        subfolders.sort()
        for name in names:
            if not _is_image(name):
                continue
            path = Path(folder) / name
            try:
                info = os.stat(path)
            except OSError as e:
                listing.unreadable.append((rel(path), _reason(e), False))
                continue
            if not stat.S_ISREG(info.st_mode):
                listing.unreadable.append((rel(path), "not a regular file", False))
                continue
            listing.files.append((rel(path), path, info.st_size, info.st_mtime_ns))
    if any(folder and name == "." for name, _, folder in listing.unreadable):
        raise DataError(f"{display_name(root)}: cannot be read ({listing.unreadable[0][1]})")
    listing.files.sort()
    return listing


def _decode_archive(path: Path, progress: Progress | None, stopped: Callable[[], bool] = bool) -> _Decoded:
    total = path.stat().st_size
    too_large: list[tuple[str, str]] = []
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with _open_regular(path) as raw:
            def members() -> Iterator[tuple[str, bytes]]:
                # Stream mode ("r|*") reads the (compressed) file once, front to back.
                with tarfile.open(fileobj=raw, mode="r|*") as tar:
                    for member in tar:
                        if stopped():
                            raise Stopped()
                        batch = BATCH_FILE.search(member.name) if member.isfile() else None
                        if batch is not None and member.size <= MAX_BATCH_BYTES:
                            handle = tar.extractfile(member)
                            if handle is not None:
                                batches[batch.group(1)] = read_batch(handle.read(), member.name, bool(batch.group(2)))
                                if progress is not None:
                                    progress(raw.tell(), total)
                        elif member.isfile() and _is_image(member.name):
                            if member.size > MAX_IMAGE_BYTES:
                                too_large.append((member.name, f"too large ({member.size / 1e6:.0f} MB)"))
                                continue
                            handle = tar.extractfile(member)
                            if handle is not None:
                                yield member.name, handle.read()
                                if progress is not None:
                                    progress(raw.tell(), total)
            names, images, failed = _decode_all(members(), stopped)
    except (tarfile.TarError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{display_name(path)}: not a readable tar archive ({error_line(e)})") from None
    except OSError as e:  # gzip's BadGzipFile is an OSError
        raise DataError(f"{display_name(path)}: cannot be read ({error_line(e)})") from None
    if progress is not None:
        progress(total, total)
    if batches:
        if names:
            raise DataError(f"{display_name(path)}: mixes CIFAR-10's python batches with image files")
        return _from_batches(batches, display_name(path))
    return _arrange(names, images, failed + too_large, display_name(path))


# --- the official python archive ----------------------------------------------------------------

def _load_batch_folder(files: dict[str, tuple[Path, bool]], source_name: str) -> _Decoded:
    batches = {}
    for name, (path, binary) in files.items():
        if path.stat().st_size > MAX_BATCH_BYTES:
            raise DataError(f"{display_name(path)}: too large for a CIFAR-10 batch")
        with _open_regular(path) as f:
            batches[name] = read_batch(f.read(), path.name, binary)
    return _from_batches(batches, source_name)


def _from_batches(batches: dict[str, tuple[np.ndarray, np.ndarray]], source_name: str) -> _Decoded:
    train = [batches[k] for k in sorted(batches) if k.startswith("data_batch_")]
    splits = {}
    if train:
        splits["train"] = (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]))
    if "test_batch" in batches:
        splits["test"] = batches["test_batch"]
    notes = {}
    if train and len(train) < 5:
        notes["train"] = [f"{source_name}: {len(train)} of the 5 training batches"]
    return _Decoded(splits, notes, [])


def _decode_directory(path: Path, listing: _Listing, progress: Progress | None,
                      stopped: Callable[[], bool] = bool) -> _Decoded:
    total = len(listing.files)
    unreadable = list(listing.unreadable)
    too_large: list[tuple[str, str]] = []

    def members() -> Iterator[tuple[str, bytes]]:
        for n, (name, file, size, _) in enumerate(listing.files, 1):
            if stopped():
                raise Stopped()
            if size > MAX_IMAGE_BYTES:
                too_large.append((name, f"too large ({size / 1e6:.0f} MB)"))
                continue
            try:
                with _open_regular(file) as f:
                    data = f.read(MAX_IMAGE_BYTES + 1)
            except OSError as e:
                unreadable.append((name, _reason(e), False))
                continue
            yield name, data
            if progress is not None and (n % 256 == 0 or n == total):
                progress(n, total)

    names, images, failed = _decode_all(members(), stopped)
    decoded = _arrange(names, images, failed + too_large, display_name(path))
    for is_folder in (True, False):
        items = [(name, why) for name, why, folder in unreadable if folder == is_folder]
        if items:
            what = "folder" if is_folder else "file"
            decoded.problems.append(f"{display_name(path)}: skipped {_count(len(items), what)} that could not "
                                    f"be read, e.g. {one_line(items[0][0], 80)} ({items[0][1]}); "
                                    "not cached until every file can be read")
    return decoded


def _decode_all(members: Iterable[tuple[str, bytes]], stopped: Callable[[], bool] = bool,
                ) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Decode ``(name, bytes)`` pairs on two threads (OpenCV releases the GIL) as they arrive;
    returns the names and images decoded, and ``(name, why)`` of those that could not be.
    :class:`Stopped` once ``stopped()``."""
    futures: list[Future] = []
    chunk: list[tuple[str, bytes]] = []

    def decode_chunk(items: list[tuple[str, bytes]]) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
        names, images, failed = [], [], []
        for n, (name, data) in enumerate(items):
            if n % 8 == 0 and stopped():
                raise Stopped()
            rgb = _decode(data)
            if isinstance(rgb, str):
                failed.append((name, rgb))
            else:
                names.append(name)
                images.append(rgb)
        return names, np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), failed

    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            for name, data in members:
                chunk.append((name, data))
                if len(chunk) == _DECODE_CHUNK:
                    futures.append(pool.submit(decode_chunk, chunk))
                    chunk = []
        except BaseException:  # stopped, or the source failed: what is queued is not wanted
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        if chunk:
            futures.append(pool.submit(decode_chunk, chunk))
        try:
            parts = [f.result() for f in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    names = [name for part in parts for name in part[0]]
    failed = [item for part in parts for item in part[2]]
    if not parts:
        return names, np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), failed
    return names, np.concatenate([part[1] for part in parts]), failed


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


def _arrange(names: list[str], images: np.ndarray, failed: list[tuple[str, str]], source_name: str) -> _Decoded:
    layout = _resolve_layout(names + [name for name, _ in failed], source_name)
    if not layout:
        raise DataError(f"{source_name}: no images in train/<class>/ or test/<class>/ folders")
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    groups: dict[str, list[tuple[int, str, int]]] = {split: [] for split, _ in layout.values()}
    for i, name in enumerate(names):
        if name in layout:
            split, cls = layout[name]
            groups[split].append((class_index[cls], name, i))
    if _SINGLE in groups and len(groups) > 1:
        raise DataError(f"{source_name}: mixes class folders at the top with train/ and test/ folders")
    splits = {}
    for split, rows in groups.items():
        rows.sort()
        order = np.fromiter((i for _, _, i in rows), dtype=np.int64, count=len(rows))
        labels = np.fromiter((c for c, _, _ in rows), dtype=np.int64, count=len(rows))
        splits[split] = (np.ascontiguousarray(images[order]), labels)
    notes: dict[str, list[str]] = {}
    for split in groups:
        skipped = sorted((name, why) for name, why in failed if name in layout and layout[name][0] == split)
        if skipped:
            what = f"{split} image" if split else "image"
            notes[split] = [f"{source_name}: skipped {_count(len(skipped), what)} that could not be decoded, "
                            f"e.g. {one_line(skipped[0][0], 80)} ({skipped[0][1]})"]
    return _Decoded(splits, notes, [])


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_SUFFIXES


# --- torchvision download ----------------------------------------------------------------------

def _load_torchvision(split: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    import torchvision

    try:
        ds = torchvision.datasets.CIFAR10(root=str(cache / "torchvision"), train=split == "train", download=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"CIFAR-10 download failed ({error_line(e)})") from None
    if tuple(ds.classes) != CIFAR10_CLASSES:
        raise DataError("torchvision's CIFAR-10 class order differs from this app's")
    return np.ascontiguousarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


# --- cache -------------------------------------------------------------------------------------

def _reason(e: OSError | ValueError) -> str:
    """Why a file could not be read, without its path (which may be long or hold any character)."""
    text = error_line(e, os_reason=True)
    return one_line(text[:1].lower() + text[1:], 160)

