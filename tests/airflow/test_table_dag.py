"""dag.test() runs of dags/parallel_batch_table.py on a real PostgreSQL.

The DAG's transform is the demo's: a ``poison:`` row fails every attempt, a ``crash:`` row kills
the worker process that handles it; both must end in the dead letters while the run succeeds.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from parallel_batch.demo import events as demo
from parallel_batch.demo.tables import create_events_enriched
from tests.airflow.dagrun import (
    bad_rows,
    dead_letters,
    load_dag,
    mismatches,
    run_dag,
    state_store_values,
)

ROWS = 20_000
POISON_EVERY = 997
CRASH_EVERY = 4_999
# 4 chunks of 5,000 rows in batches of 1,000; the whole table (no interval) unless a test says.
CONF = {"chunk_rows": 5_000, "batch_rows": 1_000, "workers": 2, "interval_column": None}


@pytest.fixture
def without_pool() -> Iterator[None]:
    """Remove the `parallel_batch` Airflow pool for the test (dag.test() ignores pools)."""
    from airflow.models.pool import Pool

    pool = Pool.get_pool("parallel_batch")
    if pool is not None:
        Pool.delete_pool("parallel_batch")
    assert Pool.get_pool("parallel_batch") is None
    try:
        yield
    finally:
        if pool is not None:
            Pool.create_or_update_pool(
                "parallel_batch", pool.slots, pool.description or "", pool.include_deferred
            )


def _snapshot(conn: psycopg.Connection, job_key: str) -> dict[str, object]:
    """What a rerun must leave alone: the target rows' versions, chunk attempts, dead letters."""
    return {
        "target_xmins": conn.execute(
            "SELECT id, xmin::text FROM demo.events_enriched ORDER BY id"
        ).fetchall(),
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


@pytest.mark.slow
def test_run_rerun_and_full_refresh(parallel_batch_conn: str, pg_conn: psycopg.Connection) -> None:
    """Test that a run writes each row once, a rerun writes nothing, a full refresh redoes all."""
    demo.seed_events(pg_conn, ROWS, poison_every=POISON_EVERY, crash_every=CRASH_EVERY)
    dag = load_dag("parallel_batch_table")
    conf = {**CONF, "job_key": "events-test"}

    first = run_dag(dag, conf)

    assert first.state == "success", first.tis
    assert mismatches(pg_conn) == 0
    expected_dead = bad_rows(pg_conn)
    assert len(expected_dead) == ROWS // POISON_EVERY + ROWS // CRASH_EVERY
    assert dead_letters(pg_conn, "events-test") == expected_dead
    chunk_ids = ["(-inf,5000]", "(5000,10000]", "(10000,15000]", "(15000,+inf]"]
    assert [entry["chunk"]["chunk_id"] for entry in first.xcom("events.plan")] == chunk_ids
    assert [first.rendered_map_indexes[("events.process", i)] for i in range(4)] == chunk_ids
    assert first.tries("events.process") == [1, 1, 1, 1]
    chunks = first.mapped_xcoms("events.process")
    assert [c["skipped"] for c in chunks] == [False] * 4
    assert all(c["rows_read"] == c["rows_written"] + c["rows_failed"] for c in chunks)
    summary = first.xcom("events.summarize")
    assert summary["rows_read"] == ROWS
    assert summary["rows_written"] == ROWS - len(expected_dead)
    assert summary["dead_letters"] == summary["rows_failed"] == len(expected_dead)
    assert summary["rows_this_run"] == ROWS
    progress = state_store_values(first.run_id, "events.process", "progress")
    assert sorted(p["chunk_id"] for p in progress.values()) == sorted(chunk_ids)
    assert {p["state"] for p in progress.values()} == {"completed"}
    before = _snapshot(pg_conn, "events-test")

    again = run_dag(dag, conf)

    assert again.state == "success", again.tis
    assert [c["skipped"] for c in again.mapped_xcoms("events.process")] == [True] * 4
    assert again.xcom("events.summarize")["rows_this_run"] == 0
    assert _snapshot(pg_conn, "events-test") == before

    refreshed = run_dag(dag, {**conf, "full_refresh": True})

    assert refreshed.state == "success", refreshed.tis
    assert mismatches(pg_conn) == 0
    assert dead_letters(pg_conn, "events-test") == expected_dead
    after = _snapshot(pg_conn, "events-test")
    old_versions = dict(before["target_xmins"])  # type: ignore[call-overload]
    new_versions = dict(after["target_xmins"])  # type: ignore[call-overload]
    assert new_versions.keys() == old_versions.keys()  # the same rows, none twice ...
    assert all(new_versions[k] != old_versions[k] for k in new_versions)  # ... all rewritten
    assert [c["skipped"] for c in refreshed.mapped_xcoms("events.process")] == [False] * 4
    assert refreshed.xcom("events.summarize")["rows_read"] == ROWS


def test_interval_run_processes_only_its_interval(
    parallel_batch_conn: str, pg_conn: psycopg.Connection, without_pool: None
) -> None:
    """Test that a run given an interval processes exactly the rows whose created_at is in it.

    The `parallel_batch` pool is missing meanwhile: dag.test() runs pooled tasks regardless.
    """
    demo.seed_events(pg_conn, 3_000, poison_every=97)
    start, end = pg_conn.execute(
        "SELECT min(created_at) + interval '10 days', min(created_at) + interval '13 days'"
        " FROM demo.events"
    ).fetchone()  # type: ignore[misc]
    conf = {
        **CONF,
        "chunk_rows": 150,
        "workers": 1,
        "interval_column": "created_at",
        "interval_start": start.isoformat(),
        "interval_end": end.isoformat(),
    }

    result = run_dag(load_dag("parallel_batch_table"), conf)

    assert result.state == "success", result.tis
    in_interval = {
        id_
        for (id_,) in pg_conn.execute(
            "SELECT id FROM demo.events WHERE created_at >= %s AND created_at < %s", (start, end)
        )
    }
    assert 250 < len(in_interval) < 350  # 3 of the 30 days
    poison = {int(k) for k in bad_rows(pg_conn)} & in_interval
    written = {id_ for (id_,) in pg_conn.execute("SELECT id FROM demo.events_enriched")}
    assert written == in_interval - poison
    job_key = result.xcom("events.summarize")["job_key"]
    assert job_key.startswith("parallel_batch_table:manual__")
    assert {int(k) for k in dead_letters(pg_conn, job_key)} == poison
    assert result.xcom("events.summarize")["rows_read"] == len(in_interval)


def test_empty_interval_succeeds_with_nothing_to_do(
    parallel_batch_conn: str, pg_conn: psycopg.Connection
) -> None:
    """Test that an interval without rows plans no chunk and the run still succeeds."""
    demo.seed_events(pg_conn, 100)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    conf = {
        "interval_column": "created_at",
        "interval_start": future.isoformat(),
        "interval_end": (future + dt.timedelta(days=1)).isoformat(),
        "job_key": "empty-interval",
    }

    result = run_dag(load_dag("parallel_batch_table"), conf)

    assert result.state == "success", result.tis
    assert result.xcom("events.plan") == []
    assert result.states("events.process") == ["skipped"]
    summary = result.xcom("events.summarize")
    assert (summary["chunks"], summary["rows_read"], summary["status"]) == (0, 0, "completed")
    assert pg_conn.execute("SELECT count(*) FROM demo.events_enriched").fetchone() == (0,)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"source_table": "demo.missing"}, "Table 'demo.missing' does not exist"),
        ({"key_column": "user_id"}, "Key column 'user_id' of 'demo.events' is not unique"),
        (
            {"interval_column": "payload", "interval_start": "2024-01-01T00:00:00+00:00"},
            "interval_column 'payload' of 'demo.events' is a text",
        ),
    ],
)
def test_bad_config_fails_the_plan_without_retry(
    parallel_batch_conn: str,
    pg_conn: psycopg.Connection,
    capfd: pytest.CaptureFixture[str],
    conf: dict[str, object],
    message: str,
) -> None:
    """Test that a config the database refutes fails the plan task at once, with its message."""
    demo.seed_events(pg_conn, 10)

    result = run_dag(load_dag("parallel_batch_table"), conf)

    assert result.state == "failed"
    assert result.tis[("events.plan", -1)] == ("failed", 1)  # 2 retries configured, none used
    assert result.states("events.process") == ["upstream_failed"]
    assert f"AirflowFailException: Invalid configuration: {message}" in capfd.readouterr().out
    assert pg_conn.execute("SELECT count(*) FROM parallel_batch.jobs").fetchone() == (0,)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"source_table": "demo.events; DROP TABLE demo.events"}, "source_table"),
        ({"batch_rows": -5}, "batch_rows"),
        ({"max_failed_ratio": 2}, "max_failed_ratio"),
    ],
)
def test_bad_conf_is_refused_before_the_run(
    parallel_batch_conn: str, conf: dict[str, object], message: str
) -> None:
    """Test that the Params' schema refuses an unsafe identifier or a bad number at trigger time."""
    from airflow.sdk.exceptions import ParamValidationError

    dag = load_dag("parallel_batch_table")

    with pytest.raises(ParamValidationError, match=message):
        dag.test(run_conf=conf)


