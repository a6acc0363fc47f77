"""Tests for engine.data.imageio: every file a user may drop becomes RGB uint8 or one clear line."""

from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from engine.data.imageio import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    InputError,
    decode_image_bytes,
    is_image_path,
    read_image,
    to_rgb_uint8,
)
from tests.media import write_png_header

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _check_rgb(a: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.uint8
    assert a.shape == (*shape, 3)
    assert a.flags.c_contiguous


def _check_message(err: pytest.ExceptionInfo, name: str, *parts: str) -> str:
    msg = str(err.value)
    assert msg.startswith(f"{name}: "), msg
    assert "\n" not in msg and "\r" not in msg
    assert "Traceback" not in msg
    assert len(msg) < 150, msg
    for part in parts:
        assert part in msg, msg
    return msg


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


# --- plain reads ---------------------------------------------------------------------------------


def test_png_round_trip_exact():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    out = decode_image_bytes(buf.getvalue())
    _check_rgb(out, (7, 5))
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".gif", ".tif", ".ppm", ".webp"])
def test_one_by_one(tmp_path, suffix):
    if suffix == ".webp" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    path = _save(Image.new("RGB", (1, 1), (200, 100, 50)), tmp_path / f"dot{suffix}")
    out = read_image(path)
    _check_rgb(out, (1, 1))
    tolerance = 0 if suffix in (".png", ".bmp", ".tif", ".ppm") else 12
    assert np.abs(out[0, 0].astype(int) - (200, 100, 50)).max() <= tolerance


def test_pgm_grey(tmp_path):
    path = _save(Image.new("L", (3, 2), 77), tmp_path / "grey.pgm")
    out = read_image(path)
    _check_rgb(out, (2, 3))
    assert (out == 77).all()


def test_result_is_writable_and_file_is_closed(tmp_path):
    path = _save(Image.new("RGB", (4, 3), RED), tmp_path / "closed.png")
    fd_dir = Path("/proc/self/fd")
    before = len(os.listdir(fd_dir)) if fd_dir.is_dir() else None
    out = read_image(path)
    out[0, 0] = 0  # must not raise: a writable copy, not a view of Pillow's buffer
    if before is not None:
        assert len(os.listdir(fd_dir)) == before
    os.replace(path, tmp_path / "renamed.png")  # would fail on Windows if the file were still open


# --- colour modes --------------------------------------------------------------------------------


def _palette_image(transparent: bool) -> Image.Image:
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    im.putdata([0, 1])
    if transparent:
        im.info["transparency"] = 1  # blue is the transparent index; its colour is kept
    return im


MODE_CASES = {
    "L": (lambda: Image.new("L", (2, 1), 90), "png", [(90, 90, 90)] * 2),
    "LA": (lambda: Image.new("LA", (2, 1), (90, 0)), "png", [(90, 90, 90)] * 2),
    "RGBA": (lambda: Image.new("RGBA", (2, 1), (10, 20, 30, 0)), "png", [(10, 20, 30)] * 2),
    "P": (lambda: _palette_image(False), "png", [RED, BLUE]),
    "P-transparency": (lambda: _palette_image(True), "png", [RED, BLUE]),
    "CMYK": (lambda: Image.new("CMYK", (2, 1), (0, 255, 255, 0)), "tiff", [RED] * 2),
    "1": (lambda: Image.frombytes("1", (2, 1), b"\x40"), "png", [(0, 0, 0), (255, 255, 255)]),
    "I": (lambda: Image.new("I", (2, 1), 30000), "tiff", [(117, 117, 117)] * 2),  # 30000 >> 8
    "F": (lambda: Image.new("F", (2, 1), 0.25), "tiff", [(64, 64, 64)] * 2),  # rint(63.75)
    "I;16": (lambda: Image.new("I;16", (2, 1), 0x8000), "png", [(128, 128, 128)] * 2),
}


@pytest.mark.parametrize("mode", list(MODE_CASES))
def test_modes_become_rgb(tmp_path, mode):
    make, fmt, expected = MODE_CASES[mode]
    path = _save(make(), tmp_path / f"mode.{fmt}")
    out = read_image(path)
    _check_rgb(out, (1, 2))
    assert [tuple(int(v) for v in px) for px in out[0]] == expected


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), tmp_path / "cmyk.jpg")
    out = read_image(path)
    _check_rgb(out, (8, 8))
    assert out.min() >= 245  # no ink is white


