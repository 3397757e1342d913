"""Load one chunk of a CSV file end to end: lease, read, validate, transform, enrich, load.

A staged pipeline (``engine.pipeline``); each stage has its own concurrency and the bounded
queues between them hold a few batches, so memory stays flat whatever the file's size::

    store.acquire(chunk)         completed already? -> ChunkSummary(skipped=True)
        |
    read_csv_chunk(after_line=checkpoint)  reader thread: records + per-record errors
        v
    validate   (thread)  values the target would refuse or round -> dead letters
    transform  (thread)  CSV values -> target rows (segment NULL)
    enrich     (async, optional)  HTTP GET per record, <= enrich concurrency in flight,
        |                         retried; still failing -> dead letters
    load       (thread, 1, in file order)  per batch ONE transaction (CheckpointStore.commit_batch):
        |                   fenced checkpoint (the batch's last line), key claims (duplicate ids
        |                   -> dead letters), upsert the rows, the batch's dead letters
        v
    store.complete(lease)   -> ChunkSummary (the chunk's totals over all its attempts); the last
                               chunk of the job deletes the job's key claims

Every record read ends in the target or in the dead letters, in the transaction that moves the
checkpoint past it: a killed attempt loses nothing and duplicates nothing; the next one reads
after the last committed line. A value the database still refuses (a constraint of the target
the validate stage does not know) does not fail the batch: its rows are tried in halves, in
transactions that roll back, down to the rows at fault, which become dead letters.

An error marks the chunk failed (its checkpoint stays) and is raised again; a
:class:`~parallel_batch.exceptions.LeaseLostError` is raised as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from parallel_batch.core.csv_spec import CsvLoadSpec
from parallel_batch.core.csv_stages import (
    DUPLICATE_ERROR,
    ColumnLimit,
    LoadBatch,
    Transformer,
    Validator,
    line_key,
    parse_limit,
    payload,
)
from parallel_batch.core.enrich import EnrichConfig, Enricher
from parallel_batch.core.table_job import ChunkSummary
from parallel_batch.engine.pipeline import Pipeline, Stage
from parallel_batch.engine.progress import ProgressCallback, ProgressTracker
from parallel_batch.engine.retry import FailedItem
from parallel_batch.exceptions import LeaseLostError
from parallel_batch.sources.csv.planner import FileChunk
from parallel_batch.sources.csv.reader import read_csv_chunk
from parallel_batch.store import claims
from parallel_batch.store.catalog import column_types, key_type, table_oid
from parallel_batch.store.checkpoints import DEFAULT_WAIT_TIMEOUT, CheckpointStore
from parallel_batch.store.deadletters import DeadLetter, record_dead_letters
from parallel_batch.store.identifiers import column_sql, columns_sql, table_sql
from parallel_batch.store.records import Lease
from parallel_batch.store.writer import write_rows

__all__ = ["check_target", "process_csv_chunk", "run_csv_chunk"]

log = logging.getLogger(__name__)

# Batches buffered between two stages. Larger: smooths bursts (a slow commit, a slow lookup);
# smaller: less memory. Each batch is up to batch_rows records.
QUEUE_BATCHES = 2
# Workers of the CPU-light stages. They hold the GIL, so more threads would not be faster.
VALIDATE_CONCURRENCY = 1
TRANSFORM_CONCURRENCY = 1
# Batches the enrich stage works on at once. 2: the next batch's requests start while the
# previous one waits for its slowest record (its retries), so the service stays busy; the
# requests in flight stay bounded by the enricher's limiter whatever this is.
ENRICH_BATCHES = 2
# The load stage commits in file order on the store's connection: exactly one worker.
LOAD_CONCURRENCY = 1
# Rounds of one batch's commit: claims that changed under it (another chunk committed the same
# ids meanwhile), rows the database refused. Each round settles what it found; more than a few
# means something else is wrong.
MAX_COMMIT_ROUNDS = 8
_REJECTED = (psycopg.DataError, psycopg.IntegrityError)


def run_csv_chunk(
    conninfo: str,
    job_key: str,
    chunk: FileChunk,
    spec: CsvLoadSpec,
    *,
    enrich: EnrichConfig | None = None,
    holder: str | None = None,
    progress: ProgressTracker | None = None,
    on_progress: ProgressCallback | None = None,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    stale_after: float | None = None,
) -> ChunkSummary:
    """Load one chunk on a connection of its own; see :func:`process_csv_chunk`.

    The connection carries the chunk's lock; closing it at the end releases the lock whatever
    happened.

    :param conninfo: the database URL or conninfo string.
    """
    with CheckpointStore.connect(conninfo, application_name="parallel_batch csv chunk") as store:
        return process_csv_chunk(
            store,
            job_key,
            chunk,
            spec,
            enrich=enrich,
            holder=holder,
            progress=progress,
            on_progress=on_progress,
            wait_timeout=wait_timeout,
            stale_after=stale_after,
        )


def process_csv_chunk(
    store: CheckpointStore,
    job_key: str,
    chunk: FileChunk,
    spec: CsvLoadSpec,
    *,
    enrich: EnrichConfig | None = None,
    holder: str | None = None,
    progress: ProgressTracker | None = None,
    on_progress: ProgressCallback | None = None,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    stale_after: float | None = None,
) -> ChunkSummary:
    """Load one chunk of a CSV job exactly once, resuming after its last checkpoint.

    :param store: the checkpoint store; the job must exist (``files.csv_job.plan_csv_job``) with
        this chunk in its plan. Its connection is used by one thread at a time.
    :param job_key: the job.
    :param chunk: the chunk (its byte range names it in the store).
    :param spec: the file, the target and the batch size.
    :param enrich: the HTTP enrichment to run on each record; None: none (segment stays NULL).
    :param holder: who processes the chunk, for the status view (default ``host:pid``).
    :param progress: a tracker advanced by the records of each committed batch; default: one
        that logs every 10 s.
    :param on_progress: called with the tracker's snapshot after each committed batch.
    :param wait_timeout: seconds to wait for a live duplicate holding the chunk.
    :param stale_after: terminate a holder silent for this many seconds (None: never).
    :returns: the chunk's summary; ``skipped`` when it was already completed.
    :raises ConfigurationError: the target does not fit the spec (the chunk is marked failed).
    :raises ChunkBusyError: a live attempt held the chunk for longer than ``wait_timeout``.
    :raises LeaseLostError: another attempt took the chunk over; this one's last batch was not
        committed.
    """
    if enrich is not None and spec.segment_column is None:
        raise ValueError("enrichment needs a segment_column in the spec")
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
        limits = check_target(store.conn, spec)
        loader = _Loader(
            store, lease, spec, key_type(store.conn, spec.target_table, spec.key_column)
        )
        asyncio.run(_pipeline(loader, chunk, spec, limits, enrich, tracker, on_progress))
        if lease.needs_reset:  # no records left in the chunk: the reset still has to happen
            store.commit_batch(lease, last_key=None, rows_read=0)
        tracker.log()
        store.complete(lease)
    except LeaseLostError:
        raise
    except BaseException as exc:
        store.fail(lease, exc)
        raise
    forgotten = claims.forget_if_completed(store.conn, job_key)
    if forgotten is not None:
        log.info("Job %s is complete: deleted its %d key claims", job_key, forgotten)
    # Another chunk may have moved rows of this one from written to failed (a duplicate id
    # whose first occurrence it holds): report the chunk's totals as the store has them.
    totals = claims.chunk_totals(store.conn, job_key, chunk.chunk_id)
    if totals is not None:
        lease.rows_read, lease.rows_written, lease.rows_failed = totals
    return _summary(lease, started, skipped=False, rows_this_attempt=lease.rows_read - before)


def check_target(conn: psycopg.Connection, spec: CsvLoadSpec) -> dict[str, ColumnLimit]:
    """Check that the target has the spec's columns and a unique key; return the column limits.

    :raises ConfigurationError: when the table or a column is missing, or the key is not unique.
    """
    column_types(conn, spec.target_table, spec.target_columns)
    key_type(conn, spec.target_table, spec.key_column)
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = %s AND a.attname = ANY(%s) AND a.attnum > 0"
        " AND NOT a.attisdropped",
        (table_oid(conn, spec.target_table), list(spec.schema.names)),
    ).fetchall()
    limits = {name: parse_limit(type_name) for name, type_name in rows}
    return {name: limit for name, limit in limits.items() if limit is not None}


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


def _remember_error(fn: Callable[[LoadBatch], LoadBatch]) -> Callable[[LoadBatch], LoadBatch]:
    """Keep the exception a stage raises on its batch: the pipeline reports only its text."""

    @functools.wraps(fn)
    def call(batch: LoadBatch) -> LoadBatch:
        try:
            return fn(batch)
        except BaseException as exc:
            batch.error = exc
            raise

    return call


def _remember_error_async(
    fn: Callable[[LoadBatch], Awaitable[LoadBatch]],
) -> Callable[[LoadBatch], Awaitable[LoadBatch]]:
    async def call(batch: LoadBatch) -> LoadBatch:
        try:
            return await fn(batch)
        except BaseException as exc:
            batch.error = exc
            raise

    return call


def _stop(failure: FailedItem) -> None:
    """The pipeline's on_failure: a stage failing on a batch stops the chunk with its error.

    Never skip a batch: the batches after it would move the checkpoint past its records.
    """
    item = failure.item
    if isinstance(item, LoadBatch) and item.error is not None:
        raise item.error
    raise RuntimeError(f"stage {failure.stage!r} failed: {failure.error_type}: {failure.message}")


async def _pipeline(
    loader: _Loader,
    chunk: FileChunk,
    spec: CsvLoadSpec,
    limits: dict[str, ColumnLimit],
    enrich: EnrichConfig | None,
    tracker: ProgressTracker,
    on_progress: ProgressCallback | None,
) -> None:
    after = loader.lease.last_key
    batches = read_csv_chunk(
        spec.path,
        chunk,
        spec.schema,
        batch_rows=spec.batch_rows,
        after_line=None if after is None else int(after),
    )
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csv-reader")
    loop = asyncio.get_running_loop()

    async def source() -> AsyncIterator[LoadBatch]:
        while True:
            batch = await loop.run_in_executor(reader, next, batches, None)
            if batch is None:
                return
            yield LoadBatch.from_csv(batch)

    stages = [
        Stage(
            "validate",
            _remember_error(Validator(spec.schema, limits)),
            kind="thread",
            concurrency=VALIDATE_CONCURRENCY,
        ),
        Stage(
            "transform",
            _remember_error(Transformer(with_segment=spec.segment_column is not None)),
            kind="thread",
            concurrency=TRANSFORM_CONCURRENCY,
        ),
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            if enrich is not None:
                enricher = await stack.enter_async_context(Enricher(enrich))
                stages.append(
                    Stage(
                        "enrich",
                        _remember_error_async(functools.partial(_enrich, enricher, spec)),
                        kind="async",
                        concurrency=ENRICH_BATCHES,
                    )
                )
            stages.append(
                Stage(
                    "load",
                    _remember_error(loader.load),
                    kind="thread",
                    concurrency=LOAD_CONCURRENCY,
                )
            )
            pipeline = Pipeline(stages, queue_size=QUEUE_BATCHES, ordered=True, on_failure=_stop)
            async with contextlib.aclosing(pipeline.run(source())) as outputs:
                async for batch in outputs:
                    snapshot = tracker.advance(batch.read)
                    if on_progress is not None:
                        on_progress(snapshot)
            log.info(
                "Stage seconds of chunk %s (summed over workers): %s",
                chunk.chunk_id,
                ", ".join(f"{n} {s.seconds:.2f}" for n, s in pipeline.statistics().items()),
            )
            if enrich is not None:
                stats = enricher.statistics()
                log.info(
                    "Enrichment of chunk %s: %d records, %d requests (at most %d in flight), "
                    "%d records failed",
                    chunk.chunk_id,
                    stats.records,
                    stats.requests,
                    stats.max_in_flight,
                    stats.failed,
                )
    finally:
        # After any read still running on the reader thread: a generator cannot be closed while
        # it runs.
        close = getattr(batches, "close", None)
        if close is not None:
            await loop.run_in_executor(reader, close)
        reader.shutdown(wait=True)


async def _enrich(enricher: Enricher, spec: CsvLoadSpec, batch: LoadBatch) -> LoadBatch:
    """The enrich stage: fill in each row's segment (the last column), or dead-letter the row."""
    email = spec.email_index
    results = await enricher.lookup_many([row[email] for row in batch.rows])
    failures = {i: r.failure for i, r in enumerate(results) if r.failure is not None}
    batch.rows = [
        row if result.failure is not None else (*row[:-1], result.value)
        for row, result in zip(batch.rows, results, strict=True)
    ]
    batch.reject(
        {
            i: (
                failure.error_type,
                f"enrichment failed after {failure.attempts} attempt(s): {failure.message}",
            )
            for i, failure in failures.items()
        },
        spec.target_columns,
        attempts=failures,
    )
    return batch


