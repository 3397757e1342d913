"""Plan, run and check a ``demo.events -> demo.events_enriched`` job on the chunk-job core.

::

    events_spec(url, ...)          a JobSpec as a DAG's plan task builds it: the source resolved
                                   from the catalog, the written columns from the target's
    plan(url, job_key, spec)       core.planning.plan_job (an existing job keeps its plan)
    run_job(url, job_key)          every chunk of the stored plan, in plan order, with the
                                   job's STORED spec (as each mapped task does)
    check_job(conn, job_key)       the target and the dead letters against what Postgres alone
                                   computes (``sha256`` and ``amount * 100`` in SQL)

The check never uses the transform under test.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg

from parallel_batch.core.job import ChunkSummary, JobSpec
from parallel_batch.core.planning import plan_job, resolve_columns, stored_spec
from parallel_batch.core.runner import run_chunk
from parallel_batch.core.transforms import TransformKind, TransformSpec
from parallel_batch.demo.events import seed_events
from parallel_batch.demo.tables import create_events_enriched
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.sources import TableSource, source_from_dict
from parallel_batch.sources.table.planner import RowFilter
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.records import Job
from parallel_batch.store.writer import WriteMode

__all__ = [
    "BATCH",
    "EXPECTED_SQL",
    "SOURCE",
    "TARGET",
    "JobCheck",
    "check_job",
    "events_spec",
    "plan",
    "run_job",
    "seed",
]

SOURCE = "demo.events"
TARGET = "demo.events_enriched"
# The demo's batch transform (the fast path).
BATCH = "include.transforms.events:enrich_events"

# The target rows the job must produce, computed by Postgres alone.
EXPECTED_SQL = """
    SELECT id, user_id, encode(sha256(convert_to(payload, 'UTF8')), 'hex') AS payload_sha256,
           (amount * 100)::bigint AS amount_cents, created_at
    FROM demo.events
    WHERE payload NOT LIKE 'poison:%' AND payload NOT LIKE 'crash:%'
"""
FAILING_SQL = (
    "SELECT id::text FROM demo.events WHERE payload LIKE 'poison:%' OR payload LIKE 'crash:%'"
)
TARGET_SQL = (
    "SELECT id, user_id, payload_sha256, amount_cents, created_at FROM demo.events_enriched"
)


def seed(
    url: str, rows: int, *, poison_every: int | None = None, crash_every: int | None = None
) -> str:
    """Seed ``demo.events`` with ``rows`` rows and create an empty ``demo.events_enriched``."""
    with psycopg.connect(url, autocommit=True) as conn:
        seed_events(conn, rows, poison_every=poison_every, crash_every=crash_every)
        create_events_enriched(conn)
    return url


def events_spec(
    url: str,
    *,
    transform: str | None = BATCH,
    kind: TransformKind = "batch",
    batch_rows: int = 500,
    write_mode: WriteMode = "copy",
    row_filter: RowFilter | None = None,
    retry: RetryPolicy | None = None,
    kwargs: dict[str, Any] | None = None,
    source_url: str | None = None,
) -> JobSpec:
    """The demo job's spec, its target resolved in the database at ``url`` and its source in
    ``source_url`` (default: the same). COPY by default: a duplicate would fail loudly, not be
    upserted."""
    source = TableSource(SOURCE, "id", row_filter=row_filter).resolved(source_url or url)
    options: dict[str, Any] = {"kwargs": kwargs or {}}
    if retry is not None:
        options["retry"] = retry
    spec = JobSpec(
        source,
        TARGET,
        TransformSpec(transform, kind, **options),
        write_mode=write_mode,
        batch_rows=batch_rows,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        return resolve_columns(conn, spec, source.columns)


def plan(
    url: str,
    job_key: str,
    spec: JobSpec,
    *,
    chunks: int = 4,
    full_refresh: bool = False,
    source_url: str | None = None,
) -> Job:
    """Plan the job's chunks and store the job (an existing job keeps its plan)."""
    with CheckpointStore.connect(url) as store:
        return plan_job(
            store,
            job_key,
            spec,
            source_conninfo=source_url or url,
            make_source=source_from_dict,
            chunks=chunks,
            max_chunks=1024,
            full_refresh=full_refresh,
        )


def run_job(
    url: str, job_key: str, spec: JobSpec | None = None, **options: Any
) -> list[ChunkSummary]:
    """Run every chunk of the job's stored plan in turn, with ``spec`` or the stored one.

    :param options: passed to :func:`run_chunk` (``pool``, ``source_conninfo``, ...).
    """
    with CheckpointStore.connect(url) as store:
        job = store.get_job(job_key)
    if job is None:
        raise LookupError(f"no job {job_key}")
    spec = spec or stored_spec(job, source_from_dict)
    return [run_chunk(spec, job_key, entry, conninfo=url, **options) for entry in job.plan]


class JobCheck(NamedTuple):
    """How the target and the dead letters compare with what the job must produce."""

    expected_rows: int
    target_rows: int
    missing: int  # expected rows absent from the target (or with wrong values)
    unexpected: int  # target rows that are not expected (or have wrong values)
    duplicates: int  # target keys present more than once
    failing_keys: set[str]  # the poison/crash rows' keys
    dead_letter_keys: list[str]  # item keys in the dead letters (a key twice: listed twice)

    @property
    def exact(self) -> bool:
        return (
            self.expected_rows == self.target_rows
            and self.missing == self.unexpected == self.duplicates == 0
            and sorted(self.failing_keys) == sorted(self.dead_letter_keys)
        )


def check_job(
    conn: psycopg.Connection,
    job_key: str | None,
    *,
    expected_sql: str = EXPECTED_SQL,
    failing_sql: str = FAILING_SQL,
) -> JobCheck:
    """Compare the target and the job's pending dead letters with the SQL-computed truth.

    :param job_key: whose dead letters count; None: every job's (jobs over different intervals
        of the same source and target, together).
    :param expected_sql: the rows the target must hold (a transform that filters or fans out
        has its own).
    :param failing_sql: the keys that must be dead letters.
    """

    def one(query: str) -> int:
        row = conn.execute(query).fetchone()  # query: built from the constants above
        assert row is not None
        return int(row[0])

    return JobCheck(
        expected_rows=one(f"SELECT count(*) FROM ({expected_sql}) e"),
        target_rows=one("SELECT count(*) FROM demo.events_enriched"),
        missing=one(f"SELECT count(*) FROM ({expected_sql} EXCEPT ALL {TARGET_SQL}) m"),
        unexpected=one(f"SELECT count(*) FROM ({TARGET_SQL} EXCEPT ALL {expected_sql}) u"),
        duplicates=one(
            "SELECT count(*) FROM (SELECT id FROM demo.events_enriched"
            " GROUP BY id HAVING count(*) > 1) d"
        ),
        failing_keys={key for (key,) in conn.execute(failing_sql).fetchall()},
        dead_letter_keys=[
            key
            for (key,) in conn.execute(
                "SELECT item_key FROM parallel_batch.dead_letters"
                " WHERE (%s::text IS NULL OR job_key = %s) AND replayed_at IS NULL",
                (job_key, job_key),
            ).fetchall()
        ],
    )
