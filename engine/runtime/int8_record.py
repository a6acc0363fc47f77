"""What int8 costs a network, on disk: :class:`Int8Record`, the fp32 and int8 top-1 measured on a
test set, and :class:`Int8Cache`, the folder (``<cache>/onnx/int8``) where the quantized graphs
(:mod:`engine.runtime.quantize`) and their records are kept. A graph is stored with its sha256 beside
it, as the fp32 exports are; a record is read back field by field, and one with a missing, extra or
ill-typed field, or one about another graph, is ignored with a warning, never trusted."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from engine.common.errors import error_line
from engine.models.spec import ModelSpec
from engine.runtime.onnx_cache import OnnxCache

HOLD_POINTS = 0.5  # int8 is kept for a network only where its top-1 is within this many points of fp32
RECORD_FORMAT = 1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Record:
    """What int8 costs one network in top-1 on a test set, against fp32 on the same images."""

    network: str
    profile: str
    weights_digest: str
    config_key: str
    calibration: str  # fingerprint of the calibration batch
    test_set: str  # fingerprint of the test images and labels evaluated
    images: int
    fp32_top1: float  # fractions, 0..1
    int8_top1: float
    date: str  # ISO 8601, UTC

    @property
    def drop_points(self) -> float:
        return 100.0 * (self.fp32_top1 - self.int8_top1)

    def to_json(self) -> bytes:
        return json.dumps({"format": RECORD_FORMAT, **asdict(self)}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Int8Record:
        """The record in ``data``, or ValueError (one line) when anything is missing, extra or wrong."""
        meta = json.loads(data.decode("utf-8"))
        names = [f.name for f in fields(cls)]
        if not isinstance(meta, dict) or meta.get("format") != RECORD_FORMAT:
            raise ValueError("not an int8 record of this version")
        if set(meta) != {"format", *names}:
            raise ValueError("its fields are not a record's")
        for f in fields(cls):
            value = meta[f.name]
            kind = {"int": int, "float": (int, float)}.get(f.type, str)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{f.name} is not a {f.type}")
        if meta["images"] <= 0:
            raise ValueError("it covers no images")
        for name in ("fp32_top1", "int8_top1"):
            if not (math.isfinite(meta[name]) and 0.0 <= meta[name] <= 1.0):
                raise ValueError(f"{name} is not a fraction")
        datetime.fromisoformat(meta["date"])
        return cls(**{name: meta[name] for name in names})


def holds(record: Int8Record, limit: float = HOLD_POINTS) -> bool:
    """Whether int8's top-1 is within ``limit`` points of fp32's (a gain holds too)."""
    return record.drop_points <= limit + 1e-9


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Int8Cache:
    """Quantized graphs and their records under ``<cache>/onnx/int8`` (module docs)."""

    def __init__(self, folder: Path | None = None) -> None:
        if folder is None:
            from engine.common.settings import cache_dir

            folder = cache_dir() / "onnx" / "int8"
        self.folder = folder
        self.graphs = OnnxCache(folder)  # sha256 sidecars, atomic writes, the most recent kept

    @staticmethod
    def key(fp32_key: str, config_key: str, calibration: str) -> str:
        """A graph's key: its fp32 export's, its QuantConfig's and its calibration batch's."""
        return hashlib.sha256(f"{fp32_key}|{config_key}|{calibration}".encode()).hexdigest()

    def graph_path(self, spec: ModelSpec, key: str) -> Path:
        return self.folder / f"{spec.profile}-{spec.name}-{key[:20]}.onnx"

    def record_path(self, spec: ModelSpec, key: str) -> Path:
        return self.folder / f"{spec.profile}-{spec.name}-{key[:20]}.record.json"

    def read_record(self, path: Path, expect: dict[str, str] | None = None) -> Int8Record | None:
        """The record at ``path`` when it is whole and about what ``expect`` names, else None."""
        from engine.common.files import read_regular

        try:
            record = Int8Record.from_json(read_regular(path, 1 << 16))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            log.warning("int8 record %s ignored: %s", path.name, error_line(e, 120))
            return None
        wrong = [name for name, value in (expect or {}).items() if getattr(record, name) != value]
        if wrong:
            log.warning("int8 record %s ignored: its %s is not this graph's", path.name, wrong[0])
            return None
        return record

    def write_record(self, path: Path, record: Int8Record) -> bool:
        from engine.common.files import atomic_write

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: tmp.write_bytes(record.to_json()), cache=True)
            for old in self.folder.glob("*.record.json"):  # the records of graphs pruned since
                if old != path and not old.with_name(old.name.removesuffix(".record.json") + ".onnx").exists():
                    old.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot write the int8 record %s: %s", path, e)
            return False
        return True
