"""Small demo data for ``parallel-batch airflow``, so that the example DAGs run on a first trigger.

Only what is missing is created, and nothing is replaced::

    demo.events missing          -> seed_events: DEMO_EVENTS rows, some poison and crash rows

It takes well under a second. The CSV DAG's default ``path`` is the project's checked-in sample
(``include/data/customers_sample.csv``). ``parallel-batch seed events|csv`` make other sizes, ``make demo``
the full-size demo.
"""

from __future__ import annotations

import logging

import psycopg

from parallel_batch.demo.events import seed_events
from parallel_batch.demo.tables import EVENTS_TABLE

__all__ = ["DEMO_EVENTS", "seed_missing_demo_data"]

log = logging.getLogger(__name__)

# Sizes of the data a first `make airflow` creates: enough for a run to show chunks, progress
# and dead letters, small enough to seed in well under a second (100k rows: ~0.25 s).
DEMO_EVENTS = 100_000
DEMO_POISON_EVERY = 997  # ~100 poison rows: dead letters, within the default max_failed_ratio
DEMO_CRASH_EVERY = 49_999  # 2 rows that kill their worker process: replaced, dead-lettered


def _table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def seed_missing_demo_data(conninfo: str) -> list[str]:
    """Create the demo table where it is missing; return what was done.

    :param conninfo: the data database (the ``parallel_batch_default`` connection).
    :returns: one line per item created, for the banner; empty when everything was there.
    """
    done = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if not _table_exists(conn, EVENTS_TABLE):
            rows = seed_events(
                conn,
                DEMO_EVENTS,
                poison_every=DEMO_POISON_EVERY,
                crash_every=DEMO_CRASH_EVERY,
            )
            done.append(f"seeded {EVENTS_TABLE} with {rows:,} rows (parallel_batch_table's source)")
    for line in done:
        log.info("Demo data: %s", line)
    return done
