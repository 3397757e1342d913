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
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from parallel_batch.exceptions import ConfigurationError, DatabaseUnavailableError
from parallel_batch.local.paths import project_root, state_dir

log = logging.getLogger(__name__)

CONN_ID = "parallel_batch_default"
CONN_ENV = "AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT"
METADATA_DATABASE = "airflow"
POOL_NAME = "parallel_batch"
DEFAULT_API_HOST = "127.0.0.1"  # all users are admins: never listen beyond this machine
DEFAULT_API_PORT = 8080
SQL_ALCHEMY_CONN_ENV = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
# Task slots of the LocalExecutor per core. Heavy chunk tasks are bounded by the pool (one slot
# per core, each running its own worker processes); the other tasks (plan, summarize) mostly wait
# on Postgres. Larger: more light tasks overlap; smaller: less memory (~150 MB per task process).
TASKS_PER_CORE = 4
# Seconds one `airflow` CLI call may take (a first `db migrate` takes ~10 s on 2 cores).
AIRFLOW_CLI_TIMEOUT = 600
_STAMP_FILE = "prepared.json"
_SECRETS_FILE = "secrets.json"


def airflow_home() -> Path:
    """Return the project's ``AIRFLOW_HOME``: ``.parallel_batch/airflow``."""
    return state_dir() / "airflow"


def _conninfo(database_url: str) -> dict[str, str]:
    """Parse a libpq URL or ``key=value`` string into its parameters (psycopg's parser)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(database_url)
    except Exception as exc:  # psycopg.ProgrammingError for a malformed string
        raise ConfigurationError(f"Invalid database URL: {exc}") from exc
    return {key: str(value) for key, value in params.items() if value is not None}


def metadata_url(database_url: str, database: str = METADATA_DATABASE) -> str:
    """Return the SQLAlchemy URL (psycopg 3 driver) of ``database`` on ``database_url``'s server.

    A Unix-socket host (a directory) goes into the query string, ``?host=/path``, the form
    both SQLAlchemy and libpq read; a TCP host stays in the authority part.

    :param database_url: any libpq URL or ``key=value`` string of the server.
    :param database: the database name in the returned URL.
    """
    if not database:
        raise ValueError("database must not be empty")
    params = _conninfo(database_url)
    params.pop("dbname", None)
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    if password is not None:
        auth = f"{user}:{quote(password, safe='')}@"
    else:
        auth = f"{user}@" if user else ""
    query: dict[str, str] = {}
    if host.startswith("/") or "," in host:
        query["host"] = host
        netloc = auth
        if port:
            query["port"] = port
    else:
        netloc = f"{auth}{host}" + (f":{port}" if port else "")
    query.update(params)
    url = f"postgresql+psycopg://{netloc}/{quote(database, safe='')}"
    if query:
        # '/' stays readable; '%' and '$' never appear unescaped (Airflow expands $VARS)
        url += "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in sorted(query.items()))
    return url


def libpq_url(sqlalchemy_url: str) -> str:
    """Return the libpq (psycopg) form of a ``postgresql+driver://`` SQLAlchemy URL."""
    scheme, sep, rest = sqlalchemy_url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        raise ConfigurationError(
            f"Not a PostgreSQL SQLAlchemy URL: {urlsplit(sqlalchemy_url).scheme or sqlalchemy_url!r}"
        )
    return f"postgresql://{rest}"


def connection_json(database_url: str) -> str:
    """Return the Airflow connection (JSON form) for ``AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT``.

    The JSON form keeps a Unix-socket directory as the plain ``host``, which the Postgres hook
    passes to libpq unchanged; libpq parameters without a connection field go into ``extra``.

    :param database_url: the libpq URL or ``key=value`` string of the data database.
    """
    params = _conninfo(database_url)
    conn: dict[str, Any] = {"conn_type": "postgres"}
    for field, key in (("host", "host"), ("login", "user"), ("password", "password")):
        if key in params:
            conn[field] = params.pop(key)
    if "dbname" in params:
        conn["schema"] = params.pop("dbname")
    if "port" in params:
        conn["port"] = int(params.pop("port"))
    if params:
        conn["extra"] = params
    return json.dumps(conn, sort_keys=True)


