"""Rows to a pandas DataFrame and back, for the ``dataframe`` transform kind.

::

    rows[a:b] --DataFrame.from_records(index=range(a, b))--> fn(df) --> result
    result: columns must be target columns; each column's dtype must fit its target column's
            type (checked before anything is written, the column named in the error);
            values become Python objects (NaN, NaT, None, pd.NA -> NULL) in target column order
    owners: the result's index, when it still points at input rows (filters, explode and assign
            keep it), so that claims know which input row each output came from
    frame_copy: numbers, booleans, timestamps and text straight to binary COPY bytes
            (frame_copy.py), when no Python row is needed (not for a refused write's diagnosis)

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
import psycopg

from parallel_batch.core.frame_copy import encode_frame
from parallel_batch.core.frame_rows import FrameRows
from parallel_batch.core.target import Target
from parallel_batch.exceptions import TransformOutputError
from parallel_batch.store.copy_data import CopyData

# pandas 3 keeps str columns in Arrow when pyarrow is installed (a dependency since the columnar
# path). A worker that builds frames keeps them in Python objects, as before: that is what the
# frame reading and encoding here are made for (see README "Performance", the kinds bench).
pd.set_option("mode.string_storage", "python")

__all__ = ["frame_column", "frame_copy", "frame_in", "frame_out"]

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
# The SQL names of the base types whose dtypes are checked, by oid (the target's COPY format
# carries a domain's base type oid).
_BASE_TYPES = {
    psycopg.adapters.types[pg].oid: sql_name
    for pg, sql_name in {
        "int2": "smallint",
        "int4": "integer",
        "int8": "bigint",
        "float4": "real",
        "float8": "double precision",
        "numeric": "numeric",
        "bool": "boolean",
        "timestamptz": "timestamp with time zone",
        "timestamp": "timestamp without time zone",
        "date": "date",
        "interval": "interval",
        "text": "text",
    }.items()
}
_HINTS = {
    ("f", "int"): " (pandas makes integers with gaps float64: use .astype('Int64'))",
}


def frame_in(rows: Sequence[Row], unit: tuple[int, int], columns: Sequence[str]) -> pd.DataFrame:
    """The unit's rows as a DataFrame whose index is each row's position in the batch (the
    dtypes ``DataFrame.from_records`` gives, a column at a time: a quarter faster)."""
    start, stop = unit
    if isinstance(rows, FrameRows):  # read as columns: the batch's frame, cut and copied (a
        # transform changing it in place must not change the batch a split retries on; pandas 2
        # does not copy on write)
        return rows.frame.iloc[start:stop].copy()
    index = pd.RangeIndex(start, stop)
    if start == stop:
        return pd.DataFrame.from_records([], columns=list(columns), index=index)
    part = rows[start:stop]
    # a column at a time: zip(*part) would make an iterator (a GC-tracked object) per row
    values = (list(map(operator.itemgetter(i), part)) for i in range(len(columns)))
    made = map(frame_column, values, itertools.repeat(index))
    return pd.DataFrame(dict(zip(columns, made, strict=True)), index=index, copy=False)


def frame_column(values: list[Any], index: pd.RangeIndex) -> Any:
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


def _check(name: str, series: pd.Series, type_name: str, base: str, table: str) -> None:
    """Refuse a dtype the column's base type cannot take, naming the column's declared type."""
    kind = getattr(series.dtype, "kind", "O")
    accepted = _ACCEPTS.get(kind)
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
    types = _checked(result, target)
    n = len(result)
    columns = [
        _values(result[name], types[name]) if name in result.columns else [None] * n
        for name in target.columns
    ]
    rows: list[Row] = list(zip(*columns, strict=True)) if n else []
    return rows, _owners(result, unit)


def frame_copy(
    result: Any, unit: tuple[int, int], target: Target
) -> tuple[CopyData, Sequence[int] | None] | None:
    """The transform's DataFrame encoded for the target's COPY a column at a time, and its
    owners (as :func:`frame_out`); None when a column needs the general way (``frame_copy``).

    :raises TransformOutputError: as :func:`frame_out`.
    """
    _checked(result, target)
    data = encode_frame(result, target.columns, target.copy)
    return None if data is None else (data, _owners(result, unit))


def _checked(result: Any, target: Target) -> dict[str, str]:
    """Check the result's type, columns and dtypes; return the target columns' base types (no
    modifiers, a domain's base type) by name."""
    if not isinstance(result, pd.DataFrame):
        raise TransformOutputError(
            f"the transform returned a {type(result).__name__}; a 'dataframe' transform returns "
            "a pandas DataFrame"
        )
    names = [str(c) for c in result.columns]
    if len(set(names)) != len(names):
        raise TransformOutputError(f"the transform's DataFrame has duplicate columns: {names}")
    types = dict(zip(target.columns, target.types, strict=True))
    bases = {  # a domain is taken as its base type
        name: _BASE_TYPES.get(oid, _base(declared))
        for name, declared, oid in zip(
            target.columns, target.types, target.copy.type_oids, strict=True
        )
    }
    unknown = [n for n in names if n not in types]
    if unknown:
        raise TransformOutputError(
            f"column {unknown[0]!r} is not a column written to {target.table} "
            f"(columns: {', '.join(target.columns)})"
        )
    if len(result):  # an empty column has a dtype but no value to write
        for name in names:
            _check(name, result[name], types[name], bases[name], target.table)
    return bases


def _owners(result: pd.DataFrame, unit: tuple[int, int]) -> Sequence[int] | None:
    """Each output row's input row, when the result's index still says it (None: unknown)."""
    index = result.index
    if isinstance(index, pd.RangeIndex) and index.equals(pd.RangeIndex(*unit)):
        return range(*unit)  # one output per input row, in order (assign, arithmetic...)
    if pd.api.types.is_integer_dtype(index.dtype) and (
        len(result) == 0 or (index.min() >= unit[0] and index.max() < unit[1])
    ):
        return list(index.tolist())
    return None
