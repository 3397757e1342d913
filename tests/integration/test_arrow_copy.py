"""Tests of the Arrow COPY encoder: the rows pgpq writes are the rows psycopg's encoder writes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from parallel_batch.core.arrow_kind import rows_table
from parallel_batch.store.arrow_copy import ArrowCopyEncoder, ColumnsRefused, arrow_type_of
from parallel_batch.store.copy_data import CopyData, CopyEncoder
from parallel_batch.store.writer import copy_format, write_rows

COLUMNS = ("id", "n", "s", "amount", "note", "at", "local", "day", "flag", "x", "r")
TYPES = (
    "bigint",
    "integer",
    "smallint",
    "numeric(12,2)",
    "text",
    "timestamp with time zone",
    "timestamp without time zone",
    "date",
    "boolean",
    "double precision",
    "real",
)
ZONE = dt.timezone(dt.timedelta(hours=-5))
ROWS: list[tuple[Any, ...]] = [
    (
        1,
        -(2**31),
        2**15 - 1,
        Decimal("85953.25"),
        'Chloé \t tab \n newline \\ and "quotes"',
        dt.datetime(2024, 1, 17, 8, 52, tzinfo=ZONE),
        dt.datetime(2024, 1, 1, 1, 2, 3, 456789),
        dt.date(2024, 2, 29),
        True,
        1.5,
        0.25,
    ),
    (2, None, None, Decimal("-0.10"), "", None, None, None, False, float("nan"), -1.0),
    (
        -(2**63),
        7,
        -3,
        None,
        None,
        dt.datetime(1, 1, 2, tzinfo=dt.UTC),
        None,
        dt.date(1, 1, 1),
        None,
        None,
        None,
    ),
]


@pytest.fixture
def typed(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """Tables ``a`` and ``b`` with a column of each type the encoder writes."""
    columns = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, TYPES, strict=True))
    pg_conn.execute(f"CREATE TABLE a ({columns}); CREATE TABLE b ({columns})")
    return pg_conn


def _written(conn: psycopg.Connection, table: str, data: CopyData) -> list[tuple[Any, ...]]:
    with conn.transaction():
        write_rows(conn, table, COLUMNS, data)
    return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_that_a_table_is_written_as_psycopg_writes_its_rows(typed: psycopg.Connection) -> None:
    """Test that every type's values, NULLs, NaN, the extremes of each integer, a leap day,
    year 1 and text with COPY's special characters come out of PostgreSQL the same whichever
    encoder wrote them."""
    fmt = copy_format(typed, "a", COLUMNS)
    table = rows_table(COLUMNS, ROWS)
    table = table.set_column(  # an Arrow decimal of the batch's scale (3), as the reader makes
        3, "amount", table.column("amount").cast(pa.decimal128(38, 3))
    )
    by_psycopg = _written(typed, "a", CopyEncoder(fmt, typed).encode(ROWS))
    by_arrow = _written(typed, "b", ArrowCopyEncoder(COLUMNS, TYPES).encode(table))
    assert len(by_arrow) == 3
    assert repr(by_arrow) == repr(by_psycopg)  # NaN == NaN only as text


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("n", pa.array([2**31], pa.int64()), "not in range"),
        ("amount", pa.array([Decimal("1.005")], pa.decimal128(38, 3)), "data loss"),
        ("amount", pa.array([Decimal("12345678901")], pa.decimal128(38, 0)), "precision"),
        ("note", pa.array(["a\x00b"]), "NUL"),
        ("r", pa.array([1e39]), "real's range"),
        ("n", pa.array(["7"]), "not cast"),
        ("at", pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us")), "not cast"),
    ],
)
def test_that_a_value_the_target_would_refuse_or_change_is_refused(
    column: str, values: pa.Array, reason: str
) -> None:
    """Test that out of range, too many decimals or digits, a NUL in text, a real beyond
    float4 and a type meaning another value raise ColumnsRefused (the row path says why)."""
    table = pa.table({name: pa.nulls(1) for name in COLUMNS}).set_column(
        COLUMNS.index(column), column, values
    )
    with pytest.raises(ColumnsRefused, match=reason):
        ArrowCopyEncoder(COLUMNS, TYPES).encode(table)


def test_that_only_types_with_an_encoding_are_ready() -> None:
    """Test which target types the encoder takes: none of a numeric without a precision (a
    decimal's scale would be its batch's), json, uuid or arrays."""
    assert ArrowCopyEncoder.ready(TYPES)
    assert ArrowCopyEncoder.ready(("character varying(20)", "numeric(38,10)"))
    for other in ("numeric", "numeric(40,2)", "jsonb", "uuid", "integer[]", "bytea"):
        assert not ArrowCopyEncoder.ready((other,)), other
        assert arrow_type_of(other) is None
    with pytest.raises(ValueError, match="without an Arrow encoding"):
        ArrowCopyEncoder(("j",), ("jsonb",))
