"""A frame as each network sees it: centre crop, resize, normalise.

Any frame (a 4000x3000 photo, a 640x480 camera frame, a 32x32 CIFAR image) goes through the same
two steps: the largest centred crop with the network's aspect ratio, shrunk by ``input/resize``
(torchvision's "resize the shorter side to 256, crop 224" for ImageNet; the whole square for
CIFAR-10), then one resize to the input size. Doing the crop before the resize touches only the
pixels that survive, which matters for big frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from engine.models.registry import ModelSpec


@dataclass(frozen=True)
class Preprocess:
    """One preprocessing recipe; networks with equal recipes share the work for a frame."""

    height: int
    width: int
    crop_fraction: float  # of the shorter side, before resizing
    mean: tuple[float, ...]
    std: tuple[float, ...]
    grayscale: bool = False

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> Preprocess:
        channels, height, width = spec.input_size
        return cls(height, width, min(height, width) / spec.resize, spec.mean, spec.std, channels == 1)

    def crop_box(self, frame_h: int, frame_w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the centred crop in frame coordinates."""
        scale = min(frame_h / self.height, frame_w / self.width) * self.crop_fraction
        h = max(1, min(frame_h, round(self.height * scale)))
        w = max(1, min(frame_w, round(self.width * scale)))
        return (frame_h - h) // 2, (frame_w - w) // 2, h, w

    def view(self, frame: np.ndarray) -> np.ndarray:
        """The uint8 RGB image the network is given (before normalisation), (H, W, 3)."""
        top, left, h, w = self.crop_box(*frame.shape[:2])
        crop = frame[top:top + h, left:left + w]
        if (h, w) == (self.height, self.width):
            out = crop.copy()  # never the caller's own array: the view is handed out read-only
        else:
            shrinking = h >= self.height and w >= self.width
            out = cv2.resize(crop, (self.width, self.height),
                             interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        if self.grayscale:
            out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        return out

    def tensor(self, view: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Normalised float32 batch of one, (1, C, H, W), from :meth:`view`'s output."""
        return to_batch(view[None], self.mean, self.std, device, grayscale=self.grayscale)


def to_batch(images: np.ndarray | torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
             device: torch.device | str = "cpu", *, grayscale: bool = False) -> torch.Tensor:
    """uint8 NHWC RGB images -> normalised float32 NCHW on ``device``."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # torch wants writable memory; results elsewhere are read-only
    x = torch.as_tensor(images).to(device, non_blocking=True)
    if grayscale:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device)
        x = (x.float() * weights).sum(-1, keepdim=True)
    return normalise(x, normaliser(tuple(mean), tuple(std), x.device), channels_last=False)


def normalise(batch: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor], *,
              channels_last: bool = True) -> torch.Tensor:
    """The one normalisation, shared by the engine, training and evaluation: a ``(N, H, W, C)``
    batch of 0..255 values (already on the device) to ``(x / 255 - mean) / std`` as float32 NCHW.

    Permuting NHWC memory gives an NCHW tensor in channels-last layout for free; with
    ``channels_last=False`` it is made contiguous NCHW.
    """
    scale, shift = norm
    x = torch.addcmul(shift, batch.permute(0, 3, 1, 2).float(), scale)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@lru_cache(maxsize=32)
def normaliser(mean: tuple[float, ...], std: tuple[float, ...],
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of shape (1, C, 1, 1) with ``u8 * scale + shift == (u8 / 255 - mean) / std``."""
    s = torch.tensor(std, dtype=torch.float32)
    scale = (1.0 / (255.0 * s)).view(1, -1, 1, 1).to(device)
    shift = (-torch.tensor(mean, dtype=torch.float32) / s).view(1, -1, 1, 1).to(device)
    return scale, shift
