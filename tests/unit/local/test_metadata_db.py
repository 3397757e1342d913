"""Tests of parallel_batch.local.metadata_db: what the local Airflow's databases hold."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parallel_batch.exceptions import DatabaseUnavailableError
from parallel_batch.local import metadata_db
from parallel_batch.local.conninfo import metadata_url
from parallel_batch.local.services import free_port


def test_ensure_database_creates_once(pg_url: str) -> None:
    """Test that ensure_database creates a missing database and then leaves it alone."""
    name = f"pbtest_ensure_{uuid.uuid4().hex[:12]}"
    url = make_conninfo(pg_url, dbname=name)
    try:
        assert metadata_db.ensure_database(url) is True
        assert metadata_db.ensure_database(url) is False
    finally:
        with psycopg.connect(make_conninfo(pg_url, dbname="postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_ensure_database_reports_an_unreachable_server() -> None:
    """Test that a server nobody listens on is a DatabaseUnavailableError, not a traceback."""
    url = f"host=127.0.0.1 port={free_port()} user=postgres dbname=nowhere"

    with pytest.raises(DatabaseUnavailableError, match="Cannot reach the database server"):
        metadata_db.ensure_database(url)


def test_an_empty_database_needs_migration(pg_url: str, tmp_path: Path) -> None:
    """Test that a database without Airflow's tables has no revision, no pool, and needs
    `airflow db migrate` whatever a stamp says."""
    url = metadata_url(pg_url, str(conninfo_to_dict(pg_url)["dbname"]))

    state = metadata_db.metadata_state(url, "parallel_batch")
    metadata_db.record_migration(tmp_path, url)  # a stamp of "no revision"

    assert state == metadata_db.MetadataState(revision=None, pool_slots=None)
    assert metadata_db.needs_migration(tmp_path, url) is True


def test_ensure_data_schema_creates_database_and_schema(pg_url: str) -> None:
    """Test that the data database and its parallel_batch schema are created when missing."""
    name = f"pbtest_data_{uuid.uuid4().hex[:12]}"
    url = make_conninfo(pg_url, dbname=name)
    try:
        metadata_db.ensure_data_schema(url)
        metadata_db.ensure_data_schema(url)  # idempotent

        with psycopg.connect(url) as conn:
            found = conn.execute(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_schema = 'parallel_batch' AND table_name = 'jobs'"
            ).fetchone()
        assert found == (1,)
    finally:
        with psycopg.connect(make_conninfo(pg_url, dbname="postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
