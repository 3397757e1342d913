"""Tests of the keyset batch reader on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from parallel_batch.exceptions import ConfigurationError, InvalidIdentifierError
from parallel_batch.sources.table.planner import RowFilter, TableChunk, plan_table_chunks
from parallel_batch.sources.table.reader import read_batches

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
COLUMNS = ("id", "payload", "amount", "created_at")
WHOLE = TableChunk(None, None, 0)


@pytest.fixture
def items(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """A table ``items`` of 1000 rows with ids 2, 4, ..., 2000."""
    pg_conn.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, payload text, amount numeric(12,2),"
        " created_at timestamptz, n int)"
    )
    pg_conn.execute(
        "INSERT INTO items SELECT 2 * i, 'p' || i, i / 100.0, %s + i * interval '1 hour', i"
        " FROM generate_series(1, 1000) AS i",
        (T0,),
    )
    return pg_conn


def _ids(batches: list[list[tuple]]) -> list[int]:
    return [row[0] for batch in batches for row in batch]


def test_reads_every_row_once_in_key_order(items: psycopg.Connection) -> None:
    """Test that a whole-table chunk is read once, in key order, in full batches."""
    batches = list(
        read_batches(items, "items", COLUMNS, "id", chunk=WHOLE, after_key=None, batch_rows=64)
    )
    assert _ids(batches) == list(range(2, 2001, 2))
    assert [len(b) for b in batches] == [64] * 15 + [40]
    assert batches[0][0] == (2, "p1", Decimal("0.01"), T0 + dt.timedelta(hours=1))


def test_columns_come_in_the_order_asked(items: psycopg.Connection) -> None:
    """Test that row tuples follow the columns argument, the key anywhere among them."""
    chunk = TableChunk(None, 4, 2)
    rows = next(
        read_batches(items, "items", ("n", "id"), "id", chunk=chunk, after_key=None, batch_rows=9)
    )
    assert rows == [(1, 2), (2, 4)]


def test_exact_multiple_of_batch_rows_yields_no_empty_batch(items: psycopg.Connection) -> None:
    """Test that a chunk holding a multiple of batch_rows ends without an empty batch."""
    chunk = TableChunk(None, 256, 128)
    batches = list(
        read_batches(items, "items", COLUMNS, "id", chunk=chunk, after_key=None, batch_rows=32)
    )
    assert [len(b) for b in batches] == [32, 32, 32, 32]


def test_chunks_of_a_plan_read_every_row_exactly_once(items: psycopg.Connection) -> None:
    """Test that reading every chunk of a plan gives each row once (sum == count)."""
    plan = plan_table_chunks(items, "items", "id", chunks=7)
    seen: list[int] = []
    for chunk in plan:
        read = _ids(
            list(
                read_batches(
                    items, "items", COLUMNS, "id", chunk=chunk, after_key=None, batch_rows=50
                )
            )
        )
        assert len(read) == chunk.rows
        seen += read
    assert seen == list(range(2, 2001, 2))


def test_resumes_after_a_key(items: psycopg.Connection) -> None:
    """Test that reading starts after the greater of the chunk's lower bound and after_key."""
    chunk = TableChunk(100, 300, 100)

    def read(after: int | None) -> list[int]:
        return _ids(
            list(
                read_batches(
                    items, "items", COLUMNS, "id", chunk=chunk, after_key=after, batch_rows=30
                )
            )
        )

    assert read(None) == list(range(102, 301, 2))
    assert read(201) == list(range(202, 301, 2))  # a key that is not in the table
    assert read(10) == list(range(102, 301, 2))  # below the chunk: the chunk's bound wins
    assert read(300) == []


def test_no_transaction_is_held_between_batches(items: psycopg.Connection, pg_url: str) -> None:
    """Test that between batches the reader's session is idle with no snapshot, and sees new rows."""
    with (
        psycopg.connect(pg_url, autocommit=True) as reader,
        psycopg.connect(pg_url, autocommit=True) as observer,
    ):
        batches = read_batches(
            reader, "items", COLUMNS, "id", chunk=WHOLE, after_key=None, batch_rows=100
        )
        first = next(batches)
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        state = observer.execute(
            "SELECT state, backend_xmin, xact_start FROM pg_stat_activity WHERE pid = %s",
            (reader.info.backend_pid,),
        ).fetchone()
        assert state == ("idle", None, None)
        observer.execute("INSERT INTO items (id, payload) VALUES (1999, 'late')")
        rest = _ids(list(batches))
    assert _ids([first]) + rest == sorted([*range(2, 2001, 2), 1999])


