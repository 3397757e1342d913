"""The checkpoint store: jobs, chunk leases, and the fenced batch commit that makes exactly-once.

How one chunk moves through it::

    ensure_job(plan)      jobs row + one chunks row per plan entry (an existing job is reused)
         |
    acquire(chunk)        advisory lock (waits for a live holder, never for a dead one), then
         |                lease_token := nextval(seq), status running, attempts + 1
         v
    commit_batch(...)     ONE transaction: UPDATE chunks ... WHERE lease_token = <ours>
         |  (per batch)   (0 rows: LeaseLostError, nothing written), write(conn) the output rows,
         |                upsert the dead letters, commit. Checkpoint and output move together.
         v
    complete() / fail()   status, finished_at; job totals rolled up; lock released

Connection: the store needs a dedicated **autocommit** connection. Each method runs its own short
explicit transaction, so nothing stays open between batches (no long snapshot, no idle-in-
transaction session), and the session carries the chunk's advisory lock for the lease's life.
Do not share the connection with anything that keeps transactions open; use
:meth:`CheckpointStore.connect` to get one. A store is used from one thread at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from parallel_batch.exceptions import ChunkBusyError, ConfigurationError, LeaseLostError
from parallel_batch.store import deadletters, leases
from parallel_batch.store.catalog import JSONKey
from parallel_batch.store.deadletters import DeadLetter, dumps
from parallel_batch.store.records import ChunkState, Job, JobStatus, Lease
from parallel_batch.store.schema import ensure_schema

__all__ = [
    "DEFAULT_WAIT_TIMEOUT",
    "CheckpointStore",
    "ChunkState",
    "DeadLetter",
    "Job",
    "JobStatus",
    "Lease",
    "plan_from_chunks",
]

log = logging.getLogger(__name__)

# How long acquire() waits for a live duplicate holding the chunk before ChunkBusyError.
# A dead holder never costs this wait (its lock is gone with its session). Longer: a duplicate
# run waits for the holder to finish and then skips the completed chunk; shorter: it fails fast.
DEFAULT_WAIT_TIMEOUT = 60.0

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

# Errors stored in the chunks/jobs rows are cut to this many characters.
MAX_ERROR_CHARS = 2000

_JOB_COLUMNS = (
    "job_key, status, kind, source, target, plan, params, rows_total, rows_read, rows_written,"
    " rows_failed, created_at, started_at, finished_at, error"
)


class PlannedChunk(Protocol):
    """What :func:`plan_from_chunks` needs of a planner's chunk (TableChunk, a file chunk)."""

    @property
    def chunk_id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def plan_from_chunks(chunks: Iterable[PlannedChunk]) -> list[dict[str, Any]]:
    """Return the plan entries for :meth:`CheckpointStore.ensure_job`: each chunk's dict + its id."""
    return [{**chunk.to_dict(), "chunk_id": chunk.chunk_id} for chunk in chunks]


def _json_or_null(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value, dumps=dumps)


