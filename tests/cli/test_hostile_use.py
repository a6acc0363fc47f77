"""The worker that cannot die, sources that cannot block, closing that cannot abort, output that
cannot rewrite a terminal: each test reproduces a defect found by an adversarial pass."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.data.imageio import InputError
from engine.live.events import Error, ErrorCode, SessionReady
from engine.live.sources import open_source
from engine.live.streams import StreamError, preflight, redact_url
from engine.live.worker import Engine
from tests.media import FakeCapture, write_image, write_video
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


_wait = wait_until


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the process has ended
        return ""


@pytest.fixture
def silent_server():
    """A loopback TCP server that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


# -- the worker lives on ----------------------------------------------------------------------


def test_a_bad_device_a_failed_warm_up_and_a_failing_frame_are_events_and_the_worker_lives(monkeypatch):
    from engine.runtime.session import InferenceSession

    events, results = [], []
    engine = Engine(device="bogus", models=["lenet5"], on_event=events.append,
                    on_result=lambda r, m: results.append(r)).start()
    try:
        assert _wait(lambda: any(isinstance(e, Error) for e in events))
        error = next(e for e in events if isinstance(e, Error))
        assert error.code == ErrorCode.DEVICE and "unknown device 'bogus'" in error.text
        assert engine.running and engine.session is None
        engine.configure(device="cpu")
        assert _wait(lambda: any(isinstance(e, SessionReady) for e in events))
        first = engine.session

        def out_of_memory(self, runs=2):
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB\nmore")

        monkeypatch.setattr(InferenceSession, "warm_up", out_of_memory)
        events.clear()
        engine.configure(profile="cifar10", device="cpu", models=["lenet5"])
        assert _wait(lambda: any(isinstance(e, Error) for e in events))
        assert [e.text for e in events if isinstance(e, Error)] == [
            "cannot start the networks: DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB; "
            "the networks keep running as they were"]
        assert engine.session is first and engine.running

        monkeypatch.setattr(first, "run", lambda *a, **k: (_ for _ in ()).throw(TypeError("bad frame")))
        events.clear()
        engine.submit(np.zeros((32, 32, 3), np.uint8))
        assert _wait(lambda: any(isinstance(e, Error) for e in events))
        assert next(e for e in events if isinstance(e, Error)).code == ErrorCode.FRAME
        monkeypatch.undo()
        engine.submit(np.zeros((32, 32, 3), np.uint8), "after")
        assert _wait(lambda: results and results[-1].source == "after")
    finally:
        assert engine.stop(2.0)


# -- sources: the newest request wins, nothing blocks ------------------------------------------


def test_a_fifo_is_refused_as_a_source_at_once(tmp_path):
    fifo = tmp_path / "clip.tar.gz"
    os.mkfifo(fifo)
    for name in ("clip.tar.gz",):
        started = time.monotonic()
        with pytest.raises(InputError, match="not a regular file or a folder"):
            open_source(str(tmp_path / name))
        assert time.monotonic() - started < 2


def test_a_hundred_switches_with_a_dead_stream_end_on_the_last_choice(tmp_path, silent_server):
    good = write_video(tmp_path / "last.avi", frames=400, size=(64, 48))
    other = write_video(tmp_path / "other.avi", frames=400, size=(64, 48))
    image = write_image(tmp_path / "one.png")
    fifo = tmp_path / "pipe.avi"
    os.mkfifo(fifo)
    dead = f"http://127.0.0.1:{silent_server}/never"
    targets = [dead, str(other), str(fifo), str(tmp_path / "missing.avi"), str(image)]
    results = []
    engine = Engine(models=["lenet5"], on_result=lambda r, m: results.append(r)).start()
    try:
        assert _wait(lambda: engine.session is not None)
        for i in range(99):
            engine.set_source(targets[i % len(targets)], realtime=True)
            time.sleep(0.01)
        engine.set_source(str(good), realtime=True)
        last_switch = time.monotonic()
        assert _wait(lambda: any(r.source.startswith("last.avi") for r in results[-5:]), timeout=2.0), \
            f"the last source did not play within 2 s; last results from {[r.source for r in results[-3:]]}"
        assert time.monotonic() - last_switch < 2.0
        seen = len(results)
        assert _wait(lambda: len(results) >= seen + 3, timeout=10.0)
        assert all(r.source.startswith("last.avi") for r in results[seen:])  # nothing stale plays after it
    finally:
        engine.stop(2.0)


