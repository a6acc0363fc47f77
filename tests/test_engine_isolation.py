"""Convention 1: the engine never imports Qt, pyqtgraph or the gui package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import importlib, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'pyqtgraph', 'gui', 'shiboken6'):
            raise ImportError('blocked: ' + name)

sys.meta_path.insert(0, Block())
import engine
names = [m.name for m in pkgutil.walk_packages(engine.__path__, 'engine.')]
for name in names:
    importlib.import_module(name)
leaked = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'gui')]
assert not leaked, leaked
print(len(names))
"""


def test_every_engine_module_imports_without_qt():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) >= 8  # the walk really found the engine's modules


def gui_engine_imports() -> dict[str, set[str]]:
    """Every engine module each gui file imports, read from its syntax tree (any depth, any form)."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "gui").rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.split(".")[0] == "engine"}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
                names.add(node.module)
                if node.module == "engine":  # from engine import worker
                    names |= {f"engine.{a.name}" for a in node.names}
        found[path.name] = names
    return found


def test_gui_imports_only_the_engine_api():
    imports = gui_engine_imports()
    assert imports, "no gui files found"
    offenders = {name: sorted(m for m in mods if m != "engine.api") for name, mods in imports.items()}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"gui must import engine.api only: {offenders}"
    assert any("engine.api" in mods for mods in imports.values())


def test_the_import_check_would_catch_a_stray_import(tmp_path, monkeypatch):
    """The check above really fails on `from engine.worker import Engine` and `import engine.sources`."""
    import shutil

    fake_root = tmp_path / "root"
    shutil.copytree(ROOT / "gui", fake_root / "gui")
    (fake_root / "gui" / "stray.py").write_text("import engine.sources\nfrom engine import worker\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert gui_engine_imports()["stray.py"] == {"engine.sources", "engine", "engine.worker"}
    import pytest
    with pytest.raises(AssertionError, match="stray.py"):
        test_gui_imports_only_the_engine_api()
