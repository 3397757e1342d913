"""Tests of the chunk runner: exactly-once output, dead letters, resume, skip, refresh, races."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest

from parallel_batch.core.job import ChunkSummary
from parallel_batch.core.runner import run_chunk
from parallel_batch.core.transforms import DEFAULT_RETRY
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.progress import ProgressSnapshot
from parallel_batch.exceptions import LeaseLostError
from parallel_batch.sources.table.planner import RowFilter
from parallel_batch.store.checkpoints import CheckpointStore
from tests.helpers.events_job import check_job, events_spec, plan, run_job, seed
from tests.integration.core import transforms

ROWS = 2_000
POISON_EVERY = 97


@pytest.fixture
def events(pg_url: str) -> str:
    """A seeded demo.events with poison rows and an empty demo.events_enriched."""
    return seed(pg_url, ROWS, poison_every=POISON_EVERY)


def _check(url: str, job_key: str | None = "job") -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        return check_job(conn, job_key)


def _entries(url: str, job_key: str = "job") -> list[dict[str, Any]]:
    with CheckpointStore.connect(url) as store:
        job = store.get_job(job_key)
    assert job is not None
    return job.plan


@pytest.mark.parametrize("read_ahead", [0, 1])
def test_that_a_job_writes_every_row_once_and_dead_letters_the_poison(
    events: str, read_ahead: int
) -> None:
    """Test that running every chunk puts each good row in the target and each poison row in the
    dead letters, with the reason."""
    spec = events_spec(events, batch_rows=300)
    plan(events, "job", spec, chunks=3)
    summaries = run_job(events, "job", spec, read_ahead=read_ahead)
    check = _check(events)
    assert check.exact, check
    assert sum(s.rows_read for s in summaries) == ROWS
    assert sum(s.rows_failed for s in summaries) == ROWS // POISON_EVERY
    assert all(s.reconciles and not s.skipped and s.resumed_from is None for s in summaries)
    with psycopg.connect(events, autocommit=True) as conn:
        letters = conn.execute(
            "SELECT DISTINCT attempts, error_type, message FROM parallel_batch.dead_letters"
            " WHERE item_key = %s",
            (str(POISON_EVERY),),
        ).fetchall()
        payload = conn.execute(
            "SELECT payload->>'payload' FROM parallel_batch.dead_letters LIMIT 1"
        ).fetchone()
        attempts = conn.execute("SELECT DISTINCT attempts FROM parallel_batch.dead_letters")
        assert attempts.fetchall() == [(DEFAULT_RETRY.max_attempts,)]
    assert letters == [
        (DEFAULT_RETRY.max_attempts, "PoisonRowError", f"event {POISON_EVERY} is a poison row")
    ]
    assert payload is not None and payload[0].startswith("poison:")


def test_that_completed_chunks_are_skipped(events: str) -> None:
    """Test that running a completed job again skips every chunk and writes nothing more."""
    spec = events_spec(events)
    plan(events, "job", spec, chunks=2)
    first = run_job(events, "job")
    again = run_job(events, "job")
    assert [s.skipped for s in again] == [True, True]
    assert [s.rows_this_attempt for s in again] == [0, 0]
    assert [(s.rows_read, s.rows_written) for s in again] == [
        (s.rows_read, s.rows_written) for s in first
    ]
    assert _check(events).exact


def test_that_a_died_attempt_resumes_after_its_last_checkpoint(events: str) -> None:
    """Test that after an attempt dies mid-chunk, the next one starts after the last committed key."""
    spec = events_spec(events, batch_rows=250)
    plan(events, "job", spec, chunks=1)
    (entry,) = _entries(events)
    dying = events_spec(
        events,
        transform=transforms.path("abort_on_batch"),
        batch_rows=250,
        kwargs={"fail_on": 4, "batch_rows": 250},
    )
    transforms.calls.clear()
    with pytest.raises(transforms.Abort):
        run_chunk(dying, "job", entry, conninfo=events, read_ahead=0)
    with CheckpointStore.connect(events) as store:
        (state,) = store.chunk_rows("job")
    assert (state.status, state.rows_read, state.last_key) == ("failed", 750, 750)
    assert state.error is not None and "the attempt dies here" in state.error
    summary = run_chunk(spec, "job", entry, conninfo=events)
    assert summary.resumed_from == state.last_key
    assert summary.rows_this_attempt == ROWS - 750
    assert (summary.rows_read, summary.attempt) == (ROWS, 2)
    assert summary.reconciles
    assert _check(events).exact


def test_that_a_full_refresh_replaces_the_output_without_duplicates(events: str) -> None:
    """Test that full_refresh reprocesses changed source rows into the target with no duplicates."""
    spec = events_spec(events)
    plan(events, "job", spec, chunks=2)
    run_job(events, "job")
    with psycopg.connect(events, autocommit=True) as conn:
        conn.execute("UPDATE demo.events SET payload = payload || '!' WHERE id % 10 = 0")
        conn.execute("UPDATE demo.events SET payload = 'fixed' WHERE id = %s", (POISON_EVERY,))
        assert _check(events).missing > 0  # the target is stale now
    plan(events, "job", spec, chunks=2, full_refresh=True)
    summaries = run_job(events, "job")
    check = _check(events)
    assert check.exact, check
    assert str(POISON_EVERY) not in check.dead_letter_keys
    assert sum(s.rows_read for s in summaries) == ROWS
    assert all(s.attempt == 1 and s.resumed_from is None for s in summaries)


def test_that_a_full_refresh_under_a_filter_keeps_other_intervals(events: str) -> None:
    """Test that refreshing one data interval's job leaves the other interval's output alone."""
    with psycopg.connect(events, autocommit=True) as conn:
        row = conn.execute(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at) FROM demo.events"
        ).fetchone()
    assert row is not None
    middle: dt.datetime = row[0]
    early = events_spec(events, row_filter=RowFilter("created_at", None, middle))
    late = events_spec(events, row_filter=RowFilter("created_at", middle, None))
    plan(events, "early", early, chunks=2)
    plan(events, "late", late, chunks=2)
    run_job(events, "early")
    run_job(events, "late")
    assert _check(events, None).exact
    plan(events, "early", early, chunks=2, full_refresh=True)
    refreshed = run_job(events, "early")
    check = _check(events, None)
    assert check.exact, check
    assert 0 < sum(s.rows_read for s in refreshed) < ROWS


def test_that_racing_runners_process_a_chunk_once(events: str) -> None:
    """Test that two runners started on one chunk at once process it once: one of them skips."""
    spec = events_spec(events, batch_rows=200)
    plan(events, "job", spec, chunks=1)
    (entry,) = _entries(events)
    summaries: list[ChunkSummary] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def runner(holder: str) -> None:
        start.wait()
        try:
            summaries.append(run_chunk(spec, "job", entry, conninfo=events, holder=holder))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(f"runner-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(s.skipped for s in summaries) == [False, True]
    assert [s.rows_this_attempt for s in summaries if not s.skipped] == [ROWS]
    assert _check(events).exact


def test_that_a_runner_whose_lease_is_taken_over_stops_without_writing(events: str) -> None:
    """Test that a runner fenced out mid-chunk raises LeaseLostError and its batch is not written."""
    spec = events_spec(events, batch_rows=200)
    plan(events, "job", spec, chunks=1)
    (entry,) = _entries(events)
    snapshots: list[ProgressSnapshot] = []

    def take_over(snapshot: ProgressSnapshot) -> None:
        snapshots.append(snapshot)
        if len(snapshots) == 2:  # another run starts the job over while this one runs
            plan(events, "job", spec, chunks=1, full_refresh=True)

    with pytest.raises(LeaseLostError, match="lease lost"):
        run_chunk(spec, "job", entry, conninfo=events, on_progress=take_over, read_ahead=0)
    with psycopg.connect(events, autocommit=True) as conn:
        written = conn.execute("SELECT count(*) FROM demo.events_enriched").fetchone()
    assert written is not None and 0 < written[0] <= 400  # two batches, the third was fenced
    run_job(events, "job")
    assert _check(events).exact


def test_that_the_worker_pool_isolates_poison_rows(events: str) -> None:
    """Test that preparing batches in the WorkerPool also ends with every row exactly once."""
    spec = events_spec(events, batch_rows=400)
    plan(events, "job", spec, chunks=2)
    with WorkerPool(max_workers=2) as pool:
        summaries = run_job(events, "job", pool=pool)
    check = _check(events)
    assert check.exact, check
    assert all(s.reconciles for s in summaries)
    assert sum(s.rows_failed for s in summaries) == ROWS // POISON_EVERY
    with psycopg.connect(events, autocommit=True) as conn:
        letters = conn.execute(
            "SELECT DISTINCT error_type, attempts FROM parallel_batch.dead_letters"
        ).fetchall()
    assert letters == [("PoisonRowError", DEFAULT_RETRY.max_attempts)]


def test_that_a_transform_losing_rows_dead_letters_them(events: str) -> None:
    """Test that rows a batch transform returns no output for go to the dead letters, not
    nowhere, with a message that says what the contract is."""
    spec = events_spec(
        events,
        transform=transforms.path("drop_every_row"),
        batch_rows=500,
        retry=RetryPolicy(max_attempts=1),
    )
    plan(events, "job", spec, chunks=1)
    (entry,) = _entries(events)
    summary = run_chunk(spec, "job", entry, conninfo=events)
    assert (summary.rows_read, summary.rows_written, summary.rows_failed) == (ROWS, 0, ROWS)
    assert summary.reconciles
    with psycopg.connect(events, autocommit=True) as conn:
        types = conn.execute(
            "SELECT DISTINCT error_type, message, attempts FROM parallel_batch.dead_letters"
        ).fetchall()
    assert types == [
        (
            "TransformOutputError",
            "the transform returned 0 rows for 1 input rows; a 'batch' transform returns exactly "
            "one output row per input row (use transform_kind='rows' or 'dataframe' to filter "
            "or fan out)",
            1,
        )
    ]


def test_that_progress_is_reported_per_batch(events: str) -> None:
    """Test that on_progress gets one snapshot per committed batch, ending at the chunk's rows."""
    spec = events_spec(events, batch_rows=500)
    plan(events, "job", spec, chunks=1)
    (entry,) = _entries(events)
    snapshots: list[ProgressSnapshot] = []
    run_chunk(spec, "job", entry, conninfo=events, on_progress=snapshots.append)
    assert [s.done for s in snapshots] == [500, 1000, 1500, 2000]


