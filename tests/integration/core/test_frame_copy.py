"""Tests of a dataframe result written by binary COPY from bytes NumPy made (core.frame_copy)
on the real server: what the table holds, NULLs and a domain included, as the general way."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import psycopg
import pytest

from parallel_batch.core.frames import frame_copy, frame_out
from parallel_batch.core.target import Target
from parallel_batch.exceptions import TransformOutputError
from parallel_batch.store.copy_data import CopyEncoder
from parallel_batch.store.writer import write_rows

T0 = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
COLUMNS = "id bigint PRIMARY KEY, small smallint, mid positive, ratio float8, single real, " + (
    "flag boolean, at timestamptz, naive timestamp, note text, label varchar(10)"
)


def test_that_numpy_bytes_write_the_rows_the_general_way_writes(
    pg_conn: psycopg.Connection,
) -> None:
    """Test that a frame of every type it encodes (text with tabs, backslashes and UTF-8
    beyond ASCII included), with NULLs, into a table with a domain column and a column the
    frame leaves out, is written as the general way writes it."""
    pg_conn.execute("CREATE DOMAIN positive AS integer CHECK (VALUE > 0)")
    for table in ("fast", "general"):
        pg_conn.execute(f"CREATE TABLE {table} ({COLUMNS})")
    n = 1_000
    ids = np.arange(n, dtype=np.int64) - 500
    df = pd.DataFrame(
        {
            "id": ids * 2**40,
            "small": pd.array(np.where(ids % 7 == 0, None, ids), dtype="Int16"),
            "mid": pd.array(np.where(ids % 5 == 0, None, np.abs(ids) + 1), dtype="Int64"),
            "ratio": np.where(ids % 3 == 0, np.nan, ids / 3),
            "single": ids.astype(np.float32) / 7,
            "flag": pd.array(np.where(ids % 4 == 0, None, ids % 2 == 0), dtype="boolean"),
            "at": pd.Series(pd.to_datetime(T0) + pd.to_timedelta(ids * 86_399_999_999, "us")),
            "naive": pd.Series(pd.Timestamp(2000, 1, 1) + pd.to_timedelta(ids, "s")),
            "note": [None if i % 4 == 0 else f"note {i}\tw\u00efth \\ and \U0001f600" for i in ids],
        }
    )
    df.loc[ids % 6 == 0, "at"] = pd.NaT
    pg_conn.autocommit = False
    fast = Target.resolve(pg_conn, "fast")
    encoded = frame_copy(df, (0, n), fast)
    assert encoded is not None  # every column NumPy can encode (the domain by its base type)
    write_rows(pg_conn, "fast", fast.columns, encoded[0], mode="copy")
    general = Target.resolve(pg_conn, "general")
    rows, _ = frame_out(df, (0, n), general)
    write_rows(
        pg_conn, "general", general.columns, CopyEncoder(general.copy).encode(rows), mode="copy"
    )
    pg_conn.commit()
    differ = pg_conn.execute(
        "SELECT (SELECT count(*) FROM (TABLE fast EXCEPT TABLE general) a),"
        " (SELECT count(*) FROM (TABLE general EXCEPT TABLE fast) b),"
        " (SELECT count(*) FROM fast),"
        " (SELECT count(*) FROM fast WHERE small IS NULL AND mid IS NULL AND at IS NULL"
        "  AND ratio IS NULL AND flag IS NULL AND note IS NULL)"
    ).fetchone()
    assert differ == (0, 0, n, len([i for i in ids if i % 420 == 0]))


def test_that_a_domain_column_takes_the_dtypes_of_its_base_type(
    pg_conn: psycopg.Connection,
) -> None:
    """Test that floats go into a domain over numeric as exact Decimals (as into numeric), and
    that a dtype the base type refuses is named with the domain's own type in the error."""
    pg_conn.execute("CREATE DOMAIN price AS numeric(12,2) CHECK (VALUE >= 0)")
    pg_conn.execute("CREATE TABLE priced (id bigint PRIMARY KEY, amount price)")
    target = Target.resolve(pg_conn, "priced")
    df = pd.DataFrame({"id": [1, 2], "amount": [1.25, 0.5]})
    assert frame_copy(df, (0, 2), target) is None  # numeric: the general way
    rows, _ = frame_out(df, (0, 2), target)
    assert rows == [(1, Decimal("1.25")), (2, Decimal("0.5"))]
    with pg_conn.transaction():
        write_rows(pg_conn, "priced", target.columns, CopyEncoder(target.copy).encode(rows))
    assert pg_conn.execute("SELECT sum(amount) FROM priced").fetchone() == (Decimal("1.75"),)
    with pytest.raises(
        TransformOutputError, match="'amount': bool values cannot be written to price column"
    ):
        frame_out(df.assign(amount=True), (0, 2), target)
