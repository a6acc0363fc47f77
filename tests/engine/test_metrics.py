from __future__ import annotations

from collections import deque
from types import MappingProxyType

import numpy as np
import pytest

from engine.live.metrics import MetricsTracker, jitter, percentiles, row_percentiles
from engine.runtime.session import FrameResult, ModelResult


def fake(model: str, top: int, ms: float, classes: int = 10) -> ModelResult:
    probs = np.full(classes, 0.01, np.float32)
    probs[top] = 1 - 0.01 * (classes - 1)
    order = np.argsort(-probs, kind="stable")[:5]
    return ModelResult(model, order, tuple(str(i) for i in range(classes)), probs, 1.0, ms - 1.0,
                       np.zeros((2, 2, 3), np.uint8), MappingProxyType({}))


def frame(i: int, tops: dict[str, int], ms: dict[str, float], label: int | None = None) -> FrameResult:
    return FrameResult(i, "t", label, None, {m: fake(m, t, ms[m]) for m, t in tops.items()})


def test_percentiles_and_jitter_by_hand():
    assert percentiles([1, 2, 3, 4, 5], (50, 95)) == (3.0, pytest.approx(4.8))
    assert jitter([10, 12, 11, 15]) == pytest.approx((2 + 1 + 4) / 3)
    assert np.isnan(percentiles([])[0]) and jitter([5]) == 0.0


def test_percentiles_agree_with_numpy():
    """The written-out interpolation gives numpy's default (linear) percentiles."""
    rng = np.random.default_rng(3)
    qs = (0, 12.5, 50, 95, 99, 100)
    for n in (1, 2, 3, 10, 299, 300):
        values = deque(rng.standard_normal(n) * 40, maxlen=300)
        np.testing.assert_allclose(percentiles(values, qs), np.percentile(np.array(values), qs), rtol=1e-12)
        np.testing.assert_allclose(percentiles(np.array(values), qs), np.percentile(np.array(values), qs), rtol=1e-12)
    assert all(np.isnan(percentiles([1.0, float("nan"), 3.0])))
    assert percentiles([1.0, 2.0, float("inf")], (50,)) == (2.0,)
    with pytest.raises(ValueError):
        percentiles([1.0], (101,))
    rows = rng.standard_normal((3, 57))
    rows[1, 7] = np.nan  # one row's NaN leaves the others alone
    got = row_percentiles(rows, qs)
    np.testing.assert_allclose(got[[0, 2]], np.percentile(rows[[0, 2]], qs, axis=1).T, rtol=1e-12)
    assert np.isnan(got[1]).all() and row_percentiles(np.empty((2, 0)), qs).shape == (2, len(qs))


def test_running_accuracy_confusion_and_agreement():
    clock = iter(np.arange(0, 10, 0.5)).__next__
    t = MetricsTracker(["a", "b"], 10, clock=clock)
    ms = {"a": 2.0, "b": 4.0}
    t.update(frame(0, {"a": 1, "b": 1}, ms, label=1))
    t.update(frame(1, {"a": 2, "b": 3}, ms, label=3))
    t.update(frame(2, {"a": 5, "b": 5}, ms, label=4))
    t.update(FrameResult(3, "t", None, None, {}, error="bad.jpg: empty file"))
    s = t.snapshot(dropped=2)
    assert s.frames == 4 and s.errors == 1 and s.dropped == 2
    assert s.models["a"].top1 == pytest.approx(1 / 3) and s.models["b"].top1 == pytest.approx(2 / 3)
    assert s.models["a"].confusion[3, 2] == 1 and s.models["a"].confusion.sum() == 3
    assert s.agreement[0, 1] == pytest.approx(2 / 3) and s.agreement[0, 0] == 1.0
    assert s.all_agree_rate == pytest.approx(2 / 3)
    assert s.models["b"].p50_ms == 4.0 and s.models["b"].network_fps == pytest.approx(250)
    assert s.pipeline_fps == pytest.approx(2.0)  # one result every 0.5 s on the fake clock
    assert not s.agreement.flags.writeable


def test_top5_counts_a_label_in_the_first_five():
    t = MetricsTracker(["a"], 10)
    t.update(frame(0, {"a": 0}, {"a": 1.0}, label=4))  # top-1 is 0; 1..4 follow in order
    assert t.snapshot().models["a"].top5 == 1.0 and t.snapshot().models["a"].top1 == 0.0


