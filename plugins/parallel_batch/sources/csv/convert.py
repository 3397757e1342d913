"""Convert CSV fields to typed values by column kind: a whole column of a batch at a time.

==========  ==============================  =============================================
kind        field                           value
==========  ==============================  =============================================
int         ``42``                          ``42`` (int() syntax, ASCII, 64-bit range)
decimal     ``1234.50``                     ``Decimal("1234.50")`` (finite, ASCII)
text        ``anything``                    ``"anything"``
email       ``ann@example.com``             the text (something@something, no spaces)
timestamp   ``2024-05-01T12:34:56+02:00``   aware datetime (ISO-8601; no offset means UTC)
localtime   ``2024-05-01T12:34:56``         naive datetime (an offset is dropped, as
                                            PostgreSQL's ``timestamp`` does)
date        ``2024-05-01``                  ``date(2024, 5, 1)``
float       ``1.5e3``                       ``1500.0`` (also NaN, Infinity)
bool        ``true`` / ``f`` / ``1`` / ``no``  ``True`` / ``False`` (PostgreSQL's spellings)
uuid        ``0b4c...``                     ``UUID(...)``
json        ``{"a": 1}``                    the parsed value (for json and jsonb columns)
==========  ==============================  =============================================

An empty field is ``None`` (SQL NULL), or an error when the column is required. A dialect's
``null_values`` add spellings of NULL (``NULL``, ``\\N``, ``NA``...); when they leave out the empty
field, an empty field of a text column is the empty string.

A column converts with ``map()`` of a C-level parser (``int``, ``Decimal``,
``datetime.fromisoformat``) over all of its fields, resumed after any field that raises, then
C-level checks of the results. Only the suspects (fields that raised or failed a check) get a
second, field-by-field look that says what is wrong: so a bad record in a batch costs about
itself, not its batch. Reasons never quote the value (the caller keeps the raw record).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from itertools import compress, repeat
from operator import attrgetter, is_, not_
from typing import Any, Literal, TypeAlias, cast, get_args

ColumnKind: TypeAlias = Literal[
    "int",
    "decimal",
    "text",
    "email",
    "timestamp",
    "localtime",
    "date",
    "float",
    "bool",
    "uuid",
    "json",
]
Value: TypeAlias = Any

KINDS: frozenset[str] = frozenset(get_args(ColumnKind))
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_tzinfo = attrgetter("tzinfo")
# The fields read as NULL by default: the empty one.
DEFAULT_NULLS: frozenset[str] = frozenset({""})


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not an integer") from None
    if not text.isascii():
        raise ValueError("not an integer")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("integer out of the 64-bit range")
    return value


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    if not value.is_finite() or not text.isascii():
        raise ValueError("not a finite decimal number")
    return value


def _email(text: str) -> str:
    if _EMAIL.fullmatch(text) is None:
        raise ValueError("not an email address" if "@" in text else "email address without @")
    return text


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO-8601 timestamp") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _localtime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO-8601 timestamp") from None
    return value.replace(tzinfo=None)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO-8601 date") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


_BOOLS = {
    **dict.fromkeys(("t", "true", "y", "yes", "on", "1"), True),
    **dict.fromkeys(("f", "false", "n", "no", "off", "0"), False),
}


def _bool(text: str) -> bool:
    value = _BOOLS.get(text.strip().lower())
    if value is None:
        raise ValueError("not a boolean (true/false, t/f, yes/no, on/off, 1/0)")
    return value


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError("not a UUID") from None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError("not valid JSON") from None


_FIELD: dict[str, Callable[[str], Value]] = {
    "int": _int,
    "decimal": _decimal,
    "text": str,
    "email": _email,
    "timestamp": _timestamp,
    "localtime": _localtime,
    "date": _date,
    "float": _float,
    "bool": _bool,
    "uuid": _uuid,
    "json": _json,
}


def convert_field(
    kind: ColumnKind, required: bool, text: str, nulls: frozenset[str] = DEFAULT_NULLS
) -> Value:
    """Convert one field; ``nulls`` are the fields read as NULL.

    :raises ValueError: saying what is wrong with it (without quoting it).
    """
    if text in nulls or (not text and kind != "text"):
        if required:
            raise ValueError("a value is required")
        return None
    return _FIELD[kind](text)


def _parse_all(parse: Callable[[str], Value], texts: Sequence[str]) -> list[Value]:
    """``map(parse, texts)`` in C, with None where ``parse`` raised (resuming after each one)."""
    values: list[Value] = []
    while len(values) < len(texts):
        try:
            values.extend(map(parse, texts[len(values) :]))  # keeps what came before a raise
        except (ValueError, ArithmeticError):
            values.append(None)
    return values


def _nones(values: Sequence[object]) -> Iterable[int]:
    """The indexes of the None values, found in C."""
    return compress(range(len(values)), map(is_, values, repeat(None)))


# Each column check returns the indexes whose values need a second look (a field-by-field
# conversion that says what is wrong): C-level scans when all is well; a rare oddity (a
# non-ASCII digit, a number out of range, NaN) sends the whole column through the second look.
def _check_ints(texts: Sequence[str], values: list[Value]) -> Iterable[int]:
    ints = cast("list[int | None]", values)
    if (
        max(filter(None, ints), default=0) <= _INT64_MAX
        and min(filter(None, ints), default=0) >= _INT64_MIN
        and all(map(str.isascii, texts))
    ):
        return _nones(values)
    return range(len(values))


def _check_decimals(texts: Sequence[str], values: list[Value]) -> Iterable[int]:
    decimals = cast("list[Decimal | None]", values)
    if all(map(Decimal.is_finite, filter(None, decimals))) and all(map(str.isascii, texts)):
        return _nones(values)
    return range(len(values))


def _check_timestamps(texts: Sequence[str], values: list[Value]) -> Iterable[int]:
    moments = cast("list[datetime | None]", values)
    if not all(map(_tzinfo, filter(None, moments))):  # naive ones mean UTC
        values[:] = [m if m is None or m.tzinfo else m.replace(tzinfo=UTC) for m in moments]
    return _nones(values)


def _check_emails(texts: Sequence[str], values: list[Value]) -> Iterable[int]:
    return compress(range(len(texts)), map(not_, map(_EMAIL.fullmatch, texts)))


_COLUMN: dict[
    str, tuple[Callable[[str], Value], Callable[[Sequence[str], list[Value]], Iterable[int]]]
] = {
    "int": (int, _check_ints),
    "decimal": (Decimal, _check_decimals),
    "email": (str, _check_emails),
    "timestamp": (datetime.fromisoformat, _check_timestamps),
}


def convert_column(
    kind: ColumnKind,
    required: bool,
    texts: Sequence[str],
    nulls: frozenset[str] = DEFAULT_NULLS,
) -> tuple[list[Value], dict[int, str]]:
    """Convert a column of fields.

    :param kind: the column's kind.
    :param required: whether a NULL is an error.
    :param texts: the column's fields, one per record.
    :param nulls: the fields read as NULL (an empty one always is, except in a text column
        whose ``nulls`` leave it out).
    :returns: one value per field (None where it failed) and the failures by index, with reasons.
    """
    if nulls != DEFAULT_NULLS and not nulls.isdisjoint(texts):
        return _convert_nulls(kind, required, texts, nulls)
    if kind == "text" and "" not in nulls:
        return list(texts), {}
    failures: dict[int, str] = {}
    if kind == "text":
        if "" not in texts:
            return list(texts), failures
        values: list[Value] = [text or None for text in texts]
        suspects: Iterable[int] = _nones(values) if required else ()
    elif kind not in _COLUMN:  # the rarer kinds: one field at a time
        return _convert_each(_FIELD[kind], required, texts)
    else:
        parse, check = _COLUMN[kind]
        values = _parse_all(parse, texts)
        suspects = check(texts, values)
    for i in list(suspects):
        try:
            values[i] = convert_field(kind, required, texts[i])
        except ValueError as exc:
            failures[i] = str(exc)
            values[i] = None
    return values, failures


def _convert_nulls(
    kind: ColumnKind, required: bool, texts: Sequence[str], nulls: frozenset[str]
) -> tuple[list[Value], dict[int, str]]:
    """A column holding some of a dialect's own NULL spellings: NULLs as empty fields."""
    if kind != "text":
        return convert_column(kind, required, ["" if t in nulls else t for t in texts])
    values: list[Value] = [None if t in nulls else t for t in texts]
    failures = dict.fromkeys(_nones(values), "a value is required") if required else {}
    return values, failures


def _convert_each(
    parse: Callable[[str], Value], required: bool, texts: Sequence[str]
) -> tuple[list[Value], dict[int, str]]:
    values: list[Value] = []
    failures: dict[int, str] = {}
    for i, text in enumerate(texts):
        if not text:
            if required:
                failures[i] = "a value is required"
            values.append(None)
            continue
        try:
            values.append(parse(text))
        except (ValueError, ArithmeticError) as exc:
            failures[i] = str(exc)
            values.append(None)
    return values, failures
