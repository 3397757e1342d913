"""Tests of the COPY codec: rows encoded in one place and written as bytes by write_rows."""

from __future__ import annotations

import datetime as dt
import pickle
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors

from parallel_batch.store.copy_data import CopyData, CopyEncoder, CopyFormat
from parallel_batch.store.writer import copy_format, write_rows

T0 = dt.datetime(2024, 1, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
COLUMNS = ("id", "n", "note", "amount", "at", "day", "ident", "flag", "doc", "tags", "raw")


def _row(i: int) -> tuple[Any, ...]:
    return (
        i,
        -i,
        f"note {i}\twith\ttabs\nand a newline \\ and é",
        Decimal(i) / 8,
        T0 + dt.timedelta(days=i, microseconds=i),
        dt.date(2024, 1, 1) + dt.timedelta(days=i),
        uuid.UUID(int=i),
        i % 2 == 0,
        {"i": i, "nested": [1, "two"]},
        [f"t{i}", "x"],
        bytes([i % 256, 0, 255]),
    )


@pytest.fixture
def many_types(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """A table ``typed`` with a column of each common type."""
    pg_conn.execute(
        "CREATE TABLE typed (id bigint PRIMARY KEY, n int, note text, amount numeric(12,3),"
        " at timestamptz, day date, ident uuid, flag boolean, doc jsonb, tags text[], raw bytea)"
    )
    return pg_conn


def _written(conn: psycopg.Connection, table: str, columns: tuple[str, ...]) -> list[tuple]:
    return conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1").fetchall()


@pytest.mark.parametrize("mode", ["copy", "upsert", "auto"])
def test_that_encoded_rows_are_written_with_their_exact_values(
    many_types: psycopg.Connection, mode: str
) -> None:
    """Test that rows encoded for the target's binary COPY land with exactly their values."""
    fmt = copy_format(many_types, "typed", COLUMNS)
    assert fmt.binary and len(fmt.type_oids) == len(COLUMNS)
    rows = [_row(i) for i in range(1, 201)] + [(201, *([None] * (len(COLUMNS) - 1)))]
    data = CopyEncoder(fmt, many_types).encode(rows)
    assert (len(data), data.binary) == (201, True)
    with many_types.transaction():
        assert write_rows(many_types, "typed", COLUMNS, data, mode=mode) == 201
    assert _written(many_types, "typed", COLUMNS) == rows


def test_that_encoded_rows_survive_pickling_and_joining(many_types: psycopg.Connection) -> None:
    """Test that CopyData parts pickled (as from a worker) and joined write every row once."""
    encoder = CopyEncoder(copy_format(many_types, "typed", COLUMNS))
    parts = [encoder.encode([_row(i) for i in range(start, start + 10)]) for start in (1, 11, 21)]
    joined = CopyData.join([pickle.loads(pickle.dumps(p)) for p in parts], binary=True)
    assert len(joined) == 30
    with many_types.transaction():
        write_rows(many_types, "typed", COLUMNS, joined, mode="copy")
    assert [row[0] for row in _written(many_types, "typed", ("id",))] == list(range(1, 31))


def test_that_a_target_without_binary_dumpers_takes_text_copy(pg_conn: psycopg.Connection) -> None:
    """Test that an enum column makes the format text COPY, escapes included, and it is written."""
    pg_conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok')")
    pg_conn.execute("CREATE TABLE feelings (id int PRIMARY KEY, mood mood, note text)")
    fmt = copy_format(pg_conn, "feelings", ("id", "mood", "note"))
    assert fmt.binary is False
    rows = [(1, "sad", "a\tb\\c\nd"), (2, "ok", None)]
    data = CopyEncoder(fmt, pg_conn).encode(rows)
    assert data.binary is False
    with pg_conn.transaction():
        assert write_rows(pg_conn, "feelings", ("id", "mood", "note"), data) == 2
    assert pg_conn.execute("SELECT id, mood::text, note FROM feelings ORDER BY id").fetchall() == (
        rows
    )


def test_that_a_row_that_does_not_fit_leaves_the_buffer_as_it_was() -> None:
    """Test that append raises for a bad value or a wrong number of values and writes nothing."""
    encoder = CopyEncoder(CopyFormat((20, 25), True))
    out = bytearray()
    encoder.append((1, "a"), out)
    before = bytes(out)
    with pytest.raises(ValueError, match="the row has 3 values for 2 target columns"):
        encoder.append((1, "a", "b"), out)
    with pytest.raises((TypeError, psycopg.DataError)):
        encoder.append(("not a number", "a"), out)
    assert bytes(out) == before


def test_that_a_format_mismatch_is_refused(many_types: psycopg.Connection) -> None:
    """Test that text-encoded rows are refused by a binary target before any COPY starts."""
    text = CopyEncoder(CopyFormat((20,), False)).encode([(1,)])
    with (
        pytest.raises(ValueError, match="encoded for text COPY, but the target takes binary"),
        many_types.transaction(),
    ):
        write_rows(many_types, "typed", ("id",), text, mode="copy")
    with pytest.raises(ValueError, match="cannot join COPY data of different formats"):
        CopyData.join([text, CopyData(b"", 0, True)], binary=True)


def test_that_a_duplicate_in_encoded_rows_fails_copy_and_is_upserted_by_auto(
    many_types: psycopg.Connection,
) -> None:
    """Test that encoded rows follow the write modes: copy fails on a duplicate, auto upserts."""
    encoder = CopyEncoder(copy_format(many_types, "typed", COLUMNS))
    with many_types.transaction():
        write_rows(many_types, "typed", COLUMNS, encoder.encode([_row(1)]), mode="copy")
    again = encoder.encode([_row(1), _row(2)])
    with pytest.raises(errors.UniqueViolation), many_types.transaction():
        write_rows(many_types, "typed", COLUMNS, again, mode="copy")
    with many_types.transaction():
        assert write_rows(many_types, "typed", COLUMNS, again, mode="auto") == 2
    assert [row[0] for row in _written(many_types, "typed", ("id",))] == [1, 2]
