"""A dataframe transform's result encoded for binary COPY a column at a time, with NumPy.

The general way (:func:`parallel_batch.core.frames.frame_out`) turns every value into a Python
object and encodes rows one by one (about 0.6 us a row of five numbers); a result whose columns
are all numbers, booleans or timestamps needs neither::

    column -> big-endian NumPy array (n, width) + NULL mask      per target column
              (text: each value's UTF-8 bytes)
    rows   =  int16 field count | per field: int32 length, value bytes (no bytes for NULL)
           -> no text: one structured array (every field present) -> bytes; with NULLs, the
              bytes of the NULL values are dropped with one boolean mask
           -> with text: each field as a list of its rows' bytes (length and value, from a
              structured array's ``tolist``), the lists zipped row by row into one join

:func:`encode_frame` answers None whenever it cannot give the very bytes the general way would
(a column of another type, an integer beyond its column's range, a timestamp with nanoseconds,
an infinite or too large float, text with a NUL or not all str, a text COPY): the caller then takes the general way, which also
says which value does not fit. Types are recognised by the target columns' oids, so a domain over
one of these types is written the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from parallel_batch.store.copy_data import CopyData, CopyFormat

__all__ = ["encode_frame"]

_BOOL, _INT8, _INT2, _INT4, _FLOAT4, _FLOAT8 = 16, 20, 21, 23, 700, 701
_TIMESTAMP, _TIMESTAMPTZ = 1114, 1184
_INTEGERS = {_INT2: ">i2", _INT4: ">i4", _INT8: ">i8"}
_FLOATS = {_FLOAT4: ">f4", _FLOAT8: ">f8"}
_REAL_MAX = float(np.finfo(np.float32).max)
_INT64_MAX = 2**63 - 1
_RANGES = {
    _INT2: (-(2**15), 2**15 - 1),
    _INT4: (-(2**31), 2**31 - 1),
    _INT8: (-(2**63), _INT64_MAX),
}
# PostgreSQL's timestamps count microseconds from 2000-01-01 00:00 (UTC for timestamptz).
_PG_EPOCH_NS = int(pd.Timestamp("2000-01-01").value)

Column = tuple[np.ndarray, np.ndarray | None]  # big-endian values (every row), NULL mask
Text = list[bytes | None]  # each row's UTF-8 bytes, None for NULL
_TEXT_OIDS = frozenset({25, 1043})  # text, varchar (a varchar(n) the server checks itself)
_NULL = b"\xff\xff\xff\xff"  # a NULL field: length -1, no value


def encode_frame(result: pd.DataFrame, columns: Sequence[str], fmt: CopyFormat) -> CopyData | None:
    """``result``'s rows for binary COPY into ``columns`` (a column missing from ``result`` is
    NULL), or None when some column is not one this module encodes exactly as psycopg would.

    :param result: the transform's DataFrame, its column dtypes already checked against the
        target's (``frames._check``).
    :param columns: the target columns written, in order.
    :param fmt: their COPY format (type oids).
    """
    n = len(result)
    if not fmt.binary or n == 0:
        return None
    encoded: list[Column | None] = []  # None: a column of NULLs
    texts: dict[int, Text] = {}  # by position
    for name, oid in zip(columns, fmt.type_oids, strict=True):
        if name not in result.columns:
            encoded.append(None)
            continue
        if oid in _TEXT_OIDS:
            text = _text(result[name])
            if text is None:
                return None
            texts[len(encoded)] = text
            encoded.append(None)
            continue
        column = _column(result[name], oid)
        if column is None:
            return None
        encoded.append(column)
    if texts:
        return CopyData(_joined_rows(encoded, texts, n), n, True)
    return CopyData(_rows(encoded, n), n, True)


def _column(series: pd.Series, oid: int) -> Column | None:
    """The column's values as big-endian bytes of ``oid``'s binary format, or None."""
    dtype = series.dtype
    kind = getattr(dtype, "kind", "O")
    missing = series.isna().to_numpy(dtype=bool)
    nulls = missing if missing.any() else None
    if kind in "iu" and oid in _INTEGERS:
        if kind == "u" and series.max() > _INT64_MAX:
            return None  # beyond any integer column: the general way says so
        values = series.to_numpy(dtype=np.int64, na_value=0)
        low, high = _RANGES[oid]
        if values.min() < low or values.max() > high:
            return None  # the general way says which value does not fit
        return values.astype(_INTEGERS[oid]), nulls
    if kind == "f" and oid in _FLOATS:
        values = series.to_numpy(dtype=np.float64, na_value=0.0)
        present = values if nulls is None else values[~nulls]
        if not np.isfinite(present).all():
            return None
        if oid == _FLOAT4 and len(present) and np.abs(present).max() > _REAL_MAX:
            return None
        return values.astype(_FLOATS[oid]), nulls
    if kind == "b" and oid == _BOOL:
        values = series.to_numpy(dtype=bool, na_value=False)
        return values.astype(np.uint8), nulls
    if kind == "M" and oid in (_TIMESTAMP, _TIMESTAMPTZ):
        aware = getattr(dtype, "tz", None) is not None
        if aware != (oid == _TIMESTAMPTZ):
            return None  # naive into timestamptz (or aware into timestamp): psycopg's rules
        if aware:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        ns = series.to_numpy(dtype="datetime64[ns]").view(np.int64)
        if nulls is not None:
            ns = np.where(nulls, _PG_EPOCH_NS, ns)
        if (ns % 1000).any():
            return None  # nanoseconds: the general way drops them with a warning
        return ((ns - _PG_EPOCH_NS) // 1000).astype(">i8"), nulls
    return None


def _rows(columns: list[Column | None], n: int) -> bytes:
    """Frame the rows: every field laid out as if present, then NULLs' value bytes dropped."""
    fields: list[tuple[str, Any]] = [("count", ">i2")]
    for i, column in enumerate(columns):
        fields.append((f"l{i}", ">i4"))
        if column is not None:
            fields.append((f"v{i}", column[0].dtype))
    table = np.empty(n, dtype=np.dtype(fields))
    table["count"] = len(columns)
    any_null = False
    for i, column in enumerate(columns):
        if column is None:
            table[f"l{i}"] = -1
            continue
        values, nulls = column
        width = values.dtype.itemsize
        table[f"v{i}"] = values
        if nulls is None:
            table[f"l{i}"] = width
        else:
            table[f"l{i}"] = np.where(nulls, -1, width)
            any_null = True
    if not any_null:
        return table.tobytes()
    keep = np.ones((n, table.dtype.itemsize), dtype=bool)
    offsets = table.dtype.fields
    assert offsets is not None
    for i, column in enumerate(columns):
        if column is not None and column[1] is not None:
            offset, width = offsets[f"v{i}"][1], column[0].dtype.itemsize
            keep[column[1], offset : offset + width] = False
    return table.view(np.uint8).reshape(n, -1)[keep].tobytes()


