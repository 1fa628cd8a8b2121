"""The package's layering: handlers stay free of torch, modules stay small, and no module imports in a cycle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

PACKAGE = ROOT / "shared" / "mycelium"
#: Lower layers never import higher ones. viz renders records and reads the store, but runs no stage.
LAYERS = ["core", "mathlang", "records", "analysis", "teacher", "templates", "programs", "students", "solver", "viz", "evaluation", "stages", "cloud", "cli"]


@pytest.mark.parametrize("stage", sorted(p.parent.name for p in (ROOT / "lambdas").glob("*/handler.py")))
def test_importing_a_handler_imports_no_torch(stage, tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import lambdas.{stage}.handler; "
            "bad = sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules); "
            "assert not bad, bad")
    env = {"MYCELIUM_STORE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _imports(path: Path) -> set[str]:
    """The mycelium modules a module imports (relative imports resolved), at any depth of the file."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ((node.module,) if node.module else ()))
            else:
                name = node.module or ""
            if name.startswith("mycelium"):
                out.add(name)
                out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("mycelium"))
    return out


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_higher_layer():
    wrong = []
    for name, path in _modules().items():
        parts = name.split(".")
        if len(parts) < 2:  # the package root, which imports nothing of its own
            continue
        mine = LAYERS.index(parts[1])
        for imported in _imports(path):
            ip = imported.split(".")
            if len(ip) > 1 and ip[1] in LAYERS and LAYERS.index(ip[1]) > mine:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_module_imports_have_no_cycle():
    modules = _modules()
    # a module importing its own package (``from . import commands``) is not a cycle
    graph = {m: {i for i in _imports(p) if i in modules and i != m and not m.startswith(i + ".")}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(n):] + [n])}")
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_no_module_is_over_400_lines():
    long = {name: n for name, p in _modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
