"""A table as a job's source: key-range chunks, key-range batches, rows read by key.

::

    TableSource(table, key_column, columns, row_filter)      stored with the job as JSON
        plan()            -> key ranges of equal rows (planner.plan_table_chunks)
        chunk_reader()    -> TableChunkReader: the chunk's statements (ranges.RangeReader)
            batches(after)    batch ranges after the checkpoint key, one index scan each
            read(ref)         SELECT ... WHERE key > lower AND key <= upper, on this process's
                              own connection (a pool worker keeps one, opened on first use);
                              for a dataframe transform one array per column (columns.py)
            split(ref, k)     a range cut into k ranges of equal rows

Every statement is short and autocommit: no snapshot is held between batches.
"""

from __future__ import annotations

import atexit
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallel_batch.core.source import KeyRange, ReadBatch, Row, Sizing
from parallel_batch.sources.table.planner import RowFilter, TableChunk, plan_table_chunks
from parallel_batch.sources.table.ranges import BatchRange, RangeReader
from parallel_batch.sources.table.reader import use_reader_timezone
from parallel_batch.store.catalog import JSONKey, column_types, key_to_json, key_type, table_columns
from parallel_batch.store.deadletters import StoredDeadLetter
from parallel_batch.store.identifiers import column_sql, columns_sql, parse_table, table_sql

__all__ = ["TableChunkReader", "TableSource", "reader_connection"]

READER_APPLICATION_NAME = "parallel_batch reader"

# This process's reading connections, by conninfo (a pool worker's, or the task's own).
_connections: dict[str, psycopg.Connection] = {}


def reader_connection(conninfo: str) -> psycopg.Connection:
    """This process's autocommit reading connection to ``conninfo`` (TimeZone UTC), opened on
    first use and replaced when broken."""
    conn = _connections.get(conninfo)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(conninfo, autocommit=True, application_name=READER_APPLICATION_NAME)
        try:
            use_reader_timezone(conn)
        except BaseException:
            conn.close()
            raise
        _connections[conninfo] = conn
    return conn


@atexit.register
def _close_connections() -> None:
    for conn in _connections.values():
        conn.close()
    _connections.clear()


@dataclass(frozen=True)
class TableSource:
    """Rows of a table, chunked and read by a unique key.

    :param table: ``schema.table`` or ``table``.
    :param key_column: a unique, NOT NULL, indexed column: chunks and batches are its ranges.
    :param columns: the columns read, in order (the key among them); empty: every column,
        resolved from the catalog when the job is planned (:meth:`resolved`).
    :param row_filter: only rows whose filter column is in ``[start, end)`` (a data interval).
    """

    table: str
    key_column: str
    columns: tuple[str, ...] = ()
    row_filter: RowFilter | None = None

    kind = "table"

    def __post_init__(self) -> None:
        parse_table(self.table)
        column_sql(self.key_column)
        object.__setattr__(self, "columns", tuple(self.columns))
        for column in self.columns:
            column_sql(column)
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("columns must not name a column twice")
        if self.columns and self.key_column not in self.columns:
            raise ValueError(f"columns must include the key column {self.key_column!r}")

    @property
    def name(self) -> str:
        return self.table

    def resolved(self, conninfo: str) -> TableSource:
        """Check the table, key, columns and filter in the catalog; fill in every column when
        none were given.

        :raises ConfigurationError: saying what is missing or unfit.
        """
        with psycopg.connect(conninfo, autocommit=True) as conn:
            key_type(conn, self.table, self.key_column)
            if self.columns:
                column_types(conn, self.table, self.columns)
                columns = self.columns
            else:
                columns = tuple(c.name for c in table_columns(conn, self.table))
            if self.row_filter is not None:
                _check_interval_column(conn, self.table, self.row_filter.column)
        return TableSource(self.table, self.key_column, columns, self.row_filter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key_column": self.key_column,
            "columns": list(self.columns),
            "row_filter": None if self.row_filter is None else self.row_filter.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableSource:
        row_filter = data.get("row_filter")
        return cls(
            data["table"],
            data["key_column"],
            tuple(data.get("columns") or ()),
            None if row_filter is None else RowFilter.from_dict(row_filter),
        )

    def plan(self, conninfo: str | None, sizing: Sizing) -> list[dict[str, Any]]:
        if conninfo is None:
            raise ValueError("a table source needs its database's conninfo")
        with psycopg.connect(
            conninfo, autocommit=True, application_name="parallel_batch plan"
        ) as c:
            planned = plan_table_chunks(
                c,
                self.table,
                self.key_column,
                chunk_rows=None if sizing.chunks is not None else sizing.chunk_size,
                chunks=sizing.chunks,
                max_chunks=sizing.max_chunks,
                row_filter=self.row_filter,
            )
        return [chunk.to_dict() for chunk in planned]

    def replay_rows(
        self, conninfo: str | None, letters: Sequence[StoredDeadLetter], from_payload: bool
    ) -> dict[str, Row]:
        """See :meth:`parallel_batch.core.source.Source.replay_rows`. By key from the table, or
        the stored payloads cast back to its row type."""
        if conninfo is None:
            raise ValueError("a table source needs its database's conninfo")
        key_index = self.columns.index(self.key_column)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            use_reader_timezone(conn)
            if from_payload:
                stored = [letter.payload for letter in letters if letter.payload is not None]
                if not stored:
                    return {}
                query = sql.SQL(
                    "SELECT {} FROM jsonb_populate_recordset(NULL::{}, %s::jsonb) AS r"
                ).format(
                    sql.SQL(", ").join(sql.SQL("r.{}").format(column_sql(c)) for c in self.columns),
                    table_sql(self.table),
                )
                rows = conn.execute(query, (json.dumps(stored),)).fetchall()
            else:
                cast = sql.SQL(key_type(conn, self.table, self.key_column))  # from the catalog
                query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(CAST(%s AS {}[]))").format(
                    columns_sql(self.columns),
                    table_sql(self.table),
                    column_sql(self.key_column),
                    cast,
                )
                rows = conn.execute(query, ([letter.item_key for letter in letters],)).fetchall()
        return {str(key_to_json(row[key_index])): row for row in rows}

    def chunk_reader(
        self, conninfo: str | None, entry: dict[str, Any], *, frames: bool = False
    ) -> TableChunkReader:
        if conninfo is None:
            raise ValueError("a table source needs its database's conninfo")
        if not self.columns:
            raise ValueError("resolve the source's columns first (TableSource.resolved)")
        chunk = TableChunk.from_dict(entry)
        statements = RangeReader.build(
            reader_connection(conninfo),
            self.table,
            self.columns,
            self.key_column,
            chunk=chunk,
            row_filter=self.row_filter,
        )
        row_filter = self.row_filter
        owned = KeyRange(
            self.table,
            self.key_column,
            chunk.lower,
            chunk.upper,
            None if row_filter is None else (row_filter.column, row_filter.start, row_filter.end),
        )
        return TableChunkReader(conninfo, self.columns, statements, chunk.lower, owned, frames)


