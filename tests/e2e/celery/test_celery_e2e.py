"""``parallel_batch_table`` on a real CeleryExecutor: two workers, a killed worker, the scheduler's
own daily run, and a backfill of parallel runs (``pytest -k "celery and not compose"``).

The cluster (``conftest.py``) runs a copy of the project's DAGs; each test seeds tables of its own
schema in the cluster's data database. The expected target rows and dead letters are computed in
SQL (``tests/airflow/dagrun.py``), so every check is exact: nothing lost, nothing duplicated.
Which worker ran a task instance is its ``hostname`` in the REST API (``w1@<host>``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from parallel_batch.demo.events import seed_events
from parallel_batch.demo.tables import create_events_enriched
from parallel_batch.store.identifiers import table_sql
from tests.airflow.dagrun import bad_rows, dead_letters, mismatches
from tests.e2e.celery.conftest import WORKERS, Cluster, worker_of
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
PROCESS = "events.process"
# Seconds for the scheduler to create the run of the latest interval once the DAG is unpaused.
SCHEDULED_RUN_APPEARS = 60.0


def _ids_between(
    conn: psycopg.Connection, table: str, start: dt.datetime, end: dt.datetime
) -> set[int]:
    query = sql.SQL("SELECT id FROM {} WHERE created_at >= %s AND created_at < %s")
    return {int(i) for (i,) in conn.execute(query.format(table_sql(table)), (start, end))}


def _target_ids(conn: psycopg.Connection, table: str) -> set[int]:
    query = sql.SQL("SELECT id FROM {}").format(table_sql(table))
    return {int(i) for (i,) in conn.execute(query)}


def _mapped(tis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((ti for ti in tis if ti["task_id"] == PROCESS), key=lambda ti: ti["map_index"])


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def test_celery_scheduled_daily_run_processes_exactly_its_interval(
    celery: Cluster, db: psycopg.Connection
) -> None:
    """Test that the run the scheduler itself creates for the last day takes that day's rows only."""
    client = celery.client
    # The DAG's defaults: demo.events -> demo.events_enriched, created_at over the last 30 days.
    seed_events(db, 30_000, poison_every=POISON_EVERY)
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)  # catchup=False: the scheduler creates the latest interval's run
    deadline = time.monotonic() + SCHEDULED_RUN_APPEARS
    while not (runs := client.dag_runs(DAG_ID, run_type="scheduled")):
        assert time.monotonic() < deadline, "the scheduler created no run"
        time.sleep(1)
    (run,) = runs
    run = client.wait_for_run(DAG_ID, run["dag_run_id"])

    assert run["state"] == "success", client.task_instances(DAG_ID, run["dag_run_id"])
    start, end = _when(run["data_interval_start"]), _when(run["data_interval_end"])
    assert end - start == dt.timedelta(days=1)
    assert start.time() == dt.time(0) and start.tzinfo is not None
    in_interval = _ids_between(db, "demo.events", start, end)
    assert 500 < len(in_interval) < 1_500  # about a 30th of the rows
    bad = {int(k) for k in bad_rows(db, "demo.events")}
    assert _target_ids(db, "demo.events_enriched") == in_interval - bad
    job_key = f"{DAG_ID}:{start.isoformat()}/{end.isoformat()}"
    assert {int(k) for k in dead_letters(db, job_key)} == in_interval & bad
    job = db.execute(
        "SELECT status, rows_read, rows_written, rows_failed FROM parallel_batch.jobs"
        " WHERE job_key = %s",
        (job_key,),
    ).fetchone()
    assert job == ("completed", len(in_interval), len(in_interval - bad), len(in_interval & bad))
    (ti,) = _mapped(client.task_instances(DAG_ID, run["dag_run_id"]))
    assert worker_of(ti["hostname"]) in WORKERS


