"""Which record first had each key, per job: how duplicate keys become dead letters, once.

A file may hold the same key on several records. Within one job the record on the smallest line
wins and every other one is a dead letter (``DuplicateKeyError``). Another job (a new job_key) or
a full refresh loads the file afresh and upserts its rows over the old ones: claims belong to a
job, so a re-load never mistakes the rows already in the target for duplicates. A resumed attempt
never re-reads a committed batch, and a claim on the record's own line is its own (idempotent)::

    parallel_batch.key_claims(job_id, item_key, line_number, chunk_id, outputs)

(``job_id``: the job's number, ``parallel_batch.jobs.id``; smaller than its key in every row.)

Claims are written in the batch's own commit, so they move exactly with the rows, the dead
letters and the checkpoint. Per batch (see ``core/commit.py``)::

    plan_claims(keys, lines, claims believed to exist)  pure: which records go on, which are
        |                                               duplicates, which claims they take over
    commit: fenced checkpoint, then
        apply_claims:  the job's mode (its row FOR KEY SHARE); by ranges (claim_ranges.py):
        |              the batch's keys in one row, or KeysNeeded; by key: lock the chunks whose
        |              counters move, lock + verify the claims the plan relied on, COPY the new
        |              ones in (all of them, or ClaimsChanged), take the displaced ones over
        ...            rows, dead letters
    ClaimsChanged -> rolled back; read the claims (find_claims), prepare again, commit again
    KeysNeeded    -> rolled back; the job's range claims become key claims; commit again

A job starts out claiming by ranges (cheap: integer keys in order, the common case) and claims
key by key from the first batch that cannot (``claim_ranges.py``); what follows is about claims
by key, which every range claim is equivalent to.

The first try assumes no claim exists (the common case: unique keys). Chunks run in parallel, so
a later chunk may load a key before the earlier chunk holding its first occurrence. The earlier
chunk then *displaces* the claim: the later record's rows leave the target (deleted by key in the
same transaction), it becomes a dead letter of its own chunk, and that chunk's counters move it
to failed (``outputs`` says what it had become: n >= 1 rows written, 0 filtered, -1 failed
already). Totals always reconcile and the outcome does not depend on timing. Displacement only
goes from an earlier chunk to a later one, with locks taken in plan order (own chunk row, later
chunk rows, then claims in key order), so no two commits deadlock (a deadlock reported anyway is
retried as a conflict).

A job's claims are deleted when a full refresh starts it over, and when its last chunk completes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import psycopg
from psycopg import errors

from parallel_batch.store import claim_ranges
from parallel_batch.store.claim_ranges import NewClaims

__all__ = [
    "FAILED",
    "Claim",
    "ClaimPlan",
    "ClaimsChanged",
    "apply_claims",
    "delete_job_claims",
    "displace",
    "find_claims",
    "forget_if_completed",
    "plan_claims",
]

# ``outputs`` of a claim whose record failed (it is a dead letter already).
FAILED = -1

_COPY = (
    "COPY parallel_batch.key_claims (job_id, item_key, line_number, chunk_id, outputs)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["int8", "text", "int8", "text", "int4"]
# The job's number, in a statement that names the job by its key.
_JOB_ID = "(SELECT id FROM parallel_batch.jobs WHERE job_key = %s)"


class ClaimsChanged(Exception):
    """Raised inside a batch commit when the claims differ from what the batch was planned on.

    The commit rolls back; the caller reads the claims again and retries.
    """


class Claim(NamedTuple):
    """The record that has a key in a job.

    :param line_number: the line the record starts on.
    :param chunk_id: the chunk it was read in.
    :param outputs: what it became: output rows written (0: filtered), or FAILED.
    """

    line_number: int
    chunk_id: str
    outputs: int = 1


@dataclass
class ClaimPlan:
    """What a batch does with its keys, given the claims believed to exist.

    :param loads: indexes of the records that go on (first occurrences), in record order.
    :param new: ``(key, line)`` claims to insert (a :class:`NewClaims`: see there).
    :param expected: the existing claims the plan relies on (verified under lock).
    :param displaced: ``{key: (claim taken over, our line)}``.
    :param duplicates: ``{record index: (key, line of the occurrence that wins)}``.
    """

    loads: list[int] = field(default_factory=list)
    new: NewClaims = field(default_factory=NewClaims)
    expected: dict[str, Claim] = field(default_factory=dict)
    displaced: dict[str, tuple[Claim, int]] = field(default_factory=dict)
    duplicates: dict[int, tuple[str, int]] = field(default_factory=dict)


def find_claims(conn: psycopg.Connection, job_key: str, keys: Sequence[str]) -> dict[str, Claim]:
    """Return the job's claims of ``keys`` (one short statement)."""
    rows = conn.execute(
        "SELECT item_key, line_number, chunk_id, outputs FROM parallel_batch.key_claims"
        f" WHERE job_id = {_JOB_ID} AND item_key = ANY(%s)",
        (job_key, list(set(keys))),
    ).fetchall()
    return {key: Claim(line, chunk_id, outputs) for key, line, chunk_id, outputs in rows}


