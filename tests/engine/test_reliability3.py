"""Round three of hostile use: outputs that respect links, sources that stop, caches and
checkpoints that cannot hurt."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.common.files import atomic_write

ROOT = Path(__file__).resolve().parents[2]


# -- 1: outputs written through links and special files ------------------------------------------

def test_atomic_write_keeps_a_symlink_and_writes_its_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write(link, lambda tmp: tmp.write_text("new"))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_atomic_write_through_a_dangling_link_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "made.json")
    atomic_write(link, lambda tmp: tmp.write_text("x"))
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "x"


def test_atomic_write_writes_through_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write(fifo, lambda tmp: tmp.write_bytes(b"through"))
    reader.join(10)
    assert got == [b"through"]
    assert fifo.exists() and not fifo.is_file()


def test_atomic_write_dash_is_standard_output(capfd):
    atomic_write("-", lambda tmp: tmp.write_text('{"a": 1}'))
    assert capfd.readouterr().out == '{"a": 1}'


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_report_to_dev_stdout_is_printed_and_keeps_the_device(tmp_path):
    link = tmp_path / "out"
    link.symlink_to("/dev/stdout")
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from gui.app import write_json_atomic; "
            f"write_json_atomic({str(link)!r}, {{'frames': 3}})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr
    assert '"frames": 3' in done.stdout
    assert link.is_symlink() and os.readlink(link) == "/dev/stdout"


# -- 2: a source switched away from stops; one decode of an archive is shared ---------------------

def _slow_decodes(monkeypatch, seconds: float) -> None:
    """Every image decode takes ``seconds`` longer, so that a small archive takes a while."""
    import time as _time

    import engine.data.datasets as data

    real = data._decode

    def slow(blob):
        _time.sleep(seconds)
        return real(blob)

    monkeypatch.setattr(data, "_decode", slow)


def test_a_stopped_load_gives_up_before_the_end(tmp_path):
    from engine.data.datasets import load_cifar10
    from engine.data.shared import Stopped
    from tests.engine.test_data import make_tiny_archive

    archive = make_tiny_archive(tmp_path / "set.tar.gz", train_per_class=60, test_per_class=4)
    stop = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        stop.set()

    with pytest.raises(Stopped):
        load_cifar10(archive, "test", progress=progress, stop=stop)
    assert 1 <= len(calls) < 10  # gave up at the next member, not after 640 of them
    assert not list((Path(os.environ["CNN_ARENA_CACHE"])).glob("cifar10-*.npz"))  # nothing cached


def test_two_loads_of_one_archive_share_one_decode(tmp_path, monkeypatch):
    import engine.data.datasets as data
    from tests.engine.test_data import make_tiny_archive

    archive = make_tiny_archive(tmp_path / "set.tar.gz")
    real, decodes, release = data._decode_archive, [], threading.Event()

    def counted(*args, **kw):
        decodes.append(1)
        assert release.wait(30)
        return real(*args, **kw)

    monkeypatch.setattr(data, "_decode_archive", counted)
    results = []
    threads = [threading.Thread(target=lambda: results.append(data.load_cifar10(archive, "test"))) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = __import__("time").monotonic() + 30
    while sum(data._DECODES.running(k) for k in list(data._DECODES._flights)) < 2:
        assert __import__("time").monotonic() < deadline
        __import__("time").sleep(0.01)
    release.set()
    for t in threads:
        t.join(30)
    assert len(decodes) == 1 and len(results) == 2
    assert (results[0][1] == results[1][1]).all()


def test_a_source_switched_away_from_stops_decoding(tmp_path, monkeypatch):
    import time

    import numpy as np
    from PIL import Image

    from engine.live.worker import Engine
    from tests.engine.test_data import make_tiny_archive

    archive = make_tiny_archive(tmp_path / "set.tar.gz", train_per_class=4, test_per_class=40)
    picture = tmp_path / "one.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(picture)
    _slow_decodes(monkeypatch, 0.03)  # 480 images: about 7 s of decoding on two threads
    before = {t for t in threading.enumerate()}
    engine = Engine(models=["lenet5"]).start()
    try:
        for _ in range(4):
            engine.set_source(str(archive))
            time.sleep(0.05)
            engine.set_source(str(picture))
        started = time.monotonic()
        while any(t.name == "engine feeder" or t.name.startswith("ThreadPoolExecutor") for t in threading.enumerate()
                  if t not in before):
            assert time.monotonic() - started < 3.0, [t.name for t in threading.enumerate()]
            time.sleep(0.02)
    finally:
        assert engine.stop(2.0)


CIFAR_ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpg.tar.gz"


def switch_burst(archive: Path, picture: Path, switches: int, gap_s: float, settle_s: float = 30.0) -> dict:
    """Threads, RSS and descriptors of this process before a burst of source switches between
    ``archive`` and ``picture`` and once the engine has settled after it."""
    import time

    import psutil

    from engine.live.worker import Engine

    me = psutil.Process()

    def level() -> dict:
        return {"threads": threading.active_count(), "rss_mb": me.memory_info().rss / 1e6, "fds": me.num_fds()}

    engine = Engine(models=["lenet5"]).start()
    try:
        assert engine.wait_idle(60)
        engine.set_source(str(picture))
        time.sleep(1.0)
        before = level()
        pools = set(threading.enumerate())  # another test's pools (torch.compile's) are not this engine's
        for _ in range(switches):
            engine.set_source(str(archive))
            time.sleep(gap_s)
            engine.set_source(str(picture))
            time.sleep(gap_s)
        started = time.monotonic()
        while any(t.name == "engine feeder" or (t.name.startswith("ThreadPoolExecutor") and t not in pools)
                  for t in threading.enumerate()):
            assert time.monotonic() - started < settle_s, [t.name for t in threading.enumerate()]
            time.sleep(0.05)
        stopped_after = time.monotonic() - started
        after = level()
    finally:
        engine.stop(2.0)
    return {"before": before, "after": after, "settled_s": stopped_after}


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason="needs the CIFAR-10 JPEG archive")
def test_a_burst_of_switches_leaves_threads_memory_and_descriptors_as_they_were(tmp_path):
    import numpy as np
    from PIL import Image

    picture = tmp_path / "one.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(picture)
    got = switch_burst(CIFAR_ARCHIVE, picture, switches=8, gap_s=0.3)
    print(got)
    before, after = got["before"], got["after"]
    assert after["threads"] <= before["threads"] * 1.1
    assert after["fds"] <= before["fds"] * 1.1
    assert after["rss_mb"] <= before["rss_mb"] * 1.1


# -- 3: thread counts are at most one per core ---------------------------------------------------

@pytest.mark.slow  # a whole bench of the four networks
def test_bench_threads_above_the_cores_are_clamped_in_one_line(capsys, monkeypatch):
    import json

    import torch

    import engine.runtime.device as device
    from main import main

    monkeypatch.setattr(device, "cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        assert main(["bench", "--threads", "10000", "--runs", "1", "--min-seconds", "0", "--batch", "1",
                     "--json"]) == 0
        captured = capsys.readouterr()
    finally:
        torch.set_num_threads(before)
    assert json.loads(captured.out)["threads"] == 2
    assert "--threads 10000 is more than the 2 cores here; using 2" in captured.err


def test_env_threads_are_clamped_to_the_cores(monkeypatch, capsys):
    import engine.runtime.device as device

    monkeypatch.setattr(device, "cores", lambda: 2)
    monkeypatch.setenv("CNN_ARENA_THREADS", "10000")
    monkeypatch.setenv("CNN_ARENA_ORT_THREADS", "99999")
    assert device.engine_threads() == 2
    assert device.engine_ort_threads() == 2
    err = capsys.readouterr().err
    assert "CNN_ARENA_THREADS 10000 is more than the 2 cores here; using 2" in err


# -- 4: a full disk during train -------------------------------------------------------------------

def _tiny_train_argv(tmp_path, *extra: str) -> list[str]:
    from tests.engine.test_data import make_tiny_archive

    archive = tmp_path / "tiny.tar.gz"
    if not archive.exists():
        make_tiny_archive(archive, train_per_class=8, test_per_class=2)
    return ["train", "--model", "lenet5", "--data", str(archive), "--epochs", "1", "--limit", "48", "--val", "12",
            "--device", "cpu", "--batch-size", "12", *extra]


def _run_cli(argv: list[str]) -> int:
    from engine.cli import build_parser, run_command

    return run_command(build_parser().parse_args(argv))


def test_a_full_disk_for_the_final_weights_keeps_the_previous_file(tmp_path, capsys, monkeypatch):
    import safetensors.torch

    import engine.models.weights as weights

    out = tmp_path / "w"
    assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(out))) == 0
    previous = (out / "lenet5_cifar10.safetensors").read_bytes()
    capsys.readouterr()

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # the start of a file, then no room
        raise safetensors.SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(weights, "save_file", full)
    assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(out), "--restart")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write lenet5_cifar10.safetensors") and "No space left" in err[-1]
    assert (out / "lenet5_cifar10.safetensors").read_bytes() == previous
    assert sorted(p.name for p in out.iterdir()) == ["lenet5_cifar10.json", "lenet5_cifar10.safetensors"]


def test_a_full_disk_for_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    def full(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(torch, "save", full)
    assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(tmp_path / "w"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: lenet5: checkpoint.pt: cannot be written (")
    assert "--resume continues" in err[-1]
    assert not list((Path(os.environ["CNN_ARENA_CACHE"]) / "runs").rglob("*.tmp"))


# -- 12: user mistakes are one line and exit 2 ----------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--set", "crop_pad=100"], "--set crop_pad=100: must be between 0 and 31"),
    (["--set", "label_smoothing=2"], "--set label_smoothing=2.0: must be between 0 and 1"),
])
def test_train_recipe_values_out_of_range_are_one_line(tmp_path, capsys, extra, message):
    assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(tmp_path / "w"), *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {message}" or err[-1].startswith(f"error: {message}")
    assert "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("argv", [
    ["train", "--model", "lenet5", "--seed", "-1"],
    ["train", "--model", "lenet5", "--seed", "18446744073709551617"],
    ["robustness", "--data", "x", "--seed", "-1"],
])
def test_seeds_outside_their_range_are_refused_by_the_parser(argv, capsys):
    from main import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "--seed: must be between 0 and 4294967295" in capsys.readouterr().err


def test_a_batch_larger_than_memory_is_cut_to_what_fits(monkeypatch):
    import collections

    import psutil

    from engine.models.complexity import complexity
    from engine.runtime.session import InferenceSession
    from engine.studies.bench import bench_throughput, memory_bound_batch

    memory = collections.namedtuple("memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(200_000_000))  # a small machine's free memory
    session = InferenceSession("cifar10", "cpu", ["lenet5"], backend="torch")
    per_image = 4 * 3 * 32 * 32 + complexity("lenet5", "cifar10").activation_mb * 1e6
    bound = memory_bound_batch(session, "lenet5")
    assert bound == int(100_000_000 // per_image)
    rate, batch = bench_throughput(session, "lenet5", 100_000_000, seconds=0.0)
    assert rate > 0 and batch == bound


# -- 9: damaged caches are one line and rebuilt; damaged checkpoints are refused in one line -------

@pytest.mark.parametrize("content", [b"", b"PK\x03\x04" + b"\0" * 40])
def test_a_damaged_top_images_cache_is_one_line_and_searched_again(tmp_path, caplog, content):
    from engine.models.registry import get_spec
    from engine.studies.top_images import _load_cached

    path = tmp_path / "lenet5-features.c1-abc.npz"
    path.write_bytes(content)
    with caplog.at_level("WARNING", logger="engine.cache"):
        assert _load_cached(path, get_spec("lenet5", "cifar10"), "features.c1", 10, 3) is None
    assert len(caplog.records) == 1 and "top-images cache" in caplog.records[0].getMessage()
    assert "built again" in caplog.records[0].getMessage()


def _analysis_dict() -> dict:
    from engine.studies.analysis import Analysis, BatchPoint, NetworkAnalysis, judge

    networks = tuple(NetworkAnalysis(n, n, macs, 1000, 0.5, "test", "bundled", ms,
                                     (BatchPoint(1, ms, ms, 20, 1.0, 2.0),), ())
                     for n, macs, ms in (("lenet5", 10**6, 0.1), ("enet", 10**7, 1.0), ("vgg16", 10**8, 9.0)))
    fit, layer_fit, verdicts = judge(networks)
    return Analysis("cifar10", "cpu", 2, "fp32", "2", "cpu", "now", 1.0, 8, networks, fit, layer_fit,
                    verdicts).to_dict()


@pytest.mark.parametrize("damage", [
    lambda d: d["networks"][0].update(macs="many"),  # judge() divides by it
    lambda d: d["networks"][1].update(label=["not", "text"]),  # found by the field check only
    lambda d: d.update(networks={"lenet5": 1}),
])
def test_an_analysis_cache_with_a_field_of_the_wrong_type_is_measured_again(caplog, damage):
    import json

    from engine.studies.analysis import cache_dir, load_cached

    data = _analysis_dict()
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "good.json").write_text(json.dumps(data))
    assert load_cached("good") is not None
    damage(data)
    (cache_dir() / "bad.json").write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="engine.cache"):
        assert load_cached("bad") is None
    assert len(caplog.records) == 1 and "analysis cache bad.json" in caplog.records[0].getMessage()


def _saved_checkpoint(tmp_path) -> Path:
    """The checkpoint of a one-epoch LeNet-5 run in this test's runs folder."""
    assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(tmp_path / "w"))) == 0
    return Path(os.environ["CNN_ARENA_CACHE"]) / "runs" / "lenet5_cifar10" / "checkpoint.pt"


