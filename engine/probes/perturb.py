"""Perturbations of an image: what a network's answer survives.

Six are the CIFAR-10-C corruptions of Hendrycks & Dietterich 2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR 2019, arXiv 1903.12261), with the
severity parameters the authors used to make CIFAR-10-C (their ``make_cifar_c.py``):

=================  ==========================================  ==================================
kind               what                                        severity 1..5
=================  ==========================================  ==================================
gaussian_noise     add N(0, s) per pixel and channel, on 0..1  s = .04 .06 .08 .09 .10
gaussian_blur      Gaussian filter, sigma in pixels            sigma = .4 .6 .7 .8 1.0
brightness         HSV value + b (hue and saturation kept)     b = .05 .10 .15 .20 .30
contrast           (x - channel mean) * c + channel mean       c = .75 .50 .40 .30 .15
jpeg               JPEG encode and decode at quality q         q = 80 65 58 50 40
pixelate           box-shrink by f, box-enlarge back           f = .95 .90 .85 .75 .65
=================  ==========================================  ==================================

and two of this project's own, geometric:

- ``rotate``: rotation about the centre by 6, 12, 18, 24, 30 degrees, the corners filled by
  mirroring the image (no black wedges, which would be a second perturbation);
- ``occlude``: a mid-grey square (128) whose side is 10, 20, 30, 40, 50% of the shorter side,
  centred at ``center`` (fractions of the width and height; the square stays inside the image).

Severity 0 is no perturbation: :func:`apply` returns its input itself, bit for bit.

Sizes. CIFAR-10-C's parameters are for 32x32 images, and a frame is usually larger: a 640x480
camera frame is shrunk to 32x32 before a CIFAR network sees it, which would average a 1-pixel blur
or per-pixel noise away. So every spatial parameter is in units of ``reference_size`` (default 32):
an image whose shorter side is S pixels is treated as the same picture sampled S/32 times more
finely, and blur sigma, pixelation blocks and noise grains (squares of S/32 pixels, one random
value each) are scaled by S/32. This rule is this project's: the authors chose a separate table
for each image size they published (ImageNet-C at 224 pixels has its own), which would not carry a
32x32 network's view across frame sizes. At S = 32 (CIFAR-10 itself) nothing is scaled and the
definitions above hold exactly.
JPEG is not scaled (its 8x8 blocks are a property of the codec), so on a large frame it is a
milder perturbation than on CIFAR-10-C. Values are rounded to the nearest level (the published
set truncated to uint8, a difference of at most one level).

Noise is drawn from a generator seeded by ``seed``: the same image and seed give the same noise,
so one frame perturbed once is the same picture for every network; a video that should see fresh
noise per frame passes the frame number as the seed. Everything here is pure NumPy, OpenCV and
Pillow on uint8 RGB arrays (H, W, 3), usable from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

REFERENCE_SIZE = 32  # the image size CIFAR-10-C's parameters were chosen for
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# Hendrycks & Dietterich 2019 (arXiv 1903.12261), CIFAR-10-C parameters, severity 1..5
_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
_BRIGHTNESS = (0.05, 0.10, 0.15, 0.20, 0.30)
_CONTRAST = (0.75, 0.50, 0.40, 0.30, 0.15)
_JPEG_QUALITY = (80, 65, 58, 50, 40)
_PIXELATE = (0.95, 0.90, 0.85, 0.75, 0.65)
# this project's geometric ones
_ROTATE_DEGREES = (6.0, 12.0, 18.0, 24.0, 30.0)
_OCCLUDE_SIDE = (0.1, 0.2, 0.3, 0.4, 0.5)  # of the shorter side
OCCLUDER_GREY = 128

KINDS: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg", "pixelate",
                          "rotate", "occlude")
CORRUPTIONS: tuple[str, ...] = KINDS[:6]  # the CIFAR-10-C ones
LABELS = {"gaussian_noise": "Gaussian noise", "gaussian_blur": "Gaussian blur", "brightness": "brightness",
          "contrast": "contrast", "jpeg": "JPEG", "pixelate": "pixelate", "rotate": "rotation",
          "occlude": "occluding square"}


class PerturbError(ValueError):
    """A perturbation or an image that cannot be used; ``str(e)`` is one line."""


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one severity (0: none; 1..5: mild to strong).

    ``seed`` fixes the noise of ``gaussian_noise``; ``center`` is the occluding square's centre as
    (x, y) fractions of the image's width and height.
    """

    kind: str
    severity: int = 0
    seed: int = 0
    center: tuple[float, float] = (0.5, 0.5)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PerturbError(f"unknown perturbation {self.kind!r}; expected one of {', '.join(KINDS)}")
        if isinstance(self.severity, bool) or not isinstance(self.severity, (int, np.integer)) \
                or not 0 <= self.severity <= 5:
            raise PerturbError(f"severity must be a whole number from 0 to 5, not {self.severity!r}")
        if len(self.center) != 2 or not all(0.0 <= float(c) <= 1.0 for c in self.center):
            raise PerturbError(f"center must be two fractions from 0 to 1, not {self.center!r}")

    @property
    def label(self) -> str:
        """In words, for a legend: "Gaussian blur 3"."""
        return f"{LABELS[self.kind]} {self.severity}"

    @property
    def parameter(self) -> float | None:
        """The severity's parameter as the table in this module gives it (None at severity 0)."""
        if self.severity == 0:
            return None
        return float(_PARAMETERS[self.kind][self.severity - 1])


