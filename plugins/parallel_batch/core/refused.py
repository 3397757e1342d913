"""Rows the target refuses (a constraint, a foreign key): isolated, their sources dead-lettered.

A write that fails with a DataError or an IntegrityError is rolled back. The batch is prepared
again keeping its output rows and each one's source, and the one isolation mechanism finds the
rows at fault with writes that roll back::

    isolate(all output rows, attempt = write them in a transaction that rolls back,
            split k-way, no retry, isolate_on = DataError, IntegrityError)
        -> the refused output rows -> their source records: dead letters with the server's reason
    the other rows encoded again -> the batch to commit

Used by the batch commit (core.commit) and by the replay (core.replay).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg

from parallel_batch.core.prepare import PreparedBatch
from parallel_batch.core.target import Target
from parallel_batch.engine.isolation import Attempted, isolate, split_range
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.store import claims
from parallel_batch.store.copy_data import CopyEncoder
from parallel_batch.store.deadletters import DeadLetter

__all__ = ["REFUSED", "without_refused"]

REFUSED = (psycopg.DataError, psycopg.IntegrityError)
_ONCE = RetryPolicy(max_attempts=1)


def without_refused(
    conn: psycopg.Connection,
    diagnosis: PreparedBatch,
    write: Callable[[psycopg.Connection, list[Any]], object],
    target: Target,
    error: psycopg.Error,
    *,
    dedup_key: str | None = None,
) -> tuple[PreparedBatch, int]:
    """The batch without the sources of the rows the target refuses, and how many they were.

    :param diagnosis: the batch prepared with ``keep_rows`` (its rows and their owners).
    :param write: writes output rows on ``conn`` inside the caller's transaction.
    :param error: the refusal that sent us here, raised again when no single row is at fault
        (only a combination of rows fails: a key twice in the batch, say).
    """
    rows, owners = diagnosis.rows, diagnosis.owners
    assert rows is not None and owners is not None

    def probe(unit: tuple[int, int]) -> Attempted[tuple[int, int], None]:
        with conn.transaction(force_rollback=True):
            write(conn, rows[unit[0] : unit[1]])
        return Attempted(None)

    found = isolate((0, len(rows)), probe, split_range, _ONCE, isolate_on=REFUSED)
    if not found.failed:
        raise error
    refused: dict[str, DeadLetter] = {}
    for given_up in found.failed:
        exc = given_up.error
        message = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
        owner = owners[given_up.unit[0]]
        refused.setdefault(
            owner.item_key,
            dataclasses.replace(
                owner,
                error_type=type(exc).__name__,
                message=f"the target refused the row: {message}",
            ),
        )
    return _rebuilt(diagnosis, rows, owners, refused, target, dedup_key), len(refused)


def _rebuilt(
    diagnosis: PreparedBatch,
    rows: list[Any],
    owners: list[DeadLetter],
    refused: dict[str, DeadLetter],
    target: Target,
    dedup_key: str | None,
) -> PreparedBatch:
    kept = [i for i, owner in enumerate(owners) if owner.item_key not in refused]
    data = CopyEncoder(target.copy).encode(rows[i] for i in kept)
    letters = [*diagnosis.letters, *refused.values()]
    outputs = Counter(owners[i].item_key for i in kept)
    fanout = sum(n - 1 for n in outputs.values())
    filtered = diagnosis.read - len(letters) - (len(data) - fanout)
    batch_claims = diagnosis.claims
    if batch_claims is not None and dedup_key is not None:
        gone = {
            str(letter.payload.get(dedup_key))
            for letter in refused.values()
            if letter.payload is not None
        }
        plan = batch_claims.plan
        claimed = {key for key, _ in plan.new} | plan.expected.keys()
        # outputs names the records that did not become one row; a refused one failed now
        failed = dict.fromkeys(gone & claimed, claims.FAILED)
        batch_claims = batch_claims._replace(outputs={**batch_claims.outputs, **failed})
    if filtered < 0:  # outputs of unknown sources (a dataframe that changed the index)
        fanout, filtered = fanout - filtered, 0
    # settled: without the rows and owners only a refused write's diagnosis needs
    return PreparedBatch(
        diagnosis.read, data, letters, filtered, fanout, diagnosis.position, batch_claims
    )
