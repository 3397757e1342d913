"""Rows to a pandas DataFrame and back, for the ``dataframe`` transform kind.

::

    rows[a:b] --DataFrame.from_records(index=range(a, b))--> fn(df) --> result
    result: columns must be target columns; each column's dtype must fit its target column's
            type (checked before anything is written, the column named in the error);
            values become Python objects (NaN, NaT, None, pd.NA -> NULL) in target column order
    owners: the result's index, when it still points at input rows (filters, explode and assign
            keep it), so that claims know which input row each output came from

pandas is imported only here, in the processes that run a dataframe transform.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from parallel_batch.core.target import Target
from parallel_batch.exceptions import TransformOutputError

__all__ = ["frame_in", "frame_out"]

Row = tuple[Any, ...]

# Python types whose columns become NumPy arrays directly (no None among them: a None makes
# pandas infer, as from_records does).
_NUMBERS: dict[type, Any] = {int: np.int64, float: np.float64}
_INTEGERS = frozenset({"smallint", "integer", "bigint"})
_FLOATS = frozenset({"real", "double precision"})
_TIMES = frozenset({"timestamp with time zone", "timestamp without time zone", "date"})
# dtype kind -> the target base types its values can be written to (None: any; the encoder
# checks each value). 'f' into an integer column is refused: pandas makes a float column of
# integers with gaps, and a 2.5 must not become 2 or 3 without a word.
_ACCEPTS: dict[str, frozenset[str] | None] = {
    "i": _INTEGERS | _FLOATS | {"numeric"},
    "u": _INTEGERS | _FLOATS | {"numeric"},
    "f": _FLOATS | {"numeric"},
    "b": frozenset({"boolean"}),
    "M": _TIMES,
    "m": frozenset({"interval"}),
    "O": None,
    "U": None,
    "S": None,
}
_HINTS = {
    ("f", "int"): " (pandas makes integers with gaps float64: use .astype('Int64'))",
}


def frame_in(rows: list[Row], unit: tuple[int, int], columns: Sequence[str]) -> pd.DataFrame:
    """The unit's rows as a DataFrame whose index is each row's position in the batch (the
    dtypes ``DataFrame.from_records`` gives, a column at a time: a quarter faster)."""
    start, stop = unit
    index = pd.RangeIndex(start, stop)
    if start == stop:
        return pd.DataFrame.from_records([], columns=list(columns), index=index)
    part = rows[start:stop]
    # a column at a time: zip(*part) would make an iterator (a GC-tracked object) per row
    values = (list(map(operator.itemgetter(i), part)) for i in range(len(columns)))
    made = map(_column, values, itertools.repeat(index))
    return pd.DataFrame(dict(zip(columns, made, strict=True)), index=index, copy=False)


def _column(values: list[Any], index: pd.RangeIndex) -> Any:
    """A column's values: a NumPy array when they are all int (int64) or all float, else a
    Series whose dtype pandas infers (from_records' rules: ints with a None become float64...)."""
    kind = type(values[0])
    dtype = _NUMBERS.get(kind)
    if dtype is not None and all(map(operator.is_, map(type, values), itertools.repeat(kind))):
        try:
            return np.array(values, dtype=dtype)
        except (OverflowError, TypeError, ValueError):  # beyond int64
            pass
    return pd.Series(values, index=index, copy=False)


def _base(type_name: str) -> str:
    return type_name.split("(")[0].strip()


def _check(name: str, series: pd.Series, type_name: str, table: str) -> None:
    kind = getattr(series.dtype, "kind", "O")
    accepted = _ACCEPTS.get(kind)
    base = _base(type_name)
    if accepted is None or base in accepted or (kind != "O" and base == "text" and kind in "iufb"):
        return
    hint = ""
    if kind == "f" and base in _INTEGERS:
        hint = _HINTS[("f", "int")]
    raise TransformOutputError(
        f"column {name!r}: {series.dtype} values cannot be written to {type_name} column of "
        f"{table}{hint}"
    )


def _values(series: pd.Series, type_name: str) -> list[Any]:
    base = _base(type_name)
    kind = getattr(series.dtype, "kind", "O")
    missing = series.isna().to_numpy()
    if kind == "M":
        values = list(series.dt.to_pydatetime())
        if base == "date":
            values = [v.date() for v in values]
    elif kind == "m":
        values = list(series.dt.to_pytimedelta())
    else:
        values = series.tolist()
    if base == "numeric" and kind == "f":
        values = [Decimal(repr(v)) for v in values]
    elif base == "text" and kind in "iufb":
        values = [str(v) for v in values]
    if missing.any():
        values = [None if gone else v for v, gone in zip(values, missing, strict=True)]
    return values


def frame_out(
    result: Any, unit: tuple[int, int], target: Target
) -> tuple[list[Row], Sequence[int] | None]:
    """The transform's DataFrame as output rows in target column order, and their owners
    (``range(*unit)``: one output per input row, in order).

    :raises TransformOutputError: for a result that is not a DataFrame, a column that is not
        written to the target, or a dtype its target column cannot take (naming the column).
    """
    if not isinstance(result, pd.DataFrame):
        raise TransformOutputError(
            f"the transform returned a {type(result).__name__}; a 'dataframe' transform returns "
            "a pandas DataFrame"
        )
    names = [str(c) for c in result.columns]
    if len(set(names)) != len(names):
        raise TransformOutputError(f"the transform's DataFrame has duplicate columns: {names}")
    types = dict(zip(target.columns, target.types, strict=True))
    unknown = [n for n in names if n not in types]
    if unknown:
        raise TransformOutputError(
            f"column {unknown[0]!r} is not a column written to {target.table} "
            f"(columns: {', '.join(target.columns)})"
        )
    n = len(result)
    if n:  # an empty column has a dtype but no value to write
        for name in names:
            _check(name, result[name], types[name], target.table)
    columns = [
        _values(result[name], types[name]) if name in result.columns else [None] * n
        for name in target.columns
    ]
    rows: list[Row] = list(zip(*columns, strict=True)) if n else []
    index = result.index
    if isinstance(index, pd.RangeIndex) and index.equals(pd.RangeIndex(*unit)):
        return rows, range(*unit)  # one output per input row, in order (assign, arithmetic...)
    owners: list[int] | None = None
    if pd.api.types.is_integer_dtype(index.dtype) and (
        n == 0 or (index.min() >= unit[0] and index.max() < unit[1])
    ):
        owners = index.tolist()
    return rows, owners