def test_celery_chunk_tasks_of_one_run_spread_over_both_workers(
    celery: Cluster, db: psycopg.Connection
) -> None:
    """Test that one run's chunk tasks run on both workers and write every row exactly once."""
    client = celery.client
    tables = Tables("celery_spread")
    rows, job_key = 40_000, "celery-spread"
    seed(db, tables, rows, poison_every=POISON_EVERY)
    conf = tables.conf(chunk_rows=5_000, batch_rows=250, workers=1, job_key=job_key)
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)

    run_id = client.trigger(DAG_ID, conf)
    run = client.wait_for_run(DAG_ID, run_id)

    assert run["state"] == "success", client.task_instances(DAG_ID, run_id)
    mapped = _mapped(client.task_instances(DAG_ID, run_id))
    assert [(ti["state"], ti["try_number"]) for ti in mapped] == [("success", 1)] * 8
    by_worker: dict[str, int] = {}
    for ti in mapped:
        by_worker[worker_of(ti["hostname"])] = by_worker.get(worker_of(ti["hostname"]), 0) + 1
    assert set(by_worker) == set(WORKERS), by_worker
    assert mismatches(db, tables.source, tables.target) == 0
    expected_dead = bad_rows(db, tables.source)
    assert dead_letters(db, job_key) == expected_dead
    assert dead_letter_count(db, job_key) == len(expected_dead)
    summary = client.xcom(DAG_ID, run_id, "events.summarize")
    assert (summary["rows_read"], summary["rows_failed"]) == (rows, len(expected_dead))
    assert summary["rows_written"] == rows - len(expected_dead)


SEED_START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SEED_DAYS = 6
BACKFILL_DAYS = [SEED_START + dt.timedelta(days=d) for d in (1, 2, 3)]


def _overlapping_runs(tis: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return pairs of runs with a chunk task of one running while one of the other ran."""
    pairs = set()
    for a in tis:
        for b in tis:
            if a["dag_run_id"] < b["dag_run_id"] and (
                _when(a["start_date"]) < _when(b["end_date"])
                and _when(b["start_date"]) < _when(a["end_date"])
            ):
                pairs.add((a["dag_run_id"], b["dag_run_id"]))
    return sorted(pairs)


def test_celery_backfill_runs_in_parallel_and_processes_each_day_once(
    celery: Cluster, db: psycopg.Connection
) -> None:
    """Test that a 3-day backfill with 3 active runs interleaves their chunk tasks on Celery and
    processes each day's rows exactly once."""
    client = celery.client
    tables = Tables("celery_backfill")
    rows_per_day = 12_000
    seed(db, tables, rows_per_day * SEED_DAYS, poison_every=199)
    source = table_sql(tables.source)
    # Row i at SEED_START + (i - 1) days / rows_per_day: each day gets exactly rows_per_day rows.
    db.execute(
        sql.SQL("UPDATE {} SET created_at = %s + (id - 1) * interval '1 day' / %s").format(source),
        (SEED_START, rows_per_day),
    )
    db.execute(sql.SQL("VACUUM ANALYZE {}").format(source))
    create_events_enriched(db, tables.target)  # before the runs' setup tasks race to create it
    # 4 chunks a day of 750 batches (transactions) each, about 3 s each: a run's chunks are still
    # running when the next run's setup and plan tasks are done. Shorter chunks let one run finish
    # before the next planned: 100 batches on a busy machine, and 300 batches (1.1-1.5 s each) in
    # one CI run, where the second run's first chunk started 0.45 s after the first run's last.
    conf = tables.conf(chunk_rows=3_000, batch_rows=4, workers=1)
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)

    client.cli(
        "backfill", "create", "--dag-id", DAG_ID,
        "--from-date", BACKFILL_DAYS[0].date().isoformat(),
        "--to-date", BACKFILL_DAYS[-1].date().isoformat(),
        "--max-active-runs", "3",
        "--dag-run-conf", json.dumps(conf),
    )  # fmt: skip
    runs = client.dag_runs(DAG_ID, run_type="backfill")
    finished = [client.wait_for_run(DAG_ID, run["dag_run_id"]) for run in runs]

    assert [run["state"] for run in finished] == ["success"] * 3, finished
    starts = sorted(_when(run["data_interval_start"]) for run in finished)
    assert starts == BACKFILL_DAYS
    chunk_tis = [
        ti for run in finished for ti in _mapped(client.task_instances(DAG_ID, run["dag_run_id"]))
    ]
    assert len(chunk_tis) == 3 * 4 and {ti["try_number"] for ti in chunk_tis} == {1}
    timeline = sorted(
        (ti["start_date"], ti["end_date"], ti["dag_run_id"][10:20], ti["hostname"])
        for ti in chunk_tis
    )
    assert _overlapping_runs(chunk_tis), f"the runs' chunk tasks never overlapped: {timeline}"
    assert {worker_of(ti["hostname"]) for ti in chunk_tis} == set(WORKERS)
    bad = {int(k) for k in bad_rows(db, tables.source)}
    expected_ids: set[int] = set()
    for start in BACKFILL_DAYS:
        end = start + dt.timedelta(days=1)
        ids = _ids_between(db, tables.source, start, end)
        assert len(ids) == rows_per_day
        expected_ids |= ids - bad
        job_key = f"{DAG_ID}:{start.isoformat()}/{end.isoformat()}"
        assert {int(k) for k in dead_letters(db, job_key)} == ids & bad
        assert dead_letter_count(db, job_key) == len(ids & bad)
        job = db.execute(
            "SELECT status, rows_read, rows_written FROM parallel_batch.jobs WHERE job_key = %s",
            (job_key,),
        ).fetchone()
        assert job == ("completed", rows_per_day, len(ids - bad))
    assert _target_ids(db, tables.target) == expected_ids  # a key twice would fail the upsert


