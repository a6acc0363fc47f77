"""The helpers every room shares: one error line, one settings object, one timing protocol."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from engine.common import timing
from engine.common.errors import error_line
from engine.common.settings import Settings


def test_an_exception_is_one_printable_line():
    assert error_line(ValueError("first\nsecond")) == "first"
    assert error_line(RuntimeError("  \n  later line  ")) == "later line"
    assert error_line(KeyError()) == "KeyError"
    assert error_line(KeyError("x"), typed=True) == "KeyError: 'x'"
    assert error_line(ValueError("plain"), typed=True) == "plain"  # written for a person already
    assert error_line(FileNotFoundError(2, "No such file or directory", "/a/\x1b[31mb"), os_reason=True) \
        == "No such file or directory"  # the path, which may hold anything, is left out
    assert error_line(ValueError("bell\x07")) == "bell?"
    long = error_line(ValueError("x" * 500), 21)
    assert len(long) == 21 and "\u2026" in long


def test_settings_come_from_the_environment_with_the_platforms_cache_folder(tmp_path):
    default = Settings.from_environ({})
    assert default.cache_dir == Path(platformdirs.user_cache_dir("cnn-arena", appauthor=False))
    assert default.threads is None and default.backend is None and not default.debug
    chosen = Settings.from_environ({"CNN_ARENA_CACHE": str(tmp_path), "CNN_ARENA_THREADS": "3",
                                    "CNN_ARENA_ORT_THREADS": "0", "CNN_ARENA_BACKEND": "torch",
                                    "CNN_ARENA_DEBUG": "1", "CNN_ARENA_SETTINGS": str(tmp_path / "w.ini")})
    assert chosen.cache_dir == tmp_path and chosen.threads == 3 and chosen.ort_threads is None
    assert chosen.backend == "torch" and chosen.debug and chosen.window_settings == tmp_path / "w.ini"
    assert Settings.from_environ({"CNN_ARENA_THREADS": "-2"}).threads is None


def test_no_module_but_the_settings_reads_the_apps_environment():
    root = Path(__file__).resolve().parents[2]
    readers = [str(p.relative_to(root)) for folder in ("engine", "gui") for p in (root / folder).rglob("*.py")
               if '"CNN_ARENA_' in p.read_text(encoding="utf-8") and p.name != "settings.py"]
    assert readers == []


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    return now


def taking(clock, calls, name, ms):
    def run():
        calls.append(name)
        clock[0] += ms.pop(0) / 1000 if ms else 0.0
    return run


def test_paired_medians_time_the_two_in_turn(clock):
    calls = []
    a = taking(clock, calls, "a", [0, 0, 1.0, 9.0, 2.0, 3.0, 2.0, 50.0, 2.0])  # two warm-up calls first
    b = taking(clock, calls, "b", [0, 0, 5.0, 5.0, 4.0, 6.0, 5.0, 5.0, 90.0])
    assert timing.paired_medians_ms(a, b, runs=7, warmup=2) == pytest.approx((2.0, 5.0))
    assert calls == ["a", "b"] * 9


def test_timed_runs_go_on_until_both_a_count_and_a_duration(clock):
    calls = []
    run = taking(clock, calls, "r", [0.0] + [125.0] * 50)  # exact in binary
    times = timing.timed_runs(run, warmup=1, min_runs=3, min_seconds=1.0)
    assert times == [125.0] * 8  # 3 runs were not a second yet
    calls.clear()
    capped = timing.timed_runs(taking(clock, calls, "r", [1.0] * 50), warmup=0, min_runs=2, min_seconds=60,
                               max_runs=5)
    assert len(capped) == 5
    checks = []
    timing.timed_runs(taking(clock, [], "r", [1.0] * 50), warmup=0, min_runs=17, check=lambda: checks.append(1))
    assert len(checks) == 3  # every 8 runs: before runs 0, 8 and 16
