"""Each network owns its runtime: a change to one network's weights, backend or precision rebuilds
that network alone; the others keep their runtime, their choice and its evidence as they were."""

from __future__ import annotations

from pathlib import Path

from engine.live.events import Error, SessionReady
from engine.live.worker import Engine
from tests.engine.test_worker import Recorder
from tests.waiting import wait_until

WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "weights"


def _ready(rec: Recorder, after: int) -> SessionReady | None:
    found = [e for e in rec.events[after:] if isinstance(e, SessionReady)]
    return found[-1] if found else None


def test_one_networks_change_rebuilds_that_network_alone():
    rec = Recorder()
    engine = Engine(models=["lenet5", "alexnet"], precision="fp32", backend="torch", on_result=rec.on_result,
                    on_event=rec.on_event).start()
    try:
        assert wait_until(lambda: engine.session is not None, 120)
        first = engine.session
        lenet, alexnet = first.network("lenet5"), first.network("alexnet")
        seen = len(rec.events)
        engine.load_weights("lenet5", WEIGHTS / "lenet5_cifar10.safetensors")  # a user's file: lenet5 again
        assert wait_until(lambda: _ready(rec, seen) is not None, 120)
        second = engine.session
        assert second is not first and second.network("alexnet") is alexnet  # kept as it ran
        assert second.network("lenet5") is not lenet and second.loaded("lenet5").source.endswith(
            "lenet5_cifar10.safetensors")
        seen = len(rec.events)
        engine.set_runtime("alexnet", "onnxruntime")
        assert wait_until(lambda: _ready(rec, seen) is not None, 120)
        third = engine.session
        assert third.network("lenet5") is second.network("lenet5")
        assert third.backend_of("alexnet")[0] == "onnxruntime" and third.backend_of("lenet5")[0] == "torch"
        assert _ready(rec, seen).card("alexnet").backend == "onnxruntime"
        seen = len(rec.events)
        engine.set_runtime("alexnet", "tensorrt")  # no such backend: one line, and everything runs on
        assert wait_until(lambda: any(isinstance(e, Error) for e in rec.events[seen:]), 60)
        error = next(e for e in rec.events[seen:] if isinstance(e, Error))
        assert "unknown backend 'tensorrt'" in error.text and "\n" not in error.text
        assert engine.session is third and third.backend_of("alexnet")[0] == "onnxruntime"
        seen = len(rec.events)
        engine.configure(backend="torch")  # a session-wide choice ends every network's own
        assert wait_until(lambda: _ready(rec, seen) is not None, 120)
        assert engine.session.backend_of("alexnet")[0] == "torch"
        assert engine.session.network("lenet5") is third.network("lenet5")
    finally:
        assert engine.stop(2.0)
