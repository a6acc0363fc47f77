"""Files the tests make: short videos, images, fake cameras. Nothing is shipped or downloaded."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> Path:
    """An MJPG .avi of a bright square moving over a gradient."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    ramp = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0).repeat(3, 2)
    for i in range(frames):
        frame = ramp.copy()
        x = (i * 17) % max(1, w - 60)
        frame[h // 3:h // 3 + 60, x:x + 60] = (0, 0, 255)
        writer.write(frame)
    writer.release()
    return path


def write_image(path: Path, size: tuple[int, int] = (48, 40), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


class FakeCapture:
    """Stands in for cv2.VideoCapture: ``frames`` good reads, then failures (an unplugged camera)."""

    def __init__(self, target=0, frames: int = 5, opened: bool = True, delay: float = 0.0) -> None:
        self.target, self.left, self.opened, self.delay = target, frames, opened, delay
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return self.opened

    def read(self):
        import time
        if self.delay:
            time.sleep(self.delay)
        if self.left <= 0 or self.released:
            return False, None
        self.left -= 1
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 2] = 255 - self.left  # BGR red, changing per frame
        return True, frame

    def release(self) -> None:
        self.released = True


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (1-bit grey) with almost no pixel data: a
    decompression bomb's shape without its memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))
    path.write_bytes(data + chunk(b"IEND", b""))
    return path
