"""Tests of the in-process Airflow fixtures of tests/airflow/conftest.py."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest


def test_airflow_uses_the_session_environment(airflow_env: dict[str, str]) -> None:
    """Test that Airflow, imported after the conftest, reads the session's home and metadata DB."""
    from airflow import settings
    from airflow.configuration import conf

    assert (
        conf.get("database", "sql_alchemy_conn")
        == airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    )
    assert airflow_env["AIRFLOW_HOME"] == settings.AIRFLOW_HOME
    assert conf.get("core", "executor") == "LocalExecutor"


_PROBE_DAG = """
import datetime as dt

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import dag, get_current_context, task


@dag(schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), params={"n": 1})
def fixture_probe():
    @task
    def values():
        return list(range(get_current_context()["params"]["n"]))

    @task
    def record(value):
        hook = PostgresHook(postgres_conn_id="parallel_batch_default")
        hook.run("INSERT INTO seen VALUES (%s)", parameters=(value,))

    record.expand(value=values())


fixture_probe()
"""


def test_dag_test_writes_through_the_connection(
    parallel_batch_conn: str, pg_conn: psycopg.Connection, tmp_dags_folder: Path
) -> None:
    """Test that dag.test() runs a mapped DAG that reaches the test database with the conf."""
    from airflow.dag_processing.dagbag import DagBag

    pg_conn.execute("CREATE TABLE seen (value int)")
    (tmp_dags_folder / "fixture_probe.py").write_text(_PROBE_DAG)
    dag = DagBag(tmp_dags_folder).get_dag("fixture_probe")
    assert dag is not None

    run = dag.test(run_conf={"n": 3})

    assert str(run.state) == "success"
    assert sorted(v for (v,) in pg_conn.execute("SELECT value FROM seen")) == [0, 1, 2]


def test_connection_without_fixture_points_nowhere() -> None:
    """Test that parallel_batch_default fails clearly when a test did not take the fixture."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    with pytest.raises(psycopg.OperationalError, match="parallel_batch_conn_fixture_not_used"):
        PostgresHook(postgres_conn_id="parallel_batch_default").get_conn()
