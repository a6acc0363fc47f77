"""Shared test set-up: Qt offscreen, a small torch thread pool, and no user cache touched."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Caches (decoded data sets, torch hub) live in a temporary folder, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CNN_ARENA_CACHE", str(cache / "arena"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
