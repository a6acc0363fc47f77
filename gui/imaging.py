"""Pure numpy renderings for the window: feature-map mosaics, channel and class-map overlays.

Nothing here touches Qt: every function takes arrays and returns arrays, so it is tested without a
window and costs the redraw only a few array operations (no Python loop over channels or pixels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

GAP = 255  # the index of the gap colour in a feature lookup table (see style.feature_lut)
LEVELS = 254  # values are mapped to 0..254


@dataclass(frozen=True)
class Mosaic:
    """C channels of one layer tiled into a grid, as indices into a 256-entry lookup table."""

    image: np.ndarray  # (H, W) uint8; 0..254 a value, 255 the gap between tiles
    rows: int
    cols: int
    tile_h: int  # the size of one tile in the mosaic (after decimation)
    tile_w: int
    gap: int
    shown: int  # channels in the mosaic
    total: int  # channels in the layer
    low: float  # the value mapped to index 0 (shared scale) or the smallest per-channel minimum
    high: float

    def channel_at(self, x: float, y: float) -> int | None:
        """The channel under mosaic pixel (x, y), or None on a gap or outside."""
        if x < 0 or y < 0:
            return None
        col, dx = divmod(int(x), self.tile_w + self.gap)
        row, dy = divmod(int(y), self.tile_h + self.gap)
        if dx >= self.tile_w or dy >= self.tile_h or col >= self.cols or row >= self.rows:
            return None
        channel = row * self.cols + col
        return channel if channel < self.shown else None

    def tile_origin(self, channel: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of ``channel``'s tile."""
        row, col = divmod(channel, self.cols)
        return col * (self.tile_w + self.gap), row * (self.tile_h + self.gap)


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of the squarest grid with at least ``n`` cells, wider than tall."""
    if n <= 0:
        return 0, 0
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def decimation(height: int, width: int, max_tile: int) -> int:
    """The stride that brings the larger side of a tile down to at most ``max_tile`` pixels."""
    return max(1, math.ceil(max(height, width) / max_tile))


def to_levels(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """``values`` mapped linearly from [low, high] to indices 0..254 (uint8); a flat range maps to 0."""
    span = np.asarray(high, np.float32) - np.asarray(low, np.float32)
    scale = np.where(span > 0, LEVELS / np.where(span > 0, span, 1), 0).astype(np.float32)
    out = (values - np.asarray(low, np.float32)) * scale
    np.clip(out, 0, LEVELS, out=out)
    return out.astype(np.uint8)


def tile_channels(activation: np.ndarray, *, max_channels: int = 64, max_tile: int = 48,
                  per_channel: bool = False, gap: int = 1) -> Mosaic:
    """Tile the first ``max_channels`` channels of a (C, H, W) activation into one mosaic.

    ``per_channel``: each channel is stretched over its own range (shapes are visible in every
    tile); otherwise one range is shared (tiles compare: a dim tile is a weakly active channel).
    Large maps are decimated so a tile is at most ``max_tile`` pixels a side.
    """
    if activation.ndim != 3:
        raise ValueError(f"expected a (C, H, W) activation, got shape {activation.shape}")
    total = activation.shape[0]
    shown = min(total, max_channels)
    step = decimation(activation.shape[1], activation.shape[2], max_tile)
    tiles = np.asarray(activation[:shown, ::step, ::step], dtype=np.float32)
    if shown == 0 or tiles.size == 0:
        return Mosaic(np.full((1, 1), GAP, np.uint8), 0, 0, 1, 1, gap, 0, total, 0.0, 0.0)
    finite = np.isfinite(tiles)
    if not finite.all():
        tiles = np.where(finite, tiles, 0.0)
    if per_channel:
        low = tiles.min(axis=(1, 2), keepdims=True)
        high = tiles.max(axis=(1, 2), keepdims=True)
        levels = to_levels(tiles, low, high)
        low_value, high_value = float(low.min()), float(high.max())
    else:
        low_value, high_value = float(tiles.min()), float(tiles.max())
        levels = to_levels(tiles, low_value, high_value)
    rows, cols = grid_shape(shown)
    th, tw = tiles.shape[1], tiles.shape[2]
    cells = np.full((rows * cols, th + gap, tw + gap), GAP, np.uint8)
    cells[:shown, :th, :tw] = levels
    image = cells.reshape(rows, cols, th + gap, tw + gap).transpose(0, 2, 1, 3)
    image = image.reshape(rows * (th + gap), cols * (tw + gap))
    if gap:
        image = image[:-gap, :-gap]
    return Mosaic(np.ascontiguousarray(image), rows, cols, th, tw, gap, shown, total, low_value, high_value)


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (H, W[, C]) resized to (height, width) by nearest neighbour (pixel centres)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.intp), w - 1)
    return image[rows[:, None], cols[None, :]]


def normalise(channel: np.ndarray) -> np.ndarray:
    """A 2-D map stretched to 0..1 (float32); a flat map is all zeros."""
    channel = np.nan_to_num(np.asarray(channel, np.float32))
    low, high = float(channel.min()), float(channel.max())
    if high <= low:
        return np.zeros_like(channel)
    return (channel - low) / (high - low)


def blend_channel(view: np.ndarray, channel: np.ndarray, lut: np.ndarray, strength: float = 0.7) -> np.ndarray:
    """One channel upsampled over the network's input view, as RGB uint8 (view's size).

    Strong activations cover the input in the colour map's bright end; weak ones let it through,
    so one sees *where* in the picture the channel responds.
    """
    h, w = view.shape[:2]
    value = resize_nearest(normalise(channel), h, w)
    colour = lut[np.minimum((value * LEVELS).astype(np.intp), LEVELS)].astype(np.float32)
    alpha = (strength * (0.3 + 0.7 * value))[..., None]
    out = view.astype(np.float32) * (1 - alpha) + colour * alpha
    return out.astype(np.uint8)


def blend_class_map(view: np.ndarray, class_map: np.ndarray, palette: np.ndarray,
                    confidence: np.ndarray | None = None, opacity: float = 0.55) -> np.ndarray:
    """A per-pixel class map painted translucently over the view (RGB uint8, view's size).

    Where ``confidence`` (0..1 per pixel) is low the colour fades, so unsure pixels show the input.
    """
    h, w = view.shape[:2]
    classes = resize_nearest(class_map, h, w)
    colour = palette[np.minimum(classes, len(palette) - 1)].astype(np.float32)
    alpha = np.full((h, w), opacity, np.float32)
    if confidence is not None:
        alpha *= 0.35 + 0.65 * np.clip(resize_nearest(np.asarray(confidence, np.float32), h, w), 0, 1)
    alpha = alpha[..., None]
    return (view.astype(np.float32) * (1 - alpha) + colour * alpha).astype(np.uint8)


def blend_heat(view: np.ndarray, heat: np.ndarray, lut: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """A [0, 1] map (a Grad-CAM) in ``lut``'s colours (256 x 3 uint8) laid over the whole view at
    ``opacity``, as Grad-CAM tools show it: the picture stays readable under the colours."""
    h, w = view.shape[:2]
    values = np.clip(resize_nearest(np.asarray(heat, np.float32), h, w), 0.0, 1.0)
    colour = lut[(values * 255).astype(np.intp)].astype(np.float32)
    return (view.astype(np.float32) * (1 - opacity) + colour * opacity).astype(np.uint8)


def class_shares(class_map: np.ndarray, num_classes: int, top: int = 5) -> list[tuple[int, float]]:
    """The ``top`` classes covering most pixels, as (class index, fraction), largest first."""
    counts = np.bincount(class_map.ravel().astype(np.intp), minlength=num_classes)
    total = counts.sum()
    if total == 0:
        return []
    order = np.argsort(-counts, kind="stable")[:top]
    return [(int(c), float(counts[c] / total)) for c in order if counts[c] > 0]


def agreement(top1: Mapping[str, int]) -> dict[str, int]:
    """For each network, how many networks (itself included) gave the same top-1 class."""
    values = list(top1.values())
    return {name: values.count(answer) for name, answer in top1.items()}
