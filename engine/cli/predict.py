"""``python main.py predict IMAGE...``: every network of a profile on each image.

Each image is answered on its own: a file that cannot be read gets a one-line error and the others
are still answered. Exit status 0 when every image was read, 2 when any was not, or when a
``--weights`` file cannot be used (nothing is answered on other weights than the ones asked for).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from engine.cli.args import parse_weights
from engine.cli.output import CliError, JobProgressBar, format_table, print_json, terminal_text
from engine.data.download import DownloadError, download_weights
from engine.data.imageio import InputError, read_image
from engine.jobs import JobState
from engine.models.registry import RegistryError, list_specs
from engine.models.weights import WeightsError
from engine.runtime.backends import BackendError, label
from engine.runtime.precision import PrecisionError
from engine.runtime.session import InferenceSession


def cmd_predict(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise CliError("--top must be at least 1")
    weights = parse_weights(args.weights)
    download_failed = False
    if getattr(args, "download", False):
        try:
            download_weights(list_specs(args.profile), JobState(on_progress=JobProgressBar()))
        except DownloadError as e:  # answer with what there is (marked untrained), then exit 2
            # the command's own way to a local file (the window's message bar names its menu)
            print(f"error: {terminal_text(str(e))}; a local file: --weights MODEL=PATH", file=sys.stderr, flush=True)
            download_failed = True
    try:
        session = InferenceSession(args.profile, args.device, weights=weights, top_k=args.top,
                                   precision=args.precision, backend=args.backend)
    except (RegistryError, WeightsError, PrecisionError, BackendError) as e:
        raise CliError(str(e)) from None
    for message in session.messages:
        print(f"warning: {message}", file=sys.stderr)
    session.warm_up()
    answers, failed = [], False
    for frame_id, path in enumerate(args.images):
        try:
            image = read_image(path)
        except InputError as e:
            answers.append({"image": path, "error": str(e)})
            failed = True
            continue
        # One timing of one image says little (the first is cold, any one may be interrupted):
        # the image runs --runs times (5), warm, and the medians are reported.
        runs = [session.run(image, frame_id, path) for _ in range(args.runs)]
        result = runs[-1]

        def median(name: str, field: str, runs: list = runs) -> float:
            return round(float(np.median([getattr(run.results[name], field) for run in runs])), 3)

        answers.append({"image": path, "results": {
            name: {
                "top": [{"label": label, "prob": round(float(p), 6)}
                        for label, p in zip(r.top_labels, r.top_probs)],
                "forward_ms": median(name, "forward_ms"),
                "preprocess_ms": median(name, "preprocess_ms"),
                "latency_ms": median(name, "latency_ms"),
                "timed_runs": args.runs,
                "weights": session.loaded(name).status,
                "precision": session.precision_of(name)[0],
                "backend": session.backend_of(name)[0],
                "runtime": session.decision(name).as_dict(),  # what runs it and the times it was chosen on
            } for name, r in result.results.items()}})
    if args.json:
        print_json(answers)
    else:
        _print_human(answers, session)
    return 2 if failed or download_failed else 0


def _print_human(answers: list[dict], session: InferenceSession) -> None:
    for answer in answers:
        shown = terminal_text(answer["image"])  # a file name may hold escape sequences
        if "error" in answer:
            print(f"{shown}: error: {terminal_text(answer['error'])}")
            continue
        print(shown)
        rows = []
        for name, r in answer["results"].items():
            tops = ", ".join(f"{t['label']} {100 * t['prob']:.1f}%" for t in r["top"])
            status = "" if r["weights"] != "untrained" else "  (UNTRAINED: random weights)"
            runs_on = label(r["backend"]) + (f" {r['precision']}" if r["precision"] != "fp32" else "")
            rows.append([name, runs_on, f"{r['forward_ms']:.2f}", f"{r['preprocess_ms']:.2f}",
                         tops + status])
        print(format_table(["model", "backend", "forward ms", "prep ms", "top predictions"], rows, right={2, 3}))
        print()
