"""Replay a job's pending dead letters through its transform again, after a fix.

A page of dead letters at a time, each page ONE transaction::

    fetch_for_replay (FOR UPDATE SKIP LOCKED, in id order)
        |
    source.replay_rows: the rows as the source holds them now (a data fix applies), or as the
        |               dead letters stored them (after a fix of the transform)
        v
    prepare (the job's transform, target checks, encoding; in the pool, crash rows isolated)
        |
    write the rows + mark_replayed(the items that now pass: written or filtered out)
    + record_dead_letters(those failing again: attempts added, still pending)
        |
    COMMIT

So a replayed item is in the target and marked replayed together, or neither; a replay killed half
way leaves the committed pages done and the rest pending. Duplicates (the first occurrence of their
key is loaded) are skipped, and records that could not be read (fix the file, load it again) are not replayed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import psycopg

from parallel_batch.core.isolate_batches import crash_isolated
from parallel_batch.core.job import JobSpec
from parallel_batch.core.prepare import (
    DUPLICATE_ERROR,
    BatchWork,
    PreparedBatch,
    prepare,
    prepare_in_worker,
)
from parallel_batch.core.refused import REFUSED, without_refused
from parallel_batch.core.source import KeyRange, ReadBatch, Row
from parallel_batch.core.target import Target
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.exceptions import TaskTimeoutError, WorkerCrashedError
from parallel_batch.store import deadletters
from parallel_batch.store.deadletters import DeadLetter, StoredDeadLetter
from parallel_batch.store.writer import write_rows

__all__ = ["DEFAULT_REPLAY_BATCH_ROWS", "REPLAY_FROM", "ReplayFrom", "ReplayTotals", "replay_job"]

log = logging.getLogger(__name__)

ReplayFrom = Literal["source", "payload"]
REPLAY_FROM: tuple[ReplayFrom, ...] = ("source", "payload")
MISSING_ERROR = "SourceRowMissing"
# Dead letters replayed per transaction: few rows, each maybe slow.
DEFAULT_REPLAY_BATCH_ROWS = 1_000


@dataclass
class ReplayTotals:
    """What a replay did.

    :param attempted: dead letters taken.
    :param replayed: now resolved (in the target, or filtered out by the fixed transform).
    :param failed_again: still failing (attempts added), pending again.
    :param missing: no row to replay (gone from the source, or not readable); still pending.
    :param skipped: duplicates, never replayed (the first occurrence of their key is loaded).
    """

    attempted: int = 0
    replayed: int = 0
    failed_again: int = 0
    missing: int = 0
    skipped: int = 0

    @property
    def still_pending(self) -> int:
        return self.failed_again + self.missing

    def add(self, other: ReplayTotals) -> None:
        self.attempted += other.attempted
        self.replayed += other.replayed
        self.failed_again += other.failed_again
        self.missing += other.missing
        self.skipped += other.skipped


@dataclass(frozen=True)
class _Rows:
    """A page's rows to replay, as a chunk reader (pickled to the pool's workers)."""

    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    keys: tuple[str, ...]
    lines: tuple[int | None, ...]

    def batches(self, after: Any, batch_rows: int) -> Iterator[tuple[int, int]]:
        yield (0, len(self.rows))

    def read(self, ref: tuple[int, int]) -> ReadBatch:
        start, stop = ref
        lines = list(self.lines[start:stop])
        return ReadBatch(
            list(self.rows[start:stop]),
            None if None in lines else lines,  # type: ignore[arg-type]
            keys=list(self.keys[start:stop]),
        )

    def split(self, ref: tuple[int, int], parts: int) -> list[tuple[int, int]] | None:
        from parallel_batch.engine.isolation import split_range

        return split_range(ref, parts)

    def position(self, ref: Any) -> None:
        return None

    def item_key(self, batch: ReadBatch, index: int) -> str:
        assert batch.keys is not None
        return batch.keys[index]

    def close(self) -> None:
        pass

    def owned(self) -> KeyRange | None:
        return None


def replay_job(
    conninfo: str,
    job_key: str,
    spec: JobSpec,
    *,
    source_conninfo: str | None = None,
    replay_from: ReplayFrom = "source",
    page_rows: int = DEFAULT_REPLAY_BATCH_ROWS,
    pool: WorkerPool | None = None,
) -> ReplayTotals:
    """Replay every pending dead letter of a job, a page per transaction.

    :param conninfo: the target's database (where the dead letters are).
    :param source_conninfo: the source's database (default: the same).
    :param replay_from: ``"source"`` (the row now) or ``"payload"`` (the row as stored).
    :param page_rows: dead letters per transaction.
    :param pool: worker processes for the transform (crash rows isolated); None: this process.
    """
    if replay_from not in REPLAY_FROM:
        raise ValueError(f"replay_from must be one of {list(REPLAY_FROM)}, got {replay_from!r}")
    totals = ReplayTotals()
    after_id = 0
    with psycopg.connect(
        conninfo, autocommit=True, application_name="parallel_batch replay"
    ) as conn:
        target = spec.resolve_target(conn)
        while True:
            with conn.transaction():
                letters = deadletters.fetch_for_replay(
                    conn, job_key, limit=page_rows, after_id=after_id
                )
                if not letters:
                    break
                after_id = letters[-1].id
                page = _page(
                    conn,
                    job_key,
                    spec,
                    target,
                    letters,
                    source_conninfo or conninfo,
                    replay_from,
                    pool,
                )
            totals.add(page)
            log.info(
                "Replayed %d dead letters of job %s so far: %d resolved, %d failed again, "
                "%d without a row to replay",
                totals.attempted,
                job_key,
                totals.replayed,
                totals.failed_again,
                totals.missing,
            )
    return totals


def _page(
    conn: psycopg.Connection,
    job_key: str,
    spec: JobSpec,
    target: Target,
    letters: Sequence[StoredDeadLetter],
    source_conninfo: str,
    replay_from: ReplayFrom,
    pool: WorkerPool | None,
) -> ReplayTotals:
    """Replay one page inside the caller's transaction."""
    replayable = [letter for letter in letters if letter.error_type != DUPLICATE_ERROR]
    rows = spec.source.replay_rows(source_conninfo, replayable, replay_from == "payload")
    by_key = {letter.item_key: letter for letter in letters}
    keys = [letter.item_key for letter in replayable if letter.item_key in rows]
    reader = _Rows(
        spec.source.columns,
        tuple(rows[key] for key in keys),
        tuple(keys),
        tuple(by_key[key].line_number for key in keys),
    )
    again: dict[str, list[DeadLetter]] = defaultdict(list)
    failed: set[str] = set()
    if keys:
        work = BatchWork(reader, spec.transform, target)
        prepared = _write(conn, work, pool, len(keys))
        for letter in prepared.letters:
            failed.add(letter.item_key)
            again[by_key[letter.item_key].chunk_id].append(letter)
    succeeded = [key for key in keys if key not in failed]
    deadletters.mark_replayed(conn, job_key, succeeded)
    missing = [letter for letter in replayable if letter.item_key not in rows]
    for stored in missing:
        again[stored.chunk_id].append(_still_missing(stored, spec))
    for chunk_id, chunk_letters in again.items():
        deadletters.record_dead_letters(conn, job_key, chunk_id, chunk_letters)
    skipped = len(letters) - len(replayable)
    return ReplayTotals(len(replayable), len(succeeded), len(failed), len(missing), skipped)


