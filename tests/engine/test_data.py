"""CIFAR-10 loading: archives, folders, the cache, and what goes wrong."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import engine.data.datasets as data
from engine.common.files import atomic_write, remove_stale_temps
from engine.data.datasets import DataError, has_split_layout, load_cifar10, train_val_split
from engine.models.registry import CIFAR10_CLASSES

CLASSES = ("airplane", "cat", "truck")  # a subset, deliberately not the first three


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """An RGB image whose colour says its class (easy to learn), with a little noise."""
    colour = PALETTE[label].astype(np.float32)
    base = np.broadcast_to(colour, (size, size, 3)).copy()
    base[size // 4:size // 2] = 255.0 - colour  # a stripe, so the image is not flat
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


PALETTE = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40], [220, 40, 220],
                    [40, 220, 220], [130, 60, 20], [20, 60, 130], [240, 240, 240], [60, 60, 60]])


def jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def dataset_files(train_per_class: int = 8, test_per_class: int = 4, classes=CLASSES, seed: int = 0,
                  size: int = 32) -> dict[str, bytes]:
    """``{"train/cat/0001.jpg": bytes, ...}`` of a tiny CIFAR-10 look-alike."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for cls in classes:
            label = CIFAR10_CLASSES.index(cls)
            for i in range(count):
                files[f"{split}/{cls}/{i:04d}.jpg"] = jpeg(class_image(label, rng, size))
    return files


