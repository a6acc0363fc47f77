"""The background engine: one long-lived worker thread, a latest-frame-wins slot, live metrics.

    engine = Engine(on_result=show, on_event=log)   # callbacks run on the engine's threads
    engine.start()                                    # loads the networks in the background
    engine.set_source("clip.mp4")                     # a path, camera index, URL or Source
    engine.pause(); engine.step(); engine.resume()
    engine.stop()                                     # returns within a second

Two threads: a *feeder* pulls frames from the source and puts them into a one-frame slot; the
*worker* takes the frame from the slot, runs every network on it and calls ``on_result`` with an
immutable :class:`~engine.inference.FrameResult` and :class:`~engine.metrics.MetricsSnapshot`. A
live source (camera, stream, a video played in real time) overwrites a frame the worker has not
taken yet: the newest frame wins and the replaced one is counted as dropped. A still source
(files, a folder, a data set, a video played as fast as possible) waits for the slot instead, so
nothing is dropped. No queue grows without bound.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.device import engine_threads, resolve_device
from engine.imageio import InputError
from engine.inference import FrameResult, InferenceSession, LayerInfo, ModelResult
from engine.metrics import MetricsSnapshot, MetricsTracker
from engine.models.registry import RegistryError
from engine.sources import Frame, Source, open_source
from engine.weights import LoadedModel

ResultCallback = Callable[[FrameResult, MetricsSnapshot], None]


@dataclass(frozen=True)
class EngineEvent:
    kind: str  # "session", "source", "source_ended", "error", "info"
    message: str = ""
    session: SessionInfo | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    title: str
    status: str  # trained, pretrained, custom, untrained
    source: str  # where its weights came from, one line
    layers: tuple[LayerInfo, ...]
    default_layer: str
    has_class_map: bool
    class_names: tuple[str, ...]
    test_top1: float | None  # from the shipped metrics JSON
    loaded: LoadedModel = field(repr=False, compare=False)


@dataclass(frozen=True)
class SessionInfo:
    profile: str
    device: str
    models: tuple[ModelInfo, ...]
    messages: tuple[str, ...]


@dataclass(frozen=True)
class _Config:
    profile: str
    device: str
    models: tuple[str, ...] | None
    weights: tuple[tuple[str, str], ...]
    allow_download: bool = False


class Engine:
    def __init__(self, profile: str = "cifar10", device: str = "cpu", *, models: Iterable[str] | None = None,
                 weights: Mapping[str, str] | None = None, on_result: ResultCallback | None = None,
                 on_event: Callable[[EngineEvent], None] | None = None, capture_default_layers: bool = True,
                 top_k: int = 5, threads: int | None = None) -> None:
        self.on_result = on_result or (lambda result, metrics: None)
        self.on_event = on_event or (lambda event: None)
        self.capture_default_layers = capture_default_layers
        self.top_k = top_k
        self.threads = threads  # torch's CPU threads; None: engine_threads()
        self._config: _Config | None = _Config(profile, device, tuple(models) if models else None,
                                               tuple(sorted((weights or {}).items())))
        self._cond = threading.Condition()
        self._pending: Frame | None = None
        self._pending_continuous = False
        self._pending_replay = False
        self._stop = threading.Event()
        self._paused = False
        self._steps = 0
        self._feeder: threading.Thread | None = None  # the current one
        self._feeders: list[threading.Thread] = []  # every one not known to have ended
        self._feed_stop: threading.Event | None = None
        self._source: Source | None = None
        self._thread = threading.Thread(target=self._run, name="engine worker", daemon=True)
        self.session: InferenceSession | None = None
        self.info: SessionInfo | None = None
        self.metrics: MetricsTracker | None = None
        self.dropped = 0
        self.processed = 0
        self.last: tuple[FrameResult, MetricsSnapshot] | None = None
        self._captures: dict[str, tuple[str, ...]] = {}
        self._busy = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Engine:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the source and the worker; True when every thread ended within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._stop_feeder()
        with self._cond:
            self._cond.notify_all()
        threads = [*self._feeders, self._thread]
        for thread in threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until the source has ended and the last frame is processed (tests, CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                busy = self._pending is not None or self._busy or self._config is not None
            if not busy and (self._feeder is None or not self._feeder.is_alive()):
                return True
            time.sleep(0.005)
        return False

    # -- control (any thread) ------------------------------------------------------------------

    def configure(self, profile: str | None = None, device: str | None = None, *,
                  models: Iterable[str] | None = None, weights: Mapping[str, str] | None = None,
                  allow_download: bool = False) -> None:
        """Rebuild the session (other profile, device or weights) on the worker thread.
        ``allow_download``: fetch torchvision's ImageNet weights that are not cached yet."""
        with self._cond:
            base = self._config or self._current_config()
            self._config = _Config(profile or base.profile, device or base.device,
                                   tuple(models) if models is not None else base.models,
                                   tuple(sorted(weights.items())) if weights is not None else base.weights,
                                   allow_download)
            self._cond.notify_all()

    def _current_config(self) -> _Config:
        info = self.info
        return _Config(info.profile if info else "cifar10", info.device if info else "cpu", None, ())

    def set_capture(self, captures: Mapping[str, Iterable[str]]) -> None:
        """Which layers' activations to return, per model (replaces that model's previous choice)."""
        request = {name: tuple(layers) for name, layers in captures.items()}
        self._captures.update(request)
        session = self.session
        if session is not None:
            try:
                session.set_capture({n: ls for n, ls in request.items() if n in session.names})
            except KeyError as e:
                self._emit("error", str(e.args[0]))

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused, self._steps = False, 0
            self._cond.notify_all()

    def step(self) -> None:
        """While paused, let exactly one more frame through."""
        with self._cond:
            self._steps += 1
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def submit(self, image: np.ndarray, source: str = "image", label: int | None = None,
               frame_id: int | None = None) -> None:
        """Put one frame in the slot now (a pasted image); a frame still waiting there is dropped."""
        frame_id = self.processed + self.dropped if frame_id is None else frame_id
        image = np.ascontiguousarray(image)
        image.flags.writeable = False
        self._offer(Frame(frame_id, image, source, label), wait=False, continuous=False)

    def rerun_last(self) -> bool:
        """Run the last frame again (after a layer change while paused) without counting it in the
        statistics; False when there is no frame to rerun."""
        last = self.last
        if last is None or last[0].frame is None:
            return False
        result = last[0]
        self._offer(Frame(result.frame_id, result.frame, result.source, result.label), wait=False,
                    continuous=False, replay=True)
        return True

    def set_source(self, target: Source | str | os.PathLike | list, *, realtime: bool = True,
                   interval: float = 0.0, capture_factory=None) -> None:
        """Start feeding frames from ``target``; an error opening it becomes an ``error`` event.

        Returns at once: the source is opened on the feeder thread. ``realtime``: a video plays at
        its own frame rate (newest frame wins) rather than as fast as the networks go.
        ``interval``: seconds between still frames (a slideshow of a folder).
        """
        self._stop_feeder()
        with self._cond:
            self._pending = None  # a frame of the old source is not a dropped frame of the new one
        stop = threading.Event()
        self._feed_stop = stop
        feeder = threading.Thread(target=self._feed, args=(target, stop, realtime, interval, capture_factory),
                                  name="engine feeder", daemon=True)
        self._feeders.append(feeder)
        self._feeder = feeder
        feeder.start()

    def clear_source(self) -> None:
        """Stop feeding frames (returns at once)."""
        self._stop_feeder()

    # -- feeder thread -------------------------------------------------------------------------

    def _stop_feeder(self) -> None:
        """Tell the current feeder to finish; it closes its own source when its read returns.

        A file or video capture is never released from another thread while a read may be under
        way inside OpenCV (that hangs or crashes the process). A live source is closed from here:
        its reading happens on its own thread, which ``close`` stops.
        """
        if self._feed_stop is not None:
            self._feed_stop.set()
        source = self._source
        if source is not None and source.live:
            source.close()
        with self._cond:
            self._cond.notify_all()
        self._feeders = [t for t in self._feeders if t.is_alive()]

    def _feed(self, target, stop: threading.Event, realtime: bool, interval: float, capture_factory) -> None:
        class_names = self.info.models[0].class_names if self.info and self.info.models else ()
        try:
            source = target if isinstance(target, Source) else open_source(
                target, class_names, capture_factory=capture_factory)
        except InputError as e:
            self._emit("error", str(e))
            return
        if stop.is_set():
            source.close()
            return
        self._source = source
        self._emit("source", source.name)
        session_classes = self.info.models[0].class_names if self.info and self.info.models else ()
        keep_labels = source.class_names is None or tuple(source.class_names) == tuple(session_classes)
        live = source.live or (realtime and source.fps is not None)
        continuous = source.live or source.fps is not None
        period = 1.0 / source.fps if realtime and source.fps else interval
        next_due = time.monotonic()
        count = 0
        try:
            for frame in source:
                if stop.is_set() or self._stop.is_set():
                    return
                if not self._wait_turn(stop):
                    return
                if period > 0:
                    delay = next_due - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                    next_due = max(next_due + period, time.monotonic() - period)
                if frame.label is not None and not keep_labels:  # labels of another class list
                    frame = Frame(frame.frame_id, frame.image, frame.source, None, frame.error)
                self._offer(frame, wait=not live, continuous=continuous, stop=stop)
                count += 1
            if not stop.is_set():
                self._emit("source_ended", f"{source.name}: end ({count} frames)")
        finally:
            if self._source is source:
                self._source = None
            source.close()

    def _wait_turn(self, stop: threading.Event) -> bool:
        """While paused, wait for resume or a step; False when stopping."""
        with self._cond:
            while self._paused and self._steps == 0:
                if stop.is_set() or self._stop.is_set():
                    return False
                self._cond.wait(0.1)
            if self._paused:
                self._steps -= 1
        return not (stop.is_set() or self._stop.is_set())

    def _offer(self, frame: Frame, *, wait: bool, continuous: bool, stop: threading.Event | None = None,
               replay: bool = False) -> None:
        with self._cond:
            if wait:
                while self._pending is not None and not self._stop.is_set() and not (stop and stop.is_set()):
                    self._cond.wait(0.1)
            if stop is not None and stop.is_set():
                return  # a feeder told to stop hands over nothing more
            if self._pending is not None and not self._pending_replay:
                self.dropped += 1
            self._pending, self._pending_continuous, self._pending_replay = frame, continuous, replay
            self._cond.notify_all()

    # -- worker thread -------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(self.threads or engine_threads())
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set() and self._config is None and (
                        self._pending is None or self.session is None):
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
                config, self._config = self._config, None
                frame, continuous, replay = ((self._pending, self._pending_continuous, self._pending_replay)
                                             if config is None else (None, False, False))
                if frame is not None:
                    self._pending = None
                self._busy = True
                self._cond.notify_all()
            try:
                if config is not None:
                    self._build(config)
                elif frame is not None:
                    self._process(frame, continuous, replay)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _build(self, config: _Config) -> None:
        device = resolve_device(config.device)
        if config.device not in ("cpu", "auto") and device.type == "cpu":
            self._emit("error", f"{config.device} is not available here: running on the CPU")
        try:
            if config.allow_download:
                self._emit("info", "downloading the ImageNet weights that are not cached yet ...")
            session = InferenceSession(config.profile, str(device), config.models, dict(config.weights),
                                       allow_download=config.allow_download, top_k=self.top_k)
        except (RegistryError, ValueError, RuntimeError) as e:
            self._emit("error", f"cannot load the networks: {e}")
            return
        captures = {}
        for name in session.names:
            wanted = self._captures.get(name)
            known = {layer.name for layer in session.layers(name)}
            if wanted is not None and all(layer in known for layer in wanted):
                captures[name] = wanted
            elif self.capture_default_layers:
                captures[name] = (session.spec(name).default_layer,)
        session.set_capture(captures)
        self._captures.update(captures)
        session.warm_up()
        self.session = session
        self.metrics = MetricsTracker(session.names, session.spec(session.names[0]).num_classes)
        self.info = SessionInfo(config.profile, str(device), tuple(self._model_info(session, n) for n in session.names),
                                tuple(session.messages))
        for message in session.messages:
            self._emit("error", message)
        self.on_event(EngineEvent("session", f"{len(session.names)} networks on {device}", self.info))

    @staticmethod
    def _model_info(session: InferenceSession, name: str) -> ModelInfo:
        spec, loaded = session.spec(name), session.loaded(name)
        top1 = (loaded.metrics or {}).get("test_top1")
        return ModelInfo(name, spec.title, loaded.status, loaded.source, session.layers(name), spec.default_layer,
                         spec.has_class_map, spec.class_names, top1, loaded)

    def _process(self, frame: Frame, continuous: bool, replay: bool = False) -> None:
        session, metrics = self.session, self.metrics
        assert session is not None and metrics is not None
        if frame.image is None:
            result = FrameResult(frame.frame_id, frame.source, frame.label, None, {}, frame.error or "unreadable frame")
            self._emit("error", result.error or "")
        else:
            try:
                result = session.run(frame.image, frame.frame_id, frame.source, frame.label)
            except torch.cuda.OutOfMemoryError:
                self._emit("error", "the GPU ran out of memory: switching to the CPU")
                self.configure(device="cpu")
                return
            except RuntimeError as e:  # e.g. an input a network cannot take
                line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                result = FrameResult(frame.frame_id, frame.source, frame.label, frame.image, {},
                                     f"{frame.source}: {line}")
                self._emit("error", result.error or "")
        if not replay:
            metrics.update(result, continuous=continuous)
            self.processed += 1
        snapshot = metrics.snapshot(self.dropped)
        self.last = (result, snapshot)
        self.on_result(result, snapshot)

    def _emit(self, kind: str, message: str) -> None:
        self.on_event(EngineEvent(kind, message))


def top_line(result: ModelResult) -> str:
    """``cat 83.1%``: the best answer of one network, for logs and status lines."""
    return f"{result.top_labels[0]} {100 * float(result.top_probs[0]):.1f}%"
