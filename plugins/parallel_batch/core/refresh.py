"""Delete a chunk's earlier output for a full refresh, inside the first batch's transaction.

Without a row filter a chunk owns every target row whose key is in its range ``(lower, upper]``:
those are deleted (``writer.delete_key_range``). With a row filter (a data interval) the same key
range also holds other intervals' rows, which must stay: only the target rows whose key belongs to
a source row of this chunk *under the filter* are deleted::

    DELETE FROM target t USING source s
    WHERE t.<target key> = s.<key> AND s.<key> > lower AND s.<key> <= upper
      AND s.<filter column> >= start AND s.<filter column> < end

Either way the delete commits together with the chunk's first batch (or, for a chunk that has no
rows left, with an empty commit), so the target never holds both the old and the new output.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from parallel_batch.core.table_job import TableJobSpec
from parallel_batch.sources.table.planner import TableChunk
from parallel_batch.store.catalog import key_type
from parallel_batch.store.identifiers import column_sql, table_sql
from parallel_batch.store.writer import delete_key_range


def delete_chunk_output(conn: psycopg.Connection, spec: TableJobSpec, chunk: TableChunk) -> int:
    """Delete the target rows an earlier run of ``chunk`` wrote; run in the caller's transaction.

    :returns: rows deleted.
    """
    target_key = spec.target_key_columns[0]
    if spec.row_filter is None:
        return delete_key_range(conn, spec.target_table, target_key, chunk.lower, chunk.upper)
    cast = sql.SQL(key_type(conn, spec.source_table, spec.key_column))  # from the catalog
    key = sql.SQL("s.{}").format(column_sql(spec.key_column))
    conditions: list[sql.Composable] = [
        sql.SQL("t.{} = {}").format(column_sql(target_key), key),
    ]
    params: list[object] = []
    if chunk.lower is not None:
        conditions.append(sql.SQL("{} > %s::{}").format(key, cast))
        params.append(chunk.lower)
    if chunk.upper is not None:
        conditions.append(sql.SQL("{} <= %s::{}").format(key, cast))
        params.append(chunk.upper)
    column = sql.SQL("s.{}").format(column_sql(spec.row_filter.column))
    if spec.row_filter.start is not None:
        conditions.append(sql.SQL("{} >= %s").format(column))
        params.append(spec.row_filter.start)
    if spec.row_filter.end is not None:
        conditions.append(sql.SQL("{} < %s").format(column))
        params.append(spec.row_filter.end)
    statement = sql.SQL("DELETE FROM {} t USING {} s WHERE {}").format(
        table_sql(spec.target_table),
        table_sql(spec.source_table),
        sql.SQL(" AND ").join(conditions),
    )
    return conn.execute(statement, params).rowcount
