from __future__ import annotations

import json

import pytest

from main import main


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_info_json_imagenet_figures(capsys):
    rows = {r["name"]: r for r in run_json(capsys, "info", "--json", "--profile", "imagenet")}
    assert rows["alexnet"]["params"] == 61_100_840
    assert rows["vgg16"]["params"] == 138_357_544
    assert rows["alexnet"]["macs"] == pytest.approx(0.714e9, rel=0.02)
    assert rows["vgg16"]["macs"] == pytest.approx(15.47e9, rel=0.02)
    assert rows["lenet5"]["weights"] is None and rows["enet"]["weights"] is None
    assert rows["vgg16"]["input_size"] == [3, 224, 224]
    # torchvision's published ImageNet-1K figures, known offline, before any download
    assert (rows["alexnet"]["published_top1"], rows["alexnet"]["published_top5"]) == (0.56522, 0.79066)
    assert rows["lenet5"]["published_top1"] is None


def test_info_json_cifar10_has_the_four(capsys):
    rows = {r["name"]: r for r in run_json(capsys, "info", "--json", "--profile", "cifar10")}
    assert {"lenet5", "alexnet", "vgg16", "enet"} <= rows.keys()
    assert 55_000 <= rows["lenet5"]["params"] <= 65_000
    assert 0.33e6 <= rows["enet"]["params"] <= 0.38e6
    assert 14e6 <= rows["vgg16"]["params"] <= 16e6
    for row in rows.values():
        assert {"name", "family", "profile", "params", "macs", "input_size", "weights"} <= row.keys()
        assert row["profile"] == "cifar10" and row["input_size"] == [3, 32, 32]
        assert row["weights"] is None or row["weights"].endswith(".safetensors")


def test_info_table_is_aligned_and_covers_both_profiles(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "profile cifar10" in out and "profile imagenet" in out
    lines = [line for line in out.splitlines() if line.startswith(("model", "vgg16 "))]
    header = lines[0]
    assert header.index("params") > header.index("family")
    assert "138.36M" in out and "15.47G" in out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_a_closed_pipe_is_not_a_traceback():
    """`python main.py info | head -1`: the reader leaves before the table is written; the command
    stops quietly instead of printing a BrokenPipeError traceback."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "main.py", "info", "--profile", "cifar10"], cwd=root,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # long before the command has imported torch and written anything
    err = proc.stderr.read()
    assert proc.wait(timeout=240) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err
