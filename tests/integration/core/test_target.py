"""Tests of resolving a job's target from the catalog (core.target, core.planning): the written
columns, their types and conflict key, and what is refused with which message."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from parallel_batch.core.job import JobSpec
from parallel_batch.core.planning import resolve_columns
from parallel_batch.core.target import Target
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources import TableSource

DDL = """
CREATE SCHEMA demo;
CREATE TABLE demo.out (id bigint PRIMARY KEY, n integer, price numeric(12,2), label text,
                       twice bigint GENERATED ALWAYS AS (n * 2) STORED);
CREATE TABLE demo.log (at timestamptz, message text);
"""


@pytest.fixture
def conn(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """A database with demo.out (a key, a numeric, a generated column) and demo.log (no key)."""
    for statement in DDL.split(";"):
        if statement.strip():
            pg_conn.execute(statement)
    return pg_conn


def test_that_a_target_is_read_from_the_catalog(conn: psycopg.Connection) -> None:
    """Test that by default every writable column is written (not the generated one), with its
    type and modifiers, upserting on the primary key."""
    target = Target.resolve(conn, "demo.out")
    assert target.columns == ("id", "n", "price", "label")
    assert target.types == ("bigint", "integer", "numeric(12,2)", "text")
    assert target.key_columns == ("id",)
    assert Target.resolve(conn, "demo.log", write_mode="copy").key_columns == ()


@pytest.mark.parametrize(
    ("table", "options", "message"),
    [
        (
            "demo.out",
            {"columns": ("id", "nope")},
            "Column 'nope' does not exist in table 'demo.out'",
        ),
        (
            "demo.out",
            {"columns": ("id", "twice")},
            "Column 'twice' of 'demo.out' is GENERATED ALWAYS",
        ),
        ("demo.out", {"columns": ("id", "id")}, "target columns must not name a column twice"),
        (
            "demo.out",
            {"columns": ("n", "label")},
            "the conflict key column 'id' of 'demo.out' must be among the columns written",
        ),
        ("demo.out", {"write_mode": "merge"}, "write_mode must be one of"),
        (
            "demo.log",
            {},
            "Table 'demo.log' has no primary key or unique index: write_mode 'auto' upserts",
        ),
        ("demo.missing", {}, "demo.missing"),
    ],
)
def test_that_a_target_that_does_not_fit_is_refused(
    conn: psycopg.Connection, table: str, options: dict[str, Any], message: str
) -> None:
    """Test that Target.resolve refuses a missing table or column, a generated column, a column
    twice, a key that is not written, and an upsert without a key, saying which."""
    with pytest.raises(ConfigurationError, match=message):
        Target.resolve(conn, table, **options)


def test_that_without_a_transform_every_column_read_must_exist_in_the_target(
    conn: psycopg.Connection, pg_url: str
) -> None:
    """Test that resolve_columns writes the source's columns by name and refuses a source column
    the target lacks (it would be dropped silently)."""
    conn.execute("CREATE TABLE demo.src (id bigint PRIMARY KEY, n integer, extra text)")
    fits = TableSource("demo.src", "id", ("id", "n"))
    spec = resolve_columns(conn, JobSpec(fits, "demo.out"), fits.resolved(pg_url).columns)
    assert (spec.target_columns, spec.key_columns) == (("id", "n"), ("id",))
    extra = TableSource("demo.src", "id").resolved(pg_url)
    with pytest.raises(
        ConfigurationError, match=r"Column 'extra' does not exist in table 'demo\.out'"
    ):
        resolve_columns(conn, JobSpec(extra, "demo.out"), extra.columns)
