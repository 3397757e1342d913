"""Tests of preparing batches where they are transformed (batch_work) and of the runner's pool path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parallel_batch.core.batch_work import BatchWork, connect_reader, prepare_batch
from parallel_batch.core.row_isolation import DEFAULT_RETRY
from parallel_batch.core.runner import process_table_chunk, run_table_chunk
from parallel_batch.demo import events as demo
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.exceptions import BatchPrepareError
from parallel_batch.sources.table.planner import TableChunk
from parallel_batch.sources.table.ranges import BatchRange, RangeReader
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.writer import copy_format, write_rows
from tests.integration.hang_transform import HANG_PREFIX, enrich_or_hang
from tests.reliability.chunk_worker import check_job, events_spec, plan_job

ROWS = 300
POISON_EVERY = 37
WHOLE = TableChunk(None, None, ROWS)


@pytest.fixture
def events(pg_url: str) -> Iterator[str]:
    """A seeded demo.events with poison rows and an empty demo.events_enriched."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        demo.seed_events(conn, ROWS, poison_every=POISON_EVERY)
        demo.create_events_enriched(conn)
    yield pg_url


def _work(conn: psycopg.Connection, transform: Any = demo.enrich_events) -> BatchWork:
    reader = RangeReader.build(conn, demo.EVENTS_TABLE, demo.EVENTS_COLUMNS, "id", chunk=WHOLE)
    fmt = copy_format(conn, demo.ENRICHED_TABLE, demo.ENRICHED_COLUMNS)
    return BatchWork(None, reader, transform, DEFAULT_RETRY, fmt)


def test_that_a_prepared_batch_holds_the_outputs_and_the_poison_rows(events: str) -> None:
    """Test that prepare_batch reads a range, dead-letters its poison rows and encodes the rest."""
    with connect_reader(events, application_name="test") as conn:
        prepared = prepare_batch(_work(conn), conn, BatchRange(None, 100))
        with conn.transaction():
            write_rows(conn, demo.ENRICHED_TABLE, demo.ENRICHED_COLUMNS, prepared.data)
        (written,) = conn.execute("SELECT count(*) FROM demo.events_enriched").fetchone() or (0,)
    assert prepared.rows_read == 100
    assert [f.row[0] for f in prepared.failures] == [37, 74]
    assert {f.error_type for f in prepared.failures} == {"PoisonRowError"}
    assert len(prepared.data) == written == 98


def _bad_amount(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Enriches, but gives row 5 an amount_cents the bigint column cannot take."""
    return [(*out[:3], "lots", out[4]) if out[0] == 5 else out for out in demo.enrich_events(rows)]


def test_that_an_output_row_the_target_cannot_take_fails_alone(events: str) -> None:
    """Test that an output value of the wrong type becomes that row's failure, not the batch's."""
    with connect_reader(events, application_name="test") as conn:
        prepared = prepare_batch(_work(conn, _bad_amount), conn, BatchRange(None, 10))
    assert prepared.rows_read == 10 and len(prepared.data) == 9
    (failure,) = prepared.failures
    assert failure.row[0] == 5
    assert failure.attempts == 1
    assert failure.message.startswith("the transform's output cannot be written to the target")


def test_that_the_pool_path_matches_the_in_process_path(events: str) -> None:
    """Test that a chunk prepared in pool workers ends exactly as SQL computes it."""
    spec = events_spec(batch_rows=40)
    job = plan_job(events, "job", spec, chunks=2)
    with WorkerPool(2) as pool:
        summaries = [
            run_table_chunk(
                events, "job", TableChunk.from_dict(entry), spec, demo.enrich_events, pool=pool
            )
            for entry in job.plan
        ]
    with psycopg.connect(events, autocommit=True) as conn:
        check = check_job(conn, "job")
    assert check.exact, check
    assert sum(s.rows_read for s in summaries) == ROWS
    assert sum(s.rows_failed for s in summaries) == ROWS // POISON_EVERY


def test_that_a_row_that_hangs_is_cut_out_by_the_task_timeout(events: str) -> None:
    """Test that a batch past task_timeout is split until the hanging row is a TaskTimeoutError
    dead letter, and every other row is written."""
    with psycopg.connect(events, autocommit=True) as conn:
        conn.execute("UPDATE demo.events SET payload = %s WHERE id = 50", (f"{HANG_PREFIX} 50",))
    spec = events_spec(batch_rows=16)
    plan_job(events, "job", spec, chunks=1)
    chunk = TableChunk(32, 64, 32)  # the rows 33..64 only, in two batches
    with CheckpointStore.connect(events) as store:
        store.ensure_job("hang", kind="table", plan=[{**chunk.to_dict()}])
    with WorkerPool(2, task_timeout=2.0) as pool:
        summary = run_table_chunk(events, "hang", chunk, spec, enrich_or_hang, pool=pool)
        timeouts = pool.statistics().timeouts
    with psycopg.connect(events, autocommit=True) as conn:
        letters = conn.execute(
            "SELECT item_key, error_type FROM parallel_batch.dead_letters WHERE job_key = 'hang'"
        ).fetchall()
        written = [i for (i,) in conn.execute("SELECT id FROM demo.events_enriched ORDER BY id")]
    assert sorted(letters) == [("37", "PoisonRowError"), ("50", "TaskTimeoutError")]
    assert written == [i for i in range(33, 65) if i not in (37, 50)]
    assert (summary.rows_read, summary.rows_failed) == (32, 2)
    assert timeouts == 2  # the batch of 16, then the row alone


def test_that_a_worker_that_cannot_read_fails_the_chunk(events: str) -> None:
    """Test that a worker failing for another reason than a row raises BatchPrepareError, marks
    the chunk failed and writes nothing."""
    spec = events_spec(batch_rows=100)
    job = plan_job(events, "job", spec, chunks=1)
    chunk = TableChunk.from_dict(job.plan[0])
    elsewhere = make_conninfo("", **{**conninfo_to_dict(events), "dbname": "pb_no_such_database"})
    with (
        CheckpointStore.connect(events) as store,
        connect_reader(events, application_name="test") as read_conn,
        WorkerPool(1) as pool,
        pytest.raises(BatchPrepareError, match="OperationalError"),
    ):
        process_table_chunk(
            store, read_conn, "job", chunk, spec, demo.enrich_events, conninfo=elsewhere, pool=pool
        )
    with CheckpointStore.connect(events) as store:
        (state,) = store.chunk_rows("job")
    assert (state.status, state.rows_read) == ("failed", 0)
    assert state.error is not None and "BatchPrepareError" in state.error


def test_that_a_pool_needs_conninfo(events: str) -> None:
    """Test that process_table_chunk refuses a pool without the conninfo its workers need."""
    spec = events_spec()
    with (
        CheckpointStore.connect(events) as store,
        connect_reader(events, application_name="test") as read_conn,
        WorkerPool(1) as pool,
        pytest.raises(ValueError, match="a pool's workers read their batches themselves"),
    ):
        process_table_chunk(store, read_conn, "job", WHOLE, spec, demo.enrich_events, pool=pool)


def test_that_the_reader_session_is_in_utc(events: str) -> None:
    """Test that the reader's connection hands timestamptz values over in UTC whatever the
    session's TimeZone was."""
    tokyo = make_conninfo(events, options="-c TimeZone=Asia/Tokyo")
    with connect_reader(tokyo, application_name="test") as conn:
        rows = RangeReader.build(
            conn, demo.EVENTS_TABLE, demo.EVENTS_COLUMNS, "id", chunk=WHOLE
        ).rows(conn, BatchRange(None, 1))
    assert rows[0][4].tzinfo is dt.UTC
