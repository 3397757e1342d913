"""The demo's events: ``demo.events`` seeded for the table job (DESIGN.md's contract).

``seed_events`` (re)creates ``demo.events(id bigint primary key, user_id int, payload text,
amount numeric(12,2), created_at timestamptz)`` in one server-side ``generate_series`` statement
(1,000,000 rows in a few seconds). Values are a function of the row's id, so reruns give the same
rows, apart from ``created_at``, which spreads ids 1..N evenly over the 30 days before now (in id
order, like an append-only event log). Every ``poison_every``-th row's payload starts with
``poison:`` and every ``crash_every``-th row's with ``crash:`` (a row that is both is a crash row).

The transform (SHA-256 of the payload, amount in cents; ``poison:`` rows raise, ``crash:`` rows end
their process) is the project's ``include/transforms/events.py``; the DDL is in ``include/sql/``.
"""

from __future__ import annotations

import logging
import time

import psycopg
from psycopg import sql

from parallel_batch.demo.tables import (
    EVENTS_TABLE,
    create_schema,
    run_sql_file,
)
from parallel_batch.store.identifiers import table_sql

log = logging.getLogger(__name__)

EVENTS_COLUMNS = ("id", "user_id", "payload", "amount", "created_at")
ENRICHED_COLUMNS = ("id", "user_id", "payload_sha256", "amount_cents", "created_at")
SEED_DAYS = 30

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
        create_schema(conn, table)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
        run_sql_file(conn, "events", table)
        conn.execute(
            sql.SQL(_EVENTS_INSERT).format(table=target),
            {
                "rows": rows,
                "poison": poison_every or 0,
                "crash": crash_every or 0,
                "days": SEED_DAYS,
            },
        )
        run_sql_file(conn, "events_indexes", table)
        conn.execute(sql.SQL("ANALYZE {}").format(target))
    if own_transaction and conn.autocommit:
        conn.execute(sql.SQL("VACUUM {}").format(target))
    log.info("Seeded %d rows into %s in %.1f s", rows, table, time.monotonic() - started)
    return rows
