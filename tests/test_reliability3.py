"""Round three of hostile use: outputs that respect links, sources that stop, caches and
checkpoints that cannot hurt."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.files import atomic_write

ROOT = Path(__file__).resolve().parent.parent


# -- 1: outputs written through links and special files ------------------------------------------

def test_atomic_write_keeps_a_symlink_and_writes_its_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write(link, lambda tmp: tmp.write_text("new"))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_atomic_write_through_a_dangling_link_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "made.json")
    atomic_write(link, lambda tmp: tmp.write_text("x"))
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "x"


def test_atomic_write_writes_through_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write(fifo, lambda tmp: tmp.write_bytes(b"through"))
    reader.join(10)
    assert got == [b"through"]
    assert fifo.exists() and not fifo.is_file()


def test_atomic_write_dash_is_standard_output(capfd):
    atomic_write("-", lambda tmp: tmp.write_text('{"a": 1}'))
    assert capfd.readouterr().out == '{"a": 1}'


def test_report_to_dev_stdout_is_printed_and_keeps_the_device(tmp_path):
    link = tmp_path / "out"
    link.symlink_to("/dev/stdout")
    code = ("import sys; sys.path.insert(0, %r); from gui.app import write_json_atomic; "
            "write_json_atomic(%r, {'frames': 3})" % (str(ROOT), str(link)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr
    assert '"frames": 3' in done.stdout
    assert link.is_symlink() and os.readlink(link) == "/dev/stdout"
