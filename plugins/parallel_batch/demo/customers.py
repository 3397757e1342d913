"""The demo's customers target: ``demo.customers``, loaded from the CSV of ``parallel-batch seed csv``.

The table is the demo contract's (DESIGN.md)::

    demo.customers(id bigint primary key, name text, email text, amount numeric(12,2),
                   note text, created_at timestamptz, segment text)

The first six columns are the CSV's (``id,name,email,amount,note,created_at``); ``segment`` comes
from the optional HTTP enrichment and is NULL without it. No Airflow imports.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from parallel_batch.demo.events import create_table_if_missing
from parallel_batch.local.paths import STATE_DIR_NAME, project_root

__all__ = [
    "CUSTOMERS_COLUMNS",
    "CUSTOMERS_TABLE",
    "SEGMENT_COLUMN",
    "create_customers",
    "default_csv_path",
]

CUSTOMERS_TABLE = "demo.customers"
SEGMENT_COLUMN = "segment"
CUSTOMERS_COLUMNS = ("id", "name", "email", "amount", "note", "created_at", SEGMENT_COLUMN)
# Where `make demo` writes the demo CSV, under the project's state directory.
DEMO_CSV_RELATIVE = Path("demo") / "customers.csv"

_CUSTOMERS_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, name text, email text,"
    " amount numeric(12,2), note text, created_at timestamptz, segment text)"
)


def create_customers(conn: psycopg.Connection, table: str = CUSTOMERS_TABLE) -> None:
    """Create the customers table (and its schema) unless it exists; keep its rows.

    :param conn: a connection; the statements commit with the caller's transaction, or at once
        on an autocommit connection.
    :param table: ``schema.table`` or ``table``.
    :raises InvalidIdentifierError: when ``table`` is not a safe name.
    """
    create_table_if_missing(conn, table, _CUSTOMERS_DDL)


def default_csv_path() -> Path:
    """Return where the demo customers CSV lives: ``.parallel_batch/demo/customers.csv``.

    Only computes the path (no directory is created): DAG files call it at parse time.
    """
    home = os.environ.get("PARALLEL_BATCH_HOME")
    state = Path(home).resolve() if home else project_root() / STATE_DIR_NAME
    return state / DEMO_CSV_RELATIVE
