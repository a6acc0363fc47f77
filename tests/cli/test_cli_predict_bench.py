from __future__ import annotations

import json
from pathlib import Path

import pytest

from main import main
from tests.media import write_image, write_video

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_predict_json_contract_and_exit_status(tmp_path, capsys):
    good = write_image(tmp_path / "ünï cødé" / "photo 1.png")
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    status = main(["predict", str(good), str(bad), "--top", "3", "--json", "--backend", "auto"])
    answers = json.loads(capsys.readouterr().out)
    assert status == 2
    assert answers[0]["image"] == str(good)
    results = answers[0]["results"]
    assert set(results) == {"lenet5", "alexnet", "vgg16", "enet"}
    for r in results.values():
        assert len(r["top"]) == 3 and set(r["top"][0]) == {"label", "prob"}
        assert r["timed_runs"] == 5 and r["forward_ms"] > 0 and r["preprocess_ms"] >= 0
        assert r["latency_ms"] > 0  # each a median of the five warm runs
        assert r["precision"] in ("fp32", "bf16")  # auto: what it chose for each network
        assert r["backend"] in ("torch", "onnxruntime", "openvino")  # likewise, with its record:
        assert r["runtime"]["chosen"]["backend"] == r["backend"] and r["runtime"]["text"]
    assert answers[1] == {"image": str(bad), "error": "broken.jpg: not an image (unrecognised format)"}


