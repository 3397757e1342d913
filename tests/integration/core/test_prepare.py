"""Tests of preparing batches where they are transformed (core.prepare), and of the runner's pool
path: crash and timeout isolation, a source that cannot be read, the readers' time zone."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parallel_batch.core.isolate_batches import CRASH_RETRY
from parallel_batch.core.prepare import BatchWork, prepare
from parallel_batch.core.runner import run_chunk
from parallel_batch.core.target import Target
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.sources import TableSource
from parallel_batch.sources.table.planner import TableChunk
from parallel_batch.sources.table.ranges import BatchRange
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.writer import write_rows
from tests.helpers.events_job import BATCH, TARGET, check_job, events_spec, plan, seed
from tests.integration.core.transforms import HANG_PREFIX, path

ROWS = 300
POISON_EVERY = 37
WHOLE = TableChunk(None, None, ROWS).to_dict()


@pytest.fixture
def events(pg_url: str) -> str:
    """A seeded demo.events with poison rows and an empty demo.events_enriched."""
    return seed(pg_url, ROWS, poison_every=POISON_EVERY)


def _work(url: str, transform: str = BATCH, kind: Any = "batch") -> BatchWork:
    source = TableSource("demo.events", "id").resolved(url)
    with psycopg.connect(url, autocommit=True) as conn:
        target = Target.resolve(conn, TARGET)
    return BatchWork(source.chunk_reader(url, WHOLE), TransformSpec(transform, kind), target)


def test_that_a_prepared_batch_holds_the_outputs_and_the_poison_rows(events: str) -> None:
    """Test that prepare reads a range, dead-letters its poison rows and encodes the rest."""
    work = _work(events)
    try:
        prepared = prepare(work, BatchRange(None, 100))
    finally:
        work.reader.close()
    with psycopg.connect(events, autocommit=True) as conn:
        with conn.transaction():
            write_rows(conn, TARGET, work.target.columns, prepared.data)
        (written,) = conn.execute("SELECT count(*) FROM demo.events_enriched").fetchone() or (0,)
    assert (prepared.read, prepared.position, prepared.filtered, prepared.fanout) == (
        100,
        100,
        0,
        0,
    )
    assert [letter.item_key for letter in prepared.letters] == ["37", "74"]
    assert {letter.error_type for letter in prepared.letters} == {"PoisonRowError"}
    assert len(prepared.data) == written == 98


def test_that_an_output_row_the_target_cannot_take_fails_alone(events: str) -> None:
    """Test that an output value of the wrong type becomes that row's dead letter, not the
    batch's, and the dead letter names the column."""
    work = _work(events, path("bad_amount_on_5"))
    try:
        prepared = prepare(work, BatchRange(None, 10))
    finally:
        work.reader.close()
    assert prepared.read == 10 and len(prepared.data) == 9
    (letter,) = prepared.letters
    assert letter.item_key == "5"
    # The column at fault is named, as for the values the target's checks refuse.
    assert "amount_cents" in letter.message, letter


def test_that_a_worker_hands_over_its_batch_s_claims_with_their_range_row_made(
    events: str,
) -> None:
    """Test that a batch prepared in a pool worker with a key to deduplicate comes back with its
    range claim's arrays already made there (the keys, the lines, and what each record became:
    -1 for the poison rows), so the parent's commit only sends them."""
    from parallel_batch.core.prepare import prepare_in_worker
    from parallel_batch.store.claim_ranges import Packed

    work = dataclasses.replace(_work(events), dedup_key="id")
    with WorkerPool(1) as pool:
        prepared = pool.submit(prepare_in_worker, work, BatchRange(None, 100)).result()
    assert prepared.claims is not None
    new, outputs = prepared.claims.plan.new, prepared.claims.outputs
    keys = ",".join(map(str, range(1, 101)))
    assert new._packed == Packed(
        "{" + keys + "}", "{" + ",".join(map(str, range(100))) + "}", 1, 100
    )
    assert outputs == {"37": -1, "74": -1}
    assert new._made is not None and new._made[0] == outputs
    assert (
        new._made[1] == "{" + ",".join("-1" if k in (37, 74) else "1" for k in range(1, 101)) + "}"
    )


