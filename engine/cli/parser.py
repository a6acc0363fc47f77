"""The command line's grammar: every command and flag of ``python main.py`` (docs/cli.md lists
them, and a test keeps the two in step)."""

from __future__ import annotations

import argparse

from engine.cli.args import (
    GRADCAM_METHODS,
    LINEUPS,
    PRECISION_HELP,
    PRECISIONS,
    TTA_MODES,
    backend_help,
    backend_names,
    default_backend,
    device_name,
    positive_int,
    seconds,
    seed_int,
)
from engine.models.registry import PROFILES


def build_parser() -> argparse.ArgumentParser:
    backends, every_backend, backend_text = backend_names(), ", ".join(backend_names(auto=False)), backend_help()
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="CNN Arena: LeNet-5, AlexNet, VGG and ENet side by side. "
                    "With no command, opens the window.")
    window = parser.add_argument_group("window options (no command)")
    window.add_argument("--source", dest="window_source", metavar="PATH",
                        help="start on this image, folder, video, camera index or stream URL")
    window.add_argument("--profile", dest="window_profile", choices=PROFILES, default="cifar10")
    window.add_argument("--device", dest="window_device", default="cpu", metavar="DEVICE", help="cpu, cuda or auto")
    window.add_argument("--precision", dest="window_precision", choices=PRECISIONS, default="auto",
                        help=PRECISION_HELP)
    window.add_argument("--backend", dest="window_backend", choices=backends, default=default_backend(),
                        help=backend_text)
    window.add_argument("--quit-after", type=seconds, metavar="SECONDS",
                        help="close the window this long after its first frame (or after the source fails or "
                             "ends; with no source, after the networks load); --report and --screenshot are "
                             "written as it closes")
    window.add_argument("--report", metavar="FILE.json", help="on closing, write a JSON run report")
    window.add_argument("--screenshot", metavar="FILE.png", help="on closing, save a screenshot of the window")
    window.add_argument("--weights", dest="window_weights", action="append", default=[], metavar="MODEL=PATH",
                        help="a custom checkpoint for one network (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="the comparison table: parameters, MACs, size, memory, accuracy")
    info.add_argument("--profile", choices=PROFILES, help="one profile (default: both)")
    info.add_argument("--lineup", choices=LINEUPS[1:],
                      help="imagenet: a reference line-up for the analysis, with torchvision's published figures")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    predict = sub.add_parser("predict", help="top-k predictions of every network on image files")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--profile", choices=PROFILES, default="cifar10")
    predict.add_argument("--runs", type=positive_int, default=5, metavar="N",
                         help="warm runs of each image; the medians of their timings are printed (default 5)")
    predict.add_argument("--top", type=positive_int, default=5, metavar="K")
    predict.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                         help="a custom checkpoint for one network (repeatable)")
    predict.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or auto")
    predict.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    predict.add_argument("--backend", choices=backends, default=default_backend(), help=backend_text)
    predict.add_argument("--download", action="store_true",
                         help="imagenet: download torchvision's weights when they are not cached yet")
    predict.add_argument("--json", action="store_true")

    evaluate = sub.add_parser("eval", help="top-1/top-5 accuracy and speed on a labelled set")
    evaluate.add_argument("--data", required=True, metavar="PATH",
                          help="CIFAR-10 archive (.tar.gz) or ImageFolder directory; its test split is used")
    evaluate.add_argument("--profile", choices=["cifar10"], default="cifar10")
    evaluate.add_argument("--models", nargs="+", metavar="MODEL", help="default: the four of the comparison")
    evaluate.add_argument("--limit", type=positive_int, metavar="N",
                          help="only N images, spread evenly over the classes")
    evaluate.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or auto")
    evaluate.add_argument("--tta", nargs="?", const="flip", choices=TTA_MODES, default=None,
                          help="test-time augmentation: flip (the default of --tta) averages with the mirror "
                               "image; flip+shift also with both moved by one pixel, up-left and down-right")
    evaluate.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                          help="fp32 (default), bf16 weights and inputs where the hardware has bf16, or int8: "
                               "each network quantized on ONNX Runtime (calibrated on the training split of --data) "
                               "and measured against its fp32 graph on the same test images")
    evaluate.add_argument("--backend", choices=backends[1:], default=None,
                          help=f"what runs the networks: one of {every_backend} (default torch, the reference); "
                               "--precision int8 runs on onnxruntime only")
    evaluate.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                          help="a custom checkpoint for one network (repeatable)")
    evaluate.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="latency, engine overhead, throughput and memory")
    bench.add_argument("--profile", choices=PROFILES, default="cifar10")
    bench.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or auto")
    bench.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    bench.add_argument("--backend", default="torch,onnxruntime", metavar="NAMES",
                       help=f"the backends to compare side by side: a comma-separated list of {every_backend} "
                            f"and auto, each with its own number format if you like (onnxruntime:fp32,auto), or "
                            f"all ({every_backend}); default torch,onnxruntime")
    bench.add_argument("--source", metavar="PATH", help="also run this source through the whole engine")
    bench.add_argument("--frames", type=positive_int, default=300, metavar="N")
    bench.add_argument("--batch", type=positive_int, metavar="N",
                       help="throughput batch size (default: 256 for cifar10 and on a GPU, 16 for imagenet on "
                            "the CPU; halved until it fits in memory)")
    bench.add_argument("--runs", type=positive_int, metavar="N",
                       help="exactly N timed runs per model (default: 200, and more until --min-seconds have passed)")
    bench.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads (default: torch's)")
    bench.add_argument("--min-seconds", type=float, metavar="S",
                       help="time each network's latency and throughput for at least this long "
                            "(a fast network's median needs it)")
    bench.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                       help="a custom checkpoint for one network (repeatable)")
    bench.add_argument("--json", action="store_true")

    train = sub.add_parser("train", help="train a cifar10 network (or all four), resumably, and write its weights")
    train.add_argument("--model", required=True, help="a cifar10 network, or 'all' for the four in turn")
    train.add_argument("--data", required=True, metavar="PATH",
                       help="CIFAR-10 archive, ImageFolder directory, or 'download' (torchvision)")
    train.add_argument("--epochs", type=positive_int)
    train.add_argument("--device", type=device_name, default="auto", help="auto, cpu or cuda")
    train.add_argument("--out", metavar="DIR",
                       help="where the weights go (default: the user's runs folder; a file there is backed up)")
    train.add_argument("--resume", action="store_true", help="continue the saved run with the same recipe and data")
    train.add_argument("--restart", action="store_true", help="discard a saved unfinished run and start over")
    train.add_argument("--nice", action="store_true", help="run at the lowest CPU priority")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--set", action="append", metavar="FIELD=VALUE", dest="recipe_set",
                       help="change one field of the recipe (repeatable), e.g. --set grad_clip=none; "
                            "to measure a change on the validation split")
    train.add_argument("--val", type=int, default=5000, metavar="N", help="training images held out")
    train.add_argument("--limit", type=positive_int, metavar="N", help="train on the first N images only")
    train.add_argument("--seed", type=seed_int, default=0)
    train.add_argument("--dist-timeout", type=seconds, default=600.0, metavar="SECONDS",
                       help="under torchrun: how long a process waits for the others (a slow data load, a "
                            "checkpoint) before it gives up; a process that dies stops the others at once "
                            "(default 600)")

    analyze = sub.add_parser("analyze", help="the survey's claims measured here: latency per batch size, memory, "
                             "time per layer, and a verdict on each claim")
    analyze.add_argument("--profile", choices=PROFILES, default="cifar10")
    analyze.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or auto")
    analyze.add_argument("--max-batch", type=positive_int, metavar="N",
                         help="batch sizes 1, 2, 4, ... up to N (default 64; a line-up on the CPU: 4, quick 1)")
    analyze.add_argument("--lineup", choices=LINEUPS, default="four",
                         help="imagenet: the four (default), the survey's networks that torchvision builds "
                              "beside them (paper), or networks from after it (modern)")
    analyze.add_argument("--quick", action="store_true",
                         help="fewer runs and batch sizes (the four: up to 8; a line-up: batch 1 on the CPU)")
    analyze.add_argument("--threads", type=positive_int, metavar="N",
                         help="a line-up's torch CPU threads (default 1: it keeps its core on a busy machine)")
    analyze.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                         help="fp32 (default: operations compare like with like), or bf16 where the hardware has it")
    analyze.add_argument("--backend", default="torch", metavar="NAMES",
                         help=f"the backends to measure, each a dimension of the analysis: a comma-separated list of "
                              f"{every_backend}, or all; default torch")
    analyze.add_argument("--fresh", action="store_true",
                         help="measure again even when this machine's results are cached")
    analyze.add_argument("--out", metavar="DIR", help="also write the figures (PNG), the data (CSV, JSON) and "
                         "report.html into DIR")
    analyze.add_argument("--json", action="store_true", help="every measurement and verdict as JSON")

    explain = sub.add_parser("explain", help="Grad-CAM of every network on an image: overlay PNGs and .npy maps")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for the files (made when missing)")
    explain.add_argument("--method", choices=GRADCAM_METHODS, default="gradcam",
                         help="gradcam (default), gradcam++, or scorecam (one pass per channel: seconds)")
    explain.add_argument("--profile", choices=PROFILES, default="cifar10")
    explain.add_argument("--layer", action="append", default=[], metavar="MODEL=LAYER",
                         help="explain this layer of one network instead of its default (repeatable)")
    explain.add_argument("--target", metavar="CLASS",
                         help="the class to explain, by name or index (default: each network's own top-1)")
    explain.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or auto")
    explain.add_argument("--precision", choices=PRECISIONS, default="fp32",
                         help="fp32 (default), bf16 or auto; maps are computed in float32 either way")
    explain.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                         help="a custom checkpoint for one network (repeatable)")
    explain.add_argument("--json", action="store_true")

    robust = sub.add_parser("robustness", help="top-1 of each network under noise, blur, JPEG, rotation, ...")
    robust.add_argument("--data", required=True, metavar="PATH",
                        help="CIFAR-10 archive (.tar.gz) or ImageFolder directory; its test split is used")
    robust.add_argument("--limit", type=positive_int, default=1000, metavar="N",
                        help="N images spread evenly over the classes (default 1000)")
    robust.add_argument("--models", nargs="+", metavar="MODEL", help="default: the four of the comparison")
    robust.add_argument("--out", metavar="DIR", help="also write robustness.csv and one PNG plot per perturbation")
    robust.add_argument("--seed", type=seed_int, default=0, help="seed of the noise (default 0)")
    robust.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or auto")
    robust.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32 (default), or bf16 weights and inputs where the hardware has bf16")
    robust.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                        help="a custom checkpoint for one network (repeatable)")
    robust.add_argument("--json", action="store_true")

    top = sub.add_parser("top-images", help="what each channel of a layer looks for: its nine strongest test "
                         "images, cropped to the receptive field, as PNG grids")
    top.add_argument("--data", required=True, metavar="PATH",
                     help="CIFAR-10 archive (.tar.gz) or ImageFolder directory; its test split is searched")
    top.add_argument("--model", required=True, metavar="NAME", help="a cifar10 network (vgg16, alexnet, ...)")
    top.add_argument("--layer", required=True, metavar="LAYER", help="a layer with a spatial map: features.conv5_3")
    top.add_argument("--limit", type=positive_int, default=2000, metavar="N",
                     help="N test images spread over the classes (default 2000)")
    top.add_argument("--out", required=True, metavar="DIR",
                     help="folder for channel_NNN.png and index.json (new, empty, or an earlier top-images output)")
    top.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or auto")
    top.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                     help="a custom checkpoint for the network")
    top.add_argument("--json", action="store_true", help="a summary as JSON (the channels are in index.json)")
    return parser
