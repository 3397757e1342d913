"""Delete a chunk's earlier output for a full refresh, inside the first batch's transaction.

A table chunk owns the source rows of its key range (:class:`~parallel_batch.core.source.KeyRange`).
Without a row filter, the target rows whose key is in that range are its output: they are deleted
(``writer.delete_key_range``), which works whatever database the source is in. With a row filter
(a data interval) the same key range also holds other intervals' rows, which must stay: only the
target rows whose key belongs to a source row of this chunk *under the filter* are deleted::

    DELETE FROM target t USING source s
    WHERE t.<target key> = s.<key> AND s.<key> > lower AND s.<key> <= upper
      AND s.<filter column> >= start AND s.<filter column> < end

(source and target in one database). A source without owned keys (a file) is refreshed by
upserting over the rows its earlier load wrote. Either way the delete commits together with the
chunk's first batch (or, for a chunk with no rows left, with an empty commit), so the target never
holds both the old and the new output.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from parallel_batch.core.source import KeyRange
from parallel_batch.store.catalog import key_type
from parallel_batch.store.identifiers import column_sql, table_sql
from parallel_batch.store.writer import delete_key_range

__all__ = ["delete_chunk_output"]


def delete_chunk_output(
    conn: psycopg.Connection, target_table: str, target_key: str, keys: KeyRange, *, same_db: bool
) -> int:
    """Delete the target rows an earlier run of the chunk wrote; run in the caller's transaction.

    :param target_key: the target column holding the source key.
    :param same_db: whether the source table is in the target's database (needed with a filter;
        without one, an interval chunk's earlier output is replaced by upserts only).
    :returns: rows deleted.
    """
    if keys.filter is None:
        return delete_key_range(conn, target_table, target_key, keys.lower, keys.upper)
    if not same_db:
        return 0
    column, start, end = keys.filter
    cast = sql.SQL(key_type(conn, keys.table, keys.key_column))  # from the catalog
    key = sql.SQL("s.{}").format(column_sql(keys.key_column))
    conditions: list[sql.Composable] = [sql.SQL("t.{} = {}").format(column_sql(target_key), key)]
    params: list[object] = []
    if keys.lower is not None:
        conditions.append(sql.SQL("{} > %s::{}").format(key, cast))
        params.append(keys.lower)
    if keys.upper is not None:
        conditions.append(sql.SQL("{} <= %s::{}").format(key, cast))
        params.append(keys.upper)
    filter_column = sql.SQL("s.{}").format(column_sql(column))
    if start is not None:
        conditions.append(sql.SQL("{} >= %s").format(filter_column))
        params.append(start)
    if end is not None:
        conditions.append(sql.SQL("{} < %s").format(filter_column))
        params.append(end)
    statement = sql.SQL("DELETE FROM {} t USING {} s WHERE {}").format(
        table_sql(target_table), table_sql(keys.table), sql.SQL(" AND ").join(conditions)
    )
    return conn.execute(statement, params).rowcount