def test_flip_rate_only_on_continuous_sources():
    t = MetricsTracker(["a"], 10)
    for i, top in enumerate([1, 1, 2, 2, 1]):
        t.update(frame(i, {"a": top}, {"a": 1.0}), continuous=True)
    assert t.snapshot().models["a"].flip_rate == pytest.approx(2 / 4)
    t2 = MetricsTracker(["a"], 10)
    for i, top in enumerate([1, 2, 1]):
        t2.update(frame(i, {"a": top}, {"a": 1.0}))
    assert t2.snapshot().models["a"].flip_rate is None
    assert t2.snapshot().models["a"].top1 is None  # no labels, no accuracy


def test_latency_window_is_bounded():
    t = MetricsTracker(["a"], 10, window=50)
    for i in range(500):
        t.update(frame(i, {"a": 0}, {"a": float(i)}))
    lat = t.snapshot().models["a"].latency_ms
    assert len(lat) == 50 and lat[0] == 450.0 and lat[-1] == 499.0 and (np.diff(lat) == 1).all()  # oldest first
    assert not lat.flags.writeable and np.isnan(row_percentiles(np.empty((2, 0)), (50,))).all()


def test_the_frame_rate_counts_only_the_time_frames_kept_coming():
    times = [i / 30 for i in range(10)] + [0.3 + 5.0 + i / 30 for i in range(10)]  # 5 s idle between
    t = MetricsTracker(["a"], 10, clock=iter(times).__next__)
    t.update(frame(0, {"a": 1}, {"a": 2.0}))
    assert t.snapshot().pipeline_fps is None  # one frame (a single image) has no rate
    for i in range(1, 20):
        t.update(frame(i, {"a": 1}, {"a": 2.0}))
    s = t.snapshot()
    assert s.pipeline_fps == pytest.approx(30.0)  # not 19 frames / 5.6 s = 3.4 fps
    assert np.isnan(s.history_fps[0]) and s.history_fps[-1] == pytest.approx(30.0)


def test_forward_and_preprocessing_are_told_apart_and_a_reset_starts_over():
    t = MetricsTracker(["a"], 10)
    for i in range(3):
        t.update(frame(i, {"a": 1}, {"a": 5.0}, label=1))
    s = t.snapshot()
    assert (s.models["a"].p50_ms, s.models["a"].forward_p50_ms, s.models["a"].preprocess_p50_ms) == (5.0, 4.0, 1.0)
    assert s.models["a"].top1 == 1.0
    t.reset("video clip.avi")
    s = t.snapshot()
    assert s.source == "video clip.avi" and s.frames == 0 and s.models["a"].labelled == 0
    assert s.models["a"].top1 is None and len(s.models["a"].latency_ms) == 0 and len(s.history_fps) == 0


def test_a_snapshot_keeps_its_figures_while_the_tracker_goes_on():
    """A snapshot's percentiles and confusion are worked out when first read, possibly long after:
    what it says is still the state when it was taken, across the answer log's growth and the
    latency ring's wrap."""
    rng = np.random.default_rng(5)
    t = MetricsTracker(["a"], 10, window=300)
    labels, tops, times = rng.integers(0, 10, 2500), rng.integers(0, 10, 2500), 1.0 + 4 * rng.random(2500)
    for i in range(1000):
        t.update(frame(i, {"a": int(tops[i])}, {"a": float(times[i])}, label=int(labels[i])))
    early = t.snapshot().models["a"]
    for i in range(1000, 2500):  # the answers' buffer grows past 1024 and 2048; the ring wraps 5 times
        t.update(frame(i, {"a": int(tops[i])}, {"a": float(times[i])}, label=int(labels[i])))
    late = t.snapshot().models["a"]
    for stats, n in ((early, 1000), (late, 2500)):
        expected = np.zeros((10, 10), np.int64)
        np.add.at(expected, (labels[:n], tops[:n]), 1)
        np.testing.assert_array_equal(stats.confusion, expected)
        assert not stats.confusion.flags.writeable and stats.labelled == n
        recent = times[n - 300:n]
        assert stats.p50_ms == pytest.approx(np.percentile(recent, 50), rel=1e-9)
        assert stats.p95_ms == pytest.approx(np.percentile(recent, 95), rel=1e-9)
        assert stats.jitter_ms == pytest.approx(np.mean(np.abs(np.diff(recent))), rel=1e-9)
        assert stats.network_fps == pytest.approx(1000 / np.percentile(recent, 50), rel=1e-9)
    assert MetricsTracker(["a"], 10).snapshot().models["a"].confusion is None  # no labels, no matrix