_OPERATOR_DAG = """
import datetime as dt

from airflow.sdk import DAG

from parallel_batch.airflow.operators import PlanTableJobOperator

with DAG(
    "operator_checks",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    default_args={{"retries": 2, "retry_delay": dt.timedelta(seconds=1)}},
):
    PlanTableJobOperator(
        task_id="plan",
        source_table={source_table!r},
        target_table="demo.events_enriched",
        transform="include.transforms.events:enrich_events",
        transform_kind="batch",
        batch_rows={batch_rows!r},
    )
"""


@pytest.mark.parametrize(
    ("source_table", "batch_rows", "message"),
    [
        ('demo.events"; DROP TABLE x; --', 1000, "Invalid table name"),
        ("demo.events", -1, "batch_rows must be an integer greater than 0, got -1"),
    ],
)
def test_operator_checks_values_before_any_work(
    parallel_batch_conn: str,
    pg_conn: psycopg.Connection,
    tmp_dags_folder: Path,
    capfd: pytest.CaptureFixture[str],
    source_table: str,
    batch_rows: int,
    message: str,
) -> None:
    """Test that the plan operator, used without Params, fails at once on an unsafe or bad value."""
    from airflow.dag_processing.dagbag import DagBag

    demo.seed_events(pg_conn, 10)
    create_events_enriched(pg_conn)
    (tmp_dags_folder / "operator_checks.py").write_text(
        textwrap.dedent(_OPERATOR_DAG.format(source_table=source_table, batch_rows=batch_rows))
    )
    dag = DagBag(str(tmp_dags_folder)).get_dag("operator_checks")

    result = run_dag(dag, {})

    assert result.tis[("plan", -1)] == ("failed", 1)
    out = capfd.readouterr().out
    assert "AirflowFailException: Invalid configuration: " in out
    assert message in out
    assert pg_conn.execute("SELECT count(*) FROM parallel_batch.jobs").fetchone() == (0,)
