from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.live.events import Error, ErrorCode
from engine.live.sources import ArraySource, Frame, Source
from engine.live.worker import Engine
from tests.media import FakeCapture, write_image, write_video
from tests.waiting import no_thread_left, wait_until


class Recorder:
    def __init__(self) -> None:
        self.results, self.events = [], []
        self.lock = threading.Lock()

    def on_result(self, result, snapshot) -> None:
        with self.lock:
            self.results.append((result, snapshot))

    def on_event(self, event) -> None:
        with self.lock:
            self.events.append(event)

    def wait(self, predicate, timeout: float = 60.0) -> None:
        def met() -> bool:
            with self.lock:
                return bool(predicate(self))
        assert wait_until(met, timeout), "timed out waiting for the engine"

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


@pytest.fixture
def engine_and_recorder():
    rec = Recorder()
    threads_before = set(threading.enumerate())
    engine = Engine(models=["lenet5", "enet"], on_result=rec.on_result, on_event=rec.on_event).start()
    rec.wait(lambda r: "SessionReady" in r.kinds())
    yield engine, rec
    assert engine.stop(timeout=2.0)
    assert no_thread_left(threads_before), "the engine left a thread behind"


def test_video_runs_through_without_drops_when_not_realtime(engine_and_recorder, tmp_path):
    engine, rec = engine_and_recorder
    engine.set_source(write_video(tmp_path / "v.avi", frames=8), realtime=False)
    rec.wait(lambda r: "SourceEnded" in r.kinds())
    assert engine.wait_idle(30)
    ids = [r.frame_id for r, _ in rec.results]
    assert ids == list(range(8)) and engine.dropped == 0
    last, snapshot = rec.results[-1]
    assert set(last.results) == {"lenet5", "enet"}
    assert snapshot.frames == 8 and snapshot.models["lenet5"].flip_rate is not None
    assert last.results["lenet5"].activations  # default layer captured


class SlowLive(Source):
    """A live source producing frames faster than the networks can take them."""

    live = True
    name = "fast camera"

    def __iter__(self):
        for i in range(200):
            yield Frame(i, np.full((32, 32, 3), i % 255, np.uint8), self.name)
            time.sleep(0.0005)


def test_latest_frame_wins_and_drops_are_counted(engine_and_recorder):
    engine, rec = engine_and_recorder
    engine.set_source(SlowLive())
    rec.wait(lambda r: "SourceEnded" in r.kinds())
    assert engine.wait_idle(30)
    ids = [r.frame_id for r, _ in rec.results]
    assert ids == sorted(ids) and ids[-1] == 199  # the newest frame is always the one processed
    assert engine.dropped > 0 and engine.dropped + len(ids) == 200
    assert rec.results[-1][1].dropped == engine.dropped


def test_pause_step_resume(engine_and_recorder):
    engine, rec = engine_and_recorder
    engine.pause()
    frames = [np.full((32, 32, 3), i, np.uint8) for i in range(5)]
    engine.set_source(ArraySource(frames, "five"))
    rec.wait(lambda r: engine.held)  # the source holds its first frame until play or a step
    assert rec.results == []
    engine.step()
    rec.wait(lambda r: len(r.results) == 1 and engine.held)  # one frame through, the next one held
    assert len(rec.results) == 1
    engine.resume()
    rec.wait(lambda r: len(r.results) == 5)


def test_bad_frames_and_bad_sources_are_messages_not_crashes(engine_and_recorder, tmp_path):
    engine, rec = engine_and_recorder
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    engine.set_source([empty, write_image(tmp_path / "ok.png")])
    rec.wait(lambda r: len(r.results) == 2)
    bad, good = rec.results[0][0], rec.results[1][0]
    assert bad.error == "empty.jpg: empty file (0 bytes)" and good.ok
    engine.set_source(tmp_path / "missing.mp4")
    rec.wait(lambda r: any(isinstance(e, Error) and e.code == ErrorCode.SOURCE and "missing.mp4" in e.text
                           for e in r.events))
    engine.submit(np.zeros((10, 10, 3), np.uint8), "pasted")
    rec.wait(lambda r: r.results[-1][0].source == "pasted")  # still running


def test_unplugged_camera_reports_and_engine_keeps_running(engine_and_recorder):
    engine, rec = engine_and_recorder
    engine.set_source("0", capture_factory=lambda t: FakeCapture(t, frames=10))
    rec.wait(lambda r: any("stopped sending frames" in getattr(e, "text", "") for e in r.events))
    assert any(r.ok for r, _ in rec.results)
    engine.submit(np.zeros((10, 10, 3), np.uint8), "after")
    rec.wait(lambda r: r.results[-1][0].source == "after")


