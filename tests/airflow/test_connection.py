"""Tests of parallel_batch.airflow.connection: the Airflow connection as a psycopg conninfo."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from parallel_batch.airflow.connection import (
    ConnectionConfigError,
    conninfo_from_args,
    resolve_conninfo,
)
from parallel_batch.exceptions import ConfigurationError
from tests.airflow.dagrun import run_dag


def _connection_json(url: str, extra: dict[str, Any]) -> str:
    """Return an ``AIRFLOW_CONN_*`` JSON value for the database of ``url`` with ``extra``."""
    params = conninfo_to_dict(url)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": params.get("host"),
            "port": int(params["port"]) if params.get("port") else None,
            "login": params.get("user"),
            "password": params.get("password"),
            "schema": params.get("dbname"),
            "extra": extra,
        }
    )


def test_resolves_the_default_connection(parallel_batch_conn: str) -> None:
    """Test that parallel_batch_default becomes a conninfo that reaches its database."""
    conninfo = resolve_conninfo()

    with psycopg.connect(conninfo) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone()  # type: ignore[misc]
    assert name == conninfo_to_dict(parallel_batch_conn)["dbname"]


def test_undefined_connection_fails_naming_it(parallel_batch_conn: str) -> None:
    """Test that an undefined conn id fails with its name and how to define it, no fallback."""
    from airflow.sdk.exceptions import AirflowFailException

    # PARALLEL_BATCH_DATABASE_URL is set (the fixture): the old fallback would have used it.
    with pytest.raises(AirflowFailException) as caught:
        resolve_conninfo("no_such_connection")

    message = str(caught.value)
    assert "The Airflow connection 'no_such_connection' is not defined" in message
    assert "AIRFLOW_CONN_NO_SUCH_CONNECTION" in message
    assert "airflow connections add no_such_connection" in message
    assert isinstance(caught.value, ConfigurationError)  # the progress page shows it as such


def test_refuses_a_connection_of_another_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a non-Postgres connection fails without retries, not silently."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_PB_HTTP", json.dumps({"conn_type": "http", "host": "example.com"})
    )

    with pytest.raises(ConnectionConfigError, match="has type 'http'"):
        resolve_conninfo("pb_http")


def test_hook_extras_reach_the_database(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that libpq extras (options, application_name, sslmode) apply and hook keys do not."""
    extra = {
        "options": "-c search_path=pb_extras,public",
        "application_name": "pb extras",
        "sslmode": "disable",
        "cursor": "dictcursor",  # the hook's own: a row factory, not a libpq keyword
        "sqlalchemy_scheme": "postgresql+psycopg",
    }
    monkeypatch.setenv("AIRFLOW_CONN_PB_EXTRAS", _connection_json(pg_url, extra))

    conninfo = resolve_conninfo("pb_extras")

    params = conninfo_to_dict(conninfo)
    assert "cursor" not in params and "row_factory" not in params
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT current_setting('search_path'), current_setting('application_name'),"
            " current_database()"
        ).fetchone()
    assert row == ("pb_extras,public", "pb extras", conninfo_to_dict(pg_url)["dbname"])


def test_iam_extra_takes_the_hooks_token_path(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that an `iam` extra is honoured (a token is asked for), never silently dropped."""
    monkeypatch.setenv("AIRFLOW_CONN_PB_IAM", _connection_json(pg_url, {"iam": True}))

    # The hook asks AWS for an RDS token: without the amazon provider it says how to get it;
    # with it (the `s3` extra, installed by `make setup`) boto3 wants a region, which this
    # connection does not give. Dropping the extra instead, as before, would connect without
    # the token the connection asks for.
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(Exception, match=r"apache-airflow-providers-amazon|must specify a region"):
        resolve_conninfo("pb_iam")


def test_conninfo_from_args_keeps_libpq_keywords_only() -> None:
    """Test that libpq arguments with a value pass through and the others are left out."""
    conninfo = conninfo_from_args(
        {
            "host": "/tmp/socket dir",
            "port": 5433,
            "user": "app",
            "password": "s3 cret",
            "dbname": "data",
            "sslmode": "require",
            "row_factory": object(),
            "options": None,
        }
    )

    assert conninfo_to_dict(conninfo) == {
        "host": "/tmp/socket dir",
        "port": "5433",
        "user": "app",
        "password": "s3 cret",
        "dbname": "data",
        "sslmode": "require",
    }


_UNDEFINED_CONN_DAG = """
import datetime as dt

from airflow.sdk import DAG

from parallel_batch.airflow.operators import PlanTableJobOperator

with DAG(
    "undefined_conn",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=1)},
):
    PlanTableJobOperator(
        task_id="plan",
        source_table="demo.events",
        target_table="demo.events_enriched",
        transform="include.transforms.events:enrich_events",
        transform_kind="batch",
        conn_id="pb_undefined",
    )
"""


def test_task_with_undefined_conn_id_fails_and_starts_no_server(
    parallel_batch_conn: str,
    pg_conn: psycopg.Connection,
    tmp_dags_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Test that a task whose conn id is undefined fails at once, naming it, and that neither
    PARALLEL_BATCH_DATABASE_URL nor the embedded server stands in for the connection."""
    from airflow.dag_processing.dagbag import DagBag

    from parallel_batch.demo import events as demo
    from parallel_batch.local import embedded

    demo.seed_events(pg_conn, 10)  # a database the task could have written to
    started: list[str] = []

    def start() -> str:
        started.append("embedded.start")
        raise AssertionError("the embedded server was started inside a task")

    monkeypatch.setattr(embedded, "start", start)
    state = tmp_path / "state"  # where an embedded server started by a subprocess would live
    monkeypatch.setenv("PARALLEL_BATCH_HOME", str(state))
    (tmp_dags_folder / "undefined_conn.py").write_text(textwrap.dedent(_UNDEFINED_CONN_DAG))
    dag = DagBag(str(tmp_dags_folder)).get_dag("undefined_conn")

    result = run_dag(dag, {})

    assert result.state == "failed"
    assert result.tis[("plan", -1)] == ("failed", 1)  # 2 retries configured, none used
    out = capfd.readouterr().out
    assert "ConnectionConfigError: The Airflow connection 'pb_undefined' is not defined" in out
    assert started == []
    assert not (state / "pgdata").exists()
    assert pg_conn.execute("SELECT count(*) FROM parallel_batch.jobs").fetchone() == (0,)
