"""The project's ``plugins/`` as the plugins folder of a plain Airflow (an Astro-style project).

Airflow imports every ``.py`` file under its plugins folder as a top-level module named after the
file (``plugin``, ``cli``, ``config``, ...), honouring ``.airflowignore``; it also loads the
plugins of installed distributions' ``airflow.plugins`` entry points. ``plugins/.airflowignore``
keeps the package out of the first way, so our plugin comes once, from its entry point.

Each case runs Airflow in a subprocess with a fresh ``AIRFLOW_HOME``: the plugins manager
loads once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
ENTRY_POINT = "parallel_batch.airflow.plugin:ParallelBatchPlugin"

# Loads the plugins as every Airflow process does; prints the plugins (what `airflow plugins`
# shows), the import errors, and the modules imported from files under the plugins folder.
_PROBE = """
import json, sys
from pathlib import Path

from airflow import plugins_manager, settings

folder = Path(settings.PLUGINS_FOLDER).absolute()  # symlinks kept: the loader walks them
info = plugins_manager.get_plugin_info()
modules = sorted(
    name
    for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None) and folder in Path(module.__file__).absolute().parents
)
print(json.dumps({
    "plugins": [{"name": p["name"], "source": str(p["source"])} for p in info],
    "errors": plugins_manager.get_import_errors(),
    "modules": modules,
}))
"""


def _airflow_env(tmp_path: Path, plugins: Path, syntax: str = "glob") -> dict[str, str]:
    """Return a plain Airflow's environment: no AIRFLOW_* of the test session, a fresh home."""
    (tmp_path / "dags").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "home"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
        AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX=syntax,
    )
    return env


def _probe(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("syntax", ["glob", "regexp"])
def test_project_plugins_folder_loads_the_plugin_once(tmp_path: Path, syntax: str) -> None:
    """Test that `airflow plugins` lists our plugin once, from its entry point, and that nothing
    of plugins/ is imported as a top-level module, with either .airflowignore syntax."""
    env = _airflow_env(tmp_path, PROJECT_PLUGINS, syntax)

    listed = subprocess.run(
        [sys.executable, "-m", "airflow", "plugins", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    probe = _probe(env)

    plugins = json.loads(listed.stdout)
    assert [p["name"] for p in plugins] == ["parallel_batch"]
    assert ENTRY_POINT in plugins[0]["source"]
    assert probe["errors"] == {}
    modules = probe["modules"]
    assert isinstance(modules, list) and modules, "the plugin's own package was not imported"
    assert [m for m in modules if m.split(".")[0] != "parallel_batch"] == []


def test_users_plugins_beside_ours_still_load(tmp_path: Path) -> None:
    """Test that the ignore file skips only our package: a user's plugin file in the folder
    loads from the folder, ours from its entry point, each once."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / ".airflowignore").write_bytes((PROJECT_PLUGINS / ".airflowignore").read_bytes())
    (folder / "parallel_batch").symlink_to(PROJECT_PLUGINS / "parallel_batch")
    (folder / "team_plugin.py").write_text(
        "from airflow.plugins_manager import AirflowPlugin\n\n\n"
        "class TeamPlugin(AirflowPlugin):\n    name = 'team'\n"
    )

    probe = _probe(_airflow_env(tmp_path, folder))

    sources = {p["name"]: p["source"] for p in probe["plugins"]}  # type: ignore[attr-defined]
    assert sorted(sources) == ["parallel_batch", "team"]
    assert ENTRY_POINT in sources["parallel_batch"]
    assert sources["team"] == "$PLUGINS_FOLDER/team_plugin.py"
    assert probe["errors"] == {}
    assert [m for m in probe["modules"] if m.split(".")[0] != "parallel_batch"] == ["team_plugin"]  # type: ignore[attr-defined]


def test_without_the_ignore_file_the_package_is_imported_file_by_file(tmp_path: Path) -> None:
    """Test that the probe sees the hazard the ignore file prevents: without it, Airflow imports
    the package's files as top-level modules and registers the plugin a second time."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "parallel_batch").symlink_to(PROJECT_PLUGINS / "parallel_batch")

    probe = _probe(_airflow_env(tmp_path, folder))

    stray = [m for m in probe["modules"] if m.split(".")[0] != "parallel_batch"]  # type: ignore[attr-defined]
    assert "plugin" in stray
    assert any("already registered" in e for e in probe["errors"].values())  # type: ignore[attr-defined]