def _text(series: pd.Series) -> Text | None:
    """A column of str (or NULL) as each row's UTF-8 bytes, or None (other values, a NUL, a
    string UTF-8 cannot encode: the general way refuses or converts them)."""
    if getattr(series.dtype, "kind", "O") != "O":
        return None  # numbers into text: the general way writes str(value)
    missing = series.isna().to_numpy(dtype=bool)
    values = series.to_numpy(dtype=object)
    present = values[~missing] if missing.any() else values
    if len(present) and pd.api.types.infer_dtype(present, skipna=False) != "string":
        return None
    if "\x00" in "".join(present):
        return None  # PostgreSQL text cannot hold NUL: the general way says so
    try:
        encoded: Text = list(map(str.encode, present))
    except UnicodeEncodeError:
        return None
    if len(present) == len(values):
        return encoded
    rows: Text = [None] * len(values)
    for index, value in zip(np.flatnonzero(~missing).tolist(), encoded, strict=True):
        rows[index] = value
    return rows


def _joined_rows(columns: list[Column | None], texts: dict[int, Text], n: int) -> bytes:
    """Frame rows with text fields: every field as a list of its rows' bytes, joined."""
    count = np.array([len(columns)], dtype=">i2").tobytes()
    fields: list[Any] = [itertools.repeat(count, n)]
    for position, column in enumerate(columns):
        text = texts.get(position)
        if text is not None:
            sizes: Iterable[int] = map(len, text)  # type: ignore[arg-type]  # no None in it
            if None in text:
                sizes = [-1 if value is None else len(value) for value in text]
                text = [b"" if value is None else value for value in text]
            lengths = np.fromiter(sizes, dtype=">i4", count=n)
            fields.append(np.frombuffer(lengths.tobytes(), dtype="V4").tolist())
            fields.append(text)
        elif column is None:
            fields.append(itertools.repeat(_NULL, n))
        else:
            values, nulls = column
            width = values.dtype.itemsize
            table = np.empty(n, dtype=np.dtype([("n", ">i4"), ("v", values.dtype)]))
            table["n"] = width
            table["v"] = values
            items = np.frombuffer(table.tobytes(), dtype=f"V{4 + width}").tolist()
            if nulls is not None:
                for index in np.flatnonzero(nulls).tolist():
                    items[index] = _NULL
            fields.append(items)
    return b"".join(
        itertools.chain.from_iterable(zip(*fields, strict=False))
    )  # repeats end with the lists
