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
    """Test that ensure_schema creates jobs, chunks, dead_letters, key_claims and the version
    table."""
    assert schema_version(pg_conn) == 0
    assert ensure_schema(pg_conn) == LATEST_VERSION
    assert _tables(pg_conn) == {
        "jobs",
        "chunks",
        "dead_letters",
        "key_claims",
        "range_claims",
        "schema_version",
    }
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


# What version 1 created on its first use by a CSV job, outside the migrations.
_V1_FILE_KEYS = """
CREATE TABLE IF NOT EXISTS parallel_batch.file_keys (
    job_key     text COLLATE "C" NOT NULL,
    item_key    text COLLATE "C" NOT NULL,
    line_number bigint NOT NULL,
    chunk_id    text NOT NULL,
    PRIMARY KEY (job_key, item_key)
)
"""


def _migrate_to_version_1(conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        patch.setattr(schema, "LATEST_VERSION", 1)
        assert ensure_schema(conn) == 1


@pytest.mark.parametrize("with_file_keys", [True, False])
def test_that_version_1_upgrades_keeping_jobs_and_claims(
    pg_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, with_file_keys: bool
) -> None:
    """Test that a database at version 1 (with or without its ad-hoc file_keys table) upgrades
    to the latest version: jobs and chunks keep their rows and gain zero filtered/fan-out
    counters, and claims move to key_claims with one output each."""
    _migrate_to_version_1(pg_conn, monkeypatch)
    pg_conn.execute(
        "INSERT INTO parallel_batch.jobs (job_key, kind, rows_read) VALUES ('old', 'csv', 7)"
    )
    pg_conn.execute(
        "INSERT INTO parallel_batch.chunks (job_key, chunk_id, position, range, rows_read)"
        " VALUES ('old', 'bytes[0,9)', 0, '{}', 7)"
    )
    if with_file_keys:
        pg_conn.execute(_V1_FILE_KEYS)
        pg_conn.execute(
            "INSERT INTO parallel_batch.file_keys VALUES ('old', '42', 3, 'bytes[0,9)')"
        )
    assert ensure_schema(pg_conn) == LATEST_VERSION
    assert "file_keys" not in _tables(pg_conn)
    assert pg_conn.execute(
        "SELECT rows_read, rows_filtered, rows_fanout FROM parallel_batch.jobs"
    ).fetchall() == [(7, 0, 0)]
    assert pg_conn.execute(
        "SELECT rows_read, rows_filtered, rows_fanout FROM parallel_batch.chunks"
    ).fetchall() == [(7, 0, 0)]
    claims = pg_conn.execute(
        "SELECT j.job_key, c.item_key, c.line_number, c.chunk_id, c.outputs"
        " FROM parallel_batch.key_claims c JOIN parallel_batch.jobs j ON j.id = c.job_id"
    ).fetchall()
    assert claims == ([("old", "42", 3, "bytes[0,9)", 1)] if with_file_keys else [])


def test_that_version_2_upgrades_its_claims_to_job_numbers(
    pg_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that a database at version 2 with jobs half way through keeps every claim, now under
    its job's number (the only one with that number), and that the claims still do their work:
    a key claimed before the upgrade refuses a second claim of it in the same job."""
    from parallel_batch.store import claims

    _jobs_at_version(pg_conn, monkeypatch, 2, ["a", "b"])
    pg_conn.execute(
        "INSERT INTO parallel_batch.key_claims (job_key, item_key, line_number, chunk_id, outputs)"
        " VALUES ('a', '1', 2, 'c0', 1), ('a', '2', 3, 'c0', 0), ('b', '1', 9, 'c1', -1)"
    )
    assert ensure_schema(pg_conn) == LATEST_VERSION
    ids = dict(pg_conn.execute("SELECT job_key, id FROM parallel_batch.jobs").fetchall())
    assert len(set(ids.values())) == 2
    found = pg_conn.execute(
        "SELECT job_id, item_key, line_number, chunk_id, outputs FROM parallel_batch.key_claims"
        " ORDER BY job_id, item_key"
    ).fetchall()
    assert sorted(found) == sorted(
        [(ids["a"], "1", 2, "c0", 1), (ids["a"], "2", 3, "c0", 0), (ids["b"], "1", 9, "c1", -1)]
    )
    assert claims.find_claims(pg_conn, "a", ["1", "2", "3"]) == {
        "1": claims.Claim(2, "c0", 1),
        "2": claims.Claim(3, "c0", 0),
    }
    with pytest.raises(claims.ClaimsChanged), pg_conn.transaction():
        plan = claims.plan_claims(["1"], [5], {})  # believes "1" is free: it is not
        claims.apply_claims(pg_conn, "a", "c9", plan, {"1": 1})
    assert claims.delete_job_claims(pg_conn, "b") == 1
    assert len(claims.find_claims(pg_conn, "a", ["1", "2"])) == 2


def test_that_version_3_upgrades_a_job_with_key_claims_to_claim_by_key(
    pg_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that a job half way through at version 3 (key claims in the table) goes on claiming
    by key after the upgrade (a range claim would not see its claims), and a job without claims
    claims by ranges."""
    from parallel_batch.store import claims

    _jobs_at_version(pg_conn, monkeypatch, 3, ["half", "fresh"])
    pg_conn.execute(
        "INSERT INTO parallel_batch.key_claims (job_id, item_key, line_number, chunk_id)"
        " SELECT id, '5', 2, 'c0' FROM parallel_batch.jobs WHERE job_key = 'half'"
    )
    assert ensure_schema(pg_conn) == LATEST_VERSION
    assert dict(
        pg_conn.execute("SELECT job_key, claims_by_key FROM parallel_batch.jobs").fetchall()
    ) == {"half": True, "fresh": False}
    with pytest.raises(claims.ClaimsChanged), pg_conn.transaction():
        claims.apply_claims(pg_conn, "half", "c1", claims.plan_claims(["5"], [9], {}), {})
    with pg_conn.transaction():
        claims.apply_claims(pg_conn, "fresh", "c1", claims.plan_claims(["5"], [9], {}), {})
    assert pg_conn.execute("SELECT count(*) FROM parallel_batch.range_claims").fetchone() == (1,)


def _jobs_at_version(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, version: int, jobs: list[str]
) -> None:
    """The schema as the migrations up to ``version`` leave it, with CSV jobs ``jobs``."""
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:version])
        patch.setattr(schema, "LATEST_VERSION", version)
        assert ensure_schema(conn) == version
    for job in jobs:
        conn.execute("INSERT INTO parallel_batch.jobs (job_key, kind) VALUES (%s, 'csv')", (job,))
