"""The local Airflow environment: the variables the ``airflow`` CLI needs, and a ready metadata DB.

``parallel-batch env`` prints :func:`airflow_environment` as ``export`` lines after
:func:`prepare_airflow` made the metadata database usable, so that::

    eval "$(parallel-batch env)"
    airflow dags test parallel_batch_table -c '{"chunk_rows": 100000}'

just works. Everything lives on the configured database server (the embedded one by default):

    server (PARALLEL_BATCH_DATABASE_URL or embedded)
      |-- database of the URL ("postgres")  <- AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT (the data)
      `-- database "airflow"                <- AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (metadata)

This module never imports airflow: Airflow reads its configuration once, at import, so the
environment must be computed before that; the metadata DB is prepared by running the ``airflow``
CLI in subprocesses. Preparing is idempotent and quick when already done (a stamp file keyed by
the Airflow version, the metadata URL and the schema revision skips ``airflow db migrate``).
The server's three spellings are in :mod:`parallel_batch.local.conninfo`, what the databases
hold is read by :mod:`parallel_batch.local.metadata_db`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from parallel_batch.airflow import POOL_NAME
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.local import metadata_db
from parallel_batch.local.conninfo import (
    CONN_ENV,
    CONN_ID,
    METADATA_DATABASE,
    connection_json,
    conninfo_from_connection,
    libpq_url,
    metadata_url,
)
from parallel_batch.local.paths import project_root, state_dir

__all__ = [
    "CONN_ENV",
    "CONN_ID",
    "POOL_NAME",
    "airflow_environment",
    "airflow_home",
    "connection_json",
    "export_lines",
    "prepare_airflow",
    "run_airflow_cli",
    "subprocess_env",
]

log = logging.getLogger(__name__)

DEFAULT_API_HOST = "127.0.0.1"  # all users are admins: never listen beyond this machine
DEFAULT_API_PORT = 8080
SQL_ALCHEMY_CONN_ENV = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
# Task slots of the LocalExecutor per core. Heavy chunk tasks are bounded by the pool (one slot
# per core, each running its own worker processes); the other tasks (plan, summarize) mostly wait
# on Postgres. Larger: more light tasks overlap; smaller: less memory (~150 MB per task process).
TASKS_PER_CORE = 4
# Seconds one `airflow` CLI call may take (a first `db migrate` takes ~10 s on 2 cores).
AIRFLOW_CLI_TIMEOUT = 600
# Seconds an idle scheduler sleeps between loops (Airflow's default: 1).
SCHEDULER_IDLE_SLEEP = "0.2"
# Seconds before an unchanged DAG file is parsed again (Airflow's default: 30). A file that
# changed is parsed at once whatever this says (its mtime; Airflow's default parsing order).
MIN_FILE_PROCESS_INTERVAL = "300"
_SECRETS_FILE = "secrets.json"


def airflow_home() -> Path:
    """Return the project's ``AIRFLOW_HOME``: ``.parallel_batch/airflow``."""
    return state_dir() / "airflow"


def _load_or_create_secrets(home: Path) -> dict[str, str]:
    """Return the secrets of this Airflow home, generated once and kept in a 0600 file."""
    path = home / _SECRETS_FILE
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    home.mkdir(parents=True, exist_ok=True)
    values = {
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),  # a Fernet key's format
        "jwt_secret": secrets.token_urlsafe(32),
        "api_secret_key": secrets.token_urlsafe(32),
    }
    tmp = home / f".{_SECRETS_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    try:
        os.link(tmp, path)  # fails if it exists: of two concurrent first calls, one file wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    stored = json.loads(path.read_text())
    return stored


