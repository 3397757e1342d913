"""The demo data and transform: demo.events in, demo.events_enriched out (DESIGN.md's contract).

``seed_events`` (re)creates ``demo.events(id bigint primary key, user_id int, payload text,
amount numeric(12,2), created_at timestamptz)`` in one server-side ``generate_series`` statement
(1,000,000 rows in a few seconds). Values are a function of the row's id, so reruns give the same
rows, apart from ``created_at``, which spreads ids 1..N evenly over the 30 days before now (in id
order, like an append-only event log). Every ``poison_every``-th row's payload starts with
``poison:`` and every ``crash_every``-th row's with ``crash:`` (a row that is both is a crash row).

``enrich_events`` is the demo's CPU work: for each event, the SHA-256 of its payload and its
amount in cents::

    (id, user_id, payload, amount, created_at)
        -> (id, user_id, sha256(payload).hexdigest(), int(amount * 100), created_at)

A poison row raises :class:`PoisonRowError` on every attempt; a crash row ends the process that
handles it at once, as a segfault or the OOM killer would (run it only in a worker process).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NoReturn

import psycopg
from psycopg import sql

from parallel_batch.exceptions import PoisonRowError
from parallel_batch.store.identifiers import parse_table, table_sql

log = logging.getLogger(__name__)

EVENTS_TABLE = "demo.events"
ENRICHED_TABLE = "demo.events_enriched"
EVENTS_COLUMNS = ("id", "user_id", "payload", "amount", "created_at")
ENRICHED_COLUMNS = ("id", "user_id", "payload_sha256", "amount_cents", "created_at")
POISON_PREFIX = "poison:"
CRASH_PREFIX = "crash:"
# What a shell reports for a process killed by SIGSEGV (128 + 11).
CRASH_EXIT_CODE = 139
SEED_DAYS = 30

_BAD_PREFIXES = (POISON_PREFIX, CRASH_PREFIX)
_HUNDRED = Decimal(100)

_EVENTS_DDL = (
    "CREATE TABLE {} (id bigint NOT NULL, user_id integer, payload text,"
    " amount numeric(12,2), created_at timestamptz)"
)
# The primary key and the created_at index are built after the load: faster than maintaining
# them row by row. created_at is every scheduled run's filter (its data interval).
_EVENTS_INDEXES = (
    "ALTER TABLE {} ADD PRIMARY KEY (id)",
    "CREATE INDEX ON {} (created_at)",
)
# Row i of n. The multipliers are primes, so user_id and amount look random but are fixed.
_EVENTS_INSERT = """
INSERT INTO {table} (id, user_id, payload, amount, created_at)
SELECT i,
       (1 + (i * 7919) %% 100000)::integer,
       CASE WHEN %(crash)s::bigint > 0 AND i %% %(crash)s::bigint = 0 THEN 'crash: event ' || i
            WHEN %(poison)s::bigint > 0 AND i %% %(poison)s::bigint = 0 THEN 'poison: event ' || i
            ELSE 'event ' || i || ' ' || md5(i::text)
       END,
       ((i * 104729) %% 1000000) / 100.0,
       now() - (%(rows)s::bigint - i) * (make_interval(days => %(days)s) / greatest(%(rows)s::bigint, 1))
