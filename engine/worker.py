"""The background engine: one long-lived worker thread, a latest-frame-wins slot, live metrics.

    engine = Engine(on_result=show, on_event=log)   # callbacks run on the engine's threads
    engine.start()                                    # loads the networks in the background
    engine.set_source("clip.mp4")                     # a path, camera index, URL or Source
    engine.pause(); engine.step(); engine.resume()
    engine.load_weights("vgg16", "mine.pth")          # refused in one Error event if it does not fit
    engine.stop()                                     # returns within a second

Events (:mod:`engine.events`) are typed values: ``SessionReady`` with a ``ModelCard`` per network,
``SourceStarted``, ``SourceEnded``, ``Notice``, ``Error(code, text)``, ``JobProgress``.

Two threads: a *feeder* pulls frames from the source and puts them into a one-frame slot; the
*worker* takes the frame from the slot, runs every network on it and calls ``on_result`` with an
immutable :class:`~engine.inference.FrameResult` and :class:`~engine.metrics.MetricsSnapshot`. A
live source (camera, stream, a video played in real time) overwrites a frame the worker has not
taken yet: the newest frame wins and the replaced one is counted as dropped. A still source
(files, a folder, a data set, a video played as fast as possible) waits for the slot instead, so
nothing is dropped. No queue grows without bound.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch

from engine.complexity import Complexity, complexity
from engine.device import engine_ort_threads, engine_threads, resolve_device
from engine.events import (
    EngineEvent,
    Error,
    ErrorCode,
    JobEnded,
    JobOutcome,
    ModelCard,
    ModelUpdated,
    Notice,
    RunRequest,
    SessionReady,
    SourceEnded,
    SourceStarted,
)
from engine.imageio import InputError, display_name
from engine.inference import FrameResult, InferenceSession, ModelResult, activation_probes
from engine.jobs import Cancelled, JobProgress, JobState
from engine.jobs.download import DownloadError, download_cifar10, download_weights
from engine.metrics import MetricsSnapshot, MetricsTracker
from engine.models.backend import BackendError
from engine.models.registry import RegistryError, list_specs
from engine.perturb import Perturbation, PerturbError
from engine.perturb import apply as perturb
from engine.precision import PrecisionError
from engine.probes import ProbeRequest
from engine.sources import Frame, Source, describe, open_source
from engine.weights import WeightsError, hub_download_bytes, published_accuracy

ResultCallback = Callable[[FrameResult, MetricsSnapshot], None]
HISTORY_BYTES = 64 * 2**20  # recent frames kept for step_back: 2 s of VGA video, 20,000 CIFAR pictures


@dataclass(frozen=True)
class _Config:
    profile: str
    device: str
    models: tuple[str, ...] | None
    weights: tuple[tuple[str, str], ...]
    precision: str = "fp32"
    backend: str = "torch"


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
        self._config: _Config | None = _Config(profile, device, tuple(models) if models else None,
                                               tuple(sorted((weights or {}).items())), precision, backend)
        self._cond = threading.Condition()
        self._pending: Frame | None = None
        self._pending_continuous = False
        self._pending_replay = False
        self._stop = threading.Event()
        self._paused = False
        self._steps = 0
        self._step_granted = False  # a feeder's next frame may pass a pause: it was let through by a step
        self._feeder: threading.Thread | None = None  # the current one
        self._feeders: list[threading.Thread] = []  # every one not known to have ended
        self._opening: set[threading.Thread] = set()  # feeders still inside open_source
        self._feed_stop: threading.Event | None = None
        self._source: Source | None = None
        self._thread = threading.Thread(target=self._run, name="engine worker", daemon=True)
        self.session: InferenceSession | None = None
        self.info: SessionReady | None = None
        self._active: _Config | None = None  # the configuration of the running session
        self.metrics: MetricsTracker | None = None
        self.dropped = 0
        self.processed = 0
        self.last: tuple[FrameResult, MetricsSnapshot] | None = None
        self.request = RunRequest()  # replaced, never changed: any thread may read it
        self._request_lock = threading.Lock()
        self._job: JobState | None = None
        self._job_thread: threading.Thread | None = None
        self._busy = False
        self._building = False  # the worker is inside _build (loading networks)
        self._building_config: _Config | None = None  # the configuration being built
        self._perturbation: Perturbation | None = None  # done to every frame before the networks (set_perturbation)
        self._reset_stats = False  # statistics start over at the next frame (Reset)
        self._epoch = 0  # of the newest source request: frames of older ones are dropped, never shown
        self._stats_epoch = 0  # the source request the statistics belong to
        self._source_name = ""  # what the statistics of the newest source are called
        self._source_classes: tuple[str, ...] | None = None  # the class list of the source's labels
        self._scene_label: int | None = None  # "this is...": the true class a person named, for unlabelled frames
        self._history: deque[Frame] = deque()  # the current source's recent frames, for step_back
        self._history_bytes = 0
        self._cursor: int | None = None  # the history position on screen after step_back; None: newest

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
        self.cancel_job()
        self._stop_feeder()
        with self._cond:
            self._cond.notify_all()
        # A feeder still opening its source (a FIFO, a dead mount, a data set being decoded) holds
        # nothing and is given up: it closes what it opened as soon as its open returns.
        feeders = [t for t in self._feeders if t not in self._opening]
        threads = [*feeders, self._thread, *([self._job_thread] if self._job_thread else [])]
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
                busy = self._pending is not None or self._busy or self._config is not None
                stuck = self.session is None and not self._busy and self._config is None
            if stuck or not busy and (self._feeder is None or not self._feeder.is_alive()):
                return True
            time.sleep(0.005)
        return False

    # -- control (any thread) ------------------------------------------------------------------

    def configure(self, profile: str | None = None, device: str | None = None, *,
                  models: Iterable[str] | None = None, weights: Mapping[str, str] | None = None,
                  precision: str | None = None, backend: str | None = None) -> None:
        """Rebuild the session (other profile, device, weights, precision: fp32, bf16 or auto, see
        :mod:`engine.precision`, or backend: torch, onnxruntime, compile or auto, see
        :mod:`engine.models.backend`) on the worker thread."""
        with self._cond:
            base = self._wanted()
            new_profile = profile or base.profile
            # a user's checkpoint belongs to one profile's network: another profile starts without it
            kept = base.weights if new_profile == base.profile else ()
            self._config = _Config(new_profile, device or base.device,
                                   tuple(models) if models is not None else base.models,
                                   tuple(sorted(weights.items())) if weights is not None else kept,
                                   precision or base.precision, backend or base.backend)
            self._cond.notify_all()

    def _wanted(self) -> _Config:
        """The configuration asked for last: pending, being built, or running."""
        return self._config or self._building_config or self._active or _Config("cifar10", "cpu", None, ())

    def load_weights(self, model: str, path: str | os.PathLike | None) -> None:
        """Run ``model`` on a user's checkpoint (safetensors, or a ``.pth`` in this project's or
        torchvision's names), or with ``None`` on its default weights again. A file that does not
        fit is refused with an ``Error(WEIGHTS)`` event and every network keeps the weights it had."""
        with self._cond:
            base = self._wanted()
        weights = {name: p for name, p in base.weights if name != model}
        if path is not None:
            weights[model] = os.fspath(path)
        self.configure(weights=weights)

    def download_weights(self, models: Iterable[str] | None = None) -> bool:
        """Download the current profile's missing torchvision weights (of ``models``, default all)
        on a job thread (never the inference thread), reporting ``JobProgress`` events and one
        ``JobEnded``; then load them. False when a job is already running. :meth:`cancel_job`
        stops it and leaves no partial file."""
        profile = (self._wanted()).profile
        wanted = set(models) if models is not None else None
        return self._start_job(lambda job: self._download(profile, wanted, job))

    def download_cifar10(self) -> bool:
        """Download the official CIFAR-10 archive (170 MB, md5 checked) into the cache's data folder
        as a job, unless it is there; its ``JobEnded`` carries the path in ``result``. False when a
        job is already running."""
        return self._start_job(self._download_cifar10)

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

    def robustness(self, data: str, limit: int = 1000, precision: str = "fp32") -> bool:
        """The robustness bench (:mod:`engine.robustness`) of the current cifar10 line-up on the test
        split of ``data`` (spread over ``limit`` images) as a job: ``JobProgress`` in images, then
        ``JobEnded("robustness", ..., result=RobustnessResult)``. The source is paused meanwhile and
        plays on afterwards. False when a job is already running."""
        config = self._wanted()
        return self._start_job(lambda job: self._robustness(config, data, limit, precision, job))

    def _robustness(self, config: _Config, data: str, limit: int, precision: str, job: JobState) -> None:
        from engine.data import DataError, load_cifar10
        from engine.evaluation import sample_indices
        from engine.models.registry import comparison_specs, get_spec
        from engine.robustness import robustness

        was_playing = not self._paused

        def attempt() -> tuple[str, object]:
            if config.profile != "cifar10":
                raise DataError("the robustness bench needs the cifar10 profile (its networks read 32x32 pictures)")
            job.report(JobProgress("robustness", 0, 0, "reading the test set", "images"))
            images, labels = load_cifar10(data, "test")
            idx = sample_indices(len(labels), limit)
            specs = [get_spec(n, config.profile) for n in config.models] if config.models else \
                comparison_specs(config.profile)
            if was_playing:
                self.pause()
            result = robustness(specs, images[idx], labels[idx], precision=precision, job=job)
            return (f"robustness of {len(result.models)} networks on {result.images} images in {result.seconds:.0f} s",
                    result)

        try:
            self._end_job("robustness", attempt, cancelled="robustness bench cancelled",
                          failed="robustness bench failed")
        finally:
            if was_playing and self._paused and not self._stop.is_set():
                self.resume()

    def top_images(self, model: str, layer: str, data: str, limit: int = 2000) -> bool:
        """What each channel of ``layer`` of ``model`` looks for (:mod:`engine.top_images`): the 9
        test images of ``data`` that excite it most, over ``limit`` of them, as a job:
        ``JobProgress`` in images, then ``JobEnded("top-images", ..., result=TopImages)``. The
        network runs on the weights the session uses (a user's file included), as a private copy;
        a result cached for those weights, layer and images comes back at once. False when a job is
        already running."""
        config = self._wanted()
        return self._start_job(lambda job: self._top_images(config, model, layer, data, limit, job))

    def _top_images(self, config: _Config, model: str, layer: str, data: str, limit: int, job: JobState) -> None:
        from engine.models.registry import get_spec
        from engine.top_images import sample_test_set, top_images
        from engine.weights import load_model

        def attempt() -> tuple[str, object]:
            job.report(JobProgress("top-images", 0, 0, "reading the test set", "images"))
            spec = get_spec(model, config.profile)
            loaded = load_model(spec, dict(config.weights).get(model))
            images, labels, ids = sample_test_set(data, limit)
            result = top_images(loaded, layer, images, labels, image_ids=ids, job=job)
            how = "cached" if result.cached else f"{result.images} images in {result.seconds:.0f} s"
            return f"{model} {layer}: top images per channel ({how})", result

        self._end_job("top-images", attempt, cancelled="cancelled; nothing was kept", failed="top images failed")

    def _end_job(self, name: str, attempt: Callable[[], tuple[str, object]], *, cancelled: str, failed: str) -> None:
        """Run a job's ``attempt`` (returning its line and result) and end the job with one
        ``JobEnded``: done, cancelled, or failed (with an ``Error`` too: a job never ends silently)."""
        try:
            text, result = attempt()
        except Cancelled:
            self._emit(JobEnded(name, JobOutcome.CANCELLED, cancelled))
        except Exception as e:  # noqa: BLE001 - DataError, TopImagesError, ...: one line, never a traceback
            line = f"{failed}: {one_line_error(e)}"
            self._emit(JobEnded(name, JobOutcome.FAILED, line))
            self._emit(Error(ErrorCode.SOURCE, line))
        else:
            self._emit(JobEnded(name, JobOutcome.DONE, text, result))

    def analyze(self, max_batch: int = 64, precision: str = "fp32", fresh: bool = False,
                backends: Iterable[str] = ()) -> bool:
        """Measure the current profile's networks for the Analysis (:mod:`engine.analysis`) as a job:
        ``JobProgress`` in steps, then ``JobEnded("analyze", ..., result=Analysis)``. A cached result
        for this machine and set-up ends the job at once, unless ``fresh``. The source is paused for
        the measurement (two jobs on a small CPU would measure each other) and plays on afterwards if
        it was playing. ``backends``: others than torch eager to measure as well (onnxruntime,
        compile). False when a job is already running."""
        config = self._wanted()
        backends = tuple(backends)
        return self._start_job(lambda job: self._analyze(config, max_batch, precision, fresh, job, backends))

    def cached_analysis(self, max_batch: int = 64, precision: str = "fp32", backends: Iterable[str] = ()):
        """The cached Analysis of the current profile and device, or None; reads one small file."""
        from engine.analysis import cache_key, load_cached

        config = self._wanted()
        try:
            return load_cached(cache_key(config.profile, config.device, precision, max_batch, config.models,
                                         tuple(backends)))
        except (RegistryError, ValueError):
            return None

    def _analyze(self, config: _Config, max_batch: int, precision: str, fresh: bool, job: JobState,
                 backends: tuple[str, ...] = ()) -> None:
        from engine.analysis import analyze, cache_key, load_cached, save_cached

        was_playing = not self._paused
        try:
            key = cache_key(config.profile, config.device, precision, max_batch, config.models, backends)
            result = None if fresh else load_cached(key)
            if result is None:
                if was_playing:
                    self.pause()
                result = analyze(config.profile, config.device, max_batch=max_batch, precision=precision,
                                 models=config.models, job=job, backends=backends)
                save_cached(key, result)
        except Cancelled:
            self._emit(JobEnded("analyze", JobOutcome.CANCELLED, "analysis cancelled; nothing was kept"))
        except Exception as e:  # noqa: BLE001 - a job thread must end with an event, never silently
            text = f"analysis failed: {one_line_error(e)}"
            self._emit(JobEnded("analyze", JobOutcome.FAILED, text))
            self._emit(Error(ErrorCode.SESSION, text))
        else:
            how = "cached" if result.cached else f"measured in {result.seconds:.0f} s"
            self._emit(JobEnded("analyze", JobOutcome.DONE, f"analysis of the {config.profile} networks: {how}",
                                result))
        finally:
            if was_playing and self._paused and not self._stop.is_set():
                self.resume()

    def export_report(self, analysis, folder: str | os.PathLike) -> bool:
        """Write an Analysis's figures, data and report.html into ``folder`` as a job (matplotlib
        takes a second or two: never on the window's thread); ``JobEnded("report", ...)`` carries
        the path of report.html. False when a job is already running."""
        def work(job: JobState) -> None:
            from engine.analysis_report import write_report

            try:
                job.report(JobProgress("report", 0, 0, "drawing the figures", "files"))
                paths = write_report(analysis, folder)
            except OSError as e:
                text = f"cannot write the report into {display_name(str(folder))}: {e.strerror or e}"
                if e.strerror is None:  # a ReportError: its message is the whole line
                    text = f"cannot write the report: {e}"
                self._emit(JobEnded("report", JobOutcome.FAILED, text))
                self._emit(Error(ErrorCode.SESSION, text))
            except Exception as e:  # noqa: BLE001 - a job thread must end with an event, never silently
                text = f"report failed: {one_line_error(e)}"
                self._emit(JobEnded("report", JobOutcome.FAILED, text))
                self._emit(Error(ErrorCode.SESSION, text))
            else:
                html = next(p for p in paths if p.name == "report.html")
                self._emit(JobEnded("report", JobOutcome.DONE, f"wrote {len(paths)} files: {display_name(str(html))}",
                                    str(html)))
        return self._start_job(work)

    def _start_job(self, work: Callable[[JobState], None]) -> bool:
        """Run ``work(job)`` on the job thread (one job at a time); False when one is running."""
        with self._cond:
            if self._job_thread is not None and self._job_thread.is_alive():
                return False
            self._job = job = JobState(on_progress=self._emit)
            self._job_thread = threading.Thread(target=work, args=(job,), name="engine job", daemon=True)
            self._job_thread.start()
        return True

    def _download_cifar10(self, job: JobState) -> None:
        try:
            path = download_cifar10(job)
        except Cancelled:
            self._emit(JobEnded("dataset", JobOutcome.CANCELLED, "download cancelled; nothing partial was kept"))
        except DownloadError as e:
            self._emit(JobEnded("dataset", JobOutcome.FAILED, str(e)))
            self._emit(Error(ErrorCode.DOWNLOAD, str(e)))
        except Exception as e:  # noqa: BLE001 - a job thread must end with an event, never silently
            text = f"download failed: {one_line_error(e)}"
            self._emit(JobEnded("dataset", JobOutcome.FAILED, text))
            self._emit(Error(ErrorCode.DOWNLOAD, text))
        else:
            self._emit(JobEnded("dataset", JobOutcome.DONE, f"CIFAR-10 is in {path.parent}", str(path)))

    def cancel_job(self) -> None:
        job = self._job
        if job is not None:
            job.cancel()

    def _download(self, profile: str, wanted: set[str] | None, job: JobState) -> None:
        specs = [s for s in list_specs(profile) if wanted is None or s.name in wanted]
        try:
            done = download_weights(specs, job)
        except Cancelled:
            self._emit(JobEnded("download", JobOutcome.CANCELLED, "download cancelled; nothing partial was kept"))
            return
        except DownloadError as e:
            self._emit(JobEnded("download", JobOutcome.FAILED, str(e)))
            self._emit(Error(ErrorCode.DOWNLOAD, str(e)))
            if not job.partial.get("downloaded"):
                return
            done = job.partial["downloaded"]
        except Exception as e:  # noqa: BLE001 - a job thread must end with an event, never silently
            text = f"download failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            self._emit(JobEnded("download", JobOutcome.FAILED, text))
            self._emit(Error(ErrorCode.DOWNLOAD, text))
            return
        else:
            text = f"downloaded {', '.join(done)}; loading ..." if done else "every download is cached"
            self._emit(JobEnded("download", JobOutcome.DONE, text))
        if self._stop.is_set():
            return
        if done:
            self.configure()  # the new files load on the worker thread, from torch hub's cache

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
                self._emit(Error(ErrorCode.CAPTURE, str(e.args[0])))
        return request.generation

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused, self._steps, self._cursor = False, 0, None
            self._cond.notify_all()

    def step(self) -> None:
        """While paused, let exactly one more frame through (after stepping back: the next frame
        already seen, until the newest one)."""
        with self._cond:
            if self._cursor is not None:
                self._cursor += 1
                frame = self._history[self._cursor]
                if self._cursor >= len(self._history) - 1:
                    self._cursor = None  # at the newest frame again: the next step reads the source
                self._offer(frame, wait=False, continuous=False, replay=True)
                return
            self._steps += 1
            self._cond.notify_all()

    def step_back(self) -> bool:
        """Pause and show the frame before the one on screen again (from the recent frames kept,
        up to HISTORY_BYTES of pictures); False when there is none. Shown again, not counted again."""
        with self._cond:
            self._paused = True
            position = (len(self._history) - 1 if self._cursor is None else self._cursor) - 1
            if position < 0:
                return False
            self._cursor = position
            self._offer(self._history[position], wait=False, continuous=False, replay=True)
            return True

    @property
    def paused(self) -> bool:
        return self._paused

    def submit(self, image: np.ndarray, source: str = "image", label: int | None = None,
               frame_id: int | None = None) -> None:
        """Put one frame in the slot now (a pasted image); a frame still waiting there is dropped."""
        image = np.ascontiguousarray(image)
        image.flags.writeable = False
        with self._cond:  # an image of its own is a source of its own: its statistics start afresh
            self._epoch += 1
            self._source_name, self._source_classes = source, None
            self._forget_history()
            self._offer(Frame(0 if frame_id is None else frame_id, image, source, label, epoch=self._epoch),
                        wait=False, continuous=False)

    def cell_examples(self, model: str, true_class: int, predicted: int) -> tuple[tuple[int, str], ...]:
        """The latest frames (frame id, source name) whose label is ``true_class`` and whose
        top-1 from ``model`` was ``predicted``, since the source opened."""
        metrics = self.metrics
        return metrics.examples(model, true_class, predicted) if metrics is not None else ()

    def show_kept(self, frame_id: int) -> bool:
        """Pause and show a recent frame of this source again (not counted again); False when it
        is no longer kept."""
        with self._cond:
            for position in range(len(self._history) - 1, -1, -1):
                if self._history[position].frame_id == frame_id:
                    self._paused = True
                    self._cursor = position if position < len(self._history) - 1 else None
                    self._offer(self._history[position], wait=False, continuous=False, replay=True)
                    return True
        return False

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
        self._offer(Frame(result.frame_id, clean, result.source, result.label), wait=False,
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
            self._epoch += 1  # nor is one still being run: its result is dropped, its statistics too
            epoch = self._epoch
            self._forget_history()
        stop = threading.Event()
        self._feed_stop = stop
        feeder = threading.Thread(target=self._feed, args=(target, stop, realtime, interval, capture_factory, epoch),
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

    def _feed(self, target, stop: threading.Event, realtime: bool, interval: float, capture_factory,
              epoch: int) -> None:
        class_names = self.info.models[0].class_names if self.info and self.info.models else ()
        me = threading.current_thread()
        self._opening.add(me)
        try:
            source = target if isinstance(target, Source) else open_source(
                target, class_names, capture_factory=capture_factory)
        except InputError as e:
            if not stop.is_set():  # a source given up on has nothing left to say
                self._emit(source_error(target, e))
            return
        except Exception as e:  # noqa: BLE001 - a bug in a reader is one line, not a dead thread
            if not stop.is_set():
                self._emit(Error(ErrorCode.SOURCE, f"cannot open the source: {one_line_error(e)}"))
            return
        finally:
            self._opening.discard(me)
        if stop.is_set():
            source.close()
            return
        self._source = source
        with self._cond:
            if epoch == self._epoch:  # still the newest request
                self._source_name = source.name
                self._source_classes = tuple(source.class_names) if source.class_names is not None else None
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
                if count == 0 and source.camera and frame.image is None:  # the camera never opened
                    self._emit(Error(ErrorCode.CAMERA, frame.error or f"{source.name}: cannot open"))
                    return
                if count == 0:  # playing means a frame came, not that a connection opened
                    self._emit(SourceStarted(source.name, source.length))
                self._offer(Frame(frame.frame_id, frame.image, frame.source, frame.label, frame.error, epoch),
                            wait=not live, continuous=continuous, stop=stop)
                count += 1
            if not stop.is_set():
                self._emit(SourceEnded(f"{source.name}: end ({count} frames)"))
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
                self._step_granted = True
        return not (stop.is_set() or self._stop.is_set())

    def _offer(self, frame: Frame, *, wait: bool, continuous: bool, stop: threading.Event | None = None,
               replay: bool = False) -> None:
        with self._cond:
            if wait:
                while self._pending is not None and not self._stop.is_set() and not (stop and stop.is_set()):
                    self._cond.wait(0.1)
            if stop is not None and not replay:
                # Paused after this feeder's turn began (a frame shown again from the statistics): its
                # frame waits for Play rather than replacing the one just put on screen.
                while self._paused and not self._step_granted and not self._stop.is_set() and not stop.is_set():
                    if self._steps > 0:  # a step asked for meanwhile lets this frame through
                        self._steps -= 1
                        break
                    self._cond.wait(0.1)
                self._step_granted = False
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
                self._building_config = config
                frame, continuous, replay = ((self._pending, self._pending_continuous, self._pending_replay)
                                             if config is None else (None, False, False))
                if frame is not None:
                    self._pending = None
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
                self._emit(Error(code, f"{'cannot load the networks' if config is not None else 'frame failed'}: "
                                       f"{one_line_error(e)}"))
            finally:
                self._building = False
                with self._cond:
                    self._building_config = None
                    self._busy = False
                    self._cond.notify_all()

    def _build(self, config: _Config) -> None:
        """A new session for ``config``; on any failure the running session (if any) stays as it was
        and the failure is one ``Error`` event."""
        try:
            device = resolve_device(config.device)
        except ValueError as e:
            keep = "; the networks stay where they were" if self.session is not None else "; choose cpu"
            self._emit(Error(ErrorCode.DEVICE, f"{e}{keep}"))
            return
        if config.device not in ("cpu", "auto") and device.type == "cpu":
            self._emit(Error(ErrorCode.DEVICE, f"{config.device} is not available here: running on the CPU"))
        try:
            session = InferenceSession(config.profile, str(device), config.models, dict(config.weights),
                                       top_k=self.top_k, precision=config.precision, backend=config.backend,
                                       ort_threads=self.threads or engine_ort_threads())
        except WeightsError as e:
            if self.session is not None:
                self._emit(Error(ErrorCode.WEIGHTS, f"{e}; the networks keep the weights they had"))
                return
            # nothing runs yet: start on the default weights rather than not at all
            self._emit(Error(ErrorCode.WEIGHTS, f"{e}; starting on the default weights"))
            self._build(_Config(config.profile, config.device, config.models, (), config.precision, config.backend))
            return
        except (PrecisionError, BackendError) as e:
            # a setting this machine cannot run: the running networks keep theirs, or the first
            # session starts on the default one (fp32, torch eager)
            setting, default, how = (("precision", "fp32", "in fp32") if isinstance(e, PrecisionError)
                                     else ("backend", "torch", "on torch eager"))
            if self.session is not None:
                self._emit(Error(ErrorCode.SESSION, f"{e}; the networks keep the {setting} they had"))
                return
            self._emit(Error(ErrorCode.SESSION, f"{e}; starting {how}"))
            self._build(dataclasses.replace(config, **{setting: default}))
            return
        except (RegistryError, ValueError, RuntimeError) as e:
            self._emit(Error(ErrorCode.SESSION, f"cannot load the networks: {one_line_error(e)}"))
            return
        try:
            self._start_session(session, config, device)
        except Exception as e:  # noqa: BLE001 - out of memory in the warm-up, ...: keep what runs
            del session
            if device.type == "cuda":
                torch.cuda.empty_cache()
            keep = "; the networks keep running as they were" if self.session is not None else ""
            self._emit(Error(ErrorCode.SESSION, f"cannot start the networks: {one_line_error(e)}{keep}"))

    def _start_session(self, session: InferenceSession, config: _Config, device: torch.device) -> None:
        with self._request_lock:
            current = self.request
            probes = {}
            for name in session.names:  # what was asked for carries over where the layers still exist
                wanted = current.probes.get(name)
                known = {layer.name for layer in session.layers(name)}
                if wanted is not None and all(layer in known for p in wanted for layer in p.layers):
                    probes[name] = wanted
                elif self.capture_default_layers:
                    probes[name] = activation_probes((session.spec(name).default_layer,))
            self.request = request = current.with_probes(probes)
        session.set_probes(probes, request.generation)
        session.warm_up()
        info = SessionReady(config.profile, str(device), tuple(model_card(session, n) for n in session.names),
                            tuple(session.messages), config.precision, config.backend)
        self.session = session
        self._active = config
        self.metrics = MetricsTracker(session.names, session.spec(session.names[0]).num_classes)
        self.info = info
        for message in session.messages:
            self._emit(Notice(message))
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
        if frame.image is None:
            result = FrameResult(frame.frame_id, frame.source, frame.label, None, {}, frame.error or "unreadable frame",
                                 generation=session.generation)
            self._emit(Error(ErrorCode.FRAME, result.error or ""))
        else:
            try:
                perturbation = self._perturbation
                if perturbation is None or perturbation.severity == 0:
                    result = session.run(frame.image, frame.frame_id, frame.source, frame.label)
                else:  # the clean answers first, forward passes only: a flip is shown against them
                    clean = MappingProxyType(session.top1(frame.image))
                    shown = perturb(frame.image, perturbation)
                    result = dataclasses.replace(session.run(shown, frame.frame_id, frame.source, frame.label),
                                                 perturbation=perturbation.label, clean_top1=clean,
                                                 original=frame.image)
                self._cards_rechecked(session)
            except PerturbError as e:
                result = FrameResult(frame.frame_id, frame.source, frame.label, frame.image, {},
                                     f"{frame.source}: {e}", generation=session.generation)
                self._emit(Error(ErrorCode.FRAME, result.error or ""))
            except torch.cuda.OutOfMemoryError:
                self._emit(Error(ErrorCode.DEVICE, "the GPU ran out of memory: switching to the CPU"))
                self.configure(device="cpu")
                return
            except RuntimeError as e:  # e.g. an input a network cannot take
                line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                result = FrameResult(frame.frame_id, frame.source, frame.label, frame.image, {},
                                     f"{frame.source}: {line}", generation=session.generation)
                self._emit(Error(ErrorCode.FRAME, result.error or ""))
        if not replay and frame.epoch != self._epoch:
            return  # another source was chosen while this frame ran
        if not replay:
            if self._reset_stats or frame.epoch != self._stats_epoch:
                with self._cond:
                    self._reset_stats, self._stats_epoch = False, frame.epoch
                metrics.reset(self._source_name)
            metrics.update(result, continuous=continuous)
            if frame.image is not None:
                self._remember(frame)
            self.processed += 1
        snapshot = metrics.snapshot(self.dropped)
        self.last = (result, snapshot)
        self.on_result(result, snapshot)

    def _cards_rechecked(self, session: InferenceSession) -> None:
        """Tell of each network whose torch threads or backend live frames chose (a card with the new note)."""
        for name, note in session.take_rechecked():
            card = model_card(session, name)
            if self.info is not None:
                self.info = self.info.with_card(card)
            self._emit(ModelUpdated(card, f"{card.display} runs on {note}"))

    def _remember(self, frame: Frame) -> None:
        """Keep ``frame`` for step_back, the oldest going once the pictures pass HISTORY_BYTES."""
        with self._cond:
            self._history.append(frame)
            self._history_bytes += frame.image.nbytes
            while len(self._history) > 1 and self._history_bytes > HISTORY_BYTES:
                self._history_bytes -= self._history.popleft().image.nbytes
                if self._cursor is not None:
                    self._cursor = max(0, self._cursor - 1)

    def _forget_history(self) -> None:
        self._history.clear()
        self._history_bytes, self._cursor = 0, None

    def _emit(self, event: EngineEvent) -> None:
        self.on_event(event)


def one_line_error(e: BaseException) -> str:
    """An exception as one line: its first line, or its type's name when it has no text."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text and not isinstance(e, (ValueError, RuntimeError)) \
        else (text.splitlines()[0] if text else type(e).__name__)


def source_error(target: object, error: InputError) -> Error:
    """The event for a source that cannot be opened: a camera's is told apart (try another index)."""
    code = ErrorCode.CAMERA if isinstance(target, (str, int)) and describe(str(target)) == "camera" \
        else ErrorCode.SOURCE
    return Error(code, str(error))


def model_card(session: InferenceSession, name: str) -> ModelCard:
    spec, loaded = session.spec(name), session.loaded(name)
    top1 = _file_top1(loaded.metrics, name)
    return ModelCard(name, spec.title, spec.family, spec.year, spec.paper, loaded.status, loaded.source,
                     loaded.downloadable, session.layers(name), spec.default_layer, spec.has_class_map,
                     spec.class_names, top1, _complexity(name, session.profile),
                     hub_download_bytes(spec) if loaded.downloadable else None,
                     *(published_accuracy(spec) or (None, None)), spec.label, *session.precision_of(name),
                     spec.gradcam_layer, *session.backend_of(name), *session.threads_of(name))


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
