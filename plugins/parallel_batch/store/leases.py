"""Chunk locks: a session-level advisory lock per (job_key, chunk_id), and waiting for it.

The lock says that a live attempt is working on the chunk. It belongs to the attempt's database
session, so Postgres releases it the moment that session ends: a killed process, a closed
connection, a terminated backend. A successor therefore never waits for a dead attempt, only for
a live one (the same job run twice at once), and it says in its log whom it waits for.

Correctness never rests on the lock alone: the chunk row's lease token fences every commit (see
``checkpoints.py``). The lock decides who may start; the token decides who may still commit.

The lock key is ``hashtextextended('parallel_batch:chunk:<job_key>\\x1f<chunk_id>', 0)``, a
64-bit hash computed by the server (so SQL in the status view can find the same lock in
``pg_locks``). A collision between two chunks costs a wait, never a wrong result.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from typing import NamedTuple

import psycopg
from psycopg.rows import dict_row

from parallel_batch.exceptions import ChunkBusyError, ConfigurationError, LeaseLostError
from parallel_batch.store.records import Lease

log = logging.getLogger(__name__)

# A waiting attempt blocks in the server for at most this many seconds at a time, then looks
# again at who holds the lock (to log it, and to check stale_after). The lock is granted the
# moment it is released, whatever the slice. Longer: fewer queries; shorter: fresher logs.
WAIT_SLICE_SECONDS = 5.0

# SQL expression of the lock key for a lock name passed as a parameter.
LOCK_KEY_SQL = "hashtextextended(%s, 0)"

# The same key computed from a chunks row aliased ``c``, and the pg_locks rows that hold it.
CHUNK_LOCK_KEY_SQL = (
    "hashtextextended('parallel_batch:chunk:' || c.job_key || chr(31) || c.chunk_id, 0)"
)
HOLDER_FILTER_SQL = """
    l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.classid = ((k.key >> 32) & 4294967295)::oid
    AND l.objid = (k.key & 4294967295)::oid
"""


# Server-side TCP keepalives of the store's session. A killed holder's session ends at once
# (its socket is closed by the kernel), but when its machine vanishes (power loss, a network
# partition) the server notices only through keepalives: after IDLE + INTERVAL * COUNT seconds
# (90 s) instead of the OS default of about two hours, and then the chunk's lock is free.
# Shorter: a faster takeover; too short: a slow network drops live holders. (No-ops on a Unix
# socket, where the kernel always knows.)
TCP_KEEPALIVES = {
    "tcp_keepalives_idle": 60,
    "tcp_keepalives_interval": 10,
    "tcp_keepalives_count": 3,
}


def connect_session(conninfo: str, *, application_name: str) -> psycopg.Connection:
    """Open the autocommit session that holds chunk locks, with the keepalives above."""
    conn = psycopg.connect(conninfo, autocommit=True, application_name=application_name)
    try:
        conn.execute(
            "SELECT set_config(name, value, false) FROM unnest(%s::text[], %s::text[])"
            " AS s(name, value)",
            (list(TCP_KEEPALIVES), [str(v) for v in TCP_KEEPALIVES.values()]),
        )
    except BaseException:
        conn.close()
        raise
    return conn


class LockHolder(NamedTuple):
    """The database session that holds a chunk's lock.

    :param pid: its backend process id (``pg_terminate_backend`` takes it).
    :param application_name: the client's application_name.
    :param client: the client address, or "local" for a Unix socket.
    :param backend_start: when the session began.
    """

    pid: int
    application_name: str
    client: str
    backend_start: dt.datetime | None


def default_holder() -> str:
    """Return ``host:pid`` of this process: who holds a lease, as the chunks table shows it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def chunk_lock_name(job_key: str, chunk_id: str) -> str:
    """Return the text whose hash is the advisory lock key of a chunk."""
    return f"parallel_batch:chunk:{job_key}\x1f{chunk_id}"


def try_lock(conn: psycopg.Connection, name: str) -> bool:
    """Take the session-level advisory lock ``name`` if it is free; never wait."""
    row = conn.execute(f"SELECT pg_try_advisory_lock({LOCK_KEY_SQL})", (name,)).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection, name: str) -> bool:
    """Release the session-level advisory lock ``name``; False when this session did not hold it."""
    row = conn.execute(f"SELECT pg_advisory_unlock({LOCK_KEY_SQL})", (name,)).fetchone()
    return bool(row and row[0])


