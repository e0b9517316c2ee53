"""The package's shape: no import cycles, small modules and functions, heavy imports in one place.

These are the limits the layout was built to keep (the README's "Layout" section); a change
that breaks one should move code, not raise a limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bnaudit"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _internal_edges() -> dict[str, set[str]]:
    return {name: {m for m in _imports(path) if m in MODULES} for name, path in MODULES.items()}


def test_no_import_cycles() -> None:
    edges = _internal_edges()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            pytest.fail(f"import cycle: {cycle}")
        if name in done:
            return
        for target in sorted(edges[name]):
            # A package's __init__ is run before any of its modules: importing it is no cycle.
            if not name.startswith(target + "."):
                visit(target, [*path, name])
        done.add(name)

    for name in MODULES:
        visit(name, [])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_and_functions_are_small(name: str) -> None:
    source = MODULES[name].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, name
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{name}.{node.name}: {length} lines"


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("tensorflow", {"bnaudit.run.execute"}),
        ("keras", {"bnaudit.run.execute"}),
        ("click", {"bnaudit.cli"}),
        ("rich", {"bnaudit.report.table", "bnaudit.cli"}),
        ("h5py", {"bnaudit.checkpoint.keras"}),
    ],
)
def test_heavy_libraries_are_imported_in_one_place(library: str, allowed: set[str]) -> None:
    users = {
        name
        for name, path in MODULES.items()
        if any(m == library or m.startswith(library + ".") for m in _imports(path))
    }
    assert users <= allowed, sorted(users - allowed)
    assert users, f"nothing imports {library}: update this test"


def test_the_folders_follow_the_data_flow() -> None:
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders == ["audit", "checkpoint", "formats", "model", "report", "run"]
