"""Integer keys claimed a batch at a time: one row per batch instead of one per record.

A file's keys are most often integers in ascending order (an export by id): the keys of a batch
then lie in a span [smallest, largest] that no other batch's keys reach, and the batch's claims
fit in one row::

    parallel_batch.range_claims(job_id, chunk_id, span, keys, lines, outputs)
        span     numrange [base + smallest, base + largest], base = job_id * 2**64 + 2**63:
                 spans of two jobs never meet
        keys     the batch's claimed keys; lines: the line of each; outputs: what each became
                 (NULL: one output row each)
        EXCLUDE USING gist (span WITH &&): no two spans overlap

So no claim of the job but a row's own has a key inside that row's span, and a batch whose span
meets no other holds no key claimed before. The exclusion is checked on insert and, like a
unique index, waits for a concurrent insert of an overlapping span to commit or roll back: two
chunks racing for a key cannot both take it.

The first batch that cannot claim a range raises :class:`KeysNeeded`: its span meets another
(keys out of order, a key in two chunks), its keys are not all integers in bigint's range, or its
plan relies on claims seen before. The commit rolls back, :func:`to_keys` moves the job's range
claims to ``key_claims`` (a row per key: line, chunk, outputs) and sets ``claims_by_key``, and
from then on the job claims key by key (``claims.py``: duplicates, displacement), for good.

Locks: a commit reads the job's mode with its row FOR KEY SHARE; the move takes the row FOR
UPDATE, so it waits for every range claim in flight, and none starts until the move commits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any, NamedTuple, overload

import psycopg
from psycopg import errors

__all__ = [
    "JobClaims",
    "KeysNeeded",
    "NewClaims",
    "Packed",
    "claim_range",
    "delete_range_claims",
    "job_claims",
    "job_span",
    "pack",
    "to_keys",
]

_INT64 = 2**63
# Integers as str() writes them, separated by commas (checked at C speed, all keys at once).
# (At most 19 digits each, as many as a bigint has: int() never meets a key of thousands.)
_INTEGERS = re.compile(r"(?:0|-?[1-9][0-9]{0,18})(?:,(?:0|-?[1-9][0-9]{0,18}))*")
_JOB_STRIDE = 2**64


class KeysNeeded(Exception):
    """Raised inside a batch commit: this batch cannot claim a range; the job must claim by key.

    The commit rolls back; the caller runs :func:`to_keys` and commits the batch again.
    """


class JobClaims(NamedTuple):
    """A job's number and whether it claims key by key (else by ranges)."""

    job_id: int
    by_key: bool


def job_claims(conn: psycopg.Connection, job_key: str) -> JobClaims:
    """The job's number and claim mode, its row locked FOR KEY SHARE until the commit."""
    found = conn.execute(
        "SELECT id, claims_by_key FROM parallel_batch.jobs WHERE job_key = %s FOR KEY SHARE",
        (job_key,),
    ).fetchone()
    if found is None:
        raise ValueError(f"no job {job_key!r}")
    return JobClaims(int(found[0]), bool(found[1]))


class Packed(NamedTuple):
    """A batch's new claims as their range row holds them: keys and lines as array literals,
    the smallest and the largest key (before the job's base is added)."""

    keys: str
    lines: str
    low: int
    high: int


def _key_span(keys: Sequence[str]) -> tuple[str, int, int] | None:
    """The keys joined by commas, the smallest and the largest, or None when one is not an
    integer of bigint's range written as ``str(int)`` writes it ("007", "+7" or "-0" are keys of
    their own: a claim by range would come back from to_keys as another key)."""
    if not keys:
        return None
    joined = ",".join(keys)
    if joined.count(",") != len(keys) - 1 or _INTEGERS.fullmatch(joined) is None:
        return None  # a key with a comma in it, or one that is not str(some int)
    values = list(map(int, keys))
    low, high = min(values), max(values)
    if low < -_INT64 or high >= _INT64:
        return None
    return joined, low, high


