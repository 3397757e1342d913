"""Tests of parallel_batch.local.conninfo: one server as libpq, SQLAlchemy and Airflow spell it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine import make_url

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.local import conninfo

SOCKET_URL = "postgresql://postgres:@/postgres?host=/tmp/pb/pgdata"


def test_metadata_url_puts_a_socket_directory_in_the_query() -> None:
    """Test that a Unix-socket server gives a psycopg 3 URL with ?host=/dir and the database."""
    url = conninfo.metadata_url(SOCKET_URL)

    assert url == "postgresql+psycopg://postgres@/airflow?host=/tmp/pb/pgdata"
    parsed = make_url(url)
    assert (parsed.drivername, parsed.database, parsed.host) == (
        "postgresql+psycopg",
        "airflow",
        None,
    )
    assert parsed.query == {"host": "/tmp/pb/pgdata"}


def test_metadata_url_keeps_a_tcp_host_and_escapes_the_password() -> None:
    """Test that a TCP server keeps host and port, and a password with URL characters survives."""
    url = conninfo.metadata_url(
        "host=db.example port=5433 user=bob password='p@ss:/%$word' dbname=data sslmode=require",
        "meta",
    )

    parsed = make_url(url)
    assert (parsed.host, parsed.port, parsed.username) == ("db.example", 5433, "bob")
    assert parsed.password == "p@ss:/%$word"
    assert parsed.database == "meta"
    assert parsed.query == {"sslmode": "require"}
    assert "$" not in url  # Airflow expands $VARS in configuration values


def test_metadata_url_rejects_an_empty_database() -> None:
    """Test that an empty metadata database name is refused."""
    with pytest.raises(ValueError, match="database must not be empty"):
        conninfo.metadata_url(SOCKET_URL, "")


def test_libpq_url_rejects_other_databases() -> None:
    """Test that a non-PostgreSQL SQLAlchemy URL is refused with its scheme."""
    with pytest.raises(ConfigurationError, match="Not a PostgreSQL SQLAlchemy URL: 'sqlite'"):
        conninfo.libpq_url("sqlite:////tmp/airflow.db")


def test_connection_json_keeps_the_socket_host() -> None:
    """Test that the connection JSON carries the socket directory as the plain host."""
    conn = json.loads(conninfo.connection_json(SOCKET_URL))

    assert conn == {
        "conn_type": "postgres",
        "host": "/tmp/pb/pgdata",
        "login": "postgres",
        "schema": "postgres",
    }


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@settings(max_examples=50, deadline=None)
@given(user=_text, password=_text, dbname=_text, port=st.integers(1, 65535))
def test_connection_json_round_trips(user: str, password: str, dbname: str, port: int) -> None:
    """Test that connection_json and conninfo_from_connection give back the same parameters."""
    params = {
        "host": "/tmp/sock dir",
        "user": user,
        "password": password,
        "dbname": dbname,
        "port": str(port),
        "sslmode": "disable",
    }
    value = conninfo.connection_json(make_conninfo(**params))

    assert conninfo_to_dict(conninfo.conninfo_from_connection(value)) == params


def test_conninfo_from_connection_rejects_a_uri() -> None:
    """Test that a connection value that is not JSON is refused with the variable's name."""
    with pytest.raises(ConfigurationError, match="AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT is not"):
        conninfo.conninfo_from_connection("postgres://user@host/db")
