"""Tests of the table chunk planner on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from parallel_batch.exceptions import ConfigurationError, InvalidIdentifierError
from parallel_batch.sources.table.planner import RowFilter, TableChunk, plan_table_chunks
from parallel_batch.store.catalog import key_type

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _make_table(
    conn: psycopg.Connection, key_type_sql: str, keys_sql: str, params: tuple[Any, ...] = ()
) -> None:
    """Create table ``t(k <type> primary key, created_at, v)`` from a query of keys (column k)."""
    conn.execute("DROP TABLE IF EXISTS t")
    conn.execute(
        f"CREATE TABLE t (k {key_type_sql} PRIMARY KEY, created_at timestamptz NOT NULL, v int)"
    )
    conn.execute(
        "INSERT INTO t (k, created_at, v) SELECT k, %s + (row_number() OVER (ORDER BY k)"
        " * interval '1 minute'), 1 FROM (" + keys_sql + ") AS keys",
        (T0, *params),
    )
    conn.execute("ANALYZE t")


def _range_count(
    conn: psycopg.Connection, chunk: TableChunk, row_filter: RowFilter | None = None
) -> int:
    cast = sql.SQL(key_type(conn, "t", "k"))
    conditions: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {}
    if chunk.lower is not None:
        conditions.append(sql.SQL("k > CAST(%(lower)s AS {})").format(cast))
        params["lower"] = chunk.lower
    if chunk.upper is not None:
        conditions.append(sql.SQL("k <= CAST(%(upper)s AS {})").format(cast))
        params["upper"] = chunk.upper
    if row_filter is not None:
        filter_conditions, filter_params = row_filter.conditions()
        conditions += filter_conditions
        params.update(filter_params)
    query = sql.SQL("SELECT count(*) FROM t WHERE {}").format(sql.SQL(" AND ").join(conditions))
    row = conn.execute(query, params).fetchone()
    assert row is not None
    count: int = row[0]
    return count


def _check_partition(
    conn: psycopg.Connection, chunks: list[TableChunk], row_filter: RowFilter | None = None
) -> list[int]:
    """Assert the chunks tile the key space and hold the rows they claim; return their rows."""
    assert chunks, "expected at least one chunk"
    assert chunks[0].lower is None
    assert chunks[-1].upper is None
    for before, after in itertools.pairwise(chunks):
        assert before.upper == after.lower
    counts = [_range_count(conn, c, row_filter) for c in chunks]
    assert counts == [c.rows for c in chunks]
    total = _range_count(conn, TableChunk(None, None, 0), row_filter)
    assert sum(counts) == total
    return counts


def _assert_even(counts: list[int]) -> None:
    assert max(counts) - min(counts) <= max(1, max(counts) // 100), counts


def test_uniform_integer_keys_split_into_equal_chunks(pg_conn: psycopg.Connection) -> None:
    """Test that dense integer keys split into the requested number of equal chunks."""
    _make_table(pg_conn, "bigint", "SELECT generate_series(1, 10000) AS k")
    chunks = plan_table_chunks(pg_conn, "t", "k", chunks=8)
    assert [c.rows for c in chunks] == [1250] * 8
    assert [c.upper for c in chunks] == [1250, 2500, 3750, 5000, 6250, 7500, 8750, None]
    _check_partition(pg_conn, chunks)


def test_skewed_keys_split_evenly_by_rows(pg_conn: psycopg.Connection) -> None:
    """Test that 90% of rows in 1% of the key space still give chunks of equal rows."""
    _make_table(
        pg_conn,
        "bigint",
        "SELECT generate_series(1, 18000) AS k"  # 90% of the rows in [1, 20000)
        " UNION ALL SELECT 20000 + i * 990 FROM generate_series(1, 2000) AS i",  # up to ~2M
    )
    chunks = plan_table_chunks(pg_conn, "t", "k", chunk_rows=1000)
    assert len(chunks) == 20
    _assert_even(_check_partition(pg_conn, chunks))
    # what an even split of min..max would have given: one range with ~90% of the rows
    even_first = _range_count(pg_conn, TableChunk(None, 20000 + 2000 * 990 // 20, 0))
    assert even_first > 10 * 1000


def test_sparse_keys_with_huge_gaps(pg_conn: psycopg.Connection) -> None:
    """Test that keys far apart (and negative ones) split into equal chunks."""
    _make_table(
        pg_conn,
        "bigint",
        "SELECT i * 1000000000000 AS k FROM generate_series(-3000, 3000) AS i"
        " UNION ALL SELECT 9223372036854775807",
    )
    chunks = plan_table_chunks(pg_conn, "t", "k", chunks=7)
    assert len(chunks) == 7
    counts = _check_partition(pg_conn, chunks)
    _assert_even(counts)
    assert sum(counts) == 6002


def test_text_keys_with_awkward_values(pg_conn: psycopg.Connection) -> None:
    """Test that text keys split evenly and that quotes and commas keep chunk ids unambiguous."""
    _make_table(
        pg_conn,
        "text",
        "SELECT md5(i::text) AS k FROM generate_series(1, 3000) AS i"
        " UNION ALL SELECT unnest(ARRAY['a,b', 'say \"hi\"', '-inf', 'ü'])",
    )
    chunks = plan_table_chunks(pg_conn, "t", "k", chunks=5)
    assert all(isinstance(c.upper, str) for c in chunks[:-1])
    _assert_even(_check_partition(pg_conn, chunks))
    ids = [c.chunk_id for c in chunks]
    assert len(set(ids)) == 5
    assert TableChunk("a,b", "-inf", 1).chunk_id == '("a,b","-inf"]'
    assert TableChunk(None, 'say "hi"', 1).chunk_id == '(-inf,"say \\"hi\\""]'


def test_uuid_keys(pg_conn: psycopg.Connection) -> None:
    """Test that uuid keys split evenly and travel as their canonical text."""
    _make_table(pg_conn, "uuid", "SELECT md5(i::text)::uuid AS k FROM generate_series(1, 2000) i")
    chunks = plan_table_chunks(pg_conn, "t", "k", chunk_rows=300)
    assert len(chunks) == 7
    assert isinstance(chunks[0].upper, str) and len(chunks[0].upper) == 36
    _assert_even(_check_partition(pg_conn, chunks))


@pytest.mark.parametrize("type_name", ["timestamptz", "timestamp", "date", "numeric(12,2)"])
def test_temporal_and_numeric_keys_round_trip_exactly(
    pg_conn: psycopg.Connection, type_name: str
) -> None:
    """Test that timestamp, date and numeric bounds survive JSON and the cast back exactly."""
    keys = {
        "timestamptz": "SELECT %s::timestamptz + i * interval '1.000001 second' AS k",
        "timestamp": "SELECT %s::timestamp + i * interval '1.000001 second' AS k",
        "date": "SELECT %s::date + i AS k",
        "numeric(12,2)": "SELECT i / 100.0 + length(%s::text) AS k",
    }[type_name]
    pg_conn.execute("DROP TABLE IF EXISTS t")
    pg_conn.execute(f"CREATE TABLE t (k {type_name} PRIMARY KEY, created_at timestamptz, v int)")
    pg_conn.execute(
        f"INSERT INTO t (k, created_at) SELECT k, now() FROM ({keys}"
        " FROM generate_series(1, 2500) AS i) AS s",
        (T0,),
    )
    chunks = plan_table_chunks(pg_conn, "t", "k", chunks=6)
    assert all(isinstance(c.upper, str) for c in chunks[:-1])
    assert [c.rows for c in chunks] == [417, 417, 416, 417, 417, 416]
    _check_partition(pg_conn, chunks)


def test_empty_table_gives_no_chunks(pg_conn: psycopg.Connection) -> None:
    """Test that an empty table (or a filter matching nothing) plans no chunks."""
    _make_table(pg_conn, "bigint", "SELECT 1 AS k WHERE false")
    assert plan_table_chunks(pg_conn, "t", "k", chunk_rows=10) == []
    _make_table(pg_conn, "bigint", "SELECT generate_series(1, 100) AS k")
    late = RowFilter("created_at", T0 + dt.timedelta(days=365), None)
    assert plan_table_chunks(pg_conn, "t", "k", chunks=4, row_filter=late) == []


def test_filter_counts_only_matching_rows(pg_conn: psycopg.Connection) -> None:
    """Test that a filtered plan splits the matching rows evenly and counts only those."""
    # 6000 rows a minute apart; skewed keys so that the filter's rows are not a key range
    _make_table(pg_conn, "bigint", "SELECT (i * i) AS k FROM generate_series(1, 6000) AS i")
    pg_conn.execute("UPDATE t SET created_at = %s + (k %% 7) * interval '1 hour'", (T0,))
    window = RowFilter("created_at", T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=5))
    chunks = plan_table_chunks(pg_conn, "t", "k", chunk_rows=500, row_filter=window)
    counts = _check_partition(pg_conn, chunks, window)
    assert sum(counts) == sum(1 for i in range(1, 6001) if 2 <= (i * i) % 7 < 5)
    _assert_even(counts)
    assert max(counts) <= 500
    open_ended = RowFilter("created_at", None, T0 + dt.timedelta(hours=1))
    counts = _check_partition(
        pg_conn, plan_table_chunks(pg_conn, "t", "k", chunks=3, row_filter=open_ended), open_ended
    )
    assert sum(counts) == sum(1 for i in range(1, 6001) if (i * i) % 7 == 0)


def test_filter_without_bounds_selects_every_row(pg_conn: psycopg.Connection) -> None:
    """Test that a RowFilter with neither bound plans the whole table."""
    _make_table(pg_conn, "bigint", "SELECT generate_series(1, 900) AS k")
    chunks = plan_table_chunks(pg_conn, "t", "k", chunks=3, row_filter=RowFilter("created_at"))
    assert [c.rows for c in chunks] == [300, 300, 300]


def test_max_chunks_caps_the_plan(pg_conn: psycopg.Connection) -> None:
    """Test that no plan exceeds max_chunks: chunk_rows grows instead."""
    _make_table(pg_conn, "bigint", "SELECT generate_series(1, 5000) AS k")
    chunks = plan_table_chunks(pg_conn, "t", "k", chunk_rows=1, max_chunks=16)
    assert len(chunks) == 16
    _assert_even(_check_partition(pg_conn, chunks))
    assert len(plan_table_chunks(pg_conn, "t", "k", chunks=100, max_chunks=10)) == 10
    assert len(plan_table_chunks(pg_conn, "t", "k", chunk_rows=10)) == 500


def test_more_chunks_than_rows_gives_one_row_each(pg_conn: psycopg.Connection) -> None:
    """Test that asking for more chunks than rows gives one chunk per row."""
    _make_table(pg_conn, "bigint", "SELECT unnest(ARRAY[5, 50, 500]) AS k")
    chunks = plan_table_chunks(pg_conn, "t", "k", chunks=10)
    assert [(c.lower, c.upper, c.rows) for c in chunks] == [
        (None, 5, 1),
        (5, 50, 1),
        (50, None, 1),
    ]
    single = plan_table_chunks(pg_conn, "t", "k", chunks=1)
    assert single == [TableChunk(None, None, 3)]
    assert single[0].chunk_id == "(-inf,+inf]"


def test_chunk_ids_are_stable_across_replans(pg_conn: psycopg.Connection) -> None:
    """Test that planning the same data twice gives the same chunk ids, and ids ignore rows."""
    _make_table(pg_conn, "bigint", "SELECT generate_series(1, 3000, 3) AS k")
    first = plan_table_chunks(pg_conn, "t", "k", chunks=9)
    second = plan_table_chunks(pg_conn, "t", "k", chunks=9)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in second]
    assert first[1].chunk_id == f"({first[0].upper},{first[1].upper}]"
    assert TableChunk(1, 2, 5).chunk_id == TableChunk(1, 2, 7).chunk_id == "(1,2]"


def test_timestamptz_chunk_ids_do_not_depend_on_the_session_time_zone(pg_url: str) -> None:
    """Test that plans from sessions in different time zones give the same UTC chunk ids."""
    ids = []
    for zone in ("UTC", "Asia/Tokyo", "America/St_Johns"):
        with psycopg.connect(pg_url, autocommit=True, options=f"-c TimeZone={zone}") as conn:
            if zone == "UTC":
                _make_table(
                    conn,
                    "timestamptz",
                    "SELECT %s::timestamptz + i * interval '1 hour' AS k"
                    " FROM generate_series(1, 100) AS i",
                    (T0,),
                )
            ids.append([c.chunk_id for c in plan_table_chunks(conn, "t", "k", chunks=4)])
    assert ids[0] == ids[1] == ids[2]
    assert ids[0][0] == '(-inf,"2024-01-02T01:00:00+00:00"]'


def test_plan_in_a_caller_transaction_and_on_a_non_autocommit_connection(pg_url: str) -> None:
    """Test that planning works inside a caller's transaction and leaves no transaction open."""
    with psycopg.connect(pg_url) as conn:  # not autocommit
        _make_table(conn, "bigint", "SELECT generate_series(1, 100) AS k")
        conn.commit()
        assert len(plan_table_chunks(conn, "t", "k", chunks=4)) == 4
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.transaction():
        assert len(plan_table_chunks(conn, "t", "k", chunks=2)) == 2
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def test_chunk_and_filter_round_trip_through_dicts() -> None:
    """Test that TableChunk and RowFilter survive to_dict/from_dict (JSON-ready data)."""
    chunk = TableChunk("2024-01-01T00:00:00+00:00", None, 12)
    assert chunk.to_dict()["chunk_id"] == '("2024-01-01T00:00:00+00:00",+inf]'
    assert TableChunk.from_dict(chunk.to_dict()) == chunk
    row_filter = RowFilter("created_at", T0, T0 + dt.timedelta(days=1))
    assert row_filter.to_dict() == {
        "column": "created_at",
        "start": "2024-01-01T00:00:00+00:00",
        "end": "2024-01-02T00:00:00+00:00",
    }
    assert RowFilter.from_dict(row_filter.to_dict()) == row_filter
    assert RowFilter.from_dict({"column": "c"}) == RowFilter("c")


