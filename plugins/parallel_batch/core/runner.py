"""Run one chunk of a table job end to end: lease, plan batches, prepare them, commit, complete.

How the rows of a chunk move (one attempt)::

    store.acquire(chunk)              completed already? -> ChunkSummary(skipped=True)
        |
    RangeReader.ranges(after=lease.last_key)    each batch planned as a key range (lower, upper]
        |                                       of batch_rows rows: one index scan, no row sent
        v
    prepare each batch (batch_work)   read the range, transform (failing rows isolated and
        |                             retried), encode the outputs for the target's COPY:
        |                             - in a WorkerPool: each worker on its own connection, up to
        |                               max_workers + read_ahead batches in flight;
        |                             - without one: in this process, read_ahead batches ahead on
        |                               a thread
        v
    store.commit_batch(...)           ONE transaction, in key order: fenced checkpoint (the
        |                             batch's upper key), [full refresh: delete the chunk's
        |                             earlier output], the encoded outputs in one COPY, the dead
        |                             letters; a lost lease raises and writes nothing
        v
    store.complete(lease)         -> ChunkSummary (the chunk's totals over all its attempts)

Every row read ends in the target or in the dead letters, in the same transaction as the
checkpoint that moves past it: a killed attempt loses nothing and duplicates nothing, and the next
attempt starts after the last committed key. A batch that kills its worker (a ``crash:`` row, a
segfault) or runs past the pool's ``task_timeout`` is cut into SPLIT_PARTS ranges prepared
again, and so on down to the row responsible, which becomes a dead letter (WorkerCrashedError /
TaskTimeoutError). An error marks the chunk failed (its checkpoint stays) and is raised again;
a :class:`~parallel_batch.exceptions.LeaseLostError` is raised as it is (another attempt owns the
chunk now).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future

import psycopg

from parallel_batch.core.batch_transform import DEFAULT_RETRY, BatchFunction, FailedRow
from parallel_batch.core.batch_work import (
    BatchWork,
    PreparedBatch,
    connect_reader,
    prepare_batch,
    prepare_in_worker,
)
from parallel_batch.core.refresh import delete_chunk_output
from parallel_batch.core.table_job import DEFAULT_BATCH_ROWS, ChunkSummary, TableJobSpec
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.progress import ProgressCallback, ProgressTracker
from parallel_batch.engine.readahead import ReadAhead
from parallel_batch.engine.retry import RetryPolicy
from parallel_batch.engine.workers.records import BatchResult
from parallel_batch.engine.workers.worker import RemoteTraceback
from parallel_batch.exceptions import BatchPrepareError, LeaseLostError
from parallel_batch.sources.table.planner import TableChunk
from parallel_batch.sources.table.ranges import BatchRange, RangeReader
from parallel_batch.sources.table.reader import use_reader_timezone
from parallel_batch.store.catalog import key_to_json
from parallel_batch.store.checkpoints import DEFAULT_WAIT_TIMEOUT, CheckpointStore
from parallel_batch.store.copy_data import CopyData
from parallel_batch.store.deadletters import DeadLetter, json_payload
from parallel_batch.store.records import Lease
from parallel_batch.store.writer import copy_format, write_rows

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_RETRY",
    "READ_AHEAD_BATCHES",
    "SPLIT_PARTS",
    "ChunkSummary",
    "TableJobSpec",
    "process_table_chunk",
    "run_table_chunk",
]

log = logging.getLogger(__name__)

# Batches prepared ahead of the one being committed: on the thread without a pool, queued beyond
# one per worker with a pool (so a worker that finishes a batch finds the next one waiting while
# the parent commits). 0: none (no thread; each worker waits for the commits). More only holds
# more encoded batches in memory: the slower of preparing and committing sets the pace.
READ_AHEAD_BATCHES = 1
# Parts a batch that killed its worker (or timed out) is cut into, again and again down to the
# row responsible. Each round costs one failed run of the part holding it (a dead worker to
# replace, or a whole task_timeout): about log_k(batch_rows) rounds, so 16 parts take 4 rounds
# for 10,000 rows where halving takes 14. More parts: fewer rounds, more (smaller) statements.
SPLIT_PARTS = 16
# error_type of a pool failure that the batch's rows caused; any other error is raised.
_SPLIT_ON = frozenset({"WorkerCrashedError", "TaskTimeoutError"})

_Prepared = Generator[tuple[BatchRange, PreparedBatch], None, None]


class _RowMismatchError(RuntimeError):
    """Raised when a batch's outputs and dead letters do not add up to its rows (a bug)."""


