"""Tests of RangeReader: a chunk's batches as key ranges, read and split, on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import pickle
from decimal import Decimal

import psycopg
import pytest

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.table.planner import RowFilter, TableChunk
from parallel_batch.sources.table.ranges import BatchRange, RangeReader
from parallel_batch.sources.table.reader import use_reader_timezone

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
COLUMNS = ("id", "payload", "amount", "created_at")
WHOLE = TableChunk(None, None, 0)


@pytest.fixture
def items(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """A table ``items`` of 1000 rows with ids 2, 4, ..., 2000, an hour apart."""
    pg_conn.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, payload text, amount numeric(12,2),"
        " created_at timestamptz)"
    )
    pg_conn.execute(
        "INSERT INTO items SELECT 2 * i, 'p' || i, i / 100.0, %s + i * interval '1 hour'"
        " FROM generate_series(1, 1000) AS i",
        (T0,),
    )
    return pg_conn


def _reader(conn: psycopg.Connection, chunk: TableChunk = WHOLE, **kw: object) -> RangeReader:
    return RangeReader.build(conn, "items", COLUMNS, "id", chunk=chunk, **kw)


def _read_all(
    conn: psycopg.Connection, reader: RangeReader, batches: list[BatchRange]
) -> list[int]:
    return [row[0] for batch in batches for row in reader.rows(conn, batch)]


def test_that_batches_cover_the_chunk_once_in_key_order(items: psycopg.Connection) -> None:
    """Test that a chunk's ranges hold batch_rows rows each and together every row once."""
    reader = _reader(items)
    batches = list(reader.ranges(items, None, 64))
    assert batches[0] == BatchRange(None, 128)
    assert [b.lower for b in batches[1:]] == [b.upper for b in batches[:-1]]
    assert batches[-1].upper == 2000
    sizes = [len(reader.rows(items, b)) for b in batches]
    assert sizes == [64] * 15 + [40]
    assert _read_all(items, reader, batches) == list(range(2, 2001, 2))
    first = reader.rows(items, batches[0])[0]
    assert first == (2, "p1", Decimal("0.01"), T0 + dt.timedelta(hours=1))


def test_that_batches_stay_in_the_chunk_and_resume_after_a_key(items: psycopg.Connection) -> None:
    """Test that batches start after the given key and end at the chunk's upper bound."""
    chunk = TableChunk(100, 400, 150)
    reader = _reader(items, chunk)
    batches = list(reader.ranges(items, 300, 20))
    assert _read_all(items, reader, batches) == list(range(302, 401, 2))
    assert [len(reader.rows(items, b)) for b in batches] == [20, 20, 10]
    assert list(reader.ranges(items, 400, 20)) == []


def test_that_an_exact_multiple_of_batch_rows_ends_without_an_empty_batch(
    items: psycopg.Connection,
) -> None:
    """Test that 128 rows in batches of 64 are exactly two ranges."""
    reader = _reader(items, TableChunk(None, 256, 128))
    assert list(reader.ranges(items, None, 64)) == [BatchRange(None, 128), BatchRange(128, 256)]


def test_that_the_filter_applies_to_planning_and_reading(items: psycopg.Connection) -> None:
    """Test that only rows inside the data interval are planned and read."""
    interval = RowFilter("created_at", T0 + dt.timedelta(hours=101), T0 + dt.timedelta(hours=201))
    reader = _reader(items, row_filter=interval)
    batches = list(reader.ranges(items, None, 30))
    assert _read_all(items, reader, batches) == list(range(202, 401, 2))
    assert [len(reader.rows(items, b)) for b in batches] == [30, 30, 30, 10]


def test_that_text_and_timestamp_keys_travel_as_json(pg_conn: psycopg.Connection) -> None:
    """Test that text and timestamptz keys are planned, read and split exactly."""
    pg_conn.execute("CREATE TABLE tk (k text PRIMARY KEY, ts timestamptz UNIQUE NOT NULL)")
    pg_conn.execute(
        "INSERT INTO tk SELECT lpad(i::text, 4, '0'), %s + i * interval '1.5 second'"
        " FROM generate_series(1, 300) AS i",
        (T0,),
    )
    use_reader_timezone(pg_conn)
    by_text = RangeReader.build(pg_conn, "tk", ("k",), "k", chunk=WHOLE)
    batches = list(by_text.ranges(pg_conn, "0250", 20))
    assert batches == [
        BatchRange("0250", "0270"),
        BatchRange("0270", "0290"),
        BatchRange("0290", "0300"),
    ]
    by_time = RangeReader.build(pg_conn, "tk", ("ts", "k"), "ts", chunk=WHOLE)
    batches = list(by_time.ranges(pg_conn, None, 100))
    assert batches[0].upper == (T0 + dt.timedelta(seconds=150)).isoformat()
    rows = [row for b in batches for row in by_time.rows(pg_conn, b)]
    assert [row[1] for row in rows] == [f"{i:04d}" for i in range(1, 301)]
    parts = by_time.split(pg_conn, batches[1], 16)
    assert parts is not None
    assert [row[1] for part in parts for row in by_time.rows(pg_conn, part)] == [
        f"{i:04d}" for i in range(101, 201)
    ]


def test_that_a_split_covers_its_batch_in_nearly_equal_parts(items: psycopg.Connection) -> None:
    """Test that split cuts a range into at most `parts` parts that cover it exactly."""
    reader = pickle.loads(pickle.dumps(_reader(items)))  # as a worker gets it
    batch = BatchRange(10, 110)  # 50 rows: 12 .. 110
    parts = reader.split(items, batch, 16)
    assert parts is not None and len(parts) == 16
    assert parts[0].lower == 10 and parts[-1].upper == 110
    assert [p.lower for p in parts[1:]] == [p.upper for p in parts[:-1]]
    sizes = [len(reader.rows(items, p)) for p in parts]
    assert sum(sizes) == 50 and max(sizes) - min(sizes) <= 1
    assert reader.split(items, BatchRange(10, 12), 16) is None  # one row
    assert reader.split(items, BatchRange(11, 11), 16) is None  # none
    assert reader.split(items, BatchRange(None, 6), 16) == [
        BatchRange(None, 2),
        BatchRange(2, 4),
        BatchRange(4, 6),
    ]
    with pytest.raises(ValueError, match="parts must be at least 2"):
        reader.split(items, batch, 1)


def test_that_bad_arguments_fail_when_built(items: psycopg.Connection) -> None:
    """Test that a missing key, a key outside the columns and a bad batch size are refused."""
    with pytest.raises(ValueError, match="columns must include the key column 'id'"):
        RangeReader.build(items, "items", ("payload",), "id", chunk=WHOLE)
    with pytest.raises(ValueError, match="columns must not be empty"):
        RangeReader.build(items, "items", (), "id", chunk=WHOLE)
    with pytest.raises(ConfigurationError, match="is not unique"):
        RangeReader.build(items, "items", ("payload",), "payload", chunk=WHOLE)
    with pytest.raises(ValueError, match="batch_rows must be greater than 0"):
        next(_reader(items).ranges(items, None, 0))
