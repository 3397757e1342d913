"""Fixtures of the CSV job tests."""

from __future__ import annotations

import psycopg
import pytest

from parallel_batch.demo.tables import create_customers
from tests.integration.sources.csv.csv_jobs import TARGET


@pytest.fixture
def target(pg_conn: psycopg.Connection) -> str:
    """The demo customers table, empty."""
    create_customers(pg_conn)
    return TARGET


@pytest.fixture
def schema(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """A connection with an empty schema ``t``."""
    pg_conn.execute("CREATE SCHEMA t")
    return pg_conn