def run_table_chunk(
    conninfo: str,
    job_key: str,
    chunk: TableChunk,
    spec: TableJobSpec,
    transform: BatchFunction,
    *,
    holder: str | None = None,
    pool: WorkerPool | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    progress: ProgressTracker | None = None,
    on_progress: ProgressCallback | None = None,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    stale_after: float | None = None,
    read_ahead: int = READ_AHEAD_BATCHES,
) -> ChunkSummary:
    """Process one chunk of a table job on connections of its own; see :func:`process_table_chunk`.

    Opens the checkpoint store's connection (it carries the chunk's lock) and the reader's, and
    closes both at the end, which releases the lock whatever happened.

    :param conninfo: the database URL or conninfo string (pool workers connect with it too).
    """
    with (
        CheckpointStore.connect(conninfo, application_name="parallel_batch chunk") as store,
        connect_reader(conninfo, application_name="parallel_batch reader") as read_conn,
    ):
        return process_table_chunk(
            store,
            read_conn,
            job_key,
            chunk,
            spec,
            transform,
            conninfo=conninfo,
            holder=holder,
            pool=pool,
            retry=retry,
            progress=progress,
            on_progress=on_progress,
            wait_timeout=wait_timeout,
            stale_after=stale_after,
            read_ahead=read_ahead,
        )


def process_table_chunk(
    store: CheckpointStore,
    read_conn: psycopg.Connection,
    job_key: str,
    chunk: TableChunk,
    spec: TableJobSpec,
    transform: BatchFunction,
    *,
    conninfo: str | None = None,
    holder: str | None = None,
    pool: WorkerPool | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    progress: ProgressTracker | None = None,
    on_progress: ProgressCallback | None = None,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    stale_after: float | None = None,
    read_ahead: int = READ_AHEAD_BATCHES,
) -> ChunkSummary:
    """Process one chunk of a table job exactly once, resuming after its last checkpoint.

    :param store: the checkpoint store (its own autocommit connection); the job must exist
        (:meth:`CheckpointStore.ensure_job`) with this chunk in its plan.
    :param read_conn: an autocommit connection for the reader alone (its session's TimeZone is
        set to UTC: timestamptz values reach the transform in UTC).
    :param job_key: the job.
    :param chunk: the chunk (its range; its ``chunk_id`` names it in the store).
    :param spec: source, target, columns, write mode, batch size and filter.
    :param transform: a picklable, module-level batch function returning one output row (in
        ``spec.target_columns`` order) per input row (in ``spec.source_columns`` order).
    :param conninfo: the database, for the pool's workers to read on (required with a pool).
    :param holder: who processes the chunk, for the status view (default ``host:pid``).
    :param pool: a WorkerPool to prepare batches in (isolates rows that crash their worker);
        None: prepare them in this process (a crash row ends the attempt).
    :param retry: tries per failing row in all (its first try alone included).
    :param progress: a tracker to advance by the rows of each committed batch; default: one that
        logs every 10 s.
    :param on_progress: called with the tracker's snapshot after each committed batch.
    :param wait_timeout: seconds to wait for a live duplicate holding the chunk.
    :param stale_after: terminate a holder silent for this many seconds (None: never).
    :param read_ahead: batches prepared ahead of the commit (see :data:`READ_AHEAD_BATCHES`).
    :returns: the chunk's summary; ``skipped`` when it was already completed.
    :raises ChunkBusyError: a live attempt held the chunk for longer than ``wait_timeout``.
    :raises LeaseLostError: another attempt took the chunk over; this one's last batch was not
        committed.
    """
    if read_ahead < 0:
        raise ValueError("read_ahead must not be negative")
    if read_conn is store.conn:
        raise ValueError("the reader needs a connection of its own, not the store's")
    if not read_conn.autocommit:
        raise ValueError(
            "the reader needs an autocommit connection (psycopg.connect(..., autocommit=True)): "
            "otherwise its first batch opens a transaction that lasts as long as the chunk"
        )
    if pool is not None and conninfo is None:
        raise ValueError("a pool's workers read their batches themselves: pass conninfo")
    started = time.monotonic()
    lease = store.acquire(
        job_key, chunk.chunk_id, holder=holder, wait_timeout=wait_timeout, stale_after=stale_after
    )
    if lease.completed:
        return _summary(lease, started, skipped=True, rows_this_attempt=0)
    before = lease.rows_read
    tracker = progress or ProgressTracker(
        total=max((lease.rows_total or 0) - lease.rows_read, 0) or None,
        label=f"chunk {chunk.chunk_id}",
    )
    try:
        use_reader_timezone(read_conn)
        reader = RangeReader.build(
            read_conn,
            spec.source_table,
            spec.source_columns,
            spec.key_column,
            chunk=chunk,
            row_filter=spec.row_filter,
        )
        work = BatchWork(
            conninfo if pool is not None else None,
            reader,
            transform,
            retry,
            copy_format(store.conn, spec.target_table, spec.target_columns),
        )
        start = lease.last_key if lease.last_key is not None else chunk.lower
        ranges = reader.ranges(read_conn, start, spec.batch_rows)
        if pool is not None:
            batches = _PoolPreparer(pool, work, read_conn).prepare(
                ranges, depth=pool.max_workers + read_ahead
            )
        else:
            batches = _in_process(work, read_conn, ranges)
        # Without a pool, batches are prepared on a thread while this one commits.
        ahead = read_ahead if pool is None else 0
        _commit_all(store, lease, chunk, spec, batches, ahead, tracker, on_progress)
        store.complete(lease)
    except LeaseLostError:
        raise
    except BaseException as exc:
        store.fail(lease, exc)
        raise
    return _summary(lease, started, skipped=False, rows_this_attempt=lease.rows_read - before)