def test_that_a_negative_read_ahead_is_refused(events: str) -> None:
    """Test that run_chunk checks read_ahead before it takes the chunk's lease."""
    spec = events_spec(events)
    plan(events, "job", spec, chunks=1)
    (entry,) = _entries(events)
    with pytest.raises(ValueError, match="read_ahead must not be negative"):
        run_chunk(spec, "job", entry, conninfo=events, read_ahead=-1)
    with CheckpointStore.connect(events) as store:
        (state,) = store.chunk_rows("job")
    assert (state.status, state.attempts) == ("pending", 0)


def test_that_a_rerun_completes_a_job_whose_last_roll_up_was_lost(events: str) -> None:
    """Test that when the attempt completing a job's last chunk died between the chunk's commit
    and the job's roll-up, running the job again (every chunk skipped) marks it completed."""
    spec = events_spec(events)
    plan(events, "job", spec, chunks=2)
    run_job(events, "job")
    with psycopg.connect(events, autocommit=True) as conn:  # the state such a kill leaves
        conn.execute(
            "UPDATE parallel_batch.jobs SET status = 'running', finished_at = NULL"
            " WHERE job_key = 'job'"
        )
    again = run_job(events, "job")
    assert [s.skipped for s in again] == [True, True]
    with CheckpointStore.connect(events) as store:
        status = store.job_status("job")
    assert status is not None and status.chunks_completed == 2
    assert (status.job.status, status.job.finished_at is not None) == ("completed", True)
