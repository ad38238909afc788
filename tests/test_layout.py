"""The house's shape, checked from the source: dependencies point one way (cli -> flows -> tasks -> leaves), no circles.

An AST walk over every module of the package: imports at module level and inside
functions both count, since a function-level import is a dependency all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"cli": "drillbook.cli", "flows": "drillbook.flows", "tasks": "drillbook.tasks", "testing": "drillbook.testing"}
LEAVES = {
    "drillbook.tasks.catalogue_sql",
    "drillbook.tasks.text",
    "drillbook.tasks.outcome",
    "drillbook.tasks.errors",
    "drillbook.tasks.steps",
}
MAX_LINES = 420  # "no module over about 400 lines"


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, inside a function?) for every drillbook import of a file."""
    tree = ast.parse(path.read_text())
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("drillbook"):
                for alias in child.names:  # `from drillbook.cli import run` names a module
                    candidate = f"{child.module}.{alias.name}"
                    out.append((candidate if candidate in MODULES else child.module, inner))
            elif isinstance(child, ast.Import):
                out.extend((alias.name, inner) for alias in child.names if alias.name.startswith("drillbook"))
            visit(child, inner)

    visit(tree, False)
    return out


GRAPH = {name: sorted({target for target, _ in _imports(path) if target in MODULES and target != name}) for name, path in MODULES.items()}


def _layer(name: str) -> str:
    return name.split(".")[1]


def test_dependencies_point_one_way():
    allowed = {
        "cli": {"cli", "flows", "tasks", "testing"},
        "flows": {"flows", "tasks"},
        "tasks": {"tasks"},
        "testing": {"tasks", "testing"},
    }
    wrong = [
        f"{name} imports {target}" for name, targets in GRAPH.items() for target in targets if _layer(target) not in allowed[_layer(name)]
    ]
    assert wrong == []


def test_leaves_import_only_leaves():
    assert set(MODULES) >= LEAVES, "a leaf was renamed or removed: update LEAVES"
    wrong = [f"{name} imports {target}" for name in LEAVES for target in GRAPH[name] if target not in LEAVES]
    assert wrong == []


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One circle of imports, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in graph.get(node, []):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := walk(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := walk(node)):
            return found
    return None


@pytest.mark.parametrize("layer", ["tasks", "flows", "cli"])
def test_no_circles(layer):
    graph = {name: [t for t in targets if _layer(t) == layer] for name, targets in GRAPH.items() if _layer(name) == layer}
    assert find_cycle(graph) is None


def _folder(name: str) -> str:
    """A module's folder-level unit: drillbook.tasks.history.store -> drillbook.tasks.history; a top-level module is its own."""
    return ".".join(name.split(".")[:3])


@pytest.mark.parametrize("layer", ["tasks", "flows", "cli", "testing"])
def test_no_folder_level_circles(layer):
    """Packages (history/, report/, storage/, ...) and top-level modules import each other one way only."""
    graph: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        if _layer(name) == layer:
            graph.setdefault(_folder(name), set()).update(_folder(t) for t in targets if _layer(t) == layer and _folder(t) != _folder(name))
    assert find_cycle({name: sorted(targets) for name, targets in graph.items()}) is None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": []}) is None


def test_no_function_level_drillbook_imports_in_tasks():
    """A heavy third-party import may wait inside a function (with a comment); drillbook's own never need to."""
    nested = [
        f"{name} imports {target} inside a function"
        for name, path in MODULES.items()
        if _layer(name) == "tasks"
        for target, inner in _imports(path)
        if inner
    ]
    assert nested == []


def test_no_module_is_a_novel():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _defined(path: Path) -> set[str]:
    """The names a module defines itself at top level (not the ones it imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_one_name_one_home():
    """A name is imported from the module that defines it: no module passes on another's names (a package's
    __init__ is its public face and may)."""
    defined = {name: _defined(path) for name, path in MODULES.items() if path.name != "__init__.py"}
    wrong = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in defined:
                wrong += [
                    f"{name} imports {alias.name} from {node.module}, which does not define it"
                    for alias in node.names
                    if alias.name not in defined[node.module] and f"{node.module}.{alias.name}" not in MODULES
                ]
    assert wrong == []


def test_every_backend_module_declares_its_facts_and_is_registered():
    """A backend is its module (a Storage class and BACKEND = Backend(...)) plus its line in storage/__init__.py's KNOWN."""
    import importlib

    from drillbook.tasks.storage import BACKENDS, KNOWN
    from drillbook.tasks.storage.base import Backend

    modules = [p.stem for p in (ROOT / "tasks" / "storage").glob("*.py") if p.stem not in ("__init__", "base")]
    for name in modules:
        backend = getattr(importlib.import_module(f"drillbook.tasks.storage.{name}"), "BACKEND", None)
        assert isinstance(backend, Backend), f"tasks/storage/{name}.py declares no BACKEND = Backend(...)"
        assert backend in KNOWN, f"tasks/storage/{name}.py's BACKEND is not in storage/__init__.py's KNOWN"
        assert backend.schemes and backend.credentials, f"tasks/storage/{name}.py: schemes and credential lines are the runbook's"
        assert set(backend.secret_env) <= set(backend.env), f"tasks/storage/{name}.py: a secret variable litestream is not given"
    assert len(BACKENDS) == sum(len(b.schemes) for b in KNOWN), "two backends claim one scheme"