def plan_claims(keys: Sequence[str], lines: Sequence[int], existing: dict[str, Claim]) -> ClaimPlan:
    """Decide which records of a batch go on: per key, the occurrence on the smallest line.

    :param keys: each record's key, in record (= line) order.
    :param lines: each record's starting line.
    :param existing: the job's claims of these keys (an empty dict to assume there are none).
    """
    if len(keys) != len(lines):
        raise ValueError("keys and lines must have the same length")
    if not existing and len(set(keys)) == len(keys):  # the common case, decided in C
        return ClaimPlan(loads=list(range(len(keys))), new=NewClaims(keys, lines))
    plan = ClaimPlan()
    first: dict[str, int] = {}  # key -> line that wins it, once decided in this batch
    for index, (key, line) in enumerate(zip(keys, lines, strict=True)):
        if key in first:
            plan.duplicates[index] = (key, first[key])
            continue
        claim = existing.get(key)
        if claim is not None and claim.line_number < line:
            plan.duplicates[index] = (key, claim.line_number)
            first[key] = claim.line_number
            plan.expected[key] = claim
            continue
        first[key] = line
        plan.loads.append(index)
        if claim is None:
            plan.new.append((key, line))
        else:
            plan.expected[key] = claim
            if claim.line_number > line:
                plan.displaced[key] = (claim, line)
    return plan


def apply_claims(
    conn: psycopg.Connection,
    job_key: str,
    chunk_id: str,
    plan: ClaimPlan,
    outputs: Mapping[str, int],
) -> list[tuple[str, Claim, int]]:
    """Write a batch's claims inside its commit transaction (after the chunk's fence).

    :param outputs: what each claimed key's record became (output rows, 0, or FAILED).
    :returns: the displaced claims as ``(key, claim taken over, our line)``: the caller
        dead-letters each in its chunk (:func:`displace`).
    :raises ClaimsChanged: when the claims are not what ``plan`` was made from.
    """
    if not (plan.new or plan.expected or plan.displaced):
        return []
    job = claim_ranges.job_claims(conn, job_key)
    if not job.by_key:
        if plan.expected or plan.displaced:
            raise claim_ranges.KeysNeeded("the batch's plan relies on claims seen before")
        claim_ranges.claim_range(conn, job.job_id, chunk_id, plan.new, outputs)
        return []
    try:
        displaced_chunks = sorted({claim.chunk_id for claim, _ in plan.displaced.values()})
        if displaced_chunks:
            # Lock order: our chunk row (the fence), later chunks' rows, then claims.
            conn.execute(
                "SELECT 1 FROM parallel_batch.chunks WHERE job_key = %s AND chunk_id = ANY(%s)"
                " ORDER BY position FOR NO KEY UPDATE",
                (job_key, displaced_chunks),
            )
        if plan.expected:
            rows = conn.execute(
                "SELECT item_key, line_number, chunk_id, outputs FROM parallel_batch.key_claims"
                f" WHERE job_id = {_JOB_ID} AND item_key = ANY(%s) ORDER BY item_key FOR UPDATE",
                (job_key, list(plan.expected)),
            ).fetchall()
            found = {key: Claim(line, chunk, n) for key, line, chunk, n in rows}
            if found != plan.expected:
                raise ClaimsChanged("claims changed since the batch was planned")
        if plan.new:
            _insert(conn, job.job_id, chunk_id, plan.new, outputs)
        if plan.displaced:
            keys = sorted(plan.displaced)
            conn.execute(
                "UPDATE parallel_batch.key_claims f SET line_number = u.l, chunk_id = %s,"
                " outputs = u.n FROM unnest(%s::text[], %s::bigint[], %s::int[]) AS u(k, l, n)"
                f" WHERE f.job_id = {_JOB_ID} AND f.item_key = u.k",
                (
                    chunk_id,
                    keys,
                    [plan.displaced[k][1] for k in keys],
                    [outputs.get(k, 1) for k in keys],
                    job_key,
                ),
            )
    except errors.UniqueViolation as exc:
        raise ClaimsChanged("keys were claimed since the batch was planned") from exc
    except errors.DeadlockDetected as exc:
        raise ClaimsChanged("deadlock while claiming keys") from exc
    return [(key, claim, line) for key, (claim, line) in sorted(plan.displaced.items())]


