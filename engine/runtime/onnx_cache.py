"""The ONNX exports on disk: keyed by the network, a digest of its weights, the tapped layers and the
versions that made them, each with its sha256 beside it; never trusted without those checks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from engine.models.adapter import ModelAdapter
from engine.runtime.onnx_export import EXPORT_FORMAT, MAX_EXPORT_BYTES

log = logging.getLogger(__name__)


def onnxruntime_version() -> str | None:
    """ONNX Runtime's version, or None where it cannot be imported."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def weights_digest(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): the weights as loaded."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return ""

    return {"torch": torch.__version__, "onnx": installed("onnx"), "onnxscript": installed("onnxscript"),
            "onnxruntime": onnxruntime_version() or ""}


def sweep_exports(folder: Path) -> list[Path]:
    """Remove the partial files of exports whose writer died (atomic_write's temporary files, and the
    ``.part-*`` files that earlier versions wrote and nothing writes any more); returns them."""
    from engine.common.files import remove_stale_temps

    removed = remove_stale_temps(folder, "*")
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".part-") and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


class OnnxCache:
    """Exported graphs on disk, by key (module docs). Writes are atomic (temporary file, rename)."""

    def __init__(self, folder: Path | None = None) -> None:
        if folder is None:
            from engine.common.settings import cache_dir as default_cache_dir

            folder = default_cache_dir() / "onnx"
        self.folder = folder
        self.exports = 0  # how many graphs this cache had to export (tests and logs read it)
        sweep_exports(folder)

    def key(self, adapter: ModelAdapter, digest: str, layers: Sequence[str], with_map: bool) -> str:
        spec = adapter.spec
        text = json.dumps({"format": EXPORT_FORMAT, "network": spec.name, "profile": spec.profile,
                           "input": list(spec.input_size), "weights": digest, "taps": list(layers),
                           "map": with_map, **_versions()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, adapter: ModelAdapter, key: str) -> Path:
        return self.folder / f"{adapter.spec.profile}-{adapter.spec.name}-{key[:20]}.onnx"

    KEEP = 8  # exports kept per network and profile, the most recently used (other weights, tap sets)

    def read(self, path: Path) -> bytes | None:
        """The file's bytes when its sidecar's sha256 matches them, else None (a damaged entry is
        one line, and exported again). Only regular files of bounded size are read: a FIFO would
        block, a link to /dev/zero fill the memory."""
        from engine.common.files import cache_rebuilt, read_regular

        try:
            data = read_regular(path, MAX_EXPORT_BYTES)
            meta = json.loads(read_regular(path.with_suffix(".json"), 1 << 16).decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            cache_rebuilt("ONNX", path, e)
            return None
        if not isinstance(meta, dict) or meta.get("sha256") != hashlib.sha256(data).hexdigest():
            cache_rebuilt("ONNX", path, "its sha256 is not the one recorded beside it")
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: the last to be pruned
        return data

    def prune(self, path: Path) -> None:
        """Keep the :attr:`KEEP` most recently used exports of ``path``'s network, remove the rest
        (a network retrained again and again would otherwise fill the disk)."""
        prefix = path.name.rsplit("-", 1)[0] + "-"
        try:
            same = [p for p in self.folder.glob(f"{prefix}*.onnx") if p.name.count("-") == path.name.count("-")]
            files = sorted(same, key=lambda p: p.stat().st_mtime, reverse=True)
            for old in files[self.KEEP:]:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot prune the ONNX cache in %s: %s", self.folder, e)

    def write(self, path: Path, data: bytes) -> bool:
        """Store ``data`` at ``path`` with its sidecar; a cache that cannot be written is only logged
        (the graph still runs from memory) and gives False."""
        from engine.common.files import atomic_write

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for target, payload in ((path, data), (path.with_suffix(".json"), json.dumps(
                    {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}).encode())):
                atomic_write(target, lambda tmp, payload=payload: tmp.write_bytes(payload), cache=True)
        except OSError as e:
            log.warning("cannot cache the ONNX export at %s: %s", path, e)
            return False
        self.prune(path)
        return True
