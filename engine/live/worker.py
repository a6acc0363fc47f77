"""The background engine: one long-lived worker thread, a latest-frame-wins slot, live metrics.

    engine = Engine(on_result=show, on_event=log)   # callbacks run on the engine's threads
    engine.start()                                    # loads the networks in the background
    engine.set_source("clip.mp4")                     # a path, camera index, URL or Source
    engine.pause(); engine.step(); engine.resume()
    engine.load_weights("vgg16", "mine.pth")          # refused in one Error event if it does not fit
    engine.stop()                                     # returns within a second

Events (:mod:`engine.live.events`) are typed values: ``SessionReady`` with a ``ModelCard`` per network,
``SourceStarted``, ``SourceEnded``, ``Notice``, ``Error(code, text)``, ``JobProgress``.

Two threads: a *feeder* pulls frames from the source and puts them into a one-frame slot; the
*worker* takes the frame from the slot, runs every network on it and calls ``on_result`` with an
immutable :class:`~engine.runtime.session.FrameResult` and :class:`~engine.live.metrics.MetricsSnapshot`. A
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

import numpy as np
import torch

from engine.common.errors import error_line
from engine.jobs import Job, JobContext
from engine.live.events import (
    EngineEvent,
    Error,
    ErrorCode,
    ModelCard,
    ModelUpdated,
    Notice,
    RunRequest,
    SessionReady,
)
from engine.live.feeder import Feeders
from engine.live.frames import run_frame
from engine.live.job_runner import JobRunner
from engine.live.loading import EngineConfig, build_session, carried_probes, kept_networks
from engine.live.metrics import MetricsSnapshot, MetricsTracker
from engine.live.slot import FrameSlot
from engine.live.sources import Frame, Source
from engine.models.complexity import Complexity, complexity
from engine.models.registry import RegistryError
from engine.models.weights import hub_download_bytes, published_accuracy
from engine.probes import ProbeRequest
from engine.probes.perturb import Perturbation
from engine.runtime.device import engine_ort_threads, engine_threads
from engine.runtime.session import FrameResult, InferenceSession, ModelResult, activation_probes

ResultCallback = Callable[[FrameResult, MetricsSnapshot], None]


class Engine:
    def __init__(self, profile: str = "cifar10", device: str = "cpu", *, models: Iterable[str] | None = None,
                 weights: Mapping[str, str] | None = None, on_result: ResultCallback | None = None,
                 on_event: Callable[[EngineEvent], None] | None = None, capture_default_layers: bool = True,
                 top_k: int = 5, threads: int | None = None, precision: str = "fp32",
                 backend: str = "torch") -> None:
        self.on_result = on_result or (lambda result, metrics: None)
        self.on_event: Callable[[EngineEvent], None] = on_event or (lambda event: None)
        self.capture_default_layers = capture_default_layers
        self.top_k = top_k
        self.threads = threads  # torch's CPU threads; None: engine_threads()
        self._config: EngineConfig | None = EngineConfig(profile, device, tuple(models) if models else None,
                                                         tuple(sorted((weights or {}).items())), precision, backend)
        self._stop = threading.Event()
        self._slot = FrameSlot(self._stop)
        self._cond = self._slot.cond
        self._feeders = Feeders(self._slot, self.emit, self._source_opened, self._stop)
        self._jobs = JobRunner(self.emit, self.job_context, self.configure, self._stop.is_set)
        self._thread = threading.Thread(target=self._run, name="engine worker", daemon=True)
        self.session: InferenceSession | None = None
        self.info: SessionReady | None = None
        self._active: EngineConfig | None = None  # the configuration of the running session
        self.metrics: MetricsTracker | None = None
        self.processed = 0
        self.last: tuple[FrameResult, MetricsSnapshot] | None = None
        self.request = RunRequest()  # replaced, never changed: any thread may read it
        self._request_lock = threading.Lock()
        self._busy = False
        self._building = False  # the worker is inside _build (loading networks)
        self._building_config: EngineConfig | None = None  # the configuration being built
        self._perturbation: Perturbation | None = None  # done to every frame before the networks (set_perturbation)
        self._reset_stats = False  # statistics start over at the next frame (Reset)
        self._epoch = 0  # of the newest source request: frames of older ones are dropped, never shown
        self._stats_epoch = 0  # the source request the statistics belong to
        self._source_name = ""  # what the statistics of the newest source are called
        self._source_classes: tuple[str, ...] | None = None  # the class list of the source's labels
        self._scene_label: int | None = None  # "this is...": the true class a person named, for unlabelled frames

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Engine:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the source, the job and the worker; True when every thread ended within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.cancel_job()
        self.clear_source()
        threads = [*self._feeders.joinable(), self._thread, *([self._jobs.thread] if self._jobs.thread else [])]
        for thread in threads:
            if thread.is_alive() and thread is not threading.current_thread():
                # Building networks cannot be interrupted and may take seconds: not worth waiting for.
                wait = min(0.1, timeout) if thread is self._thread and self._building else timeout
                thread.join(max(0.0, min(wait, deadline - time.monotonic())))
        return not any(t.is_alive() for t in threads)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until the source has ended and the last frame is processed (tests, CLI), or until
        nothing can run: no networks are loaded (their start failed, an ``Error`` event) and no
        other configuration is waiting. The frame then waiting stays for a later session."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                busy = self._slot.pending is not None or self._busy or self._config is not None
                stuck = self.session is None and not self._busy and self._config is None
            if stuck or not busy and not self._feeders.active:
                return True
            time.sleep(0.005)
        return False

    # -- control (any thread) ------------------------------------------------------------------

    def configure(self, profile: str | None = None, device: str | None = None, *,
                  models: Iterable[str] | None = None, weights: Mapping[str, str] | None = None,
                  precision: str | None = None, backend: str | None = None,
                  runtimes: Iterable[tuple[str, str, str]] | None = None) -> None:
        """Rebuild the session (other profile, device, weights, precision: fp32, bf16 or auto, see
        :mod:`engine.runtime.precision`, backend: auto or one of :mod:`engine.runtime.backends`, or
        networks' own (network, backend, precision)) on the worker thread. The networks whose own
        settings did not change are kept as they run; a session-wide backend or precision ends every
        network's own."""
        with self._cond:
            base = self.wanted
            new_profile = profile or base.profile
            # a user's checkpoint belongs to one profile's network: another profile starts without it
            kept = base.weights if new_profile == base.profile else ()
            own = tuple(runtimes) if runtimes is not None else () if (precision or backend) or \
                new_profile != base.profile else base.runtimes
            self._config = EngineConfig(new_profile, device or base.device,
                                        tuple(models) if models is not None else base.models,
                                        tuple(sorted(weights.items())) if weights is not None else kept,
                                        precision or base.precision, backend or base.backend, own)
            self._cond.notify_all()

    @property
    def wanted(self) -> EngineConfig:
        """The configuration asked for last: pending, being built, or running."""
        return self._config or self._building_config or self._active or EngineConfig("cifar10", "cpu", None, ())

    def set_runtime(self, model: str, backend: str | None, precision: str | None = None) -> None:
        """Run ``model`` on its own backend and precision (None: the session's again); that network
        alone is rebuilt. A backend or precision it cannot run is one ``Error`` event."""
        with self._cond:
            base = self.wanted
            own = [r for r in base.runtimes if r[0] != model]
            if backend is not None or precision is not None:
                own.append((model, backend or base.backend, precision or base.precision))
        self.configure(runtimes=own)

    def load_weights(self, model: str, path: str | os.PathLike | None) -> None:
        """Run ``model`` on a user's checkpoint (safetensors, or a ``.pth`` in this project's or
        torchvision's names), or with ``None`` on its default weights again. A file that does not
        fit is refused with one ``Error(WEIGHTS)`` event and every network keeps what it had."""
        with self._cond:
            weights = dict(self.wanted.weights)
            if path is None:
                weights.pop(model, None)
            else:
                weights[model] = os.fspath(path)
        self.configure(weights=weights)

    def set_perturbation(self, perturbation: Perturbation | None) -> None:
        """Apply ``perturbation`` to every frame before the networks see it (None or severity 0:
        the clean frame, bit for bit). Each frame then also runs clean, forward passes only, so that
        results carry each network's clean top-1 (``FrameResult.clean_top1``) and a flip shows.
        The frame on screen, if paused, is run again with it."""
        with self._cond:
            self._perturbation = perturbation
        self.rerun_last()

    @property
    def perturbation(self) -> Perturbation | None:
        return self._perturbation

    # -- jobs ----------------------------------------------------------------------------------

    def start_job(self, job: Job) -> bool:
        """Run ``job`` (a study, a download: :class:`~engine.jobs.Job`) on a job thread, never the
        inference thread: ``JobProgress`` events, then one ``JobEnded`` carrying the job and its
        typed result (and an ``Error`` when it failed). False when a job is already running."""
        return self._jobs.start(job)

    def cancel_job(self) -> None:
        self._jobs.cancel()

    def job_context(self) -> JobContext:
        """What a job started now is given: the networks asked for last, and a way to quiet the source."""
        config = self.wanted
        return JobContext(config.profile, config.device, config.models, config.weights, self._slot.quiet)

    # -- what runs on each frame ---------------------------------------------------------------

    def set_capture(self, captures: Mapping[str, Iterable[str]]) -> int:
        """Which layers' activations to return, per model: :meth:`set_probes` with one
        ``Activations`` probe each."""
        return self.set_probes({name: activation_probes(layers) for name, layers in captures.items()})

    def set_probes(self, probes: Mapping[str, Iterable[ProbeRequest]]) -> int:
        """What to compute besides the predictions, per model (replaces that model's previous
        probes). Returns the generation of the new :class:`RunRequest`: results from earlier
        generations may still arrive and answer the old request. A layer a network lacks is an
        ``Error(CAPTURE)`` event."""
        changes = {name: tuple(wanted) for name, wanted in probes.items()}
        with self._request_lock:
            self.request = request = self.request.with_probes(changes)
        session = self.session
        if session is not None:
            try:
                session.set_probes({n: ps for n, ps in changes.items() if n in session.names}, request.generation)
            except KeyError as e:
                self.emit(Error(ErrorCode.CAPTURE, str(e.args[0])))
        return request.generation

    # -- playing -------------------------------------------------------------------------------

    def pause(self) -> None:
        self._slot.pause()

    def resume(self) -> None:
        self._slot.resume()

    def step(self) -> None:
        """While paused, let exactly one more frame through (after stepping back: the next frame
        already seen, until the newest one)."""
        self._slot.step()

    def step_back(self) -> bool:
        """Pause and show the frame before the one on screen again (from the recent frames kept);
        False when there is none. Shown again, not counted again."""
        return self._slot.step_back()

    def show_kept(self, frame_id: int) -> bool:
        """Pause and show a recent frame of this source again (not counted again); False when it
        is no longer kept."""
        return self._slot.show_kept(frame_id)

    @property
    def paused(self) -> bool:
        return self._slot.paused

    @property
    def held(self) -> bool:
        """Paused with nothing left to run: the source waits for play or a step, no frame is in
        the slot, and the networks are idle."""
        with self._cond:
            return self._slot.paused and self._slot.waiting > 0 and self._slot.pending is None and not self._busy

    @property
    def dropped(self) -> int:
        """Frames of a live source replaced in the slot before the networks took them."""
        return self._slot.dropped

    def submit(self, image: np.ndarray, source: str = "image", label: int | None = None,
               frame_id: int | None = None) -> None:
        """Put one frame in the slot now (a pasted image); a frame still waiting there is dropped."""
        image = np.ascontiguousarray(image)
        image.flags.writeable = False
        with self._cond:  # an image of its own is a source of its own: its statistics start afresh
            self._epoch += 1
            self._source_name, self._source_classes = source, None
            self._slot.history.forget()
            self._slot.offer(Frame(0 if frame_id is None else frame_id, image, source, label, epoch=self._epoch),
                             wait=False, continuous=False)

    def cell_examples(self, model: str, true_class: int, predicted: int) -> tuple[tuple[int, str], ...]:
        """The latest frames (frame id, source name) whose label is ``true_class`` and whose
        top-1 from ``model`` was ``predicted``, since the source opened."""
        metrics = self.metrics
        return metrics.examples(model, true_class, predicted) if metrics is not None else ()

    def set_label(self, label: int | None) -> None:
        """Name the true class of what the source shows from the next frame on (a banana held to
        the camera), or stop (None). It labels only frames that have no label of their own; the
        running accuracy and the confusion matrix then count them."""
        with self._cond:
            self._scene_label = label

    @property
    def scene_label(self) -> int | None:
        return self._scene_label

    def reset_stats(self) -> None:
        """Start the statistics over (running accuracy, histories, frame rates, latencies) from the
        next frame; a new source does this by itself."""
        with self._cond:
            self._reset_stats = True

    def rerun_last(self) -> bool:
        """Run the last frame again (after a layer change while paused) without counting it in the
        statistics; False when there is no frame to rerun."""
        last = self.last
        if last is None or last[0].frame is None:
            return False
        result = last[0]
        clean = result.original if result.original is not None else result.frame
        self._slot.offer(Frame(result.frame_id, clean, result.source, result.label), wait=False,
                         continuous=False, replay=True)
        return True

    def set_source(self, target: Source | str | os.PathLike | list, *, realtime: bool = True,
                   interval: float = 0.0, capture_factory=None) -> None:
        """Start feeding frames from ``target``; an error opening it becomes an ``error`` event.

        Returns at once: the source is opened on the feeder thread. ``realtime``: a video plays at
        its own frame rate (newest frame wins) rather than as fast as the networks go.
        ``interval``: seconds between still frames (a slideshow of a folder).
        """
        self.clear_source()
        with self._cond:
            self._slot.pending = None  # a frame of the old source is not a dropped frame of the new one
            self._epoch += 1  # nor is one still being run: its result is dropped, its statistics too
            epoch = self._epoch
            self._slot.history.forget()
        class_names = self.info.models[0].class_names if self.info and self.info.models else ()
        self._feeders.start(target, epoch, class_names, realtime=realtime, interval=interval,
                            capture_factory=capture_factory)

    def clear_source(self) -> None:
        """Stop feeding frames (returns at once)."""
        self._feeders.stop()
        with self._cond:
            self._cond.notify_all()

    def _source_opened(self, source: Source, epoch: int) -> None:
        with self._cond:
            if epoch == self._epoch:  # still the newest request
                self._source_name = source.name
                self._source_classes = tuple(source.class_names) if source.class_names is not None else None

    def emit(self, event: EngineEvent) -> None:
        self.on_event(event)

    # -- worker thread -------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(self.threads or engine_threads())
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set() and self._config is None and (
                        self._slot.pending is None or self.session is None):
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
                config, self._config = self._config, None
                self._building_config = config
                frame, continuous, replay = self._slot.take() if config is None else (None, False, False)
                self._busy = True
                self._cond.notify_all()
            try:
                if config is not None:
                    self._building = True
                    self._build(config)
                elif frame is not None:
                    self._process(frame, continuous, replay)
            except Exception as e:  # noqa: BLE001 - the worker outlives any one failure
                code = ErrorCode.SESSION if config is not None else ErrorCode.FRAME
                self.emit(Error(code, f"{'cannot load the networks' if config is not None else 'frame failed'}: "
                                      f"{error_line(e, typed=True)}"))
            finally:
                self._building = False
                with self._cond:
                    self._building_config = None
                    self._busy = False
                    self._cond.notify_all()

    def _build(self, config: EngineConfig) -> None:
        """A new session for ``config``; on any failure the running session (if any) stays as it was
        and the failure is one ``Error`` event."""
        keep = kept_networks(self.session, self._active, config) if config.models == getattr(
            self._active, "models", None) else {}
        built = build_session(config, running=self.session is not None, top_k=self.top_k,
                              ort_threads=self.threads or engine_ort_threads(), emit=self.emit, keep=keep)
        if built is None:
            return
        session, config, device = built
        try:
            self._start_session(session, config, device)
        except Exception as e:  # noqa: BLE001 - out of memory in the warm-up, ...: keep what runs
            del session, built
            if device.type == "cuda":
                torch.cuda.empty_cache()
            keep = "; the networks keep running as they were" if self.session is not None else ""
            self.emit(Error(ErrorCode.SESSION, f"cannot start the networks: {error_line(e, typed=True)}{keep}"))

    def _start_session(self, session: InferenceSession, config: EngineConfig, device: torch.device) -> None:
        with self._request_lock:
            probes = carried_probes(self.request, session, self.capture_default_layers)
            self.request = request = self.request.with_probes(probes)
        session.set_probes(probes, request.generation)
        session.warm_up()
        info = SessionReady(config.profile, str(device), tuple(model_card(session, n) for n in session.names),
                            tuple(session.messages), config.precision, config.backend)
        self.session = session
        self._active = config
        self.metrics = MetricsTracker(session.names, session.spec(session.names[0]).num_classes)
        self.info = info
        for message in session.messages:
            self.emit(Notice(message))
        self.on_event(self.info)

    def _process(self, frame: Frame, continuous: bool, replay: bool = False) -> None:
        session, metrics = self.session, self.metrics
        assert session is not None and metrics is not None
        if not replay and frame.epoch != self._epoch:
            return  # taken just before another source was chosen: neither shown nor counted
        scene = self._scene_label
        named = frame.label is None and scene is not None and not replay  # a person named the class
        if named:
            frame = Frame(frame.frame_id, frame.image, frame.source, scene, frame.error, frame.epoch)
        classes = None if named else self._source_classes
        if frame.label is not None and classes is not None and \
                classes != tuple(session.spec(session.names[0]).class_names):
            frame = Frame(frame.frame_id, frame.image, frame.source, None, frame.error, frame.epoch)  # other classes
        try:
            result = run_frame(session, frame, self._perturbation)
        except torch.cuda.OutOfMemoryError:
            self.emit(Error(ErrorCode.DEVICE, "the GPU ran out of memory: switching to the CPU"))
            self.configure(device="cpu")
            return
        if result.error:
            self.emit(Error(ErrorCode.FRAME, result.error))
        else:
            self._cards_rechecked(session)
        if not replay and frame.epoch != self._epoch:
            return  # another source was chosen while this frame ran
        if not replay:
            if self._reset_stats or frame.epoch != self._stats_epoch:
                with self._cond:
                    self._reset_stats, self._stats_epoch = False, frame.epoch
                metrics.reset(self._source_name)
            metrics.update(result, continuous=continuous)
            if frame.image is not None:
                with self._cond:
                    self._slot.history.remember(frame)
            self.processed += 1
        snapshot = metrics.snapshot(self._slot.dropped)
        self.last = (result, snapshot)
        self.on_result(result, snapshot)

    def _cards_rechecked(self, session: InferenceSession) -> None:
        """Tell of each network whose torch threads or backend live frames chose (a card with the new note)."""
        for name, note in session.take_rechecked():
            card = model_card(session, name)
            if self.info is not None:
                self.info = self.info.with_card(card)
            self.emit(ModelUpdated(card, f"{card.display} runs on {note}"))


def model_card(session: InferenceSession, name: str) -> ModelCard:
    spec, loaded = session.spec(name), session.loaded(name)
    top1 = _file_top1(loaded.metrics, name)
    return ModelCard(name, spec.title, spec.family, spec.year, spec.paper, loaded.status, loaded.source,
                     loaded.downloadable, session.layers(name), spec.default_layer, spec.has_class_map,
                     spec.class_names, top1, _complexity(name, session.profile),
                     hub_download_bytes(spec) if loaded.downloadable else None,
                     *(published_accuracy(spec) or (None, None)), spec.label, *session.precision_of(name),
                     spec.gradcam_layer, *session.backend_of(name), *session.threads_of(name),
                     session.decision(name))


def _file_top1(metrics, name: str) -> float | None:
    """The test top-1 a weights file's metrics JSON states, when it is a fraction and names this
    network (a user's file may be anything)."""
    if not isinstance(metrics, dict) or metrics.get("model", name) != name:
        return None
    top1 = metrics.get("test_top1")
    return float(top1) if isinstance(top1, (int, float)) and not isinstance(top1, bool) and 0 <= top1 <= 1 else None


def _complexity(name: str, profile: str) -> Complexity | None:
    # Counting builds the network on the meta device (up to a second for VGG at 224x224, cached
    # afterwards): on the engine's thread, never on the window's.
    try:
        return complexity(name, profile)
    except (RegistryError, RuntimeError, ValueError):
        return None


def top_line(result: ModelResult) -> str:
    """``cat 83.1%``: the best answer of one network, for logs and status lines."""
    return f"{result.top_labels[0]} {100 * float(result.top_probs[0]):.1f}%"
