"""A batch of a table read a column at a time, for a ``dataframe`` transform.

A row reader's batch costs a Python tuple and a Python object per value, then ``frame_in``
makes the frame's columns from them again. Read as columns, a batch is one row of arrays::

    SELECT array_agg(CAST(id AS int8)), array_agg(CAST(price AS text)), ...
    FROM (SELECT id, n, price, ... FROM t WHERE <the batch's range> ORDER BY id) AS batch

in binary; an array of integers, floats, booleans or timestamps without a NULL becomes a NumPy
column straight from its bytes (each element is its length and its value: a structured view);
text, numeric (as text, then ``Decimal``) and any array with a NULL are loaded by psycopg into
lists and made into columns as ``frame_in`` makes them. The frame is the one ``frame_in`` would
make from the row reader's tuples (same dtypes, same values), and the tuples themselves are made
only when a dead letter needs one (:class:`~parallel_batch.core.frame_rows.FrameRows`).

Only for tables whose key and columns are all of these types (:func:`column_kinds`); the key
must be an integer, so that the batch's order can be checked (and restored) in NumPy whatever
order the aggregate saw its rows in. A timestamp beyond Python's years 1-9999 (or infinity) is
left to psycopg, which refuses it as it does for the row reader.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import Loader, Transformer
from psycopg.pq import Format

from parallel_batch.core.frame_rows import FrameRows

__all__ = ["column_kinds", "columns_select", "read_frame"]

Row = tuple[Any, ...]

# psycopg type name -> how its column is read. "fixed" kinds are decoded by NumPy when the
# array has no NULL; "list" kinds are loaded by psycopg.
_KINDS = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "float8": "float",
    "bool": "bool",
    "timestamptz": "timestamptz",
    "timestamp": "timestamp",
    "numeric": "numeric",
    "text": "text",
    "varchar": "text",
}
_WIDTHS = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float8": ">f8", "bool": "u1"}
_INTEGER_KEYS = frozenset({"int2", "int4", "int8"})
_UTC_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_NAIVE_2000 = dt.datetime(2000, 1, 1)
_US_2000_FROM_1970 = 946_684_800_000_000
# Python's datetime range, in microseconds from 2000-01-01 (PostgreSQL's epoch).
_MIN_US = (dt.datetime(1, 1, 1) - _NAIVE_2000) // dt.timedelta(microseconds=1)
_MAX_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999) - _NAIVE_2000) // dt.timedelta(
    microseconds=1
)
_HEADER = struct.Struct("!iiI")


class _RawArray(Loader):
    """An array in binary, as its bytes (decoded with NumPy, or by psycopg when it has NULLs)."""

    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)


def column_kinds(type_names: Sequence[str], key_index: int) -> tuple[str, ...] | None:
    """Each column's kind (by its psycopg type name), or None when the table cannot be read as
    columns (a column of another type, or a key that is not an integer)."""
    if type_names[key_index] not in _INTEGER_KEYS:
        return None
    kinds = tuple(_KINDS.get(name, "") for name in type_names)
    if not all(kinds):
        return None
    return tuple(
        f"fixed:{name}" if name in _WIDTHS or kind.startswith("timestamp") else kind
        for name, kind in zip(type_names, kinds, strict=True)
    )


def columns_select(
    columns: Sequence[str], type_names: Sequence[str], kinds: Sequence[str]
) -> sql.Composable:
    """The select list of the aggregate over the batch's rows: each column cast to its base
    type (a domain's array would be of another type), numeric to text."""
    aggregates = [
        sql.SQL("array_agg(CAST({} AS {}))").format(
            sql.Identifier(column), sql.SQL("text" if kind == "numeric" else name)
        )
        for column, name, kind in zip(columns, type_names, kinds, strict=True)
    ]
    return sql.SQL("SELECT ") + sql.SQL(", ").join(aggregates)


def read_frame(
    conn: psycopg.Connection,
    statement: str,
    params: dict[str, Any],
    columns: Sequence[str],
    kinds: Sequence[str],
    key_index: int,
) -> FrameRows:
    """Run the batch's aggregate and make its frame (see the module's docstring)."""
    with conn.cursor(binary=True) as cur:
        fixed = {kind.split(":")[1] for kind in kinds if kind.startswith("fixed:")}
        for name in fixed:
            cur.adapters.register_loader(psycopg.adapters.types[name].array_oid, _RawArray)
        found = cur.execute(statement, params, prepare=False).fetchone()
    assert found is not None  # an aggregate without GROUP BY gives one row
    return _decode(conn, list(found), columns, kinds, key_index)


def _decode(
    conn: psycopg.Connection,
    values: list[Any],
    columns: Sequence[str],
    kinds: Sequence[str],
    key_index: int,
) -> FrameRows:
    import numpy as np
    import pandas as pd

    from parallel_batch.core.frames import frame_in

    if values[key_index] is None:  # no row in the range
        return FrameRows(frame_in([], (0, 0), columns), list)
    made: list[Any] = []  # per column: a NumPy array, or a list of Python values
    for value, kind in zip(values, kinds, strict=True):
        if kind.startswith("fixed:"):
            name = kind.split(":")[1]
            array = _fixed(value, name)
            if array is None:  # NULLs, or a timestamp Python cannot hold: psycopg's way
                loader = Transformer(conn).get_loader(
                    psycopg.adapters.types[name].array_oid, Format.BINARY
                )
                made.append(loader.load(value))
            else:
                made.append(array)
        elif kind == "numeric":  # as text; map() alone where there is no NULL (faster)
            made.append(
                [None if v is None else Decimal(v) for v in value]
                if None in value
                else list(map(Decimal, value))
            )
        else:
            made.append(value)
    key = np.asarray(made[key_index], dtype=np.int64)
    if len(key) > 1 and not bool((key[1:] > key[:-1]).all()):  # the aggregate's own order
        order = np.argsort(key, kind="stable")
        made = [
            m[order] if isinstance(m, np.ndarray) else [m[i] for i in order.tolist()] for m in made
        ]
    n = len(key)
    index = pd.RangeIndex(0, n)
    frame_columns = {
        column: _frame_column(m, kind, index)
        for column, m, kind in zip(columns, made, kinds, strict=True)
    }
    frame = pd.DataFrame(frame_columns, index=index, copy=False)

    def make_rows() -> list[Row]:
        return list(
            zip(*(_python(m, kind) for m, kind in zip(made, kinds, strict=True)), strict=True)
        )

    return FrameRows(frame, make_rows)


def _fixed(raw: bytes, name: str) -> Any:
    """A one-dimensional array without NULLs as NumPy values (numbers, booleans, timestamps as
    microseconds from 2000), or None."""
    import numpy as np

    ndim, has_null, _ = _HEADER.unpack_from(raw)
    if ndim != 1 or has_null:
        return None
    width = _WIDTHS.get(name, ">i8")  # timestamps: int8 microseconds
    elements = np.frombuffer(raw, dtype=np.dtype([("n", ">i4"), ("v", width)]), offset=20)
    values = elements["v"]
    if name.startswith("timestamp"):
        values = values.astype(np.int64)
        if len(values) and (values.min() < _MIN_US or values.max() > _MAX_US):
            return None
        return values
    if name == "bool":
        return values.astype(bool)
    return values.astype(np.float64 if name == "float8" else np.int64)


def _frame_column(made: Any, kind: str, index: Any) -> Any:
    """A frame column as ``frame_in`` makes it from the same values."""
    import numpy as np
    import pandas as pd

    from parallel_batch.core.frames import frame_column

    if not isinstance(made, np.ndarray):
        return frame_column(made, index)
    if kind in ("fixed:timestamptz", "fixed:timestamp"):
        times = pd.DatetimeIndex((made + _US_2000_FROM_1970).view("datetime64[us]"))
        if kind == "fixed:timestamptz":
            times = times.tz_localize("UTC")
        return pd.Series(times, index=index, copy=False)
    if made.dtype == bool:
        return pd.Series(made, index=index, copy=False)
    return made


def _python(made: Any, kind: str) -> list[Any]:
    """A column's values as the row reader gives them."""
    if isinstance(made, list):
        return made
    if kind == "fixed:timestamptz":
        return [_UTC_2000 + dt.timedelta(microseconds=us) for us in made.tolist()]
    if kind == "fixed:timestamp":
        return [_NAIVE_2000 + dt.timedelta(microseconds=us) for us in made.tolist()]
    return list(made.tolist())