def lock_holder(conn: psycopg.Connection, name: str) -> LockHolder | None:
    """Return the session holding the advisory lock ``name``, or None when it is free."""
    row = conn.execute(
        f"""
        SELECT a.pid, coalesce(a.application_name, ''),
               coalesce(host(a.client_addr), 'local'), a.backend_start
        FROM (SELECT {LOCK_KEY_SQL} AS key) k
        JOIN pg_locks l ON {HOLDER_FILTER_SQL}
        LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        LIMIT 1
        """,
        (name,),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return LockHolder(int(row[0]), row[1], row[2], row[3])


def _chunk_holder(
    conn: psycopg.Connection, job_key: str, chunk_id: str
) -> tuple[str | None, float | None]:
    row = conn.execute(
        "SELECT holder, extract(epoch FROM now() - heartbeat_at)::float8"
        " FROM parallel_batch.chunks WHERE job_key = %s AND chunk_id = %s",
        (job_key, chunk_id),
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def _lock_within(conn: psycopg.Connection, name: str, seconds: float) -> bool:
    """Wait in the server for the lock for at most ``seconds``; True once it is ours."""
    if seconds <= 0:
        return try_lock(conn, name)
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false)", (f"{max(int(seconds * 1000), 1)}ms",)
    )
    try:
        conn.execute(f"SELECT pg_advisory_lock({LOCK_KEY_SQL})", (name,))
        return True
    except psycopg.errors.LockNotAvailable:
        return False
    finally:
        conn.execute("RESET lock_timeout")


def wait_for_chunk_lock(
    conn: psycopg.Connection,
    job_key: str,
    chunk_id: str,
    *,
    wait_timeout: float,
    stale_after: float | None = None,
) -> None:
    """Take the chunk's lock, waiting up to ``wait_timeout`` seconds for a live holder.

    :param conn: an autocommit connection: the lock belongs to its session.
    :param wait_timeout: seconds to wait for a live holder before giving up (0: do not wait).
    :param stale_after: when set, a holder whose last heartbeat is older than this many seconds
        is presumed hung: its session is terminated (``pg_terminate_backend``) and the lock taken.
        Its lease token is then stale too, so even if it lives on it can never commit.
    :raises ChunkBusyError: when a live attempt still holds the chunk after ``wait_timeout``.
    """
    name = chunk_lock_name(job_key, chunk_id)
    if try_lock(conn, name):
        return
    deadline = time.monotonic() + wait_timeout
    waited_for: tuple[str | None, int | None] | None = None
    while True:
        holder, heartbeat_age = _chunk_holder(conn, job_key, chunk_id)
        session = lock_holder(conn, name)
        if session is None:  # released between our try and our look
            if try_lock(conn, name):
                return
            continue
        if waited_for != (holder, session.pid):
            waited_for = (holder, session.pid)
            # wait_timeout=0 asks not to wait (the caller takes another chunk): not a warning
            log.log(
                logging.WARNING if wait_timeout > 0 else logging.DEBUG,
                "Chunk %s of job %s is held by a live attempt: %s (backend pid %s, %s, %s), "
                "%s; waiting up to %.0f s for it",
                chunk_id,
                job_key,
                holder or "unknown holder",
                session.pid,
                session.application_name or "no application_name",
                session.client,
                "no heartbeat yet"
                if heartbeat_age is None
                else f"last heartbeat {heartbeat_age:.0f} s ago",
                max(deadline - time.monotonic(), 0.0),
            )
        if stale_after is not None and heartbeat_age is not None and heartbeat_age > stale_after:
            log.warning(
                "The holder of chunk %s of job %s (%s, backend pid %s) has not sent a heartbeat "
                "for %.0f s (more than stale_after=%.0f s): terminating its session",
                chunk_id,
                job_key,
                holder,
                session.pid,
                heartbeat_age,
                stale_after,
            )
            try:
                conn.execute("SELECT pg_terminate_backend(%s, 5000)", (session.pid,))
            except psycopg.errors.InsufficientPrivilege as exc:
                log.warning("Cannot terminate backend %s (%s); waiting on", session.pid, exc)
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChunkBusyError(
                f"chunk {chunk_id} of job {job_key} is held by a live attempt "
                f"({holder or 'unknown holder'}, backend pid {session.pid}); gave up after "
                f"waiting {wait_timeout:g} s. A duplicate run of the same job is processing it; "
                f"retry later, or use another job_key to run the job twice"
            )
        if _lock_within(conn, name, min(left, WAIT_SLICE_SECONDS)):
            log.info("Chunk %s of job %s was released by its holder; taking it", chunk_id, job_key)
            return


