"""Arrow columns encoded for binary COPY, the rows as psycopg's encoder would write them.

The columnar path's counterpart of :class:`~parallel_batch.store.copy_data.CopyEncoder`: a table
of typed columns becomes a :class:`~parallel_batch.store.copy_data.CopyData` body (no signature,
no trailer) in one call of pgpq's Rust encoder, never a Python object a value::

    ArrowCopyEncoder(names, types)   ready(types): every column type has an encoding here
        encode(table)   each column cast to its target's Arrow type ─► pgpq ─► CopyData

A column is cast only between types that mean the same value (an integer into any integer
column or numeric, a decimal into numeric, a string into text); a value the cast would change
or the target would refuse (out of range, more decimals than the scale, a NUL in text, a real
beyond float4) raises :class:`ColumnsRefused`, and the caller takes the row path, whose checks
name the row and column (:class:`~parallel_batch.core.target.Target`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pgpq
import pyarrow as pa
import pyarrow.compute as pc

from parallel_batch.store.copy_data import BINARY_TRAILER, CopyData

__all__ = ["ArrowCopyEncoder", "ColumnsRefused", "arrow_type_of"]


class ColumnsRefused(Exception):
    """A column cannot be encoded for its target as it is (the row path says why, row by row).

    :param by_type: refused for its type, whatever its values (every batch would be).
    """

    def __init__(self, message: str, *, by_type: bool = False) -> None:
        super().__init__(message)
        self.by_type = by_type


_Check = Callable[[pa.DataType], bool]
# target column type (format_type, modifiers off) -> (its Arrow type, the Arrow types cast to it)
_TYPES: dict[str, tuple[pa.DataType, _Check]] = {
    "smallint": (pa.int16(), pa.types.is_integer),
    "integer": (pa.int32(), pa.types.is_integer),
    "bigint": (pa.int64(), pa.types.is_integer),
    "real": (pa.float32(), pa.types.is_floating),
    "double precision": (pa.float64(), pa.types.is_floating),
    "text": (pa.string(), pa.types.is_string),
    "character varying": (pa.string(), pa.types.is_string),
    "boolean": (pa.bool_(), pa.types.is_boolean),
    "date": (pa.date32(), pa.types.is_date32),
    "timestamp without time zone": (
        pa.timestamp("us"),
        lambda t: pa.types.is_timestamp(t) and t.tz is None,
    ),
    "timestamp with time zone": (
        pa.timestamp("us", "UTC"),
        lambda t: pa.types.is_timestamp(t) and t.tz is not None,
    ),
}
_MODIFIERS = re.compile(r"\(.*\)")
_NUMERIC_SOURCES: _Check = lambda t: pa.types.is_decimal(t) or pa.types.is_integer(t)  # noqa: E731


_NUMERIC = re.compile(r"numeric\((\d+)(?:,(\d+))?\)")
_REAL_MAX = 3.4028234663852886e38  # the largest finite float4


def arrow_type_of(type_name: str) -> tuple[pa.DataType, _Check] | None:
    """The Arrow type a column of ``type_name`` is encoded from, and which Arrow types are cast
    to it; None: not encoded here (nor a numeric without a precision: a Decimal keeps its own
    scale, an Arrow decimal its column's)."""
    numeric = _NUMERIC.fullmatch(type_name.strip())
    if numeric is not None:
        precision, scale = int(numeric.group(1)), int(numeric.group(2) or 0)
        if precision > 38:
            return None
        return pa.decimal128(precision, scale), _NUMERIC_SOURCES
    found = _TYPES.get(_MODIFIERS.sub("", type_name).strip())
    return None if found is None or found[0] is None else (found[0], found[1])


class ArrowCopyEncoder:
    """Encode Arrow tables for one target's binary COPY.

    :param names: the target's written columns, in order.
    :param types: their types (``format_type``, with modifiers).
    """

    def __init__(self, names: Sequence[str], types: Sequence[str]) -> None:
        found = [arrow_type_of(t) for t in types]
        if any(entry is None for entry in found):
            raise ValueError("a column type without an Arrow encoding (see ready())")
        self.names = tuple(names)
        self._types = [entry for entry in found if entry is not None]

    @staticmethod
    def ready(types: Sequence[str]) -> bool:
        """Whether every column type has an Arrow encoding here."""
        return all(arrow_type_of(t) is not None for t in types)

    def _column(self, index: int, column: pa.Array) -> pa.Array:
        wanted, accepts = self._types[index]
        have = column.type
        if pa.types.is_null(have):
            return pa.nulls(len(column), wanted)
        if not accepts(have):
            raise ColumnsRefused(
                f"{self.names[index]}: {have} values are not cast to it here", by_type=True
            )
        if pa.types.is_string(wanted) and pc.any(pc.match_substring(column, "\x00")).as_py():
            raise ColumnsRefused(f"{self.names[index]}: a NUL character")
        if wanted == pa.float32():
            largest = pc.max(pc.abs(pc.if_else(pc.is_finite(column), column, 0.0))).as_py()
            if largest is not None and largest > _REAL_MAX:
                raise ColumnsRefused(f"{self.names[index]}: a value beyond real's range")
        if have == wanted:
            return column
        try:
            if pa.types.is_integer(have) and pa.types.is_decimal(wanted):
                column = pc.cast(column, pa.decimal128(38, 0))  # then rescaled, range checked
            # safe: a value out of range, or with more decimals than the scale, raises
            return pc.cast(column, wanted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ColumnsRefused(f"{self.names[index]}: {exc}") from exc

    def encode(self, table: pa.Table) -> CopyData:
        """The table's rows (its columns in the target's order, by name) as a COPY body.

        :raises ColumnsRefused: for a column (or a value) not encoded as it is.
        """
        columns = [
            self._column(i, table.column(name).combine_chunks())
            for i, name in enumerate(self.names)
        ]
        batch = pa.RecordBatch.from_arrays(columns, names=list(self.names))
        try:
            # one encoder a batch: it holds rows back until finish(), which adds the trailer
            encoder = pgpq.ArrowToPostgresBinaryEncoder(batch.schema)
        except ValueError as exc:
            raise ColumnsRefused(str(exc)) from exc
        encoder.write_header()  # the signature goes with the COPY, not the body
        body = bytes(encoder.write_batch(batch)) + bytes(encoder.finish())
        if not body.endswith(BINARY_TRAILER):  # pragma: no cover  # pgpq's format changed
            raise ColumnsRefused("pgpq's COPY data does not end with the binary trailer")
        return CopyData(body[: -len(BINARY_TRAILER)], batch.num_rows, True)
