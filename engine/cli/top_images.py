"""``python main.py top-images``: what each channel of a layer looks for (engine.studies.top_images).

Writes into ``--out DIR`` one PNG per channel, ``channel_NNN.png``: a 3x3 grid of the crops under
the receptive field of the channel's strongest response on its nine best test images, each
enlarged (nearest neighbour) to 64x64 with its class name under it; and ``index.json``: per channel
the image ids (indices in the CIFAR-10 test split), scores, classes, map positions and crop boxes.
DIR must be new, empty, or hold only an earlier ``top-images`` output (which is replaced).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from engine.cli.evaluate import networks_and_test_set
from engine.cli.output import (
    CliError,
    JobProgressBar,
    format_table,
    pil_font,
    print_json,
    stop_on_signals,
    terminal_text,
)
from engine.common.files import atomic_write
from engine.data.imageio import display_name
from engine.jobs import Cancelled, JobState
from engine.models.registry import RegistryError, get_spec
from engine.probes.receptive import ReceptiveFieldError, receptive_field
from engine.runtime.device import device_label, resolve_device
from engine.studies.evaluation import sample_indices
from engine.studies.top_images import TopImages, TopImagesError, top_images

TILE = 64  # each crop is enlarged to fit TILE x TILE pixels
INDEX = "index.json"
KIND = "top-images"  # index.json's "kind": how an earlier output of this command is recognised
_OWN_FILE = re.compile(r"channel_\d{3,}\.png")
THEMES_SHOWN = 12


def cmd_top_images(args: argparse.Namespace) -> int:
    out = check_out(args.out)
    try:
        device = resolve_device(args.device, strict=True)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        spec = get_spec(args.model, "cifar10")
    except RegistryError as e:
        raise CliError(str(e)) from None
    try:  # the layer checked on the network's shapes alone, before its weights and the data load
        receptive_field(spec, args.layer)
    except ReceptiveFieldError as e:
        raise CliError(str(e)) from None
    [loaded], images, labels = networks_and_test_set([spec], args.weights, args.data, "searched")
    ids = sample_indices(len(labels), args.limit)
    job = JobState(on_progress=JobProgressBar())
    with stop_on_signals(job):
        try:
            result = top_images(loaded, args.layer, images[ids], labels[ids], image_ids=ids, device=device, job=job)
        except Cancelled:
            print("top-images stopped: nothing was written", file=sys.stderr)
            return 130
        except TopImagesError as e:
            raise CliError(str(e)) from None
    written = write_outputs(result, out)
    if args.json:
        report = {key: value for key, value in result.as_dict().items() if key != "channels"}
        report.update(device=device_label(device), out=str(out), files=len(written),
                      data="torchvision CIFAR-10" if args.data == "download" else display_name(args.data))
        print_json(report)
        return 0
    _print_human(result, args, device, out, len(written))
    return 0


def check_out(text: str) -> Path:
    """``--out DIR`` checked before any work: new, empty, or holding only an earlier top-images
    output (``index.json`` of this command and ``channel_NNN.png`` files). Anything else is refused,
    so that no file of the user's is overwritten or left mixed with ours."""
    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {display_name(text)}: exists and is not a folder")
    if out.is_dir():
        try:
            names = [p.name for p in out.iterdir()]
        except OSError as e:
            raise CliError(f"--out {display_name(text)}: cannot read the folder ({e.strerror or e})") from None
        if names and not (_is_earlier_output(out) and all(n == INDEX or _OWN_FILE.fullmatch(n) for n in names)):
            raise CliError(f"--out {display_name(text)}: the folder has other files in it; choose a new or empty "
                           "folder (or one an earlier top-images run wrote)")
    return out


def _is_earlier_output(folder: Path) -> bool:
    try:
        return json.loads((folder / INDEX).read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def write_outputs(result: TopImages, out: Path) -> list[Path]:
    """The grids and ``index.json`` (see the module docs); an earlier output's grids are removed
    first, so the folder holds this run's channels only. Returns the paths written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():
            if _OWN_FILE.fullmatch(old.name):
                old.unlink()
        written = []
        for c in range(result.channels):
            path = out / channel_file(c)
            image = channel_grid(result, c)
            atomic_write(path, lambda tmp, image=image: image.save(tmp, format="PNG"))
            written.append(path)
        index = result.as_dict()
        index["kind"] = KIND
        for c, entry in index["channels"].items():
            entry["file"] = channel_file(int(c))
        text = json.dumps(index, indent=1) + "\n"
        atomic_write(out / INDEX, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        written.append(out / INDEX)
    except OSError as e:
        raise CliError(f"--out {display_name(str(out))}: cannot write ({e.strerror or e})") from None
    return written


def channel_file(channel: int) -> str:
    return f"channel_{channel:03d}.png"


def channel_grid(result: TopImages, channel: int, columns: int = 3):
    """A Pillow image: the channel's crops in a grid (best first, row by row), each enlarged with
    nearest neighbour to fit ``TILE`` x ``TILE``, its class name under it, a title line on top."""
    from PIL import Image, ImageDraw

    font = pil_font(11)
    gap, caption, title = 6, 14, 18
    rows = -(-result.top_k // columns)
    width = columns * TILE + (columns + 1) * gap
    height = title + rows * (TILE + caption + gap) + gap
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((gap, 3), f"{result.model} {result.layer} #{channel}", fill="black", font=font)
    for r in range(result.top_k):
        crop = result.crop(channel, r)
        x0 = gap + (r % columns) * (TILE + gap)
        y0 = title + (r // columns) * (TILE + caption + gap)
        if crop.size:
            h, w = crop.shape[:2]
            scale = TILE / max(h, w)
            tile = Image.fromarray(crop).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                Image.Resampling.NEAREST)
            image.paste(tile, (x0 + (TILE - tile.width) // 2, y0 + (TILE - tile.height) // 2))
        draw.text((x0 + TILE / 2, y0 + TILE + 1), result.class_name(channel, r), fill="#222222", font=font,
                  anchor="ma")
    return image



def _print_human(result: TopImages, args: argparse.Namespace, device, out: Path, files: int) -> None:
    rf = result.receptive
    data = "torchvision CIFAR-10" if args.data == "download" else display_name(args.data)
    c, h, w = result.map_shape
    took = "read from the cache" if result.cached else f"{result.seconds:.1f} s"
    print(f"{result.model} {result.layer}: {c} channels on a {h}x{w} map; {result.images:,} test images of {data}, "
          f"device {device_label(device)}, {took}")
    print(f"  receptive field of one position: {rf.size[0]}x{rf.size[1]} input pixels, jump {rf.jump[0]}, "
          f"offset {rf.offset[0]} (crops are clipped to the 32x32 image)")
    themes = sorted(range(result.channels), key=lambda ch: (-result.dominant_class(ch)[1], -result.scores[ch, 0]))
    rows = []
    for ch in themes[:THEMES_SHOWN]:
        name, count = result.dominant_class(ch)
        rows.append([ch, f"{count}/{result.top_k}", name, f"{result.scores[ch, 0]:.2f}"])
    print(f"channels whose top {result.top_k} images share a class most often:")
    print(format_table(["channel", "same", "class", "best score"], rows, right={0, 1, 3}))
    silent = result.silent_channels
    if silent:
        shown = ", ".join(map(str, silent[:20])) + (", ..." if len(silent) > 20 else "")
        print(f"  {len(silent)} channel(s) fired on none of the images: {shown}")
    print(f"wrote {files - 1} grids and {INDEX} into {terminal_text(str(out))}")