class _RowsRejected(Exception):
    """The database refused some row of the batch (raised out of a commit to roll it back)."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


class _Loader:
    """The load stage: one committed transaction per batch, on the store's connection."""

    def __init__(
        self, store: CheckpointStore, lease: Lease, spec: CsvLoadSpec, key_type: str
    ) -> None:
        self.store = store
        self.key_type = key_type  # from the catalog, for a cast
        self.lease = lease
        self.spec = spec
        self.columns = spec.target_columns
        self.key_index = spec.key_index

    def load(self, batch: LoadBatch) -> LoadBatch:
        """Commit the batch: rows, dead letters (duplicates included) and its checkpoint."""
        batch.check()
        existing: dict[str, claims.Claim] = {}  # first round: assume no key is claimed yet
        for _ in range(MAX_COMMIT_ROUNDS):
            keys = [str(row[self.key_index]) for row in batch.rows]
            plan = claims.plan_claims(keys, batch.lines, existing)
            rows = [batch.rows[i] for i in plan.loads]
            try:
                self.store.commit_batch(
                    self.lease,
                    last_key=batch.end_line,
                    rows_read=batch.read,
                    write=functools.partial(self._write, plan, rows),
                    dead_letters=batch.letters + self._duplicates(batch, plan),
                    rows_written=len(rows),
                )
                return batch
            except claims.ClaimsChanged:
                existing = claims.find_claims(self.store.conn, self.lease.job_key, keys)
            except _RowsRejected as rejected:
                refused = self._refused_rows(rows, rejected.error)
                batch.reject({plan.loads[i]: reason for i, reason in refused.items()}, self.columns)
        raise RuntimeError(
            f"could not commit the batch ending on line {batch.end_line} of chunk "
            f"{self.lease.chunk_id} in {MAX_COMMIT_ROUNDS} rounds"
        )

    def _duplicates(self, batch: LoadBatch, plan: claims.ClaimPlan) -> list[DeadLetter]:
        return [
            DeadLetter(
                item_key=line_key(batch.lines[i]),
                line_number=batch.lines[i],
                payload=payload(self.columns, batch.rows[i]),
                error_type=DUPLICATE_ERROR,
                message=self._duplicate_message(key, first),
            )
            for i, (key, first) in sorted(plan.duplicates.items())
        ]

    def _duplicate_message(self, key: str, first_line: int) -> str:
        return (
            f"duplicate {self.spec.key_column} {key}: the record on line {first_line} has it "
            "too, and the first occurrence in the file is the one loaded"
        )

    def _write(self, plan: claims.ClaimPlan, rows: list[tuple[Any, ...]], conn: Any) -> int:
        lease = self.lease
        displaced = claims.apply_claims(conn, lease.job_key, lease.chunk_id, plan)
        if displaced:
            self._displace(conn, displaced)
        if not rows:
            return 0
        try:
            return write_rows(
                conn,
                self.spec.target_table,
                self.columns,
                rows,
                mode="auto",
                key_columns=(self.spec.key_column,),
            )
        except _REJECTED as exc:
            raise _RowsRejected(exc) from exc

    def _displace(
        self, conn: psycopg.Connection, displaced: list[tuple[str, claims.Claim, int]]
    ) -> None:
        """Dead-letter the later occurrences this batch takes the keys over from, in their chunks."""
        spec = self.spec
        payloads = {
            str(row[self.key_index]): payload(self.columns, row)
            for row in conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE {} = ANY(CAST(%s AS {}[]))").format(
                    columns_sql(self.columns),
                    table_sql(spec.target_table),
                    column_sql(spec.key_column),
                    sql.SQL(self.key_type),
                ),
                ([key for key, _, _ in displaced],),
            )
        }
        by_chunk: dict[str, list[DeadLetter]] = defaultdict(list)
        for key, claim, line in displaced:
            by_chunk[claim.chunk_id].append(
                DeadLetter(
                    item_key=line_key(claim.line_number),
                    line_number=claim.line_number,
                    payload=payloads.get(key, {spec.key_column: key}),
                    error_type=DUPLICATE_ERROR,
                    message=self._duplicate_message(key, line),
                )
            )
        for chunk_id, letters in by_chunk.items():
            record_dead_letters(conn, self.lease.job_key, chunk_id, letters)
            claims.move_to_failed(conn, self.lease.job_key, chunk_id, len(letters))
        log.info(
            "Chunk %s holds the first occurrence of %d ids a later chunk loaded first: "
            "those later records are dead letters now",
            self.lease.chunk_id,
            len(displaced),
        )

    def _refused_rows(
        self, rows: list[tuple[Any, ...]], error: psycopg.Error
    ) -> dict[int, tuple[str, str]]:
        """Find the rows the target refuses: write halves in transactions that roll back."""
        conn = self.store.conn
        refused: dict[int, tuple[str, str]] = {}

        def probe(low: int, high: int) -> None:
            try:
                with conn.transaction(force_rollback=True):
                    write_rows(
                        conn,
                        self.spec.target_table,
                        self.columns,
                        rows[low:high],
                        mode="auto",
                        key_columns=(self.spec.key_column,),
                    )
            except _REJECTED as exc:
                if high - low == 1:
                    message = exc.diag.message_primary or str(exc)
                    refused[low] = (type(exc).__name__, f"the target refused the row: {message}")
                else:
                    middle = (low + high) // 2
                    probe(low, middle)
                    probe(middle, high)

        probe(0, len(rows))
        if not refused:  # only a combination of rows fails: nothing to single out
            raise error
        log.warning(
            "The target refused %d rows of a batch of chunk %s: they go to the dead letters",
            len(refused),
            self.lease.chunk_id,
        )
        return refused
