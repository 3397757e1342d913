"""How a CSV file is written: its delimiter, quote character, encoding and the fields read as NULL.

The scanner finds record boundaries in bytes (a newline outside quotes), so the delimiter, the
quote character and the newline must be single ASCII bytes that no other character's encoding
contains. That holds for UTF-8 and for the single-byte code pages (Latin-1, cp1252, ...); a
multi-byte encoding such as UTF-16 or Shift JIS is refused up front rather than split wrongly.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from parallel_batch.exceptions import ConfigurationError

__all__ = ["DEFAULT_DIALECT", "CsvDialect"]

_ASCII = bytes(range(128))
_HIGH = bytes(range(128, 256))
_UTF8 = "utf-8"


def _scannable(encoding: str) -> str:
    """Return the codec's canonical name if byte scanning is safe in it, else raise."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigurationError(f"encoding {encoding!r} is not a known codec") from None
    if name in (_UTF8, "utf-8-sig"):
        return _UTF8
    try:
        ascii_same = _ASCII.decode(name) == _ASCII.decode("ascii")
        high = _HIGH.decode(name, "surrogateescape")
    except (UnicodeDecodeError, LookupError, TypeError):  # not a text codec at all
        ascii_same, high = False, ""
    if not ascii_same or len(high) != len(_HIGH) or any(c.isascii() for c in high):
        raise ConfigurationError(
            f"encoding {encoding!r} cannot be read in byte ranges: only UTF-8 and single-byte "
            "encodings (latin-1, cp1252, iso-8859-15...) keep newlines, delimiters and quotes "
            "recognisable byte by byte; convert the file to UTF-8 first"
        )
    return name


def _one_ascii(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) != 1 or not value.isascii():
        raise ConfigurationError(f"{what} must be one ASCII character, got {value!r}")
    if value in "\r\n":
        raise ConfigurationError(f"{what} cannot be a line break")
    return value


@dataclass(frozen=True)
class CsvDialect:
    """A CSV file's dialect.

    :param delimiter: the field separator: one ASCII character (``","``, ``";"``, ``"\\t"``...).
    :param quotechar: the character that quotes fields (doubled inside one), or None for a file
        without quoting (every newline ends a record, a quote is an ordinary character).
    :param encoding: the file's encoding: UTF-8 (a BOM is skipped) or a single-byte one.
    :param null_values: the fields read as NULL, exactly as written (after unquoting); default
        the empty field. An empty field of a non-text column is always NULL.
    """

    delimiter: str = ","
    quotechar: str | None = '"'
    encoding: str = _UTF8
    null_values: tuple[str, ...] = ("",)

    def __post_init__(self) -> None:
        _one_ascii(self.delimiter, "delimiter")
        if self.quotechar is not None:
            _one_ascii(self.quotechar, "quotechar")
            if self.quotechar == self.delimiter:
                raise ConfigurationError("quotechar and delimiter must differ")
        object.__setattr__(self, "encoding", _scannable(self.encoding))
        nulls = self.null_values
        if isinstance(nulls, str) or not all(isinstance(v, str) for v in nulls):
            raise ConfigurationError("null_values must be a list of strings")
        object.__setattr__(self, "null_values", tuple(dict.fromkeys(nulls)))

    @property
    def utf8(self) -> bool:
        """Whether the file is UTF-8 (a BOM at its start is skipped)."""
        return self.encoding == _UTF8

    @property
    def delimiter_byte(self) -> int:
        return ord(self.delimiter)

    @property
    def quote_byte(self) -> int | None:
        return None if self.quotechar is None else ord(self.quotechar)

    @cached_property
    def nulls(self) -> frozenset[str]:
        """The fields read as NULL, as a set."""
        return frozenset(self.null_values)

    @cached_property
    def csv_options(self) -> dict[str, Any]:
        """Keyword arguments of ``csv.reader`` for this dialect, in strict mode."""
        if self.quotechar is None:
            return {"delimiter": self.delimiter, "quoting": csv.QUOTE_NONE, "strict": True}
        return {"delimiter": self.delimiter, "quotechar": self.quotechar, "strict": True}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form; :meth:`from_dict` reads it back."""
        return {
            "delimiter": self.delimiter,
            "quotechar": self.quotechar,
            "encoding": self.encoding,
            "null_values": list(self.null_values),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CsvDialect:
        """Rebuild a dialect from :meth:`to_dict`'s output (the default for None)."""
        if not data:
            return DEFAULT_DIALECT
        return cls(
            delimiter=data.get("delimiter", ","),
            quotechar=data.get("quotechar", '"'),
            encoding=data.get("encoding", _UTF8),
            null_values=tuple(data.get("null_values", ("",))),
        )

    @classmethod
    def of(
        cls,
        delimiter: str = ",",
        quotechar: str | None = '"',
        encoding: str = _UTF8,
        null_values: Iterable[str] | None = None,
    ) -> CsvDialect:
        """A dialect from user-facing options (``"\\t"`` spelled out is a tab; ``""`` as the
        quotechar means no quoting)."""
        if delimiter in ("\\t", "tab"):
            delimiter = "\t"
        return cls(
            delimiter=delimiter,
            quotechar=quotechar or None,
            encoding=encoding,
            null_values=(
                ("",)
                if null_values is None
                else (null_values,)
                if isinstance(null_values, str)
                else tuple(null_values)
            ),
        )


DEFAULT_DIALECT = CsvDialect()
