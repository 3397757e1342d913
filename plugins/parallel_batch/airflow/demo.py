"""The example DAGs' setup task: create a demo target table unless it exists.

The table's DDL is the project's ``include/sql/<name>.sql``; the connection is the job's
(``parallel_batch_default``): a missing one fails the task, as every task here does.
"""

from __future__ import annotations

import psycopg

from parallel_batch.airflow import DEFAULT_CONN_ID
from parallel_batch.airflow.connection import resolve_conninfo
from parallel_batch.airflow.values import fail_fast
from parallel_batch.store.identifiers import parse_table

__all__ = ["create_demo_table"]


def create_demo_table(name: str, table: str, conn_id: str = DEFAULT_CONN_ID) -> None:
    """Create ``table`` from ``include/sql/<name>.sql`` unless it exists (its rows are kept)."""
    from parallel_batch.demo.tables import create_table_if_missing

    with fail_fast("Invalid configuration"):
        parse_table(table)
    with psycopg.connect(resolve_conninfo(conn_id), autocommit=True) as conn:
        create_table_if_missing(conn, table, name)
