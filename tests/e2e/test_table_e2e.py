"""End-to-end runs of ``dags/parallel_batch_table.py`` on a real scheduler (LocalExecutor).

The session's Airflow (``tests/e2e/conftest.py``) runs a copy of the project's DAG; its
``parallel_batch_default`` connection is the session database, where each test seeds tables of
its own schema. The expected target rows and dead letters are computed in SQL
(``tests/airflow/dagrun.py``), so every check is exact: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from parallel_batch.store.identifiers import table_sql
from tests.airflow.dagrun import bad_rows, dead_letters, mismatches
from tests.e2e.conftest import AirflowClient
from tests.e2e.table_helpers import (
    DAG_ID,
    Tables,
    chunk_states,
    dead_letter_count,
    seed,
    wait_for_chunk,
    wait_for_task_process,
    wait_until_gone,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POISON_EVERY = 997
# Two crash rows in 20,000: isolating one costs several worker restarts (seconds each).
CRASH_EVERY = 9_999


@pytest.fixture
def table_dag(airflow: AirflowClient) -> AirflowClient:
    """The session's Airflow, with ``parallel_batch_table`` parsed and unpaused."""
    airflow.wait_for_dag(DAG_ID)
    airflow.unpause(DAG_ID)
    return airflow


@pytest.fixture
def db(e2e_db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the session database (behind ``parallel_batch_default``)."""
    with psycopg.connect(e2e_db_url, autocommit=True) as conn:
        yield conn


def test_rest_trigger_with_conf_maps_one_task_per_chunk(
    table_dag: AirflowClient, db: psycopg.Connection
) -> None:
    """Test that a REST trigger with a conf processes every row once, one mapped task per chunk."""
    tables = Tables("e2e_trigger")
    rows = 20_000
    seed(db, tables, rows, poison_every=POISON_EVERY, crash_every=CRASH_EVERY)
    conf = tables.conf(chunk_rows=5_000, batch_rows=1_000, workers=2, job_key="e2e-trigger")

    run_id = table_dag.trigger(DAG_ID, conf)
    run = table_dag.wait_for_run(DAG_ID, run_id)

    assert run["state"] == "success", table_dag.task_instances(DAG_ID, run_id)
    assert run["run_type"] == "manual"
    assert run["conf"] == conf
    assert mismatches(db, tables.source, tables.target) == 0
    expected_dead = bad_rows(db, tables.source)
    assert len(expected_dead) == rows // POISON_EVERY + rows // CRASH_EVERY
    assert dead_letters(db, "e2e-trigger") == expected_dead
    assert dead_letter_count(db, "e2e-trigger") == len(expected_dead)
    chunk_ids = ["(-inf,5000]", "(5000,10000]", "(10000,15000]", "(15000,+inf]"]
    plan = table_dag.xcom(DAG_ID, run_id, "events.plan")
    assert [entry["chunk"]["chunk_id"] for entry in plan] == chunk_ids
    mapped = sorted(
        (
            ti
            for ti in table_dag.task_instances(DAG_ID, run_id)
            if ti["task_id"] == "events.process"
        ),
        key=lambda ti: ti["map_index"],
    )
    assert [ti["map_index"] for ti in mapped] == [0, 1, 2, 3]
    assert [ti["rendered_map_index"] for ti in mapped] == chunk_ids
    assert [(ti["state"], ti["try_number"]) for ti in mapped] == [("success", 1)] * 4
    summaries = [table_dag.xcom(DAG_ID, run_id, "events.process", i) for i in range(4)]
    assert [s["chunk_id"] for s in summaries] == chunk_ids
    assert sum(s["rows_read"] for s in summaries) == rows
    summary = table_dag.xcom(DAG_ID, run_id, "events.summarize")
    assert summary["job_key"] == "e2e-trigger"
    assert (summary["rows_read"], summary["rows_failed"]) == (rows, len(expected_dead))
    assert summary["rows_written"] == rows - len(expected_dead)


# The seeded days, and the backfill's days among them (the days around them no run may touch).
SEED_START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SEED_DAYS = 6
BACKFILL_DAYS = [SEED_START + dt.timedelta(days=d) for d in (1, 2, 3)]


def test_backfill_runs_process_exactly_their_day(
    table_dag: AirflowClient, db: psycopg.Connection
) -> None:
    """Test that `airflow backfill create` over 3 days runs 3 jobs, each on exactly its day's rows."""
    tables = Tables("e2e_backfill")
    rows_per_day = 1_000
    seed(db, tables, rows_per_day * SEED_DAYS, poison_every=199)
    source = table_sql(tables.source)
    # Row i at SEED_START + (i - 1) days / rows_per_day: each day gets exactly rows_per_day rows,
    # the first of them exactly at midnight (a half-open interval's start belongs to it).
    db.execute(
        sql.SQL("UPDATE {} SET created_at = %s + (id - 1) * interval '1 day' / %s").format(source),
        (SEED_START, rows_per_day),
    )
    db.execute(sql.SQL("VACUUM ANALYZE {}").format(source))
    # The rows the backfill must process and nothing else, for mismatches() to compare with.
    in_days = f"{tables.schema}.events_in_backfill"
    db.execute(
        sql.SQL(
            "CREATE VIEW {} AS SELECT * FROM {} WHERE created_at >= {} AND created_at < {}"
        ).format(
            table_sql(in_days),
            source,
            sql.Literal(BACKFILL_DAYS[0]),
            sql.Literal(BACKFILL_DAYS[-1] + dt.timedelta(days=1)),
        )
    )
    conf = tables.conf(chunk_rows=500, batch_rows=100, workers=1)

    table_dag.cli(
        "backfill", "create", "--dag-id", DAG_ID,
        "--from-date", BACKFILL_DAYS[0].date().isoformat(),
        "--to-date", BACKFILL_DAYS[-1].date().isoformat(),
        "--dag-run-conf", json.dumps(conf),
    )  # fmt: skip
    runs = table_dag.dag_runs(DAG_ID, run_type="backfill")
    finished = [table_dag.wait_for_run(DAG_ID, run["dag_run_id"]) for run in runs]

    assert [run["state"] for run in finished] == ["success"] * 3, finished
    starts = sorted(dt.datetime.fromisoformat(run["data_interval_start"]) for run in finished)
    assert starts == BACKFILL_DAYS
    assert mismatches(db, in_days, tables.target) == 0
    outside = db.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE created_at < %s OR created_at >= %s").format(
            table_sql(tables.target)
        ),
        (BACKFILL_DAYS[0], BACKFILL_DAYS[-1] + dt.timedelta(days=1)),
    ).fetchone()
    assert outside == (0,)
    bad = {int(k) for k in bad_rows(db, tables.source)}
    expected_jobs = []
    for start in BACKFILL_DAYS:
        end = start + dt.timedelta(days=1)
        ids = {
            id_
            for (id_,) in db.execute(
                sql.SQL("SELECT id FROM {} WHERE created_at >= %s AND created_at < %s").format(
                    source
                ),
                (start, end),
            )
        }
        assert len(ids) == rows_per_day
        job_key = f"{DAG_ID}:{start.isoformat()}/{end.isoformat()}"
        expected_jobs.append((job_key, "completed", rows_per_day, len(ids - bad), len(ids & bad)))
        assert {int(k) for k in dead_letters(db, job_key)} == ids & bad
        assert dead_letter_count(db, job_key) == len(ids & bad)
    jobs = db.execute(
        "SELECT job_key, status, rows_read, rows_written, rows_failed FROM parallel_batch.jobs"
        " WHERE source = %s ORDER BY job_key",
        (tables.source,),
    ).fetchall()
    assert jobs == expected_jobs


