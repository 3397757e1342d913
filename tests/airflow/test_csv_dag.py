"""dag.test() runs of dags/parallel_batch_csv.py on a real PostgreSQL (and a real HTTP server).

Each file's expected outcome is worked out independently of the loader
(``tests/helpers/customers_csv.py``) and compared value by value.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.airflow.dagrun import load_dag, run_dag, state_store_values
from tests.helpers.customers_csv import (
    assert_dead_letters,
    customers_csv,
    dead_letters,
    target_rows,
)
from tests.helpers.segment_server import SegmentServer, segment_of

DAG_ID = "parallel_batch_csv"
CONTRACT_PARAMS = {
    "path",
    "target_table",
    "chunks",
    "chunk_bytes",
    "batch_rows",
    "job_key",
    "enrich_url",
    "enrich_concurrency",
    "full_refresh",
    "max_failed_ratio",
}


def _snapshot(conn: psycopg.Connection, job_key: str) -> dict[str, object]:
    """What a rerun must leave alone: row versions, chunk attempts, dead letters."""
    return {
        "target": conn.execute("SELECT id, xmin::text FROM demo.customers ORDER BY id").fetchall(),
        "chunks": conn.execute(
            "SELECT chunk_id, status, attempts, rows_read, rows_written, rows_failed"
            " FROM parallel_batch.chunks WHERE job_key = %s ORDER BY position",
            (job_key,),
        ).fetchall(),
        "dead_letters": conn.execute(
            "SELECT item_key, attempts, xmin::text FROM parallel_batch.dead_letters"
            " WHERE job_key = %s ORDER BY item_key",
            (job_key,),
        ).fetchall(),
    }


def test_dag_shape_and_params() -> None:
    """Test that the DAG takes the contract's params and maps one pooled task per byte range."""
    dag = load_dag(DAG_ID)

    assert set(dag.params.keys()) >= CONTRACT_PARAMS
    defaults = dag.params.validate()
    assert defaults["target_table"] == "demo.customers"
    assert defaults["path"].endswith("/include/data/customers_sample.csv")
    assert defaults["enrich_url"] is None and defaults["job_key"] is None
    assert defaults["full_refresh"] is False
    # the README's defaults: one chunk task per 128 MiB, 10,000 records a batch
    assert defaults["chunk_bytes"] == 128 << 20 and defaults["batch_rows"] == 10_000
    assert defaults["chunks"] is None
    assert type(dag.timetable).__name__ == "NullTimetable"  # triggered, never scheduled
    process = dag.task_dict["customers.process"]
    assert process.partial_kwargs["pool"] == "parallel_batch"
    assert "chunk_id" in process.partial_kwargs["map_index_template"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "create_target",
        "customers.plan",
        "customers.process",
        "customers.summarize",
    ]
    assert all(task.retries >= 2 for task in dag.tasks)


