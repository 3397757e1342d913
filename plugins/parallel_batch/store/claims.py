"""Which line of a file loaded each key, per job: how duplicate ids become dead letters, once.

A CSV file may hold the same id on several records. Within one job the record on the smallest
line loads and every other one is a dead letter (``DuplicateKeyError``). Another job (a new
job_key) or a full refresh loads the file afresh and upserts its rows over the old ones: claims
belong to a job, so a re-load never mistakes the rows already in the target for duplicates. A
resumed attempt never re-reads a committed batch, and a claim on the record's own line is its
own (idempotent), so a retry never does either::

    parallel_batch.file_keys(job_key, item_key, line_number, chunk_id)  PK (job_key, item_key)

Claims are written in the batch's own commit, so they move exactly with the rows, the dead
letters and the checkpoint. Per batch (see ``files/load.py``)::

    plan_claims(keys, lines, claims believed to exist)  pure: which rows load, which are
        |                                               duplicates, which claims they take over
    commit_batch(write=...):  fenced checkpoint, then
        apply_claims:  lock the chunks whose counters move, lock + verify the claims the plan
        |              relied on, COPY the new ones in (all of them, or ClaimsChanged),
        |              take the displaced ones over
        ...            rows, dead letters
    ClaimsChanged -> rolled back; read the claims (find_claims), plan again, commit again

The first try assumes no claim exists (the common case: unique ids), which costs nothing
more than the COPY of the claims; any conflict sends the batch through the read-and-verify
round.

Chunks run in parallel, so a later chunk may load an id before the earlier chunk that holds its
first occurrence. The earlier chunk then *displaces* the claim: its record is upserted over the
row, and the displaced line becomes a dead letter of its own chunk, whose counters move one row
from written to failed, all in the earlier chunk's transaction. Totals always reconcile (rows
read == written + failed, per chunk and per job) and the outcome does not depend on timing.
Displacement only ever goes from an earlier chunk to a later one; with the locks taken in plan
order (own chunk row, later chunk rows, then claims in key order) no two commits can deadlock
(a deadlock reported anyway is retried as a conflict).

A job's claims are deleted when a full refresh starts it over, and when its last chunk completes
(nothing reads them after that: a rerun skips completed chunks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import psycopg
from psycopg import errors

__all__ = [
    "CLAIMS_TABLE",
    "Claim",
    "ClaimPlan",
    "ClaimsChanged",
    "apply_claims",
    "chunk_totals",
    "delete_job_claims",
    "ensure_claims_table",
    "find_claims",
    "forget_if_completed",
    "move_to_failed",
    "plan_claims",
]

CLAIMS_TABLE = "parallel_batch.file_keys"
# Transaction-level advisory lock that serialises the creation of the table ("pb_fkeys").
_CREATE_LOCK_KEY = 0x70625F666B657973
# No foreign key to jobs: it would cost a lookup and a row lock on the job per inserted claim
# (thousands per batch); the claims of a job are deleted explicitly instead. COLLATE "C":
# byte-wise comparisons in the primary key (only equality matters), ~10% cheaper inserts.
_DDL = """
CREATE TABLE IF NOT EXISTS parallel_batch.file_keys (
    job_key     text COLLATE "C" NOT NULL,
    item_key    text COLLATE "C" NOT NULL,
    line_number bigint NOT NULL,
    chunk_id    text NOT NULL,
    PRIMARY KEY (job_key, item_key)
)
"""


_COPY = (
    "COPY parallel_batch.file_keys (job_key, item_key, line_number, chunk_id)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["text", "text", "int8", "text"]


class ClaimsChanged(Exception):
    """Raised inside a batch commit when the claims differ from what the batch was planned on.

    The commit rolls back; the caller reads the claims again and retries.
    """


class Claim(NamedTuple):
    """The record that loaded a key in a job.

    :param line_number: the line the record starts on.
    :param chunk_id: the chunk it was read in.
    """

    line_number: int
    chunk_id: str


@dataclass
class ClaimPlan:
    """What a batch does with its keys, given the claims believed to exist.

    :param loads: indexes of the rows that load (first occurrences), in row order.
    :param new: ``(key, line)`` claims to insert.
    :param expected: the existing claims the plan relies on (verified under lock).
    :param displaced: ``{key: (claim taken over, our line)}``.
    :param duplicates: ``{row index: (key, line of the occurrence that loads)}``.
    """

    loads: list[int] = field(default_factory=list)
    new: list[tuple[str, int]] = field(default_factory=list)
    expected: dict[str, Claim] = field(default_factory=dict)
    displaced: dict[str, tuple[Claim, int]] = field(default_factory=dict)
    duplicates: dict[int, tuple[str, int]] = field(default_factory=dict)


def ensure_claims_table(conn: psycopg.Connection) -> None:
    """Create the claims table unless it exists (the ``parallel_batch`` schema must exist)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CLAIMS_TABLE,)).fetchone()
    if exists and exists[0]:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK_KEY,))
        conn.execute(_DDL)


