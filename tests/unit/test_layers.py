"""The package's arrows point one way: engine <- store <- core <- sources; airflow on top.

Read from every import statement of every module (lazy ones in functions included), so a
shortcut across the layers fails here before it tangles the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import parallel_batch

PACKAGE = Path(parallel_batch.__file__).parent

# package -> what it may import of parallel_batch (besides itself and exceptions)
ALLOWED = {
    "engine": set(),
    "store": {"engine"},
    "core": {"engine", "store"},
    "sources": {"engine", "store", "core"},
    "progress": {"engine", "store"},
    "airflow": {"engine", "store", "core", "sources", "progress", "demo"},
}
THIRD_PARTY_FORBIDDEN = {
    "engine": ("airflow", "psycopg", "pandas"),
    "store": ("airflow",),
    "core": ("airflow",),
    "sources": ("airflow",),
    "progress": ("airflow",),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below(package: str) -> None:
    """Test that a package imports nothing of parallel_batch above it, nor what it must not."""
    offenders: dict[str, list[str]] = {}
    modules = sorted((PACKAGE / package).rglob("*.py"))
    assert modules
    for path in modules:
        bad = []
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "parallel_batch" and len(parts) > 1:
                layer = parts[1]
                if layer not in {package, "exceptions", *ALLOWED[package]}:
                    bad.append(name)
            elif parts[0] in THIRD_PARTY_FORBIDDEN.get(package, ()):
                bad.append(name)
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert offenders == {}


def test_root_holds_at_most_four_modules() -> None:
    """Test that the package root holds its entry points only (issue 7: at most 4 .py files)."""
    assert len(list(PACKAGE.glob("*.py"))) <= 4


def test_no_module_over_400_lines() -> None:
    """Test that every module stays under 400 lines: one concept each."""
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}
