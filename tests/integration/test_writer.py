"""Tests of the COPY / upsert writer on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from parallel_batch.exceptions import ConfigurationError, InvalidIdentifierError
from parallel_batch.store.writer import delete_key_range, write_rows

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
COLUMNS = ("id", "user_id", "note", "amount", "created_at")


def _row(i: int, note: str = "n") -> tuple:
    return (i, i % 7, f"{note}{i}", Decimal(i) / 4, T0 + dt.timedelta(seconds=i))


@pytest.fixture
def target(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """An empty table ``out`` with a bigint primary key."""
    pg_conn.execute(
        "CREATE TABLE out (id bigint PRIMARY KEY, user_id int, note text,"
        " amount numeric(12,2), created_at timestamptz, extra text DEFAULT 'x')"
    )
    return pg_conn


def _table(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(f"SELECT {', '.join(COLUMNS)} FROM out ORDER BY id").fetchall()


def test_copy_writes_typed_rows(target: psycopg.Connection) -> None:
    """Test that copy mode writes every row with its exact values and returns the count."""
    rows = [_row(i) for i in range(1, 501)] + [(501, None, None, None, None)]
    with target.transaction():
        assert write_rows(target, "out", COLUMNS, rows, mode="copy") == 501
    assert _table(target) == rows
    assert target.execute("SELECT count(*) FROM out WHERE extra = 'x'").fetchone() == (501,)


def test_copy_fails_on_a_duplicate_key(target: psycopg.Connection) -> None:
    """Test that copy mode does not hide a duplicate key."""
    with target.transaction():
        write_rows(target, "out", COLUMNS, [_row(1)], mode="copy")
    with pytest.raises(errors.UniqueViolation), target.transaction():
        write_rows(target, "out", COLUMNS, [_row(2), _row(1)], mode="copy")
    assert _table(target) == [_row(1)]


def test_upsert_inserts_and_updates(target: psycopg.Connection) -> None:
    """Test that upsert updates existing keys, inserts new ones and leaves others alone."""
    with target.transaction():
        write_rows(target, "out", COLUMNS, [_row(i, "old") for i in range(1, 11)], mode="copy")
    fresh = [_row(i, "new") for i in range(6, 16)]
    with target.transaction():
        assert write_rows(target, "out", COLUMNS, fresh, mode="upsert") == 10
    assert _table(target) == [_row(i, "old") for i in range(1, 6)] + fresh


def test_upsert_twice_in_one_transaction(target: psycopg.Connection) -> None:
    """Test that two upserts in one transaction each write only their own rows."""
    with target.transaction():
        assert write_rows(target, "out", COLUMNS, [_row(1), _row(2)], mode="upsert") == 2
        assert write_rows(target, "out", COLUMNS, [_row(2, "b"), _row(3)], mode="upsert") == 2
    assert _table(target) == [_row(1), _row(2, "b"), _row(3)]


def test_upsert_of_key_columns_only_counts_existing_rows(target: psycopg.Connection) -> None:
    """Test that an upsert with nothing but key columns counts existing rows as written."""
    with target.transaction():
        write_rows(target, "out", ("id",), [(1,), (2,)], mode="copy")
        assert write_rows(target, "out", ("id",), [(2,), (3,)], mode="upsert") == 2
    assert [r[0] for r in _table(target)] == [1, 2, 3]


def test_auto_copies_then_upserts_on_conflict(target: psycopg.Connection) -> None:
    """Test that auto mode copies new rows and falls back to upsert on a duplicate key."""
    with target.transaction():
        assert write_rows(target, "out", COLUMNS, [_row(i) for i in range(1, 4)]) == 3
    replay = [_row(i, "again") for i in range(2, 6)]
    with target.transaction():
        assert write_rows(target, "out", COLUMNS, replay, mode="auto") == 4
        target.execute("INSERT INTO out (id) VALUES (100)")  # the transaction is still usable
    assert _table(target)[:5] == [_row(1), *replay]
    assert target.execute("SELECT count(*) FROM out").fetchone() == (6,)


def test_rollback_leaves_nothing(target: psycopg.Connection) -> None:
    """Test that rolling back the caller's transaction undoes every mode's writes."""

    class Abort(Exception):
        pass

    with target.transaction():
        write_rows(target, "out", COLUMNS, [_row(1)], mode="copy")
    for mode in ("copy", "upsert", "auto"):
        with pytest.raises(Abort), target.transaction():
            first = 2 if mode == "copy" else 1  # copy would fail on the existing key 1
            write_rows(target, "out", COLUMNS, [_row(first, "x"), _row(3, "x")], mode=mode)
            expected = 3 if mode == "copy" else 2
            assert target.execute("SELECT count(*) FROM out").fetchone() == (expected,)
            raise Abort
    assert _table(target) == [_row(1)]


def test_never_commits(target: psycopg.Connection, pg_url: str) -> None:
    """Test that rows written on a non-autocommit connection stay invisible until its commit."""
    with psycopg.connect(pg_url) as writer:
        assert write_rows(writer, "out", COLUMNS, [_row(1)], mode="auto") == 1
        assert writer.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert target.execute("SELECT count(*) FROM out").fetchone() == (0,)
        writer.commit()
    assert target.execute("SELECT count(*) FROM out").fetchone() == (1,)


def test_text_copy_for_types_without_binary_dumper(pg_conn: psycopg.Connection) -> None:
    """Test that an enum column (no binary dumper) and a domain column are still written."""
    pg_conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    pg_conn.execute("CREATE DOMAIN cents AS numeric(12,2) CHECK (VALUE >= 0)")
    pg_conn.execute("CREATE TABLE feelings (id int PRIMARY KEY, mood mood, price cents)")
    rows = [(1, "happy", Decimal("1.50")), (2, "sad", Decimal("0.00"))]
    with pg_conn.transaction():
        assert write_rows(pg_conn, "feelings", ("id", "mood", "price"), rows) == 2
    assert pg_conn.execute("SELECT id, mood::text, price FROM feelings ORDER BY id").fetchall() == (
        rows
    )
    with pytest.raises(errors.CheckViolation), pg_conn.transaction():
        write_rows(pg_conn, "feelings", ("id", "price"), [(3, Decimal("-1"))])


def test_delete_key_range(target: psycopg.Connection) -> None:
    """Test that delete_key_range deletes (lower, upper] with open None bounds."""
    with target.transaction():
        write_rows(target, "out", COLUMNS, [_row(i) for i in range(1, 21)], mode="copy")
        assert delete_key_range(target, "out", "id", 5, 10) == 5
        assert delete_key_range(target, "out", "id", None, 2) == 2
        assert delete_key_range(target, "out", "id", 18, None) == 2
    assert [r[0] for r in _table(target)] == [3, 4, 5, *range(11, 19)]
    with target.transaction():
        assert delete_key_range(target, "out", "id", None, None) == 11
    assert _table(target) == []


def test_invalid_calls_are_rejected(target: psycopg.Connection) -> None:
    """Test that bad modes, keys and a connection outside a transaction are rejected."""
    with pytest.raises(ValueError, match="never commits: open one first"):
        write_rows(target, "out", COLUMNS, [_row(1)])
    with pytest.raises(ValueError, match="never commits: open one first"):
        delete_key_range(target, "out", "id", None, None)
    with target.transaction():
        with pytest.raises(ValueError, match="mode must be one of copy, upsert, auto"):
            write_rows(target, "out", COLUMNS, [_row(1)], mode="merge")
        with pytest.raises(ValueError, match="key_columns must be among the columns: 'id'"):
            write_rows(target, "out", ("note",), [("a",)], mode="upsert")
        with pytest.raises(ValueError, match="columns must not be empty"):
            write_rows(target, "out", (), [()])
        with pytest.raises(ConfigurationError, match="Column 'nope' does not exist"):
            write_rows(target, "out", ("id", "nope"), [(1, 2)])
        with pytest.raises(ConfigurationError, match="Table 'missing' does not exist"):
            write_rows(target, "missing", ("id",), [(1,)])
        assert write_rows(target, "out", COLUMNS, []) == 0
    assert _table(target) == []


@pytest.mark.parametrize(
    ("table", "columns", "keys", "what"),
    [
        ('out"; DROP TABLE out; --', COLUMNS, ("id",), "table name"),
        ("out; DELETE FROM out", COLUMNS, ("id",), "table name"),
        ("public.out.x", COLUMNS, ("id",), "table name"),
        ("out", ("note) VALUES (1, 'x'); --", "id"), ("id",), "column name"),
        ("out", ('note"', "id"), ("id",), "column name"),
        ("out", COLUMNS, ("id) DO NOTHING; --",), "column name"),
    ],
)
def test_unsafe_identifiers_are_rejected(
    target: psycopg.Connection, table: str, columns: tuple, keys: tuple, what: str
) -> None:
    """Test that injection-looking table, column and key names never reach SQL."""
    with target.transaction():
        write_rows(target, "out", COLUMNS, [_row(1)], mode="copy")
    with target.transaction():
        with pytest.raises(InvalidIdentifierError, match=f"Invalid {what} .*(must match|expected)"):
            write_rows(target, table, columns, [_row(2)], mode="upsert", key_columns=keys)
        with pytest.raises(InvalidIdentifierError, match=f"Invalid {what}"):
            key = next((n for n in (*columns, *keys) if not n.isidentifier()), "id")
            delete_key_range(target, table, key, 1, 2)
    assert _table(target) == [_row(1)]
