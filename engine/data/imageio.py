"""Turn whatever file or bytes a user supplies into an RGB ``uint8`` array.

Decoding is done by Pillow; nothing here imports Qt or reads paths with OpenCV (``cv2.imread``
cannot open non-ASCII paths on Windows). Every failure becomes :class:`InputError`, whose message
is a single line that starts with the file's *name* (never its full path), for example
``"photo.jpg: not an image (unrecognised format)"``.

Conventions, shared by files and by :func:`to_rgb_uint8`:

* alpha is **dropped**, not composited: a transparent pixel keeps the colour stored under it
  (the same result as Pillow's ``convert("RGB")`` and the usual dataset loaders);
* 16-bit data (``uint16``, Pillow modes ``I;16*`` and ``I``) is scaled to 8 bits by ``>> 8``;
* floating-point data (Pillow mode ``F``) is taken as 0..1, clipped, and rounded;
* truncated files are errors: Pillow's global ``LOAD_TRUNCATED_IMAGES`` is never touched.

Pillow itself refuses images over ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 MP) before we
see them, so a ``max_pixels`` above that cannot raise the effective limit; such refusals are
reported with the same "image too large" message.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.common.errors import error_line
from engine.common.text import one_line


class InputError(Exception):
    """A file or source the app cannot use.

    ``str(e)`` is one line a person can read, naming the file.
    """


MAX_PIXELS: int = 100_000_000
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

# What Pillow raises for damaged pixel data (decoders report "image file is truncated", "broken
# data stream" etc. as OSError without an errno; some plugins use the others).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_EXIF_ORIENTATION = 0x0112


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the path's suffix (any case) is one of :data:`IMAGE_SUFFIXES`."""
    return Path(os.fsdecode(path)).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array (H, W, 3), C-contiguous, upright per EXIF orientation."""
    name = display_name(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{name}: no such file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except (OSError, ValueError) as e:  # ValueError: embedded NUL byte in the name
        raise InputError(f"{name}: cannot access file ({_reason(e)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{name}: is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{name}: not a regular file")
    if info.st_size == 0:
        raise InputError(f"{name}: empty file (0 bytes)")
    try:
        fp = open(path, "rb")  # opened here, so it is closed here whatever Pillow does
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as e:
        raise InputError(f"{name}: cannot open file ({_reason(e)})") from None
    with fp:
        return _decode(fp, name, max_pixels)


def decode_image_bytes(
    data: bytes, *, name: str = "image", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Same from bytes (clipboard paste, archive members)."""
    name = display_name(name)
    if len(data) == 0:
        raise InputError(f"{name}: empty data (0 bytes)")
    return _decode(io.BytesIO(bytes(data)), name, max_pixels)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Any (H,W), (H,W,1), (H,W,2), (H,W,3), (H,W,4) array -> RGB uint8 (H,W,3), C-contiguous.

    uint8 is kept, uint16 is shifted right by 8, bool maps to 0/255, floats are taken as 0..1
    (clipped, NaN -> 0), other integer types are taken as 0..255 and clipped. A 2nd/4th channel is
    alpha and is dropped. An input that is already RGB uint8 and C-contiguous is returned as is.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 2):
        a = a[:, :, 0]
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise InputError(
            f"array: cannot use shape {a.shape} as an image (expected HxW, HxWx1, HxWx3 or HxWx4)"
        )
    if a.size == 0:
        raise InputError(f"array: image has no pixels (shape {a.shape})")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = np.where(a, np.uint8(255), np.uint8(0))
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
        a = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        a = np.clip(a, 0, 255).astype(np.uint8)
    else:
        raise InputError(f"array: unsupported pixel type {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a)


# --------------------------------------------------------------------------------------------------


def _decode(fp, name: str, max_pixels: int) -> np.ndarray:
    """Decode the first frame of the image in the binary file object ``fp``."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from about 89 MP; our own limit below is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise _too_large(name, max_pixels, _stated_size(fp), e) from None
    except _DECODE_ERRORS as e:
        raise _damaged(name, e, "truncated or corrupt image header") from None

    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise InputError(f"{name}: image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise _too_large(name, max_pixels, (width, height))
        try:
            im.load()  # first frame only for animated GIF / multi-page TIFF
        except Image.DecompressionBombError as e:
            raise _too_large(name, max_pixels, (width, height), e) from None
        except MemoryError:
            raise InputError(f"{name}: not enough memory for a {width}x{height} image") from None
        except _DECODE_ERRORS as e:
            raise _damaged(name, e, "truncated or corrupt image data") from None
        mode = im.mode
        try:
            return _to_array(_upright(im))
        except MemoryError:
            raise InputError(f"{name}: not enough memory for a {width}x{height} image") from None
        except ValueError:
            raise InputError(f"{name}: unsupported colour mode {mode}") from None


def _upright(im: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says; damaged EXIF is ignored."""
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(im)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - EXIF is optional metadata and Pillow's parser has many
        pass  # failure modes; any of them just means "show the pixels as stored".
    return im


def _to_array(im: Image.Image) -> np.ndarray:
    if im.mode == "I" or im.mode.startswith("I;16"):
        a = np.array(im)
        if a.dtype != np.uint16:  # mode I is 32-bit; its values are taken as 16-bit
            a = np.clip(a, 0, 65535).astype(np.uint16)
        return to_rgb_uint8(a)
    if im.mode == "F":
        return to_rgb_uint8(np.array(im))
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return np.ascontiguousarray(np.array(im.convert("RGBA"))[:, :, :3])
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.array(im))


