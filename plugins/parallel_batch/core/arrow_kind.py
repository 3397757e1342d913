"""The ``arrow`` transform kind: a batch as a pyarrow Table in, the kept rows as a Table out.

::

    fn(table) -> out                  one output row per input row, in order
    fn(table) -> (out, {i: error})    the rows i refused (each a dead letter, retried alone as
                                      the job's retry policy says), ``out`` the others, in order

``out``'s columns are target columns by name; a target column it leaves out is NULL. The same
function runs on columns read as columns (a CSV's batches, see ``prepare_columns``) and on rows
made into a table (other sources, a replay), through :func:`call_arrow`; either way an input
column the target has (by name) comes as the type it is written as (:func:`input_types`:
integers as int64, floats as float64, ``numeric(p,s)`` as decimal128(p, s), timestamps in UTC),
so a function sees the same types on both paths and in every batch. Others: inferred.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from parallel_batch.exceptions import TransformOutputError

__all__ = ["ArrowResult", "arrow_rows", "call_arrow", "input_types", "rows_table", "table_rows"]

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


def input_types(
    columns: Sequence[str], target_columns: Sequence[str], target_types: Sequence[str]
) -> list[pa.DataType | None]:
    """The Arrow type an arrow transform gets each input column as: a column the target has,
    the type it is written as (integers as int64, floats as float64); None: inferred."""
    from parallel_batch.store.arrow_copy import arrow_type_of

    written = dict(zip(target_columns, target_types, strict=True))
    types: list[pa.DataType | None] = []
    for column in columns:
        found = arrow_type_of(written[column]) if column in written else None
        wanted = None if found is None else found[0]
        if wanted is not None and pa.types.is_integer(wanted):
            wanted = pa.int64()
        elif wanted is not None and pa.types.is_floating(wanted):
            wanted = pa.float64()
        types.append(wanted)
    return types


def _array(values: list[Any], wanted: pa.DataType | None) -> pa.Array:
    if wanted is not None:
        try:
            return pa.array(values, wanted)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            pass  # a value its column cannot hold: the target refuses it later, in its words
    return pa.array(values)


def rows_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    types: Sequence[pa.DataType | None] | None = None,
) -> pa.Table:
    """Rows of Python values as a table, each column of its type in ``types`` (None: inferred
    from the values, as for a column whose values the type cannot hold)."""
    values = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    wanted = list(types) if types is not None else [None] * len(columns)
    return pa.table(
        [_array(list(v), t) for v, t in zip(values, wanted, strict=True)], names=list(columns)
    )


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
    target: Any,
    rows: Sequence[Sequence[Any]],
) -> tuple[list[tuple[Any, ...]], list[int], list[tuple[int, Exception]]]:
    """An ``arrow`` transform over rows, the input typed by the ``target`` (a Target) as on the
    columnar path: the output rows (in the target's column order), the input indexes kept and
    the refusals ``(index, error)`` in index order."""
    types = input_types(columns, target.columns, target.types)
    table, kept, refused = call_arrow(fn, rows_table(columns, rows, types))
    return table_rows(table, target.columns), kept, sorted(refused.items())