_INTERVAL_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")


def _check_interval_column(conn: psycopg.Connection, table: str, column: str) -> None:
    from parallel_batch.exceptions import ConfigurationError

    (found,) = column_types(conn, table, [column])
    if found.type_name not in _INTERVAL_TYPES:
        raise ConfigurationError(
            f"interval_column {column!r} of {table!r} is a {found.type_name}; it must be a "
            "timestamp, timestamptz or date column"
        )


@dataclass(frozen=True)
class TableChunkReader:
    """Reads one chunk of a table; plain data, so it pickles to the pool's workers.

    :param conninfo: the source database.
    :param columns: the columns read, in order.
    :param statements: the chunk's statements.
    :param start: the chunk's lower bound (exclusive; None from the first key).
    :param keys: the source rows the chunk owns (a full refresh deletes their earlier output).
    :param frames: read batches as columns when the table allows it (a dataframe transform:
        ``ReadBatch.rows`` is then a :class:`~parallel_batch.core.frame_rows.FrameRows`).
    """

    conninfo: str
    columns: tuple[str, ...]
    statements: RangeReader
    start: JSONKey | None
    keys: KeyRange
    frames: bool = False

    def batches(self, after: Any, batch_rows: int) -> Iterator[BatchRange]:
        lower = after if after is not None else self.start
        return self.statements.ranges(reader_connection(self.conninfo), lower, batch_rows)

    def read(self, ref: BatchRange) -> ReadBatch:
        conn = reader_connection(self.conninfo)
        if self.frames:
            frame = self.statements.frame(conn, ref)
            if frame is not None:
                return ReadBatch(frame)
        return ReadBatch(self.statements.rows(conn, ref))

    def split(self, ref: BatchRange, parts: int) -> Sequence[BatchRange] | None:
        return self.statements.split(reader_connection(self.conninfo), ref, parts)

    def position(self, ref: BatchRange) -> JSONKey:
        return ref.upper

    def item_key(self, batch: ReadBatch, index: int) -> str:
        return str(key_to_json(batch.rows[index][self.statements.key_index]))

    def owned(self) -> KeyRange:
        return self.keys

    def close(self) -> None:
        conn = _connections.pop(self.conninfo, None)
        if conn is not None:
            conn.close()