FROM generate_series(1, %(rows)s::bigint) AS i
"""
_ENRICHED_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, user_id integer,"
    " payload_sha256 text, amount_cents bigint, created_at timestamptz)"
)


def _create_schema(conn: psycopg.Connection, table: str) -> None:
    schema = parse_table(table).schema
    if schema is not None:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def seed_events(
    conn: psycopg.Connection,
    rows: int,
    *,
    poison_every: int | None = None,
    crash_every: int | None = None,
    table: str = EVENTS_TABLE,
) -> int:
    """(Re)create the events table with ``rows`` rows; its earlier rows are replaced.

    Commits when ``conn`` has no transaction open (and then also vacuums the table, as
    autovacuum would, so that index-only scans work at once); inside a caller's transaction it
    leaves the commit to the caller.

    :param conn: a connection.
    :param rows: rows to create (0 leaves the table empty).
    :param poison_every: every this-many-th row (by id) is a poison row; None: none.
    :param crash_every: every this-many-th row is a crash row; None: none.
    :param table: the table to (re)create.
    :returns: the rows created.
    """
    if rows < 0:
        raise ValueError("rows must not be negative")
    if poison_every is not None and poison_every <= 0:
        raise ValueError("poison_every must be greater than 0")
    if crash_every is not None and crash_every <= 0:
        raise ValueError("crash_every must be greater than 0")
    target = table_sql(table)
    own_transaction = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    started = time.monotonic()
    with conn.transaction():
        _create_schema(conn, table)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
        conn.execute(sql.SQL(_EVENTS_DDL).format(target))
        conn.execute(
            sql.SQL(_EVENTS_INSERT).format(table=target),
            {
                "rows": rows,
                "poison": poison_every or 0,
                "crash": crash_every or 0,
                "days": SEED_DAYS,
            },
        )
        for statement in _EVENTS_INDEXES:
            conn.execute(sql.SQL(statement).format(target))
        conn.execute(sql.SQL("ANALYZE {}").format(target))
    if own_transaction and conn.autocommit:
        conn.execute(sql.SQL("VACUUM {}").format(target))
    log.info("Seeded %d rows into %s in %.1f s", rows, table, time.monotonic() - started)
    return rows


# Concurrent `CREATE SCHEMA/TABLE IF NOT EXISTS` of one name still collide in Postgres (a
# UniqueViolation on the catalog): the setup tasks of runs started together (a backfill) would
# fail and pass only on retry. Creating tables under one transaction-level lock serialises them.
_DDL_LOCK = "parallel_batch.demo_ddl"


def create_table_if_missing(conn: psycopg.Connection, table: str, ddl: str) -> None:
    """Create ``table`` (and its schema) with ``ddl`` unless it exists, safe to run concurrently.

    :param ddl: a ``CREATE TABLE IF NOT EXISTS {} (...)`` statement; ``{}`` takes the table.
    """
    target = table_sql(table)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_DDL_LOCK,))
        _create_schema(conn, table)
        conn.execute(sql.SQL(ddl).format(target))


def create_events_enriched(conn: psycopg.Connection, table: str = ENRICHED_TABLE) -> None:
    """Create the enriched events table (and its schema) unless it exists; keep its rows."""
    create_table_if_missing(conn, table, _ENRICHED_DDL)


def _cents(amount: Any) -> int | None:
    if amount is None:
        return None
    if isinstance(amount, Decimal | int):
        return int(amount * 100)
    return int(Decimal(str(amount)) * 100)  # a float: its shortest text, not its binary value


def _reject(event_id: Any, payload: str) -> NoReturn:
    """Fail for a poison row; end the process for a crash row."""
    if payload.startswith(CRASH_PREFIX):
        os._exit(CRASH_EXIT_CODE)  # abruptly: no cleanup, no exception, like a segfault
    raise PoisonRowError(f"event {event_id} is a poison row")


def enrich_event(row: Sequence[Any]) -> tuple[Any, ...]:
    """Return one event enriched: ``(id, user_id, payload_sha256, amount_cents, created_at)``.

    :raises PoisonRowError: for a poison row, on every call. A crash row ends the process.
    """
    event_id, user_id, payload, amount, created_at = row
    if payload is not None and payload.startswith(_BAD_PREFIXES):
        _reject(event_id, payload)
    digest = None if payload is None else hashlib.sha256(payload.encode()).hexdigest()
    return (event_id, user_id, digest, _cents(amount), created_at)


def enrich_events(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Enrich a batch of events, as :func:`enrich_event` does each one, but faster.

    :raises PoisonRowError: at the first poison row. A crash row ends the process.
    """
    sha256 = hashlib.sha256
    hundred = _HUNDRED
    bad = _BAD_PREFIXES
    try:
        return [
            (event_id, user_id, sha256(payload.encode()).hexdigest(), int(amount * hundred), at)
            for event_id, user_id, payload, amount, at in rows
            if not payload.startswith(bad) or _reject(event_id, payload)
        ]
    except (AttributeError, TypeError):  # a NULL payload or amount, a float amount
        return [enrich_event(row) for row in rows]
