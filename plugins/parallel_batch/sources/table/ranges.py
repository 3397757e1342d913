"""A chunk cut into batches that are key ranges, and the statements that find and read them.

The runner plans each batch as a key range ``(lower, upper]`` holding ``batch_rows`` rows::

    SELECT key FROM t WHERE key > <lower> [AND key <= <chunk upper>] [AND <filter>]
    ORDER BY key OFFSET <batch_rows - 1> LIMIT 1      -- an index scan; no row is sent

(the last, shorter batch ends at the chunk's last key), and whoever transforms the batch, a
worker process or this one, reads it on a connection of its own::

    SELECT <columns> FROM t WHERE key > <lower> AND key <= <upper> [AND <filter>] ORDER BY key

(or, for a dataframe transform, that statement aggregated into one array per column:
``columns.py``). Each is one short statement on an autocommit connection: no snapshot is held
between batches.
Since a batch is a range rather than rows in hand, several workers read and transform batches
at once, the parent never decodes a source row, and a batch's checkpoint is its upper key. A
batch that kills its worker is cut into smaller ranges by its keys (:meth:`RangeReader.split`).

Under concurrent inserts a batch reads the rows its range holds when it is read (a few more than
planned, at most); rows inserted below a committed checkpoint are not read, as with any keyset
reader. Bounds travel as JSON keys and are cast back to the key's type in SQL (``keys``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from parallel_batch.core.frame_rows import FrameRows
from parallel_batch.sources.table.columns import column_kinds, columns_select, read_frame
from parallel_batch.sources.table.planner import RowFilter, TableChunk
from parallel_batch.sources.table.reader import binary_results
from parallel_batch.store.catalog import JSONKey, column_types, key_to_json, key_type
from parallel_batch.store.identifiers import column_sql, columns_sql, table_sql

__all__ = ["BatchRange", "RangeReader"]


class BatchRange(NamedTuple):
    """A batch: the rows whose key is in ``(lower, upper]``.

    :param lower: exclusive lower bound; None: from the chunk's first row.
    :param upper: inclusive upper bound (a key the batch held when it was planned).
    """

    lower: JSONKey | None
    upper: JSONKey


class _Statement(NamedTuple):
    """One statement in two versions: with a lower bound, and from the start (no lower bound)."""

    after: str
    start: str

    def pick(self, lower: JSONKey | None) -> str:
        return self.start if lower is None else self.after


@dataclass(frozen=True)
class RangeReader:
    """Finds a chunk's batches and reads them; plain strings, so it pickles to worker processes.

    Build it with :meth:`build`; every method takes the connection to run on (autocommit).

    :param rows_sql: reads a range's rows.
    :param keys_sql: reads a range's keys.
    :param next_upper_sql: the key ``batch_rows`` rows after a lower bound.
    :param last_sql: the chunk's keys after a lower bound, at most ``batch_rows``.
    :param params: the filter's and the chunk's bound parameters.
    :param binary: fetch rows in binary (see ``reader.binary_results``).
    :param key_index: where the key is in a row.
    """

    rows_sql: _Statement
    keys_sql: _Statement
    next_upper_sql: _Statement
    last_sql: _Statement
    params: dict[str, Any] = field(hash=False)
    binary: bool
    key_index: int
    columns: tuple[str, ...] = ()
    frame_sql: _Statement | None = None
    kinds: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        conn: psycopg.Connection,
        table: str,
        columns: Sequence[str],
        key_column: str,
        *,
        chunk: TableChunk,
        row_filter: RowFilter | None = None,
    ) -> RangeReader:
        """Check the table, key and columns, and compose the statements for ``chunk``.

        :raises ValueError: for empty columns or columns without the key.
        :raises ConfigurationError: when the table, a column or the key is missing or unfit.
        """
        if not columns:
            raise ValueError("columns must not be empty")
        if key_column not in columns:
            raise ValueError(f"columns must include the key column {key_column!r}")
        key = column_sql(key_column)
        source = table_sql(table)
        cast = sql.SQL(key_type(conn, table, key_column))  # a type name from the catalog
        params: dict[str, Any] = {}
        common: list[sql.Composable] = []
        if row_filter is not None:
            conditions, filter_params = row_filter.conditions()
            common.extend(conditions)
            params.update(filter_params)
        in_chunk = list(common)
        if chunk.upper is not None:
            in_chunk.append(sql.SQL("{} <= CAST(%(chunk_upper)s AS {})").format(key, cast))
            params["chunk_upper"] = chunk.upper
        in_range = [sql.SQL("{} <= CAST(%(upper)s AS {})").format(key, cast), *common]
        after = sql.SQL("{} > CAST(%(lower)s AS {})").format(key, cast)

        def statement(
            select: sql.Composable, conditions: list[sql.Composable], tail: str
        ) -> _Statement:
            def render(parts: list[sql.Composable]) -> str:
                where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts) if parts else sql.SQL("")
                return (
                    select + where + sql.SQL(" ORDER BY {}").format(key) + sql.SQL(tail)
                ).as_string(conn)

            return _Statement(after=render([after, *conditions]), start=render(conditions))

        rows = sql.SQL("SELECT {} FROM {}").format(columns_sql(columns), source)
        keys = sql.SQL("SELECT {} FROM {}").format(key, source)
        types = [psycopg.adapters.types.get(c.oid) for c in column_types(conn, table, columns)]
        names = [info.name if info is not None else "" for info in types]
        key_index = list(columns).index(key_column)
        kinds = column_kinds(names, key_index)
        frame_sql = None
        if kinds is not None:  # the batch's rows aggregated into one array per column
            inner = statement(rows, in_range, "")
            head = columns_select(columns, names, kinds).as_string(conn) + " FROM ("
            frame_sql = _Statement(*(head + part + ") AS batch" for part in inner))
        return cls(
            rows_sql=statement(rows, in_range, ""),
            keys_sql=statement(keys, in_range, ""),
            next_upper_sql=statement(keys, in_chunk, " OFFSET %(skip)s LIMIT 1"),
            last_sql=statement(keys, in_chunk, " LIMIT %(batch_rows)s"),
            params=params,
            binary=binary_results(conn, table, columns),
            key_index=key_index,
            columns=tuple(columns),
            frame_sql=frame_sql,
            kinds=kinds or (),
        )

    def _params(self, lower: JSONKey | None, **extra: Any) -> dict[str, Any]:
        return {**self.params, "lower": lower, **extra}

    def ranges(
        self, conn: psycopg.Connection, after: JSONKey | None, batch_rows: int
    ) -> Iterator[BatchRange]:
        """Yield the chunk's batches after key ``after`` (None: from its start), one statement
        each, planned as they are taken (a batch's range depends on the previous one's)."""
        if batch_rows <= 0:
            raise ValueError("batch_rows must be greater than 0")
        lower = after
        with conn.cursor() as cur:
            while True:
                found = cur.execute(
                    self.next_upper_sql.pick(lower),
                    self._params(lower, skip=batch_rows - 1),
                    prepare=False,  # planned with its own bounds, like every batch statement
                ).fetchone()
                if found is None:  # fewer than batch_rows rows left: the last batch
                    keys = cur.execute(
                        self.last_sql.pick(lower),
                        self._params(lower, batch_rows=batch_rows),
                        prepare=False,
                    ).fetchall()
                    if keys:
                        yield BatchRange(lower, key_to_json(keys[-1][0]))
                    return
                upper = key_to_json(found[0])
                yield BatchRange(lower, upper)
                lower = upper

    def rows(self, conn: psycopg.Connection, batch: BatchRange) -> list[tuple[Any, ...]]:
        """Read the rows of ``batch``, in key order."""
        params = self._params(batch.lower, upper=batch.upper)
        with conn.cursor(binary=self.binary) as cur:
            return cur.execute(self.rows_sql.pick(batch.lower), params, prepare=False).fetchall()

    def frame(self, conn: psycopg.Connection, batch: BatchRange) -> FrameRows | None:
        """Read the rows of ``batch`` as columns (``columns.read_frame``); None when the table
        cannot be read so (see ``columns.column_kinds``)."""
        if self.frame_sql is None:
            return None
        params = self._params(batch.lower, upper=batch.upper)
        statement = self.frame_sql.pick(batch.lower)
        return read_frame(conn, statement, params, self.columns, self.kinds, self.key_index)

    def keys(self, conn: psycopg.Connection, batch: BatchRange) -> list[JSONKey]:
        """Read the keys of ``batch``, in order."""
        params = self._params(batch.lower, upper=batch.upper)
        with conn.cursor() as cur:
            found = cur.execute(self.keys_sql.pick(batch.lower), params, prepare=False)
            return [key_to_json(key) for (key,) in found.fetchall()]

    def split(
        self, conn: psycopg.Connection, batch: BatchRange, parts: int
    ) -> list[BatchRange] | None:
        """Cut ``batch`` into at most ``parts`` ranges of (nearly) equal rows that cover it.

        :returns: the parts, or None when the batch holds one row or none (it cannot be cut).
        """
        if parts < 2:
            raise ValueError("parts must be at least 2")
        keys = self.keys(conn, batch)
        if len(keys) <= 1:
            return None
        parts = min(parts, len(keys))
        ends = [keys[len(keys) * (part + 1) // parts - 1] for part in range(parts - 1)]
        bounds: list[JSONKey | None] = [batch.lower, *ends]
        uppers: list[JSONKey] = [*ends, batch.upper]  # the last part ends where the batch did
        return [BatchRange(lower, upper) for lower, upper in zip(bounds, uppers, strict=True)]
