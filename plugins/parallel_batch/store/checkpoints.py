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

The store needs a dedicated **autocommit** connection (:meth:`CheckpointStore.connect`): each
method runs its own short transaction (no long snapshot, no idle-in-transaction session), and the
session carries the chunk's advisory lock for the lease's life. One thread at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from parallel_batch.exceptions import ChunkBusyError
from parallel_batch.store import deadletters, jobs, leases
from parallel_batch.store import status as _status
from parallel_batch.store.catalog import JSONKey
from parallel_batch.store.deadletters import DeadLetter, dumps
from parallel_batch.store.jobs import plan_from_chunks
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

# Errors stored in the chunks/jobs rows are cut to this many characters.
MAX_ERROR_CHARS = 2000


def _json_or_null(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value, dumps=dumps)


def _error_text(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


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
        conn = leases.connect_session(conninfo, application_name=application_name)
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

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- jobs -------------------------------------------------------------------------------

    def ensure_schema(self) -> int:
        """Create or migrate the ``parallel_batch`` schema; return its version."""
        return ensure_schema(self.conn)

    def get_job(self, job_key: str) -> Job | None:
        """Return the job, or None (see :func:`parallel_batch.store.jobs.get_job`)."""
        return jobs.get_job(self.conn, job_key)

    def ensure_job(self, job_key: str, **options: Any) -> Job:
        """Create the job or reuse its stored plan: :func:`parallel_batch.store.jobs.ensure_job`
        (``kind``, ``plan``, ``params``, ``source``, ``target``, ``full_refresh``)."""
        return jobs.ensure_job(self.conn, job_key, **options)

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
            lease = leases.take_lease(self.conn, job_key, chunk_id, holder)
        except BaseException:
            self._unlock(job_key, chunk_id)
            raise
        if lease.completed:
            self._unlock(job_key, chunk_id)
            # The job's roll-up after this chunk's completion may have been lost with its
            # holder (killed in between): a rerun repairs the job's status.
            self._roll_up(job_key)
            log.info("Chunk %s of job %s is already completed: skipping it", chunk_id, job_key)
            return lease
        self._roll_up(job_key)
        leases.log_start(lease)
        return lease

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

    def commit_batch(
        self,
        lease: Lease,
        *,
        last_key: JSONKey | None,
        rows_read: int,
        write: Callable[[psycopg.Connection], int] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        rows_written: int | None = None,
        rows_filtered: int = 0,
        rows_fanout: int = 0,
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
        :param rows_filtered: rows of the batch the transform dropped (no output, no failure).
        :param rows_fanout: output rows beyond one per source row, so that the chunk's counters
            keep ``rows_read == rows_written - rows_fanout + rows_filtered + rows_failed``.
        :returns: rows written.
        :raises LeaseLostError: the chunk's lease token changed; the transaction was rolled back.
        """
        self._check_active(lease)
        if rows_read < 0:
            raise ValueError("rows_read must not be negative")
        if rows_written is not None and rows_written < 0:
            raise ValueError("rows_written must not be negative")
        if rows_filtered < 0 or rows_fanout < 0:
            raise ValueError("rows_filtered and rows_fanout must not be negative")
        failed = len(dead_letters)
        try:
            with self.conn.transaction():
                self._fence(
                    lease,
                    "last_key = coalesce(%s, last_key), rows_read = rows_read + %s,"
                    " rows_written = rows_written + %s, rows_failed = rows_failed + %s,"
                    " rows_filtered = rows_filtered + %s, rows_fanout = rows_fanout + %s,"
                    " heartbeat_at = now(), needs_reset = false",
                    (
                        _json_or_null(last_key),
                        rows_read,
                        rows_written or 0,
                        failed,
                        rows_filtered,
                        rows_fanout,
                    ),
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
            raise leases.lease_lost(self.conn, lease) from None
        if last_key is not None:
            lease.last_key = last_key
        lease.needs_reset = False
        lease.rows_read += rows_read
        lease.rows_written += written
        lease.rows_failed += failed
        lease.rows_filtered += rows_filtered
        lease.rows_fanout += rows_fanout
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
            raise leases.lease_lost(self.conn, lease) from None

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
                    "status = 'completed', finished_at = now(), heartbeat_at = now(), error = NULL,"
                    " rows_total = rows_read",  # records, once known (a plan only estimates)
                    (),
                )
        except _Fenced:
            self._unlock(lease.job_key, lease.chunk_id)
            raise leases.lease_lost(self.conn, lease) from None
        self._unlock(lease.job_key, lease.chunk_id)
        self._roll_up(lease.job_key)
        log.info(
            "Completed chunk %s of job %s: %d rows read, %d written, %d filtered, %d dead letters",
            *(lease.chunk_id, lease.job_key, lease.rows_read, lease.rows_written),
            *(lease.rows_filtered, lease.rows_failed),
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
        jobs.roll_up(self.conn, job_key)

    # ---- progress (the read model in store/status.py) -----------------------------------------

    def chunk_rows(self, job_key: str) -> list[ChunkState]:
        """Return the job's chunks in plan order, with liveness and pending dead letters."""
        return _status.chunk_states(self.conn, job_key)

    def job_status(self, job_key: str) -> JobStatus | None:
        """Return the job's progress computed from its chunks now, or None for an unknown job."""
        return _status.job_status(self.conn, job_key)

    def list_jobs(self, *, limit: int = 20, status: str | None = None) -> list[JobStatus]:
        """Return the most recently created jobs' progress, newest first."""
        return _status.list_jobs(self.conn, limit=limit, status=status)
