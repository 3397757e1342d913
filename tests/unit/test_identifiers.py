"""Tests of identifier validation and quoting (no database: as_string needs no connection)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_batch.exceptions import InvalidIdentifierError
from parallel_batch.store.identifiers import (
    TableName,
    column_sql,
    columns_sql,
    parse_table,
    table_sql,
)

INJECTIONS = [
    'events"; DROP TABLE users; --',
    "events; DROP TABLE users",
    "events' OR '1'='1",
    "events--",
    "ev ents",
    "1events",
    "",
    "a" * 64,
    "demo.events.x",
    ".events",
    "demo.",
    'demo."events"',
    "événements",
    "events\n",
    "events\x00",
]


def test_parse_table_splits_schema_and_name() -> None:
    """Test that parse_table splits a qualified name and leaves the schema None otherwise."""
    assert parse_table("demo.events") == TableName("demo", "events")
    assert parse_table("events") == TableName(None, "events")
    assert parse_table("_t$1") == TableName(None, "_t$1")
    assert parse_table("a" * 63).name == "a" * 63


@pytest.mark.parametrize("name", INJECTIONS)
def test_parse_table_rejects_unsafe_names(name: str) -> None:
    """Test that injection-looking and malformed table names are rejected with the rule."""
    with pytest.raises(InvalidIdentifierError, match=r"Invalid table name .*(must match|expected)"):
        parse_table(name)


@pytest.mark.parametrize("name", [n for n in INJECTIONS if "." not in n])
def test_column_sql_rejects_unsafe_names(name: str) -> None:
    """Test that injection-looking column names are rejected."""
    with pytest.raises(InvalidIdentifierError, match=r"Invalid column name .*must match"):
        column_sql(name)


def test_column_sql_rejects_a_dotted_name() -> None:
    """Test that a column name cannot smuggle in a table qualifier."""
    with pytest.raises(InvalidIdentifierError, match=r"Invalid column name 'events\.id'"):
        column_sql("events.id")


def test_table_sql_quotes_each_part() -> None:
    """Test that table_sql quotes the schema and the name, keeping their case."""
    assert table_sql("demo.Events").as_string() == '"demo"."Events"'
    assert table_sql("events").as_string() == '"events"'


def test_columns_sql_joins_quoted_names() -> None:
    """Test that columns_sql quotes and joins the column names."""
    assert columns_sql(["id", "Amount"]).as_string() == '"id", "Amount"'


def test_parse_table_rejects_a_non_string() -> None:
    """Test that a table name that is not a string is rejected."""
    with pytest.raises(InvalidIdentifierError, match="expected a string"):
        parse_table(42)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_accepted_name_quotes_to_itself(name: str) -> None:
    """Test that whatever column_sql accepts is a plain identifier quoted as is."""
    try:
        quoted = column_sql(name).as_string()
    except InvalidIdentifierError:
        return
    assert quoted == f'"{name}"'
    assert name.isascii() and (name[0].isalpha() or name[0] == "_")
    assert not set(name) & set("\"'; -.\n\x00")
