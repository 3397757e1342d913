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

from parallel_batch.exceptions import ChunkBusyError

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
            log.warning(
                "Chunk %s of job %s is held by a live attempt: %s (backend pid %s, %s, %s), "
                "last heartbeat %s ago; waiting up to %.0f s for it",
                chunk_id,
                job_key,
                holder or "unknown holder",
                session.pid,
                session.application_name or "no application_name",
                session.client,
                "never" if heartbeat_age is None else f"{heartbeat_age:.0f} s",
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