def test_stop_within_a_second_while_busy(tmp_path):
    engine = Engine(models=["vgg16"]).start()
    engine.set_source(write_video(tmp_path / "v.avi", frames=200), realtime=False)
    assert wait_until(lambda: engine.processed >= 2)  # frames are flowing: the worker is busy
    t0 = time.monotonic()
    assert engine.stop(timeout=1.0)
    assert time.monotonic() - t0 < 1.0


def test_capture_choice_survives_and_configure_rebuilds(engine_and_recorder):
    engine, rec = engine_and_recorder
    engine.set_capture({"lenet5": ["features.c3"]})
    engine.submit(np.zeros((32, 32, 3), np.uint8))
    rec.wait(lambda r: len(r.results) == 1)
    assert list(rec.results[0][0].results["lenet5"].activations) == ["features.c3"]
    engine.configure(models=["lenet5"])
    rec.wait(lambda r: r.kinds().count("SessionReady") == 2)
    assert engine.info.models[0].name == "lenet5" and len(engine.info.models) == 1


def test_results_say_which_capture_request_they_answer(engine_and_recorder):
    engine, rec = engine_and_recorder
    first = engine.request.generation
    engine.submit(np.zeros((32, 32, 3), np.uint8))
    rec.wait(lambda r: len(r.results) == 1)
    assert rec.results[0][0].generation == first
    generation = engine.set_capture({"lenet5": ["features.c3"]})
    assert generation == first + 1 == engine.request.generation
    assert engine.request.layers("lenet5") == ("features.c3",) and engine.request.layers("enet") == ("initial",)
    engine.submit(np.zeros((32, 32, 3), np.uint8))
    rec.wait(lambda r: len(r.results) == 2)
    newest = rec.results[1][0]
    assert newest.generation == generation and list(newest.results["lenet5"].activations) == ["features.c3"]


def test_weights_that_do_not_fit_are_refused_and_the_network_keeps_its_own(engine_and_recorder, tmp_path):
    import torch

    from engine.live.events import Error, ErrorCode
    from engine.models.registry import get_spec
    from engine.models.weights import WeightsKind, save_weights

    engine, rec = engine_and_recorder
    assert engine.info.card("lenet5").weights == WeightsKind.BUNDLED
    before = engine.session.model("lenet5").features.c1.weight.detach().clone()
    wrong = tmp_path / "enet.pth"
    torch.save(get_spec("enet").build().state_dict(), wrong)
    engine.load_weights("lenet5", wrong)
    rec.wait(lambda r: any(isinstance(e, Error) and e.code == ErrorCode.WEIGHTS for e in r.events))
    error = next(e for e in rec.events if isinstance(e, Error))
    assert error.text.startswith("enet.pth: not weights for lenet5 (cifar10)") and "keep the weights" in error.text
    assert torch.equal(engine.session.model("lenet5").features.c1.weight, before)
    assert rec.kinds().count("SessionReady") == 1  # no new session

    torch.manual_seed(1)
    mine = get_spec("lenet5").build()
    save_weights(mine, tmp_path / "mine.safetensors", storage="fp32")
    engine.load_weights("lenet5", tmp_path / "mine.safetensors")
    rec.wait(lambda r: r.kinds().count("SessionReady") == 2)
    card = engine.info.card("lenet5")
    assert card.weights == WeightsKind.CUSTOM and "mine.safetensors" in card.weights_source
    assert engine.info.card("enet").weights == WeightsKind.BUNDLED
    assert torch.equal(engine.session.model("lenet5").features.c1.weight, mine.features.c1.weight)
    engine.load_weights("lenet5", None)  # back to the bundled file
    rec.wait(lambda r: r.kinds().count("SessionReady") == 3)
    assert engine.info.card("lenet5").weights == WeightsKind.BUNDLED


class SlowReads(Source):
    """A file-like source whose reads take a while and which notices a close during a read."""

    name = "slow file"

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.release = threading.Event()
        self.closed_during_read = False
        self.closed = 0

    def __iter__(self):
        for i in range(1000):
            self.reading.set()
            self.release.wait(2.0)
            self.reading.clear()
            yield Frame(i, np.zeros((8, 8, 3), np.uint8), self.name)

    def close(self) -> None:
        if self.reading.is_set():
            self.closed_during_read = True
        self.closed += 1


