"""Convert a batch's CSV fields to typed Arrow columns, with the row reader's results exactly.

Each kind has a fast path in Arrow's compute functions (C++) for the usual spellings: a regular
expression picks the fields it surely reads as :mod:`~parallel_batch.sources.csv.convert` does,
and a cast converts them. Every other field (a NULL spelling aside) gets the row reader's own
:func:`~parallel_batch.sources.csv.convert.convert_field`: its reason when it fails, its value
when it does not (then the column is rebuilt from Python values; rare). So a field reads the
same either way, and a bad one costs about itself::

    fields ─┬─ NULL spellings ──────────────► NULL, or "a value is required"
            ├─ the kind's usual spelling ───► cast (C++)
            └─ anything else ───────────────► convert_field: the reason, or the value

==========  ===================================================  =======================
kind        fast when                                            Arrow type
==========  ===================================================  =======================
int         ``-?[0-9]{1,18}``                                    int64
decimal     ``-?[0-9]{1,20}(\\.[0-9]{1,17})?``                    decimal128(38, scale of
                                                                 the batch's fields)
text        always                                               string
email       ``[^@\\s]+@[^@\\s]+`` (Python's ``\\s``, spelled out)  string
timestamp   ``YYYY-MM-DD[T ]HH:MM:SS[.ffffff]`` (+ ``Z`` or       timestamp[us, UTC]
            ``±HH:MM``), its day, time and offset in range (read
            with NumPy)
others      never (convert_column, in Python)                    from the values
==========  ===================================================  =======================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parallel_batch.sources.csv.columns_scan import Ints
from parallel_batch.sources.csv.convert import ColumnKind, convert_column, convert_field
from parallel_batch.sources.csv.schema import CsvSchema

__all__ = ["COLUMNAR_KINDS", "PYTHON_SPACE", "RowReaderNeeded", "convert_table"]

# Kinds the columnar reader converts (uuid and json values have no plain Arrow type here).
COLUMNAR_KINDS = frozenset(
    {"int", "decimal", "text", "email", "timestamp", "localtime", "date", "float", "bool"}
)
_ARROW_TYPES: dict[str, pa.DataType] = {
    "localtime": pa.timestamp("us"),
    "date": pa.date32(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}
# Python's \s (str.isspace: the 29 characters of Unicode 15's White_Space and the ASCII
# separators), spelled out for RE2, whose \s is [\t\n\f\r ] (test_columns checks the list).
PYTHON_SPACE = (
    r"\x{9}-\x{d}\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
    r"\x{202f}\x{205f}\x{3000}"
)
_SPACE = PYTHON_SPACE
_EMAIL = f"^[^@{_SPACE}]+@[^@{_SPACE}]+$"
_INT = r"^-?[0-9]{1,18}$"
_DECIMAL = r"^-?[0-9]{1,20}(\.[0-9]{1,17})?$"
_TIMESTAMP = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
_UTC = pa.timestamp("us", "UTC")
# The instants a Python datetime holds in UTC (years 1 to 9999): one beyond them, from a local
# time near either end and its offset, is the row reader's (an aware datetime keeps it).
_MICROS = (-62_135_596_800_000_000, 253_402_300_799_999_999)


class RowReaderNeeded(Exception):
    """The batch is one for the row reader (a value Arrow cannot hold as it is)."""


_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _timestamps(texts: pa.Array, shaped: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The timestamps of the fields ``shaped`` picks (``_TIMESTAMP``: date and time in fixed
    places, a fraction's and the offset's found from the field's end) whose parts are in range
    (the others not fast), as ``datetime.fromisoformat`` reads them, a missing offset meaning
    UTC: the digits read from the string array's buffers with NumPy."""
    size = len(texts)
    picked = np.flatnonzero(shaped.to_numpy(zero_copy_only=False))
    micros = np.zeros(size, dtype=np.int64)
    fast = np.zeros(size, dtype=bool)
    if len(picked):
        buffers = texts.buffers()
        offsets = np.frombuffer(buffers[1], np.int32, size + 1, texts.offset * 4)
        chars = np.frombuffer(buffers[2], np.uint8)
        start = offsets[:-1][picked].astype(np.int64)
        length = offsets[1:][picked] - start
        last = len(chars) - 1

        def at(place: Ints | int) -> Ints:
            return chars[np.minimum(start + place, last)].astype(np.int64)

        def number(place: Ints | int, width: int) -> Ints:
            value = np.zeros(len(start), dtype=np.int64)
            for k in range(width):
                value = value * 10 + at(place + k) - 48
            return value

        # what follows the seconds: ".f" (1-6 digits), then "Z", "+HH:MM" or nothing
        zone_at = length - 6
        zoned = (length >= 25) & ((at(zone_at) == ord("+")) | (at(zone_at) == ord("-")))
        zone_width = np.where(zoned, 6, np.where(at(length - 1) == ord("Z"), 1, 0))
        digits = np.where(at(19) == ord("."), length - 20 - zone_width, 0)
        fraction = np.zeros(len(start), dtype=np.int64)
        for k in range(6):  # microseconds: the digits there are, then zeros
            fraction = fraction * 10 + np.where(k < digits, at(20 + k) - 48, 0)
        year, month, day = number(0, 4), number(5, 2), number(8, 2)
        hour, minute, second = number(11, 2), number(14, 2), number(17, 2)
        zone_hours, zone_minutes = number(zone_at + 1, 2) * zoned, number(zone_at + 4, 2) * zoned
        sign = np.where(at(zone_at) == ord("-"), -1, 1)
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        month_ok = (month >= 1) & (month <= 12)
        days_in = _MONTH_DAYS[np.where(month_ok, month, 0)] + (leap & (month == 2))
        valid = (year >= 1) & month_ok & (day >= 1) & (day <= days_in)
        valid &= (hour <= 23) & (minute <= 59) & (second <= 59)
        valid &= (zone_hours <= 23) & (zone_minutes <= 59)
        # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
        shifted = year - (month <= 2)
        era = shifted // 400
        of_era = shifted - era * 400
        of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
        days = era * 146097 + of_era * 365 + of_era // 4 - of_era // 100 + of_year - 719468
        seconds = days * 86400 + hour * 3600 + minute * 60 + second
        seconds -= sign * (zone_hours * 3600 + zone_minutes * 60)
        micros[picked] = np.where(valid, seconds * 1_000_000 + fraction, 0)
        fast[picked] = valid
        if ((micros < _MICROS[0]) | (micros > _MICROS[1])).any():
            raise RowReaderNeeded("an instant beyond the years 1 to 9999 in UTC")
    return pa.array(micros, _UTC), pa.array(fast)


