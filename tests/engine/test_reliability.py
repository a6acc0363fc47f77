"""What people throw at the app: every bad input is one clear line, and the rest goes on."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.live.sources import FolderSource
from engine.live.worker import Engine
from tests.media import write_png_header
from tests.waiting import no_thread_left, wait_until

ROOT = Path(__file__).resolve().parents[2]


def make_mixed_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Good files of every awkward kind, and bad ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    good = []

    def save(name: str, image: Image.Image, **kw) -> None:
        image.save(folder / name, **kw)
        good.append(folder / name)

    save("photo.jpg", noisy)
    save("gray.png", noisy.convert("L"))
    save("alpha.png", noisy.convert("RGBA"))
    save("palette.png", noisy.convert("P"))
    save("cmyk.jpg", noisy.convert("CMYK"))
    save("deep16.png", Image.fromarray((np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)))
    save("tiny.png", Image.new("RGB", (1, 1), (9, 9, 9)))
    save("ünïcødé name.png", noisy)
    save("anim.gif", noisy.convert("P"), save_all=True, append_images=[noisy.convert("P").rotate(90)])
    exif = Image.Exif()
    exif[0x0112] = 6
    save("phone.jpg", noisy.resize((64, 32)), exif=exif)

    bad = []
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("hello, I am not a picture")
    buf = io.BytesIO()
    noisy.save(buf, "JPEG")
    (folder / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    (folder / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    write_png_header(folder / "huge.png", 20000, 20000)
    bad += [folder / n for n in ("zero.jpg", "text.jpg", "cut.jpg", "cut.png", "huge.png")]
    bad.append(folder / "missing.jpg")
    return good, bad


def test_predict_on_a_mix_answers_every_good_file(tmp_path, capsys):
    from main import main

    good, bad = make_mixed_files(tmp_path / "mixed files")
    files = [str(p) for pair in zip(good, bad + [bad[0]] * len(good)) for p in pair] + [str(tmp_path / "nope.jpg")]
    # in-process: an exception fails the test
    assert main(["predict", "--json", "--runs", "1", "--precision", "fp32", *files]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    import json
    answers = {a["image"]: a for a in json.loads(out)}
    for path in good:
        assert "results" in answers[str(path)], answers[str(path)]
    for path in bad:
        error = answers[str(path)]["error"]
        assert error.startswith(path.name + ":") and "\n" not in error
    assert "image too large (20000x20000" in answers[str(bad[4])]["error"]
    assert answers[str(tmp_path / "nope.jpg")]["error"] == "nope.jpg: no such file"


def test_exif_rotated_phone_photo_is_upright(tmp_path):
    good, _ = make_mixed_files(tmp_path)
    frames = {f.source: f for f in FolderSource(tmp_path)}
    assert frames["phone.jpg"].image.shape == (64, 32, 3)  # stored 64 wide, shown 32 wide


@pytest.mark.slow  # 5,000 files written and listed
def test_a_folder_of_5000_files_starts_at_once_and_is_read_lazily(tmp_path):
    for i in range(5_000):
        (tmp_path / f"{i:05d}.jpg").touch()
    source = iter(FolderSource(tmp_path))
    first = [next(source) for _ in range(3)]
    assert [f.source for f in first] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert all("empty file" in f.error for f in first)


def test_out_of_gpu_memory_falls_back_to_the_cpu_and_says_so(monkeypatch):
    events, results = [], []
    engine = Engine(models=["lenet5"], on_result=lambda r, m: results.append(r), on_event=events.append).start()
    try:
        assert wait_until(lambda: engine.session is not None)
        first_session = engine.session

        def out_of_memory(*args, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

        monkeypatch.setattr(first_session, "run", out_of_memory)
        engine.submit(np.zeros((32, 32, 3), np.uint8))
        assert wait_until(lambda: engine.session is not first_session)
        assert any("ran out of memory" in getattr(e, "text", "") for e in events)
        assert engine.info.device == "cpu"
        engine.submit(np.zeros((32, 32, 3), np.uint8), "again")
        assert wait_until(lambda: results)
        assert results and results[-1].source == "again"
    finally:
        assert engine.stop(2.0)


def test_nothing_is_left_running_after_many_sources(tmp_path):
    before = set(threading.enumerate())
    engine = Engine(models=["lenet5"]).start()
    for i in range(5):
        engine.set_source([str(tmp_path / f"missing{i}.png")])
    assert engine.stop(2.0)
    assert no_thread_left(before)
