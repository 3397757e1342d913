"""Tests of the embedded server and the database configuration."""

from __future__ import annotations

import psycopg
import pytest

from parallel_batch.local import config


def test_that_the_environment_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that PARALLEL_BATCH_DATABASE_URL is used as it is, without starting anything."""
    monkeypatch.setenv("PARALLEL_BATCH_DATABASE_URL", "postgresql://example/db")
    assert config.database_url() == "postgresql://example/db"


def test_that_the_fixture_database_is_real_and_empty(pg_conn: psycopg.Connection) -> None:
    """Test that each test gets a real, empty database of its own."""
    version = pg_conn.execute("SHOW server_version_num").fetchone()
    assert version is not None and int(version[0]) >= 150000
    tables = pg_conn.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchone()
    assert tables == (0,)


def test_that_db_url_prints_a_working_url(capsys: pytest.CaptureFixture[str]) -> None:
    """Test that `parallel-batch db url` prints a URL one can connect to."""
    from parallel_batch.cli import main

    assert main(["db", "url"]) == 0
    url = capsys.readouterr().out.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
