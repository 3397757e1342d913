"""The library never imports parallel_batch.local: only the CLI starts the embedded server."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import parallel_batch

# Every package that runs inside Airflow (tasks, the api-server, the dag-processor) or under it.
LIBRARY_PACKAGES = ("airflow", "core", "engine", "progress", "sources", "store")
PACKAGE_DIR = Path(parallel_batch.__file__).parent


def _imported_names(path: Path) -> set[str]:
    """Return every module an import statement of ``path`` names, in functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_library_sources_never_import_local() -> None:
    """Test that no import statement of the library, lazy ones included, names local/."""
    offenders = {
        str(path.relative_to(PACKAGE_DIR)): sorted(
            name for name in _imported_names(path) if name.startswith("parallel_batch.local")
        )
        for package in LIBRARY_PACKAGES
        for path in sorted((PACKAGE_DIR / package).rglob("*.py"))
    }

    assert len(offenders) > 50  # every module was read
    assert {path: names for path, names in offenders.items() if names} == {}


_PROBE = """
import importlib, json, pkgutil, sys
import parallel_batch

imported, errors = [], {}
for name in sys.argv[1:]:
    package = importlib.import_module(f"parallel_batch.{name}")
    imported.append(package.__name__)
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            errors[info.name] = repr(exc)
        else:
            imported.append(info.name)
local = sorted(m for m in sys.modules if m.split(".")[:2] == ["parallel_batch", "local"])
print(json.dumps({"imported": imported, "errors": errors, "local": local}))
"""


def test_library_modules_import_nothing_of_local(tmp_path: Path) -> None:
    """Test that importing every module of the library loads no module of parallel_batch.local."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path)  # importing airflow writes a default config there

    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *LIBRARY_PACKAGES],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "parallel_batch.airflow.connection" in result["imported"]
    assert "parallel_batch.airflow.plugin" in result["imported"]
    assert result["local"] == []
    assert result["errors"] == {}  # a module that does not import was not checked