def _fast(kind: ColumnKind, texts: pa.Array) -> tuple[pa.Array, pa.Array] | None:
    """The kind's fast path: values (meaningless where not fast) and the fast fields."""
    if kind == "text":
        return texts, pa.array([True] * len(texts), pa.bool_())
    if kind == "email":
        return texts, pc.match_substring_regex(texts, _EMAIL)
    if kind == "int":
        fast = pc.match_substring_regex(texts, _INT)
        return pc.cast(pc.if_else(fast, texts, "0"), pa.int64()), fast
    if kind == "decimal":
        fast = pc.match_substring_regex(texts, _DECIMAL)
        safe = pc.if_else(fast, texts, "0")
        point = pc.find_substring(safe, ".")
        digits = pc.if_else(
            pc.less(point, 0), 0, pc.subtract(pc.subtract(pc.utf8_length(safe), point), 1)
        )
        scale = pc.max(digits).as_py() or 0
        return pc.cast(safe, pa.decimal128(38, scale)), fast
    if kind == "timestamp":
        return _timestamps(texts, pc.match_substring_regex(texts, _TIMESTAMP))
    return None


def _from_python(kind: ColumnKind, values: Sequence[Any]) -> pa.Array:
    try:
        if kind != "timestamp":
            return pa.array(values, _ARROW_TYPES.get(kind))
        array = pa.array(values, _UTC)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise RowReaderNeeded(f"{kind} values Arrow cannot hold: {exc}") from exc
    micros = pc.cast(array, pa.int64())
    low, high = pc.min(micros).as_py(), pc.max(micros).as_py()
    if low is not None and (low < _MICROS[0] or high > _MICROS[1]):
        raise RowReaderNeeded("an instant beyond the years 1 to 9999 in UTC")
    return array


def convert_array(
    kind: ColumnKind, required: bool, texts: pa.Array, nulls: frozenset[str]
) -> tuple[pa.Array, dict[int, str]]:
    """A column's fields (strings, none NULL) as typed values, and the failures by index with
    the row reader's reasons.

    :raises RowReaderNeeded: for values Arrow cannot hold as the row reader reads them.
    """
    fast = _fast(kind, texts)
    if fast is None:
        values, reasons = convert_column(kind, required, texts.to_pylist(), nulls)
        return _from_python(kind, values), reasons
    array, picked = fast
    empty = pc.is_in(texts, pa.array(sorted(nulls), pa.string()))
    if kind != "text":
        empty = pc.or_(empty, pc.equal(texts, ""))
    others = pc.and_(pc.invert(picked), pc.invert(empty)).to_numpy(zero_copy_only=False)
    failures: dict[int, str] = {}
    patches: dict[int, Any] = {}
    if others.any():
        for i in others.nonzero()[0].tolist():
            try:
                patches[i] = convert_field(kind, required, texts[i].as_py(), nulls)
            except ValueError as exc:
                failures[i] = str(exc)
    if required and pc.any(empty).as_py():
        failures.update(dict.fromkeys(pc.indices_nonzero(empty).to_pylist(), "a value is required"))
    array = pc.if_else(pc.or_(empty, pc.invert(picked)), pa.scalar(None, array.type), array)
    if patches:
        values = array.to_pylist()
        for i, value in patches.items():
            values[i] = value
        array = _from_python(kind, values)
    return array, failures


def convert_table(
    schema: CsvSchema, columns: Sequence[pa.Array], nulls: frozenset[str]
) -> tuple[list[pa.Array], dict[int, str]]:
    """Convert each column; the failures by row name the first column at fault, as the row
    reader's do.

    :raises RowReaderNeeded: see :func:`convert_array`.
    """
    arrays: list[pa.Array] = []
    failures: dict[int, str] = {}
    for column, texts in zip(schema.columns, columns, strict=True):
        array, bad = convert_array(column.kind, column.required, texts, nulls)
        arrays.append(array)
        for i in sorted(bad):
            failures.setdefault(i, f"{column.name}: {bad[i]}")
    return arrays, failures
