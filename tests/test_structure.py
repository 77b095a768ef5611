"""Imports go one way: read from the source (lazy imports inside functions included), not from what happens to be
loaded. The leaf modules import nothing from muonlab, nothing below the command line imports it, and no two modules
import each other, directly or around a loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The muonlab modules ``path`` imports anywhere in its body (``from pkg import module`` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "muonlab":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "muonlab")
    return found


MODULES = _modules()
GRAPH = {name: _imports(path, MODULES) for name, path in MODULES.items()}


@pytest.mark.parametrize("leaf", ["muonlab.errors", "muonlab.jsonio", "muonlab.experiments.claims"])
def test_leaf_modules_import_nothing_from_muonlab(leaf):
    assert GRAPH[leaf] == set()


def test_only_the_entry_point_imports_the_command_line():
    importers = sorted(name for name, deps in GRAPH.items() if "muonlab.cli" in deps)
    assert importers == ["muonlab.__main__"], importers


def test_no_import_circle_between_modules():
    """Depth-first search for a cycle. An edge into a package's ``__init__`` is left out: ``from muonlab.optim import
    pipeline`` inside ``muonlab.optim`` is how a package's modules reach each other, not a circle between layers."""
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    edges = {name: sorted(d for d in deps if d in MODULES and d not in packages) for name, deps in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in edges[node]:
            assert state.get(dep) != 1, "import circle: " + " → ".join(path[path.index(dep):] + [node, dep]
                                                                        if dep in path else [node, dep])
            if dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [])


def test_the_report_runs_experiments_without_the_command_line():
    # the circle this guards against: report.py ran experiments through the CLI module, which imports the report
    assert "muonlab.experiments.cli" not in GRAPH["muonlab.experiments.report"]
    assert "muonlab.experiments.registry" in GRAPH["muonlab.experiments.report"]
    assert "muonlab.experiments.report" in GRAPH["muonlab.experiments.cli"]
