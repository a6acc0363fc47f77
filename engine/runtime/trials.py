"""Choices made at load and timed again on live frames, where the window shares the cores: a heavy
torch network's thread count, and auto's backend where torch and ONNX Runtime measured close."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch

from engine.runtime.backends import AUTO_GAIN as BACKEND_GAIN
from engine.runtime.backends import Runner, label

# The live engine leaves a core to the frame decoder (runtime.device.engine_threads); a torch network
# at least HEAVY_MS a frame is timed on every core too, and runs there where that takes at most
# MANY_THREADS_GAIN of the time: the decoder's millisecond is then a small share of its pass.
HEAVY_MS = 25.0
MANY_THREADS_GAIN = 0.8
# Load-time choices are timed again on live frames, where the window shares the cores: the two ways
# alternate in blocks of TRIAL_BLOCK frames, TRIAL_BLOCKS each, the first frame of a block not
# counted (a pass right after the other way's is slowed while its threads wake up).
TRIAL_BLOCK = 5
TRIAL_BLOCKS = 3
# auto's backend is retimed live only where torch and ONNX Runtime measured within this ratio at load.
RECHECK_RATIO = 2.0
# Trials start this long after the first live frame: the window's first draws of a source keep the
# other core busy. A trial that disagrees with load's backend switches it only when a second agrees.
LIVE_DELAY_S = 2.0


class Trial:
    """Two ways to run one network (``first`` is tried first), alternated on live frames in blocks
    (TRIAL_BLOCK frames, TRIAL_BLOCKS each, the first of a block not counted) from LIVE_DELAY_S
    after the first live frame."""

    def __init__(self, other, first) -> None:
        self.other, self.first = other, first
        self.times: dict = {other: [], first: []}
        self.passes = 0
        self.since: float | None = None  # when the first live frame came

    def due(self) -> bool:
        """Whether LIVE_DELAY_S have passed since the first live frame (this call's, at first)."""
        now = time.perf_counter()
        if self.since is None:
            self.since = now
        return now - self.since >= LIVE_DELAY_S

    def next(self):
        """The way to run the next pass: ``first`` in even blocks, ``other`` in odd ones."""
        return self.other if self.passes // TRIAL_BLOCK % 2 else self.first

    def add(self, option, ms: float) -> bool:
        """Count one pass (not the first of a block); True once both ways have all their blocks."""
        if self.passes % TRIAL_BLOCK:
            self.times[option].append(ms)
        self.passes += 1
        return self.passes >= 2 * TRIAL_BLOCKS * TRIAL_BLOCK

    def medians(self) -> tuple[float, float]:
        """(``other``'s, ``first``'s) median, in ms."""
        return float(np.median(self.times[self.other])), float(np.median(self.times[self.first]))

    @staticmethod
    def how() -> str:
        """How live frames timed the two, in words."""
        return (f"medians of {TRIAL_BLOCKS * (TRIAL_BLOCK - 1)} live frames each, in blocks of {TRIAL_BLOCK} "
                f"alternated")


class ThreadTrial(Trial):
    """A heavy torch network's thread counts: the session's (``few``) and every core (``many``)."""

    def __init__(self, few: int, many: int) -> None:
        super().__init__(few, many)
        self.few, self.many = few, many

    def choose(self, few_ms: float, many_ms: float, how: str) -> tuple[int | None, str]:
        """Every core where it took at most MANY_THREADS_GAIN of the time, else None (the
        session's threads); and why, with the two times and ``how`` they were taken."""
        if many_ms <= MANY_THREADS_GAIN * few_ms:
            return self.many, thread_choice_note(self.many, many_ms, self.few, few_ms, how)
        return None, thread_choice_note(self.few, few_ms, self.many, many_ms, how)


class BackendTrial(Trial):
    """auto's two backends for one network: torch eager (on ``threads``, the torch threads chosen
    for it) and ONNX Runtime (``runner``); ``load`` is the runner chosen at load (None: torch)."""

    def __init__(self, runner: Runner, load: Runner | None, threads: int | None, threads_note: str,
                 confirms: str | None = None) -> None:
        super().__init__("torch", "onnxruntime")
        self.runner, self.load, self.threads, self.threads_note = runner, load, threads, threads_note
        self.confirms = confirms  # a first trial's times, where it disagreed with load

    @staticmethod
    def describe(torch_ms: float, ort_ms: float, how: str = "") -> str:
        times = f"{ms_text(ort_ms)} ms on ONNX Runtime against {ms_text(torch_ms)} ms on torch eager"
        return f"{times} ({how})" if how else times

    def again(self, times: str) -> BackendTrial:
        """A second trial, from LIVE_DELAY_S on, where this one (``times``) disagreed with load."""
        return BackendTrial(self.runner, self.load, self.threads, self.threads_note, confirms=times)

    def choose(self, torch_ms: float, ort_ms: float, how: str, *, at_load: bool = False) -> tuple[Runner | None, str]:
        """The backend to keep, and why, with the two times and ``how`` they were taken: ONNX
        Runtime's runner where it took at most BACKEND_GAIN of torch's time, None (torch eager) where
        torch took at most BACKEND_GAIN of ONNX Runtime's, and between the two what ``load`` chose
        (torch eager ``at_load`` itself); between the two, the note says why the one kept stays.
        Live frames change the load's choice only where they clearly disagree with it: in the
        window, one trial timed AlexNet at 4.62 ms on ONNX Runtime against 4.55 on torch while the
        window was busy drawing, and switched it to torch, where it then took 4.5 ms a frame against
        3.0-3.2 on ONNX Runtime in other runs (preprocessing in)."""
        times = self.describe(torch_ms, ort_ms, how)
        margin = round(100 * (1 - BACKEND_GAIN))
        if ort_ms <= BACKEND_GAIN * torch_ms:
            ort, why = True, ""
        elif torch_ms <= BACKEND_GAIN * ort_ms:
            ort, why = False, ""
        elif at_load:
            ort, why = False, f"; ONNX Runtime is not {margin}% faster"
        else:
            ort, why = self.load is not None, f"; within {margin}% of each other, what load chose stays"
        if ort:
            note = self.runner.threads_note
            return self.runner, f"{label('onnxruntime')}: {times}{why}" + (f"; {note}" if note else "")
        return None, f"torch eager: {times}{why}"


def ms_text(ms: float) -> str:
    """A time in ms with the digits that matter: 0.47, 4.52, 94.0 (10 and over: one decimal)."""
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"


@contextmanager
def torch_threads(n: int | None):
    """Torch's intra-op threads set to ``n`` inside the block and restored after (0.1 µs a change);
    None changes nothing."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def thread_choice_note(threads: int, ms: float, other: int, other_ms: float, how: str) -> str:
    """Why a network runs on ``threads`` torch threads, in words: ``2 torch threads: 94.0 ms
    against 178 ms on 1 (how)``."""
    return (f"{threads} torch thread{'s' if threads > 1 else ''}: {ms_text(ms)} ms against {ms_text(other_ms)} ms "
            f"on {other} ({how})")
