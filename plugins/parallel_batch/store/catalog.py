"""Key values as JSON, and what the catalog says about a table's key and columns.

Chunk bounds and checkpoints carry keys as JSON (``JSONKey``): integers as ``int``; text and uuid
as ``str``; timestamp, timestamptz, date and numeric keys as their ISO / canonical text. SQL turns
them back into the key's type with ``CAST(%s AS <key type>)``, the type coming from the catalog
(:func:`key_type`), so a key survives the trip exactly (microseconds and UTC offset included).

A key column must be unique on its own (a primary key or a unique index on that column alone)
and NOT NULL: chunks are key ranges ``(lower, upper]`` and batches continue after the last key
read, so a duplicate key would be skipped and a NULL key never read.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import psycopg

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.store.identifiers import column_sql, table_sql

JSONKey = int | str

_TABLE_OID_SQL = "SELECT to_regclass(%s)::oid"

# The key column, its type without modifiers (a cast to "numeric(12,2)" would round) and whether
# a valid, non-partial unique index has it as its only key column.
_KEY_SQL = """
SELECT a.attnotnull,
       format_type(a.atttypid, NULL),
       EXISTS (
           SELECT 1 FROM pg_index i
           WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indisvalid
             AND i.indpred IS NULL AND i.indexprs IS NULL
             AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum
       )
FROM pg_attribute a
WHERE a.attrelid = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped
"""

# A domain's wire format is its base type's: binary COPY and loaders need the base type's oid.
_COLUMNS_SQL = """
SELECT a.attname,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
       format_type(a.atttypid, NULL)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""


class ColumnType(NamedTuple):
    """A column's type as the catalog gives it.

    :param name: the column.
    :param oid: the oid of its type (of the base type for a domain): what travels on the wire.
    :param type_name: its type without modifiers, e.g. ``"numeric"``, ``"bigint"``.
    """

    name: str
    oid: int
    type_name: str


def key_to_json(value: Any) -> JSONKey:
    """Return a key value as JSON: an int stays an int, every other key becomes its text.

    :raises TypeError: for a value that cannot be a key (bool, bytes, None, ...).
    """
    if isinstance(value, bool) or value is None:
        raise TypeError(f"unsupported key value of type {type(value).__name__}")
    if isinstance(value, int | str):
        return value
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        # in UTC, so that a chunk's id does not depend on the session's TimeZone
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    raise TypeError(f"unsupported key value of type {type(value).__name__}")


def table_oid(conn: psycopg.Connection, table: str) -> int:
    """Return the oid of ``table``.

    :raises ConfigurationError: when it does not exist (or is not on the search_path).
    """
    name = table_sql(table).as_string(conn)
    row = conn.execute(_TABLE_OID_SQL, (name,)).fetchone()
    if row is None or row[0] is None:
        raise ConfigurationError(
            f"Table {table!r} does not exist (or its schema is not on the search_path)"
        )
    oid: int = row[0]
    return oid


def key_type(conn: psycopg.Connection, table: str, key_column: str) -> str:
    """Return the type of ``table.key_column`` (e.g. ``"bigint"``, ``"text"``, ``"uuid"``,
    ``"timestamp with time zone"``) after checking that it can serve as a key.

    :raises InvalidIdentifierError: when a name is not a safe identifier.
    :raises ConfigurationError: when the table or the column does not exist, the column is not
        unique on its own, or it allows NULL.
    """
    column_sql(key_column)
    oid = table_oid(conn, table)
    row = conn.execute(_KEY_SQL, (oid, key_column)).fetchone()
    if row is None:
        raise ConfigurationError(f"Column {key_column!r} does not exist in table {table!r}")
    not_null, type_name, unique = row
    if not unique:
        raise ConfigurationError(
            f"Key column {key_column!r} of {table!r} is not unique: it needs a primary key or a "
            "unique index on that column alone (chunks and batches are ranges of the key)"
        )
    if not not_null:
        raise ConfigurationError(
            f"Key column {key_column!r} of {table!r} allows NULL, and a row with a NULL key would "
            f"never be read: make it NOT NULL (ALTER TABLE ... ALTER COLUMN {key_column} SET NOT "
            "NULL)"
        )
    result: str = type_name
    return result


def column_types(conn: psycopg.Connection, table: str, columns: Sequence[str]) -> list[ColumnType]:
    """Return the types of ``columns`` of ``table``, in the order given.

    :raises ConfigurationError: when the table or one of the columns does not exist.
    """
    for column in columns:
        column_sql(column)
    oid = table_oid(conn, table)
    found = {
        name: ColumnType(name, type_oid, type_name)
        for name, type_oid, type_name in conn.execute(_COLUMNS_SQL, (oid, list(columns)))
    }
    missing = [c for c in columns if c not in found]
    if missing:
        raise ConfigurationError(
            f"Column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"{'do' if len(missing) > 1 else 'does'} not exist in table {table!r}"
        )
    return [found[c] for c in columns]


class TableColumn(NamedTuple):
    """A column as a target or a typed reader needs it.

    :param name: the column.
    :param oid: its type's oid (of the base type for a domain).
    :param type_name: its type without modifiers (``numeric``).
    :param full_type: its type with modifiers (``numeric(12,2)``, ``character varying(20)``).
    :param not_null: NOT NULL.
    :param has_default: a DEFAULT (or an identity BY DEFAULT).
    :param generated: GENERATED ALWAYS (an identity or a stored expression): never written.
    """

    name: str
    oid: int
    type_name: str
    full_type: str
    not_null: bool
    has_default: bool
    generated: bool


_TABLE_COLUMNS_SQL = """
SELECT a.attname,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
       format_type(a.atttypid, NULL), format_type(a.atttypid, a.atttypmod),
       a.attnotnull, a.atthasdef OR a.attidentity = 'd',
       a.attidentity = 'a' OR a.attgenerated <> ''
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# The columns of each valid, non-partial unique index (the primary key first).
_UNIQUE_KEYS_SQL = """
SELECT array_agg(a.attname ORDER BY k.ord)
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey[:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
  AND i.indexprs IS NULL
GROUP BY i.indexrelid, i.indisprimary
ORDER BY i.indisprimary DESC, i.indexrelid
"""


def table_columns(conn: psycopg.Connection, table: str) -> list[TableColumn]:
    """Return every column of ``table`` in table order.

    :raises ConfigurationError: when the table does not exist.
    """
    oid = table_oid(conn, table)
    return [TableColumn(*row) for row in conn.execute(_TABLE_COLUMNS_SQL, (oid,))]


def unique_keys(conn: psycopg.Connection, table: str) -> list[tuple[str, ...]]:
    """Return the column lists of ``table``'s unique keys, its primary key first.

    :raises ConfigurationError: when the table does not exist.
    """
    oid = table_oid(conn, table)
    return [tuple(row[0]) for row in conn.execute(_UNIQUE_KEYS_SQL, (oid,))]
