"""Tests of a table's batches read as columns for a dataframe transform (sources/table/columns.py)
on a real PostgreSQL: the frame and the rows are the ones the row reader gives, NULLs, domains,
intervals, every type it reads included; other tables are read row by row."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import psycopg
import pytest

from parallel_batch.core.frame_rows import FrameRows
from parallel_batch.core.frames import frame_in
from parallel_batch.sources import TableSource
from parallel_batch.sources.table.columns import read_frame
from parallel_batch.sources.table.planner import RowFilter, TableChunk
from parallel_batch.sources.table.source import TableChunkReader
from parallel_batch.store.deadletters import json_payload

WHOLE = TableChunk(None, None, 0).to_dict()
COLUMNS = ("id", "small", "n", "big", "ratio", "flag", "at", "naive", "price", "note", "label")
DDL = """
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE typed (id bigint PRIMARY KEY, small smallint, n positive, big bigint,
                    ratio double precision, flag boolean, at timestamptz, naive timestamp,
                    price numeric(12,2), note text, label varchar(20));
INSERT INTO typed
SELECT i, (i % 300)::smallint, i, i * 1000000007::bigint, i / 7.0, i % 3 = 0,
       timestamptz '2024-01-01 00:00:00.000001+00' + i * interval '1 hour 1 microsecond',
       timestamp '1969-12-31 23:59:59' - i * interval '1 day',
       i / 100.0, 'note ' || i || E'\\twith é', 'label ' || i
FROM generate_series(1, 2500) AS i;
-- NULLs in every column but the key, in the second thousand only
UPDATE typed SET small = NULL, n = NULL, big = NULL, ratio = NULL, flag = NULL, at = NULL,
                 naive = NULL, price = NULL, note = NULL, label = NULL
WHERE id BETWEEN 1001 AND 2000 AND id % 7 = 0;
UPDATE typed SET price = 'NaN', ratio = 'Infinity' WHERE id = 2222;
"""


@pytest.fixture
def typed(pg_conn: psycopg.Connection, pg_url: str) -> str:
    """A table ``typed`` of 2,500 rows with a column of each type read as columns."""
    for statement in DDL.split(";"):
        if statement.strip():
            pg_conn.execute(statement)
    return pg_url


def _readers(url: str, **options: Any) -> tuple[TableChunkReader, TableChunkReader]:
    source = TableSource("typed", "id", COLUMNS, **options)
    return source.chunk_reader(url, WHOLE), source.chunk_reader(url, WHOLE, frames=True)


def _same(rows: list[tuple[Any, ...]], frame_rows: Any) -> None:
    """The frame and the rows a columnar batch holds are the row reader's."""
    assert isinstance(frame_rows, FrameRows)
    pd.testing.assert_frame_equal(frame_rows.frame, frame_in(rows, (0, len(rows)), COLUMNS))
    pd.testing.assert_frame_equal(
        frame_in(frame_rows, (3, 40), COLUMNS), frame_in(rows, (3, 40), COLUMNS)
    )
    assert len(frame_rows) == len(rows)
    assert list(map(repr, frame_rows)) == list(map(repr, rows))  # types too; NaN as NaN
    whole = (0, len(rows))
    for unit in (whole, (0, 10)):  # a transform that changes its input, whole or a part...
        cut = frame_in(frame_rows, unit, COLUMNS)
        cut["id"] += 1
        cut.loc[:, "note"] = "changed"
    pd.testing.assert_frame_equal(  # ...does not change the batch (a split retries on it)
        frame_in(frame_rows, whole, COLUMNS), frame_in(rows, whole, COLUMNS)
    )
    assert json_payload(COLUMNS, frame_rows[-1]) == json_payload(COLUMNS, rows[-1])


def test_that_a_batch_read_as_columns_is_the_batch_read_as_rows(typed: str) -> None:
    """Test that every batch (without NULLs, with NULLs in every column, with NaN and Infinity),
    read as columns, makes the frame and the rows the row reader makes of it."""
    by_rows, by_columns = _readers(typed)
    assert by_columns.statements.frame_sql is not None
    refs = list(by_rows.batches(None, 1000))
    assert len(refs) == 3
    for ref in refs:
        rows = by_rows.read(ref).rows
        assert isinstance(rows, list) and len(rows) in (1000, 500)
        _same(rows, by_columns.read(ref).rows)