def find_claims(conn: psycopg.Connection, job_key: str, keys: Sequence[str]) -> dict[str, Claim]:
    """Return the job's claims of ``keys`` (one short statement)."""
    rows = conn.execute(
        "SELECT item_key, line_number, chunk_id FROM parallel_batch.file_keys"
        " WHERE job_key = %s AND item_key = ANY(%s)",
        (job_key, list(set(keys))),
    ).fetchall()
    return {key: Claim(line, chunk_id) for key, line, chunk_id in rows}


def plan_claims(keys: Sequence[str], lines: Sequence[int], existing: dict[str, Claim]) -> ClaimPlan:
    """Decide which rows of a batch load: per key, the occurrence on the smallest line.

    :param keys: each row's key, in row (= line) order.
    :param lines: each row's starting line.
    :param existing: the job's claims of these keys (an empty dict to assume there are none).
    """
    if len(keys) != len(lines):
        raise ValueError("keys and lines must have the same length")
    plan = ClaimPlan()
    first: dict[str, int] = {}  # key -> line that loads it, once decided in this batch
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
    conn: psycopg.Connection, job_key: str, chunk_id: str, plan: ClaimPlan
) -> list[tuple[str, Claim, int]]:
    """Write a batch's claims inside its commit transaction (after the chunk's fence).

    :returns: the displaced claims as ``(key, claim taken over, our line)``: the caller turns
        each into a dead letter of its chunk and calls :func:`move_to_failed`.
    :raises ClaimsChanged: when the claims are not what ``plan`` was made from.
    """
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
                "SELECT item_key, line_number, chunk_id FROM parallel_batch.file_keys"
                " WHERE job_key = %s AND item_key = ANY(%s) ORDER BY item_key FOR UPDATE",
                (job_key, list(plan.expected)),
            ).fetchall()
            found = {key: Claim(line, chunk) for key, line, chunk in rows}
            if found != plan.expected:
                raise ClaimsChanged("claims changed since the batch was planned")
        if plan.new:
            _insert(conn, job_key, chunk_id, plan.new)
        if plan.displaced:
            keys = sorted(plan.displaced)
            conn.execute(
                "UPDATE parallel_batch.file_keys f SET line_number = u.l, chunk_id = %s"
                " FROM unnest(%s::text[], %s::bigint[]) AS u(k, l)"
                " WHERE f.job_key = %s AND f.item_key = u.k",
                (chunk_id, keys, [plan.displaced[k][1] for k in keys], job_key),
            )
    except errors.UniqueViolation as exc:
        raise ClaimsChanged("keys were claimed since the batch was planned") from exc
    except errors.DeadlockDetected as exc:
        raise ClaimsChanged("deadlock while claiming keys") from exc
    return [(key, claim, line) for key, (claim, line) in sorted(plan.displaced.items())]


def _insert(
    conn: psycopg.Connection, job_key: str, chunk_id: str, new: list[tuple[str, int]]
) -> None:
    """Insert claims with binary COPY: about twice as fast as INSERT ... ON CONFLICT (no
    speculative insertion). A key claimed meanwhile fails the COPY with a unique violation.
    Keys go in sorted, so two commits claiming overlapping keys wait for each other instead of
    deadlocking."""
    with conn.cursor() as cur, cur.copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        write_row = copy.write_row
        for key, line in sorted(new):
            write_row((job_key, key, line, chunk_id))


def move_to_failed(conn: psycopg.Connection, job_key: str, chunk_id: str, rows: int) -> None:
    """Move ``rows`` of a chunk's counters from written to failed (its records were displaced).

    Runs in the displacing batch's transaction, next to the dead letters it writes for them.
    """
    conn.execute(
        "UPDATE parallel_batch.chunks SET rows_written = rows_written - %s,"
        " rows_failed = rows_failed + %s WHERE job_key = %s AND chunk_id = %s",
        (rows, rows, job_key, chunk_id),
    )


def chunk_totals(
    conn: psycopg.Connection, job_key: str, chunk_id: str
) -> tuple[int, int, int] | None:
    """Return a chunk's ``(rows_read, rows_written, rows_failed)`` as the store has them now
    (another chunk may have moved some of its rows from written to failed)."""
    row = conn.execute(
        "SELECT rows_read, rows_written, rows_failed FROM parallel_batch.chunks"
        " WHERE job_key = %s AND chunk_id = %s",
        (job_key, chunk_id),
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


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
    """Delete a job's claims (its full refresh starts over, or it completed); returns how many."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CLAIMS_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return 0
    return conn.execute(
        "DELETE FROM parallel_batch.file_keys WHERE job_key = %s", (job_key,)
    ).rowcount
