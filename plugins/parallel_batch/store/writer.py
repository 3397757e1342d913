"""Write rows into a target table with binary COPY, inside the caller's transaction.

Three modes::

    copy    COPY target (columns) FROM STDIN (FORMAT BINARY)
    upsert  COPY into a temporary table, then
            INSERT INTO target SELECT ... ON CONFLICT (keys) DO UPDATE SET <other columns>
    auto    SAVEPOINT; copy; on a unique violation ROLLBACK TO SAVEPOINT and upsert

Binary COPY applies no casts, so each value is sent in its column's exact type: the target's
column types are looked up once per connection and table, then cached. A column whose type
psycopg cannot send in binary (an enum, a nested domain, ...) makes that table use text COPY.

Rows come as Python values, or already encoded (:class:`~parallel_batch.store.copy_data.
CopyData`, made by a worker process with the target's :func:`copy_format`): those bytes are sent
as they are, in one ``Copy.write``, in every mode.

The writer never commits: the caller commits the rows together with its checkpoint (exactly
once) or rolls everything back.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import psycopg
from psycopg import errors, sql
from psycopg.pq import Format, TransactionStatus

from parallel_batch.store.catalog import JSONKey, column_types
from parallel_batch.store.copy_data import CopyData, CopyFormat
from parallel_batch.store.identifiers import column_sql, columns_sql, table_sql

log = logging.getLogger(__name__)

WriteMode = Literal["copy", "upsert", "auto"]
Rows = Sequence[Sequence[Any]] | CopyData
WRITE_MODES: tuple[WriteMode, ...] = ("copy", "upsert", "auto")

_SAVEPOINT = sql.Identifier("parallel_batch_write")


class _Target(NamedTuple):
    """How rows are sent to one target table's columns."""

    type_oids: list[int]  # for COPY's set_types (binary only)
    binary: bool
    type_names: dict[str, str]  # column -> type without modifiers, for casts


# connection -> (table, columns) -> _Target; dropped with the connection.
_TARGETS: weakref.WeakKeyDictionary[psycopg.Connection, dict[tuple[str, tuple[str, ...]], _Target]]
_TARGETS = weakref.WeakKeyDictionary()


def _target(conn: psycopg.Connection, table: str, columns: tuple[str, ...]) -> _Target:
    cache = _TARGETS.setdefault(conn, {})
    found = cache.get((table, columns))
    if found is None:
        types = column_types(conn, table, columns)
        oids = [t.oid for t in types]
        dumpers = conn.adapters
        try:
            for oid in oids:
                dumpers.get_dumper_by_oid(oid, Format.BINARY)
            binary = True
        except psycopg.ProgrammingError:
            log.info("Writing to %s with text COPY: a column type has no binary dumper", table)
            binary = False
        found = _Target(oids, binary, {t.name: t.type_name for t in types})
        cache[(table, columns)] = found
    return found


def copy_format(conn: psycopg.Connection, table: str, columns: Sequence[str]) -> CopyFormat:
    """Return how rows must be encoded for ``table``'s ``columns`` (types and COPY format), for
    a :class:`~parallel_batch.store.copy_data.CopyEncoder` in another process.

    :raises ConfigurationError: when the table or a column does not exist.
    """
    names = tuple(columns)
    for name in names:
        column_sql(name)
    target = _target(conn, table, names)
    return CopyFormat(tuple(target.type_oids), target.binary)


def _check_transaction(conn: psycopg.Connection, what: str) -> None:
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        raise ValueError(
            f"{what} runs inside the caller's transaction and never commits: open one first "
            "(with conn.transaction(): ...) or use a connection that is not in autocommit mode"
        )


def _copy(
    conn: psycopg.Connection,
    table: sql.Composable,
    columns: tuple[str, ...],
    target: _Target,
    rows: Rows,
) -> int:
    if isinstance(rows, CopyData) and rows.binary != target.binary:
        raise ValueError(
            f"the rows were encoded for {'binary' if rows.binary else 'text'} COPY, but the "
            f"target takes {'binary' if target.binary else 'text'}: encode them with its "
            "copy_format()"
        )
    statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        table,
        columns_sql(columns),
        sql.SQL(" (FORMAT BINARY)" if target.binary else ""),
    )
    with conn.cursor() as cur:
        with cur.copy(statement) as copy:
            if isinstance(rows, CopyData):
                for data in rows.chunks():
                    copy.write(data)
            else:
                if target.binary:
                    copy.set_types(target.type_oids)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
        return cur.rowcount if cur.rowcount >= 0 else len(rows)


