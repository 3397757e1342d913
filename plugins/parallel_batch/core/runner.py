"""Run one chunk of any job end to end: lease, resume, prepare batches, commit, complete.

How the records of a chunk move (one attempt)::

    store.acquire(chunk)              completed already? -> ChunkSummary(skipped=True)
        |
    reader.batches(after=checkpoint)  batch references (key or byte ranges), planned cheaply
        |
        v
    prepare each batch (core.prepare)  read, deduplicate, transform, encode for the target:
        |                              - in a WorkerPool: up to workers + read_ahead batches in
        |                                flight; a batch that kills its worker (or times out) is
        |                                split down to the record responsible (engine.isolation),
        |                                which becomes a dead letter
        |                              - async transforms: in this process, on a read-ahead thread
        v
    Committer.commit                  ONE transaction per batch, in order: fenced checkpoint,
        |                             [reset], claims, rows, dead letters (core.commit)
        v
    store.complete(lease)         -> ChunkSummary (the chunk's totals over all its attempts)

Every record read ends in the target, the filtered count or the dead letters, in the same
transaction as the checkpoint that moves past it: a killed attempt loses and duplicates nothing,
and the next attempt starts after the last committed batch. An error marks the chunk failed (its
checkpoint stays) and is raised again; a LeaseLostError is raised as it is.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from parallel_batch.core.commit import Committer
from parallel_batch.core.isolate_batches import crash_isolated
from parallel_batch.core.job import ChunkSummary, JobSpec
from parallel_batch.core.prepare import BatchWork, PreparedBatch, prepare, prepare_in_worker
from parallel_batch.core.source import BatchRef, KeyRange
from parallel_batch.core.target import Target
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.progress import ProgressCallback, ProgressTracker
from parallel_batch.engine.readahead import ReadAhead
from parallel_batch.exceptions import (
    ConfigurationError,
    LeaseLostError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from parallel_batch.store import claims
from parallel_batch.store.checkpoints import DEFAULT_WAIT_TIMEOUT, CheckpointStore
from parallel_batch.store.copy_data import CopyData
from parallel_batch.store.records import Lease

__all__ = ["READ_AHEAD_BATCHES", "process_chunk", "run_chunk"]

log = logging.getLogger(__name__)

# Batches prepared ahead of the one being committed: queued beyond one per worker with a pool (a
# worker that finishes finds the next batch waiting while the parent commits), on the read-ahead
# thread without one. More only holds more encoded batches in memory: the slower of preparing
# and committing sets the pace.
READ_AHEAD_BATCHES = 1
_CRASHES = (WorkerCrashedError, TaskTimeoutError)

_Prepared = Iterator[tuple[BatchRef, PreparedBatch]]


def run_chunk(
    spec: JobSpec,
    job_key: str,
    entry: dict[str, Any],
    *,
    conninfo: str,
    source_conninfo: str | None = None,
    **options: Any,
) -> ChunkSummary:
    """Process one chunk on a store connection of its own; see :func:`process_chunk`.

    :param conninfo: the target's database (the store lives there; pool workers read the source
        with ``source_conninfo``, by default the same).
    """
    with CheckpointStore.connect(conninfo, application_name="parallel_batch chunk") as store:
        return process_chunk(
            store,
            spec,
            job_key,
            entry,
            source_conninfo=conninfo if source_conninfo is None else source_conninfo,
            same_db=source_conninfo in (None, conninfo),
            **options,
        )


def process_chunk(
    store: CheckpointStore,
    spec: JobSpec,
    job_key: str,
    entry: dict[str, Any],
    *,
    source_conninfo: str | None,
    same_db: bool = True,
    pool: WorkerPool | None = None,
    holder: str | None = None,
    progress: ProgressTracker | None = None,
    on_progress: ProgressCallback | None = None,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    stale_after: float | None = None,
    read_ahead: int = READ_AHEAD_BATCHES,
) -> ChunkSummary:
    """Process one chunk of a job exactly once, resuming after its last checkpoint.

    :param store: the checkpoint store, on the target's database; the job must exist with this
        chunk in its plan.
    :param spec: the job (source, transform, target, batch size).
    :param entry: the chunk's plan entry (its ``chunk_id`` names it in the store).
    :param source_conninfo: the source's database (tables).
    :param same_db: the source is in the target's database (a full refresh of an interval needs it).
    :param pool: worker processes that prepare the batches (they survive rows that crash them);
        None, or an async transform: in this process.
    :param holder: who processes the chunk, for the status view (default ``host:pid``).
    :param progress: a tracker advanced by each committed batch; default: one logging every 10 s.
    :param on_progress: called with the tracker's snapshot after each committed batch.
    :param wait_timeout: seconds to wait for a live duplicate holding the chunk.
    :param stale_after: terminate a holder silent for this many seconds (None: never).
    :param read_ahead: batches prepared ahead of the commit.
    :raises ChunkBusyError: a live attempt held the chunk for longer than ``wait_timeout``.
    :raises LeaseLostError: another attempt took the chunk over; this one's last batch was not
        committed.
    """
    if read_ahead < 0:
        raise ValueError("read_ahead must not be negative")
    started = time.monotonic()
    lease = store.acquire(
        job_key,
        entry["chunk_id"],
        holder=holder,
        wait_timeout=wait_timeout,
        stale_after=stale_after,
    )
    if lease.completed:
        return _summary(lease, started, skipped=True, rows_this_attempt=0)
    before = lease.rows_read
    tracker = progress or ProgressTracker(
        total=max((lease.rows_total or 0) - lease.rows_read, 0) or None,
        label=f"chunk {lease.chunk_id}",
    )
    try:
        target = spec.resolve_target(store.conn)
        frames = spec.transform.kind == "dataframe"
        reader = spec.source.chunk_reader(source_conninfo, entry, frames=frames)
        try:
            _check_refresh(lease, reader.owned(), target, same_db)
            work = BatchWork(reader, spec.transform, target, spec.dedup_key)
            use_pool = pool if spec.transform.kind != "async" else None
            committer = Committer(
                store,
                lease,
                target,
                owned=reader.owned(),
                same_db=same_db,
                dedup_key=spec.dedup_key,
                reprepare=_reprepare(work, use_pool),
            )
            refs = reader.batches(lease.last_key, spec.batch_rows)
            if use_pool is not None:
                batches = _in_pool(use_pool, work, refs, depth=use_pool.max_workers + read_ahead)
                _commit_all(committer, batches, tracker, on_progress)
            else:
                ahead = ReadAhead(
                    ((ref, prepare(work, ref)) for ref in refs),
                    depth=max(read_ahead, 1),
                    name=f"prepare {lease.chunk_id}",
                )
                with ahead:
                    _commit_all(committer, ahead, tracker, on_progress)
            if lease.needs_reset:  # no records left in the chunk: the reset still has to happen
                empty = CopyData(b"", 0, target.copy.binary)
                committer.commit(None, PreparedBatch(0, empty, [], 0, 0, None))
        finally:
            reader.close()
        tracker.log()
        store.complete(lease)
    except LeaseLostError:
        raise
    except BaseException as exc:
        store.fail(lease, exc)
        raise
    if spec.dedup_key is not None:
        forgotten = claims.forget_if_completed(store.conn, job_key)
        if forgotten is not None:
            log.info("Job %s is complete: deleted its %d key claims", job_key, forgotten)
        _refresh_totals(store, lease)  # another chunk may have displaced records of this one
    return _summary(lease, started, skipped=False, rows_this_attempt=lease.rows_read - before)


def _check_refresh(lease: Lease, owned: KeyRange | None, target: Target, same_db: bool) -> None:
    """Refuse a full refresh that could only fail: an interval's earlier output cannot be found
    from another database, and COPY cannot write over it."""
    interval = owned is not None and owned.filter is not None
    if lease.needs_reset and not same_db and interval and target.write_mode == "copy":
        raise ConfigurationError(
            "a full refresh of an interval read from another database cannot delete the "
            "interval's earlier output first: write it with write_mode 'auto' or 'upsert' "
            "(rows are then replaced by key)"
        )


def _commit_all(
    committer: Committer,
    batches: Iterator[tuple[BatchRef, PreparedBatch]],
    tracker: ProgressTracker,
    on_progress: ProgressCallback | None,
) -> None:
    for ref, prepared in batches:
        committer.commit(ref, prepared)
        snapshot = tracker.advance(prepared.read)
        if on_progress is not None:
            on_progress(snapshot)


def _reprepare(work: BatchWork, pool: WorkerPool | None) -> Any:
    def again(ref: BatchRef, claimed: dict[str, claims.Claim] | None, keep: bool) -> PreparedBatch:
        if pool is None:
            return prepare(work, ref, claimed, keep_rows=keep)
        try:
            return pool.submit(prepare_in_worker, work, ref, claimed, keep).result()
        except _CRASHES as exc:
            return crash_isolated(pool, work, ref, exc, keep_rows=keep)

    return again


def _in_pool(
    pool: WorkerPool, work: BatchWork, refs: Iterator[BatchRef], *, depth: int
) -> _Prepared:
    """Yield each batch prepared in the pool, in order, keeping up to ``depth`` in flight."""
    in_flight: deque[tuple[BatchRef, Future[PreparedBatch]]] = deque()

    def collect() -> tuple[BatchRef, PreparedBatch]:
        ref, future = in_flight.popleft()
        try:
            return ref, future.result()
        except _CRASHES as exc:
            return ref, crash_isolated(pool, work, ref, exc)

    try:
        for ref in refs:
            in_flight.append((ref, pool.submit(prepare_in_worker, work, ref)))
            if len(in_flight) >= max(depth, 1):
                yield collect()
        while in_flight:
            yield collect()
    finally:
        for _, future in in_flight:
            future.cancel()


def _refresh_totals(store: CheckpointStore, lease: Lease) -> None:
    row = store.conn.execute(
        "SELECT rows_read, rows_written, rows_failed, rows_filtered, rows_fanout"
        " FROM parallel_batch.chunks WHERE job_key = %s AND chunk_id = %s",
        (lease.job_key, lease.chunk_id),
    ).fetchone()
    if row is not None:
        (
            lease.rows_read,
            lease.rows_written,
            lease.rows_failed,
            lease.rows_filtered,
            lease.rows_fanout,
        ) = map(int, row)


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
        rows_filtered=lease.rows_filtered,
        rows_fanout=lease.rows_fanout,
    )