def _write(
    conn: psycopg.Connection, work: BatchWork, pool: WorkerPool | None, rows: int
) -> PreparedBatch:
    """Prepare the page's rows and write them (in a savepoint of the page's transaction); rows
    the target refuses stay dead letters. Returns what was written."""
    target = work.target

    def write(c: psycopg.Connection, data: Any) -> None:
        write_rows(
            c,
            target.table,
            target.columns,
            data,
            mode=target.write_mode,
            key_columns=target.key_columns or target.columns[:1],
        )

    prepared = _prepare(work, pool, rows)
    if not prepared.data:
        return prepared
    try:
        with conn.transaction():
            write(conn, prepared.data)
    except REFUSED as exc:
        prepared, _ = without_refused(
            conn, _prepare(work, pool, rows, keep=True), write, target, exc
        )
        with conn.transaction():
            write(conn, prepared.data)
    return prepared


def _prepare(
    work: BatchWork, pool: WorkerPool | None, rows: int, *, keep: bool = False
) -> PreparedBatch:
    ref = (0, rows)
    if pool is None or work.transform.kind == "async":
        return prepare(work, ref, keep_rows=keep)
    try:
        return pool.submit(prepare_in_worker, work, ref, None, keep).result()
    except (WorkerCrashedError, TaskTimeoutError) as exc:
        return crash_isolated(pool, work, ref, exc, keep_rows=keep)


def _still_missing(stored: StoredDeadLetter, spec: JobSpec) -> DeadLetter:
    if spec.source.kind == "table":
        error_type = MISSING_ERROR
        message = (
            f"the source row is no longer in {spec.source.name}; replay_from='payload' replays "
            "the row the dead letter stored"
        )
    else:
        error_type = stored.error_type
        message = (
            f"{stored.message} (not replayed: a record that could not be read is fixed in the "
            "file, which is then loaded again)"
        )
    return replace(
        DeadLetter(stored.item_key, stored.line_number, stored.payload, error_type, message),
        attempts=1,
    )
