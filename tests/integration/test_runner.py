"""Tests of the chunk runner: exactly-once output, dead letters, resume, skip, refresh, races."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from parallel_batch.core.batch_transform import DEFAULT_RETRY
from parallel_batch.core.runner import ChunkSummary, TableJobSpec, run_table_chunk
from parallel_batch.demo import events as demo
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.progress import ProgressSnapshot
from parallel_batch.engine.retry import RetryPolicy
from parallel_batch.exceptions import LeaseLostError
from parallel_batch.sources.table.planner import RowFilter, TableChunk
from parallel_batch.store.checkpoints import CheckpointStore
from tests.reliability.chunk_worker import check_job, events_spec, plan_job, run_job

ROWS = 2_000
POISON_EVERY = 97


@pytest.fixture
def events(pg_url: str) -> Iterator[str]:
    """A seeded demo.events with poison rows and an empty demo.events_enriched."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        demo.seed_events(conn, ROWS, poison_every=POISON_EVERY)
        demo.create_events_enriched(conn)
    yield pg_url


def _check(url: str, job_key: str | None = "job") -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        return check_job(conn, job_key)


def _chunks(url: str, job_key: str = "job") -> list[TableChunk]:
    with CheckpointStore.connect(url) as store:
        job = store.get_job(job_key)
    assert job is not None
    return [TableChunk.from_dict(entry) for entry in job.plan]


class _Abort(BaseException):
    """Stands for the attempt dying (a BaseException: no row-level isolation catches it)."""


