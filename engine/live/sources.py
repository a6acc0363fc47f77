"""Where frames come from: image files, folders, videos, cameras, network streams, CIFAR-10.

Every source yields :class:`Frame` objects: an RGB uint8 image, a frame id, a display name and,
when known, a label. A frame that cannot be read is still yielded, with ``image=None`` and a
one-line ``error``, so the engine reports it and moves on to the next one. ``open_source`` turns
what a person typed or dropped (a path, a camera index, a URL) into the right source.

Live sources (cameras, streams) are read on their own thread that keeps only the newest frame: the
engine always sees the present, however slow the networks are.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.common.settings import current as current_settings
from engine.data.imageio import InputError, display_name, is_image_path, read_image, to_rgb_uint8
from engine.live.streams import StreamError, preflight, redact_url

# OpenCV's own WARN/ERROR lines would reach the user's terminal beside the engine's one-line
# messages, which already say what went wrong; CNN_ARENA_DEBUG=1 keeps them.
if not current_settings().debug:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class Frame:
    frame_id: int
    image: np.ndarray | None  # RGB uint8 (H, W, 3), read-only
    source: str  # what to show a person: "cat.jpg", "clip.mp4 #12", "camera 0"
    label: int | None = None
    error: str | None = None
    epoch: int = 0  # which source request it belongs to (the engine drops frames of older ones)


class Source:
    """Base class: iterate to get frames; ``close()`` releases files, devices and threads."""

    name: str = ""
    live = False  # frames arrive on their own clock (camera, stream): newest wins
    fps: float | None = None  # the source's native rate, when it has one (video files)
    length: int | None = None  # number of frames, when known up front
    class_names: tuple[str, ...] | None = None  # what the labels index into; None: no labels of its own
    camera = False  # a camera by index: when it cannot be opened, another index may work

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _freeze(image: np.ndarray) -> np.ndarray:
    image.flags.writeable = False
    return image


def _short(path: str | os.PathLike) -> str:
    """The name of ``path`` as it may be shown: its last part, control characters escaped."""
    return display_name(os.fspath(path).rstrip("/\\") or os.fspath(path))


def label_of(path: Path, root: Path | None, class_names: Sequence[str]) -> int | None:
    """The class index of the first folder between ``root`` and ``path`` named after a class."""
    if not class_names:
        return None
    lookup = {c.lower(): i for i, c in enumerate(class_names)}
    parts = path.parent.relative_to(root).parts if root is not None else (path.parent.name,)
    for part in reversed(parts):
        if part.lower() in lookup:
            return lookup[part.lower()]
    return None


class ArraySource(Source):
    """Frames already in memory: a pasted image, a test's arrays."""

    def __init__(self, images: Iterable[np.ndarray], name: str = "pasted image",
                 labels: Iterable[int | None] | None = None) -> None:
        self.images, self.name = list(images), name
        self.labels = list(labels) if labels is not None else [None] * len(self.images)
        self.length = len(self.images)

    def __iter__(self) -> Iterator[Frame]:
        for i, (image, label) in enumerate(zip(self.images, self.labels)):
            name = self.name if self.length == 1 else f"{self.name} #{i}"
            try:
                yield Frame(i, _freeze(to_rgb_uint8(image)), name, label)
            except InputError as e:
                yield Frame(i, None, self.name, label, str(e))


class ImageFilesSource(Source):
    """A list of image files, in the order given; labels from a parent folder named after a class."""

    def __init__(self, paths: Sequence[str | os.PathLike], class_names: Sequence[str] = ()) -> None:
        self.paths = [Path(p) for p in paths]
        self.class_names = tuple(class_names) or None
        self.length = len(self.paths)
        self.name = _short(self.paths[0]) if len(self.paths) == 1 else f"{len(self.paths)} images"

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            yield read_frame(i, path, label_of(path, None, self.class_names or ()))


def read_frame(frame_id: int, path: Path, label: int | None) -> Frame:
    try:
        return Frame(frame_id, _freeze(read_image(path)), _short(path), label)
    except InputError as e:
        return Frame(frame_id, None, _short(path), label, str(e))


