"""The current source's recent frames, so that a person can step back through them (and forward
again to the newest) or show one again; the oldest go once the pictures pass a byte budget.
Not thread-safe on its own: the engine calls it under its lock."""

from __future__ import annotations

from collections import deque

from engine.live.sources import Frame

HISTORY_BYTES = 64 * 2**20  # 2 s of VGA video, 20,000 CIFAR pictures


class FrameHistory:
    def __init__(self, budget: int = HISTORY_BYTES) -> None:
        self.budget = budget
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self.cursor: int | None = None  # the position on screen after stepping back; None: the newest

    def remember(self, frame: Frame) -> None:
        self._frames.append(frame)
        self._bytes += frame.image.nbytes
        while len(self._frames) > 1 and self._bytes > self.budget:
            self._bytes -= self._frames.popleft().image.nbytes
            if self.cursor is not None:
                self.cursor = max(0, self.cursor - 1)

    def forget(self) -> None:
        self._frames.clear()
        self._bytes, self.cursor = 0, None

    def back(self) -> Frame | None:
        """The frame before the one on screen, which becomes the one on screen; None at the oldest."""
        position = (len(self._frames) - 1 if self.cursor is None else self.cursor) - 1
        if position < 0:
            return None
        self.cursor = position
        return self._frames[position]

    def forward(self) -> Frame | None:
        """After stepping back: the next frame already seen (None when the newest is on screen)."""
        if self.cursor is None:
            return None
        self.cursor += 1
        frame = self._frames[self.cursor]
        if self.cursor >= len(self._frames) - 1:
            self.cursor = None  # the newest again: the next step reads the source
        return frame

    def find(self, frame_id: int) -> Frame | None:
        """The kept frame ``frame_id``, which becomes the one on screen; None when it is gone."""
        for position in range(len(self._frames) - 1, -1, -1):
            if self._frames[position].frame_id == frame_id:
                self.cursor = position if position < len(self._frames) - 1 else None
                return self._frames[position]
        return None