def job_span(job_id: int, low: int, high: int) -> tuple[int, int]:
    """A span of keys moved to job ``job_id``'s own stretch of numbers (spans of two jobs never
    meet: the largest bigint of one lies below the smallest of the next)."""
    base = job_id * _JOB_STRIDE + _INT64
    return base + low, base + high


def pack(keys: Sequence[str], lines: Sequence[int]) -> Packed | None:
    """The range row's values of ``keys`` (on ``lines``), or None when a key is not an integer
    of bigint's range written as ``str(int)`` writes it (see _key_span)."""
    found = _key_span(keys)
    if found is None:
        return None
    joined, low, high = found
    return Packed("{" + joined + "}", _array(lines), low, high)


_UNPACKED: Any = object()  # NewClaims.packed not worked out yet


class NewClaims(Sequence[tuple[str, int]]):
    """The ``(key, line)`` claims a batch takes, in record order, held as two lists.

    A worker plans a batch's claims and the parent commits them: a list of pairs cost ~0.2 us a
    record to pickle there and back, and ~0.4 more to pick apart and write out as the range
    row's arrays in the parent. So a worker calls :meth:`packed` before it hands the claims
    over: the arrays cross as two strings and the parent only sends them.
    """

    __slots__ = ("_made", "_packed", "keys", "lines")

    def __init__(self, keys: Iterable[str] = (), lines: Iterable[int] = ()) -> None:
        self.keys: list[str] = list(keys)
        self.lines: list[int] = list(lines)
        if len(self.keys) != len(self.lines):
            raise ValueError("keys and lines must have the same length")
        self._packed: Packed | None = _UNPACKED
        self._made: tuple[dict[str, int], str] | None = None

    def packed(self) -> Packed | None:
        """The range row's values (see :func:`pack`), worked out once."""
        if self._packed is _UNPACKED:
            self._packed = pack(self.keys, self.lines)
        return self._packed

    def made(self, packed: Packed | None, outputs: Mapping[str, int], array: str | None) -> None:
        """Take the range row's values worked out elsewhere (the columnar path, from Arrow
        columns): what :meth:`packed` and ``outputs_array(outputs)`` would return."""
        self._packed = packed
        self._made = None if array is None else (dict(outputs), array)

    def outputs_array(self, outputs: Mapping[str, int]) -> str | None:
        """What each claim's record became (``outputs`` names those that did not become one
        row each) as the range row's array literal; None when every record became one row.
        Kept for the same ``outputs``: made in the worker, sent as it is by the parent (unless
        the parent's commit changed what a record became)."""
        if not outputs:
            return None
        if self._made is None or self._made[0] != outputs:
            self._made = dict(outputs), _array(list(map(outputs.get, self.keys, repeat(1))))
        return self._made[1]

    def append(self, pair: tuple[str, int]) -> None:
        """Add a claim after these."""
        self.keys.append(pair[0])
        self.lines.append(pair[1])
        self._packed, self._made = _UNPACKED, None

    def extend(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Add claims after these."""
        for key, line in pairs:
            self.keys.append(key)
            self.lines.append(line)
        self._packed, self._made = _UNPACKED, None

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> tuple[str, int]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, int]]: ...

    def __getitem__(self, index: int | slice) -> tuple[str, int] | list[tuple[str, int]]:
        if isinstance(index, slice):
            return list(zip(self.keys[index], self.lines[index], strict=True))
        return self.keys[index], self.lines[index]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return zip(self.keys, self.lines, strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NewClaims):
            return self.keys == other.keys and self.lines == other.lines
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list

    def __repr__(self) -> str:
        return f"NewClaims({list(self)!r})"

    def __getstate__(self) -> tuple[Any, ...]:
        # whether packed() ran, apart: the marker of "not yet" is not the same object after
        # a pickle or a copy
        done = self._packed is not _UNPACKED
        return self.keys, self.lines, done, self._packed if done else None, self._made

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.keys, self.lines, done, packed, self._made = state
        self._packed = packed if done else _UNPACKED


def claim_range(
    conn: psycopg.Connection,
    job_id: int,
    chunk_id: str,
    new: NewClaims,
    outputs: Mapping[str, int],
) -> None:
    """Claim a batch's keys ``new`` (``(key, line)``) with one row.

    :raises KeysNeeded: the keys are not all integers, or their span meets another batch's
        (a violation, or a deadlock with a commit claiming a span that meets it).
    """
    packed = new.packed()
    if packed is None:
        raise KeysNeeded("keys that are not all integers of bigint's range")
    low, high = job_span(job_id, packed.low, packed.high)
    array, lines = packed.keys, packed.lines
    made = new.outputs_array(outputs)  # NULL: every record became one row
    try:  # a violation ends the commit's transaction: it rolls back
        conn.execute(
            "INSERT INTO parallel_batch.range_claims"
            " (job_id, chunk_id, span, keys, lines, outputs) VALUES"
            " (%s, %s, numrange(%s::numeric, %s::numeric, '[]'), %s::bigint[],"
            " %s::bigint[], %s::integer[])",
            (
                job_id,
                chunk_id,
                str(low),
                str(high),
                array,
                lines,
                made,
            ),
        )
    except errors.ExclusionViolation as exc:
        raise KeysNeeded("the batch's keys meet another batch's span") from exc
    except errors.DeadlockDetected as exc:
        # two commits whose spans meet, each checking the constraint against the other's row:
        # the one PostgreSQL aborts met a span as surely as a violation says so
        raise KeysNeeded("the batch's keys meet a span another commit is claiming") from exc


def _array(values: Sequence[int]) -> str:
    """An array of integers in PostgreSQL's text form, made at C speed (psycopg's list dumper
    matches every element against a pattern: in a profile of a 200,000-record job it took
    1.0 s of the chunk process's 3.9). Not a list's repr, though ~40 % faster: a NumPy
    integer's repr is ``np.int64(3)``."""
    return "{" + ",".join(map(str, values)) + "}"


def to_keys(conn: psycopg.Connection, job_key: str) -> int:
    """Move the job's range claims to key claims, one per key, and claim by key from now on.

    Returns the claims moved (0 when the job claims by key already). Its own transaction.
    """
    with conn.transaction():
        found = conn.execute(
            "SELECT id, claims_by_key FROM parallel_batch.jobs WHERE job_key = %s FOR UPDATE",
            (job_key,),
        ).fetchone()
        if found is None or found[1]:
            return 0
        moved = conn.execute(
            "INSERT INTO parallel_batch.key_claims"
            " (job_id, item_key, line_number, chunk_id, outputs)"
            " SELECT r.job_id, u.key::text, u.line, r.chunk_id, coalesce(u.made, 1)"
            " FROM parallel_batch.range_claims r,"
            " unnest(r.keys, r.lines, r.outputs) AS u(key, line, made)"
            " WHERE r.job_id = %s AND u.key IS NOT NULL",
            (found[0],),
        ).rowcount
        conn.execute("DELETE FROM parallel_batch.range_claims WHERE job_id = %s", (found[0],))
        conn.execute(
            "UPDATE parallel_batch.jobs SET claims_by_key = true WHERE id = %s", (found[0],)
        )
    return moved


def delete_range_claims(conn: psycopg.Connection, job_key: str) -> int:
    """Delete a job's range claims; returns how many keys they held."""
    found = conn.execute(
        "WITH gone AS (DELETE FROM parallel_batch.range_claims r USING parallel_batch.jobs j"
        " WHERE r.job_id = j.id AND j.job_key = %s RETURNING cardinality(r.keys) AS n)"
        " SELECT coalesce(sum(n), 0) FROM gone",
        (job_key,),
    ).fetchone()
    return int(found[0]) if found else 0