def test_a_file_source_is_never_closed_during_a_read_and_switching_does_not_block(engine_and_recorder):
    engine, rec = engine_and_recorder
    slow = SlowReads()
    engine.set_source(slow)
    assert slow.reading.wait(5.0)
    t0 = time.monotonic()
    engine.set_source(ArraySource([np.zeros((8, 8, 3), np.uint8)], "next"))  # while a read is under way
    assert time.monotonic() - t0 < 0.5  # the switch does not wait for the old read
    assert slow.closed == 0
    slow.release.set()
    rec.wait(lambda r: any(res.source == "next" for res, _ in r.results))
    rec.wait(lambda r: slow.closed == 1)
    assert not slow.closed_during_read
    assert all(res.source != "slow file" for res, _ in rec.results)  # nothing from the old source after


def test_rerun_last_is_not_counted(engine_and_recorder):
    engine, rec = engine_and_recorder
    engine.submit(np.zeros((32, 32, 3), np.uint8), "one")
    rec.wait(lambda r: len(r.results) == 1)
    assert engine.rerun_last()
    rec.wait(lambda r: len(r.results) == 2)
    assert rec.results[1][0].frame_id == rec.results[0][0].frame_id
    assert rec.results[1][1].frames == 1 and engine.processed == 1


def test_labels_of_another_class_list_are_not_scored(engine_and_recorder, tmp_path):
    engine, rec = engine_and_recorder
    source = ArraySource([np.zeros((32, 32, 3), np.uint8)], "other labels", labels=[3])
    source.class_names = ("a", "b", "c", "d")
    engine.set_source(source)
    rec.wait(lambda r: len(r.results) == 1)
    assert rec.results[0][0].label is None and rec.results[0][1].models["lenet5"].top1 is None


def test_a_bad_checkpoint_at_start_reports_and_starts_on_the_default_weights(tmp_path):
    from engine.live.events import Error, ErrorCode, SessionReady
    from engine.models.weights import WeightsKind

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    rec = Recorder()
    engine = Engine(models=["lenet5"], weights={"lenet5": str(bad)}, on_result=rec.on_result,
                    on_event=rec.on_event).start()
    try:
        rec.wait(lambda r: "SessionReady" in r.kinds())
        error = next(e for e in rec.events if isinstance(e, Error))
        assert error.code == ErrorCode.WEIGHTS and error.text.startswith("bad.safetensors: corrupt or truncated")
        assert error.text.endswith("starting on the default weights")
        ready = next(e for e in rec.events if isinstance(e, SessionReady))
        assert ready.card("lenet5").weights == WeightsKind.BUNDLED
    finally:
        assert engine.stop(2.0)


def test_statistics_belong_to_a_source_and_reset_on_request(tmp_path):
    from tests.engine.test_data import make_tiny_archive

    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=1, test_per_class=2)
    video = write_video(tmp_path / "clip.avi", frames=6, size=(64, 48))
    snapshots = []
    engine = Engine(models=["lenet5"], on_result=lambda r, m: snapshots.append(m)).start()
    try:
        engine.set_source(str(archive), realtime=False)
        assert engine.wait_idle(60) and snapshots
        labelled = snapshots[-1]
        assert labelled.models["lenet5"].labelled == 6 and labelled.models["lenet5"].top1 is not None
        engine.set_source(str(video), realtime=False)
        assert engine.wait_idle(60)
        after = snapshots[-1]
        assert after.source == "clip.avi" and after.frames == 6
        assert after.models["lenet5"].labelled == 0 and after.models["lenet5"].top1 is None  # no leak
        engine.submit(np.zeros((32, 32, 3), np.uint8), "pasted image")
        assert engine.wait_idle(10)
        pasted = snapshots[-1]
        assert pasted.source == "pasted image" and pasted.frames == 1 and engine.last[0].frame_id == 0
        engine.reset_stats()
        engine.submit(np.zeros((32, 32, 3), np.uint8), "pasted image")
        assert engine.wait_idle(10) and snapshots[-1].frames == 1
    finally:
        assert engine.stop(2.0)


