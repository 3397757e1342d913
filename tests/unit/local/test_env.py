"""Tests of parallel_batch.local.env: the Airflow environment and preparing its databases."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.local import conninfo
from parallel_batch.local import env as localenv

SOCKET_URL = "postgresql://postgres:@/postgres?host=/tmp/pb/pgdata"


def test_airflow_environment_configures_airflow(tmp_path: Path) -> None:
    """Test that the environment names the home, DAGs, metadata DB, executor, auth and pool size."""
    env = localenv.airflow_environment(
        SOCKET_URL, home=tmp_path / "home", dags_folder=tmp_path, api_port=8123, cpu_count=2
    )

    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path)
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(tmp_path / "home" / "plugins")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == conninfo.metadata_url(SOCKET_URL)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(2 * localenv.TASKS_PER_CORE)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "True"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW__API__PORT"] == "8123"
    assert env[localenv.CONN_ENV] == conninfo.connection_json(SOCKET_URL)


def test_airflow_environment_defaults_to_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that the default home is the state dir's airflow/ and the DAGs folder is dags/."""
    monkeypatch.setenv("PARALLEL_BATCH_HOME", str(tmp_path / ".parallel_batch"))

    env = localenv.airflow_environment(SOCKET_URL)

    assert env["AIRFLOW_HOME"] == str(tmp_path / ".parallel_batch" / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    """Test that the secrets stay the same across calls and live in a file only the owner reads."""
    first = localenv.airflow_environment(SOCKET_URL, home=tmp_path)
    second = localenv.airflow_environment(SOCKET_URL, home=tmp_path)
    other = localenv.airflow_environment(SOCKET_URL, home=tmp_path / "other")

    names = [
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
    ]
    assert [first[n] for n in names] == [second[n] for n in names]
    assert all(first[n] != other[n] for n in names)
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_port": 0}, "api_port must be between 1 and 65535"),
        ({"cpu_count": 0}, "cpu_count must be greater than 0"),
    ],
)
def test_airflow_environment_checks_arguments(
    tmp_path: Path, kwargs: dict[str, int], message: str
) -> None:
    """Test that a bad port or core count is refused with its message."""
    with pytest.raises(ValueError, match=message):
        localenv.airflow_environment(SOCKET_URL, home=tmp_path, **kwargs)


def test_export_lines_survive_the_shell() -> None:
    """Test that eval of the export lines in bash gives back every value exactly."""
    env = {"PB_A": 'it\'s a "test" $HOME `x`', "PB_B": '{"host": "/a b"}', "PB_C": "plain"}

    script = "\n".join(localenv.export_lines(env)) + '\nprintf "%s\\0" "$PB_A" "$PB_B" "$PB_C"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)

    assert out.stdout.split("\0")[:3] == [env["PB_A"], env["PB_B"], env["PB_C"]]


def test_env_command_prints_exports(tmp_path: Path, pg_url: str) -> None:
    """Test that `parallel-batch env --no-prepare` prints exports for the configured database."""
    environ = {
        **os.environ,
        "PARALLEL_BATCH_HOME": str(tmp_path / ".parallel_batch"),
        "PARALLEL_BATCH_DATABASE_URL": pg_url,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    script = (
        'eval "$(parallel-batch env --no-prepare)"\n'
        'printf "%s\\0" "$AIRFLOW_HOME" "$AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT"'
    )

    out = subprocess.run(
        ["bash", "-c", script], env=environ, capture_output=True, text=True, check=True
    )

    home, conn = out.stdout.split("\0")[:2]
    assert home == str(tmp_path / ".parallel_batch" / "airflow")
    assert json.loads(conn)["schema"] == conninfo_to_dict(pg_url)["dbname"]


@pytest.fixture
def metadata_env(pg_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose metadata DB (not created yet) is dropped after the test."""
    name = f"pbtest_meta_{uuid.uuid4().hex[:12]}"
    env = localenv.airflow_environment(
        pg_url, home=tmp_path / "airflow", metadata_database=name, cpu_count=2
    )
    try:
        yield env
    finally:
        with psycopg.connect(make_conninfo(pg_url, dbname="postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_prepare_airflow_migrates_and_creates_pool_and_schema(
    metadata_env: dict[str, str], pg_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that prepare creates and migrates the metadata DB, the pool and the data schema once."""
    localenv.prepare_airflow(metadata_env, pool_slots=3)

    meta_url = conninfo.libpq_url(metadata_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    with psycopg.connect(meta_url) as meta:
        assert meta.execute("SELECT version_num FROM alembic_version").fetchone() is not None
        slots = meta.execute("SELECT slots FROM slot_pool WHERE pool = 'parallel_batch'").fetchone()
    assert slots == (3,)
    schema = pg_conn.execute(
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = 'parallel_batch'"
    ).fetchone()
    assert schema == (1,)

    def no_cli(*args: object, **kwargs: object) -> str:
        raise AssertionError("a second prepare ran the airflow CLI")

    monkeypatch.setattr(localenv, "run_airflow_cli", no_cli)
    localenv.prepare_airflow(metadata_env, pool_slots=3)


def test_prepare_airflow_checks_arguments(tmp_path: Path) -> None:
    """Test that prepare refuses zero pool slots and an environment without a metadata DB."""
    with pytest.raises(ValueError, match="pool_slots must be greater than 0"):
        localenv.prepare_airflow({"AIRFLOW_HOME": str(tmp_path)}, pool_slots=0)
    with pytest.raises(ValueError, match="env must set AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        localenv.prepare_airflow({"AIRFLOW_HOME": str(tmp_path)})


def test_airflow_reads_the_local_scheduler_and_dag_processor_settings(tmp_path: Path) -> None:
    """Test that Airflow itself reads the three settings the local environment changes from its
    defaults (an unknown option name in an AIRFLOW__ variable would be ignored without a word)."""
    env = localenv.airflow_environment(SOCKET_URL, home=tmp_path)
    found = localenv.run_airflow_cli(
        env, ["config", "get-value", "scheduler", "scheduler_idle_sleep_time"]
    )
    assert float(found.strip()) == float(localenv.SCHEDULER_IDLE_SLEEP) < 1.0
    found = localenv.run_airflow_cli(
        env, ["config", "get-value", "dag_processor", "refresh_interval"]
    )
    assert found.strip() == "30"
    found = localenv.run_airflow_cli(
        env, ["config", "get-value", "dag_processor", "min_file_process_interval"]
    )
    assert found.strip() == localenv.MIN_FILE_PROCESS_INTERVAL == "300"


def test_run_airflow_cli_reports_a_failure(tmp_path: Path) -> None:
    """Test that a failing airflow command raises with its exit code and output."""
    env = localenv.airflow_environment(SOCKET_URL, home=tmp_path)

    with pytest.raises(
        ConfigurationError, match=r"`airflow no-such-command` failed with exit code 2"
    ):
        localenv.run_airflow_cli(env, ["no-such-command"])


def test_postgres_hook_reaches_the_database_through_the_socket(tmp_path: Path, pg_url: str) -> None:
    """Test that Airflow's Postgres hook connects with our connection JSON (Unix socket or TCP)."""
    env = localenv.airflow_environment(pg_url, home=tmp_path)
    code = (
        "from airflow.providers.postgres.hooks.postgres import PostgresHook\n"
        "hook = PostgresHook(postgres_conn_id='parallel_batch_default')\n"
        "print(hook.get_first('SELECT current_database()')[0])\n"
    )

    out = subprocess.run(
        [sys.executable, "-c", code],
        env=localenv.subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert out.stdout.strip().splitlines()[-1] == conninfo_to_dict(pg_url)["dbname"]
