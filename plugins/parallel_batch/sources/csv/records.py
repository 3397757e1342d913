"""The reader's output types, and one record's bytes turned into a typed record or an error.

Whatever is wrong with one record becomes a :class:`RecordError` at its starting line, and the
next record is unaffected::

    bytes ─► decode ─► split fields ─► count them ─► convert ─► CsvRecord
                 │                │               │            │
                 └───────── RecordError(line, reason, raw, kind) ◄┘

:func:`parse_record` is the one-record reference; the reader does the same work a batch at a
time (:mod:`parallel_batch.sources.csv.reader`), and the tests hold the two to the same results.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeAlias

from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect
from parallel_batch.sources.csv.schema import CsvSchema, Value

ErrorKind: TypeAlias = Literal["encoding", "quoting", "field_count", "value", "too_long"]

# Characters of a bad record's text kept in its error. Larger: more context in the dead-letter
# table; smaller: cheaper rows there. 1000 shows any realistic record whole.
RAW_MAX_CHARS = 1000

# The csv module's messages, by their first 20 characters, in the words of a record's author.
_CSV_ERRORS = {
    "new-line character s": "a carriage return outside quotes",
    "unexpected end of da": "a quoted field is not closed",
}


class CsvRecord(NamedTuple):
    """A record that converted cleanly.

    :param line: the 1-based physical line of the file on which the record starts.
    :param values: one converted value per schema column.
    """

    line: int
    values: tuple[Value, ...]


class RecordError(NamedTuple):
    """A record that could not be read or converted.

    :param line: the 1-based physical line of the file on which the record starts.
    :param reason: what is wrong, naming the column where one is at fault.
    :param raw: the record's text (undecodable bytes escaped), cut to ``RAW_MAX_CHARS``.
    :param kind: ``encoding``, ``quoting``, ``field_count``, ``value`` or ``too_long``.
    """

    line: int
    reason: str
    raw: str
    kind: ErrorKind


@dataclass
class CsvBatch:
    """Consecutive records of a chunk: those that converted and those that did not.

    :param lines: the starting line of each record that converted, in file order.
    :param values: the values of each of them (side by side lists: no object per record).
    :param errors: the records that did not, in file order.
    :param end_line: the last physical line the batch consumed; resume with ``after_line=end_line``.
    """

    lines: list[int] = field(default_factory=list)
    values: list[tuple[Value, ...]] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    end_line: int = 0

    @property
    def records(self) -> list[CsvRecord]:
        """The records that converted, each with its line."""
        return list(map(CsvRecord, self.lines, self.values))

    def __len__(self) -> int:
        return len(self.lines) + len(self.errors)


class MalformedRecord(ValueError):
    """A record's bytes that do not split into fields; ``kind`` says how."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: ErrorKind = kind


def raw_text(data: bytes | str, encoding: str = "utf-8") -> str:
    """Return a record for an error message: no line ending, bad bytes escaped, cut short."""
    if isinstance(data, bytes):
        data = data[: RAW_MAX_CHARS * 4 + 2].decode(encoding, "backslashreplace")
    if data.endswith("\n"):
        data = data[:-1]
    if data.endswith("\r"):
        data = data[:-1]
    return data[:RAW_MAX_CHARS]


def split_record(data: bytes, dialect: CsvDialect = DEFAULT_DIALECT) -> list[str]:
    """Split one record's bytes (with its line ending, if any) into fields; [] for a blank line.

    A record without a quote or a carriage return splits on the delimiter (exactly what the
    ``csv`` module would return); any other goes through the ``csv`` module in strict mode.

    :raises MalformedRecord: when the bytes do not decode or the quoting is malformed.
    """
    try:
        text = data.decode(dialect.encoding)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if dialect.utf8 else dialect.encoding
        reason = (
            f"invalid {name}: byte 0x{data[exc.start]:02x} at byte {exc.start + 1} of the record"
        )
        raise MalformedRecord("encoding", reason) from exc
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        return []
    quote = dialect.quotechar
    if (quote is None or quote not in text) and "\r" not in text:
        return text.split(dialect.delimiter)
    try:
        return next(csv.reader((text,), **dialect.csv_options), [])
    except csv.Error as exc:
        reason = f"malformed CSV: {_csv_error(str(exc))}"
        raise MalformedRecord("quoting", reason) from exc


def _csv_error(message: str) -> str:
    if " expected after " in message:  # "',' expected after '\"'" (the delimiter, the quote)
        return "text after a closing quote"
    return _CSV_ERRORS.get(message[:20], message)


def parse_record(
    data: bytes, line: int, schema: CsvSchema, dialect: CsvDialect = DEFAULT_DIALECT
) -> CsvRecord | RecordError | None:
    """Turn one record's bytes (with its line ending, if any) into a record or an error.

    :param data: the record's bytes, as the scanner delimited them.
    :param line: the physical line on which it starts.
    :param schema: the columns to convert to.
    :param dialect: the file's dialect.
    :returns: the record, its error, or None for a blank line (which is skipped).
    """
    raw = dialect.encoding
    try:
        fields = split_record(data, dialect)
    except MalformedRecord as exc:
        return RecordError(line, str(exc), raw_text(data, raw), exc.kind)
    if not fields:
        return None
    width = len(schema.columns)
    if len(fields) != width:
        return RecordError(
            line, field_count_reason(width, len(fields)), raw_text(data, raw), "field_count"
        )
    try:
        values = schema.convert(fields, dialect.nulls)
    except ValueError as exc:
        return RecordError(line, str(exc), raw_text(data, raw), "value")
    return CsvRecord(line, values)


def field_count_reason(expected: int, found: int) -> str:
    """The reason given for a record with the wrong number of fields."""
    return f"expected {expected} fields, found {found}"
