"""The survey's claims on a whole line-up (:mod:`engine.studies.lineup`): every network measured with the
protocol of :func:`engine.studies.analysis.measure_network`, one at a time (built, measured, freed: the
line-up is never held at once), each cached on its own, then judged with bootstrap intervals
(:mod:`engine.studies.verdict_stats`).

The cache holds one file per network, keyed by this machine, the software versions, the device,
precision, threads, batch sizes and runs, and the network itself: a second run reads them all in
seconds, and a network added to a line-up is the only one measured. A network whose timing fails
its own checks (:mod:`engine.studies.busy`) is measured again once after waiting for quiet (not when
quick); if it fails again it is kept out of the cache and the verdicts on time are not given.
"""

from __future__ import annotations

import gc
import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torchvision

from engine.jobs import JobProgress, JobState
from engine.runtime.device import resolve_device
from engine.runtime.precision import check_precision, dtype_of
from engine.studies.analysis import cache_dir
from engine.studies.analysis_results import CACHE_VERSION, BatchPoint, LayerTime, NetworkAnalysis
from engine.studies.busy import Busy, CpuShare, cores, network_problems, wait_for_quiet
from engine.studies.lineup import NOT_IN_TORCHVISION, Published, lineup_cost, lineup_specs, published_of
from engine.studies.measure import analysis_threads, batch_sizes, machine_name, measure_network, trim_heap
from engine.studies.verdict_stats import StatVerdict, judge_lineup

LINEUP_CACHE_VERSION = 1
QUIET_WAIT_S = 30.0  # how long a network whose timing broke waits for quiet before its second try


@dataclass(frozen=True)
class LineupNetwork:
    network: NetworkAnalysis
    group: str  # four (the comparison's), paper, modern
    year: int
    published: Published | None  # torchvision's figures for the trained network
    threads: int
    load: float | None  # this measurement's threads + the cores other programs used meanwhile (CPU)
    problems: tuple[str, ...]  # the checks its timing failed (engine.studies.busy); empty when sound
    seconds: float  # the measuring took
    cached: bool = False


@dataclass(frozen=True)
class LineupAnalysis:
    lineup: str
    device: str
    threads: int
    precision: str
    torch_version: str
    torchvision_version: str
    machine: str
    cores: int
    created: str
    seconds: float
    max_batch: int
    runs: int
    entries: tuple[LineupNetwork, ...]
    verdicts: tuple[StatVerdict, ...]
    not_measured: tuple[str, ...] = NOT_IN_TORCHVISION

    @property
    def networks(self) -> tuple[NetworkAnalysis, ...]:
        return tuple(e.network for e in self.entries)

    @property
    def busy(self) -> Busy | None:
        broken = [e for e in self.entries if e.problems]
        if not broken:
            return None
        loads = [e.load for e in broken if e.load is not None]
        return Busy(tuple(e.network.label for e in broken), max(loads) if loads else None, self.cores)

    @property
    def cached(self) -> bool:
        return all(e.cached for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for e, d in zip(self.entries, out["entries"]):
            d["network"].update(e.network.derived())
        for v, d in zip(self.verdicts, out["verdicts"]):
            d["interval"] = v.interval_text
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LineupAnalysis:
        return _build(cls, {**d, "entries": tuple(entry_from_dict(e) for e in d["entries"]),
                            "verdicts": tuple(_build(StatVerdict, v) for v in d["verdicts"]),
                            "not_measured": tuple(d.get("not_measured", NOT_IN_TORCHVISION))})


def _build(kind, data: dict[str, Any]):
    names = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in data.items() if k in names})


def network_from_dict(n: dict[str, Any]) -> NetworkAnalysis:
    return _build(NetworkAnalysis, {**n, "batches": tuple(_build(BatchPoint, b) for b in n["batches"]),
                                    "layers": tuple(_build(LayerTime, x) for x in n["layers"])})