def _summary(
    lease: Lease, started: float, *, skipped: bool, rows_this_attempt: int
) -> ChunkSummary:
    return ChunkSummary(
        chunk_id=lease.chunk_id,
        rows_read=lease.rows_read,
        rows_written=lease.rows_written,
        rows_failed=lease.rows_failed,
        seconds=time.monotonic() - started,
        skipped=skipped,
        resumed_from=lease.resumed_from,
        attempt=lease.attempts,
        rows_this_attempt=rows_this_attempt,
    )


def _in_process(
    work: BatchWork, read_conn: psycopg.Connection, ranges: Iterator[BatchRange]
) -> _Prepared:
    for batch in ranges:
        yield batch, prepare_batch(work, read_conn, batch)


class _PoolPreparer:
    """Prepares batches in a WorkerPool, in order, and splits the ones that kill their worker."""

    def __init__(self, pool: WorkerPool, work: BatchWork, read_conn: psycopg.Connection) -> None:
        self._pool = pool
        self._work = work
        self._read_conn = read_conn
        self._fn = functools.partial(prepare_in_worker, work)

    def prepare(self, ranges: Iterator[BatchRange], *, depth: int) -> _Prepared:
        """Yield each batch prepared, in order, keeping up to ``depth`` batches in the pool."""
        in_flight: deque[tuple[BatchRange, Future[BatchResult[BatchRange, PreparedBatch]]]]
        in_flight = deque()
        try:
            for batch in ranges:
                in_flight.append((batch, self._submit(batch)))
                if len(in_flight) >= max(depth, 1):
                    yield self._next(in_flight)
            while in_flight:
                yield self._next(in_flight)
        finally:
            for _, future in in_flight:
                future.cancel()

    def _next(
        self, in_flight: deque[tuple[BatchRange, Future[BatchResult[BatchRange, PreparedBatch]]]]
    ) -> tuple[BatchRange, PreparedBatch]:
        batch, future = in_flight[0]
        prepared = self._collect(batch, future)
        in_flight.popleft()
        return batch, prepared

    def _submit(self, batch: BatchRange) -> Future[BatchResult[BatchRange, PreparedBatch]]:
        return self._pool.submit_batch(self._fn, [batch])

    def _collect(
        self, batch: BatchRange, future: Future[BatchResult[BatchRange, PreparedBatch]]
    ) -> PreparedBatch:
        result = future.result()
        if result.outputs:
            (prepared,) = result.outputs
            return prepared
        (failure,) = result.failures
        if failure.error_type not in _SPLIT_ON:
            raise BatchPrepareError(
                f"a worker failed to prepare the batch {batch}: "
                f"{failure.error_type}: {failure.message}"
            ) from RemoteTraceback(failure.traceback)
        return self._split(batch, failure.error_type, failure.message, failure.attempts)

    def _split(
        self, batch: BatchRange, error_type: str, message: str, attempts: int
    ) -> PreparedBatch:
        """Prepare ``batch`` again in parts, after it killed its worker or ran out of time."""
        reader, binary = self._work.reader, self._work.copy_format.binary
        parts = reader.split(self._read_conn, batch, SPLIT_PARTS)
        if parts is None:  # the row responsible, alone (or no row left): a dead letter
            rows = reader.rows(self._read_conn, batch)
            return PreparedBatch(
                len(rows),
                CopyData(b"", 0, binary),
                [FailedRow(row, error_type, message, attempts) for row in rows],
            )
        log.warning(
            "A batch failed with %s in a worker: preparing it again in %d parts to isolate the "
            "row responsible",
            error_type,
            len(parts),
        )
        futures = [(part, self._submit(part)) for part in parts]
        try:
            return PreparedBatch.join(
                [self._collect(part, future) for part, future in futures], binary=binary
            )
        finally:
            for _, future in futures:
                future.cancel()


