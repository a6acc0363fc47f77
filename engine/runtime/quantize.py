"""int8 graphs for ONNX Runtime: post-training static quantization of the engine's own fp32 export,
calibrated on training images (never the test set), and the record of what it costs in top-1.

The quantization is ONNX Runtime's (``onnxruntime.quantization.quantize_static``, QDQ format: int8
weights, uint8 activations); this module chooses what it is given. :class:`QuantConfig` names the
choices: the calibration method (min-max, a percentile of the histogram, or entropy), per-channel
weights, and whether the first convolution and the layer that produces the logits stay float. The
answer head after the logits (softmax, the ranking, ENet's class map and confidence) always stays
float: quantized, the probabilities would be rounded to 1/255 and their ranking lose its ties.

Weights are int8 in 8 or 7 bits (``reduce_range``), or uint8. On an x86 CPU without VNNI (AVX2
only), ONNX Runtime multiplies uint8 activations by int8 weights with an instruction that adds each
pair of products in 16 bits and saturates (2 x 255 x 127 does not fit): the full 8-bit range costs
LeNet-5 12 points of top-1 and VGG-16 2 (docs/benchmarks.md). 7-bit weights cannot saturate and
run as fast; uint8 weights cannot either, but take slower kernels here.

Cache (``<cache>/onnx/int8``, beside the fp32 exports): each quantized graph is keyed by the fp32
export's key (network, weights digest, versions), the config's key and the calibration batch's
fingerprint, stored with its sha256 beside it as :class:`~engine.runtime.onnx_cache.OnnxCache`
stores exports. Beside it, an :class:`Int8Record`: the fp32 and int8 top-1 measured on a test set.
Neither is trusted unread: a graph whose digest does not match is quantized again, a record with a
missing, extra or ill-typed field, or one about another graph, is ignored with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.common.errors import error_line
from engine.models.adapter import ModelAdapter
from engine.models.preprocess import normalise, normaliser
from engine.models.spec import ModelSpec
from engine.runtime.graph import BackendError, output_names, private_copy
from engine.runtime.int8_record import HOLD_POINTS, Int8Cache, Int8Record, holds, now_utc  # noqa: F401
from engine.runtime.onnx_cache import OnnxCache, weights_digest
from engine.runtime.onnx_export import cut_outputs, export_onnx, for_export
from engine.runtime.onnx_graphs import BIG_GRAPH

METHODS = ("minmax", "percentile", "entropy")
CALIBRATION_BATCH = 64
# Entropy's histogram: ONNX Runtime's default, 128 bins for 128 quantized bins, leaves one candidate
# threshold (the min-max range) when the batches are collected in one go, as quantize_static does.
# Each of the (bins - 128) / 2 candidates costs a KL divergence per tensor, in Python.
ENTROPY_BINS = {"num_bins": 512, "num_quantized_bins": 128}
# The operators quantized: those with int8 kernels on ONNX Runtime's CPU provider, and the layout
# operators between them. Softmax, TopK and the class-map head are not among them (module docs).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "AveragePool", "Add",
                 "Concat", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Pad", "Resize",
                 "GlobalAveragePool")
_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantConfig:
    """One way of quantizing a network (module docs). ``percentile`` applies to that method only."""

    method: str = "minmax"
    per_channel: bool = True
    ends_float: bool = True  # the first convolution and the layer producing the logits stay float
    percentile: float = 99.999
    weights: str = "s8"  # s8 (int8) or u8 (uint8) weights (module docs: saturation)
    reduce_range: bool = False  # weights in 7 bits
    images: int = 1000  # training images calibrated on
    seed: int = 0  # which ones (sample_indices)
    format: str = "qdq"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.format != "qdq":
            raise ValueError(f"quantization format {self.format!r}; only qdq is supported")
        if self.weights not in ("s8", "u8"):
            raise ValueError(f"weight type {self.weights!r}; expected s8 or u8")
        if not 50.0 < self.percentile < 100.0:
            raise ValueError(f"percentile {self.percentile} is not between 50 and 100")
        if self.images <= 0:
            raise ValueError(f"calibration images must be positive, got {self.images}")

    def key(self) -> str:
        """A short, stable text naming every choice: ``percentile99.999-pc-ends-s8r-n1000-s0-qdq``."""
        method = f"percentile{self.percentile:g}" if self.method == "percentile" else self.method
        return "-".join([method, "pc" if self.per_channel else "pt", "ends" if self.ends_float else "all",
                         self.weights + ("r" if self.reduce_range else ""), f"n{self.images}", f"s{self.seed}",
                         self.format])


# The cheapest config that held within HOLD_POINTS on all four CIFAR-10 networks (docs/benchmarks.md,
# 2026-12-07): every layer int8, weights per channel in 7 bits. With 8-bit weights, AVX2's u8 x s8
# multiply (no VNNI) saturates its 16-bit pair sums and costs up to 12 points; 7 bits cannot saturate.
DEFAULT_CONFIG = QuantConfig(method="minmax", per_channel=True, ends_float=False, reduce_range=True)


def calibration_inputs(spec: ModelSpec, train_images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` training images (uint8 NHWC), spread over the set by ``seed``, as the engine feeds them:
    normalised float32 NCHW, contiguous (evaluation's :func:`~engine.models.preprocess.normalise`)."""
    if train_images.ndim != 4 or train_images.shape[-1] != 3 or train_images.dtype != np.uint8:
        raise ValueError(f"calibration images must be uint8 (N, H, W, 3), got {train_images.dtype} "
                         f"{tuple(train_images.shape)}")
    count = len(train_images)  # the spread of evaluation's sample_indices: a seeded shuffle's first n
    idx = np.arange(count) if n >= count else np.sort(np.random.Generator(np.random.PCG64(seed)).permutation(count)[:n])
    batch = torch.from_numpy(np.ascontiguousarray(train_images[idx]))
    x = normalise(batch, normaliser(tuple(spec.mean), tuple(spec.std), "cpu"), channels_last=False)
    return x.numpy()


