"""The feeder side of the engine: opens a source on a thread of its own and hands its frames to
the engine's one-frame slot, at the source's pace (a video in real time, a slideshow's wait) or
as fast as the networks take them. A source switched away from is told to stop and closes itself
when its read returns: a file or video capture is never released from another thread while a read
may be under way inside OpenCV (that hangs or crashes the process); a live source is closed from
here, since its reading happens on its own thread, which ``close`` stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from engine.common.errors import error_line
from engine.data.imageio import InputError
from engine.live.events import EngineEvent, Error, ErrorCode, SourceEnded, SourceStarted
from engine.live.slot import FrameSlot
from engine.live.sources import Frame, Source, describe, open_source


class Feeders:
    """The current feeder and those told to stop that have not ended yet."""

    def __init__(self, slot: FrameSlot, emit: Callable[[EngineEvent], None],
                 opened: Callable[[Source, int], None], engine_stop: threading.Event) -> None:
        self._slot = slot
        self._emit = emit
        self._opened = opened  # told of each source that opened, with the request (epoch) it answers
        self._engine_stop = engine_stop
        self.current: threading.Thread | None = None
        self._all: list[threading.Thread] = []  # every one not known to have ended
        self._opening: set[threading.Thread] = set()  # feeders still inside open_source
        self._stop: threading.Event | None = None
        self._source: Source | None = None

    def start(self, target, epoch: int, class_names: Sequence[str], *, realtime: bool, interval: float,
              capture_factory: Callable | None) -> None:
        self.stop()
        stop = threading.Event()
        self._stop = stop
        feeder = threading.Thread(target=self._feed,
                                  args=(target, stop, realtime, interval, capture_factory, epoch, tuple(class_names)),
                                  name="engine feeder", daemon=True)
        self._all.append(feeder)
        self.current = feeder
        feeder.start()

    def stop(self) -> None:
        """Tell the current feeder to finish (returns at once)."""
        if self._stop is not None:
            self._stop.set()
        source = self._source
        if source is not None and source.live:
            source.close()
        self._all = [t for t in self._all if t.is_alive()]

    def joinable(self) -> list[threading.Thread]:
        """The feeders worth waiting for at shutdown: one still opening its source (a FIFO, a dead
        mount, a data set being decoded) holds nothing and closes what it opened when its open returns."""
        return [t for t in self._all if t not in self._opening]

    @property
    def active(self) -> bool:
        return self.current is not None and self.current.is_alive()

    def _feed(self, target, stop: threading.Event, realtime: bool, interval: float, capture_factory,
              epoch: int, class_names: tuple[str, ...]) -> None:
        me = threading.current_thread()
        self._opening.add(me)
        try:
            source = target if isinstance(target, Source) else open_source(
                target, class_names, capture_factory=capture_factory, stop=stop)
        except InputError as e:
            if not stop.is_set():  # a source given up on has nothing left to say
                self._emit(source_error(target, e))
            return
        except Exception as e:  # noqa: BLE001 - a bug in a reader is one line, not a dead thread
            if not stop.is_set():
                self._emit(Error(ErrorCode.SOURCE, f"cannot open the source: {error_line(e, typed=True)}"))
            return
        finally:
            self._opening.discard(me)
        if stop.is_set():
            source.close()
            return
        self._source = source
        self._opened(source, epoch)
        live = source.live or (realtime and source.fps is not None)
        continuous = source.live or source.fps is not None
        period = 1.0 / source.fps if realtime and source.fps else interval
        next_due = time.monotonic()
        count = 0
        try:
            for frame in source:
                if stop.is_set() or self._engine_stop.is_set() or not self._slot.wait_turn(stop):
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
                self._slot.offer(Frame(frame.frame_id, frame.image, frame.source, frame.label, frame.error, epoch),
                           wait=not live, continuous=continuous, stop=stop)
                count += 1
            if not stop.is_set():
                self._emit(SourceEnded(f"{source.name}: end ({count} frames)"))
        finally:
            if self._source is source:
                self._source = None
            source.close()


def source_error(target: object, error: InputError) -> Error:
    """The event for a source that cannot be opened: a camera's is told apart (try another index)."""
    code = ErrorCode.CAMERA if isinstance(target, (str, int)) and describe(str(target)) == "camera" \
        else ErrorCode.SOURCE
    return Error(code, str(error))