def take_lease(conn: psycopg.Connection, job_key: str, chunk_id: str, holder: str) -> Lease:
    """Give the chunk row a new lease token (any older holder can no longer commit), status
    running, one more attempt; return the lease (``completed`` when the chunk is done already).

    Call it holding the chunk's lock (:func:`wait_for_chunk_lock`).

    :raises ConfigurationError: the chunk is not in the job's plan.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """
            SELECT status, range, last_key, needs_reset, rows_total, rows_read,
                   rows_written, rows_failed, rows_filtered, rows_fanout, attempts,
                   lease_token
            FROM parallel_batch.chunks WHERE job_key = %s AND chunk_id = %s FOR UPDATE
            """,
            (job_key, chunk_id),
        ).fetchone()
        if row is None:
            raise ConfigurationError(
                f"chunk {chunk_id} is not in the plan of job {job_key} (was the job planned, "
                f"or refreshed with a new plan since?)"
            )
        if row["status"] != "completed":
            taken = cur.execute(
                """
                UPDATE parallel_batch.chunks SET
                    lease_token = nextval('parallel_batch.lease_token_seq'),
                    status = 'running', attempts = attempts + 1, holder = %s,
                    heartbeat_at = now(), started_at = coalesce(started_at, now()),
                    finished_at = NULL, error = NULL
                WHERE job_key = %s AND chunk_id = %s
                RETURNING lease_token, attempts
                """,
                (holder, job_key, chunk_id),
            ).fetchone()
            assert taken is not None  # the row is locked FOR UPDATE above
            row.update(taken)
    return Lease(
        job_key=job_key,
        chunk_id=chunk_id,
        token=row["lease_token"],
        holder=holder,
        range=row["range"],
        completed=row["status"] == "completed",
        needs_reset=row["needs_reset"],
        last_key=row["last_key"],
        resumed_from=row["last_key"],
        rows_total=row["rows_total"],
        rows_read=row["rows_read"],
        rows_written=row["rows_written"],
        rows_failed=row["rows_failed"],
        rows_filtered=row["rows_filtered"],
        rows_fanout=row["rows_fanout"],
        attempts=row["attempts"],
    )


def lease_lost(conn: psycopg.Connection, lease: Lease) -> LeaseLostError:
    """Return the error for a lease that was taken over, saying by whom."""
    try:
        row = conn.execute(
            "SELECT lease_token, holder FROM parallel_batch.chunks"
            " WHERE job_key = %s AND chunk_id = %s",
            (lease.job_key, lease.chunk_id),
        ).fetchone()
    except psycopg.Error:
        row = None
    if row is None:
        detail = "it is no longer in the job's plan (the job was refreshed)"
    else:
        detail = f"token {row[0]}, held by {row[1] or 'unknown'}"
    return LeaseLostError(
        f"lease lost: chunk {lease.chunk_id} of job {lease.job_key} was taken over by another "
        f"attempt ({detail}); this attempt (token {lease.token}) wrote nothing"
    )


def log_start(lease: Lease) -> None:
    """Log that an attempt starts or resumes its chunk."""
    if lease.resumed_from is not None or lease.rows_read:
        log.info(
            "Resuming chunk %s of job %s after %s (%d rows done; attempt %d, token %d)",
            lease.chunk_id,
            lease.job_key,
            lease.resumed_from,
            lease.rows_read,
            lease.attempts,
            lease.token,
        )
    else:
        log.info(
            "Starting chunk %s of job %s (attempt %d, token %d%s)",
            lease.chunk_id,
            lease.job_key,
            lease.attempts,
            lease.token,
            ", replacing its earlier output" if lease.needs_reset else "",
        )
