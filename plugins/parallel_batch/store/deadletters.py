"""Dead letters: the items that still failed after their retries, one row per item per job.

An item is a source row (``item_key`` = its key as text) or a file record (``item_key`` =
``"line:N"``). :func:`record_dead_letters` runs inside the caller's transaction (the checkpoint
store's batch commit, or a replay) and upserts on ``(job_key, item_key)``: however many retries,
resumes and replays an item goes through, it has one dead letter, whose ``attempts`` add up.

The read side lists, counts and fetches dead letters for ``parallel-batch status`` and for the
replay DAG, which marks the ones it fixed with :func:`mark_replayed` in the same transaction as
the rows it writes.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

# A message longer than this is cut (with a marker): tracebacks can be huge, and the table is
# read by people and by the status view. Larger: more context kept; smaller: smaller rows.
MAX_MESSAGE_CHARS = 4000
_NUL = "\x00"


@dataclass(frozen=True)
class DeadLetter:
    """One item that failed for good: what it was, and why.

    :param item_key: the item's identity within the job: its key as text, or ``"line:N"``.
    :param line_number: the 1-based line the record starts on in its file, None for table rows.
    :param payload: the item itself as a JSON-able dict (see :func:`json_payload`).
    :param error_type: the exception's class name, e.g. ``"PoisonRowError"``.
    :param message: the error message (cut to ``MAX_MESSAGE_CHARS``).
    :param attempts: how many times the item was tried before it was given up on.
    :param first_failed_at: when its first attempt failed (None: the commit time).
    :param last_failed_at: when its last attempt failed (None: the commit time).
    """

    item_key: str
    line_number: int | None
    payload: dict[str, Any] | None
    error_type: str
    message: str
    attempts: int = 1
    first_failed_at: dt.datetime | None = None
    last_failed_at: dt.datetime | None = None


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead letter as the table holds it.

    :param id: the row's id, increasing in insertion order (the replay pages by it).
    :param job_key: the job it belongs to.
    :param chunk_id: the chunk it was read in.
    :param replayed_at: when a replay processed it successfully, None while it is pending.
    """

    id: int
    job_key: str
    chunk_id: str
    item_key: str
    line_number: int | None
    payload: dict[str, Any] | None
    error_type: str
    message: str
    attempts: int
    first_failed_at: dt.datetime
    last_failed_at: dt.datetime
    replayed_at: dt.datetime | None


def _json_default(value: Any) -> Any:
    # Exact text for numbers and times (a float would lose cents and microseconds).
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return repr(value)


def dumps(value: Any) -> str:
    """Serialise a payload to JSON; values JSON lacks (Decimal, datetime, bytes, ...) become text."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def json_payload(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """Return a row as a ``{column: value}`` dict that survives a JSON round trip as text.

    :param columns: the column names, in the row's order.
    :param row: the values.
    """
    if len(columns) != len(row):
        raise ValueError(f"row has {len(row)} values but {len(columns)} columns were given")
    result: dict[str, Any] = json.loads(dumps(dict(zip(columns, row, strict=True))))
    # jsonb holds neither a NUL character nor NaN/Infinity: a row with one must still become a
    # dead letter, so those values are kept as text.
    return {k: _jsonb_safe(v) for k, v in result.items()}


def _jsonb_safe(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_NUL, "\\u0000")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 20] + " ... [message cut]"


def record_dead_letters(
    conn: psycopg.Connection, job_key: str, chunk_id: str, letters: Iterable[DeadLetter]
) -> int:
    """Insert dead letters, or update the existing one of the same item: one row per item per job.

    Runs in the caller's transaction and never commits. An existing dead letter gets the new
    error, its attempts added, its last failure time moved, and is pending again.

    :returns: how many dead letters were recorded.
    """
    batch = list(letters)
    for letter in batch:
        if letter.attempts < 1:
            raise ValueError("attempts must be at least 1")
    if not batch:
        return 0
    if len({letter.item_key for letter in batch}) == len(batch):
        # One statement for the batch: a JSON array of the letters, a row each. ~half the
        # server's CPU and a fraction of the client's of one INSERT per letter (the demo file
        # makes ~50 a batch). Two letters of one item must update in turn: the loop below.
        rows = [
            {
                "item_key": _text(letter.item_key),
                "line_number": letter.line_number,
                "payload": letter.payload,
                "error_type": _text(letter.error_type),
                "message": _text(_cut(letter.message)),
                "attempts": letter.attempts,
                "first_failed_at": letter.first_failed_at,
                "last_failed_at": letter.last_failed_at,
            }
            for letter in batch
        ]
        conn.execute(_UPSERT_ALL, (job_key, chunk_id, dumps(rows)))
        return len(rows)
    params = [
        (
            job_key,
            chunk_id,
            _text(letter.item_key),
            letter.line_number,
            None if letter.payload is None else Jsonb(letter.payload, dumps=dumps),
            _text(letter.error_type),
            _text(_cut(letter.message)),
            letter.attempts,
            letter.first_failed_at,
            letter.last_failed_at,
        )
        for letter in batch
    ]
    with conn.cursor() as cur:
        cur.executemany(_UPSERT_ONE, params)
    return len(params)


def _text(value: str) -> str:
    """Text PostgreSQL can store (and jsonb can hold): a NUL character spelled out."""
    return value.replace(_NUL, "\\u0000") if _NUL in value else value


_ON_CONFLICT = """
    ON CONFLICT (job_key, item_key) DO UPDATE SET
        chunk_id = EXCLUDED.chunk_id,
        line_number = EXCLUDED.line_number,
        payload = EXCLUDED.payload,
        error_type = EXCLUDED.error_type,
        message = EXCLUDED.message,
        attempts = d.attempts + EXCLUDED.attempts,
        last_failed_at = greatest(d.last_failed_at, EXCLUDED.last_failed_at),
        replayed_at = NULL