def test_invalid_arguments_are_rejected(pg_conn: psycopg.Connection) -> None:
    """Test that bad arguments fail up front with exact messages."""
    _make_table(pg_conn, "bigint", "SELECT generate_series(1, 10) AS k")
    with pytest.raises(ValueError, match="give exactly one of chunk_rows and chunks"):
        plan_table_chunks(pg_conn, "t", "k")
    with pytest.raises(ValueError, match="give exactly one of chunk_rows and chunks"):
        plan_table_chunks(pg_conn, "t", "k", chunk_rows=1, chunks=1)
    with pytest.raises(ValueError, match="chunk_rows must be greater than 0"):
        plan_table_chunks(pg_conn, "t", "k", chunk_rows=0)
    with pytest.raises(ValueError, match="chunks must be greater than 0"):
        plan_table_chunks(pg_conn, "t", "k", chunks=-1)
    with pytest.raises(ValueError, match="max_chunks must be greater than 0"):
        plan_table_chunks(pg_conn, "t", "k", chunks=1, max_chunks=0)
    with pytest.raises(ValueError, match="row_filter start must be before its end"):
        RowFilter("created_at", T0, T0)
    with pytest.raises(ValueError, match="both be timezone-aware or both naive"):
        RowFilter("created_at", T0, dt.datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="row_filter start must be a datetime or None"):
        RowFilter("created_at", "2024-01-01")
    with pytest.raises(ValueError, match="chunk rows must be an int of 0 or more"):
        TableChunk(None, None, -1)
    with pytest.raises(ValueError, match="chunk lower must be an int, a str or None"):
        TableChunk(1.5, None, 1)


