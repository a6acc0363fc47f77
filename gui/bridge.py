"""The Qt side of the engine thread: signals in, calls out, and the latest result kept for redraws.

The engine calls its callbacks on its own threads. :class:`EngineBridge` turns them into Qt signals
(queued to the main thread, because the bridge lives there) and keeps only the newest result: a
result that arrives before the window drew the previous one replaces it and is counted as skipped
by the display. At most one result signal is in flight: while the main thread has not taken the
last one, newer results only replace it in a one-slot inbox, so a busy main thread never lets a
queue of large results (activations) build up.

Opening a source can take seconds (a data set is decoded on first use; a stream waits for its
server) or hang (a dead network mount). The engine opens each source on a thread of its own and the
newest request wins: a source still opening when another is chosen is given up, and never delays
the next one. The main thread never waits for either.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.api import (
    Activations,
    AnalysisJob,
    DownloadCifar10Job,
    DownloadWeightsJob,
    Engine,
    EngineEvent,
    FrameReady,
    GradCam,
    Job,
    LayerOverview,
    LineupJob,
    ReportJob,
    RobustnessJob,
    SessionReady,
    SourceEnded,
    SourceStarted,
    TopImagesJob,
    cached_analysis,
)

log = logging.getLogger(__name__)


class EngineBridge(QObject):
    """Owns the :class:`Engine`; every signal is delivered on the main thread."""

    result_ready = Signal(object)  # FrameReady
    event = Signal(object)  # EngineEvent
    session_ready = Signal(object)  # SessionReady

    def __init__(self, profile: str = "cifar10", device: str = "cpu", parent: QObject | None = None,
                 engine_factory: Callable[..., Engine] = Engine, weights: dict[str, str] | None = None,
                 models: list[str] | None = None, precision: str = "auto", backend: str = "auto") -> None:
        super().__init__(parent)
        options = {**({"weights": weights} if weights else {}), **({"models": models} if models else {}),
                   "precision": precision, "backend": backend}
        self.engine = engine_factory(profile, device, on_result=self._on_result, on_event=self._on_event, **options)
        self.latest: tuple[Any, Any] | None = None
        self._latest_is_new = False
        self.results_received = 0
        self.results_skipped = 0  # arrived but replaced by a newer one before a redraw drew it
        self.target: Any = None  # what the current source was opened from (for replay)
        self.interval = 0.0  # its slideshow interval
        self.source_ended = False
        self._closing = False
        self._inbox_lock = threading.Lock()
        self._inbox: tuple[Any, Any] | None = None
        self._signal_in_flight = False
        self.result_ready.connect(self._store)
        self.event.connect(self._note_event)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.engine.start()

    def shutdown(self, timeout: float = 1.8) -> bool:
        """Stop the engine; True when every thread ended in time."""
        self._closing = True
        return self.engine.stop(timeout)

    # -- engine callbacks (engine threads) -----------------------------------------------------

    def _on_result(self, result, snapshot) -> None:
        yield_to_window()
        if self._closing:
            return
        with self._inbox_lock:
            replaced = self._inbox is not None
            self._inbox = FrameReady(result, snapshot)
            if self._signal_in_flight:
                if replaced:
                    self.results_skipped += 1  # (written here and in _store, always under the lock)
                self.results_received += 1
                return
            self._signal_in_flight = True
            self.results_received += 1
        self.result_ready.emit(FrameReady(result, snapshot))

    def _on_event(self, event: EngineEvent) -> None:
        yield_to_window()
        if self._closing:
            return
        if isinstance(event, SessionReady):
            self.session_ready.emit(event)
            # The networks are tens of thousands of long-lived objects; a full garbage collection
            # walking them all stalls whichever thread triggers it, often the window's. Frozen,
            # they are left out of every collection from now on.
            gc.freeze()
        self.event.emit(event)

    # -- main thread ---------------------------------------------------------------------------

    def _store(self, _payload) -> None:
        with self._inbox_lock:  # the newest result, which may be newer than the one signalled
            payload, self._inbox, self._signal_in_flight = self._inbox, None, False
            if payload is None:
                return
            if self._latest_is_new:
                self.results_skipped += 1
        self.latest, self._latest_is_new = payload, True

    def _note_event(self, event: EngineEvent) -> None:
        if isinstance(event, SourceStarted):
            self.source_ended = False
        elif isinstance(event, SourceEnded):
            self.source_ended = True

    def take_latest(self):
        """The newest (FrameResult, MetricsSnapshot) if it has not been taken yet, else None."""
        if not self._latest_is_new:
            return None
        self._latest_is_new = False
        return self.latest

    # -- control -------------------------------------------------------------------------------

    def set_source(self, target: Any, interval: float = 0.0) -> None:
        """Play ``target`` (path, list of paths, camera index as text, URL); errors come as events.
        ``interval``: seconds each still picture stays on screen."""
        self.target = target
        self.interval = interval
        self.source_ended = False
        if not self._closing:
            self.engine.set_source(target, realtime=True, interval=interval)

    def clear_source(self) -> None:
        """Stop the current source (its last frame stays on screen)."""
        self.engine.clear_source()

    def replay(self) -> bool:
        """Open the last source again (after it ended); False when there is none or it is an image."""
        if self.target is None:
            return False
        self.set_source(self.target, self.interval)
        return True

    def submit_image(self, image, name: str = "pasted image") -> None:
        """Show one in-memory image (a paste): the current source stops first."""
        self.target = None
        if self._closing:
            return
        self.engine.clear_source()
        self.engine.submit(image, source=name)
        self.source_ended = True  # one frame, shown: nothing to play, nothing to play again

    def configure(self, profile: str | None = None, device: str | None = None, models: list[str] | None = None,
                  precision: str | None = None, backend: str | None = None) -> None:
        self.engine.configure(profile, device, models=models, precision=precision, backend=backend)

    def set_capture(self, model: str, layer: str, gradcam: bool = False, target: int | None = None,
                    overview: tuple[str, ...] = ()) -> int:
        """Show ``layer`` of ``model`` (with ``gradcam``, the Grad-CAM on that layer of class
        ``target``, or of each frame's top-1; with ``overview``, a summary of each of those layers);
        returns the generation from which results carry it."""
        probes = [Activations((layer,))]
        if gradcam:
            probes.append(GradCam(layer, target))
        if overview:
            probes.append(LayerOverview(overview))
        return self.engine.set_probes({model: probes})

    def set_perturbation(self, perturbation) -> None:
        self.engine.set_perturbation(perturbation)

    def start_job(self, job: Job) -> bool:
        """Run a job (a study, a download) on the engine's job thread; its ``JobEnded`` comes as an
        event. False when another job is running."""
        return self.engine.start_job(job)

    def top_images(self, model: str, layer: str, data: str) -> bool:
        return self.start_job(TopImagesJob(model, layer, data))

    def robustness(self, data: str, limit: int) -> bool:
        return self.start_job(RobustnessJob(data, limit))

    def load_weights(self, model: str, path: str | None) -> None:
        """Run ``model`` on a user's checkpoint (``None``: its default weights again); refused in
        one line (an ``Error`` event) if it does not fit, and the networks keep what they had."""
        self.engine.load_weights(model, path)

    def set_runtime(self, model: str, backend: str | None) -> None:
        """Run ``model`` on its own backend (None: the toolbar's again); that network alone is rebuilt."""
        self.engine.set_runtime(model, backend)

    def download_weights(self, model: str) -> bool:
        """Download ``model``'s torchvision weights as a job (``JobProgress``, then ``JobEnded``),
        then load them; False when another job is running."""
        return self.start_job(DownloadWeightsJob((model,)))

    def download_cifar10(self) -> bool:
        """Download the official CIFAR-10 archive as a job; its JobEnded carries the path."""
        return self.start_job(DownloadCifar10Job())

    def analyze(self, max_batch: int, precision: str, fresh: bool, backends: tuple[str, ...] = (),
                lineup: str = "four") -> bool:
        if lineup != "four":
            return self.start_job(LineupJob(lineup, fresh))
        return self.start_job(AnalysisJob(max_batch, precision, fresh, tuple(backends)))

    def cached_analysis(self, max_batch: int, precision: str, backends: tuple[str, ...] = (), lineup: str = "four"):
        return cached_analysis(self.engine.job_context(), max_batch, precision, tuple(backends), lineup)

    def export_report(self, analysis, folder: str) -> bool:
        return self.start_job(ReportJob(analysis, str(folder)))

    def cancel_job(self) -> None:
        self.engine.cancel_job()

    def rerun_last(self) -> bool:
        """Run the last frame again (e.g. after a layer change while paused); False when none."""
        return self.engine.rerun_last()

    def set_label(self, label: int | None) -> None:
        """The true class of what the source shows from now on (None: not named)."""
        self.engine.set_label(label)

    def reset_stats(self) -> None:
        """Start the statistics over from the next frame."""
        self.engine.reset_stats()

    def pause(self) -> None:
        self.engine.pause()

    def resume(self) -> None:
        self.engine.resume()

    def cell_examples(self, model: str, true_class: int, predicted: int) -> tuple[tuple[int, str], ...]:
        return self.engine.cell_examples(model, true_class, predicted)

    def show_kept(self, frame_id: int) -> bool:
        return self.engine.show_kept(frame_id)

    def step_back(self) -> bool:
        return self.engine.step_back()

    def step(self) -> None:
        self.engine.step()

    @property
    def paused(self) -> bool:
        return self.engine.paused

    @property
    def dropped(self) -> int:
        return self.engine.dropped

    @property
    def processed(self) -> int:
        return self.engine.processed


_lowered = threading.local()
ENGINE_NICENESS = 10


def yield_to_window() -> None:
    """Lower the scheduling priority of the calling engine thread (Linux; once per thread).

    On a loaded machine the window's main thread then wins the CPU over inference when both
    want it: measured on 2 busy cores, main-thread stalls over 50 ms fell from about 40 to under
    10 in 12 s, for about 5% of the frame rate. Elsewhere (one process-wide priority) it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    if getattr(_lowered, "done", False) or threading.current_thread() is threading.main_thread():
        return
    _lowered.done = True
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), ENGINE_NICENESS))
    except OSError as e:
        log.debug("cannot lower the priority of thread %s: %s", tid, e)

