"""Layer health: how much of a layer's output is zero, and which channels never fire.

After a ReLU a value is exactly 0 wherever the pre-activation was negative, so the fraction of
zeros says how sparse the layer is on an input, and a channel whose maximum is <= 0 did not fire
anywhere on it. One input says little about a channel; :class:`HealthAccumulator` keeps, frame
after frame, which channels have fired at least once and the running zero fraction, so that a
channel that never fired on a whole source (a video, a folder) can be named. Before a ReLU (a
batch norm's or a convolution's output) exact zeros are rare and "never fired" means "never
positive". Pure numpy: results are frozen, with read-only arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _check(activation: np.ndarray) -> np.ndarray:
    a = np.asarray(activation)
    if a.ndim != 3:
        raise ValueError(f"expected a (C, H, W) activation, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"expected floating-point activations, got {a.dtype}")
    return a


@dataclass(frozen=True, eq=False)  # holds arrays: equal only to itself
class LayerHealth:
    """One (C, H, W) activation: ``zeros`` of its ``values`` are exactly 0 (``zero_fraction``),
    ``channel_zero_fraction`` (C,) per channel, ``channel_max`` (C,) each channel's maximum, and
    ``dead`` (C,) bool: the channels whose maximum is <= 0 (they did not fire on this input)."""

    channels: int
    zeros: int
    values: int
    channel_zero_fraction: np.ndarray
    channel_max: np.ndarray
    dead: np.ndarray

    @property
    def zero_fraction(self) -> float:
        return self.zeros / self.values if self.values else 0.0

    @property
    def dead_channels(self) -> tuple[int, ...]:
        return tuple(int(c) for c in np.flatnonzero(self.dead))

    @property
    def dead_fraction(self) -> float:
        return float(self.dead.mean()) if self.channels else 0.0


def layer_health(activation: np.ndarray) -> LayerHealth:
    """The zero fraction and the channels that never fire of one (C, H, W) float activation. NaN
    counts as neither zero nor fired."""
    a = _check(activation)
    channels = a.shape[0]
    flat = a.reshape(channels, -1)
    zeros = (flat == 0).sum(axis=1)
    per_position = max(flat.shape[1], 1)
    if flat.shape[1]:
        channel_max = np.fmax.reduce(flat, axis=1).astype(np.float32)  # fmax: a NaN does not hide a value
    else:
        channel_max = np.full(channels, -np.inf, np.float32)
    return LayerHealth(
        channels,
        int(zeros.sum()),
        int(flat.size),
        _frozen((zeros / per_position).astype(np.float32)),
        _frozen(channel_max),
        _frozen(~(channel_max > 0)),
    )


@dataclass(frozen=True, eq=False)
class HealthSnapshot:
    """What a :class:`HealthAccumulator` has seen: ``frames`` fed, ``zero_fraction`` over every
    value of every frame, ``ever_fired`` (C,) bool (maximum > 0 on at least one frame),
    ``channel_max`` (C,) the largest value of each channel on any frame, and the last frame's
    :class:`LayerHealth` (None before the first)."""

    channels: int
    frames: int
    zero_fraction: float
    ever_fired: np.ndarray
    channel_max: np.ndarray
    last: LayerHealth | None

    @property
    def never_fired(self) -> tuple[int, ...]:
        """The channels that did not fire on any frame fed so far."""
        return tuple(int(c) for c in np.flatnonzero(~self.ever_fired))

    @property
    def never_fired_fraction(self) -> float:
        return float((~self.ever_fired).mean()) if self.channels else 0.0


class HealthAccumulator:
    """Fed one layer's (C, H, W) activations frame after frame (:meth:`add`), keeps per-channel
    "ever fired" flags and the running zero fraction; :meth:`snapshot` is immutable. A frame with
    another channel count (the layer was changed) raises ``ValueError``: start a new accumulator
    (or :meth:`reset`) when the layer or the source changes. Not thread-safe: one feeder."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._frames = 0
        self._zeros = 0
        self._values = 0
        self._fired: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._last: LayerHealth | None = None

    def add(self, activation: np.ndarray) -> LayerHealth:
        """Count one frame's activation; returns that frame's own :class:`LayerHealth`."""
        health = layer_health(activation)
        if self._fired is not None and health.channels != self._fired.shape[0]:
            raise ValueError(f"a frame with {health.channels} channels after frames with {self._fired.shape[0]}; "
                             "start a new accumulator for another layer")
        if self._fired is None:
            self._fired = ~health.dead
            self._max = health.channel_max.copy()
        else:
            self._fired |= ~health.dead
            np.fmax(self._max, health.channel_max, out=self._max)
        self._zeros += health.zeros
        self._values += health.values
        self._frames += 1
        self._last = health
        return health

    def snapshot(self) -> HealthSnapshot:
        if self._fired is None:
            empty = _frozen(np.zeros(0, dtype=bool))
            return HealthSnapshot(0, 0, 0.0, empty, _frozen(np.zeros(0, dtype=np.float32)), None)
        return HealthSnapshot(int(self._fired.shape[0]), self._frames,
                              self._zeros / self._values if self._values else 0.0,
                              _frozen(self._fired.copy()), _frozen(self._max.copy()), self._last)
