"""Tests of parallel_batch.airflow.connection: the Airflow connection as a psycopg conninfo."""

from __future__ import annotations

import json
import logging

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from parallel_batch.airflow.connection import conninfo_from_fields, resolve_conninfo
from parallel_batch.exceptions import ConfigurationError


def test_resolves_the_default_connection(parallel_batch_conn: str) -> None:
    """Test that parallel_batch_default becomes a conninfo that reaches its database."""
    conninfo = resolve_conninfo()

    with psycopg.connect(conninfo) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone()  # type: ignore[misc]
    assert name == conninfo_to_dict(parallel_batch_conn)["dbname"]


def test_undefined_connection_falls_back_with_a_warning(
    parallel_batch_conn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that an undefined connection falls back to PARALLEL_BATCH_DATABASE_URL, loudly."""
    with caplog.at_level(logging.WARNING, logger="parallel_batch.airflow.connection"):
        conninfo = resolve_conninfo("no_such_connection")

    assert conninfo == parallel_batch_conn
    assert "'no_such_connection' is not defined" in caplog.text


def test_refuses_a_connection_of_another_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a non-Postgres connection is a configuration error, not a silent fallback."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_PB_HTTP", json.dumps({"conn_type": "http", "host": "example.com"})
    )

    with pytest.raises(ConfigurationError, match="has type 'http'"):
        resolve_conninfo("pb_http")


def test_extras_keep_libpq_parameters_only() -> None:
    """Test that libpq extras pass through and the Postgres hook's own extras are dropped."""
    conninfo = conninfo_from_fields(
        host="/tmp/socket dir",
        port=5433,
        login="app",
        password="s3 cret",
        schema="data",
        extra={"sslmode": "disable", "application_name": "pb", "cursor": "dictcursor"},
    )

    assert conninfo_to_dict(conninfo) == {
        "host": "/tmp/socket dir",
        "port": "5433",
        "user": "app",
        "password": "s3 cret",
        "dbname": "data",
        "sslmode": "disable",
        "application_name": "pb",
    }
