"""Tests of the runner with each transform kind on a real table: filters, fan-out, dead letters,
rows that kill their worker, and reconciliation in the summaries and in the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from parallel_batch.core.job import ChunkSummary, JobSpec
from parallel_batch.core.planning import plan_job, resolve_columns
from parallel_batch.core.runner import run_chunk
from parallel_batch.core.transforms import TransformKind, TransformSpec
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources import TableSource, source_from_dict
from parallel_batch.sources.table import ranges
from parallel_batch.sources.table.columns import read_frame
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.records import JobStatus
from tests.helpers.events_job import BATCH, EXPECTED_SQL, check_job, events_spec, plan, seed
from tests.integration.core.transforms import SHAPED_EXPECTED_SQL, path

ROWS = 1_000
POISON_EVERY = 97
CRASH_EVERY = 450

# kind -> (transform, what the target must hold)
KINDS: dict[str, tuple[str, str]] = {
    "rows": (path("enrich_shaped"), SHAPED_EXPECTED_SQL),
    "batch": (BATCH, EXPECTED_SQL),
    "dataframe": (path("frame_shaped"), SHAPED_EXPECTED_SQL),
    "async": (path("aenrich_shaped"), SHAPED_EXPECTED_SQL),
    "arrow": (path("enrich_arrow"), EXPECTED_SQL),  # a table's rows as a pyarrow.Table
}
SHAPES = "SELECT count(*) FILTER (WHERE id % 10 IN (3, 6)), count(*) FILTER (WHERE id % 10 = 9)"
GOOD = " FROM demo.events WHERE payload NOT LIKE 'poison:%' AND payload NOT LIKE 'crash:%'"


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """Two workers for the module (their start-up is paid once)."""
    with WorkerPool(2, crash_retries=0) as running:
        yield running


def _status(url: str, job_key: str) -> JobStatus:
    with CheckpointStore.connect(url) as store:
        status = store.job_status(job_key)
    assert status is not None
    return status


def _shapes(conn: psycopg.Connection, kind: str) -> tuple[int, int]:
    """(rows filtered, rows fanned out) the kind's transform must report."""
    if KINDS[kind][1] is EXPECTED_SQL:
        return 0, 0
    row = conn.execute(SHAPES + GOOD).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _assert_reconciled(url: str, job_key: str, summaries: list[ChunkSummary]) -> None:
    """The summaries and the store's job status agree, and both reconcile with the source."""
    status = _status(url, job_key)
    assert all(s.reconciles for s in summaries), summaries
    assert status.rows_read == sum(s.rows_read for s in summaries) == ROWS
    assert status.rows_written == sum(s.rows_written for s in summaries)
    assert status.rows_failed == sum(s.rows_failed for s in summaries) == status.dead_letters
    assert status.rows_filtered == sum(s.rows_filtered for s in summaries)
    assert status.rows_fanout == sum(s.rows_fanout for s in summaries)
    assert status.rows_read == (
        status.rows_written - status.rows_fanout + status.rows_filtered + status.rows_failed
    )
    assert status.job.status == "completed" and status.chunks_completed == status.chunks_total


def _run(url: str, kind: TransformKind, pool: WorkerPool | None) -> list[ChunkSummary]:
    transform, _ = KINDS[kind]
    spec = events_spec(url, transform=transform, kind=kind, batch_rows=200)
    job = plan(url, "job", spec, chunks=2)
    return [run_chunk(spec, "job", entry, conninfo=url, pool=pool) for entry in job.plan]


