"""Live statistics over a stream of frame results.

:class:`MetricsTracker` is fed every :class:`~engine.runtime.session.FrameResult` and hands out immutable
:class:`MetricsSnapshot` objects (plain numbers and numpy arrays) that the window plots and the CLI
prints. Everything is arithmetic on numbers already measured: no timing happens here except the
wall-clock rate of completed frames.

What each figure covers: the statistics belong to one source (the engine resets them when a new
source opens, and on request); latencies and frame rates are over the last ``window`` frames;
counts, accuracies, confusion, agreement and flips are since the source opened. The frame rate is
measured over the time frames kept arriving: a gap longer than :data:`IDLE_GAP_S` (a pause, a
slideshow's wait, a single image) is not counted as time the engine ran.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

import numpy as np

from engine.runtime.session import FrameResult

EXAMPLES_PER_CELL = 50  # frames remembered per confusion cell, to list and show again
IDLE_GAP_S = 1.0  # a longer wait between two results is idle time, not part of a frame rate


def percentiles(values: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 95, 99)) -> tuple[float, ...]:
    """Percentiles by linear interpolation (numpy's default); NaN for no values, or for any NaN
    among them, as numpy gives. ``qs`` outside 0-100 raise ``ValueError``.

    Written out over one sort rather than ``np.percentile``, which costs about 35 µs a call in
    argument handling on 300 values: a snapshot takes three sets of percentiles for each network
    (when first read, see :class:`ModelStats`), which with numpy's call was about 0.5 ms of a 10 ms
    frame while the engine took them after every frame.
    """
    if any(not 0 <= q <= 100 for q in qs):
        raise ValueError(f"percentiles must be within 0 and 100, got {list(qs)}")
    n = len(values)
    array = values if isinstance(values, np.ndarray) else np.fromiter(values, np.float64, n)
    return tuple(float(v) for v in row_percentiles(array.astype(np.float64, copy=False).reshape(1, n), qs)[0])


def row_percentiles(rows: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """:func:`percentiles` of each row of a 2-D float64 array at once, over one sort: (rows, len(qs)).
    A snapshot takes its latency, forward and preprocessing percentiles this way, one call per
    network instead of three."""
    count, n = rows.shape
    out = np.full((count, len(qs)), np.nan)
    if n == 0:
        return out
    ordered = np.sort(rows, axis=1)
    for j, q in enumerate(qs):
        position = q / 100 * (n - 1)
        below = int(position)
        low = ordered[:, below]
        if position == below:  # an exact rank (an infinite neighbour must not turn it into NaN)
            out[:, j] = low
        else:
            high = ordered[:, below + 1]
            out[:, j] = low + (high - low) * (position - below)
    out[np.isnan(ordered[:, -1])] = np.nan  # the sort puts NaN last
    return out


class _Ring:
    """The last ``size`` values of a few series appended together, in one numpy buffer: reading
    them back oldest first is two slices, not a conversion of a deque per series and frame."""

    __slots__ = ("data", "filled", "next")

    def __init__(self, series: int, size: int) -> None:
        self.data = np.empty((series, max(1, size)), np.float64)
        self.filled = self.next = 0

    def append(self, *values: float) -> None:
        size = self.data.shape[1]
        self.data[:, self.next] = values
        self.next = (self.next + 1) % size
        self.filled = min(self.filled + 1, size)

    def ordered(self) -> np.ndarray:
        """(series, values held), oldest first: a new array."""
        if self.filled < self.data.shape[1]:
            return self.data[:, :self.filled].copy()
        return np.concatenate((self.data[:, self.next:], self.data[:, :self.next]), axis=1)


class _Log:
    """Whole numbers appended one at a time to a growing buffer. What has been appended never
    changes (a longer buffer replaces a full one), so a snapshot holds a read-only view of it, not a
    copy."""

    __slots__ = ("data", "count")

    def __init__(self) -> None:
        self.data = np.empty(1024, np.int32)
        self.count = 0

    def append(self, value: int) -> None:
        if self.count == len(self.data):
            grown = np.empty(2 * self.count, np.int32)
            grown[:self.count] = self.data
            self.data = grown
        self.data[self.count] = value
        self.count += 1

    def view(self) -> np.ndarray:
        return _ro(self.data[:self.count])


def jitter(values: Sequence[float] | np.ndarray) -> float:
    """Mean absolute change between consecutive values (RFC 3550's idea of jitter, unsmoothed)."""
    if len(values) < 2:
        return 0.0
    return float(np.mean(np.abs(np.diff(np.asarray(values, dtype=np.float64)))))


def _percentile(series: int, rank: int, doc: str) -> property:
    """A :class:`ModelStats` figure: percentile ``rank`` (p50, p95, p99) of time ``series``
    (latency, forward pass, preprocessing), from the one sort of ``_percentiles``."""
    return property(lambda stats: stats._percentiles[series][rank], doc=doc)


@dataclass(frozen=True)
class ModelStats:
    """One network's figures in a snapshot. The times are held as measured; their percentiles and
    jitter are worked out when first read, on the reader's thread: the engine makes a snapshot after
    every frame (about 100 a second on CIFAR-10), and the window reads at most 30 of them a second.
    Working them out in the engine made its snapshot 0.28 ms of a 10 ms frame, against 0.07 now
    (the pipeline on a 640x480 video, medians)."""

    times: np.ndarray  # (3, n) read-only: latency, forward pass, preprocessing (ms), oldest first
    frames: int
    labelled: int  # frames with a ground-truth label
    top1: float | None  # running accuracy, None without labels
    top5: float | None
    flip_rate: float | None  # fraction of consecutive frames whose top-1 changed (video, camera)
    classes: int
    answers: np.ndarray | None  # read-only: true class x classes + top-1 of each labelled frame, in order

    @cached_property
    def confusion(self) -> np.ndarray | None:
        """(classes, classes) counts: rows true class, columns predicted; None without labels. Built
        when first read: a copy in every snapshot was 8 MB a network on ImageNet's 1,000 classes."""
        if self.answers is None:
            return None
        n = self.classes
        return _ro(np.bincount(self.answers, minlength=n * n).reshape(n, n))

    @property
    def latency_ms(self) -> np.ndarray:
        """The recent per-frame latencies (preprocess + forward), oldest first."""
        return self.times[0]

    @property
    def forward_ms(self) -> np.ndarray:
        """The recent forward passes alone (what `bench` measures), oldest first."""
        return self.times[1]

    @cached_property
    def _percentiles(self) -> tuple[tuple[float, ...], ...]:
        """(latency, forward, preprocessing) x (p50, p95, p99), over one sort per series."""
        return tuple(map(tuple, row_percentiles(self.times, (50, 95, 99)).tolist()))

    p50_ms = _percentile(0, 0, "latency p50, ms")
    p95_ms = _percentile(0, 1, "latency p95, ms")
    p99_ms = _percentile(0, 2, "latency p99, ms")

    @cached_property
    def jitter_ms(self) -> float:
        return jitter(self.times[0])

    @property
    def network_fps(self) -> float:
        """1000 / p50: frames per second this network alone could sustain."""
        p50 = self.p50_ms
        return 1000.0 / p50 if p50 > 0 else 0.0

    forward_p50_ms = _percentile(1, 0, "forward pass p50, ms")
    forward_p95_ms = _percentile(1, 1, "forward pass p95, ms")
    preprocess_p50_ms = _percentile(2, 0, "crop, resize, normalise p50, ms (shared by networks with the same recipe)")


@dataclass(frozen=True)
class MetricsSnapshot:
    frame_id: int
    frames: int  # results received
    errors: int  # frames that could not be read
    dropped: int  # frames replaced before the engine got to them (filled in by the engine)
    pipeline_fps: float | None  # completed frames per second while frames kept coming (see the module
    # docstring), over the recent window; None before two frames came close enough together
    models: Mapping[str, ModelStats]
    agreement: np.ndarray  # (models, models) fraction of frames where both gave the same top-1
    model_names: tuple[str, ...]
    all_agree_rate: float | None  # fraction of frames where every network gave the same top-1
    history_fps: np.ndarray  # recent pipeline FPS samples, one per completed frame (NaN: not yet known)
    source: str = ""  # the source these statistics belong to
    window: int = 300  # latencies and frame rates cover the last this many frames


class MetricsTracker:
    """Running statistics; not thread-safe (the engine thread owns it)."""

    def __init__(self, model_names: Sequence[str], num_classes: int, window: int = 300,
                 clock=time.perf_counter) -> None:
        self.names = tuple(model_names)
        self.num_classes = num_classes
        self.window = window
        self._clock = clock
        self._examples_lock = threading.Lock()  # examples() is read from other threads
        self.reset()

    def examples(self, model: str, true_class: int, predicted: int) -> tuple[tuple[int, str], ...]:
        """The latest frames (frame id, source name) of one confusion cell, oldest first: up to
        EXAMPLES_PER_CELL, since the source opened. Any thread may call it."""
        with self._examples_lock:
            return tuple(self._examples.get((model, true_class, predicted), ()))

    def reset(self, source: str = "") -> None:
        """Start over (a new source, or a person's Reset): every figure restarts from nothing."""
        n = len(self.names)
        self.source = source
        self.frames = self.errors = 0
        self.last_frame_id = -1
        self._times = {m: _Ring(3, self.window) for m in self.names}  # latency, forward, preprocess (ms)
        self._count = dict.fromkeys(self.names, 0)
        self._labelled = dict.fromkeys(self.names, 0)
        self._correct1 = dict.fromkeys(self.names, 0)
        self._correct5 = dict.fromkeys(self.names, 0)
        self._answers = {m: _Log() for m in self.names}  # true x classes + predicted, per labelled frame
        with self._examples_lock:
            self._examples: dict[tuple[str, int, int], deque[tuple[int, str]]] = {}
        self._previous_top1: dict[str, int] = {}
        self._flips = dict.fromkeys(self.names, 0)
        self._pairs = dict.fromkeys(self.names, 0)
        self._agree = np.zeros((n, n), np.int64)
        self._compared = 0
        self._all_agree = 0
        self._done_at: deque[float] = deque(maxlen=self.window)
        self._fps_now: float | None = None  # _fps() after the latest result
        self._fps_history = _Ring(1, self.window)

    def update(self, result: FrameResult, *, continuous: bool = False) -> None:
        """Count one frame. ``continuous``: consecutive frames show the same scene (video, camera),
        so a change of top-1 between them counts as a flip."""
        self.frames += 1
        self.last_frame_id = result.frame_id
        self._done_at.append(self._clock())
        fps = self._fps_now = self._fps()
        self._fps_history.append(float("nan") if fps is None else fps)
        if not result.ok:
            self.errors += 1
            return
        top1 = {}
        label = result.label
        if label is not None and not 0 <= label < self.num_classes:
            label = None
        previous = self._previous_top1 if continuous else {}
        for name, r in result.results.items():
            times = self._times.get(name)
            if times is None:
                continue
            times.append(r.latency_ms, r.forward_ms, r.preprocess_ms)
            self._count[name] += 1
            best = top1[name] = r.top1
            if label is not None:
                self._labelled[name] += 1
                self._correct1[name] += best == label
                self._correct5[name] += int(label in r.top_indices[:5])
                self._answers[name].append(label * self.num_classes + best)
                key = (name, label, best)
                with self._examples_lock:
                    cell = self._examples.get(key)
                    if cell is None:
                        cell = self._examples[key] = deque(maxlen=EXAMPLES_PER_CELL)
                    cell.append((result.frame_id, result.source))
            if name in previous:
                self._pairs[name] += 1
                self._flips[name] += previous[name] != best
        self._previous_top1 = top1 if continuous else {}
        if len(top1) == len(self.names):
            answers = np.array([top1[m] for m in self.names])
            self._agree += answers[:, None] == answers[None, :]
            self._compared += 1
            self._all_agree += int((answers == answers[0]).all())

    def _fps(self) -> float | None:
        """Frames per second over the recent results, leaving out gaps longer than IDLE_GAP_S."""
        if len(self._done_at) < 2:
            return None
        gaps = np.diff(np.fromiter(self._done_at, np.float64, len(self._done_at)))
        busy = gaps[gaps <= IDLE_GAP_S]
        span = float(busy.sum())
        return len(busy) / span if len(busy) and span > 0 else None

    def snapshot(self, dropped: int = 0) -> MetricsSnapshot:
        models = {}
        for m in self.names:
            labelled = self._labelled[m]
            models[m] = ModelStats(
                times=_ro(self._times[m].ordered()), frames=self._count[m], labelled=labelled,
                top1=self._correct1[m] / labelled if labelled else None,
                top5=self._correct5[m] / labelled if labelled else None,
                flip_rate=self._flips[m] / self._pairs[m] if self._pairs[m] else None,
                classes=self.num_classes, answers=self._answers[m].view() if labelled else None,
            )
        agreement = self._agree / self._compared if self._compared else np.full(self._agree.shape, np.nan)
        return MetricsSnapshot(
            frame_id=self.last_frame_id, frames=self.frames, errors=self.errors, dropped=dropped,
            pipeline_fps=self._fps_now, models=MappingProxyType(models), agreement=_ro(agreement.astype(np.float64)),
            model_names=self.names, all_agree_rate=self._all_agree / self._compared if self._compared else None,
            history_fps=_ro(self._fps_history.ordered()[0]),
            source=self.source, window=self.window,
        )


def _ro(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
