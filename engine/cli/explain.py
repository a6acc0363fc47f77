"""``python main.py explain IMAGE --out DIR``: where each network found its answer (Grad-CAM).

Every network of the profile runs on the image through the engine (the same preprocessing and
precision as ``predict``), with a :class:`~engine.probes.gradcam.GradCam` probe. For each network
two files go into DIR, named after the image, the network and the method:

- ``<image>_<model>_<method>.png``: the image as that network sees it, enlarged to at least 256
  pixels, with the map over it (OpenCV's jet colours: red where the evidence is);
- ``<image>_<model>_<method>.npy``: the map itself, float32 (H, W) in [0, 1] at the network's input
  size.

DIR is made when missing; if it is a file, nothing is written. Files of those names in DIR are
replaced whole (written beside and renamed), nothing else in DIR is touched.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from engine.cli.args import parse_weights
from engine.cli.output import CliError, format_table, print_json, terminal_text
from engine.cli.robustness import make_folder, output_folder
from engine.common.files import atomic_write
from engine.data.imageio import InputError, display_name, read_image
from engine.models.registry import RegistryError
from engine.models.weights import UNTRAINED, WeightsError
from engine.probes.gradcam import GradCam, GradCamError, GradCamResult, deeper_layer
from engine.runtime.precision import PrecisionError
from engine.runtime.session import InferenceSession

OVERLAY_MIN_SIDE = 256  # pixels: a 32x32 view is enlarged 8 times so that a person can see it
OVERLAY_ALPHA = 0.45  # the map's share of each overlay pixel


def cmd_explain(args: argparse.Namespace) -> int:
    folder = output_folder(args.out)
    layers = parse_layers(args.layer)
    weights = parse_weights(args.weights)
    try:
        image = read_image(args.image)
    except InputError as e:
        raise CliError(str(e)) from None
    try:
        session = InferenceSession(args.profile, args.device, weights=weights, top_k=1, precision=args.precision)
    except (RegistryError, WeightsError, PrecisionError, ValueError) as e:
        raise CliError(str(e)) from None
    for name, layer in layers.items():
        if name not in session.names:
            raise CliError(f"--layer {name}: no such network in the {args.profile} line-up "
                           f"({', '.join(session.names)})")
        try:
            session.adapter(name).layer(layer)
        except AttributeError:
            raise CliError(f"--layer {name}={layer}: {name} has no layer {layer!r}") from None
    target = class_index(args.target, session.spec(session.names[0]).class_names) if args.target else None
    session.set_probes({name: (GradCam(layers.get(name, ""), target, args.method),) for name in session.names})
    # The first pass of a network with gradients builds its backward kernels (ENet: seconds), so
    # Grad-CAM and Grad-CAM++ run twice and the second, warm time is reported; Score-CAM, whose
    # hundreds of passes dwarf that, runs once and its time is marked cold.
    runs = 1 if args.method == "scorecam" else 2
    try:
        for _ in range(runs):
            frame = session.run(image, source=args.image)
    except GradCamError as e:
        raise CliError(str(e)) from None
    make_folder(folder)
    stem = _safe(Path(args.image).stem) or "image"
    method = args.method.replace("+", "p")
    answers = []
    for name, r in frame.results.items():
        cam: GradCamResult = r.probes["gradcam"]
        png, npy = folder / f"{stem}_{name}_{method}.png", folder / f"{stem}_{name}_{method}.npy"
        try:
            atomic_write(png, lambda tmp, view=r.view, heat=cam.map: overlay(view, heat).save(tmp, format="PNG"))
            atomic_write(npy, lambda tmp, heat=cam.map: _save_npy(tmp, heat))
        except OSError as e:
            raise CliError(f"{display_name(str(folder))}: cannot write ({e.strerror or e})") from None
        answers.append({
            "model": name, "class": cam.target, "label": cam.label, "probability": round(cam.probability, 6),
            "top1": r.top_labels[0], "layer": cam.layer, "grid": list(cam.grid), "method": cam.method,
            "ms": round(cam.ms, 3), "timing": "warm" if runs > 1 else "cold",
            "weights": str(session.loaded(name).status), "precision": session.precision_of(name)[0],
            "png": str(png), "npy": str(npy),
            # False: every location of the layer's weighted map lowers the class score (an all-zero map)
            "positive_evidence": bool(cam.map.any()),
        })
    if args.json:
        print_json({"image": args.image, "profile": args.profile, "results": answers})
        return 0
    print(terminal_text(args.image))
    rows = [[a["model"], f"{a['label']} {100 * a['probability']:.1f}%", f"{a['layer']} ({a['grid'][0]}x{a['grid'][1]})",
             f"{a['ms']:.1f}", "UNTRAINED" if a["weights"] == str(UNTRAINED) else a["weights"]] for a in answers]
    print(format_table(["model", "explained", "layer (grid)", "ms", "weights"], rows, right={3}))
    print(f"  ms: the probe's time on this image ({'second run, warm' if runs > 1 else 'one run, cold'})")
    for a in answers:
        if not a["positive_evidence"]:
            deeper = deeper_layer(session.layers(a["model"]), a["layer"])
            print(f"  {a['model']}: no positive evidence at {a['layer']} (its map is all zero)"
                  + (f"; try the deeper --layer {a['model']}={deeper}" if deeper else ""))
    print(f"wrote {len(answers) * 2} files into {terminal_text(str(folder))}")
    return 0


def parse_layers(items: list[str]) -> dict[str, str]:
    """``--layer MODEL=LAYER`` options as a mapping; a malformed one is a :class:`CliError`."""
    layers = {}
    for item in items:
        name, sep, layer = item.partition("=")
        if not sep or not name.strip() or not layer.strip():
            raise CliError(f"--layer {item!r}: expected MODEL=LAYER, e.g. vgg16=features.relu5_3")
        layers[name.strip()] = layer.strip()
    return layers


def class_index(text: str, class_names: tuple[str, ...]) -> int:
    """``--target``: a class name (any case) or index of the profile's classes."""
    lowered = {c.lower(): i for i, c in enumerate(class_names)}
    if text.strip().lower() in lowered:
        return lowered[text.strip().lower()]
    try:
        index = int(text)
    except ValueError:
        shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
        raise CliError(f"--target {text!r}: not a class of this profile ({shown})") from None
    if not 0 <= index < len(class_names):
        raise CliError(f"--target {index}: class indices run from 0 to {len(class_names) - 1}")
    return index


def overlay(view: np.ndarray, heat: np.ndarray):
    """The network's view (H, W, 3 uint8) with ``heat`` ((H, W) in [0, 1]) blended over it, enlarged
    to at least :data:`OVERLAY_MIN_SIDE` pixels (the picture's pixels kept square, the map smooth)."""
    import cv2
    from PIL import Image

    h, w = view.shape[:2]
    factor = max(1, math.ceil(OVERLAY_MIN_SIDE / min(h, w)))
    size = (w * factor, h * factor)
    picture = cv2.resize(view, size, interpolation=cv2.INTER_NEAREST).astype(np.float32)
    smooth = cv2.resize(np.ascontiguousarray(heat, dtype=np.float32), size, interpolation=cv2.INTER_LINEAR)
    levels = np.clip(np.rint(smooth * 255), 0, 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB).astype(np.float32)
    blended = picture * (1 - OVERLAY_ALPHA) + colour * OVERLAY_ALPHA
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a path
        np.save(f, np.asarray(array, dtype=np.float32))


def _safe(text: str) -> str:
    """A file-name part from an image's name: letters, digits, '-', '_' and '.', others as '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".")[:80]
