"""The demo tables, created from the project's SQL files (``include/sql/<name>.sql``).

Each file holds statements separated by ``;`` with ``{table}`` where the table's name goes; the
name is validated and quoted (psycopg.sql) before it is put there.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from parallel_batch.local.paths import include_dir
from parallel_batch.store.identifiers import parse_table, table_sql

__all__ = [
    "CUSTOMERS_TABLE",
    "ENRICHED_TABLE",
    "EVENTS_TABLE",
    "create_customers",
    "create_events_enriched",
    "create_table_if_missing",
    "run_sql_file",
]

EVENTS_TABLE = "demo.events"
ENRICHED_TABLE = "demo.events_enriched"
CUSTOMERS_TABLE = "demo.customers"

# Concurrent `CREATE SCHEMA/TABLE IF NOT EXISTS` of one name still collide in Postgres (a
# UniqueViolation on the catalog): the setup tasks of runs started together (a backfill) would
# fail and pass only on retry. Creating tables under one transaction-level lock serialises them.
_DDL_LOCK = "parallel_batch.demo_ddl"


def create_schema(conn: psycopg.Connection, table: str) -> None:
    """Create ``table``'s schema unless it exists."""
    schema = parse_table(table).schema
    if schema is not None:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def run_sql_file(conn: psycopg.Connection, name: str, table: str) -> None:
    """Run the statements of ``include/sql/<name>.sql`` for ``table`` (caller's transaction)."""
    text = (include_dir() / "sql" / f"{name}.sql").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    target = table_sql(table)
    for statement in "\n".join(lines).split(";"):
        if statement.strip():
            conn.execute(sql.SQL(statement.strip()).format(table=target))


def create_table_if_missing(conn: psycopg.Connection, table: str, name: str) -> None:
    """Create ``table`` (and its schema) from ``include/sql/<name>.sql`` (a ``CREATE TABLE IF NOT
    EXISTS``) unless it exists, safe to run concurrently."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_DDL_LOCK,))
        create_schema(conn, table)
        run_sql_file(conn, name, table)


def create_events_enriched(conn: psycopg.Connection, table: str = ENRICHED_TABLE) -> None:
    """Create the enriched events table (and its schema) unless it exists; keep its rows."""
    create_table_if_missing(conn, table, "events_enriched")


def create_customers(conn: psycopg.Connection, table: str = CUSTOMERS_TABLE) -> None:
    """Create the customers table (and its schema) unless it exists; keep its rows."""
    create_table_if_missing(conn, table, "customers")