def test_a_stream_that_never_answers_gives_up_on_stop_or_deadline(silent_server):
    url = f"http://user:secret@127.0.0.1:{silent_server}/x?token=abc"
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert preflight(url, stop, timeout=10) is False
    assert time.monotonic() - started < 1.0
    with pytest.raises(StreamError) as failure:
        preflight(url, threading.Event(), timeout=0.3)
    assert "no answer" in str(failure.value) and "secret" not in str(failure.value) and "abc" not in str(failure.value)

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with pytest.raises(StreamError, match="cannot connect"):
        preflight(f"rtsp://127.0.0.1:{port}/cam", threading.Event(), timeout=2)


def test_a_stream_that_answers_passes_the_preflight():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        assert preflight(f"http://127.0.0.1:{server.getsockname()[1]}/", threading.Event(), timeout=5) is True
    finally:
        server.close()


@pytest.mark.parametrize(("url", "shown", "kept"), [
    ("rtsp://admin:p@ss@host/live", "rtsp://admin:***@host/live", "rtsp://admin@host/live"),
    ("http://host/cam?password=hunter2&fps=5", "http://host/cam?password=***&fps=5",
     "http://host/cam?password=&fps=5"),
    ("https://h/x?api_token=t0k&Signature=s1g", "https://h/x?api_token=***&Signature=***",
     "https://h/x?api_token=&Signature="),
    ("rtsp://host:554/x", "rtsp://host:554/x", "rtsp://host:554/x"),
])
def test_stream_addresses_never_show_or_keep_a_secret(url, shown, kept):
    assert redact_url(url) == shown
    assert redact_url(url, placeholder="") == kept
    source = open_source(url, capture_factory=lambda target: FakeCapture(target, opened=False))
    assert source.name == shown
    source.close()


# -- commands ---------------------------------------------------------------------------------


def _run(*argv: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


@pytest.mark.slow
def test_closing_while_the_imagenet_networks_load_exits_cleanly(tmp_path):
    report = tmp_path / "report.json"
    done = _run("--profile", "imagenet", "--quit-after", "0.3", "--report", str(report),
                env={"QT_QPA_PLATFORM": "offscreen", "CNN_ARENA_SETTINGS": str(tmp_path / "s.ini")})
    assert done.returncode == 0, done.stderr[-500:]
    assert "terminate called" not in done.stderr and "Traceback" not in done.stderr
    assert report.is_file()


def test_ctrl_c_while_starting_is_one_line():
    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "eval", "--data", "missing.tar.gz"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    maps = Path(f"/proc/{process.pid}/maps")  # torch's libraries are loading: the import is under way
    assert _wait(lambda: process.poll() is not None or "libtorch" in _read(maps), timeout=60)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip() == "interrupted", err


@pytest.mark.parametrize("argv", [["--quit-after", "nan"], ["--quit-after", "inf"], ["--quit-after", "2200000"],
                                  ["bench", "--threads", "-1"], ["predict", "--device", "bogus", "x.png"],
                                  ["bench", "--device", "bogus"], ["eval", "--data", "d", "--limit", "0"]])
def test_bad_numbers_and_devices_are_refused_by_the_parser(argv, capsys):
    from engine.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("python main.py")


def test_escape_sequences_in_a_file_name_never_reach_the_terminal(tmp_path, capsys):
    from main import main

    hostile = tmp_path / "x\x1b]0;PWNED\x07\x1b[2J.png"
    hostile.write_bytes(b"not an image")
    assert main(["predict", str(hostile)]) == 2  # no image could be read
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;PWNED\\x07" in out


def test_json_output_never_holds_nan(capsys):
    import json

    from engine.cli.output import print_json

    print_json({"prob": float("nan"), "rows": [1.5, float("inf")], "ok": 0.25})
    assert json.loads(capsys.readouterr().out) == {"prob": None, "rows": [1.5, None], "ok": 0.25}


def test_bench_counts_no_speed_for_a_source_without_frames(tmp_path):
    from engine.studies.bench import bench_pipeline

    empty = tmp_path / "zero.avi"
    empty.write_bytes(b"")
    folder = tmp_path / "nothing readable"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"broken")
    for target in (empty, folder):
        with pytest.raises(InputError):
            bench_pipeline({"models": ["lenet5"]}, str(target), frames=20)