def _too_large(
    name: str, limit: int, size: tuple[int, int] | None, pil_error: Exception | None = None
) -> InputError:
    if pil_error is not None and Image.MAX_IMAGE_PIXELS:
        limit = min(limit, 2 * Image.MAX_IMAGE_PIXELS)
    if size is not None:
        what = f"{size[0]}x{size[1]} = {_mp(size[0] * size[1])} MP"
    else:
        found = re.search(r"\((\d+) pixels\)", str(pil_error))
        what = f"{_mp(int(found.group(1)))} MP" if found else "over the limit"
    return InputError(f"{name}: image too large ({what}; the limit is {limit / 1e6:g} MP)")


def _stated_size(fp) -> tuple[int, int] | None:
    """Width and height as the header states them, for the message only.

    Pillow's own bomb check refuses an image before telling us its size, so the header is parsed
    again with the format plugins directly (they read the header, never the pixels).
    """
    try:
        fp.seek(0)
        prefix = fp.read(16)
        plugins = [Image.OPEN[fmt] for fmt in Image.ID]
    except (OSError, AttributeError, KeyError):
        return None
    for factory, accept in plugins:
        # Broad on purpose: this only decorates a message, and a plugin fed a header it does not
        # like may raise nearly anything; the caller falls back to Pillow's pixel count.
        try:
            ok = accept(prefix) if accept else True
            if ok and not isinstance(ok, str):
                fp.seek(0)
                width, height = factory(fp, "").size
                return int(width), int(height)
        except Exception:  # noqa: BLE001
            continue
    return None


def _damaged(name: str, e: Exception, what: str) -> InputError:
    if isinstance(e, OSError) and e.errno is not None:  # a real I/O error, not a decoder complaint
        return InputError(f"{name}: cannot read file ({_reason(e)})")
    return InputError(f"{name}: {what}")


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}" if pixels >= 100_000 else f"{pixels / 1e6:.2g}"


def _reason(e: Exception) -> str:
    return error_line(e, 60, os_reason=True)


def display_name(path) -> str:
    try:
        raw = os.fsdecode(path)
    except TypeError:
        raw = str(path)
    return one_line(Path(raw).name or raw or "image", 80)