def test_unfit_tables_and_keys_are_rejected(pg_conn: psycopg.Connection) -> None:
    """Test that a missing table or column, a non-unique or nullable key give clear errors."""
    pg_conn.execute(
        "CREATE TABLE loose (a int, b int, c int UNIQUE, d int NOT NULL, PRIMARY KEY (a, b))"
    )
    pg_conn.execute("CREATE UNIQUE INDEX ON loose (d) WHERE d > 0")
    with pytest.raises(ConfigurationError, match="Table 'nope' does not exist"):
        plan_table_chunks(pg_conn, "nope", "id", chunks=2)
    with pytest.raises(ConfigurationError, match="Column 'zz' does not exist in table 'loose'"):
        plan_table_chunks(pg_conn, "loose", "zz", chunks=2)
    with pytest.raises(ConfigurationError, match="Key column 'a' of 'loose' is not unique"):
        plan_table_chunks(pg_conn, "loose", "a", chunks=2)  # leads a two-column key
    with pytest.raises(ConfigurationError, match="Key column 'd' of 'loose' is not unique"):
        plan_table_chunks(pg_conn, "loose", "d", chunks=2)  # partial unique index
    with pytest.raises(ConfigurationError, match="Key column 'c' of 'loose' allows NULL"):
        plan_table_chunks(pg_conn, "loose", "c", chunks=2)
    with pytest.raises(InvalidIdentifierError, match="Invalid table name"):
        plan_table_chunks(pg_conn, 'loose"; DROP TABLE loose; --', "a", chunks=2)
    with pytest.raises(InvalidIdentifierError, match="Invalid column name"):
        plan_table_chunks(pg_conn, "loose", "a; DELETE FROM loose", chunks=2)
    with pytest.raises(InvalidIdentifierError, match="Invalid column name"):
        RowFilter("created_at) OR (1=1")
    assert pg_conn.execute("SELECT to_regclass('loose') IS NOT NULL").fetchone() == (True,)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    keys=st.sets(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=300),
    chunks=st.integers(1, 40),
)
def test_any_key_set_is_partitioned_exactly(
    pg_conn: psycopg.Connection, keys: set[int], chunks: int
) -> None:
    """Test that for any set of keys every row lands in exactly one chunk of near-equal size."""
    pg_conn.execute("CREATE TABLE IF NOT EXISTS h (k bigint PRIMARY KEY)")
    pg_conn.execute("TRUNCATE h")
    with pg_conn.cursor().copy("COPY h (k) FROM STDIN") as copy:
        for key in keys:
            copy.write_row((key,))
    plan = plan_table_chunks(pg_conn, "h", "k", chunks=chunks)
    ordered = sorted(keys)
    assert len(plan) == min(chunks, len(keys))
    seen = 0
    for chunk in plan:
        inside = [
            k
            for k in ordered
            if (chunk.lower is None or k > int(chunk.lower))
            and (chunk.upper is None or k <= int(chunk.upper))
        ]
        assert len(inside) == chunk.rows
        seen += len(inside)
    assert seen == len(keys)
    assert max(c.rows for c in plan) - min(c.rows for c in plan) <= 1
