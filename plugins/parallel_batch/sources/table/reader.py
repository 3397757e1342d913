"""Read a chunk of a table in key order, batch by batch, with no snapshot held between batches.

Each batch is one short statement on an autocommit connection (keyset pagination)::

    SELECT <columns> FROM <table>
    WHERE key > <last key read> AND key <= <chunk upper> [AND <filter>]
    ORDER BY key LIMIT <batch_rows>

so a reader never keeps a transaction open for the life of a chunk (which would hold back
VACUUM on a busy table), and it resumes anywhere: after a checkpoint it starts at the
checkpoint's key. Read variants measured on demo.events (1,000,000 rows, 5 columns), batches of
5,000-20,000 rows, in rows/s (2 shared cores; ``python -m bench dataplane`` repeats this):

==========================================================  ===============
plain SELECT, keyset pagination (text results)              245,000-252,000
plain SELECT, keyset pagination (binary results)            216,000-230,000
a server-side cursor re-opened per batch (binary)           215,000-232,000
binary ``COPY (SELECT ... LIMIT n) TO STDOUT`` per batch    114,000-126,000
==========================================================  ===============

COPY TO STDOUT hands rows over one libpq call at a time (about 3 us of Python per row); a
cursor per batch costs a BEGIN/COMMIT more for nothing. So: a plain SELECT. Its result format
follows the columns: psycopg's binary numeric loader costs about 1.7 us per value against 0.75 us
for text, while integers, text and timestamptz load faster in binary (1.9 against 2.2 us per row
of id, user_id, payload, created_at), so results come in text when a column is numeric and in
binary otherwise. A session with ``TimeZone=UTC`` loads timestamptz values faster still (psycopg
then uses the fixed UTC tzinfo instead of a ZoneInfo): 0.95 against 1.9 us for that row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from parallel_batch.sources.table.planner import RowFilter, TableChunk
from parallel_batch.store.catalog import JSONKey, column_types, key_to_json, key_type
from parallel_batch.store.identifiers import column_sql, columns_sql, table_sql

log = logging.getLogger(__name__)

# Types whose text results load faster than their binary ones in psycopg (see the docstring).
_TEXT_RESULT_TYPE_OIDS = frozenset({psycopg.adapters.types["numeric"].oid})
# The session time zone of reading connections (see the docstring): timestamptz values reach the
# transform as the same instants, in UTC, whatever the server's TimeZone setting.
READER_TIMEZONE = "UTC"


def use_reader_timezone(conn: psycopg.Connection) -> None:
    """Set the session's TimeZone to :data:`READER_TIMEZONE` (psycopg then loads and dumps
    timestamptz values with the fixed ``datetime.UTC`` instead of a ``ZoneInfo``)."""
    if conn.info.parameter_status("TimeZone") != READER_TIMEZONE:
        conn.execute("SELECT set_config('TimeZone', %s, false)", (READER_TIMEZONE,))


def binary_results(conn: psycopg.Connection, table: str, columns: Sequence[str]) -> bool:
    """Whether to fetch these columns in binary: yes unless one of them loads faster as text."""
    return not any(c.oid in _TEXT_RESULT_TYPE_OIDS for c in column_types(conn, table, columns))


def read_batches(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[str],
    key_column: str,
    *,
    chunk: TableChunk,
    after_key: JSONKey | None,
    batch_rows: int,
    row_filter: RowFilter | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """Yield the rows of ``chunk`` in key order, ``batch_rows`` at a time.

    Arguments and the table are checked when this is called, before the first batch.

    :param conn: an autocommit connection, used only by this iterator while it runs.
    :param table: ``"schema.table"`` or ``"table"``.
    :param columns: the columns of each row tuple, in order; must include ``key_column``.
    :param key_column: the unique, NOT NULL key the chunk is a range of.
    :param chunk: the key range ``(lower, upper]`` to read.
    :param after_key: the last key already processed (a checkpoint), or None; reading starts
        after the greater of it and ``chunk.lower``.
    :param batch_rows: rows per batch; the last batch may be shorter.
    :param row_filter: read only the rows this filter selects.
    :raises ValueError: for invalid arguments or a connection that is not in autocommit mode.
    :raises ConfigurationError: when the table, a column or the key is missing or unfit.
    """
    if batch_rows <= 0:
        raise ValueError("batch_rows must be greater than 0")
    if not columns:
        raise ValueError("columns must not be empty")
    if key_column not in columns:
        raise ValueError(f"columns must include the key column {key_column!r}")
    if not conn.autocommit:
        raise ValueError(
            "read_batches needs an autocommit connection (psycopg.connect(..., autocommit=True)): "
            "otherwise the first batch opens a transaction that lasts as long as the chunk"
        )
    key = column_sql(key_column)
    select = sql.SQL("SELECT {} FROM {}").format(columns_sql(columns), table_sql(table))
    cast = sql.SQL(key_type(conn, table, key_column))  # a type name from the catalog
    binary = binary_results(conn, table, columns)

    def key_after(param: str) -> sql.Composable:
        return sql.SQL("{} > CAST({} AS {})").format(key, sql.Placeholder(param), cast)

    common: list[sql.Composable] = []
    params: dict[str, Any] = {"batch_rows": batch_rows}
    if chunk.upper is not None:
        common.append(sql.SQL("{} <= CAST(%(upper)s AS {})").format(key, cast))
        params["upper"] = chunk.upper
    if row_filter is not None:
        conditions, filter_params = row_filter.conditions()
        common.extend(conditions)
        params.update(filter_params)
    start: list[sql.Composable] = []
    if chunk.lower is not None:
        start.append(key_after("lower"))
        params["lower"] = chunk.lower
    if after_key is not None:
        start.append(key_after("after"))
        params["after"] = after_key

    def query(conditions: list[sql.Composable]) -> sql.Composed:
        where = (
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        )
        return sql.SQL("{}{} ORDER BY {} LIMIT %(batch_rows)s").format(select, where, key)

    first = query(start + common)
    following = query([key_after("last"), *common])
    key_index = list(columns).index(key_column)
    return _batches(conn, first, following, params, key_index, batch_rows, binary)


def _batches(
    conn: psycopg.Connection,
    first: sql.Composed,
    following: sql.Composed,
    params: dict[str, Any],
    key_index: int,
    batch_rows: int,
    binary: bool,
) -> Iterator[list[tuple[Any, ...]]]:
    statement = first
    with conn.cursor(binary=binary) as cur:
        while True:
            # prepare=False: each batch is planned with its own bounds (a generic plan may
            # pick the filter column's index and sort the whole interval per batch)
            rows = cur.execute(statement, params, prepare=False).fetchall()
            if rows:
                yield rows
            if len(rows) < batch_rows:
                return
            statement = following
            params["last"] = key_to_json(rows[-1][key_index])
