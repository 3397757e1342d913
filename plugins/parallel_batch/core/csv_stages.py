"""The batch that moves through a CSV load's stages, and the pure stages: validate, transform.

A :class:`LoadBatch` starts as one batch of the reader (records that converted, with their
lines, and the records that did not, already dead letters) and keeps its checkpoint (the last
line it covers) all the way to the load::

    reader ─► LoadBatch(rows in CSV order, letters = reader errors, end_line)
        validate   values the target would refuse or silently change -> letters
        transform  CSV values -> target rows (segment column added, NULL)
        enrich     (optional, see files/enrich.py) segment filled in, or the row -> letters
        load       duplicates -> letters; rows + letters + checkpoint in one transaction

A stage only ever moves a row into ``letters``: ``read == len(rows) + len(letters)`` holds after
every stage, which is how every record ends in the target or the dead letters.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import repeat
from typing import Any, NamedTuple

from parallel_batch.engine.retry import FailedItem
from parallel_batch.sources.csv.records import CsvBatch, ErrorKind, RecordError
from parallel_batch.sources.csv.schema import CsvSchema
from parallel_batch.store.deadletters import DeadLetter, json_payload

__all__ = [
    "DUPLICATE_ERROR",
    "ColumnLimit",
    "LoadBatch",
    "Validator",
    "line_key",
    "parse_limit",
    "payload",
]

Row = tuple[Any, ...]

# error_type of a dead letter, by what is wrong with the record (the status view groups by it).
READER_ERRORS: dict[ErrorKind, str] = {
    "encoding": "CsvEncodingError",
    "quoting": "CsvQuotingError",
    "field_count": "CsvFieldCountError",
    "value": "CsvValueError",
    "too_long": "CsvRecordTooLongError",
}
VALUE_ERROR = READER_ERRORS["value"]
DUPLICATE_ERROR = "DuplicateKeyError"

_INTEGER_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
_TEXT_KINDS = frozenset({"text", "email"})
_NUL = "\x00"
_NUMERIC = re.compile(r"numeric\((\d+)(?:,(\d+))?\)")


def line_key(line: int) -> str:
    """The dead-letter item key of the record starting on ``line``."""
    return f"line:{line}"


@dataclass(eq=False)
class LoadBatch:
    """Consecutive records of a chunk on their way to the target.

    :param end_line: the last line the batch covers: its checkpoint once committed.
    :param read: records read (each ends in ``rows`` or ``letters``).
    :param lines: the starting line of each row.
    :param rows: the rows still going to the target: CSV values, then (after transform)
        target rows.
    :param letters: the batch's dead letters so far.
    """

    end_line: int
    read: int
    lines: list[int]
    rows: list[Row]
    letters: list[DeadLetter] = field(default_factory=list)
    error: BaseException | None = field(default=None, repr=False)
    """The exception a stage raised on this batch (the pipeline reports only its text)."""

    @classmethod
    def from_csv(cls, batch: CsvBatch) -> LoadBatch:
        """Start from a reader batch: its errors become dead letters at once."""
        return cls(
            end_line=batch.end_line,
            read=len(batch),
            lines=[record.line for record in batch.records],
            rows=[record.values for record in batch.records],
            letters=[_reader_letter(error) for error in batch.errors],
        )

    def reject(
        self,
        failures: Mapping[int, tuple[str, str]],
        columns: Sequence[str],
        *,
        attempts: Mapping[int, FailedItem] | None = None,
    ) -> None:
        """Move rows to the dead letters.

        :param failures: ``{row index: (error_type, message)}``.
        :param columns: the names of the rows' values (for the payload).
        :param attempts: for rows that were retried, their failure (attempts and times).
        """
        if not failures:
            return
        for index, (error_type, message) in sorted(failures.items()):
            failed = attempts.get(index) if attempts else None
            self.letters.append(
                DeadLetter(
                    item_key=line_key(self.lines[index]),
                    line_number=self.lines[index],
                    payload=payload(columns, self.rows[index]),
                    error_type=error_type,
                    message=message,
                    attempts=failed.attempts if failed else 1,
                    first_failed_at=failed.first_failed_at if failed else None,
                    last_failed_at=failed.last_failed_at if failed else None,
                )
            )
        keep = [i for i in range(len(self.rows)) if i not in failures]
        self.lines = [self.lines[i] for i in keep]
        self.rows = [self.rows[i] for i in keep]

    def check(self) -> None:
        """Raise RuntimeError when the rows and the dead letters do not add up to ``read`` (a bug)."""
        if len(self.rows) + len(self.letters) != self.read or len(self.lines) != len(self.rows):
            raise RuntimeError(
                f"batch ending on line {self.end_line}: {self.read} records read but "
                f"{len(self.rows)} rows and {len(self.letters)} dead letters"
            )


def _no_nul(value: Any) -> Any:
    return value.replace(_NUL, "\\u0000") if isinstance(value, str) and _NUL in value else value


def payload(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as a dead letter's JSON payload (``json_payload``), NUL characters escaped:
    jsonb cannot hold them, and a record with one must still become a dead letter."""
    return {name: _no_nul(value) for name, value in json_payload(columns, row).items()}