def _insert(
    conn: psycopg.Connection,
    job_id: int,
    chunk_id: str,
    new: Sequence[tuple[str, int]],
    outputs: Mapping[str, int],
) -> None:
    """Insert claims with binary COPY: about twice as fast as INSERT ... ON CONFLICT. A key
    claimed meanwhile fails the COPY with a unique violation. Keys go in sorted, so two commits
    claiming overlapping keys wait for each other instead of deadlocking."""
    with conn.cursor() as cur, cur.copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        write_row = copy.write_row
        for key, line in sorted(new):
            write_row((job_id, key, line, chunk_id, outputs.get(key, 1)))


def displace(
    conn: psycopg.Connection, job_key: str, chunk_id: str, claims: Sequence[Claim]
) -> None:
    """Move displaced records of a chunk to failed in its counters (in the displacing batch's
    transaction, beside the dead letters written for them)."""
    written = sum(max(c.outputs, 0) for c in claims)
    fanout = sum(max(c.outputs - 1, 0) for c in claims)
    filtered = sum(1 for c in claims if c.outputs == 0)
    failed = sum(1 for c in claims if c.outputs != FAILED)
    conn.execute(
        "UPDATE parallel_batch.chunks SET rows_written = rows_written - %s,"
        " rows_fanout = rows_fanout - %s, rows_filtered = rows_filtered - %s,"
        " rows_failed = rows_failed + %s WHERE job_key = %s AND chunk_id = %s",
        (written, fanout, filtered, failed, job_key, chunk_id),
    )


def forget_if_completed(conn: psycopg.Connection, job_key: str) -> int | None:
    """Delete a job's claims if every chunk of it is completed; returns how many, or None.

    Under the job row's lock, the one a full refresh takes: a refresh that starts the job over
    comes either before (then not every chunk is completed) or after (then its chunks claim
    afresh), never between the check and the delete.
    """
    with conn.transaction():
        conn.execute(
            "SELECT 1 FROM parallel_batch.jobs WHERE job_key = %s FOR NO KEY UPDATE", (job_key,)
        )
        open_chunks = conn.execute(
            "SELECT count(*) FROM parallel_batch.chunks WHERE job_key = %s"
            " AND status <> 'completed'",
            (job_key,),
        ).fetchone()
        if open_chunks is None or open_chunks[0]:
            return None
        return delete_job_claims(conn, job_key)


def delete_job_claims(conn: psycopg.Connection, job_key: str) -> int:
    """Delete a job's claims (its full refresh starts over, or it completed); returns how many
    keys they held. A job claiming by key goes on doing so."""
    by_key = conn.execute(
        f"DELETE FROM parallel_batch.key_claims WHERE job_id = {_JOB_ID}", (job_key,)
    ).rowcount
    return by_key + claim_ranges.delete_range_claims(conn, job_key)
