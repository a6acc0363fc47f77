"""Downloads as a job, against an HTTP server on the loopback address: progress, hash check, cancel."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from engine.data.download import DownloadError, download_file
from engine.jobs import Cancelled, JobState
from tests.waiting import wait_until

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PREFIX = hashlib.sha256(PAYLOAD).hexdigest()[:8]


@pytest.fixture
def server():
    """Serves PAYLOAD at /good, a truncated body at /short and a 404 elsewhere; 127.0.0.1 only."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path in ("/good", "/short"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD if self.path == "/good" else PAYLOAD[:1000])
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_a_download_reports_progress_and_checks_the_hash_in_its_name(server, tmp_path):
    seen = []
    dest = tmp_path / "hub" / f"net-{PREFIX}.pth"
    assert download_file(f"{server}/good", dest, JobState(on_progress=seen.append)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == len(PAYLOAD)
    assert [p.done for p in seen] == sorted(p.done for p in seen) and len(seen) > 10
    wrong = tmp_path / "hub" / "net-deadbeef.pth"
    with pytest.raises(DownloadError, match="corrupt"):
        download_file(f"{server}/good", wrong, JobState())
    assert not wrong.exists() and list((tmp_path / "hub").iterdir()) == [dest]  # no partial file left


@pytest.mark.parametrize("path, message", [("/short", "broke off"), ("/missing", "the weights server answered 404"),
                                           (None, "cannot reach the weights server")])
def test_a_failed_download_is_one_line_and_leaves_nothing(server, tmp_path, path, message):
    import socket

    if path is None:  # offline: nothing listens at the address
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/x.pth"
        closed.close()
    else:
        url = f"{server}{path}"
    with pytest.raises(DownloadError, match=message) as e:
        download_file(url, tmp_path / "x.pth", JobState())
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []
    if path is None:
        # neutral: the command line and the window each say how to load a local file in their own terms
        assert "local weights file" in str(e.value) and "Load weights" not in str(e.value)


@pytest.mark.slow  # builds the four ImageNet networks with random weights: seconds
def test_predict_download_offline_exits_2_but_answers_with_what_it_has(tmp_path, capsys, monkeypatch):
    import engine.data.download as download
    from main import main
    from tests.media import write_image

    def offline(url, dest, job, *, label="", timeout=30.0):
        raise DownloadError(f"{label}: cannot reach the weights server (no route); check the connection")

    monkeypatch.setattr(download, "download_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    image = write_image(tmp_path / "a.png")
    status = main(["predict", "--profile", "imagenet", "--download", "--runs", "1", "--precision", "fp32", "--json",
                   str(image)])
    captured = capsys.readouterr()
    assert status == 2 and "cannot reach the weights server" in captured.err
    assert "--weights MODEL=PATH" in captured.err and "Change" not in captured.err  # no window menu on a terminal
    import json
    answer = json.loads(captured.out)[0]["results"]["alexnet"]
    assert answer["weights"] == "untrained" and len(answer["top"]) == 5


def test_a_cancelled_download_stops_and_leaves_nothing(server, tmp_path):
    job = JobState()

    def cancel_halfway(p):
        if p.done > len(PAYLOAD) // 2:
            job.cancel()

    job._on_progress = cancel_halfway
    with pytest.raises(Cancelled):
        download_file(f"{server}/good", tmp_path / f"net-{PREFIX}.pth", job)
    assert list(Path(tmp_path).iterdir()) == []


def test_the_engine_downloads_off_the_inference_thread_and_reports_progress(monkeypatch):

    import engine.data.download as download
    import engine.live.worker as worker
    from engine.data.download import DownloadError
    from engine.data.jobs import DownloadWeightsJob
    from engine.jobs import JobProgress
    from engine.live.events import Error, ErrorCode, JobEnded, JobOutcome

    threads = []

    def fake_download(specs, job):
        threads.append(threading.current_thread().name)
        assert [s.name for s in specs] == ["alexnet"]
        for done in (0, 50, 100):
            job.report(JobProgress("download", done, 100, "alexnet"))
        raise DownloadError("alexnet: cannot download (no network)")

    monkeypatch.setattr(download, "download_weights", fake_download)
    events = []
    engine = worker.Engine("cifar10", models=["lenet5"], on_event=events.append).start()
    try:
        job = DownloadWeightsJob(("alexnet",))
        assert engine.start_job(job)
        assert wait_until(lambda: any(isinstance(e, Error) for e in events), 30)
        progress = [e.done for e in events if isinstance(e, JobProgress)]
        assert progress == [0, 50, 100] and threads == ["engine job download"]
        error = next(e for e in events if isinstance(e, Error))
        assert error.code == ErrorCode.DOWNLOAD and error.text == "alexnet: cannot download (no network)"
        ended = [e for e in events if isinstance(e, JobEnded)]
        assert ended == [JobEnded(job, JobOutcome.FAILED, "alexnet: cannot download (no network)", None,
                                  ErrorCode.DOWNLOAD)]
        assert events.index(ended[0]) > max(i for i, e in enumerate(events) if isinstance(e, JobProgress))
    finally:
        assert engine.stop(2.0)


def test_cifar10_downloads_once_with_its_md5_checked_and_the_engine_says_where(server, tmp_path, monkeypatch):
    import engine.data.download as download
    import engine.live.worker as worker
    from engine.data.download import cifar10_archive_path, download_cifar10
    from engine.data.jobs import DownloadCifar10Job
    from engine.live.events import JobEnded, JobOutcome

    md5 = hashlib.md5(PAYLOAD).hexdigest()
    with pytest.raises(DownloadError, match="md5 does not match"):
        download_cifar10(JobState(), tmp_path, url=f"{server}/good", md5="0" * 32)
    assert not cifar10_archive_path(tmp_path).exists() and list((tmp_path / "data").iterdir()) == []
    path = download_cifar10(JobState(), tmp_path, url=f"{server}/good", md5=md5)
    assert path == cifar10_archive_path(tmp_path) and path.read_bytes() == PAYLOAD
    assert download_cifar10(JobState(), tmp_path, url=f"{server}/missing", md5=md5) == path  # kept: no request

    monkeypatch.setattr(download, "download_cifar10", lambda job: path)
    events = []
    engine = worker.Engine("cifar10", models=["lenet5"], on_event=events.append).start()
    try:
        assert engine.start_job(DownloadCifar10Job())
        assert wait_until(lambda: any(isinstance(e, JobEnded) for e in events), 30)
        ended = next(e for e in events if isinstance(e, JobEnded))
        assert (ended.job, ended.outcome, ended.result) == (DownloadCifar10Job(), JobOutcome.DONE, str(path))
    finally:
        assert engine.stop(2.0)
