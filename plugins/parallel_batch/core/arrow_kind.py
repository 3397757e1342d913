"""The ``arrow`` transform kind: a batch as a pyarrow Table in, the kept rows as a Table out.

::

    fn(table) -> out                  one output row per input row, in order
    fn(table) -> (out, {i: error})    the rows i refused (each a dead letter, retried alone as
                                      the job's retry policy says), ``out`` the others, in order

``out``'s columns are target columns by name; a target column it leaves out is NULL. The same
function runs on columns read as columns (a CSV's batches, see ``prepare_columns``) and on rows
made into a table (other sources, a replay), through :func:`call_arrow`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from parallel_batch.exceptions import TransformOutputError

__all__ = ["ArrowResult", "arrow_rows", "call_arrow", "rows_table", "table_rows"]

ArrowResult = tuple[pa.Table, list[int], dict[int, Exception]]


def call_arrow(fn: Callable[..., Any], table: pa.Table) -> ArrowResult:
    """Call an ``arrow`` transform: its output table, the input indexes it kept (in order) and
    the errors of those it refused.

    :raises TransformOutputError: for an output that breaks the kind's contract.
    """
    result = fn(table)
    refused: Mapping[Any, Any] = {}
    if isinstance(result, tuple) and len(result) == 2:
        result, refused = result
    if isinstance(result, pa.RecordBatch):
        result = pa.Table.from_batches([result])
    if not isinstance(result, pa.Table):
        raise TransformOutputError(
            f"the transform returned a {type(result).__name__}; an 'arrow' transform returns a "
            "pyarrow.Table, or a (Table, {input index: exception}) pair"
        )
    if not isinstance(refused, Mapping) or not all(
        isinstance(i, int) and 0 <= i < table.num_rows and isinstance(e, Exception)
        for i, e in refused.items()
    ):
        raise TransformOutputError(
            "an 'arrow' transform's refusals map input row indexes to exceptions"
        )
    kept = [i for i in range(table.num_rows) if i not in refused]
    if result.num_rows != len(kept):
        raise TransformOutputError(
            f"the transform returned {result.num_rows} rows for {table.num_rows} input rows, "
            f"{len(refused)} refused; an 'arrow' transform returns one row per row it does not "
            "refuse (use transform_kind='rows' or 'dataframe' to filter or fan out)"
        )
    return result, kept, dict(refused)


def rows_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Rows of Python values as a table (types inferred from the values)."""
    values = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    return pa.table([pa.array(list(v)) for v in values], names=list(columns))


def table_rows(table: pa.Table, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """A table's rows as tuples of ``columns`` (a column it lacks: None).

    :raises TransformOutputError: for a column the target does not have.
    """
    unknown = sorted(set(table.column_names) - set(columns))
    if unknown:
        raise TransformOutputError(
            f"the transform returned the column {unknown[0]!r}, which is not a target column "
            f"(columns: {', '.join(columns)})"
        )
    nulls = [None] * table.num_rows
    lists = [table.column(c).to_pylist() if c in table.column_names else nulls for c in columns]
    return list(zip(*lists, strict=True))


def arrow_rows(
    fn: Callable[..., Any],
    columns: Sequence[str],
    target_columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> tuple[list[tuple[Any, ...]], list[int], list[tuple[int, Exception]]]:
    """An ``arrow`` transform over rows: the output rows (in ``target_columns`` order), the
    input indexes kept and the refusals ``(index, error)`` in index order."""
    table, kept, refused = call_arrow(fn, rows_table(columns, rows))
    return table_rows(table, target_columns), kept, sorted(refused.items())