def test_celery_killed_worker_task_resumes_on_the_other_worker(
    celery: Cluster, db: psycopg.Connection
) -> None:
    """Test that a chunk task whose worker is SIGKILLed is retried on the other worker, resumes
    from its checkpoint, and the run writes every row exactly once."""
    client, cluster = celery.client, celery.services
    tables = Tables("celery_kill")
    # One chunk of 1,000 small batches, each its own transaction: seconds of work, so the kill
    # lands mid-chunk.
    rows, job_key = 40_000, "celery-sigkill"
    seed(db, tables, rows, poison_every=POISON_EVERY)
    conf = tables.conf(chunks=1, batch_rows=40, workers=1, job_key=job_key)
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)

    run_id = client.trigger(DAG_ID, conf)
    ti, proc = wait_for_task_process(client, run_id, PROCESS, 0)
    victim = worker_of(ti["hostname"])
    assert proc in cluster.worker_process(victim).children(recursive=True)
    wait_for_chunk(
        celery.data_url,
        job_key,
        lambda c: c.status == "running" and c.alive and c.rows_read > 0,
        "running with a checkpoint",
        check=cluster.check_alive,
    )
    killed_tree = cluster.kill_worker(victim)  # the worker, its pool, the task and its workers
    assert wait_until_gone(killed_tree) == []
    killed = wait_for_chunk(
        celery.data_url,
        job_key,
        lambda c: not c.alive,
        "released by the killed attempt",
        timeout=60,
    )
    run = client.wait_for_run(DAG_ID, run_id)

    assert (killed.status, killed.attempts) == ("running", 1)
    assert 0 < killed.rows_read < rows
    assert run["state"] == "success", client.task_instances(DAG_ID, run_id)
    (retried,) = _mapped(client.task_instances(DAG_ID, run_id))
    assert (retried["state"], retried["try_number"]) == ("success", 2)
    (survivor,) = set(WORKERS) - {victim}
    assert worker_of(retried["hostname"]) == survivor
    summary = client.xcom(DAG_ID, run_id, PROCESS, 0)
    assert summary["attempt"] == 2
    assert summary["resumed_from"] == killed.last_key
    assert summary["rows_this_attempt"] == rows - killed.rows_read  # only the rest was read
    (chunk,) = chunk_states(celery.data_url, job_key)
    assert (chunk.status, chunk.attempts, chunk.rows_read) == ("completed", 2, rows)
    assert mismatches(db, tables.source, tables.target) == 0
    expected_dead = bad_rows(db, tables.source)
    assert dead_letters(db, job_key) == expected_dead
    assert dead_letter_count(db, job_key) == len(expected_dead)
    assert chunk.rows_written == rows - len(expected_dead)
