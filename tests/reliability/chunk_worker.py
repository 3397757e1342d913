"""Helper of the kill and runner tests: plan, run and check a demo.events -> events_enriched job.

Run as a script, it is the process the kill test SIGKILLs: it prints ``started`` once its imports
are done, then runs every chunk of the job's stored plan, in plan order::

    python -m tests.reliability.chunk_worker --url URL --job-key KEY [--batch-rows N]

The check compares the target with an independent SQL computation of the expected rows
(``sha256`` in SQL, ``amount * 100`` in SQL), not with the transform under test.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NamedTuple

import psycopg

from parallel_batch.core.runner import ChunkSummary, TableJobSpec, run_table_chunk
from parallel_batch.demo import events as demo
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.sources.table.planner import RowFilter, TableChunk, plan_table_chunks
from parallel_batch.store.checkpoints import CheckpointStore, Job, plan_from_chunks
from parallel_batch.store.writer import WriteMode

SOURCE = "demo.events"
TARGET = "demo.events_enriched"

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


def events_spec(
    *,
    batch_rows: int = 500,
    write_mode: WriteMode = "copy",
    row_filter: RowFilter | None = None,
) -> TableJobSpec:
    """The demo job's spec (COPY by default: a duplicate would fail loudly, not be upserted)."""
    return TableJobSpec(
        source_table=SOURCE,
        target_table=TARGET,
        key_column="id",
        source_columns=demo.EVENTS_COLUMNS,
        target_columns=demo.ENRICHED_COLUMNS,
        write_mode=write_mode,
        batch_rows=batch_rows,
        row_filter=row_filter,
    )


def plan_job(
    url: str,
    job_key: str,
    spec: TableJobSpec,
    *,
    chunks: int = 4,
    full_refresh: bool = False,
) -> Job:
    """Plan the job's chunks and store the job (an existing job keeps its plan)."""
    with psycopg.connect(url, autocommit=True) as conn:
        planned = plan_table_chunks(
            conn, spec.source_table, spec.key_column, chunks=chunks, row_filter=spec.row_filter
        )
    with CheckpointStore.connect(url) as store:
        return store.ensure_job(
            job_key,
            kind="table",
            plan=plan_from_chunks(planned),
            params=spec.to_dict(),
            source=spec.source_table,
            target=spec.target_table,
            full_refresh=full_refresh,
        )


def run_job(
    url: str,
    job_key: str,
    spec: TableJobSpec,
    *,
    pool: WorkerPool | None = None,
    wait_timeout: float = 60.0,
) -> list[ChunkSummary]:
    """Run every chunk of the job's stored plan in turn with demo.enrich_events."""
    with CheckpointStore.connect(url) as store:
        job = store.get_job(job_key)
    if job is None:
        raise LookupError(f"no job {job_key}")
    return [
        run_table_chunk(
            url,
            job_key,
            TableChunk.from_dict(entry),
            spec,
            demo.enrich_events,
            pool=pool,
            wait_timeout=wait_timeout,
        )
        for entry in job.plan
    ]


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


def check_job(conn: psycopg.Connection, job_key: str | None) -> JobCheck:
    """Compare the target and the job's pending dead letters with the SQL-computed truth.

    :param job_key: whose dead letters count; None: every job's (jobs over different intervals
        of the same source and target, together).
    """

    def one(query: str) -> int:
        row = conn.execute(query).fetchone()  # query: built from the constants above
        assert row is not None
        return int(row[0])

    return JobCheck(
        expected_rows=one(f"SELECT count(*) FROM ({EXPECTED_SQL}) e"),
        target_rows=one("SELECT count(*) FROM demo.events_enriched"),
        missing=one(f"SELECT count(*) FROM ({EXPECTED_SQL} EXCEPT ALL {TARGET_SQL}) m"),
        unexpected=one(f"SELECT count(*) FROM ({TARGET_SQL} EXCEPT ALL {EXPECTED_SQL}) u"),
        duplicates=one(
            "SELECT count(*) FROM (SELECT id FROM demo.events_enriched"
            " GROUP BY id HAVING count(*) > 1) d"
        ),
        failing_keys={key for (key,) in conn.execute(FAILING_SQL).fetchall()},
        dead_letter_keys=[
            key
            for (key,) in conn.execute(
                "SELECT item_key FROM parallel_batch.dead_letters"
                " WHERE (%s::text IS NULL OR job_key = %s) AND replayed_at IS NULL",
                (job_key, job_key),
            ).fetchall()
        ],
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--job-key", required=True)
    parser.add_argument("--batch-rows", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    print("started", flush=True)
    for summary in run_job(args.url, args.job_key, events_spec(batch_rows=args.batch_rows)):
        print(summary.to_dict(), flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
