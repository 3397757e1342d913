"""A typed column schema for CSV files: which columns, of which kind, required or not.

The schema converts records' fields to typed values (see :mod:`parallel_batch.sources.csv.convert`
for the kinds), a whole batch at a time, and names the column at fault in each failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parallel_batch.exceptions import CsvHeaderError
from parallel_batch.sources.csv.convert import (
    DEFAULT_NULLS,
    KINDS,
    ColumnKind,
    Value,
    convert_column,
    convert_field,
)

__all__ = ["CUSTOMERS_SCHEMA", "ColumnKind", "CsvColumn", "CsvSchema", "Value"]


@dataclass(frozen=True)
class CsvColumn:
    """One column of a CSV file.

    :param name: the column's name in the header.
    :param kind: how its fields convert (a kind of :mod:`parallel_batch.sources.csv.convert`).
    :param required: whether an empty field is an error rather than ``None``.
    """

    name: str
    kind: ColumnKind = "text"
    required: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {self.kind!r}")


@dataclass(frozen=True)
class CsvSchema:
    """The columns of a CSV file, in order.

    :param columns: the columns in file order; names must be unique.
    """

    columns: Sequence[CsvColumn]

    def __post_init__(self) -> None:
        columns = tuple(self.columns)
        if not columns:
            raise ValueError("columns must not be empty")
        names = [column.name for column in columns]
        if len(set(names)) != len(names):
            raise ValueError(f"column names must be unique: {names}")
        object.__setattr__(self, "columns", columns)

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in order."""
        return tuple(column.name for column in self.columns)

    @property
    def header(self) -> str:
        """The header line this schema expects, without a line ending."""
        return ",".join(self.names)

    def check_header(self, header: Sequence[str]) -> None:
        """Raise :class:`CsvHeaderError` unless ``header`` names this schema's columns in order.

        Surrounding whitespace in a header field is ignored.
        """
        found = [name.strip() for name in header]
        if found != list(self.names):
            raise CsvHeaderError(
                f"CSV header {found} does not match the expected columns {list(self.names)}"
            )

    def convert(
        self, fields: Sequence[str], nulls: frozenset[str] = DEFAULT_NULLS
    ) -> tuple[Value, ...]:
        """Convert one record's fields (exactly one per column) to typed values; ``nulls`` are
        the fields read as NULL.

        :raises ValueError: naming the first column whose field does not convert.
        """
        values: list[Value] = []
        for column, text in zip(self.columns, fields, strict=True):
            try:
                values.append(convert_field(column.kind, column.required, text, nulls))
            except ValueError as exc:
                raise ValueError(f"{column.name}: {exc}") from exc
        return tuple(values)

    def convert_rows(
        self, rows: Sequence[Sequence[str]], nulls: frozenset[str] = DEFAULT_NULLS
    ) -> tuple[list[tuple[Value, ...]], dict[int, str]]:
        """Convert many records' fields (each exactly one per column), column by column;
        ``nulls`` are the fields read as NULL.

        :returns: one tuple of values per row (meaningless where the row failed) and the
            failures by row index, each naming the first column at fault.
        """
        if not rows:
            return [], {}
        failures: dict[int, str] = {}
        converted: list[list[Value]] = []
        for column, texts in zip(self.columns, zip(*rows, strict=True), strict=True):
            values, bad = convert_column(column.kind, column.required, texts, nulls)
            converted.append(values)
            for i, reason in bad.items():
                failures.setdefault(i, f"{column.name}: {reason}")
        return list(zip(*converted, strict=True)), failures


CUSTOMERS_SCHEMA = CsvSchema(
    [
        CsvColumn("id", "int", required=True),
        CsvColumn("name", "text"),
        CsvColumn("email", "email"),
        CsvColumn("amount", "decimal"),
        CsvColumn("note", "text"),
        CsvColumn("created_at", "timestamp"),
    ]
)
"""The demo's ``demo.customers`` file: header ``id,name,email,amount,note,created_at``."""
