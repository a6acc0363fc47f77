"""A perturbation applied by the engine: all networks see the same perturbed frame, and each
result carries the clean top-1 it is compared with."""

from __future__ import annotations

import time

import numpy as np

from engine.api import Engine, Perturbation


def _next_result(results: list, after: int, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(results) > after:
            return results[-1]
        time.sleep(0.01)
    raise AssertionError("no result")


def test_a_perturbed_frame_carries_the_clean_answers_and_severity_0_is_the_frame_itself():
    results: list = []
    engine = Engine("cifar10", models=["lenet5", "enet"], on_result=lambda r, _s: results.append(r)).start()
    try:
        image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        engine.submit(image, "noise.png")
        clean = _next_result(results, 0)
        assert clean.perturbation == "" and clean.clean_top1 is None and np.array_equal(clean.frame, image)

        engine.set_perturbation(Perturbation("occlude", 5, center=(0.25, 0.25)))  # reruns the frame on screen
        hidden = _next_result(results, 1)
        assert hidden.perturbation == "occluding square 5" and np.array_equal(hidden.original, image)
        assert not np.array_equal(hidden.frame, image) and (hidden.frame == 128).all(axis=2).sum() > 100
        assert dict(hidden.clean_top1) == {n: r.top1 for n, r in clean.results.items()}

        engine.set_perturbation(Perturbation("gaussian_blur", 0))  # severity 0: the clean frame, bit for bit
        again = _next_result(results, 2)
        assert np.array_equal(again.frame, image) and again.clean_top1 is None
        assert {n: r.top1 for n, r in again.results.items()} == dict(hidden.clean_top1)
    finally:
        engine.stop(2.0)
