"""The read model of progress: jobs and chunks as the status view and the summary see them.

Computed from the chunk rows at query time (one statement each, read only), so a job's figures are
live while its chunks run::

    list_jobs / job_status   jobs x their chunks' counts and row totals, pending dead letters,
                             elapsed time, rate and ETA
    chunk_states             a job's chunks with liveness (does a session hold the chunk's
                             advisory lock right now?) and pending dead letters
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from parallel_batch.store import leases
from parallel_batch.store.jobs import CHUNK_TOTALS_SQL, JOB_COLUMNS
from parallel_batch.store.records import ChunkState, Job, JobStatus

__all__ = ["chunk_states", "job_status", "list_jobs"]


def chunk_states(conn: psycopg.Connection, job_key: str) -> list[ChunkState]:
    """Return the job's chunks in plan order, with liveness and pending dead letters."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            SELECT c.job_key, c.chunk_id, c.position, c.range, c.status, c.last_key,
                   c.rows_total, c.rows_read, c.rows_written, c.rows_failed, c.rows_filtered,
                   c.rows_fanout, c.attempts, c.lease_token, c.holder, c.heartbeat_at,
                   c.started_at, c.finished_at, c.error,
                   EXISTS (SELECT 1 FROM (SELECT {leases.CHUNK_LOCK_KEY_SQL} AS key) k
                           JOIN pg_locks l ON {leases.HOLDER_FILTER_SQL}) AS alive,
                   (SELECT count(*) FROM parallel_batch.dead_letters d
                    WHERE d.job_key = c.job_key AND d.chunk_id = c.chunk_id
                      AND d.replayed_at IS NULL) AS dead_letters
            FROM parallel_batch.chunks c
            WHERE c.job_key = %s
            ORDER BY c.position
            """,
            (job_key,),
        )
        return [ChunkState.from_row(row) for row in cur.fetchall()]


def job_status(conn: psycopg.Connection, job_key: str) -> JobStatus | None:
    """Return the job's progress computed from its chunks now, or None for an unknown job."""
    statuses = _statuses(conn, "WHERE j.job_key = %s", (job_key,), limit=1)
    return statuses[0] if statuses else None


def list_jobs(
    conn: psycopg.Connection, *, limit: int = 20, status: str | None = None
) -> list[JobStatus]:
    """Return the most recently created jobs' progress, newest first.

    :param limit: jobs at most.
    :param status: only jobs in that status.
    """
    if limit <= 0:
        raise ValueError("limit must be greater than 0")
    if status is None:
        return _statuses(conn, "", (), limit=limit)
    return _statuses(conn, "WHERE j.status = %s", (status,), limit=limit)


def _statuses(
    conn: psycopg.Connection, where: str, params: tuple[Any, ...], *, limit: int
) -> list[JobStatus]:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT to_regclass('parallel_batch.jobs') IS NOT NULL AS e").fetchone()
        if not row or not row["e"]:
            return []
        jobs_columns = ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(","))
        cur.execute(
            f"""
            SELECT {jobs_columns},
                   s.total AS chunks_total, s.pending AS chunks_pending,
                   s.running AS chunks_running, s.completed AS chunks_completed,
                   s.failed AS chunks_failed, s.rows_total AS live_rows_total,
                   s.rows_read AS live_rows_read, s.rows_written AS live_rows_written,
                   s.rows_failed AS live_rows_failed, s.rows_filtered AS live_rows_filtered,
                   s.rows_fanout AS live_rows_fanout,
                   (SELECT count(*) FROM parallel_batch.dead_letters d
                    WHERE d.job_key = j.job_key AND d.replayed_at IS NULL) AS dead_letters,
                   extract(epoch FROM coalesce(j.finished_at, now()) - j.started_at)::float8
                       AS elapsed_seconds
            FROM parallel_batch.jobs j
            CROSS JOIN LATERAL (
                SELECT {CHUNK_TOTALS_SQL}
                FROM parallel_batch.chunks c WHERE c.job_key = j.job_key
            ) s
            {where}
            ORDER BY j.created_at DESC, j.job_key
            LIMIT %s
            """,  # where: a constant condition chosen by the callers above
            (*params, limit),
        )
        rows = cur.fetchall()
    return [_status(row) for row in rows]


def _status(row: dict[str, Any]) -> JobStatus:
    job = Job.from_row(row)
    rows_total = int(row["live_rows_total"])
    rows_read = int(row["live_rows_read"])
    elapsed = row["elapsed_seconds"]
    rate = rows_read / elapsed if elapsed and elapsed > 0 else None
    eta: float | None = None
    if job.status == "completed":
        eta = 0.0
    elif rate and rows_total > rows_read:
        eta = (rows_total - rows_read) / rate
    return JobStatus(
        job=job,
        chunks_total=int(row["chunks_total"]),
        chunks_pending=int(row["chunks_pending"]),
        chunks_running=int(row["chunks_running"]),
        chunks_completed=int(row["chunks_completed"]),
        chunks_failed=int(row["chunks_failed"]),
        rows_total=rows_total,
        rows_read=rows_read,
        rows_written=int(row["live_rows_written"]),
        rows_failed=int(row["live_rows_failed"]),
        rows_filtered=int(row["live_rows_filtered"]),
        rows_fanout=int(row["live_rows_fanout"]),
        dead_letters=int(row["dead_letters"]),
        elapsed_seconds=elapsed,
        rate_per_second=rate,
        eta_seconds=eta,
    )