def test_that_the_pool_path_matches_the_in_process_path(events: str) -> None:
    """Test that a chunk prepared in pool workers ends exactly as SQL computes it."""
    spec = events_spec(events, batch_rows=40)
    job = plan(events, "job", spec, chunks=2)
    with WorkerPool(2) as pool:
        summaries = [run_chunk(spec, "job", e, conninfo=events, pool=pool) for e in job.plan]
    with psycopg.connect(events, autocommit=True) as conn:
        check = check_job(conn, "job")
    assert check.exact, check
    assert sum(s.rows_read for s in summaries) == ROWS
    assert sum(s.rows_failed for s in summaries) == ROWS // POISON_EVERY


def test_that_a_row_that_hangs_is_cut_out_by_the_task_timeout(events: str) -> None:
    """Test that a batch past task_timeout is split until the hanging row is a TaskTimeoutError
    dead letter (after CRASH_RETRY's tries alone), and every other row is written."""
    with psycopg.connect(events, autocommit=True) as conn:
        conn.execute("UPDATE demo.events SET payload = %s WHERE id = 50", (f"{HANG_PREFIX} 50",))
    spec = events_spec(events, transform=path("enrich_or_hang"), batch_rows=16)
    entry = TableChunk(32, 64, 32).to_dict()  # the rows 33..64 only, in two batches
    with CheckpointStore.connect(events) as store:
        store.ensure_job("hang", kind="table", plan=[entry])
    with WorkerPool(2, task_timeout=1.0) as pool:
        summary = run_chunk(spec, "hang", entry, conninfo=events, pool=pool)
        timeouts = pool.statistics().timeouts
    with psycopg.connect(events, autocommit=True) as conn:
        letters = conn.execute(
            "SELECT item_key, error_type, attempts FROM parallel_batch.dead_letters"
            " WHERE job_key = 'hang'"
        ).fetchall()
        written = [i for (i,) in conn.execute("SELECT id FROM demo.events_enriched ORDER BY id")]
    assert sorted(letters) == [
        ("37", "PoisonRowError", 3),
        ("50", "TaskTimeoutError", CRASH_RETRY.max_attempts),
    ]
    assert written == [i for i in range(33, 65) if i not in (37, 50)]
    assert (summary.rows_read, summary.rows_failed) == (32, 2)
    assert summary.reconciles
    # the batch of 16, then the row alone, tried CRASH_RETRY.max_attempts times
    assert timeouts == 1 + CRASH_RETRY.max_attempts


def test_that_a_source_that_cannot_be_read_fails_the_chunk(events: str) -> None:
    """Test that a chunk whose source database cannot be reached raises, is marked failed with
    the error, and writes nothing."""
    spec = events_spec(events, batch_rows=100)
    job = plan(events, "job", spec, chunks=1)
    elsewhere = make_conninfo("", **{**conninfo_to_dict(events), "dbname": "pb_no_such_database"})
    with WorkerPool(1) as pool, pytest.raises(psycopg.OperationalError):
        run_chunk(spec, "job", job.plan[0], conninfo=events, source_conninfo=elsewhere, pool=pool)
    with CheckpointStore.connect(events) as store:
        (state,) = store.chunk_rows("job")
    assert (state.status, state.rows_read) == ("failed", 0)
    assert state.error is not None and "OperationalError" in state.error
    with psycopg.connect(events, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM demo.events_enriched").fetchone() == (0,)


def test_that_the_reader_session_is_in_utc(events: str) -> None:
    """Test that the reader's connection hands timestamptz values over in UTC whatever the
    session's TimeZone was."""
    tokyo = make_conninfo(events, options="-c TimeZone=Asia/Tokyo")
    reader = TableSource("demo.events", "id").resolved(tokyo).chunk_reader(tokyo, WHOLE)
    try:
        rows = reader.read(BatchRange(None, 1)).rows
    finally:
        reader.close()
    assert rows[0][4].tzinfo is dt.UTC