def test_bench_pipeline_whose_networks_cannot_start_says_so_and_returns(tmp_path, monkeypatch):
    """The engine holds the first frame for networks that never come: the bench must not wait for
    them (it did, for ever)."""
    from engine.runtime.session import InferenceSession
    from engine.studies.bench import bench_pipeline

    def out_of_memory(self, runs=2):
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(InferenceSession, "warm_up", out_of_memory)
    video = write_video(tmp_path / "v.avi", frames=4, size=(64, 48))
    raised = []

    def bench():
        try:
            bench_pipeline({"models": ["lenet5"], "backend": "torch"}, str(video), frames=20)
        except InputError as e:
            raised.append(str(e))

    thread = threading.Thread(target=bench, daemon=True)  # a hang fails the test, not the suite
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert raised == ["cannot start the networks: DefaultCPUAllocator: not enough memory"]


def test_train_checks_its_output_folder_before_reading_any_data(tmp_path, capsys, monkeypatch):
    from main import main

    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path / "cache"))
    blocker = tmp_path / "a file"
    blocker.write_text("")
    assert main(["train", "--model", "lenet5", "--data", "never-read.tar.gz", "--out", str(blocker / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to w:") and "loading" not in err


# -- the window's outputs ---------------------------------------------------------------------


def test_a_screenshot_that_cannot_be_written_leaves_the_old_one(qapp, tmp_path, monkeypatch):
    from PySide6.QtGui import QPixmap
    from PySide6.QtWidgets import QWidget

    from gui.app import save_screenshot

    shot = tmp_path / "shot.png"
    widget = QWidget()
    widget.resize(40, 30)
    assert save_screenshot(widget, shot) and shot.read_bytes()[:4] == b"\x89PNG"
    good = shot.read_bytes()

    def disk_full(self, path, *args):
        Path(path).write_bytes(b"\x89PNG broken")  # a partial file, as a full disk leaves one
        return False

    monkeypatch.setattr(QPixmap, "save", disk_full)
    assert save_screenshot(widget, shot) is False
    assert shot.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["shot.png"]


def test_settings_without_a_home_go_to_the_accounts_home_not_the_root():
    from gui.settings import fallback_settings_path

    assert fallback_settings_path({"HOME": "/home/x"}) is None
    path = fallback_settings_path({})
    assert path is not None and not str(path).startswith("/.config")
    assert path.parent.parent.name == ".config" or "cnn-arena" in str(path)


def test_the_stream_dialog_never_saves_a_password(qapp, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QInputDialog

    from gui.source_bar import SourceBar, describe_target

    url = "rtsp://admin:p@ss@cam.local/live?token=abc"
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    bar = SourceBar(settings)
    chosen = []
    bar.source_chosen.connect(chosen.append)
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: (url, True))
    bar.open_stream()
    settings.sync()
    assert chosen == [url]  # the engine gets the whole address ...
    assert settings.value("stream_url") == "rtsp://admin@cam.local/live?token="  # ... the disk does not
    assert "p@ss" not in (tmp_path / "s.ini").read_text() and "abc" not in (tmp_path / "s.ini").read_text()
    assert describe_target(url) == "stream rtsp://admin:***@cam.local/live?token=***"