def _commit_all(
    store: CheckpointStore,
    lease: Lease,
    chunk: TableChunk,
    spec: TableJobSpec,
    batches: _Prepared,
    ahead: int,
    tracker: ProgressTracker,
    on_progress: ProgressCallback | None,
) -> None:
    """Commit every prepared batch in turn (on a ReadAhead thread when ``ahead``)."""
    source = ReadAhead(batches, depth=ahead, name=f"prepare {chunk.chunk_id}") if ahead else None
    try:
        for batch, prepared in source if source is not None else batches:
            _commit(store, lease, chunk, spec, batch, prepared)
            snapshot = tracker.advance(prepared.rows_read)
            if on_progress is not None:
                on_progress(snapshot)
    finally:
        if source is not None:
            source.close()  # closes the generator on its own thread
        else:
            batches.close()
    if lease.needs_reset:  # no rows left in the chunk: the reset still has to happen
        empty = CopyData(b"", 0, True)
        _commit(store, lease, chunk, spec, None, PreparedBatch(0, empty, []))
    tracker.log()


def _commit(
    store: CheckpointStore,
    lease: Lease,
    chunk: TableChunk,
    spec: TableJobSpec,
    batch: BatchRange | None,
    prepared: PreparedBatch,
) -> None:
    """Commit one prepared batch (outputs, dead letters, checkpoint) in one transaction."""
    if len(prepared.data) + len(prepared.failures) != prepared.rows_read:
        raise _RowMismatchError(
            f"batch of {prepared.rows_read} rows came back as {len(prepared.data)} outputs and "
            f"{len(prepared.failures)} failures"
        )
    key_index = spec.key_index
    letters = [
        DeadLetter(
            item_key=str(key_to_json(failure.row[key_index])),
            line_number=None,
            payload=json_payload(spec.source_columns, failure.row),
            error_type=failure.error_type,
            message=failure.message,
            attempts=failure.attempts,
        )
        for failure in prepared.failures
    ]
    data = prepared.data

    def write(conn: psycopg.Connection) -> int:
        if lease.needs_reset:
            deleted = delete_chunk_output(conn, spec, chunk)
            log.info(
                "Full refresh: deleted %d earlier output rows of chunk %s from %s",
                deleted,
                chunk.chunk_id,
                spec.target_table,
            )
        if not data:
            return 0
        return write_rows(
            conn,
            spec.target_table,
            spec.target_columns,
            data,
            mode=spec.write_mode,
            key_columns=spec.target_key_columns,
        )

    store.commit_batch(
        lease,
        last_key=None if batch is None else batch.upper,
        rows_read=prepared.rows_read,
        write=write,
        dead_letters=letters,
        rows_written=len(data),  # checked against what the writer reports
    )
