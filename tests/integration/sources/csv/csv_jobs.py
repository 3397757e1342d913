"""Test helper: a CSV job on the chunk-job core, as a chunk task runs it, and its exact checks.

::

    customers_spec(url, path)   typed_csv_source(demo.customers, key_column="id").planned()
                                -> JobSpec(dedup_key="id", transform=check) -> resolve_columns
    plan(url, job_key, spec)    plan_job (chunks or chunk_size in bytes)
    run(url, job, spec)         run_chunk for every entry of the plan (in order, or reversed)
    check_exact(conn, job_key, case)   target rows, dead letters and counters as worked out by
                                       tests.helpers.customers_csv
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from parallel_batch.core.job import ChunkSummary, JobSpec
from parallel_batch.core.planning import plan_job, resolve_columns
from parallel_batch.core.runner import run_chunk
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.sources import source_from_dict
from parallel_batch.sources.csv.source import CsvSource
from parallel_batch.sources.csv.typed import typed_csv_source
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.records import Job
from tests.helpers.customers_csv import CustomersCsv, assert_dead_letters, dead_letters, target_rows

TARGET = "demo.customers"
CHECK = TransformSpec("include.transforms.customers:check")
# The same check over columns: batches take the columnar path (prepare_columns) where they can.
CHECK_ARROW = TransformSpec("include.transforms.customers:check_arrow", "arrow")
MAX_CHUNKS = 1024


def customers_spec(
    url: str,
    path: Path | str,
    *,
    transform: TransformSpec = CHECK,
    batch_rows: int = 10_000,
    target: str = TARGET,
) -> JobSpec:
    """The job that loads a customers file into ``target``, first occurrence of an id winning."""
    with psycopg.connect(url, autocommit=True) as conn:
        source = typed_csv_source(conn, str(path), target, key_column="id").planned()
        spec = JobSpec(source, target, transform, batch_rows=batch_rows, dedup_key="id")
        return resolve_columns(conn, spec, source.columns)


def plan(url: str, job_key: str, spec: JobSpec, **kwargs: Any) -> Job:
    """Plan (or reuse) the job: ``chunks=`` or ``chunk_size=`` (bytes), ``full_refresh=``."""
    with CheckpointStore.connect(url) as store:
        return plan_job(
            store,
            job_key,
            spec,
            source_conninfo=None,
            make_source=source_from_dict,
            max_chunks=MAX_CHUNKS,
            **kwargs,
        )


def run(
    url: str, job: Job, spec: JobSpec, *, reverse: bool = False, **kwargs: Any
) -> list[ChunkSummary]:
    """Run every chunk of the job's plan, one after the other."""
    entries = list(reversed(job.plan)) if reverse else job.plan
    return [run_chunk(spec, job.job_key, entry, conninfo=url, **kwargs) for entry in entries]


def load_source(
    url: str,
    source: CsvSource,
    table: str,
    job_key: str = "typed",
    transform: TransformSpec | None = None,
) -> ChunkSummary:
    """Plan ``source`` into ``table`` as one chunk (no transform: columns by name), run it."""
    with psycopg.connect(url, autocommit=True) as conn:
        spec = JobSpec(source.planned(), table, transform or TransformSpec(), batch_rows=100)
        spec = resolve_columns(conn, spec, source.columns)
    (summary,) = run(url, plan(url, job_key, spec, chunks=1), spec)
    assert summary.reconciles and not summary.skipped
    return summary


def letters_by_line(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    """Every dead letter of the database by line: ``(error_type, message)``."""
    rows = conn.execute(
        "SELECT line_number, error_type, message FROM parallel_batch.dead_letters"
    ).fetchall()
    return {line: (error_type, message) for line, error_type, message in rows}


def totals(conn: psycopg.Connection, job_key: str) -> tuple[int, int, int]:
    """The job's chunks' rows read, written and failed, summed."""
    row = conn.execute(
        "SELECT sum(rows_read), sum(rows_written), sum(rows_failed) FROM parallel_batch.chunks"
        " WHERE job_key = %s",
        (job_key,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def check_exact(
    conn: psycopg.Connection,
    job_key: str,
    case: CustomersCsv,
    segment: Any = None,
    *,
    any_earlier_duplicate: bool = False,
) -> None:
    """Assert the target, the dead letters and every chunk's counters are exactly the case's
    (``any_earlier_duplicate``: see ``assert_dead_letters``)."""
    assert target_rows(conn) == case.expected_rows(segment)
    assert_dead_letters(
        dead_letters(conn, job_key), case, any_earlier_duplicate=any_earlier_duplicate
    )
    assert totals(conn, job_key) == (case.records, len(case.rows), len(case.dead))
    unbalanced = conn.execute(
        "SELECT chunk_id FROM parallel_batch.chunks WHERE job_key = %s"
        " AND rows_read <> rows_written - rows_fanout + rows_filtered + rows_failed",
        (job_key,),
    ).fetchall()
    assert unbalanced == []