class FolderSource(Source):
    """Every image below a folder, found lazily (a folder of 50,000 files starts at once).

    Sub-folders are walked in name order; symbolic links to folders are followed once (a link
    loop is noticed and skipped); unreadable folders are reported as frames with an error.
    """

    def __init__(self, root: str | os.PathLike, class_names: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.class_names = tuple(class_names) or None
        self.name = _short(self.root) + "/"

    def __iter__(self) -> Iterator[Frame]:
        frame_id = 0
        for path, error in walk_images(self.root):
            if error is not None:
                yield Frame(frame_id, None, _short(path), None, error)
            else:
                yield read_frame(frame_id, path, label_of(path, self.root, self.class_names or ()))
            frame_id += 1


def walk_images(root: Path) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each image file under ``root``, depth first, lazily; (path, message) for
    a folder that cannot be listed. Each real folder is entered once, so link loops end."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            key = (info.st_dev, info.st_ino)
            if key in seen:
                continue  # a symbolic link back to a folder already walked
            seen.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield folder, f"{_short(folder)}: cannot list folder ({e.strerror or e})"
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links; a dangling link is neither
            except OSError:
                continue
            if is_dir:
                subfolders.append(Path(entry.path))
            elif is_image_path(entry.name):
                yield Path(entry.path), None
        stack.extend(reversed(subfolders))


class VideoSource(Source):
    """A video file, frame by frame, with its native frame rate."""

    def __init__(self, path: str | os.PathLike, capture_factory: Callable[..., object] = cv2.VideoCapture) -> None:
        self.path = Path(path)
        self.name = _short(self.path)
        self._capture_factory = capture_factory
        self._capture = None
        if not self.path.is_file():
            raise InputError(f"{self.name}: no such file")
        if self.path.stat().st_size == 0:
            raise InputError(f"{self.name}: empty file (0 bytes)")
        capture = capture_factory(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise InputError(f"{self.name}: cannot open as a video (unknown format or corrupt file)")
        self._capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1 <= fps <= 1000 else None
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.length = count if count > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        capture, frame_id = self._capture, 0
        if capture is None:
            return
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
            yield Frame(frame_id, _freeze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), f"{self.name} #{frame_id}")
            frame_id += 1
        if frame_id == 0:
            yield Frame(0, None, self.name, None, f"{self.name}: the video has no readable frames")
        elif self.length is not None and frame_id < self.length - 1:
            yield Frame(frame_id, None, self.name, None,
                        f"{self.name}: stopped at frame {frame_id} of {self.length} (corrupt or truncated)")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class LiveSource(Source):
    """A camera (by index) or a network stream, read on its own thread; only the newest frame is kept.

    ``capture_factory`` makes the capture object (``cv2.VideoCapture`` by default; tests pass a
    fake). Opening runs on the reader thread too, so a stream that never answers cannot freeze the
    caller: after ``open_timeout`` seconds without a first frame the source gives up with a message.
    """

    live = True

    def __init__(self, target: int | str, capture_factory: Callable[..., object] | None = None, *,
                 open_timeout: float = 10.0, stall_timeout: float = 5.0) -> None:
        self.target = target
        self.name = f"camera {target}" if isinstance(target, int) else redact_url(str(target))
        self.camera = isinstance(target, int)
        self._factory = capture_factory or _open_capture
        self.open_timeout, self.stall_timeout = open_timeout, stall_timeout
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._seq = 0
        self._error: str | None = None
        self._stop = threading.Event()
        self._capture = None
        self._thread = threading.Thread(target=self._read_loop, name=f"reader {self.name}", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        if isinstance(self.target, str) and self._factory is _open_capture:
            try:  # first from Python, where a dead server blocks nothing else (engine.live.streams)
                if not preflight(self.target, self._stop, self.open_timeout):
                    return  # closed while waiting
            except StreamError as e:
                self._fail(str(e))
                return
        try:
            capture = self._factory(self.target)
        except (cv2.error, OSError, ValueError) as e:
            self._fail(f"{self.name}: cannot open ({e})")
            return
        self._capture = capture
        if not capture.isOpened():
            what = "no camera at this index" if isinstance(self.target, int) else "the stream does not answer"
            self._fail(f"{self.name}: cannot open ({what})")
            capture.release()
            return
        failures = 0
        while not self._stop.is_set():
            ok, bgr = capture.read()
            if not ok or bgr is None:
                failures += 1
                if failures >= 30:  # a few reads fail while a camera warms up; thirty in a row is gone
                    self._fail(f"{self.name}: stopped sending frames (unplugged or the stream ended)")
                    break
                time.sleep(0.01)
                continue
            failures = 0
            rgb = _freeze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            with self._cond:
                self._latest, self._seq = rgb, self._seq + 1
                self._cond.notify_all()
        capture.release()

    def _fail(self, message: str) -> None:
        with self._cond:
            self._error = message
            self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        last_seq, started = 0, time.monotonic()
        while not self._stop.is_set():
            with self._cond:
                timeout = self.open_timeout if last_seq == 0 else self.stall_timeout
                self._cond.wait_for(lambda seen=last_seq: self._seq != seen or self._error is not None
                                    or self._stop.is_set(), timeout=0.25)
                seq, image, error = self._seq, self._latest, self._error
            if seq != last_seq and image is not None:
                last_seq = seq
                started = time.monotonic()
                yield Frame(seq - 1, image, self.name)
            elif error is not None:
                yield Frame(seq, None, self.name, None, error)
                return
            elif time.monotonic() - started > timeout:
                what = "no answer" if last_seq == 0 else "no new frame"
                yield Frame(seq, None, self.name, None, f"{self.name}: {what} for {timeout:.0f} s (timed out)")
                return

    def close(self) -> None:
        """Returns at once: the reader thread releases the capture when its read returns (a capture
        is never released from another thread while a read may be under way inside OpenCV)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()


def _open_capture(target: int | str):
    if isinstance(target, str):  # a URL: let FFmpeg give up rather than wait forever
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 8000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(target)


class DatasetSource(Source):
    """The labelled CIFAR-10 test set (or any split) from an archive or folder, via engine.data.datasets.

    Played in a fixed shuffled order: the files are stored class by class, and a running accuracy
    over a thousand airplanes first would say little for a long time.
    """

    def __init__(self, path: str | os.PathLike, split: str = "test", *, seed: int = 0,
                 stop: threading.Event | None = None) -> None:
        from engine.data.datasets import DataError, load_cifar10
        from engine.data.shared import Stopped
        from engine.models.registry import CIFAR10_CLASSES

        try:
            self.images, self.labels = load_cifar10(path, split, stop=stop)
        except DataError as e:
            raise InputError(str(e)) from None
        except Stopped:
            raise InputError(f"{_short(path)}: stopped while loading") from None
        self.name = f"CIFAR-10 {split}"
        self.length = len(self.labels)
        self.class_names = CIFAR10_CLASSES
        self.order = np.random.default_rng(seed).permutation(self.length)

    def __iter__(self) -> Iterator[Frame]:
        for i, index in enumerate(self.order):
            yield Frame(i, _freeze(self.images[index]), f"{self.name} #{index}", int(self.labels[index]))


def describe(target: str) -> str:
    """What kind of source ``target`` names: camera, stream, dataset, folder, video or image."""
    if target.strip().isdigit():
        return "camera"
    if _URL.match(target):
        return "stream"
    lower = target.lower()
    if lower.endswith(ARCHIVE_SUFFIXES):
        return "dataset"
    if os.path.isdir(target):
        return "folder"
    if Path(lower).suffix in VIDEO_SUFFIXES:
        return "video"
    return "image"


def open_source(target: str | os.PathLike | Sequence[str | os.PathLike], class_names: Sequence[str] = (), *,
                capture_factory: Callable[..., object] | None = None, stop: threading.Event | None = None) -> Source:
    """The source for what a person named; raises InputError (one line) when it cannot be opened.

    ``target`` is a camera index ("0"), a URL, a CIFAR-10 archive, a folder, a video file, an
    image file, or a list of image files. Setting ``stop`` gives up an open that takes long (a data
    set being decoded) within a fraction of a second.
    """
    if not isinstance(target, (str, os.PathLike)):
        paths = list(target)
        if not paths:
            raise InputError("no files given")
        if len(paths) > 1:
            return ImageFilesSource(paths, class_names)
        target = paths[0]
    text = os.fspath(target)
    kind = describe(text)
    if kind == "camera":
        return LiveSource(int(text), capture_factory)
    if kind == "stream":
        return LiveSource(text, capture_factory)
    # A FIFO, a device or a socket would block the first read for good, whatever its name says.
    if not os.path.lexists(text):
        raise InputError(f"{_short(text)}: no such file or folder")
    try:
        mode = os.stat(text).st_mode
    except OSError as e:
        raise InputError(f"{_short(text)}: cannot read ({e.strerror or e})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{_short(text)}: not a regular file or a folder")
    if kind in ("dataset",) or (kind == "folder" and _looks_like_cifar(Path(text))):
        return DatasetSource(text, stop=stop)
    if kind == "folder":
        return FolderSource(text, class_names)
    if stat.S_ISDIR(mode):
        raise InputError(f"{_short(text)}: a folder with a file's name")
    if kind == "video":
        return VideoSource(text, capture_factory or cv2.VideoCapture)
    return ImageFilesSource([text], class_names)


def _looks_like_cifar(folder: Path) -> bool:
    """A folder with test/<class>/ in it (the ImageFolder layout of a data set, not loose pictures),
    or an extracted official CIFAR-10 archive."""
    from engine.data.datasets import batch_files

    if (folder / "test" / "airplane").is_dir() and (folder / "test" / "truck").is_dir():
        return True
    return "test_batch" in batch_files(folder)
