"""What the Analysis measured and concluded, as immutable values: per network its batches, layers
and memory; the fits and verdicts; the whole Analysis, with its JSON form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_MAX_BATCH = 64
PREDICTS_R2 = 0.8  # R² from which "operations predict time" is said to hold
CACHE_VERSION = 1


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPoint:
    batch: int
    ms_per_image_p50: float  # the batch's p50 time / batch
    ms_per_image_p95: float
    runs: int
    activation_mb: float  # the engine's count of one image's layer outputs (fp32), times the batch
    peak_mb: float | None  # the process's memory growth while the batch ran; None where not measured

    @property
    def images_per_s(self) -> float:
        return 1000.0 / self.ms_per_image_p50 if self.ms_per_image_p50 > 0 else 0.0


@dataclass(frozen=True)
class LayerTime:
    name: str
    kind: str  # the module's class name
    ms: float  # alone on its recorded batch-1 input, p50
    macs: int
    params: int


@dataclass(frozen=True)
class NetworkAnalysis:
    name: str
    label: str  # "VGG-16-BN"
    macs: int
    params: int
    top1: float | None  # 0..1
    top1_kind: str  # "test" (this project's CIFAR-10 test set), "published" (torchvision's ImageNet), "none"
    weights: str  # trained, bundled, downloaded, untrained, ...
    forward_ms: float  # the whole batch-1 forward pass, p50 (measured around the layer timings)
    batches: tuple[BatchPoint, ...]
    layers: tuple[LayerTime, ...]

    @property
    def latency_ms(self) -> float:
        """Batch-1 latency p50: the figure the claims are judged on."""
        return self.batches[0].ms_per_image_p50 if self.batches else self.forward_ms

    @property
    def layers_ms(self) -> float:
        return sum(layer.ms for layer in self.layers)

    @property
    def layers_ratio(self) -> float:
        """Sum of the layers' times / the whole pass's."""
        return self.layers_ms / self.forward_ms if self.forward_ms > 0 else float("nan")

    @property
    def density(self) -> float | None:
        """Top-1 (percent) per million parameters."""
        return 100 * self.top1 / (self.params / 1e6) if self.top1 is not None and self.params else None

    def derived(self) -> dict[str, float | None]:
        """The figures worked out from the measurements, for the JSON beside them."""
        return {"latency_ms": self.latency_ms, "layers_ms": self.layers_ms, "layers_ratio": self.layers_ratio,
                "density": self.density}


@dataclass(frozen=True)
class Fit:
    """``ms = slope * MACs + intercept``, least squares, over ``n`` points."""

    slope: float  # ms per MAC
    intercept: float  # ms
    r2: float
    n: int

    def predict(self, macs: float) -> float:
        return self.slope * macs + self.intercept


@dataclass(frozen=True)
class Verdict:
    claim: str  # "operations", "tradeoff", "density"
    holds: bool | None  # None: cannot be judged here (the sentence says why)
    text: str


@dataclass(frozen=True)
class BackendView:
    """The same networks on another backend (engine.runtime.backends): batch latencies and memory
    (no per-layer times: the runtime has no hooks), and the verdicts judged on them."""

    backend: str  # onnxruntime, compile
    networks: tuple[NetworkAnalysis, ...]
    network_fit: Fit | None
    verdicts: tuple[Verdict, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    profile: str
    device: str
    threads: int
    precision: str
    torch_version: str
    machine: str
    created: str  # ISO time
    seconds: float  # the measuring took
    max_batch: int
    networks: tuple[NetworkAnalysis, ...]
    network_fit: Fit | None
    layer_fit: Fit | None
    verdicts: tuple[Verdict, ...]
    cached: bool = False  # read back from the cache, not measured just now
    notes: tuple[str, ...] = field(default=())
    backends: tuple[BackendView, ...] = ()  # the other backends measured besides torch eager (above)
    load: float | None = None  # threads + the cores other programs used while measuring (engine.studies.busy)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for nets, dicts in [(self.networks, out["networks"])] + [
                (view.networks, d["networks"]) for view, d in zip(self.backends, out["backends"])]:
            for net, d in zip(nets, dicts):
                d.update(net.derived())
                for point, pd in zip(net.batches, d["batches"]):
                    pd["images_per_s"] = point.images_per_s
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Analysis:
        def build(kind, data):
            names = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in data.items() if k in names})

        def nets(items):
            return tuple(
                build(NetworkAnalysis, {**n, "batches": tuple(build(BatchPoint, b) for b in n["batches"]),
                                        "layers": tuple(build(LayerTime, x) for x in n["layers"])})
                for n in items)

        networks = nets(d["networks"])
        backends = tuple(build(BackendView, {**v, "networks": nets(v["networks"]),
                                             "network_fit": build(Fit, v["network_fit"]) if v.get("network_fit")
                                             else None, "verdicts": tuple(build(Verdict, x) for x in v["verdicts"]),
                                             "notes": tuple(v.get("notes", ()))})
                         for v in d.get("backends", ()))
        return build(cls, {**d, "networks": networks, "backends": backends,
                           "network_fit": build(Fit, d["network_fit"]) if d.get("network_fit") else None,
                           "layer_fit": build(Fit, d["layer_fit"]) if d.get("layer_fit") else None,
                           "verdicts": tuple(build(Verdict, v) for v in d["verdicts"]),
                           "notes": tuple(d.get("notes", ()))})


# -- the verdicts (pure) ---------------------------------------------------------------------------
