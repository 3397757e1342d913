"""Prepare one batch where it is transformed: read it, keep first occurrences, transform, encode.

::

    prepare(work, ref)                in a pool worker (prepare_in_worker) or in this process
        |  (work.columnar: prepare_columns, the same batch as Arrow columns; None: on here)
        |  work.reader.read(ref)      the batch's records (a file's bad records: dead letters)
        |  plan_claims                (a key to deduplicate) later occurrences of a key: dead
        |                             letters; the batch's claims go to the commit
        |  isolate(apply)             the transform over the rows, encoded for the target; a
        |                             failing row is isolated (split, retried) -> dead letter
        v
    PreparedBatch(read, data, letters, filtered, fanout, position, claims)
        one bytes object and the few dead letters cross back to the parent, which commits them

This module is imported by every worker: no pool, no Airflow.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Any, NamedTuple

from parallel_batch.core.apply import Applier, RetriedError, UnitOutput
from parallel_batch.core.source import BatchRef, ChunkReader, ReadBatch
from parallel_batch.core.target import Target
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.engine.isolation import Isolated, ItemGivenUp, isolate, split_range
from parallel_batch.store.claims import FAILED, Claim, ClaimPlan, plan_claims
from parallel_batch.store.copy_data import CopyData
from parallel_batch.store.deadletters import DeadLetter, json_payload

__all__ = [
    "DUPLICATE_ERROR",
    "BatchClaims",
    "BatchWork",
    "PreparedBatch",
    "prepare",
    "prepare_in_worker",
]

DUPLICATE_ERROR = "DuplicateKeyError"

Row = tuple[Any, ...]


@dataclass(frozen=True)
class BatchWork:
    """Everything a process needs to prepare a chunk's batches (pickled to the workers).

    :param reader: the chunk's reader.
    :param transform: the transform.
    :param target: the target's written columns and their format.
    :param dedup_key: the source column whose later occurrences are dead letters (None: none).
    """

    reader: ChunkReader
    transform: TransformSpec
    target: Target
    dedup_key: str | None = None

    @cached_property
    def columnar(self) -> bool:
        """Whether batches take the columnar path (see prepare_columns), decided once."""
        if not getattr(self.reader, "columns_ready", None):
            return False  # a reader of rows only: pyarrow is not even imported
        from parallel_batch.core.prepare_columns import columns_ready

        return columns_ready(self)


class BatchClaims(NamedTuple):
    """A batch's claims, for the commit: the plan, and what each claimed record became when
    that is not one output row (``outputs.get(key, 1)``)."""

    plan: ClaimPlan
    outputs: dict[str, int]


class PreparedBatch(NamedTuple):
    """A batch read, transformed and encoded, ready to commit.

    :param read: records the batch held.
    :param data: the output rows, encoded for the target.
    :param letters: the records that failed for good (read, duplicate, transform or target).
    :param filtered: records the transform dropped.
    :param fanout: output rows beyond one per record.
    :param position: the checkpoint once committed.
    :param claims: the batch's key claims (a key to deduplicate only).
    :param rows: the output rows (``keep_rows`` only: a refused write's diagnosis).
    :param owners: each output row's dead letter, should the target refuse it (``keep_rows``).
    """

    read: int
    data: CopyData
    letters: list[DeadLetter]
    filtered: int
    fanout: int
    position: Any
    claims: BatchClaims | None = None
    rows: list[Row] | None = None
    owners: list[DeadLetter] | None = None

    def check(self) -> None:
        """Raise RuntimeError when the counts do not add up (a bug, never bad data)."""
        accounted = len(self.data) - self.fanout + self.filtered + len(self.letters)
        if accounted != self.read:
            raise RuntimeError(
                f"a batch of {self.read} records came back as {len(self.data)} rows written "
                f"(fan-out {self.fanout}), {self.filtered} filtered, {len(self.letters)} failed"
            )


def letter(
    reader: ChunkReader,
    batch: ReadBatch,
    index: int,
    error_type: str,
    message: str,
    attempts: int = 1,
    given_up: ItemGivenUp[Any] | None = None,
) -> DeadLetter:
    """The dead letter of ``batch.rows[index]``."""
    return DeadLetter(
        item_key=reader.item_key(batch, index),
        line_number=None if batch.lines is None else batch.lines[index],
        payload=json_payload(reader.columns, batch.rows[index]),
        error_type=error_type,
        message=message,
        attempts=attempts,
        first_failed_at=None if given_up is None else given_up.first_failed_at,
        last_failed_at=None if given_up is None else given_up.last_failed_at,
    )


def _given_up_letter(
    reader: ChunkReader, batch: ReadBatch, index: int, failed: ItemGivenUp[Any]
) -> DeadLetter:
    error = failed.error
    if isinstance(error, RetriedError):
        item = error.failure
        return letter(reader, batch, index, item.error_type, item.message, item.attempts, failed)
    return letter(reader, batch, index, type(error).__name__, str(error), failed.attempts, failed)


def prepare(
    work: BatchWork,
    ref: BatchRef,
    claimed: dict[str, Claim] | None = None,
    *,
    keep_rows: bool = False,
) -> PreparedBatch:
    """Read, deduplicate, transform and encode the batch ``ref``.

    :param claimed: the job's claims of this batch's keys, when a commit found them changed.
    :param keep_rows: also return the output rows and their owners (a refused write's diagnosis).
    """
    if work.columnar and not keep_rows:
        from parallel_batch.core.prepare_columns import prepare_columns

        prepared = prepare_columns(work, ref, claimed)
        if prepared is not None:
            return prepared
    reader = work.reader
    batch = reader.read(ref)
    letters = list(batch.errors)
    # the batch row index of each row transformed
    order: Sequence[int] = range(len(batch.rows))
    claims = None
    if work.dedup_key is not None:
        claims, order, duplicates = _deduplicate(work, batch, claimed or {})
        letters.extend(duplicates)
    rows = [batch.rows[i] for i in order] if len(order) != len(batch.rows) else batch.rows
    applier = Applier(work.transform, reader.columns, work.target, keep_rows=keep_rows)
    try:
        isolated: Isolated[tuple[int, int], UnitOutput] = (
            isolate(
                (0, len(rows)),
                lambda unit: applier.attempt(rows, unit),
                split_range,
                applier.policy,
            )
            if rows
            else Isolated([], [])  # nothing to transform (every record bad or a duplicate)
        )
    finally:
        applier.close()
    parts: list[tuple[tuple[int, int], UnitOutput]] = sorted(isolated.done)
    outputs: dict[str, int] = {}
    failed = sorted(isolated.failed, key=lambda f: f.unit)
    for given_up in failed:
        index = order[given_up.unit[0]]
        letters.append(_given_up_letter(reader, batch, index, given_up))
    if claims is not None:
        outputs = _claim_outputs(batch, order, parts, work)
        claims.new.outputs_array(outputs)  # made here, in the worker, as the arrays are
    kept_rows, owners = _kept(parts, work, batch, order, ref) if keep_rows else (None, None)
    prepared = PreparedBatch(
        read=batch.read,
        data=CopyData(
            b"".join(p.data for _, p in parts),
            sum(p.written for _, p in parts),
            work.target.copy.binary,
        ),
        letters=letters,
        filtered=sum(p.filtered for _, p in parts),
        fanout=sum(p.fanout for _, p in parts),
        position=reader.position(ref),
        claims=None if claims is None else BatchClaims(claims, outputs),
        rows=kept_rows,
        owners=owners,
    )
    prepared.check()
    return prepared


def _deduplicate(
    work: BatchWork, batch: ReadBatch, claimed: dict[str, Claim]
) -> tuple[ClaimPlan, list[int], list[DeadLetter]]:
    reader = work.reader
    key_index = reader.columns.index(work.dedup_key)
    keys = list(map(str, map(itemgetter(key_index), batch.rows)))
    lines = batch.lines if batch.lines is not None else list(range(len(keys)))
    plan = plan_claims(keys, lines, claimed)
    plan.new.packed()  # the range row's arrays made here, in the worker (see NewClaims)
    letters = [
        letter(
            reader,
            batch,
            i,
            DUPLICATE_ERROR,
            f"duplicate {work.dedup_key} {key}: the record on line {first} has it too, and the "
            "first occurrence in the file is the one loaded",
        )
        for i, (key, first) in sorted(plan.duplicates.items())
    ]
    return plan, plan.loads, letters


def _claim_outputs(
    batch: ReadBatch,
    order: Sequence[int],
    parts: list[tuple[tuple[int, int], UnitOutput]],
    work: BatchWork,
) -> dict[str, int]:
    """What each claimed record became when not one output row: its output rows, 0
    (filtered) or FAILED (a record missing from every part failed)."""
    key_index = work.reader.columns.index(work.dedup_key)
    done = [False] * len(order)
    counts: dict[int, int] = {}
    for (start, stop), part in parts:
        if part.counts is None:  # one output row each
            done[start:stop] = [True] * (stop - start)
            continue
        for i, n in part.counts.items():  # a row missing from them failed
            done[i] = True
            if n != 1:
                counts[i] = n
    if not all(done):
        counts.update((i, FAILED) for i, seen in enumerate(done) if not seen)
    return {str(batch.rows[order[i]][key_index]): n for i, n in counts.items()}


def _kept(
    parts: list[tuple[tuple[int, int], UnitOutput]],
    work: BatchWork,
    batch: ReadBatch,
    order: Sequence[int],
    ref: BatchRef,
) -> tuple[list[Row], list[DeadLetter]]:
    """The output rows, and for each the dead letter it would make (error still blank): its
    source row's, or for an output whose source row is unknown (a dataframe transform that
    changed the index), the output row itself."""
    reader = work.reader
    rows: list[Row] = []
    owners: list[DeadLetter] = []
    for _, part in parts:
        assert part.rows is not None
        rows.extend(part.rows)
        sources = part.owners if part.owners is not None else [None] * len(part.rows)
        for output, source in zip(part.rows, sources, strict=True):
            if source is not None:
                owners.append(letter(reader, batch, order[source], "", ""))
                continue
            owners.append(
                DeadLetter(
                    item_key=f"output:{json.dumps(reader.position(ref))}:{len(owners)}",
                    line_number=None,
                    payload=json_payload(work.target.columns, output),
                    error_type="",
                    message="",
                )
            )
    return rows, owners


def prepare_in_worker(
    work: BatchWork,
    ref: BatchRef,
    claimed: dict[str, Claim] | None = None,
    keep_rows: bool = False,
) -> PreparedBatch:
    """The pool's function: :func:`prepare` in a worker process, the cyclic garbage collector
    paused meanwhile. A batch makes and drops some ten objects a record, nearly all freed by
    reference counting as they go; the collections their allocations set off scanned the
    batch's live objects again and again: ~0.9 us of ~8 a record of the demo file (prepare()
    both ways in one process, taking turns). Cycles left (an exception's traceback) are
    collected once the collector runs again, after the batch."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return prepare(work, ref, claimed, keep_rows=keep_rows)
    finally:
        if paused:
            gc.enable()