def test_sigkill_of_a_chunk_task_resumes_from_its_checkpoint(
    table_dag: AirflowClient, db: psycopg.Connection, e2e_db_url: str
) -> None:
    """Test that a SIGKILLed chunk task is retried by Airflow and resumes from its checkpoint."""
    tables = Tables("e2e_kill")
    # One chunk of 1,000 small batches, each its own transaction: seconds of work however fast
    # a batch gets, so the kill lands mid-chunk. No crash rows (the first test has them):
    # isolating one costs worker restarts, a second or so apiece.
    rows = 40_000
    job_key = "e2e-sigkill"
    seed(db, tables, rows, poison_every=POISON_EVERY)
    conf = tables.conf(chunks=1, batch_rows=40, workers=1, job_key=job_key)

    run_id = table_dag.trigger(DAG_ID, conf)
    ti, proc = wait_for_task_process(table_dag, run_id, "events.process", 0)
    wait_for_chunk(
        e2e_db_url,
        job_key,
        lambda c: c.status == "running" and c.alive and c.rows_read > 0,
        "running with a checkpoint",
        check=table_dag.airflow.check_alive,
    )
    tree = [proc, *proc.children(recursive=True)]
    os.kill(proc.pid, signal.SIGKILL)
    assert wait_until_gone(tree) == []  # the task process and its worker processes
    # The killed attempt's session ends with it (its lock is free); what it committed stays.
    killed = wait_for_chunk(
        e2e_db_url, job_key, lambda c: not c.alive, "released by the killed attempt", timeout=60
    )
    run = table_dag.wait_for_run(DAG_ID, run_id)

    assert killed.holder is not None
    assert f"{DAG_ID}/{run_id}/events.process[0] try 1" in killed.holder
    assert (killed.status, killed.attempts) == ("running", 1)
    assert 0 < killed.rows_read < rows
    assert run["state"] == "success", table_dag.task_instances(DAG_ID, run_id)
    (retried,) = [
        ti for ti in table_dag.task_instances(DAG_ID, run_id) if ti["task_id"] == "events.process"
    ]
    assert (retried["state"], retried["try_number"]) == ("success", 2)
    assert retried["pid"] != ti["pid"]
    summary = table_dag.xcom(DAG_ID, run_id, "events.process", 0)
    assert summary["attempt"] == 2
    assert summary["resumed_from"] == killed.last_key
    assert summary["rows_this_attempt"] == rows - killed.rows_read
    (chunk,) = chunk_states(e2e_db_url, job_key)
    assert (chunk.status, chunk.attempts, chunk.rows_read) == ("completed", 2, rows)
    assert mismatches(db, tables.source, tables.target) == 0
    expected_dead = bad_rows(db, tables.source)
    assert dead_letters(db, job_key) == expected_dead
    assert dead_letter_count(db, job_key) == len(expected_dead)
    assert chunk.rows_failed == len(expected_dead)
    assert chunk.rows_written == rows - len(expected_dead)
