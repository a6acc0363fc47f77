"""One piece of slow work shared by every caller that asks for it at the same time, and stopped as
soon as none of them wants it any more.

Decoding a whole data set takes seconds to minutes: a window that opens the same archive twice
(or switches away and back) must not start a second decode beside the first, and a decode nobody
waits for must not run on to the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often a waiting caller looks at its own stop event


class Stopped(Exception):
    """The work was given up: every caller that wanted it was stopped."""


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.wanted: list[threading.Event | None] = []
        self.result: object = None
        self.error: BaseException | None = None


class SharedWork(Generic[T]):
    """``run(key, work, stop)``: the first caller for ``key`` runs ``work(stopped)``; callers that come
    while it runs wait for its result. ``stopped()`` turns true once every caller's ``stop`` is set
    (a caller without one always wants the result): ``work`` should then raise :class:`Stopped`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}

    def running(self, key: Hashable) -> int:
        """How many callers wait for ``key`` now (0: no such work is running)."""
        with self._lock:
            flight = self._flights.get(key)
            return len(flight.wanted) if flight else 0

    def run(self, key: Hashable, work: Callable[[Callable[[], bool]], T], stop: threading.Event | None = None) -> T:
        while True:
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight()
                flight.wanted.append(stop)
            if leader:
                self._lead(key, flight, work)
            else:
                while not flight.done.wait(_POLL_S):
                    if stop is not None and stop.is_set():
                        raise Stopped()
            if stop is not None and stop.is_set():
                raise Stopped()
            if isinstance(flight.error, Stopped):
                continue  # given up just as this caller came: run it again for this caller
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]

    def _lead(self, key: Hashable, flight: _Flight, work: Callable[[Callable[[], bool]], T]) -> None:
        def stopped() -> bool:
            with self._lock:
                return all(s is not None and s.is_set() for s in flight.wanted)

        try:
            flight.result = work(stopped)
        except BaseException as e:  # noqa: BLE001 - every caller gets the same failure
            flight.error = e
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