def _upsert(
    conn: psycopg.Connection,
    table: str,
    columns: tuple[str, ...],
    key_columns: tuple[str, ...],
    target: _Target,
    rows: Rows,
) -> int:
    # One temporary table per target and column list, kept for the session; ON COMMIT DELETE
    # ROWS empties it at each commit, the DELETE below within a transaction of several writes.
    digest = hashlib.sha1(repr((table, columns)).encode(), usedforsecurity=False).hexdigest()
    staging = sql.Identifier(f"parallel_batch_upsert_{digest[:24]}")
    column_list = columns_sql(columns)
    conn.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS"
            " AS SELECT {} FROM {} WITH NO DATA"
        ).format(staging, column_list, table_sql(table))
    )
    _copy(conn, staging, columns, target, rows)
    # Updating the key columns to themselves when there is nothing else to update keeps one
    # statement shape, and counts an existing row as written.
    updated = [c for c in columns if c not in key_columns] or list(key_columns)
    statement = sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging}"
        " ON CONFLICT ({keys}) DO UPDATE SET {updates}"
    ).format(
        table=table_sql(table),
        columns=column_list,
        staging=staging,
        keys=columns_sql(key_columns),
        updates=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(column_sql(c)) for c in updated
        ),
    )
    written = conn.execute(statement).rowcount
    conn.execute(sql.SQL("DELETE FROM {}").format(staging))
    return written


def write_rows(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[str],
    rows: Rows,
    *,
    mode: WriteMode = "auto",
    key_columns: Sequence[str] = ("id",),
) -> int:
    """Write ``rows`` into ``table`` in the caller's open transaction; never commit.

    :param conn: a connection in a transaction (not autocommit, or inside ``conn.transaction()``).
    :param table: ``"schema.table"`` or ``"table"``.
    :param columns: the target columns, in the order of each row's values.
    :param rows: the rows, each value of the Python type psycopg dumps to the column's type;
        or rows already encoded with the target's :func:`copy_format`.
    :param mode: ``"copy"`` (plain binary COPY; a duplicate key fails), ``"upsert"`` (insert or
        update by ``key_columns``) or ``"auto"`` (COPY, falling back to upsert on a duplicate).
    :param key_columns: the columns of the target's primary key or unique constraint, for upsert.
        A batch must not hold the same key twice.
    :returns: the rows written (inserted or updated).
    :raises ValueError: for invalid arguments or a connection outside a transaction.
    :raises ConfigurationError: when the table or a column does not exist.
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"mode must be one of {', '.join(WRITE_MODES)}, not {mode!r}")
    names = tuple(columns)
    keys = tuple(key_columns)
    if not names:
        raise ValueError("columns must not be empty")
    table_ident = table_sql(table)
    for name in (*names, *keys):
        column_sql(name)
    if mode != "copy":
        if not keys:
            raise ValueError("key_columns must not be empty")
        missing = [k for k in keys if k not in names]
        if missing:
            raise ValueError(f"key_columns must be among the columns: {missing[0]!r} is not")
    _check_transaction(conn, "write_rows")
    if not rows:
        return 0
    target = _target(conn, table, names)
    if mode == "copy":
        return _copy(conn, table_ident, names, target, rows)
    if mode == "upsert":
        return _upsert(conn, table, names, keys, target, rows)
    conn.execute(sql.SQL("SAVEPOINT {}").format(_SAVEPOINT))
    try:
        written = _copy(conn, table_ident, names, target, rows)
    except errors.UniqueViolation:
        conn.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(_SAVEPOINT))
        conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(_SAVEPOINT))
        log.debug("Rows already in %s: upserting the batch of %d rows", table, len(rows))
        return _upsert(conn, table, names, keys, target, rows)
    conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(_SAVEPOINT))
    return written


def delete_key_range(
    conn: psycopg.Connection,
    table: str,
    key_column: str,
    lower: JSONKey | None,
    upper: JSONKey | None,
) -> int:
    """Delete the rows of ``table`` whose key is in ``(lower, upper]``, in the caller's transaction.

    None bounds are open: ``(None, None]`` is the whole table. Used by full refresh.

    :returns: the rows deleted.
    :raises ValueError: for a connection outside a transaction.
    :raises ConfigurationError: when the table or the column does not exist.
    """
    key = column_sql(key_column)
    table_ident = table_sql(table)
    _check_transaction(conn, "delete_key_range")
    type_name = _target(conn, table, (key_column,)).type_names[key_column]
    cast = sql.SQL(type_name)  # a type name from the catalog
    conditions: list[sql.Composable] = []
    params: list[JSONKey] = []
    if lower is not None:
        conditions.append(sql.SQL("{} > CAST(%s AS {})").format(key, cast))
        params.append(lower)
    if upper is not None:
        conditions.append(sql.SQL("{} <= CAST(%s AS {})").format(key, cast))
        params.append(upper)
    statement = sql.SQL("DELETE FROM {}").format(table_ident)
    if conditions:
        statement += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)
    return conn.execute(statement, params).rowcount