@pytest.mark.slow
def test_load_rerun_and_full_refresh(
    parallel_batch_conn: str, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a run loads exactly the good records, a rerun nothing, a full refresh all again."""
    case = customers_csv(
        tmp_path / "customers.csv",
        5_000,
        bad_every=97,
        duplicates={10: None, 4000: 100, 2500: 2600, 97: None},
        bom=True,
    )
    dag = load_dag(DAG_ID)
    conf = {"path": str(case.path), "chunks": 5, "batch_rows": 400, "job_key": "csv-test"}

    first = run_dag(dag, conf)

    assert first.state == "success", first.tis
    assert target_rows(pg_conn) == case.expected_rows()
    assert_dead_letters(dead_letters(pg_conn, "csv-test"), case)
    stored = pg_conn.execute(
        "SELECT params->'spec'->'transform'->>'path', params->'spec'->'transform'->>'kind'"
        " FROM parallel_batch.jobs WHERE job_key = 'csv-test'"
    ).fetchone()
    # without enrichment the check runs over a batch's columns (bad emails refused by index)
    assert stored == ("include.transforms.customers:check_arrow", "arrow")
    chunk_ids = [entry["chunk"]["chunk_id"] for entry in first.xcom("customers.plan")]
    assert len(chunk_ids) == 5 and all(c.startswith("bytes[") for c in chunk_ids)
    assert [first.rendered_map_indexes[("customers.process", i)] for i in range(5)] == chunk_ids
    assert first.tries("customers.process") == [1] * 5
    summary = first.xcom("customers.summarize")
    assert (summary["rows_read"], summary["rows_written"], summary["dead_letters"]) == (
        case.records,
        len(case.rows),
        len(case.dead),
    )
    assert summary["rows_failed"] == len(case.dead) and summary["status"] == "completed"
    progress = state_store_values(first.run_id, "customers.process", "progress")
    assert sorted(p["chunk_id"] for p in progress.values()) == sorted(chunk_ids)
    claims = pg_conn.execute(
        "SELECT (SELECT count(*) FROM parallel_batch.key_claims),"
        " (SELECT count(*) FROM parallel_batch.range_claims)"
    ).fetchone()
    assert claims == (0, 0)  # forgotten once the job completed
    before = _snapshot(pg_conn, "csv-test")

    again = run_dag(dag, conf)

    assert again.state == "success", again.tis
    assert [c["skipped"] for c in again.mapped_xcoms("customers.process")] == [True] * 5
    assert again.xcom("customers.summarize")["rows_this_run"] == 0
    assert _snapshot(pg_conn, "csv-test") == before

    refreshed = run_dag(dag, {**conf, "chunks": 3, "full_refresh": True})

    assert refreshed.state == "success", refreshed.tis
    assert [c["skipped"] for c in refreshed.mapped_xcoms("customers.process")] == [False] * 3
    assert target_rows(pg_conn) == case.expected_rows()
    assert_dead_letters(dead_letters(pg_conn, "csv-test"), case)
    old = dict(before["target"])  # type: ignore[call-overload]
    new = dict(_snapshot(pg_conn, "csv-test")["target"])  # type: ignore[call-overload]
    assert new.keys() == old.keys() and all(new[k] != old[k] for k in new)
    assert refreshed.xcom("customers.summarize")["rows_read"] == case.records


@pytest.mark.slow
def test_enrichment_through_the_dag(
    parallel_batch_conn: str, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that segments come from the server, a flaky lookup is retried, a failing one is a
    dead letter, and no task has more than enrich_concurrency requests in flight."""
    case = customers_csv(tmp_path / "customers.csv", 800, bad_every=97)
    flaky, down = case.rows[5][2], case.rows[600][2]
    with SegmentServer(delay=0.005) as server:
        server.fail_first[flaky] = 2
        server.always_fail.add(down)
        result = run_dag(
            load_dag(DAG_ID),
            {
                "path": str(case.path),
                "chunks": 2,
                "batch_rows": 100,
                "job_key": "csv-enriched",
                "enrich_url": server.url,
                "enrich_concurrency": 3,
            },
        )

    assert result.state == "success", result.tis
    expected = [(*row, segment_of(row[2])) for i, row in sorted(case.rows.items()) if i != 600]
    assert target_rows(pg_conn) == expected
    assert server.requests[flaky] == 3
    assert server.requests[down] == 4  # the default max_attempts
    assert 1 < server.max_in_flight <= 3
    found = dead_letters(pg_conn, "csv-enriched")
    assert found.pop(case.lines[600])[0] == "EnrichmentServerError"
    assert_dead_letters(found, case)


def test_too_many_bad_records_fail_the_summary(
    parallel_batch_conn: str,
    pg_conn: psycopg.Connection,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Test that more dead letters than max_failed_ratio fail the run, saying how many and why."""
    case = customers_csv(tmp_path / "customers.csv", 200, bad_every=10)

    result = run_dag(
        load_dag(DAG_ID),
        {"path": str(case.path), "chunks": 1, "job_key": "csv-bad", "max_failed_ratio": 0.05},
    )

    assert result.state == "failed"
    assert result.tis[("customers.summarize", -1)] == ("failed", 1)  # no retry
    assert result.states("customers.process") == ["success"]
    out = capfd.readouterr().out
    assert "20 of 200 records (10.000%) of job 'csv-bad' ended in the dead letters" in out
    assert len(target_rows(pg_conn)) == 180


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (
            {"path": "/nonexistent/customers.csv"},
            "CSV file '/nonexistent/customers.csv' does not exist",
        ),
        ({"header": "id,name,mail\n"}, "Column 'mail' does not exist in table 'demo.customers'"),
        (
            {"target_table": "demo.other"},
            "Columns 'email', 'amount', 'note', 'created_at' do not exist in table 'demo.other'",
        ),
    ],
)
def test_bad_config_fails_the_plan_without_retry(
    parallel_batch_conn: str,
    pg_conn: psycopg.Connection,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    conf: dict[str, Any],
    message: str,
) -> None:
    """Test that a missing file, a wrong header or a target without the columns fail the plan
    at once."""
    path = tmp_path / "customers.csv"
    customers_csv(path, 10)
    if "header" in conf:
        path.write_text(conf.pop("header") + "1,a,b@c\n")
    if "target_table" in conf:  # exists, so the setup task keeps it as it is
        pg_conn.execute("CREATE SCHEMA demo")
        pg_conn.execute("CREATE TABLE demo.other (id bigint PRIMARY KEY, name text)")
    run_conf = {"path": str(path), **conf}

    result = run_dag(load_dag(DAG_ID), run_conf)

    assert result.state == "failed"
    assert result.tis[("customers.plan", -1)] == ("failed", 1)  # 2 retries configured, none used
    assert f"AirflowFailException: Invalid configuration: {message}" in capfd.readouterr().out
    assert pg_conn.execute("SELECT count(*) FROM parallel_batch.jobs").fetchone() == (0,)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"chunks": 0}, "chunks"),
        ({"chunk_bytes": -1}, "chunk_bytes"),
        ({"enrich_url": "ftp://example.com"}, "enrich_url"),
        ({"target_table": "demo.customers; DROP TABLE x"}, "target_table"),
    ],
)
def test_bad_conf_is_refused_before_the_run(
    parallel_batch_conn: str, conf: dict[str, object], message: str
) -> None:
    """Test that the Params' schema refuses a bad number, URL or identifier at trigger time."""
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=message):
        load_dag(DAG_ID).test(run_conf=conf)


_OPERATOR_DAG = """
import datetime as dt

from airflow.sdk import DAG

from parallel_batch.airflow.operators import PlanCsvJobOperator

with DAG(
    "csv_operator_checks",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    default_args={{"retries": 2, "retry_delay": dt.timedelta(seconds=1)}},
):
    PlanCsvJobOperator(
        task_id="plan",
        path={path!r},
        target_table="demo.customers",
        chunks={chunks!r},
    )
"""


def test_operator_checks_chunks_before_any_work(
    parallel_batch_conn: str,
    pg_conn: psycopg.Connection,
    tmp_dags_folder: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Test that the plan operator, used without Params, fails at once on chunks <= 0."""
    from airflow.dag_processing.dagbag import DagBag

    from parallel_batch.demo.tables import create_customers

    create_customers(pg_conn)
    path = tmp_path / "customers.csv"
    customers_csv(path, 10)
    (tmp_dags_folder / "csv_operator_checks.py").write_text(
        textwrap.dedent(_OPERATOR_DAG.format(path=str(path), chunks=0))
    )
    dag = DagBag(str(tmp_dags_folder)).get_dag("csv_operator_checks")

    result = run_dag(dag, {})

    assert result.tis[("plan", -1)] == ("failed", 1)
    out = capfd.readouterr().out
    assert (
        "AirflowFailException: Invalid configuration: chunks must be an integer greater "
        "than 0, got 0" in out
    )
    assert pg_conn.execute("SELECT count(*) FROM parallel_batch.jobs").fetchone() == (0,)
