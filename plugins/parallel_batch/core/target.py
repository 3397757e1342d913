"""The target table as the core writes it: columns, their COPY format, their conflict key, and the
values they would refuse or change without a word.

Built once per chunk from the catalog (:meth:`Target.resolve`) and pickled to the workers, which
check and encode each output row before it leaves them::

    check_rows(rows)   a column at a time (C-level min/max/join/quantize); only a batch where some
                       column may fail is looked at row by row (check_row)
        - an integer out of its column's range (a bigint's in binary COPY, and a row's width,
          are left to the encoder, which refuses them itself; explain() says it in the
          check's words)
        - more decimals than a numeric(p,s) keeps (PostgreSQL would round them silently)
        - a NUL character in text (PostgreSQL text cannot hold one)
    CopyEncoder        the columns' exact types (binary COPY applies no casts)

Whatever else the database refuses (a foreign key, a check constraint) is found at the commit.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation
from functools import cached_property, partial
from itertools import repeat
from typing import Any, NamedTuple

import psycopg

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.store.catalog import TableColumn, table_columns, unique_keys
from parallel_batch.store.copy_data import CopyFormat
from parallel_batch.store.identifiers import column_sql, parse_table
from parallel_batch.store.writer import WRITE_MODES, WriteMode, copy_format

__all__ = ["ColumnLimit", "Target", "TargetValueError", "parse_limit"]

Row = tuple[Any, ...]

_INTEGER_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
_TEXT_TYPES = frozenset({"text", "character varying", "character", "citext", "name"})
_NUMERIC = re.compile(r"numeric\((\d+)(?:,(\d+))?\)")
_NUL = "\x00"
_REAL_MAX = 3.4028234663852886e38  # the largest finite float4


class TargetValueError(ValueError):
    """Raised when an output value does not fit its target column (named in the message)."""


class ColumnLimit(NamedTuple):
    """What a target column accepts beyond its type: a numeric's digits, an integer's range.

    :param type_name: the column's type with its modifiers, e.g. ``numeric(12,2)``.
    :param integer_digits: digits before the point at most (None: unlimited).
    :param scale: digits after the point at most (None: unlimited).
    :param int_range: the smallest and largest integer (None: no integer column).
    :param float_max: the largest finite magnitude (``real``: a larger one would be stored as
        Infinity without a word).
    """

    type_name: str
    integer_digits: int | None = None
    scale: int | None = None
    int_range: tuple[int, int] | None = None
    float_max: float | None = None


def parse_limit(type_name: str) -> ColumnLimit | None:
    """Return the limit of a column of type ``type_name`` (``format_type`` with modifiers)."""
    if type_name in _INTEGER_RANGES:
        return ColumnLimit(type_name, int_range=_INTEGER_RANGES[type_name])
    if type_name == "real":
        return ColumnLimit(type_name, float_max=_REAL_MAX)
    match = _NUMERIC.fullmatch(type_name)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2) or 0)
        return ColumnLimit(type_name, integer_digits=precision - scale, scale=scale)
    return None


@dataclass(frozen=True)
class Target:
    """A target table's written columns and how their values are checked and encoded.

    :param table: ``schema.table``.
    :param columns: the columns written, in output row order.
    :param types: each written column's type with modifiers, in order.
    :param copy: the COPY format of the written columns.
    :param key_columns: the conflict key upserts use (empty: none; ``copy`` mode only).
    :param write_mode: ``copy``, ``upsert`` or ``auto``.
    """

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    copy: CopyFormat
    key_columns: tuple[str, ...]
    write_mode: WriteMode = "auto"

    @classmethod
    def resolve(
        cls,
        conn: psycopg.Connection,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        key_columns: Sequence[str] | None = None,
        write_mode: WriteMode = "auto",
    ) -> Target:
        """Read the target from the catalog.

        :param columns: the columns written; None: every column that is not GENERATED ALWAYS.
        :param key_columns: the conflict key; None: the primary key (or first unique key).
        :raises ConfigurationError: for a missing table or column, a generated column, or no
            unique key where the write mode needs one.
        """
        parse_table(table)
        if write_mode not in WRITE_MODES:
            raise ConfigurationError(
                f"write_mode must be one of {list(WRITE_MODES)}, got {write_mode!r}"
            )
        found = {c.name: c for c in table_columns(conn, table)}
        if columns is None:
            chosen = [c for c in found.values() if not c.generated]
        else:
            chosen = [_column(found, name, table) for name in columns]
            if len({c.name for c in chosen}) != len(chosen):
                raise ConfigurationError("target columns must not name a column twice")
        if not chosen:
            raise ConfigurationError(f"Table {table!r} has no column that can be written")
        keys = tuple(key_columns) if key_columns else _primary_key(conn, table, write_mode)
        for key in keys:
            _column(found, key, table)
            if key not in {c.name for c in chosen}:
                raise ConfigurationError(
                    f"the conflict key column {key!r} of {table!r} must be among the columns "
                    "written (every output row needs its key for an upsert)"
                )
        names = tuple(c.name for c in chosen)
        return cls(
            table=table,
            columns=names,
            types=tuple(c.full_type for c in chosen),
            copy=copy_format(conn, table, names),
            key_columns=keys,
            write_mode=write_mode,
        )

    @cached_property
    def limits(self) -> tuple[tuple[int, str, ColumnLimit], ...]:
        """``(index, column, limit)`` of every written column with a limit."""
        return tuple(
            (i, name, limit)
            for i, (name, type_name) in enumerate(zip(self.columns, self.types, strict=True))
            if (limit := parse_limit(type_name)) is not None
        )

    @cached_property
    def screened_limits(self) -> tuple[tuple[int, str, ColumnLimit], ...]:
        """The limits a batch is screened for before it is encoded: all but ``bigint`` in a
        binary COPY, whose encoder refuses an integer out of its range itself (smaller integers
        would wrap around: they are screened)."""
        if not self.copy.binary:
            return self.limits
        return tuple(entry for entry in self.limits if entry[2].type_name != "bigint")

    @cached_property
    def text_indexes(self) -> tuple[int, ...]:
        """Indexes of the written text columns (checked for NUL characters)."""
        return tuple(i for i, t in enumerate(self.types) if t.split("(")[0].strip() in _TEXT_TYPES)

    def check_rows(self, rows: Sequence[Row]) -> None:
        """Raise :class:`TargetValueError` at the first row with a value its column would change
        or the encoder would take; cheap when every value fits (a column at a time)."""
        if not rows or not self._suspect(rows):
            return
        for row in rows:
            self.check_row(row)

    def check_row(self, row: Row) -> None:
        """Raise :class:`TargetValueError` when a value of ``row`` does not fit its column."""
        if len(row) != len(self.columns):
            raise TargetValueError(
                f"the output row has {len(row)} values for the {len(self.columns)} columns "
                f"written to {self.table} ({', '.join(self.columns)})"
            )
        for index in self.text_indexes:
            value = row[index]
            if isinstance(value, str) and _NUL in value:
                raise TargetValueError(
                    f"{self.columns[index]}: a NUL character, which PostgreSQL text cannot store"
                )
        for index, name, limit in self.limits:
            value = row[index]
            if value is None:
                continue
            reason = _limit_reason(value, limit)
            if reason is not None:
                raise TargetValueError(f"{name}: {reason}")

    def explain(self, row: Row, error: Exception) -> TargetValueError:
        """The error of a row the COPY encoder refused, naming the column whose value it was."""
        from parallel_batch.store.copy_data import CopyEncoder, CopyFormat

        try:
            self.check_row(row)  # the check's own words where it has some (a bigint's range)
        except TargetValueError as found:
            return found
        if len(row) == len(self.columns):
            for index, value in enumerate(row):
                encoder = CopyEncoder(CopyFormat((self.copy.type_oids[index],), self.copy.binary))
                try:
                    encoder.encode([(value,)])
                except Exception as exc:
                    return TargetValueError(
                        f"{self.columns[index]}: a {type(value).__name__} value does not fit "
                        f"{self.types[index]} ({exc})"
                    )
        return TargetValueError(f"the output row cannot be written to {self.table}: {error}")

    def _suspect(self, rows: Sequence[Row]) -> bool:
        """Whether some value of ``rows`` may not fit (a column at a time, at C speed: the
        columns checked are picked out with itemgetter, never the whole batch transposed)."""
        width = len(self.columns)
        if len(rows[0]) != width or len(rows[-1]) != width:
            return True  # the others: the encoder checks each row's width, explain() names it
        for index in self.text_indexes:
            try:
                if _NUL in "".join(filter(None, map(operator.itemgetter(index), rows))):
                    return True
            except (TypeError, IndexError):  # not all text, or a short row
                return True
        for index, _, limit in self.screened_limits:
            try:
                # "is not None" in C: "None in values" would compare each value with None, and
                # a Decimal asks the numbers ABCs what None is, in Python, every time
                values = list(filter(_is_value, map(operator.itemgetter(index), rows)))
            except IndexError:  # a short row (pandas.NA fails _column_fits: a suspect too)
                return True
            if values and not _column_fits(values, limit):
                return True
        return False


def _column(found: dict[str, TableColumn], name: str, table: str) -> TableColumn:
    column_sql(name)
    column = found.get(name)
    if column is None:
        raise ConfigurationError(f"Column {name!r} does not exist in table {table!r}")
    if column.generated:
        raise ConfigurationError(
            f"Column {name!r} of {table!r} is GENERATED ALWAYS: it cannot be written"
        )
    return column


def _primary_key(conn: psycopg.Connection, table: str, write_mode: WriteMode) -> tuple[str, ...]:
    keys = unique_keys(conn, table)
    if keys:
        return keys[0]
    if write_mode == "copy":
        return ()
    raise ConfigurationError(
        f"Table {table!r} has no primary key or unique index: write_mode {write_mode!r} upserts "
        "on one (retries and reruns replace rows by key). Add a key, or use write_mode='copy' "
        "(a rerun then duplicates rows)"
    )


_is_value = partial(operator.is_not, None)
# Quantizing to a numeric's scale in the default context (28 digits) fails for a value of more
# digits, which a numeric(40,2) stores as it is: enough digits for any numeric's (1000 at most).
_exact = Context(prec=1100, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _column_fits(values: list[Any], limit: ColumnLimit) -> bool:
    """Whether every value fits ``limit`` (a column at a time); False may be a false alarm."""
    try:
        if limit.int_range is not None:
            low, high = limit.int_range
            return bool(low <= min(values) and max(values) <= high)
        if limit.float_max is not None:
            return bool(max(map(abs, values)) <= limit.float_max)
        if limit.integer_digits is not None and max(map(abs, values)) >= Decimal(10) ** (
            limit.integer_digits
        ):
            return False
        if limit.scale is not None:
            step = Decimal(1).scaleb(-limit.scale)
            # exactly `scale` places (a file's amounts mostly): one C call a value, ~0.2 us a
            # value less than quantizing each and comparing
            if all(map(Decimal.same_quantum, values, repeat(step))):
                return True
            quantized = map(Decimal.quantize, values, repeat(step), repeat(None), repeat(_exact))
            return all(map(operator.eq, values, quantized))
    except (TypeError, ArithmeticError, AttributeError):
        return False
    return True


def _limit_reason(value: Any, limit: ColumnLimit) -> str | None:
    if limit.float_max is not None:
        # NaN and the infinities are real values of their own; a finite one beyond the range is not
        fits = not isinstance(value, int | float) or not math.isfinite(value)
        fits = fits or abs(value) <= limit.float_max
        return None if fits else f"out of the range of {limit.type_name}"
    if limit.int_range is not None and isinstance(value, int):
        low, high = limit.int_range
        return None if low <= value <= high else f"out of the range of {limit.type_name}"
    if not isinstance(value, Decimal | int):
        return None
    number = Decimal(value)
    if limit.integer_digits is not None and abs(number) >= Decimal(10) ** limit.integer_digits:
        return f"out of the range of {limit.type_name}"
    if limit.scale is not None:
        try:
            exact = number == number.quantize(Decimal(1).scaleb(-limit.scale), context=_exact)
        except InvalidOperation:
            exact = False
        if not exact:
            return f"more than {limit.scale} decimal places ({limit.type_name} would round it)"
    return None
