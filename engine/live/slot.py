"""The one-frame slot between the feeders and the worker: the newest frame of a live source wins
(the frame it replaces is counted as dropped), a still source's frame waits for its turn, and
nothing queues up. Pause, step and stepping back through the recent frames act on it too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine.live.history import FrameHistory
from engine.live.sources import Frame


class FrameSlot:
    def __init__(self, stop: threading.Event) -> None:
        self.cond = threading.Condition()  # the engine's one lock: its own source state uses it too
        self._stop = stop  # the engine's
        self.pending: Frame | None = None
        self.continuous = False  # the pending frame's source plays continuously (a video, a camera)
        self.replay = False  # the pending frame is shown again, not counted again
        self.paused = False
        self.steps = 0  # frames let through while paused
        self.step_granted = False  # a feeder's next frame may pass a pause: a step let it through
        self.dropped = 0
        self.waiting = 0  # feeders holding a frame until play or a step
        self.history = FrameHistory()

    def offer(self, frame: Frame, *, wait: bool, continuous: bool, stop: threading.Event | None = None,
              replay: bool = False) -> None:
        """Put ``frame`` in the slot: it replaces a frame not taken yet (counted as dropped unless
        that was a replay), or with ``wait`` it waits for the slot to be free."""
        with self.cond:
            if wait:
                while self.pending is not None and not self._stop.is_set() and not (stop and stop.is_set()):
                    self.cond.wait(0.1)
            if stop is not None and not replay:
                # Paused after this feeder's turn began (a frame shown again from the statistics): its
                # frame waits for Play rather than replacing the one just put on screen.
                self.waiting += 1
                try:
                    while self.paused and not self.step_granted and not self._stop.is_set() and not stop.is_set():
                        if self.steps > 0:  # a step asked for meanwhile lets this frame through
                            self.steps -= 1
                            break
                        self.cond.wait(0.1)
                finally:
                    self.waiting -= 1
                self.step_granted = False
            if stop is not None and stop.is_set():
                return  # a feeder told to stop hands over nothing more
            if self.pending is not None and not self.replay:
                self.dropped += 1
            self.pending, self.continuous, self.replay = frame, continuous, replay
            self.cond.notify_all()

    def take(self) -> tuple[Frame | None, bool, bool]:
        """The pending frame (or None), whether its source is continuous and whether it is a replay;
        the slot is free afterwards. Called under :attr:`cond`."""
        taken = (self.pending, self.continuous, self.replay)
        self.pending = None
        return taken

    def wait_turn(self, stop: threading.Event) -> bool:
        """While paused, wait for resume or a step; False when stopping."""
        with self.cond:
            self.waiting += 1
            try:
                while self.paused and self.steps == 0:
                    if stop.is_set() or self._stop.is_set():
                        return False
                    self.cond.wait(0.1)
            finally:
                self.waiting -= 1
            if self.paused:
                self.steps -= 1
                self.step_granted = True
        return not (stop.is_set() or self._stop.is_set())

    def pause(self) -> None:
        with self.cond:
            self.paused = True
            self.cond.notify_all()

    def resume(self) -> None:
        with self.cond:
            self.paused, self.steps, self.history.cursor = False, 0, None
            self.cond.notify_all()

    def step(self) -> None:
        """While paused, one more frame (after stepping back: the next one already seen)."""
        with self.cond:
            if self.history.cursor is not None:
                self.offer(self.history.forward(), wait=False, continuous=False, replay=True)
                return
            self.steps += 1
            self.cond.notify_all()

    def step_back(self) -> bool:
        """Pause and show the frame before the one on screen again; False when there is none."""
        with self.cond:
            self.paused = True
            frame = self.history.back()
            if frame is not None:
                self.offer(frame, wait=False, continuous=False, replay=True)
            return frame is not None

    def show_kept(self, frame_id: int) -> bool:
        """Pause and show a kept frame again; False when it is no longer kept."""
        with self.cond:
            frame = self.history.find(frame_id)
            if frame is not None:
                self.paused = True
                self.offer(frame, wait=False, continuous=False, replay=True)
            return frame is not None

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Paused inside (two measurements on a small CPU would measure each other), and playing
        on afterwards if it was playing and nobody paused it meanwhile."""
        was_playing = not self.paused
        if was_playing:
            self.pause()
        try:
            yield
        finally:
            if was_playing and self.paused and not self._stop.is_set():
                self.resume()