class _FailingOnBatch:
    """A transform that runs demo.enrich_events, and aborts the attempt on its n-th whole batch
    (calls with a single row, made to isolate poison rows, are not counted)."""

    def __init__(self, fail_on: int) -> None:
        self.batches = 0
        self.fail_on = fail_on

    def __call__(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        self.batches += len(rows) > 1
        if self.batches == self.fail_on:
            raise _Abort("the attempt dies here")
        return demo.enrich_events(rows)


def _drop_every_row(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return []


@pytest.mark.parametrize("read_ahead", [0, 1])
def test_that_a_job_writes_every_row_once_and_dead_letters_the_poison(
    events: str, read_ahead: int
) -> None:
    """Test that running every chunk puts each good row in the target and each poison row in the dead letters."""
    spec = events_spec(batch_rows=300)
    plan_job(events, "job", spec, chunks=3)
    summaries = [
        run_table_chunk(events, "job", chunk, spec, demo.enrich_events, read_ahead=read_ahead)
        for chunk in _chunks(events)
    ]
    check = _check(events)
    assert check.exact, check
    assert sum(s.rows_read for s in summaries) == ROWS
    assert sum(s.rows_failed for s in summaries) == ROWS // POISON_EVERY
    assert all(s.reconciles and not s.skipped and s.resumed_from is None for s in summaries)
    with psycopg.connect(events, autocommit=True) as conn:
        attempts = conn.execute("SELECT DISTINCT attempts FROM parallel_batch.dead_letters")
        assert attempts.fetchall() == [(DEFAULT_RETRY.max_attempts,)]
        payload = conn.execute(
            "SELECT payload->>'payload' FROM parallel_batch.dead_letters LIMIT 1"
        ).fetchone()
        assert payload is not None and payload[0].startswith("poison:")


def test_that_completed_chunks_are_skipped(events: str) -> None:
    """Test that running a completed job again skips every chunk and writes nothing more."""
    spec = events_spec()
    plan_job(events, "job", spec, chunks=2)
    first = run_job(events, "job", spec)
    again = run_job(events, "job", spec)
    assert [s.skipped for s in again] == [True, True]
    assert [(s.rows_read, s.rows_written) for s in again] == [
        (s.rows_read, s.rows_written) for s in first
    ]
    assert _check(events).exact


def test_that_a_died_attempt_resumes_after_its_last_checkpoint(events: str) -> None:
    """Test that after an attempt dies mid-chunk, the next one starts after the last committed key."""
    spec = events_spec(batch_rows=250)
    plan_job(events, "job", spec, chunks=1)
    (chunk,) = _chunks(events)
    with pytest.raises(_Abort):
        run_table_chunk(events, "job", chunk, spec, _FailingOnBatch(fail_on=4), read_ahead=0)
    with CheckpointStore.connect(events) as store:
        (state,) = store.chunk_rows("job")
    assert (state.status, state.rows_read) == ("failed", 750)
    assert state.error is not None and "the attempt dies here" in state.error
    summary = run_table_chunk(events, "job", chunk, spec, demo.enrich_events)
    assert summary.resumed_from == state.last_key
    assert summary.rows_this_attempt == ROWS - 750
    assert (summary.rows_read, summary.attempt) == (ROWS, 2)
    assert _check(events).exact


def test_that_a_full_refresh_replaces_the_output_without_duplicates(events: str) -> None:
    """Test that full_refresh reprocesses changed source rows into the target with no duplicates."""
    spec = events_spec()
    plan_job(events, "job", spec, chunks=2)
    run_job(events, "job", spec)
    with psycopg.connect(events, autocommit=True) as conn:
        conn.execute("UPDATE demo.events SET payload = payload || '!' WHERE id % 10 = 0")
        conn.execute("UPDATE demo.events SET payload = 'fixed' WHERE id = %s", (POISON_EVERY,))
        assert _check(events).missing > 0  # the target is stale now
    plan_job(events, "job", spec, chunks=2, full_refresh=True)
    summaries = run_job(events, "job", spec)
    check = _check(events)
    assert check.exact, check
    assert str(POISON_EVERY) not in check.dead_letter_keys
    assert sum(s.rows_read for s in summaries) == ROWS


def test_that_a_full_refresh_under_a_filter_keeps_other_intervals(events: str) -> None:
    """Test that refreshing one data interval's job leaves the other interval's output alone."""
    with psycopg.connect(events, autocommit=True) as conn:
        row = conn.execute(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at) FROM demo.events"
        ).fetchone()
    assert row is not None
    middle: dt.datetime = row[0]
    early = events_spec(row_filter=RowFilter("created_at", None, middle))
    late = events_spec(row_filter=RowFilter("created_at", middle, None))
    plan_job(events, "early", early, chunks=2)
    plan_job(events, "late", late, chunks=2)
    run_job(events, "early", early)
    run_job(events, "late", late)
    assert _check(events, None).exact
    plan_job(events, "early", early, chunks=2, full_refresh=True)
    run_job(events, "early", early)
    check = _check(events, None)
    assert check.exact, check


def test_that_racing_runners_process_a_chunk_once(events: str) -> None:
    """Test that two runners started on one chunk at once process it once: one of them skips."""
    spec = events_spec(batch_rows=200)
    plan_job(events, "job", spec, chunks=1)
    (chunk,) = _chunks(events)
    summaries: list[ChunkSummary] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def runner(holder: str) -> None:
        start.wait()
        try:
            summaries.append(
                run_table_chunk(events, "job", chunk, spec, demo.enrich_events, holder=holder)
            )
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
    spec = events_spec(batch_rows=200)
    plan_job(events, "job", spec, chunks=1)
    (chunk,) = _chunks(events)
    snapshots: list[ProgressSnapshot] = []

    def take_over(snapshot: ProgressSnapshot) -> None:
        snapshots.append(snapshot)
        if len(snapshots) == 2:  # another run starts the job over while this one runs
            plan_job(events, "job", spec, chunks=1, full_refresh=True)

    with pytest.raises(LeaseLostError, match="lease lost"):
        run_table_chunk(
            events, "job", chunk, spec, demo.enrich_events, on_progress=take_over, read_ahead=0
        )
    with psycopg.connect(events, autocommit=True) as conn:
        written = conn.execute("SELECT count(*) FROM demo.events_enriched").fetchone()
    assert written is not None and 0 < written[0] <= 400  # two batches, the third was fenced
    run_job(events, "job", spec)
    assert _check(events).exact


def test_that_the_worker_pool_isolates_poison_rows(events: str) -> None:
    """Test that transforming in the WorkerPool also ends with every row exactly once."""
    spec = events_spec(batch_rows=400)
    plan_job(events, "job", spec, chunks=2)
    with WorkerPool(max_workers=2) as pool:
        summaries = run_job(events, "job", spec, pool=pool)
    check = _check(events)
    assert check.exact, check
    assert all(s.reconciles for s in summaries)


def test_that_a_transform_losing_rows_dead_letters_them(events: str) -> None:
    """Test that rows a transform returns no output for go to the dead letters, not nowhere."""
    spec = events_spec(batch_rows=500)
    plan_job(events, "job", spec, chunks=1)
    (chunk,) = _chunks(events)
    no_retry = RetryPolicy(max_attempts=1)
    summary = run_table_chunk(events, "job", chunk, spec, _drop_every_row, retry=no_retry)
    assert (summary.rows_read, summary.rows_written, summary.rows_failed) == (ROWS, 0, ROWS)
    with psycopg.connect(events, autocommit=True) as conn:
        types = conn.execute("SELECT DISTINCT error_type FROM parallel_batch.dead_letters")
        assert types.fetchall() == [("TransformOutputError",)]


def test_that_progress_is_reported_per_batch(events: str) -> None:
    """Test that on_progress gets one snapshot per committed batch, ending at the chunk's rows."""
    spec = events_spec(batch_rows=500)
    plan_job(events, "job", spec, chunks=1)
    (chunk,) = _chunks(events)
    snapshots: list[ProgressSnapshot] = []
    run_table_chunk(events, "job", chunk, spec, demo.enrich_events, on_progress=snapshots.append)
    assert [s.done for s in snapshots] == [500, 1000, 1500, 2000]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_rows": 0}, "batch_rows must be greater than 0"),
        ({"key_column": "user_id", "source_columns": ("id",)}, "must be one of source_columns"),
        ({"write_mode": "merge"}, "write_mode must be one of"),
        ({"target_key_columns": ("nope",)}, "must be among target_columns"),
        ({"source_columns": ("id", "id")}, "must not name a column twice"),
    ],
)
def test_that_a_bad_spec_is_refused(change: dict[str, Any], message: str) -> None:
    """Test that TableJobSpec checks its arguments up front with exact messages."""
    values: dict[str, Any] = {
        "source_table": "demo.events",
        "target_table": "demo.events_enriched",
        "key_column": "id",
        "source_columns": ("id", "payload"),
        "target_columns": ("id", "payload_sha256"),
        **change,
    }
    with pytest.raises(ValueError, match=message):
        TableJobSpec(**values)


def test_that_a_spec_survives_a_round_trip_through_a_dict() -> None:
    """Test that to_dict/from_dict rebuild an equal spec, filter included."""
    spec = events_spec(
        row_filter=RowFilter("created_at", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), None)
    )
    assert TableJobSpec.from_dict(spec.to_dict()) == spec
