"""The house rules that an import graph can check: the engine never imports Qt, pyqtgraph or the gui
package; the window imports only ``engine.api``; no module imports itself back through others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

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


@pytest.mark.slow  # seconds long: CI runs it with the slow tests
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
    """The check above really fails on `from engine import cli` and `import engine.live.sources`."""
    import shutil

    fake_root = tmp_path / "root"
    shutil.copytree(ROOT / "gui", fake_root / "gui")
    (fake_root / "gui" / "stray.py").write_text("import engine.live.sources\nfrom engine import cli\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert gui_engine_imports()["stray.py"] == {"engine.live.sources", "engine", "engine.cli"}
    import pytest
    with pytest.raises(AssertionError, match="stray.py"):
        test_gui_imports_only_the_engine_api()


def engine_import_graph(root: Path | None = None) -> dict[str, set[str]]:
    """Module -> the engine modules it imports, at any depth of its syntax tree (a lazy import inside
    a function is still a dependency). ``from engine.pkg import name`` counts ``engine.pkg.name``
    when that is a module, else ``engine.pkg``."""
    import ast

    root = root or ROOT
    modules = {}
    for path in sorted((root / "engine").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module in modules:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
        deps.discard(name)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_engine_has_no_import_cycle():
    graph = engine_import_graph()
    assert len(graph) > 40 and graph["engine.live.worker"], "the walk found the engine's modules"
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_through_a_lazy_import(tmp_path):
    for rel, text in {"engine/__init__.py": "", "engine/a.py": "from engine import b\n",
                      "engine/b.py": "def f():\n    from engine.c import g\n",
                      "engine/c.py": "import engine.a\n", "engine/d.py": "import engine.a\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert import_cycles(engine_import_graph(tmp_path)) == [["engine.a", "engine.b", "engine.c"]]