_PARAMETERS = {"gaussian_noise": _NOISE_STD, "gaussian_blur": _BLUR_SIGMA, "brightness": _BRIGHTNESS,
               "contrast": _CONTRAST, "jpeg": _JPEG_QUALITY, "pixelate": _PIXELATE, "rotate": _ROTATE_DEGREES,
               "occlude": _OCCLUDE_SIDE}


def apply(image: np.ndarray, perturbation: Perturbation, *, reference_size: int = REFERENCE_SIZE) -> np.ndarray:
    """``image`` (uint8 RGB, H x W x 3) with ``perturbation`` applied, as a new uint8 array of the
    same shape; at severity 0, ``image`` itself. ``reference_size``: the shorter side at which the
    spatial parameters hold (module docs)."""
    _check_image(image)
    if perturbation.severity == 0:
        return image
    rng = np.random.Generator(np.random.PCG64(perturbation.seed))
    return _apply(image, perturbation, rng, _scale(image, reference_size))


def apply_all(images: np.ndarray, perturbation: Perturbation, *,
              reference_size: int = REFERENCE_SIZE) -> np.ndarray:
    """``perturbation`` on each of ``images`` (uint8, N x H x W x 3), as a new array (at severity 0,
    ``images`` itself). Image ``i`` draws its noise from ``(seed, i)``: independent noise per image,
    the same on every call."""
    if images.ndim != 4:
        raise PerturbError(f"expected images of shape (N, H, W, 3), got {images.shape}")
    if images.shape[0] == 0:
        return images
    _check_image(images[0])
    if perturbation.severity == 0:
        return images
    scale = _scale(images[0], reference_size)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        rng = np.random.Generator(np.random.PCG64([perturbation.seed, i]))
        out[i] = _apply(image, perturbation, rng, scale)
    return out


def all_perturbations(kinds: Sequence[str] = KINDS, severities: Sequence[int] = SEVERITIES,
                      seed: int = 0) -> list[Perturbation]:
    """Every kind at every severity, kind by kind."""
    return [Perturbation(kind, severity, seed) for kind in kinds for severity in severities]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise PerturbError(f"expected a uint8 RGB image (H, W, 3), got {dtype} of shape {shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise PerturbError(f"the image is empty ({image.shape[1]}x{image.shape[0]})")


def _scale(image: np.ndarray, reference_size: int) -> float:
    if reference_size < 1:
        raise PerturbError(f"reference_size must be at least 1, not {reference_size}")
    return max(1.0, min(image.shape[:2]) / reference_size)


def _apply(image: np.ndarray, p: Perturbation, rng: np.random.Generator, scale: float) -> np.ndarray:
    level = _PARAMETERS[p.kind][p.severity - 1]
    if p.kind == "gaussian_noise":
        return _gaussian_noise(image, level, rng, scale)
    if p.kind == "gaussian_blur":
        return _gaussian_blur(image, level * scale)
    if p.kind == "brightness":
        return _brightness(image, level)
    if p.kind == "contrast":
        return _contrast(image, level)
    if p.kind == "jpeg":
        return _jpeg(image, int(level))
    if p.kind == "pixelate":
        return _pixelate(image, level, scale)
    if p.kind == "rotate":
        return _rotate(image, level)
    return _occlude(image, level, p.center)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Values on 0..1 -> uint8, clipped and rounded to the nearest level."""
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    grain = max(1, round(scale))
    noise = rng.normal(0.0, std, size=(-(-h // grain), -(-w // grain), 3)).astype(np.float32)
    if grain > 1:
        noise = np.repeat(np.repeat(noise, grain, axis=0), grain, axis=1)[:h, :w]
    return _to_uint8(image.astype(np.float32) / 255.0 + noise)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    # As scikit-image's gaussian() the authors used: edges repeated, kernel out to 4 sigma.
    radius = int(4.0 * sigma + 0.5)
    x = image.astype(np.float32) / 255.0
    blurred = cv2.GaussianBlur(x, (2 * radius + 1, 2 * radius + 1), sigmaX=sigma, sigmaY=sigma,
                               borderType=cv2.BORDER_REPLICATE)
    return _to_uint8(blurred)


def _brightness(image: np.ndarray, shift: float) -> np.ndarray:
    # HSV's value is the largest channel and, with hue and saturation held, every channel scales
    # with it: adding to V and converting back multiplies RGB by V'/V (a black pixel, which has no
    # hue, becomes grey V'). The same as scikit-image's rgb2hsv/hsv2rgb round trip, without it.
    x = image.astype(np.float32) / 255.0
    v = x.max(axis=2, keepdims=True)
    v_new = np.clip(v + shift, 0.0, 1.0)
    ratio = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
    out = np.where(v > 0, x * ratio, v_new)
    return _to_uint8(out)


def _contrast(image: np.ndarray, factor: float) -> np.ndarray:
    x = image.astype(np.float32) / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((x - means) * factor + means)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    # Pillow, as the authors used (4:2:0 chroma subsampling, the IJG tables scaled by quality)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


def _pixelate(image: np.ndarray, factor: float, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    small = (max(1, int(w * factor / scale)), max(1, int(h * factor / scale)))
    im = Image.fromarray(image).resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.uint8).copy()


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _occlude(image: np.ndarray, side_fraction: float, center: tuple[float, float]) -> np.ndarray:
    h, w = image.shape[:2]
    side = max(1, round(side_fraction * min(h, w)))
    left = min(max(0, round(center[0] * w - side / 2)), w - side)
    top = min(max(0, round(center[1] * h - side / 2)), h - side)
    out = image.copy()
    out[top:top + side, left:left + side] = OCCLUDER_GREY
    return out