def test_that_an_interval_is_read_as_columns_too(typed: str) -> None:
    """Test that a data interval's filter applies to the columnar statement: the same rows."""
    start = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    interval = RowFilter("at", start, start + dt.timedelta(days=9))
    by_rows, by_columns = _readers(typed, row_filter=interval)
    (ref,) = list(by_rows.batches(None, 5000))
    rows = by_rows.read(ref).rows
    assert 0 < len(rows) < 2500
    _same(list(rows), by_columns.read(ref).rows)


def test_that_the_batch_comes_in_key_order_whatever_order_the_aggregate_saw(
    typed: str, pg_conn: psycopg.Connection
) -> None:
    """Test that arrays aggregated in another order than the key's are put back in key order
    (the aggregate's input order is not promised by SQL)."""
    _, by_columns = _readers(typed)
    statements = by_columns.statements
    columns = ", ".join(
        f"array_agg(CAST({c} AS {t}) ORDER BY id DESC)"
        for c, t in zip(
            COLUMNS,
            [
                "int8",
                "int2",
                "int4",
                "int8",
                "float8",
                "bool",
                "timestamptz",
                "timestamp",
                "text",
                "text",
                "varchar",
            ],
            strict=True,
        )
    )
    statement = f"SELECT {columns} FROM typed WHERE id <= 50"
    got = read_frame(pg_conn, statement, {}, COLUMNS, statements.kinds, 0)
    assert got.frame["id"].tolist() == list(range(1, 51))
    assert [row[0] for row in got] == list(range(1, 51))
    assert got.frame["big"].tolist() == [i * 1000000007 for i in range(1, 51)]


def test_that_an_empty_range_is_an_empty_frame(typed: str, pg_conn: psycopg.Connection) -> None:
    """Test that a range without rows reads as a frame of the columns and no rows."""
    _, by_columns = _readers(typed)
    statements = by_columns.statements
    assert statements.frame_sql is not None
    got = read_frame(
        pg_conn,
        statements.frame_sql.after,
        {"lower": 9000, "upper": 9999},
        COLUMNS,
        statements.kinds,
        0,
    )
    assert len(got) == 0 and list(got.frame.columns) == list(COLUMNS)


@pytest.mark.parametrize(
    ("ddl", "columns"),
    [
        pytest.param("CREATE TABLE other (id bigint PRIMARY KEY, u uuid)", ("id", "u"), id="uuid"),
        pytest.param("CREATE TABLE other (id bigint PRIMARY KEY, r real)", ("id", "r"), id="real"),
        pytest.param("CREATE TABLE other (id text PRIMARY KEY, n int)", ("id", "n"), id="text key"),
        pytest.param("CREATE TABLE other (id bigint PRIMARY KEY, d date)", ("id", "d"), id="date"),
    ],
)
def test_that_other_tables_are_read_row_by_row(
    pg_conn: psycopg.Connection, pg_url: str, ddl: str, columns: tuple[str, ...]
) -> None:
    """Test that a table with a column of another type (or a key that is not an integer) has
    no columnar statement, and its batches come as rows even when asked for columns."""
    pg_conn.execute(ddl)
    pg_conn.execute(f"INSERT INTO other ({columns[0]}) VALUES ('1'), ('2')")
    reader = TableSource("other", "id", columns).chunk_reader(pg_url, WHOLE, frames=True)
    assert reader.statements.frame_sql is None
    (ref,) = list(reader.batches(None, 10))
    rows = reader.read(ref).rows
    assert isinstance(rows, list) and len(rows) == 2


def test_that_a_timestamp_python_cannot_hold_fails_as_in_the_row_reader(
    typed: str, pg_conn: psycopg.Connection
) -> None:
    """Test that an infinite timestamp is refused as the row reader refuses it (psycopg's
    binary loader says it without the value its text loader quotes)."""
    pg_conn.execute("UPDATE typed SET at = 'infinity' WHERE id = 10")
    by_rows, by_columns = _readers(typed)
    (ref, *_) = list(by_rows.batches(None, 1000))
    with pytest.raises(psycopg.DataError) as from_rows:
        by_rows.read(ref)
    with pytest.raises(psycopg.DataError) as from_columns:
        by_columns.read(ref)
    assert str(from_rows.value).startswith("timestamp too large (after year 10K)")
    assert str(from_columns.value).startswith("timestamp too large (after year 10K)")