def airflow_environment(
    database_url: str | None = None,
    *,
    home: Path | None = None,
    metadata_database: str = METADATA_DATABASE,
    dags_folder: Path | None = None,
    api_host: str = DEFAULT_API_HOST,
    api_port: int = DEFAULT_API_PORT,
    cpu_count: int | None = None,
) -> dict[str, str]:
    """Return the environment variables that configure Airflow for this project.

    :param database_url: the data database (the ``parallel_batch_default`` connection); its
        server also holds the metadata database. Default: the configured database
        (``PARALLEL_BATCH_DATABASE_URL`` or the embedded server, started if needed).
    :param home: ``AIRFLOW_HOME``. Default: ``.parallel_batch/airflow``.
    :param metadata_database: the database on the same server for Airflow's metadata.
    :param dags_folder: the DAGs folder. Default: the project's ``dags/``.
    :param api_host: the address the api-server listens on and tasks reach it at.
    :param api_port: the api-server's port (the UI, the REST API and the task execution API).
    :param cpu_count: cores to size parallelism for. Default: ``os.cpu_count()``.
    """
    if not 0 < api_port < 65536:
        raise ValueError("api_port must be between 1 and 65535")
    if cpu_count is not None and cpu_count < 1:
        raise ValueError("cpu_count must be greater than 0")
    if database_url is None:
        from parallel_batch.local.config import database_url as configured_url

        database_url = configured_url()
    home = (home or airflow_home()).resolve()
    cores = cpu_count or os.cpu_count() or 1
    keys = _load_or_create_secrets(home)
    api = f"http://{api_host}:{api_port}"
    root = str(project_root().resolve())
    python_path = os.pathsep.join(
        [root, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root)]
    )
    return {
        "AIRFLOW_HOME": str(home),
        # The project root, for `include.transforms...` (Airflow adds only dags/ and plugins/).
        "PYTHONPATH": python_path,
        "AIRFLOW__CORE__DAGS_FOLDER": str((dags_folder or project_root() / "dags").resolve()),
        # Our plugin loads through its entry point. The project's plugins/ would do too (its
        # .airflowignore skips the package), but a folder of the home's own keeps it that way
        # whatever else lands in plugins/.
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(TASKS_PER_CORE * cores),
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        # Local use only: no login, everyone is admin (the api-server listens on api_host).
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__API__HOST": api_host,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{api_port}"
        if api_host == DEFAULT_API_HOST
        else api,
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        SQL_ALCHEMY_CONN_ENV: metadata_url(database_url, metadata_database),
        # New DAG files show up within 30 s instead of Airflow's 5 minutes (local development).
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # Unchanged DAG files parsed again every 5 minutes, not every 30 s: re-parsing the
        # project's DAGs took ~0.1 of a core of an idle 2-core machine (3.2 CPU-s in 30 s),
        # taken from the chunk tasks while a run is on. An edited file is parsed at once.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": MIN_FILE_PROCESS_INTERVAL,
        # An idle scheduler looks again after 0.2 s instead of 1 s: a task starts (and a run
        # ends) sooner after the task before it. A 5M-row demo run has about 8 such steps.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": SCHEDULER_IDLE_SLEEP,
        CONN_ENV: connection_json(database_url),
    }


def export_lines(env: Mapping[str, str]) -> list[str]:
    """Return ``export NAME=value`` lines, shell-quoted, in name order."""
    return [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]


def subprocess_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return the current process environment with ``env`` laid over it."""
    return {**os.environ, **env}


def run_airflow_cli(
    env: Mapping[str, str], args: Sequence[str], *, timeout: float = AIRFLOW_CLI_TIMEOUT
) -> str:
    """Run ``airflow ARGS`` (this interpreter's) with ``env``; return its output.

    :raises ConfigurationError: when the command fails; the message ends with its output.
    """
    argv = [sys.executable, "-m", "airflow", *args]
    log.debug("Running %s", shlex.join(argv[2:]))
    try:
        done = subprocess.run(
            argv,
            env=subprocess_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConfigurationError(f"`airflow {shlex.join(args)}` ran over {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ConfigurationError(
            f"`airflow {shlex.join(args)}` failed with exit code {done.returncode}:\n{tail}"
        )
    return done.stdout


def prepare_airflow(env: Mapping[str, str], *, pool_slots: int | None = None) -> None:
    """Make the environment ready to run DAGs; idempotent, and quick when already done.

    Creates the metadata database if missing, runs ``airflow db migrate`` unless the DB is at
    the revision recorded for this Airflow version, creates the ``parallel_batch`` pool if
    missing (a pool a user resized is kept), and creates the data database of
    ``AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT`` if missing with the ``parallel_batch`` schema in it.
    It also serves the Docker image's init container, with ``env=os.environ``.

    :param env: what :func:`airflow_environment` returned.
    :param pool_slots: slots of a new ``parallel_batch`` pool. Default: the number of cores.
    """
    if pool_slots is not None and pool_slots < 1:
        raise ValueError("pool_slots must be greater than 0")
    for name in ("AIRFLOW_HOME", SQL_ALCHEMY_CONN_ENV):
        if not env.get(name):
            raise ValueError(f"env must set {name}")
    home = Path(env["AIRFLOW_HOME"])
    url = env[SQL_ALCHEMY_CONN_ENV]
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    metadata_db.ensure_database(libpq_url(url))
    if metadata_db.needs_migration(home, url):
        log.info("Migrating the Airflow metadata DB (airflow db migrate)")
        run_airflow_cli(env, ["db", "migrate"])
        metadata_db.record_migration(home, url)
    if metadata_db.metadata_state(url, POOL_NAME).pool_slots is None:  # keep a user's size
        slots = pool_slots or os.cpu_count() or 1
        log.info("Creating the Airflow pool %s with %s slots", POOL_NAME, slots)
        description = "parallel_batch chunk tasks: one slot per core"
        run_airflow_cli(env, ["pools", "set", POOL_NAME, str(slots), description])
    if CONN_ENV in env:
        metadata_db.ensure_data_schema(conninfo_from_connection(env[CONN_ENV]))
