"""A batch that killed its worker (or ran past its timeout): prepared again in parts, down to the
record responsible, which becomes a dead letter.

::

    crash_isolated(pool, work, ref, error)
        isolate(ref, attempt = prepare the part in the pool, split = reader.split(ref, 16),
                isolate_on = (WorkerCrashedError, TaskTimeoutError), first = error)
        parts that prepared: joined into one PreparedBatch (claims merged in file order)
        a record that kills its worker alone (after CRASH_RETRY): read here (no transform runs
        in this process) and dead-lettered with the error

The parts are prepared in order, each told the keys of the parts before it, so a key that comes
back in a later part is a duplicate there, as it would have been in the whole batch.
"""

from __future__ import annotations

from typing import Any

from parallel_batch.core.prepare import (
    BatchClaims,
    BatchWork,
    PreparedBatch,
    letter,
    prepare_in_worker,
)
from parallel_batch.core.source import BatchRef
from parallel_batch.engine.isolation import SPLIT_PARTS, Attempted, ItemGivenUp, isolate
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.exceptions import TaskTimeoutError, WorkerCrashedError
from parallel_batch.store.claims import Claim, ClaimPlan
from parallel_batch.store.copy_data import CopyData
from parallel_batch.store.deadletters import DeadLetter

__all__ = ["CRASH_RETRY", "crash_isolated"]

# A record that kills its worker alone is tried once more (a worker can die of something else:
# the OOM killer picking it for another's memory), then dead-lettered.
CRASH_RETRY = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0)
_CRASHES = (WorkerCrashedError, TaskTimeoutError)


def crash_isolated(
    pool: WorkerPool, work: BatchWork, ref: BatchRef, error: Exception, *, keep_rows: bool = False
) -> PreparedBatch:
    """Prepare ``ref`` again in parts after ``error`` (a crash or a timeout of the whole batch).

    :param keep_rows: keep each part's output rows and their owners (a refused write's diagnosis).
    """
    reader = work.reader
    claimed: dict[str, Claim] = {}  # the keys of the parts prepared so far (not in the store)

    def attempt(part: BatchRef) -> Attempted[BatchRef, PreparedBatch]:
        prepared = pool.submit(
            prepare_in_worker, work, part, dict(claimed) or None, keep_rows
        ).result()
        if prepared.claims is not None:
            for key, line in prepared.claims.plan.new:
                claimed[key] = Claim(line, "", prepared.claims.outputs.get(key, 1))
        return Attempted(prepared)

    found = isolate(
        ref,
        attempt,
        lambda part: reader.split(part, SPLIT_PARTS),
        CRASH_RETRY,
        isolate_on=_CRASHES,
        first=error,
    )
    parts = [prepared for _, prepared in found.done]
    parts.extend(_dead(work, given_up, keep_rows) for given_up in found.failed)
    return _join(parts, reader.position(ref), work.target.copy.binary, set(claimed), keep_rows)


def _dead(work: BatchWork, given_up: ItemGivenUp[Any], keep_rows: bool) -> PreparedBatch:
    """The batch part that kills its worker alone: every record of it, dead-lettered."""
    reader = work.reader
    batch = reader.read(given_up.unit)
    error = given_up.error
    letters: list[DeadLetter] = list(batch.errors)
    letters.extend(
        letter(
            reader,
            batch,
            i,
            type(error).__name__,
            str(error),
            given_up.attempts,
            given_up,
        )
        for i in range(len(batch.rows))
    )
    empty = CopyData(b"", 0, work.target.copy.binary)
    kept: list[Any] | None = [] if keep_rows else None
    return PreparedBatch(
        batch.read, empty, letters, 0, 0, reader.position(given_up.unit), None, kept, kept
    )


def _join(
    parts: list[PreparedBatch], position: Any, binary: bool, ours: set[str], keep_rows: bool
) -> PreparedBatch:
    plan = ClaimPlan()
    outputs: dict[str, int] = {}
    with_claims = False
    for part in parts:
        if part.claims is None:
            continue
        with_claims = True
        plan.new.extend(part.claims.plan.new)
        plan.expected.update(
            (key, claim) for key, claim in part.claims.plan.expected.items() if key not in ours
        )
        plan.displaced.update(part.claims.plan.displaced)
        plan.duplicates.update(
            (len(plan.duplicates) + i, value)
            for i, value in enumerate(part.claims.plan.duplicates.values())
        )
        outputs.update(part.claims.outputs)
    return PreparedBatch(
        read=sum(p.read for p in parts),
        data=CopyData.join([p.data for p in parts], binary=binary)
        if parts
        else CopyData(b"", 0, binary),
        letters=[letter for p in parts for letter in p.letters],
        filtered=sum(p.filtered for p in parts),
        fanout=sum(p.fanout for p in parts),
        position=position,
        claims=BatchClaims(plan, outputs) if with_claims else None,
        rows=[row for p in parts for row in p.rows or ()] if keep_rows else None,
        owners=[owner for p in parts for owner in p.owners or ()] if keep_rows else None,
    )