"""
_COLUMNS = """
    INSERT INTO parallel_batch.dead_letters AS d
        (job_key, chunk_id, item_key, line_number, payload, error_type, message, attempts,
         first_failed_at, last_failed_at)
"""
_UPSERT_ONE = (
    _COLUMNS
    + """
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()), coalesce(%s, now()))
"""
    + _ON_CONFLICT
)
_UPSERT_ALL = (
    _COLUMNS
    + """
    SELECT %s, %s, u.item_key, u.line_number, nullif(u.payload, 'null'::jsonb), u.error_type,
           u.message, u.attempts, coalesce(u.first_failed_at, now()),
           coalesce(u.last_failed_at, now())
    FROM jsonb_to_recordset(%s::jsonb) AS u(
        item_key text, line_number bigint, payload jsonb, error_type text, message text,
        attempts integer, first_failed_at timestamptz, last_failed_at timestamptz)
"""
    + _ON_CONFLICT
)


def delete_chunk_dead_letters(conn: psycopg.Connection, job_key: str, chunk_id: str) -> int:
    """Delete a chunk's dead letters (a full refresh starts the chunk over); caller's transaction."""
    cur = conn.execute(
        "DELETE FROM parallel_batch.dead_letters WHERE job_key = %s AND chunk_id = %s",
        (job_key, chunk_id),
    )
    return cur.rowcount


def count_dead_letters(
    conn: psycopg.Connection, job_key: str, *, include_replayed: bool = False
) -> int:
    """Return how many dead letters a job has (pending ones only, unless ``include_replayed``)."""
    row = conn.execute(
        "SELECT count(*) FROM parallel_batch.dead_letters"
        " WHERE job_key = %s AND (%s OR replayed_at IS NULL)",
        (job_key, include_replayed),
    ).fetchone()
    return int(row[0]) if row else 0


_COUNT_BY = {
    "chunk_id": "SELECT chunk_id, count(*) FROM parallel_batch.dead_letters"
    " WHERE job_key = %s AND replayed_at IS NULL GROUP BY 1 ORDER BY 1",
    "error_type": "SELECT error_type, count(*) AS n FROM parallel_batch.dead_letters"
    " WHERE job_key = %s AND replayed_at IS NULL GROUP BY 1 ORDER BY n DESC, 1",
}


def count_by_chunk(conn: psycopg.Connection, job_key: str) -> dict[str, int]:
    """Return the number of pending dead letters of each chunk of a job that has any."""
    return _count_by(conn, "chunk_id", job_key)


def count_by_error_type(conn: psycopg.Connection, job_key: str) -> dict[str, int]:
    """Return the number of pending dead letters of a job per error type, most frequent first."""
    return _count_by(conn, "error_type", job_key)


def _count_by(conn: psycopg.Connection, column: str, job_key: str) -> dict[str, int]:
    rows = conn.execute(_COUNT_BY[column], (job_key,)).fetchall()
    return {value: int(n) for value, n in rows}


def _stored(row: Mapping[str, Any]) -> StoredDeadLetter:
    return StoredDeadLetter(**row)


_COLUMNS = (
    "id, job_key, chunk_id, item_key, line_number, payload, error_type, message, attempts,"
    " first_failed_at, last_failed_at, replayed_at"
)


def _select(
    conn: psycopg.Connection, clauses: str, params: tuple[Any, ...]
) -> list[StoredDeadLetter]:
    """Dead letters by ``clauses`` (a constant WHERE ... LIMIT %s); the limit is params[-1]."""
    if params[-1] <= 0:
        raise ValueError("limit must be greater than 0")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM parallel_batch.dead_letters{clauses}", params)
        return [_stored(row) for row in cur.fetchall()]


def list_dead_letters(
    conn: psycopg.Connection,
    job_key: str,
    *,
    limit: int = 100,
    after_id: int = 0,
    include_replayed: bool = False,
    chunk_id: str | None = None,
) -> list[StoredDeadLetter]:
    """Return a page of a job's dead letters in id order (pass the last id as ``after_id``).

    :param limit: rows in the page at most.
    :param after_id: only dead letters with a larger id (keyset paging).
    :param include_replayed: also those a replay already processed.
    :param chunk_id: only that chunk's.
    """
    return _select(
        conn,
        " WHERE job_key = %s AND id > %s AND (%s OR replayed_at IS NULL)"
        " AND (%s::text IS NULL OR chunk_id = %s) ORDER BY id LIMIT %s",
        (job_key, after_id, include_replayed, chunk_id, chunk_id, limit),
    )


def fetch_for_replay(
    conn: psycopg.Connection, job_key: str, *, limit: int, after_id: int = 0
) -> list[StoredDeadLetter]:
    """Return the next page of a job's pending dead letters to replay, in id order.

    Call it inside the replay's transaction: the rows are locked (``FOR UPDATE SKIP LOCKED``), so
    two replays running at once never take the same dead letter.
    """
    return _select(
        conn,
        " WHERE job_key = %s AND id > %s AND replayed_at IS NULL"
        " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
        (job_key, after_id, limit),
    )


def mark_replayed(conn: psycopg.Connection, job_key: str, item_keys: Sequence[str]) -> int:
    """Mark dead letters as replayed (their items are now in the target); caller's transaction.

    :returns: how many pending dead letters were marked.
    """
    if not item_keys:
        return 0
    cur = conn.execute(
        "UPDATE parallel_batch.dead_letters SET replayed_at = now()"
        " WHERE job_key = %s AND item_key = ANY(%s) AND replayed_at IS NULL",
        (job_key, list(item_keys)),
    )
    return cur.rowcount
