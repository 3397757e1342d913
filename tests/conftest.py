"""Shared fixtures: a real PostgreSQL for every test that asks for one.

``PARALLEL_BATCH_TEST_DATABASE_URL`` points the suite at a server of your choice; otherwise the
embedded server under ``.parallel_batch/`` is started (and stopped again at the end if this
session started it). Each test that takes ``pg_url`` gets a database of its own, dropped after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.helpers.s3 import S3, s3_missing, s3_server

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(what: str) -> None:
    """Skip outside CI, fail under CI=true, when an optional service is missing."""
    if IN_CI:
        pytest.fail(f"CI=true but {what}")
    pytest.skip(what)


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of the server the suite runs on (maintenance database)."""
    url = os.environ.get("PARALLEL_BATCH_TEST_DATABASE_URL")
    started_here = False
    if not url:
        from parallel_batch.local import embedded

        started_here = not embedded.is_running()
        url = embedded.start()
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT 1")
    yield url
    if started_here:
        from parallel_batch.local import embedded

        embedded.stop()


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """URL of a fresh, empty database of this test's own, dropped afterwards."""
    name = f"pbtest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def pg_conn(pg_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """A real S3-compatible server (moto's) on 127.0.0.1 with an empty bucket, for the session."""
    missing = s3_missing()
    if missing:
        require_service(missing)
    with s3_server() as server:
        yield server