def _reader_letter(error: RecordError) -> DeadLetter:
    return DeadLetter(
        item_key=line_key(error.line),
        line_number=error.line,
        payload={"raw": _no_nul(error.raw)},
        error_type=READER_ERRORS.get(error.kind, VALUE_ERROR),
        message=error.reason,
    )


class ColumnLimit(NamedTuple):
    """What a target column accepts beyond its type: a numeric's digits, an integer's range.

    :param type_name: the column's type with its modifiers, e.g. ``numeric(12,2)``.
    :param integer_digits: digits before the point at most (None: unlimited).
    :param scale: digits after the point at most (None: unlimited).
    :param int_range: the smallest and largest integer (None: no integer column).
    """

    type_name: str
    integer_digits: int | None = None
    scale: int | None = None
    int_range: tuple[int, int] | None = None


def parse_limit(type_name: str) -> ColumnLimit | None:
    """Return the limit of a column of type ``type_name`` (``format_type`` with modifiers)."""
    if type_name in _INTEGER_RANGES:
        return ColumnLimit(type_name, int_range=_INTEGER_RANGES[type_name])
    match = _NUMERIC.fullmatch(type_name)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2) or 0)
        return ColumnLimit(type_name, integer_digits=precision - scale, scale=scale)
    return None


class Validator:
    """The validate stage: values the target would refuse, or change without a word.

    Checks what conversion cannot know: a number out of its column's range, more decimals than
    its column keeps (numeric rounds them silently), a NUL character in text (PostgreSQL text
    cannot hold one). Whatever else the database refuses is caught at the load.

    A batch is first checked a whole column at a time (C-level ``join``, ``min``/``max``,
    ``quantize``); only a batch where some column may fail is checked row by row.

    :param schema: the CSV's columns, in row order.
    :param limits: the target's limits by column name (columns without one are not checked).
    """

    def __init__(self, schema: CsvSchema, limits: Mapping[str, ColumnLimit]) -> None:
        self.columns = schema.names
        self._text = [i for i, c in enumerate(schema.columns) if c.kind in _TEXT_KINDS]
        self._checks = [
            (i, name, limits[name]) for i, name in enumerate(self.columns) if name in limits
        ]

    def __call__(self, batch: LoadBatch) -> LoadBatch:
        if not batch.rows or not self._suspect(batch.rows):
            return batch
        failures: dict[int, tuple[str, str]] = {}
        for index, row in enumerate(batch.rows):
            reason = self._reason(row)
            if reason is not None:
                failures[index] = (VALUE_ERROR, reason)
        batch.reject(failures, self.columns)
        return batch

    def _suspect(self, rows: Sequence[Row]) -> bool:
        """Whether some row may fail; False means none can."""
        columns = list(zip(*rows, strict=True))
        for index in self._text:
            if _NUL in "".join(filter(None, columns[index])):
                return True
        for index, _, limit in self._checks:
            values = [value for value in columns[index] if value is not None]
            if values and not _column_fits(values, limit):
                return True
        return False

    def _reason(self, row: Row) -> str | None:
        for index in self._text:
            value = row[index]
            if value is not None and _NUL in value:
                return f"{self.columns[index]}: a NUL character, which PostgreSQL text cannot store"
        for index, name, limit in self._checks:
            value = row[index]
            if value is None:
                continue
            reason = _limit_reason(value, limit)
            if reason is not None:
                return f"{name}: {reason}"
        return None


def _column_fits(values: list[Any], limit: ColumnLimit) -> bool:
    """Whether every value fits ``limit`` (a column at a time); False may be a false alarm."""
    try:
        if limit.int_range is not None:
            low, high = limit.int_range
            return bool(low <= min(values) and max(values) <= high)
        if limit.integer_digits is not None and max(map(abs, values)) >= Decimal(10) ** (
            limit.integer_digits
        ):
            return False
        if limit.scale is not None:
            step = Decimal(1).scaleb(-limit.scale)
            return all(map(operator.eq, values, map(Decimal.quantize, values, repeat(step))))
    except (TypeError, ArithmeticError):
        return False
    return True


def _limit_reason(value: Any, limit: ColumnLimit) -> str | None:
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
            exact = number == number.quantize(Decimal(1).scaleb(-limit.scale))
        except InvalidOperation:
            exact = False
        if not exact:
            return f"more than {limit.scale} decimal places ({limit.type_name} would round it)"
    return None


class Transformer:
    """The transform stage: CSV values -> a target row, with the segment column still NULL.

    :param with_segment: whether the target rows end with a segment column.
    """

    def __init__(self, *, with_segment: bool) -> None:
        self._extra: Row = (None,) if with_segment else ()

    def __call__(self, batch: LoadBatch) -> LoadBatch:
        if self._extra:
            extra = self._extra
            batch.rows = [values + extra for values in batch.rows]
        return batch