def test_step_back_shows_earlier_frames_again_without_counting_them(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", color=(20 * i, 0, 0))) for i in range(5)]
    results, events = [], []
    engine = Engine(models=["lenet5"], on_result=lambda r, m: results.append((r, m)), on_event=events.append).start()
    try:
        engine.set_source(paths, realtime=False)
        assert engine.wait_idle(60) and len(results) == 5
        from engine.live.events import SourceStarted
        assert [e.total for e in events if isinstance(e, SourceStarted)] == [5]

        def shown_after(action) -> tuple[int, int]:
            before = len(results)
            action()
            assert engine.wait_idle(10) and len(results) == before + 1
            result, snapshot = results[-1]
            return result.frame_id, snapshot.frames

        assert shown_after(engine.step_back) == (3, 5) and engine.paused
        assert shown_after(engine.step_back) == (2, 5)
        assert shown_after(engine.step) == (3, 5)
        assert shown_after(engine.step) == (4, 5)  # the newest again: the next step reads the source
        for _ in range(4):
            engine.step_back()
            engine.wait_idle(10)
        assert results[-1][0].frame_id == 0 and engine.step_back() is False  # nothing before the first
    finally:
        assert engine.stop(2.0)


def test_a_named_scene_labels_the_frames_that_follow(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=4, size=(64, 48))
    snapshots = []
    engine = Engine(models=["lenet5"], on_result=lambda r, m: snapshots.append((r, m))).start()
    try:
        engine.set_label(3)  # "this is a cat"
        engine.set_source(str(video), realtime=False)
        assert engine.wait_idle(60)
        result, snapshot = snapshots[-1]
        assert result.label == 3 and snapshot.models["lenet5"].labelled == 4
        assert snapshot.models["lenet5"].confusion[3].sum() == 4
        engine.set_label(None)
        engine.set_source(str(video), realtime=False)
        assert engine.wait_idle(60)
        assert snapshots[-1][0].label is None and snapshots[-1][1].models["lenet5"].labelled == 0
    finally:
        assert engine.stop(2.0)


def test_a_thread_choice_settled_on_live_frames_comes_as_a_new_card(tmp_path, monkeypatch):
    """The engine tells of a network whose choice its first live frames settled: a ModelUpdated
    with the new card and a line to read, after the session's SessionReady; its own info follows."""
    import os

    import engine.runtime.tuner as tuner
    from engine.live.events import ModelUpdated, SessionReady
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores: the engine then leaves one to the decoder")
    monkeypatch.setattr(tuner, "HEAVY_MS", 0.0)  # every network is heavy
    monkeypatch.setattr(tuner, "PRUNE_RATIO", 1e9)
    monkeypatch.setattr(tuner, "RECHECK_RATIO", 1e9)
    monkeypatch.setattr(tuner, "TRIAL_BLOCK", 2)
    monkeypatch.setattr(tuner, "TRIAL_BLOCKS", 1)
    monkeypatch.setattr(tuner, "LIVE_DELAY_S", 0.0)
    monkeypatch.setattr(tuner, "MANY_THREADS_GAIN", 1e9)  # every core, at load and live
    monkeypatch.setattr(tuner, "time_candidates", lambda passes, runs: {c: 5.0 if c.threads else 10.0 for c in passes})
    rec = Recorder()
    engine = Engine(models=["lenet5"], precision="fp32", backend="torch", on_result=rec.on_result,
                    on_event=rec.on_event).start()
    try:
        engine.set_source(write_video(tmp_path / "v.avi", frames=6), realtime=False)
        rec.wait(lambda r: "SourceEnded" in r.kinds())
        assert engine.wait_idle(30)
        kinds = rec.kinds()
        assert kinds.count("ModelUpdated") == 1 and kinds.index("SessionReady") < kinds.index("ModelUpdated")
        update = next(e for e in rec.events if isinstance(e, ModelUpdated))
        ready = next(e for e in rec.events if isinstance(e, SessionReady))
        note = update.card.backend_note
        assert note == update.card.runtime.text() and note.endswith("what load chose stays")
        assert "(medians of 1 live frames each, in blocks of 2 alternated, on live frames)" in note
        assert update.text == f"LeNet-5 runs on {note}" and "\n" not in update.text
        assert update.card.threads == os.cpu_count()
        assert "live frames" not in ready.card("lenet5").backend_note  # the load's, as it was
        assert engine.info.card("lenet5") == update.card
    finally:
        assert engine.stop(2.0)


def test_a_frame_shown_again_stays_on_screen_while_the_source_is_paused(engine_and_recorder):
    """Running flat out, the feeder always waits with its next frame; shown again from the
    statistics, a kept frame was replaced by that one at once (the first try showed another frame)."""
    engine, rec = engine_and_recorder
    images = [np.full((32, 32, 3), i % 256, np.uint8) for i in range(400)]
    engine.set_source(ArraySource(images, "many"), realtime=False)
    rec.wait(lambda r: len(r.results) >= 6)
    kept = rec.results[2][0].frame_id
    assert engine.show_kept(kept) and engine.paused

    def settled(r) -> bool:
        arrived = any(res.frame_id == kept and res is not r.results[2][0] for res, _ in r.results[6:])
        return arrived and engine.held  # the feeder holds its next frame; nothing left to run

    rec.wait(settled)
    assert rec.results[-1][0].frame_id == kept
    engine.resume()  # Play: the source goes on from where it was
    rec.wait(lambda r: r.results[-1][0].frame_id > kept + 4)