def test_16bit_png_ramp_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(1, 256)
    path = _save(Image.fromarray(ramp), tmp_path / "ramp16.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really stored as 16-bit
    out = read_image(path)
    _check_rgb(out, (1, 256))
    np.testing.assert_array_equal(out[0, :, 0], np.arange(256))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


# --- orientation and frames ----------------------------------------------------------------------


def test_exif_orientation_6_is_turned_upright(tmp_path):
    stored = Image.new("RGB", (64, 32), RED)
    stored.paste(BLUE, (32, 0, 64, 32))  # left half red, right half blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(stored, tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = read_image(path)
    _check_rgb(out, (64, 32))  # width and height swapped
    top, bottom = out[8:24, 8:24].reshape(-1, 3), out[40:56, 8:24].reshape(-1, 3)
    assert (np.abs(top.astype(int) - RED).max(axis=1) < 40).all()  # the left edge is now on top
    assert (np.abs(bottom.astype(int) - BLUE).max(axis=1) < 40).all()


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 3
    out = read_image(path)
    _check_rgb(out, (4, 4))
    assert (out.reshape(-1, 3) == RED).all()


def test_multipage_tiff_first_page(tmp_path):
    pages = [Image.new("RGB", (5, 3), GREEN), Image.new("RGB", (9, 9), BLUE)]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with Image.open(path) as im:
        assert im.n_frames == 2
    out = read_image(path)
    _check_rgb(out, (3, 5))
    assert (out.reshape(-1, 3) == GREEN).all()


# --- paths ---------------------------------------------------------------------------------------


def test_non_ascii_path_with_spaces(tmp_path):
    folder = tmp_path / "ünïcødé dir"
    folder.mkdir()
    path = _save(Image.new("RGB", (3, 2), GREEN), folder / "фото 1.png")
    for given in (path, str(path)):
        out = read_image(given)
        _check_rgb(out, (2, 3))
        assert (out.reshape(-1, 3) == GREEN).all()
    (folder / "фото 2.png").write_bytes(b"")
    with pytest.raises(InputError) as err:
        read_image(folder / "фото 2.png")
    _check_message(err, "фото 2.png", "empty file")


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "gone.png")
    _check_message(err, "gone.png", "no such file")
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "no dir" / "gone.png")
    _check_message(err, "gone.png", "no such file")


def test_folder_is_not_a_file(tmp_path):
    folder = tmp_path / "holiday.png"
    folder.mkdir()
    with pytest.raises(InputError) as err:
        read_image(folder)
    assert _check_message(err, "holiday.png") == "holiday.png: is a folder, not a file"


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root (or Windows) ignores chmod 000"
)
def test_unreadable_file(tmp_path):
    path = _save(Image.new("RGB", (2, 2)), tmp_path / "secret.png")
    path.chmod(0)
    try:
        with pytest.raises(InputError) as err:
            read_image(path)
        _check_message(err, "secret.png", "permission denied")
    finally:
        path.chmod(0o600)


def test_messages_name_the_file_not_the_path(tmp_path):
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "a" / "b" / "c.jpg")
    assert str(tmp_path) not in str(err.value)
    weird = tmp_path / ("line\nbreak" + "x" * 200 + ".png")
    with pytest.raises(InputError) as err:
        read_image(weird)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 150 and msg.endswith("no such file")


# --- bad content ---------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InputError) as err:
        read_image(path)
    assert _check_message(err, "empty.jpg") == "empty.jpg: empty file (0 bytes)"


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("this is not a picture\n" * 20)
    with pytest.raises(InputError) as err:
        read_image(path)
    assert _check_message(err, "photo.jpg") == "photo.jpg: not an image (unrecognised format)"


def _noisy(size=(96, 96)) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_truncated_file(tmp_path, fmt):
    whole = _save(_noisy(), tmp_path / f"whole.{fmt}")
    data = whole.read_bytes()
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read_image(path)
    assert _check_message(err, f"cut.{fmt}") == f"cut.{fmt}: truncated or corrupt image data"
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # global Pillow state left alone


def test_corrupt_header(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InputError) as err:
        read_image(path)
    _check_message(err, "bad.png")