def entry_from_dict(e: dict[str, Any]) -> LineupNetwork:
    return _build(LineupNetwork, {**e, "network": network_from_dict(e["network"]),
                                  "published": _build(Published, e["published"]) if e.get("published") else None,
                                  "problems": tuple(e.get("problems", ()))})


def default_max_batch(device: torch.device, quick: bool) -> int:
    """The largest batch when none is asked: a line-up of 224x224 networks fits 10 minutes on a
    small CPU up to batch 4 (quick: batch 1 only); a GPU takes batch 64 in its stride."""
    if device.type == "cuda":
        return 8 if quick else 64
    return 1 if quick else 4


def default_threads(device: torch.device) -> int:
    """One thread on the CPU: a line-up takes minutes, and on a machine with other work one thread
    keeps a core to itself, where torch's threads, which wait for each other at every layer, stall
    whenever one of them loses its core."""
    return 1 if device.type == "cpu" else analysis_threads()


# -- the cache -------------------------------------------------------------------------------------


def network_key(spec, device: torch.device, precision: str, max_batch: int, runs: int, threads: int) -> str:
    from engine.models.weights import resolve

    info = resolve(spec)
    text = "|".join(map(str, [CACHE_VERSION, LINEUP_CACHE_VERSION, platform.node(), machine_name(), device, precision,
                              max_batch, runs, threads, torch.__version__, torchvision.__version__, spec.name,
                              spec.input_size, spec.weights, info.status]))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cache_path(key: str):
    return cache_dir() / "lineup" / f"{key}.json"