def test_row_filter_selects_the_interval(items: psycopg.Connection) -> None:
    """Test that a row filter keeps only start <= column < end."""
    window = RowFilter("created_at", T0 + dt.timedelta(hours=10), T0 + dt.timedelta(hours=20))
    rows = [
        row
        for batch in read_batches(
            items,
            "items",
            COLUMNS,
            "id",
            chunk=TableChunk(None, 30, 0),
            after_key=None,
            batch_rows=3,
            row_filter=window,
        )
        for row in batch
    ]
    assert [r[0] for r in rows] == [20, 22, 24, 26, 28, 30]
    assert all(window.start <= r[3] < window.end for r in rows)


def test_binary_and_text_results_give_the_same_values(items: psycopg.Connection) -> None:
    """Test that rows with and without a numeric column carry the same typed values."""
    chunk = TableChunk(None, 6, 3)
    with_numeric = next(
        read_batches(items, "items", COLUMNS, "id", chunk=chunk, after_key=None, batch_rows=10)
    )
    without = next(
        read_batches(
            items,
            "items",
            ("id", "payload", "created_at", "n"),
            "id",
            chunk=chunk,
            after_key=None,
            batch_rows=10,
        )
    )
    assert [(r[0], r[1], r[3]) for r in with_numeric] == [(r[0], r[1], r[2]) for r in without]
    assert isinstance(with_numeric[0][2], Decimal)
    assert isinstance(without[0][2], dt.datetime) and isinstance(without[0][3], int)


def test_text_and_timestamp_keys_resume_from_json(pg_conn: psycopg.Connection) -> None:
    """Test that text and timestamptz keys resume after a key given as JSON text."""
    pg_conn.execute("CREATE TABLE tk (k text PRIMARY KEY, ts timestamptz UNIQUE NOT NULL)")
    pg_conn.execute(
        "INSERT INTO tk SELECT lpad(i::text, 4, '0'), %s + i * interval '1.5 second'"
        " FROM generate_series(1, 300) AS i",
        (T0,),
    )
    text_keys = _ids(
        list(read_batches(pg_conn, "tk", ("k",), "k", chunk=WHOLE, after_key="0250", batch_rows=20))
    )
    assert text_keys == [f"{i:04d}" for i in range(251, 301)]
    after = (T0 + dt.timedelta(seconds=1.5 * 290)).isoformat()
    chunk = TableChunk(None, (T0 + dt.timedelta(seconds=1.5 * 295)).isoformat(), 0)
    stamps = _ids(
        list(read_batches(pg_conn, "tk", ("ts",), "ts", chunk=chunk, after_key=after, batch_rows=2))
    )
    assert stamps == [T0 + dt.timedelta(seconds=1.5 * i) for i in range(291, 296)]


def test_invalid_arguments_fail_before_the_first_batch(
    items: psycopg.Connection, pg_url: str
) -> None:
    """Test that bad arguments and unsafe names fail when read_batches is called."""
    with pytest.raises(ValueError, match="batch_rows must be greater than 0"):
        read_batches(items, "items", COLUMNS, "id", chunk=WHOLE, after_key=None, batch_rows=0)
    with pytest.raises(ValueError, match="columns must include the key column 'id'"):
        read_batches(items, "items", ("payload",), "id", chunk=WHOLE, after_key=None, batch_rows=1)
    with pytest.raises(ValueError, match="columns must not be empty"):
        read_batches(items, "items", (), "id", chunk=WHOLE, after_key=None, batch_rows=1)
    with pytest.raises(ConfigurationError, match="Column 'nope' does not exist in table 'items'"):
        read_batches(
            items, "items", ("id", "nope"), "id", chunk=WHOLE, after_key=None, batch_rows=1
        )
    with pytest.raises(InvalidIdentifierError, match="Invalid table name"):
        read_batches(
            items,
            "items; DROP TABLE items",
            COLUMNS,
            "id",
            chunk=WHOLE,
            after_key=None,
            batch_rows=1,
        )
    with pytest.raises(InvalidIdentifierError, match="Invalid column name"):
        read_batches(
            items,
            "items",
            ("id", 'payload" FROM items; --'),
            "id",
            chunk=WHOLE,
            after_key=None,
            batch_rows=1,
        )
    with (
        psycopg.connect(pg_url) as not_autocommit,
        pytest.raises(ValueError, match="read_batches needs an autocommit connection"),
    ):
        read_batches(
            not_autocommit, "items", COLUMNS, "id", chunk=WHOLE, after_key=None, batch_rows=1
        )
    assert items.execute("SELECT count(*) FROM items").fetchone() == (1000,)