@pytest.mark.parametrize("in_pool", [False, True], ids=["in-process", "pool"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_that_each_kind_writes_filters_fans_out_and_dead_letters(
    pg_url: str, pool: WorkerPool, kind: TransformKind, in_pool: bool
) -> None:
    """Test that every kind ends with the target SQL computes, the poison rows dead-lettered
    with their reason, None/[] counted as filtered and a list as fan-out, all reconciled."""
    url = seed(pg_url, ROWS, poison_every=POISON_EVERY)
    summaries = _run(url, kind, pool if in_pool else None)
    with psycopg.connect(url, autocommit=True) as conn:
        check = check_job(conn, "job", expected_sql=KINDS[kind][1])
        filtered, fanout = _shapes(conn, kind)
        reasons = conn.execute(
            "SELECT DISTINCT error_type, message ~ ('^event ' || item_key || ' is a poison row$')"
            " FROM parallel_batch.dead_letters"
        ).fetchall()
    assert check.exact, check
    assert reasons == [("PoisonRowError", True)]
    assert sum(s.rows_filtered for s in summaries) == filtered
    assert sum(s.rows_fanout for s in summaries) == fanout
    if kind not in ("batch", "arrow"):  # one output row per row, or refused
        assert filtered > 0 and fanout > 0
    _assert_reconciled(url, "job", summaries)


@pytest.mark.parametrize("kind", ["rows", "batch", "dataframe"])
def test_that_a_row_that_kills_its_worker_is_dead_lettered(
    pg_url: str, pool: WorkerPool, kind: TransformKind
) -> None:
    """Test that a crash: row ends the worker that runs it, becomes a WorkerCrashedError dead
    letter, and every other row of its batch is written."""
    url = seed(pg_url, ROWS, poison_every=POISON_EVERY, crash_every=CRASH_EVERY)
    crashed = pool.statistics().crashed_workers
    summaries = _run(url, kind, pool)
    with psycopg.connect(url, autocommit=True) as conn:
        check = check_job(conn, "job", expected_sql=KINDS[kind][1])
        letters: dict[str, str] = dict(
            conn.execute(
                "SELECT item_key, error_type FROM parallel_batch.dead_letters"
                " WHERE error_type <> 'PoisonRowError'"
            ).fetchall()
        )
    assert check.exact, check
    assert letters == {"450": "WorkerCrashedError", "900": "WorkerCrashedError"}
    assert pool.statistics().crashed_workers - crashed >= len(letters)
    _assert_reconciled(url, "job", summaries)


@pytest.mark.parametrize(("kind", "as_columns"), [("dataframe", True), ("rows", False)])
def test_that_only_a_dataframe_job_reads_its_batches_as_columns(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, kind: TransformKind, as_columns: bool
) -> None:
    """Test that the runner asks the table for column-at-a-time batches for a dataframe
    transform only: every batch of its job goes through the columnar read (the real one,
    counted), and the target is what SQL computes either way."""
    url = seed(pg_url, ROWS, poison_every=POISON_EVERY)
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        frame = read_frame(*args, **kwargs)
        calls.append(len(frame))
        return frame

    monkeypatch.setattr(ranges, "read_frame", counted)
    summaries = _run(url, kind, None)  # in this process, where the count is kept
    with psycopg.connect(url, autocommit=True) as conn:
        check = check_job(conn, "job", expected_sql=KINDS[kind][1])
    assert check.exact, check
    if as_columns:
        assert sum(calls) == ROWS and max(calls) == 200  # every row, 200 a batch at most
    else:
        assert calls == []
    _assert_reconciled(url, "job", summaries)


def test_that_no_transform_writes_the_columns_by_name(pg_url: str) -> None:
    """Test that without a transform each row's columns go to the target columns of the same
    names, and the target's other columns keep their defaults."""
    url = seed(pg_url, 500)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE demo.events_copy (id bigint PRIMARY KEY, payload text,"
            " amount numeric(12,2), note text DEFAULT 'copied')"
        )
    source = TableSource("demo.events", "id", ("id", "payload", "amount")).resolved(url)
    with psycopg.connect(url, autocommit=True) as conn:
        spec = resolve_columns(conn, JobSpec(source, "demo.events_copy"), source.columns)
    assert spec.target_columns == ("id", "payload", "amount")
    with CheckpointStore.connect(url) as store:
        job = plan_job(
            store,
            "copy",
            spec,
            source_conninfo=url,
            make_source=source_from_dict,
            chunks=2,
            max_chunks=1024,
        )
    summaries = [run_chunk(spec, "copy", entry, conninfo=url) for entry in job.plan]
    with psycopg.connect(url, autocommit=True) as conn:
        differ = conn.execute(
            "SELECT count(*) FROM (SELECT id, payload, amount, 'copied' FROM demo.events"
            " EXCEPT ALL SELECT id, payload, amount, note FROM demo.events_copy) d"
        ).fetchone()
    assert differ == (0,)
    assert sum(s.rows_written for s in summaries) == 500


def test_that_a_kind_and_its_function_must_agree(pg_url: str) -> None:
    """Test that a chunk whose transform does not fit its kind fails with a message that says
    which kind to use, and writes nothing."""
    url = seed(pg_url, 100)
    spec = events_spec(url, transform=path("aenrich_shaped"), kind="async")
    wrong = dataclasses.replace(spec, transform=TransformSpec(path("aenrich_shaped"), "rows"))
    job = plan(url, "job", spec, chunks=1)
    with pytest.raises(
        ConfigurationError, match="is an 'async def' function: use transform_kind='async'"
    ):
        run_chunk(wrong, "job", job.plan[0], conninfo=url)
    with CheckpointStore.connect(url) as store:
        (state,) = store.chunk_rows("job")
    assert (state.status, state.rows_read) == ("failed", 0)