def _error_text(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


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


class _Fenced(Exception):
    """The fenced UPDATE matched no row: internal signal to roll back and raise LeaseLostError."""


class CheckpointStore:
    """Jobs, chunk leases, fenced batch commits and progress, in the ``parallel_batch`` schema.

    :param conn: a dedicated autocommit connection (see the module docstring); the store does not
        close it unless it opened it (:meth:`connect`).
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        if not conn.autocommit:
            raise ValueError(
                "CheckpointStore needs an autocommit connection: "
                "psycopg.connect(url, autocommit=True) or CheckpointStore.connect(url)"
            )
        self.conn = conn
        self._owns_conn = False
        self._held: set[tuple[str, str]] = set()

    @classmethod
    def connect(
        cls, conninfo: str, *, application_name: str = "parallel_batch checkpoints"
    ) -> CheckpointStore:
        """Open a dedicated autocommit connection and return a store that closes it."""
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
        store = cls(conn)
        store._owns_conn = True
        return store

    def close(self) -> None:
        """Close the connection if the store opened it (this releases every lock it held)."""
        if self._owns_conn and not self.conn.closed:
            self.conn.close()
        self._held.clear()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- jobs -------------------------------------------------------------------------------

    def ensure_schema(self) -> int:
        """Create or migrate the ``parallel_batch`` schema; return its version."""
        return ensure_schema(self.conn)

    def get_job(self, job_key: str) -> Job | None:
        """Return the job, or None when there is no such job (or no schema yet)."""
        with self.conn.transaction(), self.conn.cursor(row_factory=dict_row) as cur:
            exists = cur.execute("SELECT to_regclass('parallel_batch.jobs') IS NOT NULL AS e")
            row = exists.fetchone()
            if not row or not row["e"]:
                return None
            cur.execute(
                f"SELECT {_JOB_COLUMNS} FROM parallel_batch.jobs WHERE job_key = %s", (job_key,)
            )
            found = cur.fetchone()
        return Job.from_row(found) if found else None

    def ensure_job(
        self,
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

        The same job_key always gets the stored plan back: a retried or re-run job resumes the
        chunks it had, never a new plan. With ``full_refresh`` the job starts over from this plan:
        its chunks are replaced by fresh ones flagged ``needs_reset`` (their earlier output and
        dead letters are deleted by each chunk's first batch commit), every running lease is
        invalidated, and dead letters of chunks that are no longer in the plan are deleted.

        :param job_key: the job's identity (e.g. DAG id + data interval).
        :param kind: what the job processes, e.g. ``"table"`` or ``"csv"``.
        :param plan: one dict per chunk with a ``chunk_id`` (and ``rows``), see
            :func:`plan_from_chunks`.
        :param params: parameters to store with the job (JSON-able).
        :param source: the source table or file, for display.
        :param target: the target table, for display.
        :param full_refresh: start the job over and replace its earlier output.
        """
        if not job_key:
            raise ValueError("job_key must not be empty")
        if not kind:
            raise ValueError("kind must not be empty")
        _check_plan(plan)
        self.ensure_schema()
        entries = [dict(entry) for entry in plan]
        rows_total = sum(int(entry.get("rows") or 0) for entry in entries)
        with self.conn.transaction():
            inserted = self.conn.execute(
                """
                INSERT INTO parallel_batch.jobs
                    (job_key, status, kind, source, target, plan, params, rows_total)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (job_key) DO NOTHING
                RETURNING job_key
                """,
                (
                    job_key,
                    "completed" if not entries else "pending",
                    kind,
                    source,
                    target,
                    Jsonb(entries, dumps=dumps),
                    Jsonb(params or {}, dumps=dumps),
                    rows_total,
                ),
            ).fetchone()
            if inserted is not None:
                self._insert_chunks(job_key, entries, needs_reset=full_refresh)
                log.info("Created job %s with %d chunks", job_key, len(entries))
            elif full_refresh:
                self._refresh_job(job_key, kind, entries, params, source, target, rows_total)
        job = self.get_job(job_key)
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

    def _insert_chunks(
        self, job_key: str, entries: list[dict[str, Any]], *, needs_reset: bool
    ) -> None:
        with self.conn.cursor() as cur:
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

    def _refresh_job(
        self,
        job_key: str,
        kind: str,
        entries: list[dict[str, Any]],
        params: dict[str, Any] | None,
        source: str | None,
        target: str | None,
        rows_total: int,
    ) -> None:
        """Start an existing job over from ``entries`` (inside ensure_job's transaction)."""
        # NO KEY UPDATE: a batch commit inserting dead letters holds its chunk row and takes a
        # KEY SHARE lock on the job row (the foreign key); FOR UPDATE would deadlock with it.
        self.conn.execute(
            "SELECT 1 FROM parallel_batch.jobs WHERE job_key = %s FOR NO KEY UPDATE", (job_key,)
        )
        # Deleting the chunk rows fences out every running lease of the old plan: their
        # commits match no row. New rows get new tokens from the sequence.
        self.conn.execute("DELETE FROM parallel_batch.chunks WHERE job_key = %s", (job_key,))
        self._insert_chunks(job_key, entries, needs_reset=True)
        self.conn.execute(
            "DELETE FROM parallel_batch.dead_letters WHERE job_key = %s"
            " AND NOT (chunk_id = ANY(%s))",
            (job_key, [entry["chunk_id"] for entry in entries]),
        )
        self.conn.execute(
            """
            UPDATE parallel_batch.jobs SET
                status = %s, kind = %s, source = coalesce(%s, source),
                target = coalesce(%s, target), plan = %s, params = %s, rows_total = %s,
                rows_read = 0, rows_written = 0, rows_failed = 0,
                started_at = NULL, finished_at = NULL, error = NULL
            WHERE job_key = %s
            """,
            (
                "completed" if not entries else "pending",
                kind,
                source,
                target,
                Jsonb(entries, dumps=dumps),
                Jsonb(params or {}, dumps=dumps),
                rows_total,
                job_key,
            ),
        )
        log.warning(
            "Full refresh of job %s: %d chunks start over; their earlier output will be replaced",
            job_key,
            len(entries),
        )

    # ---- leases -----------------------------------------------------------------------------

    def acquire(
        self,
        job_key: str,
        chunk_id: str,
        *,
        holder: str | None = None,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        stale_after: float | None = None,
    ) -> Lease:
        """Take the lease of a chunk; a completed chunk comes back with ``completed=True``.

        First the chunk's advisory lock: free when no live attempt holds it (a killed one never
        blocks); a live holder is waited for, up to ``wait_timeout`` seconds. Then the chunk row
        gets a new lease token (so any older holder can no longer commit), status ``running``,
        one more attempt, the holder and a heartbeat.

        :param holder: who takes it, shown in the status view (default ``host:pid``); Airflow
            passes the task instance.
        :param wait_timeout: seconds to wait for a live holder before :class:`ChunkBusyError`.
        :param stale_after: seconds without heartbeat after which a holder is presumed hung and
            its session terminated; None (default) never does that.
        :raises ChunkBusyError: a live attempt still holds the chunk after ``wait_timeout``.
        :raises ConfigurationError: the chunk is not in the job's plan.
        """
        if wait_timeout < 0:
            raise ValueError("wait_timeout must not be negative")
        if stale_after is not None and stale_after <= 0:
            raise ValueError("stale_after must be greater than 0")
        holder = holder or leases.default_holder()
        if (job_key, chunk_id) in self._held:
            raise ChunkBusyError(
                f"chunk {chunk_id} of job {job_key} is already leased through this store"
            )
        leases.wait_for_chunk_lock(
            self.conn, job_key, chunk_id, wait_timeout=wait_timeout, stale_after=stale_after
        )
        self._held.add((job_key, chunk_id))
        try:
            lease = self._take(job_key, chunk_id, holder)
        except BaseException:
            self._unlock(job_key, chunk_id)
            raise
        if lease.completed:
            self._unlock(job_key, chunk_id)
            log.info("Chunk %s of job %s is already completed: skipping it", chunk_id, job_key)
            return lease
        self._roll_up(job_key)
        if lease.resumed_from is not None or lease.rows_read:
            log.info(
                "Resuming chunk %s of job %s after key %s (%d rows done; attempt %d, token %d)",
                chunk_id,
                job_key,
                lease.resumed_from,
                lease.rows_read,
                lease.attempts,
                lease.token,
            )
        else:
            log.info(
                "Starting chunk %s of job %s (attempt %d, token %d%s)",
                chunk_id,
                job_key,
                lease.attempts,
                lease.token,
                ", replacing its earlier output" if lease.needs_reset else "",
            )
        return lease

    def _take(self, job_key: str, chunk_id: str, holder: str) -> Lease:
        with self.conn.transaction(), self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                """
                SELECT status, range, last_key, needs_reset, rows_total, rows_read,
                       rows_written, rows_failed, attempts, lease_token
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
            attempts=row["attempts"],
        )

    def _check_active(self, lease: Lease) -> None:
        if lease.completed:
            raise ValueError(f"chunk {lease.chunk_id} of job {lease.job_key} is completed")

    def _fence(self, lease: Lease, assignments: str, params: Sequence[Any]) -> None:
        """Run the fenced UPDATE of the chunk row; raise _Fenced when the token no longer matches."""
        cur = self.conn.execute(
            f"UPDATE parallel_batch.chunks SET {assignments}"  # constant assignments
            " WHERE job_key = %s AND chunk_id = %s AND lease_token = %s",
            (*params, lease.job_key, lease.chunk_id, lease.token),
        )
        if cur.rowcount != 1:
            raise _Fenced

    def _lease_lost(self, lease: Lease) -> LeaseLostError:
        try:
            row = self.conn.execute(
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

    def commit_batch(
        self,
        lease: Lease,
        *,
        last_key: JSONKey | None,
        rows_read: int,
        write: Callable[[psycopg.Connection], int] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        rows_written: int | None = None,
    ) -> int:
        """Commit one batch: checkpoint, output rows and dead letters in ONE transaction.

        In order: the fenced checkpoint UPDATE (which also locks the chunk row, so a takeover
        waits for us or we see its token), then ``write(conn)`` (the output rows, e.g. through
        ``writer.write_rows``; it must not commit), then the dead letters, then COMMIT. A
        lease that was taken over raises :class:`LeaseLostError` and nothing is written. With
        ``lease.needs_reset`` the chunk's dead letters are deleted first; ``write`` must then
        delete the chunk's earlier output rows before it writes.

        :param last_key: the last key read in this batch (every row up to it is now in the target
            or the dead letters); None keeps the current checkpoint.
        :param rows_read: rows in the batch.
        :param write: writes the output rows on the given connection; returns rows written.
        :param dead_letters: the batch's items that failed for good.
        :param rows_written: the rows ``write`` will write, when the caller knows: counted in the
            fenced UPDATE, which saves a statement per batch; a different return of ``write``
            rolls the batch back with ``ValueError``. None: counted after ``write`` returns.
        :returns: rows written.
        :raises LeaseLostError: the chunk's lease token changed; the transaction was rolled back.
        """
        self._check_active(lease)
        if rows_read < 0:
            raise ValueError("rows_read must not be negative")
        if rows_written is not None and rows_written < 0:
            raise ValueError("rows_written must not be negative")
        failed = len(dead_letters)
        try:
            with self.conn.transaction():
                self._fence(
                    lease,
                    "last_key = coalesce(%s, last_key), rows_read = rows_read + %s,"
                    " rows_written = rows_written + %s, rows_failed = rows_failed + %s,"
                    " heartbeat_at = now(), needs_reset = false",
                    (_json_or_null(last_key), rows_read, rows_written or 0, failed),
                )
                if lease.needs_reset:
                    deadletters.delete_chunk_dead_letters(self.conn, lease.job_key, lease.chunk_id)
                written = write(self.conn) if write is not None else 0
                if written < 0:
                    raise ValueError("write must return the number of rows written (>= 0)")
                if rows_written is not None and written != rows_written:
                    raise ValueError(
                        f"write wrote {written} rows where rows_written announced {rows_written}"
                    )
                if dead_letters:
                    deadletters.record_dead_letters(
                        self.conn, lease.job_key, lease.chunk_id, dead_letters
                    )
                if written and rows_written is None:
                    # We hold the row lock since the fenced UPDATE: no fence needed again.
                    self.conn.execute(
                        "UPDATE parallel_batch.chunks SET rows_written = rows_written + %s"
                        " WHERE job_key = %s AND chunk_id = %s",
                        (written, lease.job_key, lease.chunk_id),
                    )
        except _Fenced:
            self._unlock(lease.job_key, lease.chunk_id)
            raise self._lease_lost(lease) from None
        if last_key is not None:
            lease.last_key = last_key
        lease.needs_reset = False
        lease.rows_read += rows_read
        lease.rows_written += written
        lease.rows_failed += failed
        lease.batches_committed += 1
        return written

    def heartbeat(self, lease: Lease) -> None:
        """Record that the holder is alive (cheap; fenced).

        :raises LeaseLostError: the chunk was taken over.
        """
        self._check_active(lease)
        try:
            with self.conn.transaction():
                self._fence(lease, "heartbeat_at = now()", ())
        except _Fenced:
            self._unlock(lease.job_key, lease.chunk_id)
            raise self._lease_lost(lease) from None

    def complete(self, lease: Lease) -> None:
        """Mark the chunk completed, roll the job's totals up and release the chunk's lock.

        :raises LeaseLostError: the chunk was taken over (it is not marked completed).
        """
        self._check_active(lease)
        if lease.needs_reset:
            raise ValueError(
                f"chunk {lease.chunk_id} of job {lease.job_key} still needs its earlier output "
                "replaced: commit a batch (with the reset) before completing it"
            )
        try:
            with self.conn.transaction():
                self._fence(
                    lease,
                    "status = 'completed', finished_at = now(), heartbeat_at = now(), error = NULL",
                    (),
                )
        except _Fenced:
            self._unlock(lease.job_key, lease.chunk_id)
            raise self._lease_lost(lease) from None
        self._unlock(lease.job_key, lease.chunk_id)
        self._roll_up(lease.job_key)
        log.info(
            "Completed chunk %s of job %s: %d rows read, %d written, %d dead letters",
            lease.chunk_id,
            lease.job_key,
            lease.rows_read,
            lease.rows_written,
            lease.rows_failed,
        )

    def fail(self, lease: Lease, error: BaseException | str) -> bool:
        """Mark the chunk failed with ``error``, roll the job up and release the chunk's lock.

        Never raises for a lost lease (it is called while handling another error).

        :returns: False when the lease had been taken over (the chunk row was left alone).
        """
        self._check_active(lease)
        recorded = False
        try:
            with self.conn.transaction():
                self._fence(
                    lease,
                    "status = 'failed', finished_at = now(), error = %s",
                    (_error_text(error),),
                )
            recorded = True
        except _Fenced:
            log.warning(
                "Chunk %s of job %s was taken over; not marking it failed",
                lease.chunk_id,
                lease.job_key,
            )
        except psycopg.Error as exc:
            log.warning(
                "Could not mark chunk %s of job %s failed: %s", lease.chunk_id, lease.job_key, exc
            )
            self._held.discard((lease.job_key, lease.chunk_id))
            return False
        self._unlock(lease.job_key, lease.chunk_id)
        if recorded:
            self._roll_up(lease.job_key)
        return recorded

    def release(self, lease: Lease) -> None:
        """Release the chunk's lock without changing its row (it stays ``running`` until the next
        attempt takes it over); for a lease that was lost or is abandoned."""
        self._unlock(lease.job_key, lease.chunk_id)

    def _unlock(self, job_key: str, chunk_id: str) -> None:
        self._held.discard((job_key, chunk_id))
        if self.conn.closed or self.conn.broken:
            return  # the session is gone, and its locks with it
        try:
            leases.unlock(self.conn, leases.chunk_lock_name(job_key, chunk_id))
        except psycopg.Error as exc:
            log.warning(
                "Could not release the lock of chunk %s of job %s: %s", chunk_id, job_key, exc
            )

    def _roll_up(self, job_key: str) -> None:
        """Recompute the job's status and totals from its chunks.

        Its own transaction, after the chunk's: lock the job row first, then aggregate (a fresh
        snapshot under READ COMMITTED), so concurrent roll-ups serialise and the last one sees
        every chunk committed before it.
        """
        with self.conn.transaction():
            self.conn.execute(
                "SELECT 1 FROM parallel_batch.jobs WHERE job_key = %s FOR NO KEY UPDATE",
                (job_key,),
            )
            self.conn.execute(
                """
                UPDATE parallel_batch.jobs j SET
                    rows_read = s.rows_read, rows_written = s.rows_written,
                    rows_failed = s.rows_failed,
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
                    error = CASE WHEN s.failed > 0 AND s.running + s.pending = 0
                        THEN s.error END
                FROM (
                    SELECT count(*) AS total,
                           count(*) FILTER (WHERE status = 'completed') AS completed,
                           count(*) FILTER (WHERE status = 'running') AS running,
                           count(*) FILTER (WHERE status = 'failed') AS failed,
                           count(*) FILTER (WHERE status = 'pending') AS pending,
                           coalesce(sum(rows_read), 0) AS rows_read,
                           coalesce(sum(rows_written), 0) AS rows_written,
                           coalesce(sum(rows_failed), 0) AS rows_failed,
                           min(started_at) AS started_at, max(finished_at) AS finished_at,
                           (array_agg(chunk_id || ': ' || error ORDER BY position)
                               FILTER (WHERE status = 'failed'))[1] AS error
                    FROM parallel_batch.chunks WHERE job_key = %s
                ) s
                WHERE j.job_key = %s
                """,
                (job_key, job_key),
            )

    # ---- progress ---------------------------------------------------------------------------

    def chunk_rows(self, job_key: str) -> list[ChunkState]:
        """Return the job's chunks in plan order, with liveness and pending dead letters."""
        with self.conn.transaction(), self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""
                SELECT c.job_key, c.chunk_id, c.position, c.range, c.status, c.last_key,
                       c.rows_total, c.rows_read, c.rows_written, c.rows_failed, c.attempts,
                       c.lease_token, c.holder, c.heartbeat_at, c.started_at, c.finished_at,
                       c.error,
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

    def job_status(self, job_key: str) -> JobStatus | None:
        """Return the job's progress computed from its chunks now, or None for an unknown job."""
        statuses = self._statuses("WHERE j.job_key = %s", (job_key,), limit=1)
        return statuses[0] if statuses else None

    def list_jobs(self, *, limit: int = 20, status: str | None = None) -> list[JobStatus]:
        """Return the most recently created jobs' progress, newest first.

        :param limit: jobs at most.
        :param status: only jobs in that status.
        """
        if limit <= 0:
            raise ValueError("limit must be greater than 0")
        if status is None:
            return self._statuses("", (), limit=limit)
        return self._statuses("WHERE j.status = %s", (status,), limit=limit)

    def _statuses(self, where: str, params: tuple[Any, ...], *, limit: int) -> list[JobStatus]:
        with self.conn.transaction(), self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT to_regclass('parallel_batch.jobs') IS NOT NULL AS e"
            ).fetchone()
            if not row or not row["e"]:
                return []
            jobs_columns = ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
            cur.execute(
                f"""
                SELECT {jobs_columns},
                       s.total AS chunks_total, s.pending AS chunks_pending,
                       s.running AS chunks_running, s.completed AS chunks_completed,
                       s.failed AS chunks_failed, s.rows_total AS live_rows_total,
                       s.rows_read AS live_rows_read, s.rows_written AS live_rows_written,
                       s.rows_failed AS live_rows_failed,
                       (SELECT count(*) FROM parallel_batch.dead_letters d
                        WHERE d.job_key = j.job_key AND d.replayed_at IS NULL) AS dead_letters,
                       extract(epoch FROM coalesce(j.finished_at, now()) - j.started_at)::float8
                           AS elapsed_seconds
                FROM parallel_batch.jobs j
                CROSS JOIN LATERAL (
                    SELECT count(*) AS total,
                           count(*) FILTER (WHERE status = 'pending') AS pending,
                           count(*) FILTER (WHERE status = 'running') AS running,
                           count(*) FILTER (WHERE status = 'completed') AS completed,
                           count(*) FILTER (WHERE status = 'failed') AS failed,
                           coalesce(sum(rows_total), 0) AS rows_total,
                           coalesce(sum(rows_read), 0) AS rows_read,
                           coalesce(sum(rows_written), 0) AS rows_written,
                           coalesce(sum(rows_failed), 0) AS rows_failed
                    FROM parallel_batch.chunks c WHERE c.job_key = j.job_key
                ) s
                {where}
                ORDER BY j.created_at DESC, j.job_key
                LIMIT %s
                """,  # where: a constant condition chosen above
                (*params, limit),
            )
            rows = cur.fetchall()
        return [self._status(row) for row in rows]

    @staticmethod
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
            dead_letters=int(row["dead_letters"]),
            elapsed_seconds=elapsed,
            rate_per_second=rate,
            eta_seconds=eta,
        )
