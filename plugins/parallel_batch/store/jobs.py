"""Jobs and their chunk plans: create once, reuse forever, start over on a full refresh.

::

    ensure_job(plan)    INSERT jobs ... ON CONFLICT DO NOTHING
         |  new?        yes: one chunks row per plan entry (a fresh lease token each)
         |              no, full_refresh: chunks replaced by fresh ones flagged needs_reset,
         |                                running leases fenced out, dead letters of gone chunks
         |                                and the job's key claims deleted
         v              no: the stored plan, never a new one (a rerun resumes its chunks)
    roll_up(job_key)    the job's status and totals recomputed from its chunks

Every function runs its own short transaction on the caller's autocommit connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.store.claims import delete_job_claims
from parallel_batch.store.deadletters import dumps
from parallel_batch.store.records import Job
from parallel_batch.store.schema import ensure_schema

__all__ = ["JOB_COLUMNS", "PlannedChunk", "ensure_job", "get_job", "plan_from_chunks", "roll_up"]

log = logging.getLogger(__name__)

# A job's chunks summed up: counts by status and row totals (the roll-up and the read model).
CHUNK_TOTALS_SQL = """count(*) AS total,
    count(*) FILTER (WHERE status = 'pending') AS pending,
    count(*) FILTER (WHERE status = 'running') AS running,
    count(*) FILTER (WHERE status = 'completed') AS completed,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    coalesce(sum(rows_total), 0) AS rows_total,
    coalesce(sum(rows_read), 0) AS rows_read,
    coalesce(sum(rows_written), 0) AS rows_written,
    coalesce(sum(rows_failed), 0) AS rows_failed,
    coalesce(sum(rows_filtered), 0) AS rows_filtered,
    coalesce(sum(rows_fanout), 0) AS rows_fanout"""

JOB_COLUMNS = (
    "job_key, status, kind, source, target, plan, params, rows_total, rows_read, rows_written,"
    " rows_failed, rows_filtered, rows_fanout, created_at, started_at, finished_at, error"
)


class PlannedChunk(Protocol):
    """What :func:`plan_from_chunks` needs of a planner's chunk (a key range, a byte range)."""

    @property
    def chunk_id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def plan_from_chunks(chunks: Iterable[PlannedChunk]) -> list[dict[str, Any]]:
    """Return the plan entries for :func:`ensure_job`: each chunk's dict with its id."""
    return [{**chunk.to_dict(), "chunk_id": chunk.chunk_id} for chunk in chunks]