def test_decompression_bomb_refused_by_pillow_limit(tmp_path):
    path = write_png_header(tmp_path / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 1000
    with pytest.raises(InputError) as err:
        read_image(path)
    assert _check_message(err, "bomb.png") == (
        "bomb.png: image too large (20000x20000 = 400.0 MP; the limit is 100 MP)"
    )


def test_decompression_bomb_refused_by_own_limit_before_decoding(tmp_path):
    path = write_png_header(tmp_path / "big.png", 12000, 10000)  # Pillow only warns at 120 MP
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as err:
            read_image(path)
    assert _check_message(err, "big.png") == (
        "big.png: image too large (12000x10000 = 120.0 MP; the limit is 100 MP)"
    )
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_max_pixels_argument(tmp_path):
    path = _save(Image.new("RGB", (100, 50)), tmp_path / "small.png")
    with pytest.raises(InputError) as err:
        read_image(path, max_pixels=4999)
    _check_message(err, "small.png", "100x50", "image too large")
    _check_rgb(read_image(path, max_pixels=5000), (50, 100))
    assert MAX_PIXELS == 100_000_000


# --- bytes ---------------------------------------------------------------------------------------


def test_decode_bytes_jpeg_and_errors():
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), BLUE).save(buf, "JPEG")
    out = decode_image_bytes(buf.getvalue(), name="clip.jpg")
    _check_rgb(out, (4, 6))
    assert np.abs(out.astype(int) - BLUE).max() < 12
    _check_rgb(decode_image_bytes(bytearray(buf.getvalue())), (4, 6))

    with pytest.raises(InputError) as err:
        decode_image_bytes(b"", name="clipboard")
    _check_message(err, "clipboard", "empty")
    with pytest.raises(InputError) as err:
        decode_image_bytes(b"<html>nope</html>", name="zip/member.png")
    assert str(err.value) == "member.png: not an image (unrecognised format)"
    with pytest.raises(InputError) as err:
        decode_image_bytes(buf.getvalue()[:200])
    _check_message(err, "image", "truncated or corrupt")


def test_decode_bytes_bomb(tmp_path):
    data = write_png_header(tmp_path / "x.png", 20000, 20000).read_bytes()
    with pytest.raises(InputError) as err:
        decode_image_bytes(data, name="paste")
    _check_message(err, "paste", "image too large", "20000x20000")


# --- arrays --------------------------------------------------------------------------------------


def test_to_rgb_uint8_shapes():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for given in (grey, grey[:, :, None], np.dstack([grey, grey, grey])):
        out = to_rgb_uint8(given)
        _check_rgb(out, (2, 3))
        np.testing.assert_array_equal(out[..., 1], grey)
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (1, 2, 3)
    rgba[..., 3] = 0  # alpha is dropped, colour kept
    assert (to_rgb_uint8(rgba).reshape(-1, 3) == (1, 2, 3)).all()
    strided = np.zeros((4, 6, 3), np.uint8)[::2, ::2]
    assert to_rgb_uint8(strided).flags.c_contiguous


def test_to_rgb_uint8_dtypes():
    ramp16 = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)
    np.testing.assert_array_equal(to_rgb_uint8(ramp16)[..., 0].ravel(), np.arange(256))
    floats = np.array([[-1.0, 0.0, 0.5, 1.0, 7.0, np.nan]], np.float32)
    assert to_rgb_uint8(floats)[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]
    assert to_rgb_uint8(floats.astype(np.float64))[0, 2, 0] == 128
    assert to_rgb_uint8(np.array([[True, False]]))[0, :, 2].tolist() == [255, 0]
    assert to_rgb_uint8(np.array([[-5, 100, 300]], np.int64))[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize(
    "bad",
    [np.zeros(5), np.zeros((2, 2, 5)), np.zeros((1, 2, 2, 3)), np.zeros((0, 4)),
     np.zeros((2, 2), complex)],
)
def test_to_rgb_uint8_rejects(bad):
    with pytest.raises(InputError) as err:
        to_rgb_uint8(bad)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("array: ")


def test_is_image_path():
    assert is_image_path("a/b/PHOTO.JPG") and is_image_path(Path("x.Tiff"))
    assert is_image_path("scan.webp") and is_image_path(b"raw.pgm")
    assert not is_image_path("notes.txt") and not is_image_path("jpg") and not is_image_path("a.")
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"} == (
        IMAGE_SUFFIXES
    )


def test_corrupt_exif_falls_back_to_stored_pixels():
    buf = io.BytesIO()
    broken_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff garbage"
    Image.new("RGB", (4, 2), (9, 9, 9)).save(buf, "JPEG", exif=broken_exif)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the broken EXIF block
        out = decode_image_bytes(buf.getvalue(), name="phone.jpg")
    _check_rgb(out, (2, 4))
    assert np.abs(out.astype(int) - 9).max() <= 3
