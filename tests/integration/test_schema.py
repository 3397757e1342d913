"""Tests of the parallel_batch schema: creation, versioning, idempotence and concurrent migration."""

from __future__ import annotations

import threading

import psycopg
import pytest

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.store import schema
from parallel_batch.store.schema import LATEST_VERSION, ensure_schema, schema_version


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'parallel_batch'"
    ).fetchall()
    return {name for (name,) in rows}


def test_that_ensure_schema_creates_every_table(pg_conn: psycopg.Connection) -> None:
    """Test that ensure_schema creates jobs, chunks, dead_letters and the version table."""
    assert schema_version(pg_conn) == 0
    assert ensure_schema(pg_conn) == LATEST_VERSION
    assert _tables(pg_conn) == {"jobs", "chunks", "dead_letters", "schema_version"}
    assert schema_version(pg_conn) == LATEST_VERSION


def test_that_ensure_schema_is_idempotent(pg_conn: psycopg.Connection) -> None:
    """Test that a second call changes nothing and records each version once."""
    ensure_schema(pg_conn)
    pg_conn.execute("INSERT INTO parallel_batch.jobs (job_key, kind) VALUES ('kept', 'table')")
    ensure_schema(pg_conn)
    versions = pg_conn.execute(
        "SELECT version FROM parallel_batch.schema_version ORDER BY version"
    ).fetchall()
    assert versions == [(m.version,) for m in schema.MIGRATIONS]
    assert pg_conn.execute("SELECT job_key FROM parallel_batch.jobs").fetchall() == [("kept",)]


def test_that_ensure_schema_works_in_a_caller_transaction(pg_url: str) -> None:
    """Test that inside a caller's open transaction the schema exists only once it commits."""
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT 1")  # the caller's transaction is open
        ensure_schema(conn)
        conn.rollback()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert schema_version(conn) == 0
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT 1")
        ensure_schema(conn)
        conn.commit()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert schema_version(conn) == LATEST_VERSION


def test_that_concurrent_callers_migrate_once(pg_url: str) -> None:
    """Test that eight processes' worth of concurrent ensure_schema calls all succeed."""
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def migrate() -> None:
        try:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                start.wait()
                ensure_schema(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        count = conn.execute("SELECT count(*) FROM parallel_batch.schema_version").fetchone()
        assert count == (len(schema.MIGRATIONS),)


def test_that_a_newer_schema_is_refused(pg_conn: psycopg.Connection) -> None:
    """Test that a database migrated by a newer release raises a clear ConfigurationError."""
    ensure_schema(pg_conn)
    pg_conn.execute(
        "INSERT INTO parallel_batch.schema_version (version, description) VALUES (%s, 'future')",
        (LATEST_VERSION + 1,),
    )
    with pytest.raises(ConfigurationError, match="newer than this package supports"):
        ensure_schema(pg_conn)


def test_that_a_new_migration_is_applied_on_top(
    pg_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that a migration added later runs once on a database at the previous version."""
    ensure_schema(pg_conn)
    extra = schema.Migration(
        LATEST_VERSION + 1,
        "a test column",
        ("ALTER TABLE parallel_batch.jobs ADD COLUMN test_note text",),
    )
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, extra))
    monkeypatch.setattr(schema, "LATEST_VERSION", extra.version)
    assert ensure_schema(pg_conn) == extra.version
    assert ensure_schema(pg_conn) == extra.version
    column = pg_conn.execute(
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_schema = 'parallel_batch' AND table_name = 'jobs'"
        " AND column_name = 'test_note'"
    ).fetchone()
    assert column == (1,)


def test_that_status_values_are_checked(pg_conn: psycopg.Connection) -> None:
    """Test that the tables refuse a status outside pending/running/completed/failed."""
    ensure_schema(pg_conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        pg_conn.execute(
            "INSERT INTO parallel_batch.jobs (job_key, kind, status) VALUES ('x', 'table', 'done')"
        )