def test_predict_all_good_exits_zero_and_prints_a_table(tmp_path, capsys):
    assert main(["predict", str(write_image(tmp_path / "a.png")), "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "vgg16" in out and "%" in out


def test_predict_bad_weights_argument_is_one_line(capsys):
    assert main(["predict", "x.png", "--weights", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --weights 'nonsense'") and err.count("\n") == 1


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
def test_bench_json_contract(capsys):
    # --runs 7 means seven timed runs (no more for --min-seconds): enough for the contract
    assert main(["bench", "--runs", "7", "--batch", "16", "--json", "--precision", "fp32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "cpu" and report["cpu"]  # the CPU's features: AVX2, VNNI, bf16...
    assert set(report["models"]) == {"lenet5", "alexnet", "vgg16", "enet"}
    for m in report["models"].values():
        assert {"raw_ms_p50", "engine_ms_p50", "ratio", "images_per_s"} <= m.keys()
        assert m["ratio"] == pytest.approx(m["engine_ms_p50"] / m["raw_ms_p50"])
        assert m["images_per_s"] > 0 and m["runs"] == 7 and m["batch"] == 16
        assert m["precision"] == "fp32" and m["precision_note"] == ""
    # the runtimes side by side (torch and ONNX Runtime by default), each against the machine's peak
    assert report["backends"] == ["torch", "onnxruntime"] and report["peak"]["gflops"] > 0
    ort = report["by_backend"]["onnxruntime"]
    assert set(ort) == set(report["models"]) and report["by_backend"]["torch"] == report["models"]
    for m in ort.values():
        assert m["backend"] == "onnxruntime" and m["runs"] == 7
        # the threads ONNX Runtime runs on: all of torch's, or one where that measured faster at load
        assert m["runtime_threads"] in (1, report["threads"])
        assert m["runtime"]["chosen"]["threads"] == m["runtime_threads"]
        assert m["backend_note"] == m["runtime"]["text"]  # the tuner's record, as the window prints it
        assert m["overhead"] == pytest.approx(m["engine_ms_p50"] / m["graph_ms_p50"])
        assert m["gflops"] == pytest.approx(2 * m["macs"] / (m["raw_ms_p50"] / 1000) / 1e9)
        assert 0 < m["peak_fraction"] == pytest.approx(m["gflops"] / report["peaks"][m["precision"]]["gflops"])


@pytest.mark.slow  # the whole engine started on each backend, seconds
def test_bench_pipeline_runs_on_each_backend(tmp_path, capsys):
    video = write_video(tmp_path / "v.avi", frames=5, size=(160, 120))
    assert main(["bench", "--runs", "3", "--batch", "4", "--source", str(video), "--frames", "8", "--json",
                 "--precision", "fp32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] >= 8 and report["pipeline_fps"] > 0
    assert report["rss_end_mb"] > 0 and report["rss_start_mb"] > 0
    assert report["threads_left"] <= 0
    assert set(report["pipelines"]) == {"torch", "onnxruntime"}
    assert report["pipelines"]["onnxruntime"]["frames"] >= 8
    # what ran each network in the pipeline, from the engine's own session (not the command's)
    from engine.runtime.device import engine_threads
    for backend, pipeline in report["pipelines"].items():
        assert pipeline["torch_threads"] == engine_threads()
        assert set(pipeline["networks"]) == {"lenet5", "alexnet", "vgg16", "enet"}
        assert {m["backend"] for m in pipeline["networks"].values()} == {backend}


def test_bench_missing_source_is_one_line(capsys):
    assert main(["bench", "--source", "/no/such/video.mp4", "--runs", "5"]) == 2
    assert "video.mp4: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_loads_a_torchvision_alexnet_checkpoint(tmp_path, capsys):
    """torchvision's own layer names (features.0, classifier.1, ...) load into the renamed AlexNet."""
    import torch
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.alexnet()  # random weights: no download
    checkpoint = tmp_path / "A.pth"
    torch.save(reference.state_dict(), checkpoint)
    image = write_image(tmp_path / "cat.png")
    assert main(["predict", "--profile", "imagenet", "--weights", f"alexnet={checkpoint}", str(image), "--json",
                 "--runs", "1", "--precision", "fp32"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]["results"]["alexnet"]
    assert answer["weights"] == "custom"
    # the same answer as torchvision's module on the same input: the weights really went where they belong
    from engine.data.imageio import read_image
    from engine.models.preprocess import Preprocess
    from engine.models.registry import get_spec
    pre = Preprocess.for_spec(get_spec("alexnet", "imagenet"))
    with torch.inference_mode():
        probs = reference.eval()(pre.tensor(pre.view(read_image(image)))).softmax(1)[0]
    top = probs.topk(5)
    assert [t["prob"] for t in answer["top"]] == pytest.approx(top.values.tolist(), abs=1e-5)


@pytest.mark.parametrize("command", [["predict", "IMG"], ["eval", "--data", "DATA"], ["bench", "--runs", "1"]])
def test_a_checkpoint_of_the_wrong_shape_exits_2_with_one_line(tmp_path, capsys, command):
    import torch

    from engine.models.registry import get_spec

    checkpoint = tmp_path / "enet.pth"
    torch.save(get_spec("enet").build().state_dict(), checkpoint)  # ENet's weights offered to AlexNet
    argv = [str(write_image(tmp_path / "a.png")) if a == "IMG" else str(tmp_path / "none") if a == "DATA" else a
            for a in command]
    assert main([*argv, "--weights", f"alexnet={checkpoint}"]) == 2
    # bench may first warn that the machine is busy (other work sharing it): that line is not the error
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("warning: the machine is busy")]
    assert len(err) == 1 and err[0].startswith("error: enet.pth: not weights for alexnet (cifar10)")


def test_bench_latency_as_a_job_cancels_between_blocks_and_keeps_what_it_measured():
    from engine.jobs import Cancelled, JobState
    from engine.runtime.session import InferenceSession
    from engine.studies.bench import bench_latency

    session = InferenceSession("cifar10", models=["lenet5", "enet"])
    seen = []

    def on_progress(p):
        seen.append((p.done, p.total, p.text, p.unit))
        if p.text == "latency enet":
            job.cancel()

    job = JobState(on_progress=on_progress)
    with pytest.raises(Cancelled):
        bench_latency(session, runs=10, warmup=1, job=job)
    assert seen == [(0, 2, "latency lenet5", "networks"), (1, 2, "latency enet", "networks")]
    assert list(job.partial["latency"]) == ["lenet5"] and job.partial["latency"]["lenet5"]["runs"] == 10
