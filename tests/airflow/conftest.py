"""Airflow for in-process ``dag.test()`` runs on the real test PostgreSQL.

Airflow reads its configuration (``AIRFLOW_HOME``, the metadata DB URL, ...) once, when ``airflow``
is first imported. So the environment is set in :func:`pytest_configure` below, which pytest
calls as soon as it loads this conftest, i.e. before it imports any test module of this
directory. It fails loudly if ``airflow`` was imported earlier (by a test module collected
before ``tests/airflow/``): move that import into the test function, or run the directories
separately.

What the session gets:

- ``AIRFLOW_HOME`` in a temporary directory; the DAGs folder is the project's ``dags/``;
- the metadata DB: a fresh database on the test server (``PARALLEL_BATCH_TEST_DATABASE_URL`` or
  the embedded server), migrated once per session by the autouse fixture ``airflow_env`` (with
  the ``parallel_batch`` pool), dropped at the end;
- the ``parallel_batch_default`` connection points at a database that does not exist until a
  test takes ``parallel_batch_conn``, which points it (and ``PARALLEL_BATCH_DATABASE_URL``) at
  that test's own database (``pg_url``) with the ``parallel_batch`` schema in place;
- ``tmp_dags_folder``: a DAGs folder of the test's own, for DAGs written by the test
  (``dag.test()`` in Airflow 3.3 only runs a DAG that lives in a file of the DAG bundle).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from parallel_batch.local import env as localenv

_TEST_DB_ENV = "PARALLEL_BATCH_TEST_DATABASE_URL"
# The connection a test gets without `parallel_batch_conn`: a database that never exists, so a
# forgotten fixture fails with "database ... does not exist" instead of writing elsewhere.
_NO_DATABASE = "parallel_batch_conn_fixture_not_used"
_state: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Set the Airflow environment before anything imports airflow."""
    if "airflow" in sys.modules:
        raise pytest.UsageError(
            "airflow was imported before tests/airflow/conftest.py could configure it "
            "(Airflow reads its configuration at import): import airflow inside test "
            "functions elsewhere, or run tests/airflow on its own"
        )
    server_url = os.environ.get(_TEST_DB_ENV)
    if not server_url:
        from parallel_batch.local import embedded

        _state["started_embedded"] = not embedded.is_running()
        server_url = embedded.start()
    home = Path(tempfile.mkdtemp(prefix="pb-airflow-test-"))
    metadata_db = f"pbtest_airflow_{uuid.uuid4().hex[:12]}"
    env = localenv.airflow_environment(
        make_conninfo(server_url, dbname=_NO_DATABASE),
        home=home,
        metadata_database=metadata_db,
    )
    os.environ.update(env)
    _state.update(server_url=server_url, home=home, metadata_db=metadata_db, env=env)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the temporary AIRFLOW_HOME; stop the embedded server if this session started it."""
    home = _state.get("home")
    if isinstance(home, Path):
        shutil.rmtree(home, ignore_errors=True)
    if _state.get("started_embedded"):
        from parallel_batch.local import embedded

        embedded.stop()


@pytest.fixture(scope="session", autouse=True)
def airflow_env() -> Iterator[dict[str, str]]:
    """The session's Airflow environment, with its metadata DB migrated and the pool created."""
    env = dict(_state["env"])  # type: ignore[call-overload]
    metadata_db = str(_state["metadata_db"])
    # No data schema here: the session's connection points nowhere on purpose.
    localenv.prepare_airflow({k: v for k, v in env.items() if k != localenv.CONN_ENV})
    try:
        yield env
    finally:
        _drop_metadata_database(metadata_db)


def _drop_metadata_database(name: str) -> None:
    if "airflow.settings" in sys.modules:  # close this process's pooled metadata connections
        from airflow import settings

        settings.dispose_orm(do_log=False)
    with psycopg.connect(str(_state["server_url"]), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def tmp_dags_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DAGs folder for this test, in place of the project's ``dags/``.

    In Airflow 3.3 ``dag.test()`` serializes the DAG from its bundle (the DAGs folder), so a
    DAG written by a test must live in a file there: write it, then load it with
    ``DagBag(folder).get_dag(dag_id)`` (``airflow.dag_processing.dagbag``).
    """
    from airflow import settings

    folder = tmp_path / "dags"
    folder.mkdir()
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(folder))
    return folder


@pytest.fixture
def parallel_batch_conn(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``parallel_batch_default`` (and ``PARALLEL_BATCH_DATABASE_URL``) at ``pg_url``.

    The ``parallel_batch`` schema is created there; returns ``pg_url``.
    """
    from parallel_batch.store.schema import ensure_schema

    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_schema(conn)
    monkeypatch.setenv(localenv.CONN_ENV, localenv.connection_json(pg_url))
    monkeypatch.setenv("PARALLEL_BATCH_DATABASE_URL", pg_url)
    return pg_url