def conninfo_from_connection(value: str) -> str:
    """Return a libpq ``key=value`` string from an ``AIRFLOW_CONN_*`` JSON value of ours."""
    from psycopg.conninfo import make_conninfo

    try:
        conn = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{CONN_ENV} is not the JSON form of a connection") from exc
    params: dict[str, Any] = dict(conn.get("extra") or {})
    for field, key in (("host", "host"), ("login", "user"), ("password", "password")):
        if conn.get(field) is not None:
            params[key] = conn[field]
    if conn.get("schema"):
        params["dbname"] = conn["schema"]
    if conn.get("port"):
        params["port"] = conn["port"]
    return make_conninfo(**params)


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
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str((dags_folder or project_root() / "dags").resolve()),
        # Our plugin loads through its entry point. Airflow imports every .py file of the plugins
        # folder as a top-level module, so it must not be the package's source (plugins/).
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


def ensure_database(database_url: str) -> bool:
    """Create the database that ``database_url`` names if it is missing; return True if created.

    :param database_url: a libpq URL or ``key=value`` string; the server's ``postgres``
        database is used to create it.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = _conninfo(database_url).get("dbname")
    if not name:
        raise ConfigurationError("The database URL names no database")
    try:
        with psycopg.connect(
            make_conninfo(database_url, dbname="postgres"), autocommit=True, connect_timeout=10
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                return False  # created meanwhile by a concurrent prepare
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"Cannot reach the database server: {exc}") from exc
    log.info("Created the database %s", name)
    return True


def _metadata_state(sqlalchemy_url: str, pool: str) -> tuple[str | None, int | None]:
    """Return (alembic revision, slots of ``pool``) of the metadata DB; None where missing."""
    import psycopg

    with psycopg.connect(libpq_url(sqlalchemy_url), autocommit=True, connect_timeout=10) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
                " AND table_name IN ('alembic_version', 'slot_pool')"
            )
        }
        revision = slots = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        if "slot_pool" in tables:
            found = conn.execute("SELECT slots FROM slot_pool WHERE pool = %s", (pool,)).fetchone()
            slots = int(found[0]) if found else None
    return revision, slots


def _airflow_version() -> str:
    return metadata.version("apache-airflow-core")


def _migrate_if_needed(env: Mapping[str, str], home: Path) -> None:
    url = env[SQL_ALCHEMY_CONN_ENV]
    stamp_path = home / _STAMP_FILE
    revision, _ = _metadata_state(url, POOL_NAME)
    key = {"airflow_version": _airflow_version(), "sql_alchemy_conn": url}
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    if revision is not None and stamp == {**key, "revision": revision}:
        log.debug("The Airflow metadata DB is at %s already", revision)
        return
    log.info("Migrating the Airflow metadata DB (airflow db migrate)")
    run_airflow_cli(env, ["db", "migrate"])
    revision, _ = _metadata_state(url, POOL_NAME)
    home.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps({**key, "revision": revision}))


def _ensure_pool(env: Mapping[str, str], slots: int) -> None:
    _, existing = _metadata_state(env[SQL_ALCHEMY_CONN_ENV], POOL_NAME)
    if existing is not None:  # keep what a user set in the UI
        return
    log.info("Creating the Airflow pool %s with %s slots", POOL_NAME, slots)
    run_airflow_cli(
        env,
        ["pools", "set", POOL_NAME, str(slots), "parallel_batch chunk tasks: one slot per core"],
    )


def _ensure_data_schema(env: Mapping[str, str]) -> None:
    """Create the data database if missing, and the ``parallel_batch`` schema in it."""
    import psycopg

    from parallel_batch.store.schema import ensure_schema

    if CONN_ENV not in env:
        return
    conninfo = conninfo_from_connection(env[CONN_ENV])
    ensure_database(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ensure_schema(conn)


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
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    ensure_database(libpq_url(env[SQL_ALCHEMY_CONN_ENV]))
    _migrate_if_needed(env, home)
    _ensure_pool(env, pool_slots or os.cpu_count() or 1)
    _ensure_data_schema(env)