def fingerprint(array: np.ndarray) -> str:
    """sha256 over an array's dtype, shape and bytes: which calibration batch (or test set) was used."""
    h = hashlib.sha256(f"{array.dtype}|{tuple(array.shape)}|".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def float_ends(model) -> tuple[list[str], list[str]]:
    """(the first convolution and the compute node producing the logits, the head after it) of an
    ONNX model: node names. The head is every node fed, directly or not, by that compute node."""
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    last, stack, seen = None, ["logits"], set()
    while stack and last is None:  # breadth-first back from the logits to the nearest compute node
        tensor = stack.pop(0)
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in _COMPUTE:
            last = node
        else:
            stack.extend(node.input)
    if last is None:
        raise BackendError("no convolution or matrix product produces the logits")
    first = next(node for node in nodes if node.op_type in _COMPUTE)
    head, frontier = set(), set(last.output)
    for node in nodes:  # ONNX nodes are in topological order
        if frontier.intersection(node.input):
            head.add(node.name)
            frontier.update(node.output)
    return sorted({first.name, last.name}), sorted(head)


class _Batches:
    """The calibration batch in slices, as ``quantize_static`` reads it."""

    def __init__(self, calibration: np.ndarray) -> None:
        # slices of one size: the histogram methods stack them (the largest divisor up to the batch)
        size = max(d for d in range(1, min(CALIBRATION_BATCH, len(calibration)) + 1) if len(calibration) % d == 0)
        self._slices = iter([calibration[i:i + size] for i in range(0, len(calibration), size)])

    def get_next(self) -> dict | None:
        part = next(self._slices, None)
        return None if part is None else {"x": part}


def quantize_graph(fp32_onnx: bytes, calibration: np.ndarray, config: QuantConfig) -> bytes:
    """The int8 ONNX model of ``fp32_onnx`` calibrated on ``calibration`` (float32 NCHW, the input
    ``x`` as the engine feeds it): the same input and outputs, batch still dynamic. Raises
    :class:`BackendError` (one line) when ONNX Runtime cannot quantize it."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration.ndim != 4 or calibration.dtype != np.float32 or not len(calibration):
        raise ValueError(f"calibration must be float32 (N, C, H, W), got {calibration.dtype} {calibration.shape}")
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[config.method]
    extra = {"CalibPercentile": config.percentile} if config.method == "percentile" else {}
    # quant_pre_process and quantize_static work on files; their progress is printed on stdout (which
    # a command's --json owns) and logged on the root logger
    root, level = logging.getLogger(), logging.getLogger().level
    try:
        with tempfile.TemporaryDirectory(prefix="cnn-arena-int8-") as folder, \
                contextlib.redirect_stdout(io.StringIO()):
            src, prepared, out = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
            src.write_bytes(fp32_onnx)
            root.setLevel(logging.ERROR)
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            model = onnx.load(str(prepared))
            if any(not node.name for node in model.graph.node):  # exclusion is by node name
                for i, node in enumerate(model.graph.node):
                    node.name = node.name or f"node{i}"
                onnx.save(model, str(prepared))
            ends, head = float_ends(model)
            exclude = head + (ends if config.ends_float else [])
            reader, ranges = _Batches(calibration), None
            if config.method == "entropy":  # calibrated here: quantize_static cannot set the histogram's bins
                ranges = Path(folder) / "ranges.json"
                calibrator = create_calibrator(prepared, list(QUANTIZED_OPS), str(Path(folder) / "augmented.onnx"),
                                               CalibrationMethod.Entropy, extra_options=ENTROPY_BINS)
                calibrator.collect_data(reader)
                save_tensors_data(calibrator.compute_data(), ranges)
                reader = None
            quantize_static(str(prepared), str(out), reader, calibration_cache_path=ranges,
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                            per_channel=config.per_channel, reduce_range=config.reduce_range,
                            activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8 if config.weights == "s8" else QuantType.QUInt8,
                            nodes_to_exclude=exclude, calibrate_method=method, extra_options=extra)
            data = out.read_bytes()
    except BackendError:
        raise
    except Exception as e:  # noqa: BLE001 - the quantizer raises many kinds
        raise BackendError(f"the int8 quantization failed: {error_line(e, 200)}") from None
    finally:
        root.setLevel(level)
    names = [o.name for o in onnx.load_from_string(data).graph.output]
    if names != [o.name for o in onnx.load_from_string(fp32_onnx).graph.output]:
        raise BackendError("the int8 graph lost outputs of the fp32 graph")
    return data


@dataclass(frozen=True)
class Int8Graph:
    """A quantized graph and what identifies it (the record's fields other than the measurement)."""

    data: bytes
    key: str
    weights_digest: str
    config_key: str
    calibration: str
    seconds: float  # spent quantizing (0 when read from the cache)


def int8_graph(adapter: ModelAdapter, calibration: np.ndarray, config: QuantConfig, *,
               with_map: bool | None = None, cache: Int8Cache | None = None,
               layers: Sequence[str] = ()) -> Int8Graph:
    """The int8 graph of ``adapter`` (export form, outputs as OrtRunner's with ``layers`` tapped):
    from ``cache`` when intact, else exported, quantized and cached."""
    import time

    with_map = adapter.spec.has_class_map if with_map is None else with_map
    copy = private_copy(adapter)
    for_export(copy.model)
    digest = weights_digest(copy.model)
    calib = fingerprint(calibration)
    fp32_key = OnnxCache.key(None, copy, digest, tuple(layers), with_map)  # the key reads nothing of a cache
    key = Int8Cache.key(fp32_key, config.key(), calib)
    path = cache.graph_path(adapter.spec, key) if cache is not None else None
    data = cache.graphs.read(path) if cache is not None else None
    seconds = 0.0
    if data is None:
        t0 = time.perf_counter()
        data = quantize_graph(export_onnx(copy, tuple(layers), with_map), calibration, config)
        seconds = time.perf_counter() - t0
        if cache is not None:
            cache.graphs.write(path, data)
    return Int8Graph(data, key, digest, config.key(), calib, seconds)


class Int8Graphs:
    """An int8 graph as :class:`~engine.runtime.backends.ort.OrtRunner` reads its graphs: each tap set
    cut from the graph quantized with ``layers`` (every layer the window shows) as outputs."""

    exported = 0  # nothing is exported: the graph was quantized before

    def __init__(self, graph: Int8Graph, layers: Sequence[str], with_map: bool) -> None:
        self.graph, self.full_layers, self.with_map = graph, tuple(layers), with_map
        self.big = len(graph.data) > BIG_GRAPH

    def full(self) -> bytes:
        return self.graph.data

    def for_taps(self, layers: tuple[str, ...]) -> bytes:
        missing = [layer for layer in layers if layer not in self.full_layers]
        if missing:
            raise BackendError(f"the int8 graph has no tap at {missing[0]}")
        return self.graph.data if layers == self.full_layers else \
            cut_outputs(self.graph.data, output_names(layers, self.with_map))


def find_int8(adapter: ModelAdapter, layers: Sequence[str], *, config: QuantConfig | None = None,
              cache: Int8Cache | None = None) -> tuple[Int8Graph, Int8Record] | None:
    """The int8 graph of ``adapter``'s weights quantized with ``config`` and ``layers`` tapped, whose
    record says it holds (within HOLD_POINTS of fp32's top-1), from the cache; None where there is
    none (``eval --precision int8`` makes and measures it). The graph's sha256 is checked."""
    config, cache = config or DEFAULT_CONFIG, cache or Int8Cache()
    spec = adapter.spec
    records = sorted(cache.folder.glob(f"{spec.profile}-{spec.name}-*.record.json"))
    if not records:
        return None
    copy = private_copy(adapter)
    for_export(copy.model)
    digest = weights_digest(copy.model)
    fp32_key = OnnxCache.key(None, copy, digest, tuple(layers), spec.has_class_map)
    for path in records:
        record = cache.read_record(path, {"weights_digest": digest, "config_key": config.key()})
        if record is None or not holds(record):
            continue
        key = Int8Cache.key(fp32_key, record.config_key, record.calibration)
        if path != cache.record_path(spec, key):  # quantized with other taps
            continue
        data = cache.graphs.read(cache.graph_path(spec, key))
        if data is not None:
            return Int8Graph(data, key, digest, record.config_key, record.calibration, 0.0), record
    return None