def _check_plan(plan: Sequence[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for entry in plan:
        if not isinstance(entry, dict) or not isinstance(entry.get("chunk_id"), str):
            raise ValueError("every plan entry must be a dict with a 'chunk_id' string")
        if entry["chunk_id"] in seen:
            raise ValueError(f"duplicate chunk_id {entry['chunk_id']!r} in the plan")
        seen.add(entry["chunk_id"])
        rows = entry.get("rows")
        if rows is not None and (not isinstance(rows, int) or rows < 0):
            raise ValueError(f"plan entry {entry['chunk_id']!r}: rows must be an int >= 0")


def get_job(conn: psycopg.Connection, job_key: str) -> Job | None:
    """Return the job, or None when there is no such job (or no schema yet)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        exists = cur.execute("SELECT to_regclass('parallel_batch.jobs') IS NOT NULL AS e")
        row = exists.fetchone()
        if not row or not row["e"]:
            return None
        cur.execute(f"SELECT {JOB_COLUMNS} FROM parallel_batch.jobs WHERE job_key = %s", (job_key,))
        found = cur.fetchone()
    return Job.from_row(found) if found else None


def ensure_job(
    conn: psycopg.Connection,
    job_key: str,
    *,
    kind: str,
    plan: Sequence[dict[str, Any]],
    params: dict[str, Any] | None = None,
    source: str | None = None,
    target: str | None = None,
    full_refresh: bool = False,
) -> Job:
    """Create the job with its plan, or return the existing one with its stored plan.

    The same job_key always gets the stored plan back: a retried or re-run job resumes the chunks
    it had, never a new plan. With ``full_refresh`` the job starts over from this plan: its chunks
    are replaced by fresh ones flagged ``needs_reset`` (their earlier output and dead letters are
    deleted by each chunk's first batch commit), every running lease is fenced out, and the dead
    letters of chunks no longer in the plan and the job's key claims are deleted.

    :param job_key: the job's identity (e.g. DAG id + data interval).
    :param kind: what the job processes: its source's kind, ``"table"`` or ``"csv"``.
    :param plan: one dict per chunk with a ``chunk_id`` (and ``rows``), see
        :func:`plan_from_chunks`.
    :param params: parameters to store with the job (JSON-able): how to run every chunk.
    :param source: the source table or file, for display.
    :param target: the target table, for display.
    :param full_refresh: start the job over and replace its earlier output.
    """
    if not job_key:
        raise ValueError("job_key must not be empty")
    if not kind:
        raise ValueError("kind must not be empty")
    _check_plan(plan)
    ensure_schema(conn)
    entries = [dict(entry) for entry in plan]
    rows_total = sum(int(entry.get("rows") or 0) for entry in entries)
    with conn.transaction():
        inserted = conn.execute(
            """
            INSERT INTO parallel_batch.jobs
                (job_key, status, kind, source, target, plan, params, rows_total)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (job_key) DO NOTHING
            RETURNING job_key
            """,
            (job_key, *_job_values(kind, entries, params, source, target, rows_total)),
        ).fetchone()
        if inserted is not None:
            _insert_chunks(conn, job_key, entries, needs_reset=full_refresh)
            log.info("Created job %s with %d chunks", job_key, len(entries))
        elif full_refresh:
            _refresh(
                conn,
                job_key,
                entries,
                _job_values(kind, entries, params, source, target, rows_total),
            )
    job = get_job(conn, job_key)
    if job is None:  # deleted by someone in between: a broken setup, not a race to win
        raise ConfigurationError(f"job {job_key} vanished while it was being created")
    if inserted is None and not full_refresh:
        log.info(
            "Job %s exists (%s): reusing its stored plan of %d chunks",
            job_key,
            job.status,
            len(job.plan),
        )
    return job


def _job_values(
    kind: str,
    entries: list[dict[str, Any]],
    params: dict[str, Any] | None,
    source: str | None,
    target: str | None,
    rows_total: int,
) -> tuple[Any, ...]:
    """status, kind, source, target, plan, params, rows_total of a job row (new or refreshed)."""
    status = "completed" if not entries else "pending"
    plan, stored = Jsonb(entries, dumps=dumps), Jsonb(params or {}, dumps=dumps)
    return (status, kind, source, target, plan, stored, rows_total)


def _insert_chunks(
    conn: psycopg.Connection, job_key: str, entries: list[dict[str, Any]], *, needs_reset: bool
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO parallel_batch.chunks
                (job_key, chunk_id, position, range, rows_total, needs_reset, lease_token)
            VALUES (%s, %s, %s, %s, %s, %s, nextval('parallel_batch.lease_token_seq'))
            """,
            [
                (
                    job_key,
                    entry["chunk_id"],
                    position,
                    Jsonb(entry, dumps=dumps),
                    entry.get("rows"),
                    needs_reset,
                )
                for position, entry in enumerate(entries)
            ],
        )


def _refresh(
    conn: psycopg.Connection, job_key: str, entries: list[dict[str, Any]], values: tuple[Any, ...]
) -> None:
    """Start an existing job over from ``entries`` (inside ensure_job's transaction)."""
    # NO KEY UPDATE: a batch commit inserting dead letters holds its chunk row and takes a KEY
    # SHARE lock on the job row (the foreign key); FOR UPDATE would deadlock with it.
    conn.execute(
        "SELECT 1 FROM parallel_batch.jobs WHERE job_key = %s FOR NO KEY UPDATE", (job_key,)
    )
    # Deleting the chunk rows fences out every running lease of the old plan: their commits
    # match no row. New rows get new tokens from the sequence.
    conn.execute("DELETE FROM parallel_batch.chunks WHERE job_key = %s", (job_key,))
    _insert_chunks(conn, job_key, entries, needs_reset=True)
    conn.execute(
        "DELETE FROM parallel_batch.dead_letters WHERE job_key = %s AND NOT (chunk_id = ANY(%s))",
        (job_key, [entry["chunk_id"] for entry in entries]),
    )
    dropped = delete_job_claims(conn, job_key)
    conn.execute(
        """
        UPDATE parallel_batch.jobs SET
            status = %s, kind = %s, source = coalesce(%s, source),
            target = coalesce(%s, target), plan = %s, params = %s, rows_total = %s,
            rows_read = 0, rows_written = 0, rows_failed = 0, rows_filtered = 0, rows_fanout = 0,
            started_at = NULL, finished_at = NULL, error = NULL
        WHERE job_key = %s
        """,
        (*values, job_key),
    )
    log.warning(
        "Full refresh of job %s: %d chunks start over (%d key claims dropped); their earlier "
        "output will be replaced",
        job_key,
        len(entries),
        dropped,
    )


def roll_up(conn: psycopg.Connection, job_key: str) -> None:
    """Recompute the job's status and totals from its chunks.

    Its own transaction, after the chunk's: lock the job row first, then aggregate (a fresh
    snapshot under READ COMMITTED), so concurrent roll-ups serialise and the last one sees every
    chunk committed before it.
    """
    with conn.transaction():
        conn.execute(
            "SELECT 1 FROM parallel_batch.jobs WHERE job_key = %s FOR NO KEY UPDATE", (job_key,)
        )
        conn.execute(
            f"""
            UPDATE parallel_batch.jobs j SET
                rows_read = s.rows_read, rows_written = s.rows_written,
                rows_failed = s.rows_failed, rows_filtered = s.rows_filtered,
                rows_fanout = s.rows_fanout, rows_total = s.rows_total,
                status = CASE
                    WHEN s.total = s.completed THEN 'completed'
                    WHEN s.running > 0 THEN 'running'
                    WHEN s.failed > 0 AND s.pending = 0 THEN 'failed'
                    WHEN s.completed + s.failed > 0 THEN 'running'
                    ELSE 'pending' END,
                started_at = coalesce(j.started_at, s.started_at),
                finished_at = CASE
                    WHEN s.total = s.completed OR (s.failed > 0 AND s.running + s.pending = 0)
                    THEN coalesce(s.finished_at, now()) END,
                error = CASE WHEN s.failed > 0 AND s.running + s.pending = 0 THEN s.error END
            FROM (
                SELECT {CHUNK_TOTALS_SQL},
                       min(started_at) AS started_at, max(finished_at) AS finished_at,
                       (array_agg(chunk_id || ': ' || error ORDER BY position)
                           FILTER (WHERE status = 'failed'))[1] AS error
                FROM parallel_batch.chunks WHERE job_key = %s
            ) s
            WHERE j.job_key = %s
            """,
            (job_key, job_key),
        )
