"""Shared test set-up: Qt offscreen, a small torch thread pool, and no user cache touched."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def _onnx_exports(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch, _onnx_exports):
    """Caches (decoded data sets, torch hub) live in a temporary folder, never the user's. The ONNX
    exports of the bundled networks are shared by the whole run, as a user's cache keeps them (an
    export of ENet takes seconds; tests/test_backend.py tests the cache itself in its own folder)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CNN_ARENA_CACHE", str(cache / "arena"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    # The window and predict run on torch eager unless a test asks for another backend: auto times
    # every network on two runtimes at load, which tests/test_backend.py and the predict and bench
    # contracts cover (they name their backend)
    monkeypatch.setenv("CNN_ARENA_BACKEND", "torch")
    (cache / "arena").mkdir()
    (cache / "arena" / "onnx").symlink_to(_onnx_exports, target_is_directory=True)