def load_network(key: str, name: str) -> LineupNetwork | None:
    """A cached network, or None: missing, unreadable, another network's, or a timing that fails
    its checks (never served, whatever wrote it)."""
    try:
        entry = entry_from_dict(json.loads(_cache_path(key).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if entry.network.name != name or entry.problems or network_problems(entry.network, entry.load):
        return None
    return replace(entry, cached=True)


def save_network(key: str, entry: LineupNetwork) -> None:
    from engine.common.files import atomic_write

    if entry.problems:  # a broken timing is measured again next time, never served
        return
    path = _cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(entry), allow_nan=True)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError:
        pass  # a cache that cannot be written only costs a measurement next time


# -- measuring ------------------------------------------------------------------------------------


def _accuracy(spec, loaded, group: str) -> tuple[float | None, str, Published | None]:
    from engine.models.weights import UNTRAINED

    pub = published_of(spec)
    if group == "four" and loaded is not None and loaded.status != UNTRAINED:
        top1 = (loaded.metrics or {}).get("test_top1")
        if top1 is not None:
            return top1, "test", pub
    return (pub.top1, "published", pub) if pub is not None and pub.top1 is not None else (None, "none", pub)


def cost_of(spec, group: str):
    from engine.models.complexity import complexity

    return complexity(spec.name, spec.profile) if group == "four" else lineup_cost(spec.name, group)


def _measure_one(spec, group: str, dev: torch.device, max_batch: int, dtype, runs: int, threads: int,
                 job: JobState | None, say: Callable[[str], None], tries: int = 2) -> LineupNetwork:
    from engine.models.weights import load_model

    loaded = load_model(spec) if group == "four" else None
    model = loaded.model if loaded is not None else spec.build()
    top1, kind, pub = _accuracy(spec, loaded, group)
    cost = cost_of(spec, group)
    weights = str(loaded.status) if loaded is not None else "untrained"
    started = time.perf_counter()
    try:
        for attempt in range(1, tries + 1):
            with CpuShare() as share:
                net = measure_network(spec, model, dev, max_batch, dtype=dtype, top1=top1, top1_kind=kind,
                                      weights=weights, job=job, cost=cost, runs=runs)
            load = share.load(threads) if dev.type == "cpu" else None
            problems = network_problems(net, load)
            if not problems or attempt == tries:
                break
            say(f"  {spec.display}: {'; '.join(problems)}: waiting up to {QUIET_WAIT_S:.0f} s for quiet, "
                "then measuring it again")
            wait_for_quiet(threads, QUIET_WAIT_S, check=job.check if job is not None else None)
    finally:
        del model, loaded
        gc.collect()
        trim_heap()  # the next network starts from the memory this one gave back
    return LineupNetwork(net, group, spec.year, pub, threads, load, problems, time.perf_counter() - started)


def run_lineup(lineup: str = "paper", device: str = "cpu", *, max_batch: int | None = None, quick: bool = False,
               precision: str = "fp32", threads: int | None = None, fresh: bool = False,
               job: JobState | None = None, on_line: Callable[[str], None] | None = None,
               cached_only: bool = False) -> LineupAnalysis | None:
    """Measure (or read from the cache) every network of ``lineup`` and judge the claims. One line
    per network goes to ``on_line`` with the time so far and an estimate of the time left; the
    job reports networks done of the total and stops at a cancel (:class:`~engine.jobs.Cancelled`).
    ``cached_only``: measure nothing; None unless every network is cached."""
    dev = resolve_device(device)
    check_precision(precision, dev)
    dtype = dtype_of(precision)
    max_batch = max_batch or default_max_batch(dev, quick)
    batch_sizes(max_batch)  # a bad largest batch is refused before anything is measured
    runs = 3 if quick else 5
    threads = threads or default_threads(dev)
    say = on_line or (lambda _text: None)
    specs = lineup_specs(lineup)
    started = time.perf_counter()
    keys = [network_key(spec, dev, precision, max_batch, runs, threads) for spec, _ in specs]
    cached = {spec.name: None if fresh else load_network(key, spec.name) for (spec, _), key in zip(specs, keys)}
    if any(entry is None for entry in cached.values()):
        if cached_only:
            return None
        torch.set_num_threads(threads)  # this thread's team (OpenMP keeps one per thread)
    # the time left, from the measured networks' seconds per operation (plus a fixed cost each)
    weight = {spec.name: cost_of(spec, group).macs + 2e9 for spec, group in specs if cached[spec.name] is None}
    todo = sum(weight[s.name] for s, _ in specs if cached[s.name] is None)
    spent, measured_weight = 0.0, 0.0
    entries = []
    for i, ((spec, group), key) in enumerate(zip(specs, keys), 1):
        if job is not None:
            job.check()
            job.report(JobProgress("analyze", i - 1, len(specs), f"{spec.display}", "networks"))
        entry = cached[spec.name]
        if entry is None:
            entry = _measure_one(spec, group, dev, max_batch, dtype, runs, threads, job, say, 1 if quick else 2)
            save_network(key, entry)
            spent += entry.seconds
            measured_weight += weight[spec.name]
        entry = replace(entry, group=group)  # a network of the four in one line-up is of the four in all
        entries.append(entry)
        left = (todo - measured_weight) * spent / measured_weight if measured_weight else 0.0
        how = "cached" if entry.cached else f"{entry.seconds:.0f} s"
        check = f"; NOT SOUND: {'; '.join(entry.problems)}" if entry.problems else ""
        say(f"[{i}/{len(specs)}] {spec.display}: {entry.network.latency_ms:.1f} ms at batch 1 ({how}{check}); "
            f"{time.perf_counter() - started:.0f} s so far, about {left:.0f} s left")
    if job is not None:
        job.report(JobProgress("analyze", len(specs), len(specs), "done", "networks"))
    busy_entries = [e for e in entries if e.problems]
    loads = [e.load for e in busy_entries if e.load is not None]
    busy = Busy(tuple(e.network.label for e in busy_entries), max(loads) if loads else None, cores()) \
        if busy_entries else None
    networks = tuple(e.network for e in entries)
    return LineupAnalysis(lineup, str(dev), threads, precision, torch.__version__, torchvision.__version__,
                          machine_name(), cores(), time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          time.perf_counter() - started, max_batch, runs, tuple(entries),
                          judge_lineup(networks, busy))