def make_archive(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def make_tiny_archive(path: Path, train_per_class: int = 8, test_per_class: int = 4) -> Path:
    return make_archive(path, dataset_files(train_per_class, test_per_class))


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, blob in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    return root


def test_archive_loads_both_splits(tmp_path):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz")
    images, labels = load_cifar10(archive, "train", cache_dir=tmp_path / "cache")
    assert images.shape == (24, 32, 32, 3) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert labels.dtype == np.int64
    expected = [CIFAR10_CLASSES.index(c) for c in CLASSES]
    assert labels.tolist() == sorted(expected * 8)  # ordered by class, then file name
    test_images, test_labels = load_cifar10(archive, "test", cache_dir=tmp_path / "cache")
    assert test_images.shape == (12, 32, 32, 3) and sorted(set(test_labels.tolist())) == expected


def test_rgb_channel_order(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 2] = 255  # pure blue
    archive = make_archive(tmp_path / "blue.tar", {"test/ship/0.png": cv2.imencode(
        ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()})
    images, labels = load_cifar10(archive, "test", cache_dir=tmp_path / "c")
    assert images[0, 0, 0].tolist() == [0, 0, 255] and labels.tolist() == [8]


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    archive = make_tiny_archive(tmp_path / "tiny.tgz")
    first = load_cifar10(archive, "train", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # one pass caches both splits

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_decode_archive", no_decoding)
    second = load_cifar10(archive, "train", cache_dir=tmp_path / "cache")
    test = load_cifar10(archive, "test", cache_dir=tmp_path / "cache")
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert test[0].shape[0] == 12


def test_changed_archive_is_decoded_again(tmp_path):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz")
    assert load_cifar10(archive, "test", cache_dir=tmp_path / "c")[0].shape[0] == 12
    make_tiny_archive(archive, test_per_class=2)
    assert load_cifar10(archive, "test", cache_dir=tmp_path / "c")[0].shape[0] == 6


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_ARENA_CACHE", str(tmp_path / "here"))
    load_cifar10(make_tiny_archive(tmp_path / "tiny.tar.gz"), "test")
    assert list((tmp_path / "here").glob("cifar10-*-test.npz"))


def test_damaged_cache_file_is_rebuilt(tmp_path):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz")
    first = load_cifar10(archive, "test", cache_dir=tmp_path / "c")
    for f in (tmp_path / "c").glob("*.npz"):
        f.write_bytes(b"garbage")
    again = load_cifar10(archive, "test", cache_dir=tmp_path / "c")
    assert np.array_equal(first[0], again[0])


def test_top_level_folder_and_resizing(tmp_path):
    files = dataset_files(2, 2, classes=("dog",), size=48)
    archive = make_archive(tmp_path / "wrapped.tar.gz", files, prefix="cifar10/")
    images, labels = load_cifar10(archive, "train", cache_dir=tmp_path / "c")
    assert images.shape == (2, 32, 32, 3) and labels.tolist() == [5, 5]


def test_image_folder_directory(tmp_path):
    root = make_folder(tmp_path / "folder", dataset_files(3, 2))
    images, labels = load_cifar10(root, "test", cache_dir=tmp_path / "c")
    assert images.shape == (6, 32, 32, 3)
    assert has_split_layout(root)
    single = make_folder(tmp_path / "single", {k.split("/", 1)[1]: v for k, v in dataset_files(0, 2).items()})
    images, labels = load_cifar10(single, "test", cache_dir=tmp_path / "c")
    assert images.shape == (6, 32, 32, 3) and not has_split_layout(single)


def test_archive_split_layout(tmp_path):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz")
    assert has_split_layout(archive, cache_dir=tmp_path / "c")
    single = make_archive(tmp_path / "single.tar.gz", {"cat/1.jpg": dataset_files(1, 0)["train/airplane/0000.jpg"]})
    assert not has_split_layout(single, cache_dir=tmp_path / "c")


def test_unknown_class_folder(tmp_path):
    files = dataset_files(1, 1)
    files["train/unicorn/0.jpg"] = files["train/cat/0000.jpg"]
    with pytest.raises(DataError, match="unknown class folder 'train/unicorn'"):
        load_cifar10(make_archive(tmp_path / "odd.tar.gz", files), "train", cache_dir=tmp_path / "c")


@pytest.mark.parametrize("content", [b"", b"this is not a tar archive at all" * 40])
def test_bad_archive(tmp_path, content):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_cifar10(bad, "train", cache_dir=tmp_path / "c")
    assert "bad.tar.gz" in str(info.value) and "\n" not in str(info.value)


def test_a_split_of_undecodable_images_only(tmp_path):
    archive = make_archive(tmp_path / "x.tar.gz", {"train/cat/0.jpg": b"not a jpeg", "test/cat/0.jpg": b"x"})
    lines = []
    with pytest.raises(DataError, match="no image of the train split could be decoded"):
        load_cifar10(archive, "train", cache_dir=tmp_path / "c", warn=lines.append)
    assert lines == ["x.tar.gz: skipped 1 train image that could not be decoded, e.g. train/cat/0.jpg "
                     "(not a decodable image)"]
    with pytest.raises(DataError, match="empty file"):  # decode_image raises DataError, never cv2.error
        data.decode_image(b"", "zero.jpg")


@pytest.mark.parametrize("kind", ["archive", "folder"])
def test_empty_and_undecodable_images_are_skipped_and_counted(tmp_path, kind):
    files = dataset_files(2, 4)
    files["test/cat/zero.jpg"] = b""  # OpenCV raises on empty input
    files["test/truck/junk.jpg"] = b"not a jpeg at all"
    files["test/cat/cut.jpg"] = files["test/cat/0000.jpg"][:20]
    source = make_archive(tmp_path / "x.tar.gz", files) if kind == "archive" else make_folder(tmp_path / "x", files)
    for attempt in ("decoded", "cached"):
        lines = []
        images, labels = load_cifar10(source, "test", cache_dir=tmp_path / "c", warn=lines.append)
        assert images.shape == (12, 32, 32, 3) and len(labels) == 12, attempt
        assert len(lines) == 1 and "\n" not in lines[0], attempt
        assert lines[0].startswith(f"{source.name}: skipped 3 test images that could not be decoded, e.g. "), attempt
    train_lines = []
    assert load_cifar10(source, "train", cache_dir=tmp_path / "c", warn=train_lines.append)[0].shape[0] == 6
    assert train_lines == []  # the skipped images are test images


def test_missing_source_and_split(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_cifar10(tmp_path / "nowhere.tar.gz", "train", cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="unknown split"):
        load_cifar10(tmp_path, "validation", cache_dir=tmp_path / "c")
    only_test = make_archive(tmp_path / "t.tar.gz", {k: v for k, v in dataset_files(1, 1).items()
                                                     if k.startswith("test/")})
    with pytest.raises(DataError, match="no train/ folder"):
        load_cifar10(only_test, "train", cache_dir=tmp_path / "c")


def _write_npz(path: Path, arrays: dict[str, tuple[dict, bytes]]) -> None:
    """An uncompressed .npz whose members have the given headers and data, whatever they declare."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, (header, payload) in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, header)
            z.writestr(f"{name}.npy", buf.getvalue() + payload)


def _header(dtype, shape) -> dict:
    return {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}


@pytest.mark.parametrize("case", ["huge shape", "labels out of range", "compressed", "truncated"])
def test_a_cache_that_cannot_be_used_is_rebuilt_without_loading_it(tmp_path, case):
    archive = make_tiny_archive(tmp_path / "tiny.tar.gz")
    expected = load_cifar10(archive, "test", cache_dir=tmp_path / "c")
    cache = data.cache_path(tmp_path / "c", data.source_fingerprint(archive), "test")
    labels = np.zeros(12, np.int64)
    if case == "huge shape":  # 3 TB declared in a file of a few bytes: reading it would exhaust memory
        _write_npz(cache, {"images": (_header(np.uint8, (10**9, 32, 32, 3)), b"\0" * 64),
                           "labels": (_header(np.int64, (12,)), labels.tobytes())})
    elif case == "labels out of range":
        np.savez(cache, images=expected[0], labels=np.full(12, 42, np.int64))
    elif case == "compressed":
        np.savez_compressed(cache, images=expected[0], labels=expected[1])
    else:
        np.savez(cache, images=expected[0], labels=expected[1])
        cache.write_bytes(cache.read_bytes()[:-5000])
    assert has_split_layout(archive, cache_dir=tmp_path / "c")
    images, labels = load_cifar10(archive, "test", cache_dir=tmp_path / "c")
    assert np.array_equal(images, expected[0]) and np.array_equal(labels, expected[1])
    with np.load(cache) as z:  # rewritten with what the archive holds
        assert np.array_equal(z["labels"], expected[1])


def test_a_folder_image_overwritten_in_place_is_read_again(tmp_path):
    root = make_folder(tmp_path / "folder", dataset_files(1, 2))
    first = load_cifar10(root, "test", cache_dir=tmp_path / "c")[0]
    image = root / "test" / "cat" / "0000.jpg"
    before = image.stat()
    folder_mtime = image.parent.stat().st_mtime_ns
    image.write_bytes(jpeg(np.full((32, 32, 3), 255, np.uint8)))  # same name, same folder
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # a later write, deterministically
    os.utime(image.parent, ns=(folder_mtime, folder_mtime))  # the folder's own time says nothing changed
    again = load_cifar10(root, "test", cache_dir=tmp_path / "c")[0]
    changed = [i for i in range(len(first)) if not np.array_equal(first[i], again[i])]
    assert len(changed) == 1 and again[changed[0]].min() > 240


def test_an_unreadable_class_folder_is_reported_and_not_cached(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "folder", dataset_files(1, 2))
    locked = root / "test" / "truck"
    real_scandir = os.scandir

    def scandir(path="."):  # as for a folder without read permission (which root would not see)
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    lines = []
    images, _ = load_cifar10(root, "test", cache_dir=tmp_path / "c", warn=lines.append)
    assert images.shape[0] == 4
    assert lines == ["folder: skipped 1 folder that could not be read, e.g. test/truck (permission denied); "
                     "not cached until every file can be read"]
    assert not list((tmp_path / "c").glob("*.npz"))
    monkeypatch.setattr(os, "scandir", real_scandir)  # the permissions are fixed
    lines = []
    assert load_cifar10(root, "test", cache_dir=tmp_path / "c", warn=lines.append)[0].shape[0] == 6
    assert lines == []


def call_with_fifo_guard(call, fifo: Path, seconds: float = 20.0):
    """``call()`` on a thread; if it is still blocked after ``seconds`` (opening the FIFO waits for
    a writer), open the FIFO for writing so that it returns, and fail."""
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"{fifo.name}: blocked waiting for a writer")
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_before_it_is_opened(tmp_path):
    fifo = tmp_path / "fifo.tar.gz"
    os.mkfifo(fifo)
    for call in (lambda: load_cifar10(fifo, "test", cache_dir=tmp_path / "c"),
                 lambda: has_split_layout(fifo, cache_dir=tmp_path / "c")):
        error = call_with_fifo_guard(call, fifo)
        assert isinstance(error, DataError) and str(error) == "fifo.tar.gz: not a regular file or a folder"


def test_temporary_files_left_by_a_dead_writer_are_removed(tmp_path):
    cache = tmp_path / "c"
    cache.mkdir()
    hour_ago = time.time() - 2 * 3600
    old = cache / ".cifar10-aaaa-test.npz.k3j4h5g6.tmp"  # no writer named: stale by its age
    dead = cache / ".cifar10-bbbb-test.npz.pid2147483646.k3j4h5g6.tmp"  # a process id no system has
    live = cache / f".cifar10-cccc-test.npz.pid{os.getpid()}.k3j4h5g6.tmp"  # being written by us
    fresh = cache / ".cifar10-dddd-test.npz.k3j4h5g6.tmp"  # no writer named, recent
    others = [cache / ".notes.txt.k3j4h5g6.tmp", cache / "user.tmp"]  # not the cache's
    for f in (old, dead, live, fresh, *others):
        f.write_bytes(b"partial")
    for f in (old, *others):
        os.utime(f, (hour_ago, hour_ago))
    load_cifar10(make_tiny_archive(tmp_path / "tiny.tar.gz"), "test", cache_dir=cache)
    assert not old.exists() and not dead.exists()
    assert live.exists() and fresh.exists() and all(f.exists() for f in others)


def test_atomic_write_names_its_writer(tmp_path):
    seen = []
    atomic_write(tmp_path / "x.npz", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"1")))
    assert seen[0].startswith(f".x.npz.pid{os.getpid()}.") and seen[0].endswith(".tmp")
    assert remove_stale_temps(tmp_path, "x.npz") == [] and (tmp_path / "x.npz").read_bytes() == b"1"


def test_train_val_split_is_deterministic_and_disjoint():
    a_train, a_val = train_val_split(100, 20, seed=3)
    b_train, b_val = train_val_split(100, 20, seed=3)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_val, b_val)
    assert len(a_val) == 20 and len(a_train) == 80
    assert sorted(np.concatenate([a_train, a_val]).tolist()) == list(range(100))
    assert not np.array_equal(train_val_split(100, 20, seed=4)[1], a_val)
    assert len(train_val_split(10, 0, seed=0)[1]) == 0
    with pytest.raises(ValueError):
        train_val_split(10, 10, seed=0)


def _python_archive(path: Path, batches: dict[str, object]) -> Path:
    """A tar.gz in the layout of the official cifar-10-python.tar.gz, with the given pickled members."""
    import io
    import pickle
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, obj in batches.items():
            data = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _batch(n: int, first_label: int) -> dict:
    rng = np.random.default_rng(first_label)
    return {"batch_label": "x", "labels": [(first_label + i) % 10 for i in range(n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}


def test_the_official_python_archive_loads_with_its_pixel_order(tmp_path):
    from engine.data.datasets import has_split_layout

    b1, b2, test = _batch(4, 0), _batch(3, 4), _batch(2, 7)
    archive = _python_archive(tmp_path / "cifar-10-python.tar.gz",
                              {"batches.meta": b"meta", "data_batch_2": b2, "data_batch_1": b1, "test_batch": test})
    warned = []
    images, labels = load_cifar10(archive, "train", cache_dir=tmp_path / "cache", warn=warned.append)
    assert images.shape == (7, 32, 32, 3) and labels.tolist() == [0, 1, 2, 3, 4, 5, 6]
    red, green, blue = b1["data"][1, :1024], b1["data"][1, 1024:2048], b1["data"][1, 2048:]
    assert (images[1, :, :, 0].ravel() == red).all() and (images[1, :, :, 1].ravel() == green).all()
    assert (images[1, :, :, 2].ravel() == blue).all()
    assert warned == ["cifar-10-python.tar.gz: 2 of the 5 training batches"]
    test_images, test_labels = load_cifar10(archive, "test", cache_dir=tmp_path / "cache")
    assert test_images.shape == (2, 32, 32, 3) and test_labels.tolist() == [7, 8]
    assert has_split_layout(archive, cache_dir=tmp_path / "other cache")


def test_a_doctored_python_batch_cannot_run_code(tmp_path):
    import pickle

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    archive = _python_archive(tmp_path / "cifar-10-python.tar.gz", {"test_batch": pickle.dumps(Exploit(), protocol=2)})
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 batch \\(refused (posix|os|nt).system\\)"):
        load_cifar10(archive, "test", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "pwned").exists()


def test_the_binary_archive_and_an_extracted_python_folder_load_too(tmp_path):
    import pickle

    from engine.live.sources import DatasetSource, open_source

    test = _batch(3, 5)
    records = np.concatenate([np.array(test["labels"], np.uint8)[:, None], test["data"]], axis=1).tobytes()
    binary = _python_archive(tmp_path / "cifar-10-binary.tar.gz", {"test_batch.bin": records})
    images, labels = load_cifar10(binary, "test", cache_dir=tmp_path / "cache")
    assert labels.tolist() == [5, 6, 7] and (images[2, :, :, 2].ravel() == test["data"][2, 2048:]).all()

    folder = tmp_path / "extracted" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    (folder / "data_batch_1").write_bytes(pickle.dumps(_batch(2, 0), protocol=2))
    images, labels = load_cifar10(tmp_path / "extracted", "test", cache_dir=tmp_path / "cache")
    assert labels.tolist() == [5, 6, 7] and images.shape == (3, 32, 32, 3)
    assert has_split_layout(tmp_path / "extracted")
    source = open_source(str(tmp_path / "extracted"))  # the window's Folder... plays it as a data set
    assert isinstance(source, DatasetSource) and source.length == 3
