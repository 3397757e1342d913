"""Where the project keeps its local state (`.parallel_batch/` in the project root)."""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_NAME = ".parallel_batch"


def project_root() -> Path:
    """Return the project root: ``PARALLEL_BATCH_HOME``'s parent, the source checkout, or the cwd."""
    home = os.environ.get("PARALLEL_BATCH_HOME")
    if home:
        return Path(home).resolve().parent
    # plugins/parallel_batch/local/paths.py -> project root, for a source checkout / editable install
    candidate = Path(__file__).resolve().parents[3]
    if (candidate / "pyproject.toml").is_file() and (candidate / "dags").is_dir():
        return candidate
    return Path.cwd()


def state_dir() -> Path:
    """Return (and create) the directory that holds the embedded server and Airflow home."""
    home = os.environ.get("PARALLEL_BATCH_HOME")
    path = Path(home).resolve() if home else project_root() / STATE_DIR_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def include_dir() -> Path:
    """Return the project's ``include/`` (the demo tables' SQL, transforms and sample data): the
    project root's, else the source checkout's, else the working directory's.

    :raises FileNotFoundError: when none has one (an installed package run outside its project).
    """
    candidates = [project_root(), Path(__file__).resolve().parents[3], Path.cwd()]
    for root in candidates:
        if (root / "include" / "sql").is_dir():
            return root / "include"
    raise FileNotFoundError(
        f"no include/sql/ in {', '.join(map(str, dict.fromkeys(candidates)))}: run from the "
        "project, or set PARALLEL_BATCH_HOME to <project>/.parallel_batch"
    )