@pytest.mark.parametrize("change, what", [
    (lambda p: p.update(identity=["lenet5"]), "identity is a list"),
    (lambda p: p.update(spent={}), "spent is not"),
    (lambda p: p["spent"].update(wall_s="1 h"), "spent is not"),
    (lambda p: p.update(epoch=-5), "epoch -5 is not one of 0..1"),
])
def test_a_checkpoint_with_bad_fields_is_refused_in_one_line(tmp_path, capsys, change, what):
    import torch

    path = _saved_checkpoint(tmp_path)
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    capsys.readouterr()
    assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(tmp_path / "w"), "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: lenet5: checkpoint.pt: a damaged checkpoint (") and what in err[-1]


# -- 5: a checkpoint whose records would inflate is refused before it is read ----------------------

def test_a_compressed_checkpoint_is_refused_without_inflating_it(tmp_path, capsys):
    import zipfile

    from engine.training.checkpoint import CheckpointError, load_checkpoint

    path = _saved_checkpoint(tmp_path)
    stored = tmp_path / "stored.pt"
    path.rename(stored)
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="refused, compressed records"):
        load_checkpoint(path)
    capsys.readouterr()
    # train reads a saved run even without --resume (to say that one is there): refused, one line
    assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(tmp_path / "w"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: lenet5: checkpoint.pt: refused, compressed records")


# -- 10: special files in cache paths are not read ------------------------------------------------

def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _in_thread(fn, timeout: float = 30.0):
    """``fn()``'s result, run on a thread so that a hang fails the test instead of blocking it."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked"
    return out[0]


def test_an_onnx_cache_entry_that_is_a_fifo_or_dev_zero_is_not_read(tmp_path, caplog):
    from engine.runtime.onnx_cache import OnnxCache

    cache = OnnxCache(tmp_path / "onnx")
    fifo = _fifo(tmp_path / "onnx" / "cifar10-lenet5-aaaa.onnx")
    (tmp_path / "onnx" / "cifar10-lenet5-aaaa.json").write_text('{"sha256": "x"}')
    zero = tmp_path / "onnx" / "cifar10-lenet5-bbbb.onnx"
    zero.symlink_to("/dev/zero")
    (tmp_path / "onnx" / "cifar10-lenet5-bbbb.json").write_text('{"sha256": "x"}')
    with caplog.at_level("WARNING", logger="engine.cache"):
        assert _in_thread(lambda: cache.read(fifo)) is None
        assert _in_thread(lambda: cache.read(zero)) is None
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["ONNX cache cifar10-lenet5-aaaa.onnx",
                                                                      "ONNX cache cifar10-lenet5-bbbb.onnx"]
    # and a new export replaces the FIFO with a regular file rather than writing into it
    assert _in_thread(lambda: cache.write(fifo, b"graph"))
    assert fifo.is_file() and cache.read(fifo) == b"graph"


def test_a_data_cache_entry_that_is_a_fifo_is_rebuilt(tmp_path):
    import engine.data.datasets as data
    from tests.engine.test_data import make_tiny_archive

    archive = make_tiny_archive(tmp_path / "set.tar.gz")
    cache = tmp_path / "cache"
    fingerprint = data.source_fingerprint(archive)
    for split in ("train", "test"):
        _fifo(data.cache_path(cache, fingerprint, split))
    images, labels = _in_thread(lambda: data.load_cifar10(archive, "test", cache_dir=cache))
    assert len(labels) == len(images) == 12  # 4 test images of each of 3 classes
    assert data.cache_path(cache, fingerprint, "test").is_file()  # the FIFO replaced by the cache


def test_a_settings_file_that_is_a_fifo_does_not_stop_the_window(tmp_path, monkeypatch, capsys):
    from gui.settings import ENV, open_settings

    monkeypatch.setenv(ENV, str(_fifo(tmp_path / "settings.ini")))
    settings = _in_thread(lambda: (lambda s: (s.setValue("a", 1), s.sync(), s.value("a"))[-1])(open_settings()))
    assert str(settings) == "1"
    assert "CNN_ARENA_SETTINGS: not a regular file" in capsys.readouterr().err


# -- 6: a damaged file in torch's hub cache costs only its own network -----------------------------

@pytest.mark.parametrize("content", [os.urandom(1 << 20), b""])
def test_a_damaged_hub_file_leaves_that_network_untrained_with_one_line(content):
    from engine.models.registry import get_spec
    from engine.models.weights import UNTRAINED, hub_cache_path
    from engine.runtime.session import InferenceSession

    spec = get_spec("alexnet", "imagenet")
    path = hub_cache_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    session = InferenceSession("imagenet", "cpu", ["alexnet"], backend="torch")
    assert session._nets["alexnet"].loaded.status == UNTRAINED
    (line,) = [m for m in session.messages if m.startswith("alexnet:")]
    assert "could not load torchvision weights" in line and f"delete {path} or download it again" in line
    assert "\n" not in line


# -- 7: partial files left by a killed writer are removed at the next start ------------------------

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_partial_files_of_a_dead_writer_are_swept_from_runs_and_onnx(tmp_path):
    from engine.cli.train import runs_dir, sweep_runs
    from engine.runtime.onnx_cache import OnnxCache

    dead, alive = _dead_pid(), os.getpid()
    run = runs_dir() / "vgg16_cifar10"
    run.mkdir(parents=True)
    stale = [run / f".checkpoint.pt.pid{dead}.k2j3.tmp", run / f".vgg16_cifar10.safetensors.pid{dead}.new.tmp"]
    kept = [run / f".checkpoint.pt.pid{alive}.a1b2.tmp", run / "checkpoint.pt"]
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    stale += [onnx / ".part-x8d7f", onnx / f".cifar10-vgg16-0123.onnx.pid{dead}.qq.tmp"]
    kept += [onnx / "cifar10-vgg16-0123.onnx"]
    for path in stale + kept:
        path.write_bytes(b"\0" * 1000)
    assert sorted(sweep_runs()) == sorted(p for p in stale if p.parent == run)
    OnnxCache(onnx)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


# -- 14: one training per run folder ---------------------------------------------------------------

@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_a_second_training_of_the_same_run_is_refused_naming_the_holder(tmp_path, capsys):
    from engine.cli.train import runs_dir

    run = runs_dir() / "lenet5_cifar10"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
         "from engine.training.runlock import RunLock; lock = RunLock(Path(sys.argv[2])); lock.acquire(); "
         "print('held', flush=True); sys.stdin.read()", str(ROOT), str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(tmp_path / "w"))) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"error: lenet5: {run} is being trained by process {holder.pid};")
        assert not (run / "checkpoint.pt").exists() and not list((tmp_path / "w").iterdir())
    finally:
        holder.stdin.close()
        holder.wait(30)
    # its process gone, the lock (its file still naming that process) is taken over
    assert (run / ".train.lock").read_text().startswith(f"{holder.pid}\n")
    assert _run_cli(_tiny_train_argv(tmp_path, "--out", str(tmp_path / "w"))) == 0


# -- 13: every stream scheme is checked before OpenCV gets it, or refused ---------------------------

def test_a_silent_tcp_server_fails_the_preflight_and_a_talking_one_passes():
    import socket

    from engine.live.streams import StreamError, preflight

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    talking = socket.socket()
    talking.bind(("127.0.0.1", 0))
    talking.listen(1)

    def talk() -> None:
        conn, _ = talking.accept()
        conn.sendall(b"\x47" * 188)  # an MPEG-TS packet
        conn.close()

    threading.Thread(target=talk, daemon=True).start()
    try:
        with pytest.raises(StreamError, match="no answer"):
            preflight(f"tcp://127.0.0.1:{silent.getsockname()[1]}", threading.Event(), timeout=0.3)
        stop = threading.Event()
        stop.set()
        assert preflight(f"tcp://127.0.0.1:{silent.getsockname()[1]}", stop, timeout=10) is False
        assert preflight(f"tcp://127.0.0.1:{talking.getsockname()[1]}", threading.Event(), timeout=5) is True
    finally:
        silent.close()
        talking.close()


@pytest.mark.parametrize("url, message", [
    ("udp://239.0.0.1:1234", "udp:// is not a stream this app opens"),
    ("gopher://example.org/x", "gopher:// is not a stream this app opens"),
    ("tcp://127.0.0.1", "tcp:// needs a port"),
])
def test_other_schemes_are_refused_in_one_line(url, message):
    from engine.live.streams import StreamError, preflight

    with pytest.raises(StreamError, match=message) as refused:
        preflight(url, threading.Event(), timeout=1)
    assert "\n" not in str(refused.value)


# -- 11: a cached ONNX graph is checked on every output the engine reads ---------------------------

def test_a_cached_graph_with_its_ranking_reversed_is_refused_and_exported_again(tmp_path):
    import hashlib
    import json

    import numpy as np
    import onnx
    import torch

    from engine.models.adapter import ModelAdapter
    from engine.models.registry import get_spec
    from engine.runtime.backends.ort import OrtRunner
    from engine.runtime.onnx_cache import OnnxCache

    spec = get_spec("lenet5", "cifar10")
    adapter = ModelAdapter(spec, spec.build().eval())
    cache = OnnxCache(tmp_path / "onnx")
    OrtRunner(adapter, False, threads=1, cache=cache)
    (graph_path,) = (tmp_path / "onnx").glob("*.onnx")
    model = onnx.load_from_string(graph_path.read_bytes())
    (topk,) = [n for n in model.graph.node if n.op_type == "TopK"]
    for attribute in topk.attribute:
        if attribute.name == "largest":
            attribute.i = 0
    if not any(a.name == "largest" for a in topk.attribute):
        topk.attribute.append(onnx.helper.make_attribute("largest", 0))
    data = model.SerializeToString()
    graph_path.write_bytes(data)
    graph_path.with_suffix(".json").write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest(),
                                                           "bytes": len(data)}))
    runner = OrtRunner(adapter, False, threads=1, cache=cache)
    assert runner.exported == 1  # the edited graph was refused and exported again
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, *spec.input_size), np.float32))
    out = runner(x)
    best = np.take_along_axis(out.probs, out.top[:, :1].astype(np.int64), axis=1)[:, 0]
    assert np.allclose(best, out.probs.max(axis=1))  # the most likely class first


# -- 8: a run is identified by what it reads, and every rank agrees on it --------------------------

def test_a_folder_with_two_classes_swapped_is_another_run(tmp_path, capsys):
    from tests.engine.test_data import dataset_files, make_folder

    data = make_folder(tmp_path / "set", dataset_files(train_per_class=8, test_per_class=2))
    argv = ["train", "--model", "lenet5", "--data", str(data), "--epochs", "1", "--limit", "48", "--val", "12",
            "--device", "cpu", "--batch-size", "12", "--out", str(tmp_path / "w")]
    assert _run_cli(argv) == 0
    train = data / "train"
    first, second = sorted(p.name for p in train.iterdir())[:2]
    (train / first).rename(train / "swap")
    (train / second).rename(train / first)
    (train / "swap").rename(train / second)
    capsys.readouterr()
    assert _run_cli([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: lenet5: the saved run (epoch 1/1) is a different run: data ")


class _FakeRanks:
    """What every rank would hand in: this process's value, and another rank's changed by ``change``."""

    def __init__(self, change) -> None:
        self.change = change

    def all_gather(self, obj):
        import copy

        other = copy.deepcopy(obj)
        self.change(other)
        return [obj, other]


def test_ranks_started_with_other_options_or_another_identity_are_stopped_in_one_line():
    import argparse

    from engine.cli.output import CliError
    from engine.cli.train_identity import same_identity_everywhere, same_options_everywhere

    args = argparse.Namespace(model="lenet5", epochs=2, batch_size=12, lr=None, recipe_set=None, val=12, limit=None,
                              seed=0, resume=False, restart=False)
    same_options_everywhere(_FakeRanks(lambda other: None), args)
    with pytest.raises(CliError, match=r"^the processes were started with different options: rank 1 has --lr "
                                       r"0\.01, rank 0 \(not given\); start every process with the same command$"):
        same_options_everywhere(_FakeRanks(lambda other: other.update(lr=0.01)), args)
    with pytest.raises(CliError, match="rank 1 has --epochs 3, rank 0 2"):
        same_options_everywhere(_FakeRanks(lambda other: other.update(epochs=3)), args)
    identity = {"model": "lenet5", "recipe": {"lr": 0.05}, "data": "abc", "seed": 0}
    with pytest.raises(CliError, match=r"lenet5: rank 1 would train another run than rank 0 \(seed 0 -> 7\)"):
        same_identity_everywhere(_FakeRanks(lambda other: other.update(seed=7)), "lenet5", identity)


def _train_with_rank_options(argv: list[str]) -> int:
    """A rank of a hand-started run: the command, plus this rank's own options from RANK_OPTIONS."""
    from engine.cli import build_parser, run_command

    return run_command(build_parser().parse_args([*argv, *os.environ.get("RANK_OPTIONS", "").split()]))


@pytest.mark.slow  # two processes
def test_two_ranks_started_by_hand_with_other_epochs_both_stop_with_one_line(tmp_path):
    from tests.engine.test_data import make_tiny_archive
    from tests.engine.test_training_ddp import join, launch

    archive = make_tiny_archive(tmp_path / "tiny.tar.gz", train_per_class=20, test_per_class=2)
    argv = ["train", "--model", "lenet5", "--data", str(archive), "--limit", "36", "--val", "12", "--batch-size", "12",
            "--device", "cpu", "--out", str(tmp_path / "w"), "--dist-timeout", "20"]
    ranks = launch(tmp_path, _train_with_rank_options, (argv,),
                   lambda rank: {"CNN_ARENA_CACHE": str(tmp_path / f"cache{rank}"),
                                 "RANK_OPTIONS": f"--epochs {2 + rank} --lr {0.05 if rank == 0 else 0.01}"})
    join(ranks, 120)
    assert [r.process.exitcode for r in ranks] == [2, 2], ranks[1].stderr()
    last = ranks[0].stderr().strip().splitlines()[-1]
    assert last.startswith("error: the processes were started with different options: rank 1 has --epochs 3, rank 0 2")
    assert "Traceback" not in ranks[0].stderr() + ranks[1].stderr()
    runs = tmp_path / "cache0" / "runs"
    assert not runs.exists() or not list(runs.rglob("checkpoint.pt"))
