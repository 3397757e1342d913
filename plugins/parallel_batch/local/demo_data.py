"""Small demo data for ``parallel-batch airflow``, so that the example DAGs run on a first trigger.

Only what is missing is created, and nothing is replaced::

    demo.events missing          -> seed_events: DEMO_EVENTS rows, some poison and crash rows
    the demo CSV missing         -> write_customers_csv: DEMO_CSV_RECORDS records, some malformed
      (default_csv_path(): the CSV DAG's default `path`)

Both take well under a second. ``parallel-batch seed events|csv`` make other sizes, ``make demo``
the full-size demo.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from parallel_batch.demo.csv_file import write_customers_csv
from parallel_batch.demo.customers import default_csv_path
from parallel_batch.demo.events import EVENTS_TABLE, seed_events

__all__ = ["DEMO_CSV_RECORDS", "DEMO_EVENTS", "seed_missing_demo_data"]

log = logging.getLogger(__name__)

# Sizes of the data a first `make airflow` creates: enough for a run to show chunks, progress
# and dead letters, small enough to seed in well under a second (100k rows: ~0.25 s).
DEMO_EVENTS = 100_000
DEMO_POISON_EVERY = 997  # ~100 poison rows: dead letters, within the default max_failed_ratio
DEMO_CRASH_EVERY = 49_999  # 2 rows that kill their worker process: replaced, dead-lettered
DEMO_CSV_RECORDS = 20_000
DEMO_CSV_BAD_EVERY = 997  # ~20 malformed records, dead-lettered at their line


def _table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def seed_missing_demo_data(conninfo: str, csv_path: Path | None = None) -> list[str]:
    """Create the demo table and the demo CSV where they are missing; return what was done.

    :param conninfo: the data database (the ``parallel_batch_default`` connection).
    :param csv_path: the demo CSV. Default: :func:`~parallel_batch.demo.customers.default_csv_path`.
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
    path = csv_path or default_csv_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")  # an interrupted write is not "there"
        stats = write_customers_csv(partial, DEMO_CSV_RECORDS, bad_every=DEMO_CSV_BAD_EVERY)
        partial.replace(path)
        done.append(f"wrote {stats.rows:,} customer records to {path} (parallel_batch_csv's path)")
    for line in done:
        log.info("Demo data: %s", line)
    return done
