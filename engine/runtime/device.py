"""Which device to compute on, in words, and honest timing on it."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import torch

from engine.common.settings import ORT_THREADS_VAR, THREADS_VAR, current

_warned: set[str] = set()


def cores() -> int:
    """The cores this process may run on (its affinity where the system says, else the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def clamp_threads(wanted: int, what: str) -> int:
    """``wanted`` threads, at most one per core: more only oversubscribes the CPU (10,000 threads
    took a machine's load to 2,211). Says so in one line on stderr when it cuts ``wanted``."""
    limit = cores()
    if wanted <= limit:
        return wanted
    line = f"{what} {wanted} is more than the {limit} cores here; using {limit}"
    if line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr, flush=True)
    return limit


def resolve_device(name: str | torch.device | None, *, strict: bool = False) -> torch.device:
    """``auto``/``cpu``/``cuda``/``cuda:N`` to a device that exists here.

    ``auto`` picks CUDA when present. An unavailable CUDA falls back to the CPU (the window and the
    engine say so), or with ``strict`` raises ValueError with one line (training, evaluation: a
    run the user asked to be on the GPU should not quietly take hours on the CPU).
    """
    text = str(name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"unknown device {text!r}; expected auto, cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {text!r}; expected auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        if strict:
            raise ValueError("CUDA was asked for but no CUDA GPU is available (use --device cpu)")
        return torch.device("cpu")
    return device


def device_label(device: torch.device) -> str:
    """The device in words for reports: ``cpu (2 threads)`` or the GPU's name."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer around it measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def share_cpu_with_opencv() -> None:
    """Keep OpenCV's own thread pool out of the way of torch's.

    Decoding and resizing a frame is small work; when OpenCV spreads it over every core while
    torch's OpenMP team runs the networks, the two pools preempt each other at every barrier.
    """
    import cv2

    cv2.setNumThreads(1)


def configure_threads() -> int:
    """Set this process's torch threads to :func:`engine_threads` and OpenCV's to one (the window
    and the commands alike); the number of torch threads."""
    threads = engine_threads()
    torch.set_num_threads(threads)
    share_cpu_with_opencv()
    return threads


def engine_threads() -> int:
    """Torch threads for the background engine: one core fewer than the machine has.

    The engine's feeder thread decodes frames while the networks run; with every core in torch's
    OpenMP team the team keeps waiting for the thread the decoder pre-empted. ``CNN_ARENA_THREADS``
    overrides.
    """
    wanted = current().threads
    return clamp_threads(wanted, THREADS_VAR) if wanted else max(1, cores() - 1)


def engine_ort_threads() -> int:
    """ONNX Runtime's threads in the background engine: every core.

    Unlike torch's OpenMP team, ONNX Runtime's pool here spins only 50 µs for more work before it
    sleeps (engine.runtime.backends.SPIN_US), so the frame decoder gets its core when it needs it.
    A network that runs faster on one thread is measured and kept on one at load
    (``OrtRunner(pick_threads=True)``). ``CNN_ARENA_ORT_THREADS`` overrides.
    """
    wanted = current().ort_threads
    return clamp_threads(wanted, ORT_THREADS_VAR) if wanted else cores()


# The CPU features that decide which number formats run natively (Linux's names for them).
NUMERIC_FLAGS = {"avx512_vnni": "VNNI", "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX512-BF16",
                 "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8"}


def cpu_features() -> str:
    """The CPU's vector unit as torch dispatches to it (AVX2, AVX512...), with the int8 and bf16
    instructions it has, in words: ``AVX2; no VNNI, no native bf16``."""
    level = torch.backends.cpu.get_cpu_capability()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:  # not Linux: the dispatch level alone
        return level
    found = [word for flag, word in NUMERIC_FLAGS.items() if flag in flags]
    missing = [] if any("VNNI" in w for w in found) else ["no VNNI"]
    missing += [] if any("BF16" in w for w in found) else ["no native bf16"]
    return f"{level}; " + ", ".join(found + missing)


def machine_load() -> str | None:
    """A sentence when the machine's load over the last minute exceeds its cores, else None."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every system
        return None
    cores = os.cpu_count() or 1
    return f"the machine is busy (load {load:.1f} on {cores} cores)" if load > cores else None


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
