"""Imports go one way: read from the source (lazy imports inside functions included), not from what happens to be
loaded. Every module sits in a layer of :data:`LAYERS` and imports only its own layer and those below; the leaf
modules import nothing from muonlab, nothing below the command line imports it, and no two modules import each other,
directly or around a loop."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The layers, lowest first (the package docstring, src/muonlab/__init__.py, lists the same names in the same order).
# A module belongs to the layer of the most specific pattern it matches. ``muonlab`` itself re-exports the public API
# (matrix functions, optimizers, and the integrations' entry points), so it sits with the integrations: above every
# layer it re-exports, below the lab that uses it. ``integrations`` is matched whether or not it exists yet.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("leaves", ("muonlab.errors", "muonlab.files", "muonlab.jsonio", "muonlab.devices", "muonlab.experiments.claims")),
    ("linalg", ("muonlab.linalg", "muonlab.linalg.*")),
    ("distributed", ("muonlab.distributed", "muonlab.distributed.*")),
    ("optim", ("muonlab.optim", "muonlab.optim.*")),
    ("integrations", ("muonlab", "muonlab.integrations", "muonlab.integrations.*")),
    ("tasks", ("muonlab.tasks", "muonlab.tasks.*")),
    ("experiments", ("muonlab.experiments", "muonlab.experiments.*")),
    ("bench, reports, cli", ("muonlab.bench", "muonlab.bench.*", "muonlab.experiments.report",
                             "muonlab.experiments.*_report", "muonlab.cli", "muonlab.*.cli", "muonlab.__main__")),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The muonlab modules ``path`` imports anywhere in its body (``from pkg import module`` counts as the module)."""
    return _imports_in(path.read_text(), known)


def _imports_in(source: str, known: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "muonlab":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "muonlab")
    return found


def _named_modules(path: Path, known: dict[str, Path]) -> set[str]:
    """The muonlab modules ``path`` names in a string it imports by (``importlib.import_module(NAME)``, a
    "module:attribute" entry of a registry): a dependency the import statements do not show."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":")[0]
            if name in known and name.startswith("muonlab."):
                found.add(name)
    return found


MODULES = _modules()
GRAPH = {name: _imports(path, MODULES) for name, path in MODULES.items()}


def _specificity(pattern: str) -> tuple[int, int]:
    return (pattern.count("."), -pattern.count("*"))


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the most specific pattern ``module`` matches; -1 when none does."""
    matches = [(_specificity(pattern), index) for index, (_, patterns) in enumerate(LAYERS) for pattern in patterns
               if fnmatch.fnmatchcase(module, pattern)]
    return max(matches)[1] if matches else -1


def _graph_text(edges: dict[str, set[str]]) -> str:
    """The import graph, one module a line with its layer, for a failure message."""
    lines = []
    for name in sorted(edges, key=lambda n: (layer_of(n), n)):
        label = LAYERS[layer_of(name)][0] if layer_of(name) >= 0 else "?"
        lines.append(f"  [{label}] {name} -> {', '.join(sorted(edges[name])) or '-'}")
    return "\n".join(lines)


def test_every_module_belongs_to_a_layer():
    assert [name for name in MODULES if layer_of(name) < 0] == []


def upward_edges(edges: dict[str, set[str]]) -> list[str]:
    """"importer (layer) -> imported (layer)" for every import that goes to a higher layer."""
    return sorted(f"{name} ({LAYERS[layer_of(name)][0]}) -> {dep} ({LAYERS[layer_of(dep)][0]})"
                  for name, deps in edges.items() for dep in deps if layer_of(dep) > layer_of(name))


def test_no_module_imports_a_higher_layer():
    """Each import (lazy ones inside functions and modules named by string included) goes to the importer's layer or
    one below it; on failure the offending edges and the whole graph, layer by layer, are printed."""
    edges = {name: {d for d in GRAPH[name] | _named_modules(path, MODULES) if d != name}
             for name, path in MODULES.items()}
    upward = upward_edges(edges)
    assert not upward, ("imports running up the layers:\n  " + "\n  ".join(upward)
                        + "\n\nthe import graph, lowest layer first:\n" + _graph_text(edges))


def test_the_layer_check_catches_an_upward_import():
    """The check itself: a lower module importing a higher one, even lazily inside a function, is an upward edge."""
    lazy = _imports_in("def f():\n    from muonlab.tasks.lm import train\n", MODULES)
    assert lazy == {"muonlab.tasks.lm.train"}
    assert upward_edges({"muonlab.linalg.polar": lazy}) == [
        "muonlab.linalg.polar (linalg) -> muonlab.tasks.lm.train (tasks)"]
    assert upward_edges({"muonlab.tasks.lm.train": {"muonlab.files", "muonlab.optim"}}) == []
    assert upward_edges({"muonlab.tasks.lm.train": {"muonlab.experiments.runner"}}) != []
    assert layer_of("muonlab.tasks.lm.train") > layer_of("muonlab.optim.base") > layer_of("muonlab.linalg.polar")
    assert layer_of("muonlab.experiments.lm_report") == layer_of("muonlab.cli") > layer_of("muonlab.experiments.runner")
    assert layer_of("muonlab.integrations.anything") == [n for n, _ in LAYERS].index("integrations")
    assert layer_of("muonlab.experiments.claims") == 0


def test_the_package_docstring_lists_the_layers_in_this_order():
    import muonlab

    line = next((ln for ln in (muonlab.__doc__ or "").splitlines() if ln.strip().startswith("Layers")), "")
    named = [part.strip().rstrip(".") for part in re.split("→", line.split(":", 1)[-1])]
    assert named == [name for name, _ in LAYERS], line


def test_no_package_code_reaches_outside_the_package():
    """An installed package has no source checkout around it: nothing builds a path above its own folder."""
    reaching = [name for name, path in MODULES.items()
                if re.search(r"__file__\)?(\.resolve\(\))?\.parents\[[2-9]\]|\.parent\.parent\.parent", path.read_text())]
    assert reaching == []


@pytest.mark.parametrize("leaf", ["muonlab.errors", "muonlab.files", "muonlab.devices", "muonlab.experiments.claims"])
def test_leaf_modules_import_nothing_from_muonlab(leaf):
    assert GRAPH[leaf] == set()


def test_the_old_json_module_only_re_exports_the_files_module():
    assert GRAPH["muonlab.jsonio"] == {"muonlab.files"}


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
